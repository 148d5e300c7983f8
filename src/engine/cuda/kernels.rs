//! The CUDA sources (`kernels/*.cu`), embedded in the binary and compiled at run time with NVRTC, so
//! building beamwatch needs no CUDA toolkit and the code always matches the GPU it runs on.
//!
//! For the GPU the kernels run on, NVRTC makes a CUBIN for the device's own architecture
//! (`sm_XY`): machine code the driver loads as it is, whatever PTX ISA version the driver
//! understands. PTX would tie us to drivers at least as new as NVRTC (NVRTC 12.9 emits PTX ISA 8.8,
//! which drivers before R575 refuse with `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`). Only a GPU newer
//! than NVRTC knows gets PTX for the newest architecture NVRTC has, JIT-compiled by its driver.

use std::ffi::{CString, c_char, c_int};

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
        functions: &[
            "stem_conv",
            "conv_tiled_128x128",
            "conv_tiled_128x64",
            "conv_mma_bf16_128x128",
            "conv_mma_bf16_128x64",
            "conv_mma_tf32x3_128x128",
            "conv_mma_tf32x3_128x64",
            "splitk_reduce",
        ],
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

fn options(arch: &str) -> CompileOptions {
    CompileOptions {
        // Exact IEEE fp32 (no fast-math, no flush-to-zero): the GPU path is compared with the CPU
        // path to 1e-4 relative, and fused multiply-add is the only rounding difference we accept.
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(true),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    }
}

/// The same flags as [`options`], as NVRTC takes them.
fn option_strings(arch: &str) -> Vec<String> {
    vec![
        "--ftz=false".into(),
        "--prec-sqrt=true".into(),
        "--prec-div=true".into(),
        "--fmad=true".into(),
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
    ]
}

/// Compiles one source to PTX for a virtual architecture such as `compute_90` (or a real one).
pub fn compile(src: &KernelSource, arch: &str) -> Result<Ptx, NvrtcError> {
    if !nvrtc_available() {
        return Err(NvrtcError::Missing);
    }
    let opts = CompileOptions { name: Some(src.file.into()), ..options(arch) };
    cudarc::nvrtc::compile_ptx_with_opts(src.source, opts).map_err(|e| NvrtcError::Compile {
        file: src.file,
        arch: arch.into(),
        message: describe(e),
    })
}

/// The NVRTC library's version (major, minor), `None` without one.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_available() {
        return None;
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two valid out-pointers; the library is present (checked above).
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// The real architectures NVRTC can make a CUBIN for (e.g. 75, 80, 86, 89, 90, …).
pub fn supported_archs() -> Result<Vec<i32>, NvrtcError> {
    use cudarc::nvrtc::sys::{self, nvrtcResult::NVRTC_SUCCESS};
    if !nvrtc_available() {
        return Err(NvrtcError::Missing);
    }
    let fail = |what: &str| NvrtcError::Compile { file: "-", arch: "-".into(), message: format!("{what} failed") };
    let mut n: c_int = 0;
    // SAFETY: a valid out-pointer.
    if unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) } != NVRTC_SUCCESS || n < 0 {
        return Err(fail("nvrtcGetNumSupportedArchs"));
    }
    let mut archs = vec![0 as c_int; n as usize];
    // SAFETY: `archs` holds the `n` entries NVRTC said it writes.
    if unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) } != NVRTC_SUCCESS {
        return Err(fail("nvrtcGetSupportedArchs"));
    }
    Ok(archs)
}

/// Compiles one source to a CUBIN for a real architecture (`sm` = 80 for sm_80, 90 for sm_90).
pub fn compile_cubin(src: &KernelSource, sm: i32) -> Result<Vec<u8>, NvrtcError> {
    cubin_and_log(src, sm, &[]).map(|(bin, _)| bin)
}

/// What ptxas allocated for one kernel (`--ptxas-options=-v`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub function: String,
    pub registers: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub static_shared_bytes: u32,
}

/// ptxas's resource report for every kernel of one source compiled for `sm_XY`: how the occupancy
/// estimates in kernels/README.md are made, and how the tests hold the kernels to them.
pub fn resources(src: &KernelSource, sm: i32) -> Result<Vec<KernelResources>, NvrtcError> {
    let (_, log) = cubin_and_log(src, sm, &["--ptxas-options=-v".into()])?;
    Ok(parse_ptxas_log(&log))
}

/// Parses ptxas's `-v` lines: "Compiling entry function 'f'", "N bytes spill stores, M bytes spill
/// loads", "Used R registers, …, S bytes smem".
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    fn before(line: &str, unit: &str) -> u32 {
        line.find(unit)
            .and_then(|i| line[..i].split(|c: char| c == ',' || c == ':').next_back())
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or(0)
    }
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            out.push(KernelResources { function: name.into(), ..Default::default() });
        } else if let Some(k) = out.last_mut() {
            if line.contains("spill stores") {
                k.spill_store_bytes = before(line, " bytes spill stores");
                k.spill_load_bytes = before(line, " bytes spill loads");
            } else if line.contains("Used ") && line.contains(" registers") {
                k.registers = line
                    .split("Used ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                k.static_shared_bytes = before(line, " bytes smem");
            }
        }
    }
    out
}

/// Resident blocks per SM for a kernel of `registers` per thread, `threads` per block and
/// `shared_bytes` of static shared memory on compute capability `sm` (80: A100, 90: H100/H200):
/// 64 Ki registers allocated per warp in units of 256, 2048 threads, 32 blocks, and 164 KiB
/// (sm_80) or 228 KiB (sm_90) of shared memory with 1 KiB reserved per block.
pub fn blocks_per_sm(registers: u32, threads: usize, shared_bytes: usize, sm: i32) -> usize {
    let warps = threads.div_ceil(32);
    let warp_regs = (registers as usize * 32).div_ceil(256) * 256;
    let by_regs = 65_536 / (warps * warp_regs).max(1);
    let smem_per_sm = if sm >= 90 { 228 * 1024 } else { 164 * 1024 };
    let by_smem = smem_per_sm / (shared_bytes + 1024);
    by_regs.min(by_smem).min(2048 / threads.max(1)).min(32)
}

fn cubin_and_log(src: &KernelSource, sm: i32, extra: &[String]) -> Result<(Vec<u8>, String), NvrtcError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(NvrtcError::Missing);
    }
    let arch = format!("sm_{sm}");
    let err = |message: String| NvrtcError::Compile { file: src.file, arch: arch.clone(), message };
    let code = CString::new(src.source).map_err(|_| err("the source holds a NUL byte".into()))?;
    let name = CString::new(src.file).map_err(|_| err("the file name holds a NUL byte".into()))?;
    let prog = result::create_program(&code, Some(&name)).map_err(|e| err(format!("{e:?}")))?;
    let mut opts = option_strings(&arch);
    opts.extend_from_slice(extra);
    // SAFETY: `prog` was created above and is destroyed once, below, after its last use.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let log = result::get_program_log(prog).map(|l| c_chars_to_string(&l)).unwrap_or_default();
        match compiled {
            Err(e) => Err(err(format!("{e:?}: {}", log.trim()))),
            Ok(()) => {
                let mut size = 0usize;
                if sys::nvrtcGetCUBINSize(prog, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(err("nvrtcGetCUBINSize failed".into()))
                } else {
                    let mut bin = vec![0u8; size];
                    if sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut c_char) == sys::nvrtcResult::NVRTC_SUCCESS {
                        Ok((bin, log))
                    } else {
                        Err(err("nvrtcGetCUBIN failed".into()))
                    }
                }
            }
        }
    };
    // SAFETY: created above, not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What was compiled for a device, for the log and the provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// Machine code for the device's own architecture.
    Cubin { arch: String },
    /// PTX for the newest architecture NVRTC knows (the device is newer); the driver JIT-compiles it.
    Ptx { arch: String },
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cubin { arch } => write!(f, "CUBIN for {arch}"),
            Self::Ptx { arch } => write!(f, "PTX for {arch} (JIT by the driver)"),
        }
    }
}

/// Chooses how to build for a device of compute capability `cc`: CUBIN when NVRTC supports its
/// architecture, else PTX for the newest virtual architecture below it that NVRTC supports.
pub fn plan_for_device(cc: (i32, i32), supported: &[i32]) -> Result<Loaded, NvrtcError> {
    let sm = cc.0 * 10 + cc.1;
    if supported.contains(&sm) {
        return Ok(Loaded::Cubin { arch: format!("sm_{sm}") });
    }
    supported
        .iter()
        .copied()
        .filter(|a| *a <= sm)
        .max()
        .map(|a| Loaded::Ptx { arch: format!("compute_{a}") })
        .ok_or_else(|| NvrtcError::Compile {
            file: "-",
            arch: format!("sm_{sm}"),
            message: format!("NVRTC supports none of the architectures up to sm_{sm} (it has {supported:?})"),
        })
}

/// Compiles one source as [`plan_for_device`] chose, ready for `load_module`.
pub fn compile_for(src: &KernelSource, how: &Loaded) -> Result<Ptx, NvrtcError> {
    match how {
        Loaded::Cubin { arch } => {
            let sm = arch.trim_start_matches("sm_").parse::<i32>().unwrap_or(0);
            compile_cubin(src, sm).map(Ptx::from_binary)
        }
        Loaded::Ptx { arch } => compile(src, arch),
    }
}

fn describe(e: CompileError) -> String {
    match e {
        CompileError::CompileError { nvrtc, log, .. } => {
            format!("{nvrtc:?}: {}", log.to_string_lossy().trim())
        }
        other => format!("{other:?}"),
    }
}
