//! The CUDA sources (`kernels/*.cu`), embedded in the binary and compiled at run time with NVRTC, so
//! building beamwatch needs no CUDA toolkit and the PTX always matches the GPU it runs on.

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

/// One `.cu` file and the `extern "C"` kernels the host launches from it.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub file: &'static str,
    pub source: &'static str,
    pub functions: &'static [&'static str],
}

pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "patches.cu",
        source: include_str!("../../../kernels/patches.cu"),
        functions: &["extract_patches_u16", "extract_patches_u32", "extract_patches_f32"],
    },
    KernelSource {
        file: "conv.cu",
        source: include_str!("../../../kernels/conv.cu"),
        functions: &["stem_conv", "conv_classes"],
    },
    KernelSource {
        file: "pool.cu",
        source: include_str!("../../../kernels/pool.cu"),
        functions: &["max_pool", "global_avg_pool"],
    },
    KernelSource {
        file: "similarity.cu",
        source: include_str!("../../../kernels/similarity.cu"),
        functions: &["cosine_rows", "similarity_summary"],
    },
];

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum NvrtcError {
    #[error(
        "the NVRTC library (libnvrtc.so.12) was not found: install CUDA 12 or `pip install nvidia-cuda-nvrtc-cu12` \
         and put its nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH (tools/setup.sh does this)"
    )]
    Missing,
    #[error("NVRTC could not compile kernels/{file} for {arch}: {message}")]
    Compile { file: &'static str, arch: String, message: String },
}

/// Whether libnvrtc can be loaded (cudarc would panic on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; nothing is called in it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one source for a virtual architecture such as `compute_90` (or a real one, `sm_90`).
pub fn compile(src: &KernelSource, arch: &str) -> Result<Ptx, NvrtcError> {
    if !nvrtc_available() {
        return Err(NvrtcError::Missing);
    }
    let opts = CompileOptions {
        // Exact IEEE fp32 (no fast-math, no flush-to-zero): the GPU path is compared with the CPU
        // path to 1e-4 relative, and fused multiply-add is the only rounding difference we accept.
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(true),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(src.file.into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src.source, opts).map_err(|e| NvrtcError::Compile {
        file: src.file,
        arch: arch.into(),
        message: describe(e),
    })
}

fn describe(e: CompileError) -> String {
    match e {
        CompileError::CompileError { nvrtc, log, .. } => {
            format!("{nvrtc:?}: {}", log.to_string_lossy().trim())
        }
        other => format!("{other:?}"),
    }
}
