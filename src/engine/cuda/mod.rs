//! The GPU path: our own CUDA kernels (`kernels/*.cu`) compiled with NVRTC at start-up and launched
//! through cudarc. cudarc loads libcuda and libnvrtc at run time (`dynamic-loading`), so the binary
//! builds and runs without either; [`open`] checks for both before touching them, because cudarc
//! panics on first use of a library it cannot find.

pub mod frame;
pub mod kernels;
pub mod tables;
pub mod trunk;

use cudarc::driver::{CudaContext, DriverError};

pub use kernels::NvrtcError;
pub use trunk::Trunk;

use crate::engine::Plan;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum CudaError {
    #[error("no NVIDIA driver: libcuda.so could not be loaded")]
    NoDriver,
    #[error("no CUDA GPU: {0}")]
    NoDevice(String),
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
    /// The driver's own error is kept as the source.
    #[error("CUDA error while {what}: {source}")]
    Driver { what: String, source: DriverError },
    #[error("GPU path: {0}")]
    Setup(String),
}

impl CudaError {
    pub(crate) fn driver(what: impl Into<String>, e: DriverError) -> Self {
        Self::Driver { what: what.into(), source: e }
    }
}

/// The GPU the trunk runs on.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_mib: usize,
    /// The driver's CUDA version as it reports it (12080 = CUDA 12.8), when it answers.
    pub driver_version: Option<i32>,
    /// What NVRTC compiled and the driver loaded.
    pub loaded: kernels::Loaded,
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ma, mi) = self.compute_capability;
        let driver = self.driver_version.map_or("?".into(), |v| format!("{}.{}", v / 1000, (v % 1000) / 10));
        write!(
            f,
            "{} (sm_{ma}{mi}, {} MiB; driver CUDA {driver}; kernels: {})",
            self.name, self.memory_mib, self.loaded
        )
    }
}

/// Finds GPU 0, compiles the kernels for it and uploads the plan. Every way this can fail on a
/// machine without a usable GPU is an error, never a panic.
pub fn open(plan: &Plan) -> Result<(Trunk, GpuInfo), CudaError> {
    // SAFETY: only probes whether the driver library can be dlopen'ed.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    match CudaContext::device_count() {
        Ok(0) => return Err(CudaError::NoDevice("the driver reports 0 devices".into())),
        Ok(_) => {}
        Err(e) => return Err(CudaError::driver("counting the GPUs (no CUDA device usable)", e)),
    }
    if !kernels::nvrtc_available() {
        return Err(NvrtcError::Missing.into());
    }
    let ctx = CudaContext::new(0).map_err(|e| CudaError::driver("creating a context on GPU 0", e))?;
    let cc = ctx.compute_capability().map_err(|e| CudaError::driver("reading the compute capability", e))?;
    let how = kernels::plan_for_device(cc, &kernels::supported_archs()?)?;
    let info = GpuInfo {
        name: ctx.name().unwrap_or_else(|_| "unknown GPU".into()),
        compute_capability: cc,
        memory_mib: ctx.total_mem().map_or(0, |b| b >> 20),
        driver_version: driver_version(),
        loaded: how.clone(),
    };
    tracing::info!("GPU: {info}; NVRTC {:?}", kernels::nvrtc_version());
    let mut trunk = Trunk::new(ctx, &how, plan)?;
    trunk.choose_fp32_math()?;
    Ok((trunk, info))
}

/// The driver's CUDA version (e.g. 13000), `None` when it does not answer.
pub fn driver_version() -> Option<i32> {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: a valid out-pointer; only called once the driver library is known to be present.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
}
