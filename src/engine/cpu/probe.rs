//! Whether bf16 is faster than fp32 on this CPU, measured when an engine is asked for bf16.
//!
//! AVX512-BF16 does not make bf16 fast everywhere: its `vdpbf16ps` does 32 multiply-adds per
//! instruction, but where it issues half as often as an f32 FMA it is no faster than fp32, and the
//! k-pair packing bf16 needs comes on top. Measured with a loop of independent instructions: on the
//! 2-core Intel Xeon (Emerald Rapids, no AMX in the VM) `vdpbf16ps` zmm reaches 83 GFLOP/s per core
//! against 174 for `vfmadd` zmm, and the trunk took 450 ms per 1020² frame in bf16 against 282 in
//! fp32; on the 2-core AMD EPYC (Zen 5) bf16 is ≈ 1.4× faster than fp32. A feature of the CPU's
//! name cannot tell the two apart, so the engine times both on the same patches and keeps bf16
//! only where it wins clearly: bf16 costs accuracy (README "Precision") and buys only speed.

use std::time::Instant;

use super::CpuTrunk;
use crate::engine::plan::Plan;
use crate::weights::layout::LAYER_CHANNELS;

/// Multiply-adds per timed run: ≈ 134 patches of 20×20 (11.2 M each), 15–35 ms a run on the hosts
/// above, large enough that GEMM shapes and weight streaming resemble a real chunk's.
const PROBE_MACS: usize = 1_500_000_000;

/// Runs per format, alternating; the fastest counts (the first pays for the buffers' page faults).
const RUNS: usize = 3;

/// bf16 must take at most this share of fp32's time to be kept: the fastest of three runs moves by
/// a few per cent between probes on a shared host, and a gain inside that is no gain.
pub const BF16_KEEP_BELOW: f64 = 0.9;

/// What the probe measured: the fastest of [`RUNS`] single-thread runs on the same patches.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpeedProbe {
    pub patches: usize,
    pub fp32_ms: f64,
    pub bf16_ms: f64,
}

impl SpeedProbe {
    /// bf16's time as a share of fp32's.
    pub fn bf16_share(&self) -> f64 {
        self.bf16_ms / self.fp32_ms
    }

    pub fn keeps_bf16(&self) -> bool {
        self.bf16_ms.is_finite() && self.fp32_ms > 0.0 && self.bf16_share() <= BF16_KEEP_BELOW
    }
}

impl std::fmt::Display for SpeedProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} patches on one thread: bf16 {:.1} ms, fp32 {:.1} ms ({:.2}× fp32's time)",
            self.patches,
            self.bf16_ms,
            self.fp32_ms,
            self.bf16_share()
        )
    }
}

/// Times `fp32` and `bf16` on the calling thread, alternating, on the same synthetic patches.
pub fn measure(plan: &Plan, fp32: &CpuTrunk, bf16: &CpuTrunk) -> SpeedProbe {
    let n = (PROBE_MACS / plan.macs_per_patch().max(1)).clamp(8, 512);
    let pp = plan.patch * plan.patch;
    // A smooth texture with noise, in the range of scaled gray values; the arithmetic does not
    // depend on the values (no data-dependent branches in the GEMMs), so any finite input times the same.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pixels: Vec<f32> = (0..n * pp)
        .map(|i| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32;
            0.5 + 0.3 * ((i % pp) as f32 * 0.37).sin() + 0.2 * noise
        })
        .collect();
    let mut taps: [Vec<f32>; 4] = std::array::from_fn(|l| vec![0.0; n * LAYER_CHANNELS[l]]);
    let mut time = |trunk: &CpuTrunk| {
        let [a, b, c, d] = &mut taps;
        let t = Instant::now();
        trunk.run_chunk(plan, &pixels, n, [a, b, c, d]);
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut fp32_ms, mut bf16_ms) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..RUNS {
        fp32_ms = fp32_ms.min(time(fp32));
        bf16_ms = bf16_ms.min(time(bf16));
    }
    SpeedProbe { patches: n, fp32_ms, bf16_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_kept_only_when_clearly_faster() {
        let p = |bf16_ms, fp32_ms| SpeedProbe { patches: 100, fp32_ms, bf16_ms };
        assert!(p(14.0, 21.0).keeps_bf16());
        assert!(p(18.9, 21.0).keeps_bf16());
        assert!(!p(19.5, 21.0).keeps_bf16(), "a 7 % gain is inside the probe's spread");
        assert!(!p(33.0, 21.0).keeps_bf16());
        assert!(!p(f64::INFINITY, 21.0).keeps_bf16());
        assert!(!p(1.0, 0.0).keeps_bf16());
    }
}
