//! The number format the CPU trunk computes in.
//!
//! `fp32` is exact to the reference network (≤ 1e-4 relative on every layer tap). `bf16` keeps
//! weights and activations as bfloat16 (8 significant bits) and accumulates every dot product in
//! f32 (AVX512-BF16 `vdpbf16ps` through gemmkit); its error against fp32 is measured by
//! `tests/bf16.rs` and reported in the README. It needs a CPU with AVX512-BF16 (AMD Zen 4 and
//! later, Intel Sapphire Rapids and later); elsewhere the engine runs fp32 and says so once. Where
//! the CPU has it, the engine also times both formats when it starts and keeps bf16 only if it is
//! clearly faster ([`super::probe`]): on Intel's AVX-512 cores without AMX it is not.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

/// Whether this CPU multiplies bf16 natively. Without it gemmkit would widen every operand to f32:
/// slower than fp32 and less accurate, so the engine stays fp32 there.
pub fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
