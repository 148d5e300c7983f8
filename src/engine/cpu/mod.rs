//! Runs a [`Plan`] on a chunk of patches on one thread, in the engine's precision. Parallelism is
//! across chunks (see `Engine`), so each GEMM here is single-threaded and no thread waits on
//! another mid-network.
//!
//! - [`fp32`]: row-major activations on the `gemm` crate (exact; the default).
//! - [`bf16`]: channel-major activations on gemmkit, weights packed at load time ([`packed`]).
//! - [`winograd`]: the transforms around the fp32 path's Winograd GEMMs.
//! - [`probe`]: times both on the same patches, for `precision = "bf16"` (kept only where faster).

pub mod bf16;
pub mod fp32;
pub mod packed;
pub mod precision;
pub mod probe;
pub mod winograd;

use super::plan::Plan;
use packed::PackedTrunk;
use precision::Precision;

pub use fp32::conv_once;

const FP32_CHUNK: usize = 192;
const BF16_CHUNK: usize = 1536;
const BF16_CHUNK_BYTES: usize = 16 << 20;

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

    /// Target patches per chunk (the engine balances it across threads, `super::balanced_chunk`).
    ///
    /// Every chunk reads all the packed weights once (34 MB in fp32, 17 MB in bf16 for 20×20
    /// patches, more than the cache holds); a chunk's activations grow with its patches. Measured on
    /// the 2-core Zen 5 machine, 1020² frames (2,601 patches), median ms/frame of alternating runs
    /// (README "Speed"):
    /// - fp32 (`gemm` reads the weights in place): flat from 128 to 384 patches (170–177 ms), worse
    ///   at 651 and 1,301 (203, 211 ms); 192 it stays.
    /// - bf16 (gemmkit, twice the arithmetic rate, so the weight reads show): 1,301 patches (one
    ///   chunk per thread) 129 ms, 651 140 ms, 186 (fp32's target) 146–157 ms. The target is
    ///   1,536 patches, held to 16 MiB of activation buffers per thread for larger patches.
    pub fn chunk_target(&self, plan: &Plan) -> usize {
        match self {
            Self::Fp32 => FP32_CHUNK,
            Self::Bf16(_) => {
                let per_patch = bf16::activation_bytes_per_patch(plan).max(1);
                BF16_CHUNK.min(BF16_CHUNK_BYTES / per_patch).max(16)
            }
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
    let l2 = l2_bytes();
    let st = &plan.stem;
    let per_patch = st.cout * st.out_h * st.out_w * std::mem::size_of::<f32>();
    let fit = l2 / per_patch.max(1);
    ((fit + 8) / 16 * 16).max(16)
}

/// Output columns per gather-and-GEMM block: as many as keep the block's gathered columns (`k`
/// values each) within half of this core's L2 (read at run time), so the GEMM packs them from L2,
/// in multiples of 64, at least 64. With large chunks a class's gathered columns would otherwise run
/// to megabytes (layer1's interior: 9 positions × 576 values × 1,301 patches, 13 MiB in bf16) and
/// the GEMM would read them back from L3.
pub(super) fn gather_block(k: usize, elem_bytes: usize) -> usize {
    (l2_bytes() / 2 / (k * elem_bytes).max(1) / 64 * 64).max(64)
}

/// The fp32 epilogue on rows of `bias.len()` channels: `v + bias (+ residual)`, then ReLU if asked.
#[inline(always)]
fn bias_residual_relu(out: &mut [f32], bias: &[f32], residual: Option<&[f32]>, relu: bool) {
    let c = bias.len();
    match residual {
        Some(res) => {
            for (row, rrow) in out.chunks_exact_mut(c).zip(res.chunks_exact(c)) {
                for ((v, b), r) in row.iter_mut().zip(bias).zip(rrow) {
                    let s = *v + b + r;
                    *v = if relu { s.max(0.0) } else { s };
                }
            }
        }
        None => {
            for row in out.chunks_exact_mut(c) {
                for (v, b) in row.iter_mut().zip(bias) {
                    let s = *v + b;
                    *v = if relu { s.max(0.0) } else { s };
                }
            }
        }
    }
}

fn l2_bytes() -> usize {
    static L2_BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2_BYTES.get_or_init(|| gemmkit::topology().l2.effective_bytes())
}
