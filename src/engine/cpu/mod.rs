//! Runs a [`Plan`] on a chunk of patches on one thread, in the engine's precision. Parallelism is
//! across chunks (see `Engine`), so each GEMM here is single-threaded and no thread waits on
//! another mid-network.
//!
//! - [`fp32`]: row-major activations on the `gemm` crate (exact; the default).
//! - [`bf16`]: channel-major activations on gemmkit, weights packed at load time ([`packed`]).

pub mod bf16;
pub mod fp32;
pub mod packed;
pub mod precision;

use super::plan::Plan;
use packed::PackedTrunk;
use precision::Precision;

pub use fp32::conv_once;

/// The CPU path in the precision the engine was built for.
pub enum CpuTrunk {
    /// [`fp32`]: the plan's own weights, row-major.
    Fp32,
    /// The weights packed for gemmkit in bf16.
    Bf16(PackedTrunk),
}

impl CpuTrunk {
    pub fn new(plan: &Plan, precision: Precision) -> Self {
        match precision {
            Precision::Fp32 => {
                fp32::configure_gemm();
                Self::Fp32
            }
            Precision::Bf16 => Self::Bf16(PackedTrunk::new(plan)),
        }
    }

    pub fn precision(&self) -> Precision {
        match self {
            Self::Fp32 => Precision::Fp32,
            Self::Bf16(_) => Precision::Bf16,
        }
    }

    /// Features of `n` patches: `pixels` is `[n][patch²]` gray values (scaled, not
    /// ImageNet-normalised). Writes the global-average-pooled output of layer1..4 into `taps[l]`
    /// (`[n][C_l]`).
    pub fn run_chunk(&self, plan: &Plan, pixels: &[f32], n: usize, taps: [&mut [f32]; 4]) {
        match self {
            Self::Fp32 => fp32::run_chunk(plan, pixels, n, taps),
            Self::Bf16(w) => bf16::run_chunk(plan, w, pixels, n, taps),
        }
    }
}

/// Patches per stem-and-pool pass: a whole chunk's stem output would leave L2 before the max-pool
/// reads it back, so the stem runs on as many as keep their stem output (≈25 KB a 20×20 patch) within
/// this core's L2 (read at run time), to the nearest multiple of 16, at least 16: 48 with a 1 MiB
/// L2. Measured on the 2-core Zen 5 machine (1 MiB L2), `bench --layers`, bf16, one run each:
/// stem im2col + GEMM + pool 21 thread-ms per 1020² frame in one pass of 192 patches, 17 in
/// passes of 64, 25 in passes of 16 (the pool's loops grow too short).
pub(super) fn patches_per_stem_pass(plan: &Plan) -> usize {
    static L2_BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let l2 = *L2_BYTES.get_or_init(|| gemmkit::topology().l2.effective_bytes());
    let st = &plan.stem;
    let per_patch = st.cout * st.out_h * st.out_w * std::mem::size_of::<f32>();
    let fit = l2 / per_patch.max(1);
    ((fit + 8) / 16 * 16).max(16)
}
