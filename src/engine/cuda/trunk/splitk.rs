//! Split-K, chosen by measurement: at 1024² (2,601 patches of 20 px) a 128-row tile leaves
//! layer4's grid at 84 blocks and layers 2–3 at one or two per SM of an H100/H200 (132 SMs), so
//! most of the GPU idles through those convolutions. Splitting K over the grid's z multiplies the
//! blocks at the price of a pass that sums the partial planes (`splitk_reduce`). Whether that pays
//! depends on the GPU, the kernel family and the patch count, so each convolution is timed with
//! every split it takes, the first time a kernel family meets a patch count, and keeps the fastest.

use std::collections::VecDeque;

use cudarc::driver::sys::CUevent_flags;

use super::{CudaError, DevConv, Split, Trunk, conv, convs_mut};
use crate::engine::cuda::tables::{ConvMath, MAX_SPLITS};

/// Launches per candidate and round, between two events.
const TUNE_LAUNCHES: usize = 5;
/// Rounds over the candidates, alternating; the fastest round counts (a busy GPU slows one round,
/// not one candidate).
const TUNE_ROUNDS: usize = 2;
/// Patch counts remembered per trunk: a session sees one frame shape (and a last, shorter pass).
const REMEMBERED: usize = 16;
/// A split must beat the unsplit launch by this share to be kept: a reduction pass is not worth
/// a difference within the timing's noise.
const MIN_GAIN: f64 = 0.03;

/// The splits of every convolution for one (kernel family, patch count), in launch order.
#[derive(Clone, Debug)]
struct Choice {
    math: ConvMath,
    n: usize,
    splits: Vec<usize>,
}

/// Split-K choices, measured or forced.
#[derive(Default)]
pub(super) struct SplitChoices {
    measured: VecDeque<Choice>,
    /// Every convolution that can split runs with this many (capped by what it takes): tests.
    forced: Option<usize>,
}

/// Splits `c` may take for `n` patches: its kernel family splits K, at most [`MAX_SPLITS`], no more
/// than its longest class has K slices, and every plane inside the partial-sum buffer.
pub(super) fn max_splits(c: &DevConv, n: usize, partial_len: usize) -> usize {
    if !c.math.splits_k() {
        return 1;
    }
    let by_buffer = partial_len / c.t.out_len(n).max(1);
    MAX_SPLITS.min(c.t.max_slices(c.math)).min(by_buffer).max(1)
}

impl Trunk {
    /// Runs every convolution that takes it with `splits` K splits (capped per convolution), or
    /// back on measured choices with `None`: for the GPU tests.
    pub fn force_splits(&mut self, splits: Option<usize>) {
        self.splits.forced = splits;
    }

    /// The splits of each convolution (torchvision's name) for `n` patches on the current kernel
    /// family, measuring them first if this is the first pass of that size: for logs and `bench`.
    pub fn split_k(&mut self, n: usize) -> Result<Vec<(String, usize)>, CudaError> {
        let splits = self.splits_for(n)?;
        Ok(convs_mut(&mut self.blocks).map(|(label, _)| label).zip(splits).collect())
    }

    /// The splits `run_trunk` launches each convolution with for `n` patches.
    pub(super) fn splits_for(&mut self, n: usize) -> Result<Vec<usize>, CudaError> {
        self.reserve(n)?;
        let partial_len = self.ws.as_ref().map_or(0, |w| w.partial.len());
        if let Some(k) = self.splits.forced {
            return Ok(convs_mut(&mut self.blocks).map(|(_, c)| k.clamp(1, max_splits(c, n, partial_len))).collect());
        }
        // The family the convolutions run on now (the fp32 probe switches them without changing
        // `conv_math`); the few a tensor-core family does not take stay on FFMA.
        let math = convs_mut(&mut self.blocks).map(|(_, c)| c.math).find(|m| m.splits_k()).unwrap_or(ConvMath::Ffma);
        if !math.splits_k() {
            return Ok(convs_mut(&mut self.blocks).map(|_| 1).collect());
        }
        if let Some(c) = self.splits.measured.iter().find(|c| c.math == math && c.n == n) {
            return Ok(c.splits.clone());
        }
        let t0 = std::time::Instant::now();
        let (splits, gains) = self.measure_splits(n)?;
        let tuned_ms = t0.elapsed().as_secs_f64() * 1e3;
        if gains.is_empty() {
            tracing::info!(
                "GPU split-K for {n} patches on {math:?}: no convolution gains (measured in {tuned_ms:.0} ms)"
            );
        } else {
            tracing::info!(
                "GPU split-K for {n} patches on {math:?}: {} (measured in {tuned_ms:.0} ms)",
                gains.join(", ")
            );
        }
        if self.splits.measured.len() >= REMEMBERED {
            self.splits.measured.pop_front();
        }
        self.splits.measured.push_back(Choice { math, n, splits: splits.clone() });
        Ok(splits)
    }

    /// Times every convolution with each split it takes ([`TUNE_ROUNDS`] alternating rounds of
    /// [`TUNE_LAUNCHES`] launches between two CUDA events, after a warm-up launch) on whatever the
    /// workspace holds (the time does not depend on the values). Returns the fastest split of
    /// each (1 unless it gains [`MIN_GAIN`]), and those above 1 in words.
    fn measure_splits(&mut self, n: usize) -> Result<(Vec<usize>, Vec<String>), CudaError> {
        let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        let (stream, k, zeros) = (&self.stream, &self.k, &self.zeros);
        let event = |what: &str| {
            stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| CudaError::driver(what, e))
        };
        let (mut chosen, mut gains) = (Vec::new(), Vec::new());
        for (label, c) in convs_mut(&mut self.blocks) {
            let most = max_splits(c, n, ws.partial.len());
            if most == 1 {
                chosen.push(1);
                continue;
            }
            // best_ms[s - 1]: the fastest launch with s splits.
            let mut best_ms = vec![f64::INFINITY; most];
            for round in 0..TUNE_ROUNDS {
                for (splits, best) in (1..=most).zip(best_ms.iter_mut()) {
                    let tile = c.t.tile();
                    let launches = if round == 0 { TUNE_LAUNCHES + 1 } else { TUNE_LAUNCHES };
                    let mut start = None;
                    for l in 0..launches {
                        if l + TUNE_LAUNCHES == launches {
                            start = Some(event("timing split-K")?);
                        }
                        let split = Split { splits, partial: &mut ws.partial, zeros };
                        conv(stream, k, c, tile, &ws.x, &mut ws.t, None, true, n, split)?;
                    }
                    let end = event("timing split-K")?;
                    let start = start.ok_or_else(|| CudaError::Setup("split-K timing never started".into()))?;
                    let ms = start.elapsed_ms(&end).map_err(|e| CudaError::driver("timing split-K", e))? as f64;
                    *best = best.min(ms / TUNE_LAUNCHES as f64);
                }
            }
            let fastest = (1..=most).min_by(|&a, &b| best_ms[a - 1].total_cmp(&best_ms[b - 1])).unwrap_or(1);
            let best = if best_ms[fastest - 1] < (1.0 - MIN_GAIN) * best_ms[0] { fastest } else { 1 };
            if best > 1 {
                gains.push(format!("{label} ×{best} ({:.1} → {:.1} µs)", best_ms[0] * 1e3, best_ms[best - 1] * 1e3));
            }
            chosen.push(best);
        }
        self.check_stored()?;
        Ok((chosen, gains))
    }
}
