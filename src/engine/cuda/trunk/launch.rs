//! How each convolution is launched — the tile width and the K splits — chosen by measurement.
//! At 1024² (2,601 patches of 20 px) a 128-row tile leaves layer4's first grid at 84 blocks and
//! layers 2–3 at one or two per SM of an H100/H200 (132 SMs), so much of the GPU idles through
//! those convolutions. The narrow tile (128×64) doubles a grid's blocks; splitting K over the
//! grid's z (tensor-core kernels) multiplies them at the price of a pass that sums the partial
//! planes (`splitk_reduce`). Whether either pays depends on the GPU, the kernel family and the
//! patch count, so each convolution is timed with every launch it takes, the first time a kernel
//! family meets a patch count, and keeps the fastest.

use std::collections::VecDeque;

use cudarc::driver::sys::CUevent_flags;

use super::{CudaError, Split, Trunk, conv, convs_mut};
use crate::engine::cuda::tables::{ConvMath, Launch};

/// Launches per candidate and round, between two events.
const TUNE_LAUNCHES: usize = 5;
/// Rounds over the candidates, alternating; the fastest round counts (a busy GPU slows one round,
/// not one candidate).
const TUNE_ROUNDS: usize = 2;
/// Patch counts remembered per trunk: a session sees one frame shape (and a last, shorter pass).
const REMEMBERED: usize = 16;
/// A launch must beat the default one (the tile that fits cout, no split) by this share to be
/// kept: a reduction pass or a smaller tile is not worth a difference within the timing's noise.
const MIN_GAIN: f64 = 0.03;

/// One convolution's launch, for `bench`'s JSON and the logs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvLaunch {
    /// torchvision's name, e.g. `layer4.0.conv1`.
    pub conv: String,
    pub kernel: &'static str,
    pub splits: usize,
}

/// The launches of every convolution for one (kernel family, patch count), in launch order.
#[derive(Clone, Debug)]
struct Choice {
    math: ConvMath,
    n: usize,
    launches: Vec<Launch>,
}

/// Launch choices, measured or forced.
#[derive(Default)]
pub(super) struct LaunchChoices {
    measured: VecDeque<Choice>,
    /// Every convolution that can split runs with this many (capped by what it takes), on its
    /// default tile: for tests.
    forced_splits: Option<usize>,
}

impl Trunk {
    /// Runs every convolution that takes it with `splits` K splits (capped per convolution) on its
    /// default tile, or back on measured launches with `None`: for the GPU tests.
    pub fn force_splits(&mut self, splits: Option<usize>) {
        self.launches.forced_splits = splits;
    }

    /// How each convolution runs for `n` patches on the current kernel family (measured first if
    /// this is the family's first pass of that size): for logs and `bench`.
    pub fn conv_launches(&mut self, n: usize) -> Result<Vec<ConvLaunch>, CudaError> {
        let launches = self.launches_for(n)?;
        Ok(convs_mut(&mut self.blocks)
            .zip(launches)
            .map(|((conv, c), l)| ConvLaunch { conv, kernel: c.math.kernel(l.tile), splits: l.splits })
            .collect())
    }

    /// The launch `run_trunk` uses for each convolution for `n` patches.
    pub(super) fn launches_for(&mut self, n: usize) -> Result<Vec<Launch>, CudaError> {
        self.reserve(n)?;
        let partial_len = self.ws.as_ref().map_or(0, |w| w.partial.len());
        if let Some(k) = self.launches.forced_splits {
            return Ok(convs_mut(&mut self.blocks)
                .map(|(_, c)| Launch { tile: c.t.tile(), splits: k.clamp(1, c.t.max_splits(c.math, n, partial_len)) })
                .collect());
        }
        // The family the convolutions run on now (the fp32 probe switches them without changing
        // `conv_math`); the few a tensor-core family does not take stay on FFMA.
        let math = convs_mut(&mut self.blocks).map(|(_, c)| c.math).find(|m| m.splits_k()).unwrap_or(ConvMath::Ffma);
        if let Some(c) = self.launches.measured.iter().find(|c| c.math == math && c.n == n) {
            return Ok(c.launches.clone());
        }
        let t0 = std::time::Instant::now();
        let (launches, gains) = self.measure_launches(n)?;
        let tuned_ms = t0.elapsed().as_secs_f64() * 1e3;
        let gains = if gains.is_empty() { "every convolution as it fits".to_string() } else { gains.join(", ") };
        tracing::info!("GPU launches for {n} patches on {math:?}: {gains} (measured in {tuned_ms:.0} ms)");
        if self.launches.measured.len() >= REMEMBERED {
            self.launches.measured.pop_front();
        }
        self.launches.measured.push_back(Choice { math, n, launches: launches.clone() });
        Ok(launches)
    }

    /// Times every convolution with each launch it takes ([`TUNE_ROUNDS`] alternating rounds of
    /// [`TUNE_LAUNCHES`] launches between two CUDA events, after a warm-up launch) on whatever the
    /// workspace holds (the time does not depend on the values). Returns the fastest launch of
    /// each (the default unless another gains [`MIN_GAIN`]), and those that changed in words.
    fn measure_launches(&mut self, n: usize) -> Result<(Vec<Launch>, Vec<String>), CudaError> {
        let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        let (stream, k, zeros) = (&self.stream, &self.k, &self.zeros);
        let event = |what: &str| {
            stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| CudaError::driver(what, e))
        };
        let (mut chosen, mut gains) = (Vec::new(), Vec::new());
        for (label, c) in convs_mut(&mut self.blocks) {
            let cands = c.t.launch_candidates(c.math, n, ws.partial.len());
            if cands.len() == 1 {
                chosen.push(cands[0]);
                continue;
            }
            // best_ms[i]: the fastest launch of cands[i].
            let mut best_ms = vec![f64::INFINITY; cands.len()];
            for round in 0..TUNE_ROUNDS {
                for (l, best) in cands.iter().zip(best_ms.iter_mut()) {
                    let launches = if round == 0 { TUNE_LAUNCHES + 1 } else { TUNE_LAUNCHES };
                    let mut start = None;
                    for i in 0..launches {
                        if i + TUNE_LAUNCHES == launches {
                            start = Some(event("timing a launch")?);
                        }
                        let split = Split { splits: l.splits, partial: &mut ws.partial, zeros };
                        conv(stream, k, c, l.tile, &ws.x, &mut ws.t, None, true, n, split)?;
                    }
                    let end = event("timing a launch")?;
                    let start = start.ok_or_else(|| CudaError::Setup("launch timing never started".into()))?;
                    let ms = start.elapsed_ms(&end).map_err(|e| CudaError::driver("timing a launch", e))? as f64;
                    *best = best.min(ms / TUNE_LAUNCHES as f64);
                }
            }
            let fastest = (0..cands.len()).min_by(|&a, &b| best_ms[a].total_cmp(&best_ms[b])).unwrap_or(0);
            let pick = if best_ms[fastest] < (1.0 - MIN_GAIN) * best_ms[0] { fastest } else { 0 };
            let l = cands[pick];
            if pick != 0 {
                gains.push(format!(
                    "{label} {} ×{} ({:.1} → {:.1} µs)",
                    c.math.kernel(l.tile),
                    l.splits,
                    best_ms[0] * 1e3,
                    best_ms[pick] * 1e3
                ));
            }
            chosen.push(l);
        }
        self.check_stored()?;
        Ok((chosen, gains))
    }
}
