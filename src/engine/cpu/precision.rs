//! The number format the CPU trunk computes in.
//!
//! `fp32` is exact to the reference network (≤ 1e-4 relative on every layer tap). `bf16` keeps
//! weights and activations as bfloat16 (8 significant bits) and accumulates every dot product in
//! f32 (AVX512-BF16 `vdpbf16ps` through gemmkit); its error against fp32 is measured by
//! `tests/bf16.rs` and reported in the README. It needs a CPU with AVX512-BF16 (AMD Zen 4 and
//! later, Intel Sapphire Rapids and later); elsewhere the engine runs fp32 and says so once.

use gemmkit::{FusedScalar, bf16};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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

/// An activation and weight element type of the CPU trunk.
/// (`ZERO` and `ONE` come from gemmkit's `Scalar`.)
pub trait Act: FusedScalar + Copy + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Act for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}
