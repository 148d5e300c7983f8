//! The feature engine: ResNet-18 trunk features of every patch of a frame in one batched pass.
//!
//! - [`network`]: torchvision weights → folded, grayscale trunk.
//! - [`plan`]: the trunk compiled for a patch size (padding-free GEMM classes).
//! - [`winograd`]: the small maps' 3×3 convolutions as fewer, pointwise GEMMs (fp32 CPU path).
//! - [`cpu`]: executes a plan on a chunk of patches.
//!
//! - [`cuda`]: the same plan on the GPU with our own kernels (`kernels/*.cu`).
//!
//! [`Engine`] runs a frame's patches on the GPU when it has one, else splits them into chunks on its
//! own thread pool.

pub mod backend;
pub mod cpu;
pub mod cuda;
pub mod network;
pub mod plan;
pub mod profile;
pub mod winograd;

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

pub use backend::BackendChoice;
pub use cpu::precision::Precision;
pub use network::Network;
pub use plan::Plan;

use crate::weights::layout::LAYER_CHANNELS;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum EngineError {
    #[error("patch size {0} px is outside the supported {min}..={max} px", min = plan::PATCH_MIN, max = plan::PATCH_MAX)]
    PatchSize(usize),
    #[error("internal plan error: {0}")]
    Plan(String),
    #[error("cannot start {0} worker threads: {1}")]
    Threads(usize, String),
    #[error("--backend cuda needs a usable GPU (backend auto or cpu runs on the CPU path)")]
    Cuda(#[from] cuda::CudaError),
}

/// Global-average-pooled features after layer1..layer4 for `n` patches; `layers[l]` is `[n][C_l]`
/// with C = 64, 128, 256, 512.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub n: usize,
    pub layers: [Vec<f32>; 4],
}

/// Which of layer1..layer4 a caller needs.
pub type Layers = [bool; 4];

impl Features {
    pub fn zeros(n: usize) -> Self {
        Self { n, layers: std::array::from_fn(|l| vec![0.0; n * LAYER_CHANNELS[l]]) }
    }

    /// Feature vector of patch `i` after layer `l` (0-based: 3 = layer4, the seed's 512-d vector).
    pub fn row(&self, l: usize, i: usize) -> &[f32] {
        let c = LAYER_CHANNELS[l];
        &self.layers[l][i * c..(i + 1) * c]
    }
}

/// A chunk size near `target` that gives every thread the same number of chunks, so no core idles
/// at the end of a frame.
pub fn balanced_chunk(n: usize, threads: usize, target: usize) -> usize {
    let threads = threads.max(1);
    let rounds = n.div_ceil(threads * target.max(1)).max(1);
    n.div_ceil(threads * rounds).max(1)
}

pub struct Engine {
    plan: Arc<Plan>,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Patches per chunk asked for (`--chunk`); `None`: the CPU path's own target.
    chunk: Option<usize>,
    /// The CPU path's weights, packed for the GEMM in the engine's precision.
    cpu: cpu::CpuTrunk,
    /// bf16 against fp32 on this CPU, when bf16 was asked for and could run (`with_precision`).
    precision_probe: Option<cpu::probe::SpeedProbe>,
    gpu: Option<Gpu>,
}

/// The GPU trunk; after a GPU error the engine stays on the CPU path (`failed`).
struct Gpu {
    info: cuda::GpuInfo,
    state: Mutex<GpuState>,
}

struct GpuState {
    trunk: cuda::Trunk,
    failed: bool,
}

/// What an engine runs on, for logs and benchmark reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActiveBackend {
    Cpu { threads: usize },
    Cuda { gpu: String },
}

impl ActiveBackend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cpu { .. } => "cpu",
            Self::Cuda { .. } => "cuda",
        }
    }
}

impl std::fmt::Display for ActiveBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu { threads } => write!(f, "CPU ({threads} threads)"),
            Self::Cuda { gpu } => write!(f, "CUDA on {gpu}"),
        }
    }
}

impl Engine {
    /// `threads = 0` uses every available core.
    pub fn new(net: &Network, patch: usize, threads: usize) -> Result<Self, EngineError> {
        let plan = Arc::new(Plan::new(net, patch)?);
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("bw-cpu-{i}"))
            .build()
            .map_err(|e| EngineError::Threads(threads, e.to_string()))?;
        let cpu = cpu::CpuTrunk::new(&plan, Precision::Fp32);
        Ok(Self { plan, pool, threads, chunk: None, cpu, precision_probe: None, gpu: None })
    }

    /// An engine on the chosen backend. `Auto` without a usable GPU falls back to the CPU path with
    /// one log line saying why; `Cuda` without one is an error.
    pub fn for_backend(
        net: &Network,
        patch: usize,
        threads: usize,
        choice: BackendChoice,
    ) -> Result<Self, EngineError> {
        let mut engine = Self::new(net, patch, threads)?;
        if choice == BackendChoice::Cpu {
            return Ok(engine);
        }
        match cuda::open(&engine.plan) {
            Ok((trunk, info)) => {
                tracing::info!("feature engine: CUDA on {info} (kernels compiled with NVRTC)");
                engine.gpu = Some(Gpu { info, state: Mutex::new(GpuState { trunk, failed: false }) });
                Ok(engine)
            }
            Err(e) if choice == BackendChoice::Auto => {
                tracing::info!("no usable GPU ({e}): feature engine on the CPU path ({} threads)", engine.threads);
                Ok(engine)
            }
            Err(e) => Err(EngineError::Cuda(e)),
        }
    }

    pub fn backend(&self) -> ActiveBackend {
        match &self.gpu {
            Some(g) => match g.state.lock() {
                Ok(s) if !s.failed => {
                    ActiveBackend::Cuda { gpu: format!("{}; convolutions on {}", g.info, s.trunk.describe_math()) }
                }
                _ => ActiveBackend::Cpu { threads: self.threads },
            },
            None => ActiveBackend::Cpu { threads: self.threads },
        }
    }

    /// The GPU trunk, for the all-GPU frame benchmark; `None` on the CPU path.
    pub fn with_gpu_trunk<R>(&self, f: impl FnOnce(&mut cuda::Trunk) -> R) -> Option<R> {
        let g = self.gpu.as_ref()?;
        let mut st = g.state.lock().ok()?;
        if st.failed {
            return None;
        }
        Some(f(&mut st.trunk))
    }

    /// The CPU path's number format, as the config asks for it: `Bf16` runs bf16 where this CPU
    /// has AVX512-BF16 and computes the trunk clearly faster in bf16 than in fp32, timed on the
    /// same patches when the engine starts (`cpu::probe`, 0.1–0.2 s); elsewhere fp32, said in one
    /// log line with the figures. bf16 buys speed at the cost of accuracy, so without the speed
    /// it is not worth having.
    ///
    /// On the GPU, `Bf16` runs the convolutions on bf16 tensor cores (sm_80 and later) without a
    /// probe: there bf16 has 16× fp32's arithmetic rate, not the CPU's 1–2× (kernels/README.md).
    pub fn with_precision(self, precision: Precision) -> Self {
        let mut e = self.with_precision_unmeasured(precision);
        if e.cpu.precision() != Precision::Bf16 {
            return e;
        }
        let fp32 = cpu::CpuTrunk::new(&e.plan, Precision::Fp32);
        // On a worker thread: the trunks' scratch buffers are per thread, and a worker keeps them
        // for the frames that follow.
        let probe = e.pool.install(|| cpu::probe::measure(&e.plan, &fp32, &e.cpu));
        e.precision_probe = Some(probe);
        if probe.keeps_bf16() {
            tracing::info!("precision bf16: faster than fp32 on this CPU ({probe})");
        } else {
            tracing::info!(
                "precision bf16 asked for, but on this CPU it is not clearly faster than fp32 ({probe}): \
                 the CPU path runs fp32"
            );
            e.cpu = fp32;
        }
        e
    }

    /// Like [`Self::with_precision`] without timing anything: bf16 wherever the CPU has
    /// AVX512-BF16 (tests of bf16's numerics; `bench --force-precision`). `Bf16` on a CPU without
    /// native bf16 stays `Fp32` and says so (emulated bf16 would be slower than fp32 and less accurate).
    pub fn with_precision_unmeasured(mut self, precision: Precision) -> Self {
        self.precision_probe = None;
        self.set_gpu_precision(precision);
        let precision = if precision == Precision::Bf16 && !cpu::precision::native_bf16() {
            tracing::info!("precision bf16 asked for, but this CPU has no AVX512-BF16: the CPU path runs fp32");
            Precision::Fp32
        } else {
            precision
        };
        if precision != self.cpu.precision() {
            self.cpu = cpu::CpuTrunk::new(&self.plan, precision);
        }
        self
    }

    /// The GPU trunk's convolutions in `precision`; a GPU that cannot take it stays on the CPU
    /// path, as after any GPU error.
    fn set_gpu_precision(&mut self, precision: Precision) {
        let Some(g) = &self.gpu else { return };
        let Ok(mut st) = g.state.lock() else { return };
        if st.failed {
            return;
        }
        if let Err(e) = st.trunk.set_precision(precision) {
            tracing::error!("GPU feature engine failed ({e}); continuing on the CPU path ({} threads)", self.threads);
            st.failed = true;
        }
    }

    /// The number format the features are computed in: the GPU trunk's where the engine runs on
    /// the GPU, else the CPU path's.
    pub fn precision(&self) -> Precision {
        self.with_gpu_trunk(|t| t.precision()).unwrap_or_else(|| self.cpu.precision())
    }

    /// The number format of the CPU path (the fallback where a GPU runs).
    pub fn cpu_precision(&self) -> Precision {
        self.cpu.precision()
    }

    /// What [`Self::with_precision`] measured, when bf16 was asked for on a CPU that has it.
    pub fn precision_probe(&self) -> Option<cpu::probe::SpeedProbe> {
        self.precision_probe
    }

    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = Some(chunk.max(1));
        self
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn patch(&self) -> usize {
        self.plan.patch
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Features of `pixels.len() / patch²` patches (`[n][patch²]`, scaled gray values).
    pub fn features(&self, pixels: &[f32]) -> Features {
        self.features_of_layers(pixels, [true; 4])
    }

    /// Like [`Self::features`], for callers that read only some layers: the GPU path copies back
    /// only those (layer4 alone is 512 of the 960 floats per patch); the others may be left zero.
    pub fn features_of_layers(&self, pixels: &[f32], layers: Layers) -> Features {
        if let Some(f) = self.gpu_features(pixels, layers) {
            return f;
        }
        self.cpu_features(pixels)
    }

    /// The GPU result, or `None` (no GPU, or it failed: then the CPU path takes over for good, so
    /// a GPU fault costs speed, never the session).
    fn gpu_features(&self, pixels: &[f32], layers: Layers) -> Option<Features> {
        let g = self.gpu.as_ref()?;
        let mut st = g.state.lock().ok()?;
        if st.failed {
            return None;
        }
        match st.trunk.features_of_layers(pixels, layers) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(
                    "GPU feature engine failed ({e}); continuing on the CPU path ({} threads)",
                    self.threads
                );
                st.failed = true;
                None
            }
        }
    }

    /// The CPU path, whatever the backend (tests compare the two).
    pub fn cpu_features(&self, pixels: &[f32]) -> Features {
        let pp = self.plan.patch * self.plan.patch;
        let n = pixels.len() / pp;
        let mut out = Features::zeros(n);
        if n == 0 {
            return out;
        }
        let target = self.chunk.unwrap_or_else(|| self.cpu.chunk_target(&self.plan));
        let chunk = balanced_chunk(n, self.threads, target);
        let (plan, trunk) = (&*self.plan, &self.cpu);
        self.pool.install(|| {
            // Split every output layer at the same chunk boundaries, then give each task its pieces.
            let [l1, l2, l3, l4] = &mut out.layers;
            let pieces: Vec<_> = pixels
                .chunks(chunk * pp)
                .zip(l1.chunks_mut(chunk * LAYER_CHANNELS[0]))
                .zip(l2.chunks_mut(chunk * LAYER_CHANNELS[1]))
                .zip(l3.chunks_mut(chunk * LAYER_CHANNELS[2]))
                .zip(l4.chunks_mut(chunk * LAYER_CHANNELS[3]))
                .map(|((((px, a), b), c), d)| (px, [a, b, c, d]))
                .collect();
            pieces.into_par_iter().for_each(|(px, taps)| trunk.run_chunk(plan, px, px.len() / pp, taps));
        });
        out
    }
}
