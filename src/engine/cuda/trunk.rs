//! The ResNet-18 trunk on the GPU: the plan's tables live on the device, batches of patches go in,
//! layer taps (and, for the frame pipeline, cosine similarities) come out.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg,
};

mod launch;

pub use launch::ConvLaunch;

use super::CudaError;
use super::kernels::{Loaded, SOURCES, compile_for};
use super::tables::{ConvMath, ConvTables, ConvTile, DevicePlan, Launch, MAX_SPLITS};
use crate::engine::{Features, Plan, Precision};
use crate::weights::layout::LAYER_CHANNELS;

/// Threads per block of the grid-stride element kernels and the per-patch reductions.
const ELEMENT_THREADS: u32 = 256;
const ROW_THREADS: u32 = 128;
// The per-patch and summary reductions (patches.cu, similarity.cu) halve a power-of-two block.
const _: () = assert!(ELEMENT_THREADS.is_power_of_two() && ELEMENT_THREADS <= 256);
const _: () = assert!(ROW_THREADS.is_power_of_two() && ROW_THREADS <= 256);
/// Most patches one pass holds on the device (a 2048² frame of 20×20 patches is 10,404); larger
/// inputs run in several passes. Fewer when the device memory cannot hold them: see [`batch_limit`].
pub const MAX_BATCH: usize = 16_384;
/// The share of the device's free memory one workspace may take (the rest is left to the driver,
/// the frame buffers and other processes on a shared GPU).
pub const FREE_MEMORY_SHARE: f64 = 0.5;

/// Device bytes one patch needs in the workspace: its pixels, its invalid count, five activation
/// buffers of the largest layer (four for the trunk, one for split-K's partial sums) and the four
/// layer taps.
pub fn workspace_bytes_per_patch(patch_px: usize, max_activation_per_patch: usize) -> usize {
    4 * (patch_px * patch_px + 1 + 5 * max_activation_per_patch + LAYER_CHANNELS.iter().sum::<usize>())
}

/// Patches per pass for `free_bytes` of free device memory: by bytes, not a fixed count (64 px
/// patches need ≈ 1 MiB each, so 16,384 of them would be 16 GiB). `None` when not even 64 fit.
pub fn batch_limit(bytes_per_patch: usize, free_bytes: usize) -> Option<usize> {
    let n = ((free_bytes as f64 * FREE_MEMORY_SHARE) / bytes_per_patch.max(1) as f64) as usize;
    (n >= 64).then(|| n.min(MAX_BATCH))
}

/// Frame pixel types the extraction kernels take (kernels/patches.cu).
pub trait GpuPixel: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy + Default {
    const KERNEL: &'static str;
    /// Integer frames mark detector gaps with their maximum value; f32 frames have none.
    const HAS_GAP: bool;
    fn extract(k: &Kernels) -> &CudaFunction;
}

impl GpuPixel for u16 {
    const KERNEL: &'static str = "extract_patches_u16";
    const HAS_GAP: bool = true;
    fn extract(k: &Kernels) -> &CudaFunction {
        &k.extract_u16
    }
}

impl GpuPixel for u32 {
    const KERNEL: &'static str = "extract_patches_u32";
    const HAS_GAP: bool = true;
    fn extract(k: &Kernels) -> &CudaFunction {
        &k.extract_u32
    }
}

impl GpuPixel for f32 {
    const KERNEL: &'static str = "extract_patches_f32";
    const HAS_GAP: bool = false;
    fn extract(k: &Kernels) -> &CudaFunction {
        &k.extract_f32
    }
}

pub struct Kernels {
    pub extract_u16: CudaFunction,
    pub extract_u32: CudaFunction,
    pub extract_f32: CudaFunction,
    pub stem: CudaFunction,
    /// Every convolution kernel, in the order of [`ConvMath::ALL`] × [`ConvTile::ALL`].
    conv: Vec<CudaFunction>,
    pub splitk_reduce: CudaFunction,
    pub max_pool: CudaFunction,
    pub gap: CudaFunction,
    pub cosine: CudaFunction,
    pub summary: CudaFunction,
}

impl Kernels {
    fn load(ctx: &Arc<CudaContext>, how: &Loaded) -> Result<Self, CudaError> {
        let mut modules: Vec<(&str, Arc<CudaModule>)> = Vec::new();
        for src in SOURCES {
            let ptx = compile_for(src, how)?;
            let module =
                ctx.load_module(ptx).map_err(|e| CudaError::driver(format!("loading kernels/{}", src.file), e))?;
            modules.push((src.file, module));
        }
        let get = |file: &str, name: &str| -> Result<CudaFunction, CudaError> {
            let (_, m) = modules
                .iter()
                .find(|(f, _)| *f == file)
                .ok_or_else(|| CudaError::Setup(format!("kernels/{file} is not embedded")))?;
            m.load_function(name).map_err(|e| CudaError::driver(format!("kernel {name} in kernels/{file}"), e))
        };
        Ok(Self {
            extract_u16: get("patches.cu", "extract_patches_u16")?,
            extract_u32: get("patches.cu", "extract_patches_u32")?,
            extract_f32: get("patches.cu", "extract_patches_f32")?,
            stem: get("conv.cu", "stem_conv")?,
            conv: ConvMath::ALL
                .iter()
                .flat_map(|m| ConvTile::ALL.map(|t| m.kernel(t)))
                .map(|name| get("conv.cu", name))
                .collect::<Result<_, _>>()?,
            splitk_reduce: get("conv.cu", "splitk_reduce")?,
            max_pool: get("pool.cu", "max_pool")?,
            gap: get("pool.cu", "global_avg_pool")?,
            cosine: get("similarity.cu", "cosine_rows")?,
            summary: get("similarity.cu", "similarity_summary")?,
        })
    }

    fn conv(&self, math: ConvMath, tile: ConvTile) -> &CudaFunction {
        let m = ConvMath::ALL.iter().position(|&x| x == math).unwrap_or(0);
        let t = ConvTile::ALL.iter().position(|&x| x == tile).unwrap_or(0);
        &self.conv[m * ConvTile::ALL.len() + t]
    }
}

struct DevConv {
    t: ConvTables,
    desc: CudaSlice<i32>,
    gathers: CudaSlice<i32>,
    weights: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    /// The kernel family this convolution runs on ([`DevConv::set_math`]).
    math: ConvMath,
    /// `ConvTables::weights_f32_t` and `weights_bf16_t`, uploaded the first time a tensor-core
    /// kernel needs them and kept (the trunk's start-up probe switches back and forth).
    weights_f32_t: Option<CudaSlice<f32>>,
    weights_bf16_t: Option<CudaSlice<u16>>,
}

impl DevConv {
    fn upload(stream: &Arc<CudaStream>, t: &ConvTables) -> Result<Self, CudaError> {
        let up = "uploading the plan";
        Ok(Self {
            math: ConvMath::Ffma,
            weights_f32_t: None,
            weights_bf16_t: None,
            desc: stream.clone_htod(&t.desc).map_err(|e| CudaError::driver(up, e))?,
            // An empty gather table (never for ResNet-18) still needs a valid pointer.
            gathers: stream.clone_htod(&nonempty_i32(&t.gathers)).map_err(|e| CudaError::driver(up, e))?,
            weights: stream.clone_htod(&t.weights).map_err(|e| CudaError::driver(up, e))?,
            bias: stream.clone_htod(&t.bias).map_err(|e| CudaError::driver(up, e))?,
            t: t.clone(),
        })
    }

    /// Runs this convolution on `math` from now on, or on FFMA where `math` does not take its
    /// shape; uploads the weights the kernel reads. Returns what it runs on.
    fn set_math(&mut self, stream: &Arc<CudaStream>, math: ConvMath) -> Result<ConvMath, CudaError> {
        let math = if math.fits(&self.t) { math } else { ConvMath::Ffma };
        let up = "uploading transposed weights";
        match math {
            ConvMath::Tf32x3 if self.weights_f32_t.is_none() => {
                let w = stream.clone_htod(&self.t.weights_f32_t()).map_err(|e| CudaError::driver(up, e))?;
                self.weights_f32_t = Some(w);
            }
            ConvMath::Bf16 if self.weights_bf16_t.is_none() => {
                let w = stream.clone_htod(&self.t.weights_bf16_t()).map_err(|e| CudaError::driver(up, e))?;
                self.weights_bf16_t = Some(w);
            }
            _ => {}
        }
        self.math = math;
        Ok(math)
    }
}

fn nonempty_i32(v: &[i32]) -> Vec<i32> {
    if v.is_empty() { vec![0] } else { v.to_vec() }
}

fn nonempty_f32(v: &[f32]) -> Vec<f32> {
    if v.is_empty() { vec![0.0] } else { v.to_vec() }
}

struct DevBlock {
    conv1: DevConv,
    conv2: DevConv,
    downsample: Option<DevConv>,
}

/// Every convolution of the trunk with torchvision's name, in the order `run_trunk` launches them
/// (a block's downsample, conv1, conv2): the order of the per-convolution launch choices.
fn convs_mut(blocks: &mut [DevBlock]) -> impl Iterator<Item = (String, &mut DevConv)> {
    blocks.iter_mut().enumerate().flat_map(|(bi, b)| {
        let name = move |c: &str| format!("layer{}.{}.{c}", bi / 2 + 1, bi % 2);
        [
            (name("downsample"), b.downsample.as_mut()),
            (name("conv1"), Some(&mut b.conv1)),
            (name("conv2"), Some(&mut b.conv2)),
        ]
        .into_iter()
        .filter_map(|(label, c)| c.map(|c| (label, c)))
    })
}

/// Activation buffers for `cap` patches; grown on demand, reused across frames.
struct Workspace {
    cap: usize,
    patches: CudaSlice<f32>,
    n_invalid: CudaSlice<i32>,
    a: CudaSlice<f32>,
    x: CudaSlice<f32>,
    t: CudaSlice<f32>,
    r: CudaSlice<f32>,
    /// Split-K's partial sums: up to [`super::tables::MAX_SPLITS`] planes of a convolution's output.
    partial: CudaSlice<f32>,
    taps: [CudaSlice<f32>; 4],
    staging: Staging,
}

/// Page-locked host copies of one pass's input and of the layer taps it downloads. From pageable
/// memory the driver copies through a bounce buffer of its own, synchronously and at a fraction
/// of the bus's speed; from these it is one DMA transfer. Tap buffers are made on first use, so a
/// metric that needs only layer4 pins only that.
struct Staging {
    patches: PinnedHostSlice<f32>,
    taps: [Option<PinnedHostSlice<f32>>; 4],
}

/// Which way a page-locked buffer's data goes.
#[derive(Clone, Copy)]
enum Pinned {
    /// The host writes it, the GPU reads it: write-combined (cudarc's `alloc_pinned`), which the
    /// bus reads fastest and the host writes in full lines.
    Upload,
    /// The GPU writes it, the host reads it: cached. Host reads of write-combined memory bypass
    /// the cache and are an order of magnitude slower.
    Download,
}

fn pinned(ctx: &Arc<CudaContext>, len: usize, way: Pinned, what: &str) -> Result<PinnedHostSlice<f32>, CudaError> {
    let flags = match way {
        Pinned::Upload => cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED,
        Pinned::Download => 0,
    };
    // SAFETY: the allocation leaves the memory uninitialised; f32 has no invalid bit patterns, and
    // every element a pass reads back was written by that pass's copy first.
    unsafe { ctx.alloc_pinned_with_flags::<f32>(len.max(1), flags) }.map_err(|e| CudaError::driver(what, e))
}

pub struct Trunk {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) k: Kernels,
    plan: DevicePlan,
    stem_w: CudaSlice<f32>,
    stem_bias: CudaSlice<f32>,
    win_off: CudaSlice<i32>,
    windows: CudaSlice<i32>,
    blocks: Vec<DevBlock>,
    ws: Option<Workspace>,
    /// Patches per pass, from the device's free memory when the trunk was made.
    max_batch: usize,
    /// The number format of the convolutions ([`Self::set_precision`]).
    precision: Precision,
    /// What fp32 runs on: FFMA, or 3×TF32 where the start-up probe measured it faster.
    fp32_math: ConvMath,
    /// The probe's figures (`choose_fp32_math`), for the logs and `bench`.
    fp32_probe: Option<Fp32Probe>,
    /// Compute capability 8.0 or later: TF32 and bf16 `mma.sync` exist.
    tensor_cores: bool,
    /// Zeros as long as the widest output: the bias of a split launch (the reduction adds the real one).
    zeros: CudaSlice<f32>,
    /// Tile and K splits per convolution, measured per kernel family and patch count ([`launch`]).
    launches: launch::LaunchChoices,
}

/// FFMA against 3×TF32 on the whole trunk, same patches, fastest of a few alternating passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fp32Probe {
    pub patches: usize,
    pub ffma_ms: f64,
    pub tf32x3_ms: f64,
}

impl std::fmt::Display for Fp32Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} patches: FFMA {:.3} ms, 3×TF32 {:.3} ms", self.patches, self.ffma_ms, self.tf32x3_ms)
    }
}

/// Passes of the trunk per kernel family in [`Trunk::choose_fp32_math`], alternating; the fastest counts.
const FP32_PROBE_PASSES: usize = 3;

/// One convolution of the trunk timed on its own ([`Trunk::time_convs`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvTiming {
    /// torchvision's name, e.g. `layer2.0.conv1`.
    pub conv: String,
    pub kernel: &'static str,
    /// K splits of the launch (grid z; tensor-core kernels only), 1 for none.
    pub splits: usize,
    /// Blocks of the launch (the GPU's SMs hold two of the tensor-core kernels' each).
    pub blocks: u32,
    /// Multiply-adds of the padding-free classes, ×2, in GFLOP.
    pub gflop: f64,
    /// Mean of the launches, back to back on the stream (with split-K's reduction).
    pub ms: f64,
    pub tflop_per_s: f64,
}

/// Launches per convolution and kernel family in [`Trunk::time_convs`].
const CONV_TIMING_LAUNCHES: usize = 10;

fn grid_for(elements: usize, threads: u32) -> LaunchConfig {
    // Grid-stride kernels: enough blocks to fill the GPU, not one per element.
    let blocks = elements.div_ceil(threads as usize).clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

fn i32_arg(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Setup(format!("{what} = {v} exceeds the kernels' 32-bit sizes")))
}

impl Trunk {
    pub(super) fn new(ctx: Arc<CudaContext>, how: &Loaded, plan: &Plan) -> Result<Self, CudaError> {
        // A stream of our own: the legacy default stream synchronises with every other stream.
        let stream = ctx.new_stream().map_err(|e| CudaError::driver("creating the compute stream", e))?;
        let k = Kernels::load(&ctx, how)?;
        let cc = ctx.compute_capability().map_err(|e| CudaError::driver("reading the compute capability", e))?;
        let dp = DevicePlan::new(plan).map_err(|e| CudaError::Setup(e.to_string()))?;
        let per_patch = workspace_bytes_per_patch(dp.patch, dp.max_activation_per_patch());
        let (free, _) = ctx.mem_get_info().map_err(|e| CudaError::driver("reading the free device memory", e))?;
        let max_batch = batch_limit(per_patch, free).ok_or_else(|| {
            CudaError::Setup(format!(
                "{} MiB free on the GPU hold fewer than 64 patches of {} px ({} KiB each)",
                free >> 20,
                dp.patch,
                per_patch >> 10
            ))
        })?;
        tracing::debug!(
            "GPU passes of at most {max_batch} patches ({} KiB each, {} MiB free)",
            per_patch >> 10,
            free >> 20
        );
        let up = "uploading the plan";
        let blocks = dp
            .blocks
            .iter()
            .map(|b| {
                Ok(DevBlock {
                    conv1: DevConv::upload(&stream, &b.conv1)?,
                    conv2: DevConv::upload(&stream, &b.conv2)?,
                    downsample: b.downsample.as_ref().map(|d| DevConv::upload(&stream, d)).transpose()?,
                })
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        let widest = dp.blocks.iter().map(|b| b.conv2.cout).max().unwrap_or(0);
        Ok(Self {
            zeros: stream.alloc_zeros::<f32>(widest.max(1)).map_err(|e| CudaError::driver(up, e))?,
            launches: launch::LaunchChoices::default(),
            stem_w: stream.clone_htod(&dp.stem.weight).map_err(|e| CudaError::driver(up, e))?,
            stem_bias: stream.clone_htod(&dp.stem.bias_map).map_err(|e| CudaError::driver(up, e))?,
            win_off: stream.clone_htod(&dp.pool.win_off).map_err(|e| CudaError::driver(up, e))?,
            windows: stream.clone_htod(&nonempty_i32(&dp.pool.windows)).map_err(|e| CudaError::driver(up, e))?,
            blocks,
            plan: dp,
            ctx,
            stream,
            k,
            ws: None,
            max_batch,
            precision: Precision::Fp32,
            fp32_math: ConvMath::Ffma,
            fp32_probe: None,
            tensor_cores: cc.0 >= 8,
        })
    }

    /// Every convolution on `math` (where it takes the shape).
    fn apply_math(&mut self, math: ConvMath) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the GPU context", e))?;
        for b in &mut self.blocks {
            for c in [Some(&mut b.conv1), Some(&mut b.conv2), b.downsample.as_mut()].into_iter().flatten() {
                c.set_math(&self.stream, math)?;
            }
        }
        Ok(())
    }

    /// Which kernels compute fp32: on a GPU with tensor cores, the whole trunk is timed on the
    /// same synthetic patches (as many as a 1024² frame has, or one pass) with FFMA and with
    /// 3×TF32, alternating, [`FP32_PROBE_PASSES`] passes each after a warm-up, and the faster is
    /// kept. Both are fp32-accurate (the GPU tests hold both to the CPU path), so the choice is
    /// speed alone, measured on this GPU rather than assumed. Without tensor cores: FFMA.
    pub fn choose_fp32_math(&mut self) -> Result<ConvMath, CudaError> {
        if !self.tensor_cores {
            return Ok(self.fp32_math);
        }
        let n = self.max_batch.min(2601);
        let pp = self.plan.patch * self.plan.patch;
        let pixels: Vec<f32> = (0..n * pp).map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 1000.0).collect();
        self.reserve(n)?;
        let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        self.stream
            .memcpy_htod(&pixels, &mut ws.patches)
            .map_err(|e| CudaError::driver("uploading the probe's patches", e))?;
        let time = |trunk: &mut Self, math: ConvMath| -> Result<f64, CudaError> {
            trunk.apply_math(math)?;
            let t = std::time::Instant::now();
            trunk.run_trunk(n)?;
            trunk.stream.synchronize().map_err(|e| CudaError::driver("timing the trunk", e))?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        let (mut ffma_ms, mut tf32x3_ms) = (f64::INFINITY, f64::INFINITY);
        // FFMA alone first: a failure here is the GPU path's own, not the probe's.
        time(self, ConvMath::Ffma)?;
        self.check_stored()?;
        let mut passes = || -> Result<(), CudaError> {
            time(self, ConvMath::Tf32x3)?;
            for _ in 0..FP32_PROBE_PASSES {
                ffma_ms = ffma_ms.min(time(self, ConvMath::Ffma)?);
                tf32x3_ms = tf32x3_ms.min(time(self, ConvMath::Tf32x3)?);
            }
            self.check_stored()
        };
        if let Err(e) = passes() {
            // FFMA ran before, so the 3×TF32 passes are what failed. A fault that leaves the
            // context unusable fails FFMA too: then the GPU path does not open (checked here,
            // not at the first frame); anything else leaves fp32 on FFMA.
            self.fp32_math = ConvMath::Ffma;
            self.set_precision(self.precision)?;
            time(self, ConvMath::Ffma)?;
            self.check_stored()?;
            tracing::warn!("the 3×TF32 kernels failed on this GPU ({e}): fp32 stays on FFMA");
            return Ok(self.fp32_math);
        }
        let probe = Fp32Probe { patches: n, ffma_ms, tf32x3_ms };
        self.fp32_math = if tf32x3_ms < ffma_ms { ConvMath::Tf32x3 } else { ConvMath::Ffma };
        self.fp32_probe = Some(probe);
        tracing::info!("GPU fp32 convolutions on {:?} ({probe})", self.fp32_math);
        self.set_precision(self.precision)?;
        Ok(self.fp32_math)
    }

    /// Runs fp32 on `math` (FFMA or 3×TF32) whatever the probe chose: for tests and benchmarks
    /// of one kernel family.
    pub fn set_fp32_math(&mut self, math: ConvMath) -> Result<(), CudaError> {
        if math == ConvMath::Bf16 || (math.tensor_cores() && !self.tensor_cores) {
            return Err(CudaError::Setup(format!("fp32 cannot run on {math:?} on this GPU")));
        }
        self.fp32_math = math;
        self.set_precision(self.precision).map(|_| ())
    }

    /// What the convolutions run on, for logs and `bench`.
    pub fn conv_math(&self) -> ConvMath {
        match self.precision {
            Precision::Fp32 => self.fp32_math,
            Precision::Bf16 => ConvMath::Bf16,
        }
    }

    pub fn fp32_probe(&self) -> Option<Fp32Probe> {
        self.fp32_probe
    }

    /// Every convolution of the trunk, on each kernel family of `maths` that takes it, timed on its
    /// own for `n` patches: [`CONV_TIMING_LAUNCHES`] launches back to back after one warm-up,
    /// between two synchronisations. The inputs are whatever the workspace holds (the arithmetic
    /// does not depend on the values). For the first GPU run: where the time goes, layer by layer,
    /// and how full each grid is.
    pub fn time_convs(&mut self, n: usize, maths: &[ConvMath]) -> Result<Vec<ConvTiming>, CudaError> {
        self.reserve(n)?;
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the GPU context", e))?;
        let timed = self.time_each_conv(n, maths);
        // Every convolution back on the precision's kernels, whether or not the timing failed.
        self.apply_math(self.conv_math())?;
        timed
    }

    fn time_each_conv(&mut self, n: usize, maths: &[ConvMath]) -> Result<Vec<ConvTiming>, CudaError> {
        let mut rows = Vec::new();
        let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        for (label, c) in convs_mut(&mut self.blocks) {
            let macs: usize =
                c.t.desc.chunks_exact(5).map(|d| (d[1] * d[2]) as usize).sum::<usize>() * c.t.cin * c.t.cout * n;
            for &m in maths.iter().filter(|m| !m.tensor_cores() || self.tensor_cores) {
                if c.set_math(&self.stream, m)? != m {
                    continue;
                }
                // Every launch the kernel family takes here (tiles, splits): which grids gain.
                for Launch { tile, splits } in c.t.launch_candidates(c.math, n, ws.partial.len()) {
                    let launch = |ws: &mut Workspace| {
                        let split = Split { splits, partial: &mut ws.partial, zeros: &self.zeros };
                        conv(&self.stream, &self.k, c, tile, &ws.x, &mut ws.t, None, true, n, split)
                    };
                    launch(ws)?;
                    self.stream.synchronize().map_err(|e| CudaError::driver("timing a convolution", e))?;
                    let t0 = std::time::Instant::now();
                    for _ in 0..CONV_TIMING_LAUNCHES {
                        launch(ws)?;
                    }
                    self.stream.synchronize().map_err(|e| CudaError::driver("timing a convolution", e))?;
                    let ms = t0.elapsed().as_secs_f64() * 1e3 / CONV_TIMING_LAUNCHES as f64;
                    let (gx, gy, _) = c.t.grid(n, tile);
                    let gflop = 2.0 * macs as f64 / 1e9;
                    rows.push(ConvTiming {
                        conv: label.clone(),
                        kernel: m.kernel(tile),
                        splits,
                        blocks: gx * gy * splits as u32,
                        gflop,
                        ms,
                        tflop_per_s: gflop / ms,
                    });
                }
            }
        }
        self.check_stored()?;
        Ok(rows)
    }

    /// The convolutions' kernels in words, with the fp32 probe's figures when fp32 runs.
    pub fn describe_math(&self) -> String {
        let name = match self.conv_math() {
            ConvMath::Ffma => "FFMA (conv_tiled)",
            ConvMath::Tf32x3 => "3×TF32 tensor cores (conv_mma_tf32x3)",
            ConvMath::Bf16 => "bf16 tensor cores (conv_mma_bf16)",
        };
        match (self.precision, self.fp32_probe) {
            (Precision::Fp32, Some(p)) if (p.tf32x3_ms < p.ffma_ms) == (self.fp32_math == ConvMath::Tf32x3) => {
                format!("{name}, measured faster ({p})")
            }
            (Precision::Fp32, Some(p)) => format!("{name}, set by hand ({p})"),
            _ => name.to_string(),
        }
    }

    /// The convolutions' number format: `Bf16` runs every convolution that fits it on the bf16
    /// tensor-core kernel (operands rounded to bf16, f32 accumulation, f32 activations between
    /// layers); the stem, pools and cosine stay fp32. A GPU older than sm_80 stays fp32 and says
    /// so. Returns the format the trunk now computes in.
    pub fn set_precision(&mut self, precision: Precision) -> Result<Precision, CudaError> {
        let p = if precision == Precision::Bf16 && !self.tensor_cores {
            tracing::info!("precision bf16 asked for, but this GPU has no bf16 tensor cores (sm_80+): it runs fp32");
            Precision::Fp32
        } else {
            precision
        };
        self.precision = p;
        self.apply_math(self.conv_math())?;
        Ok(p)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn patch(&self) -> usize {
        self.plan.patch
    }

    /// Patches one pass may hold on this device.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Makes sure the workspace holds `n` patches (≤ [`Self::max_batch`]).
    fn reserve(&mut self, n: usize) -> Result<(), CudaError> {
        if n > self.max_batch {
            return Err(CudaError::Setup(format!(
                "{n} patches in one pass exceed the {} the GPU's memory holds",
                self.max_batch
            )));
        }
        if self.ws.as_ref().is_some_and(|w| w.cap >= n) {
            return Ok(());
        }
        let cap = n.next_power_of_two().clamp(64, self.max_batch).max(n);
        let act = self.plan.max_activation_per_patch() * cap;
        let pp = self.plan.patch * self.plan.patch;
        let s = &self.stream;
        let what = format!("allocating GPU memory for {cap} patches");
        let alloc = |len: usize| s.alloc_zeros::<f32>(len).map_err(|e| CudaError::driver(&what, e));
        self.ws = None; // free the old buffers first
        self.ws = Some(Workspace {
            cap,
            patches: alloc(cap * pp)?,
            n_invalid: s.alloc_zeros::<i32>(cap).map_err(|e| CudaError::driver(&what, e))?,
            a: alloc(act)?,
            x: alloc(act)?,
            t: alloc(act)?,
            r: alloc(act)?,
            partial: alloc(act)?,
            taps: [alloc(cap * 64)?, alloc(cap * 128)?, alloc(cap * 256)?, alloc(cap * 512)?],
            staging: Staging {
                patches: pinned(&self.ctx, cap * pp, Pinned::Upload, &what)?,
                taps: [None, None, None, None],
            },
        });
        Ok(())
    }

    /// Features of `pixels.len() / patch²` patches, copied back to the host.
    pub fn features(&mut self, pixels: &[f32]) -> Result<Features, CudaError> {
        self.features_of_layers(pixels, [true; 4])
    }

    /// Features of the `layers` asked for (the others stay zero), copied back to the host.
    pub fn features_of_layers(&mut self, pixels: &[f32], layers: crate::engine::Layers) -> Result<Features, CudaError> {
        // The compute thread may not be the one that created the context.
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the GPU context", e))?;
        // The copies below go through plain slices of the pinned buffers, so cudarc orders nothing
        // on them: a pass that failed after queueing its upload must be finished before this one
        // overwrites (or `reserve` frees) the staging buffers.
        self.stream.synchronize().map_err(|e| CudaError::driver("finishing the previous pass", e))?;
        let pp = self.plan.patch * self.plan.patch;
        let n = pixels.len() / pp;
        let mut out = Features::zeros(n);
        let mut start = 0;
        while start < n {
            let m = (n - start).min(self.max_batch);
            match self.reserve(m) {
                Ok(()) => {}
                // Another process took memory since we measured it: halve the pass and go on,
                // rather than losing the GPU for the session.
                Err(CudaError::Driver { source, .. })
                    if source.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY && self.max_batch > 64 =>
                {
                    self.max_batch = (self.max_batch / 2).max(64);
                    self.ws = None;
                    tracing::warn!("GPU out of memory: passes of at most {} patches from now on", self.max_batch);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
            let host_in =
                ws.staging.patches.as_mut_slice().map_err(|e| CudaError::driver("writing pinned memory", e))?;
            let host_in = &mut host_in[..m * pp];
            host_in.copy_from_slice(&pixels[start * pp..(start + m) * pp]);
            // A slice of page-locked memory: the driver sees its address and transfers by DMA.
            self.stream
                .memcpy_htod(&*host_in, &mut ws.patches)
                .map_err(|e| CudaError::driver("uploading patches", e))?;
            self.run_trunk(m)?;
            let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
            for (l, &c) in LAYER_CHANNELS.iter().enumerate().filter(|(l, _)| layers[*l]) {
                let host = match &mut ws.staging.taps[l] {
                    Some(h) => h,
                    slot => slot.insert(pinned(
                        &self.ctx,
                        ws.cap * c,
                        Pinned::Download,
                        "allocating pinned memory for features",
                    )?),
                };
                let host = host.as_mut_slice().map_err(|e| CudaError::driver("reading pinned memory", e))?;
                self.stream
                    .memcpy_dtoh(&ws.taps[l].slice(0..m * c), &mut host[..m * c])
                    .map_err(|e| CudaError::driver("downloading features", e))?;
            }
            // The copies above are asynchronous: the pinned buffers are read (and the next pass's
            // input written) only once the stream is done with them.
            self.stream.synchronize().map_err(|e| CudaError::driver("finishing the trunk", e))?;
            for (l, &c) in LAYER_CHANNELS.iter().enumerate().filter(|(l, _)| layers[*l]) {
                let host = ws.staging.taps[l].as_ref().ok_or_else(|| CudaError::Setup("no pinned buffer".into()))?;
                let host = host.as_slice().map_err(|e| CudaError::driver("reading pinned memory", e))?;
                out.layers[l][start * c..(start + m) * c].copy_from_slice(&host[..m * c]);
            }
            start += m;
        }
        self.check_stored()?;
        Ok(out)
    }

    /// Runs the trunk on the `n` patches already in the workspace; taps hold the layer features.
    pub(super) fn run_trunk(&mut self, n: usize) -> Result<(), CudaError> {
        // Measured the first time this kernel family meets this patch count (tens of ms, once).
        let launches = self.launches_for(n)?;
        let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        if n > ws.cap {
            return Err(CudaError::Setup(format!("{n} patches exceed the workspace ({})", ws.cap)));
        }
        let n_i = i32_arg(n, "patches")?;
        let st = &self.plan.stem;
        let s = &self.stream;
        let launch = |what: &str, r: Result<Option<_>, cudarc::driver::DriverError>| {
            r.map(|_| ()).map_err(|e| CudaError::driver(format!("launching {what}"), e))
        };

        // 1. Stem → a.
        {
            let (patch, k, stride, pad) =
                (i32_arg(self.plan.patch, "patch")?, st.k as i32, st.stride as i32, st.pad as i32);
            let (out_w, positions, cout) = (st.out_w as i32, st.positions as i32, st.cout as i32);
            let cfg = grid_for(st.positions * n * st.cout, ELEMENT_THREADS);
            let mut b = s.launch_builder(&self.k.stem);
            b.arg(&ws.patches).arg(&n_i).arg(&patch).arg(&k).arg(&stride).arg(&pad);
            b.arg(&out_w).arg(&positions).arg(&cout).arg(&self.stem_w).arg(&self.stem_bias).arg(&mut ws.a);
            // SAFETY: stem_conv reads positions·… within patches ([n][patch²], n ≤ cap), weight
            // ([k²][cout]) and bias_map ([positions][cout]) as uploaded from the plan, and writes
            // positions·n·cout ≤ max_activation_per_patch·cap floats of `a`.
            launch("stem_conv", unsafe { b.launch(cfg) })?;
        }
        // 2. Max-pool a → x.
        {
            let (slots, c0) = (self.plan.pool.slots as i32, st.cout as i32);
            let cfg = grid_for(self.plan.pool.slots * n * st.cout, ELEMENT_THREADS);
            let mut b = s.launch_builder(&self.k.max_pool);
            b.arg(&ws.a).arg(&self.win_off).arg(&self.windows).arg(&slots).arg(&n_i).arg(&c0).arg(&mut ws.x);
            // SAFETY: window indices are stem positions (< positions) from the plan; the output is
            // slots·n·64 ≤ max_activation_per_patch·cap floats.
            launch("max_pool", unsafe { b.launch(cfg) })?;
        }
        // 3. Blocks; x holds the block input, `a` takes conv2's output and is swapped into x.
        // One launch per convolution in launch order, its splits capped by what the convolution
        // takes now (1, no split, is always valid; both tiles take every shape).
        let mut launches = launches.into_iter();
        let mut next = |c: &DevConv, partial: usize| {
            let l = launches.next().unwrap_or(Launch { tile: c.t.tile(), splits: 1 });
            (l.tile, l.splits.min(c.t.max_splits(c.math, n, partial)))
        };
        let zeros = &self.zeros;
        for (bi, blk) in self.blocks.iter().enumerate() {
            let has_ds = blk.downsample.is_some();
            if let Some(ds) = &blk.downsample {
                let (tile, splits) = next(ds, ws.partial.len());
                let split = Split { splits, partial: &mut ws.partial, zeros };
                conv(s, &self.k, ds, tile, &ws.x, &mut ws.r, None, false, n, split)?;
            }
            let (tile, splits) = next(&blk.conv1, ws.partial.len());
            let split = Split { splits, partial: &mut ws.partial, zeros };
            conv(s, &self.k, &blk.conv1, tile, &ws.x, &mut ws.t, None, true, n, split)?;
            let residual = if has_ds { &ws.r } else { &ws.x };
            let (tile, splits) = next(&blk.conv2, ws.partial.len());
            let split = Split { splits, partial: &mut ws.partial, zeros };
            conv(s, &self.k, &blk.conv2, tile, &ws.t, &mut ws.a, Some(residual), true, n, split)?;
            std::mem::swap(&mut ws.x, &mut ws.a);
            if bi % 2 == 1 {
                let l = bi / 2;
                let c = LAYER_CHANNELS[l];
                let (slots, c_i) = (i32_arg(blk.conv2.t.out_slots, "slots")?, c as i32);
                let cfg = grid_for(n * c, ELEMENT_THREADS);
                let mut b = s.launch_builder(&self.k.gap);
                b.arg(&ws.x).arg(&slots).arg(&n_i).arg(&c_i).arg(&mut ws.taps[l]);
                // SAFETY: reads slots·n·c floats of x (conv2's output), writes n·c ≤ cap·c of taps[l].
                launch("global_avg_pool", unsafe { b.launch(cfg) })?;
            }
        }
        Ok(())
    }
}

/// Split-K for one launch: `splits` K ranges over the grid's z (1: none, the kernel finishes the
/// sums itself), their partial sums in `partial`, `zeros` the bias the split launch adds.
struct Split<'a> {
    splits: usize,
    partial: &'a mut CudaSlice<f32>,
    zeros: &'a CudaSlice<f32>,
}

/// One convolution launch, all its classes, on the convolution's kernel family (`DevConv::math`);
/// split over K, it writes raw sums into `split.partial` and `splitk_reduce` finishes them into `out`.
#[allow(clippy::too_many_arguments)]
fn conv(
    s: &Arc<CudaStream>,
    k: &Kernels,
    c: &DevConv,
    tile: ConvTile,
    input: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    residual: Option<&CudaSlice<f32>>,
    relu: bool,
    n: usize,
    split: Split<'_>,
) -> Result<(), CudaError> {
    let (f, name, threads) = (k.conv(c.math, tile), c.math.kernel(tile), c.math.threads(tile));
    let (gx, gy, _) = c.t.grid(n, tile);
    if gx == 0 {
        return Ok(());
    }
    let plane = c.t.out_len(n);
    let splits = split.splits.max(1);
    let is_split = splits > 1;
    if is_split && (!c.math.splits_k() || splits > MAX_SPLITS) {
        return Err(CudaError::Setup(format!("{name} does not take {splits} K splits")));
    }
    if is_split && (splits * plane > split.partial.len() || split.zeros.len() < c.t.cout) {
        return Err(CudaError::Setup(format!("{name}: the split-K buffers are too small for {splits} splits")));
    }
    // Static shared memory only (40 KiB at most), under the 48 KiB that needs no opt-in.
    let cfg =
        LaunchConfig { grid_dim: (gx, gy, splits as u32), block_dim: (threads as u32, 1, 1), shared_mem_bytes: 0 };
    let (has_res, relu_i) = (residual.is_some() as i32, relu as i32);
    let (n_i, cin, cout, classes) = (i32_arg(n, "patches")?, c.t.cin as i32, c.t.cout as i32, c.t.n_classes as i32);
    let plane_i = i64::try_from(plane).map_err(|_| CudaError::Setup(format!("{name}: {plane} floats per plane")))?;
    // Without a residual the kernel never reads it; it still needs a valid device pointer.
    let res = residual.unwrap_or(&c.bias);
    {
        // A split launch stores raw sums: zero bias, no residual, no ReLU.
        let (target, bias, has_res, relu_i) =
            if is_split { (&mut *split.partial, split.zeros, 0, 0) } else { (&mut *out, &c.bias, has_res, relu_i) };
        let mut b = s.launch_builder(f);
        b.arg(input).arg(target).arg(res).arg(&has_res).arg(&relu_i);
        let missing = || CudaError::Setup(format!("{name}: its weights were not uploaded"));
        match c.math {
            ConvMath::Ffma => b.arg(&c.weights),
            ConvMath::Tf32x3 => b.arg(c.weights_f32_t.as_ref().ok_or_else(missing)?),
            ConvMath::Bf16 => b.arg(c.weights_bf16_t.as_ref().ok_or_else(missing)?),
        };
        b.arg(bias).arg(&c.gathers).arg(&c.desc).arg(&n_i).arg(&cin).arg(&cout).arg(&classes);
        if c.math.splits_k() {
            b.arg(&plane_i);
        }
        // SAFETY: desc/gathers/weights are the plan's own tables (offsets and slots checked when the
        // plan was built); every class reads input slots < the input's slot count and writes rows
        // first_slot·n .. (first_slot+n_pos)·n of its plane of `target`, all within out_slots·n·cout
        // floats: `out` is sized max_activation_per_patch·cap (n ≤ cap), and split z's plane starts
        // at z·plane with splits·plane ≤ partial.len() (checked above). The residual has conv2's
        // layout; `bias` holds cout floats (zeros.len() ≥ cout checked). The float4 accesses are
        // aligned: cudarc's allocations are, and cin, cout (hence every offset and plane) are
        // multiples of 4 (ConvTables::new), and of 8 where the bf16 kernel's 16-byte weight copies
        // run (`ConvMath::fits`); the transposed weights have the f32 weights' size and offsets.
        unsafe { b.launch(cfg) }.map_err(|e| CudaError::driver(format!("launching {name}"), e))?;
    }
    if is_split {
        let total4 = i64::try_from(plane / 4).map_err(|_| CudaError::Setup("split-K plane too large".into()))?;
        let splits_i = splits as i32;
        let mut b = s.launch_builder(&k.splitk_reduce);
        b.arg(&*split.partial).arg(&plane_i).arg(&splits_i).arg(out).arg(res).arg(&has_res).arg(&relu_i);
        b.arg(&c.bias).arg(&cout).arg(&total4);
        // SAFETY: reads splits·plane ≤ partial.len() floats and plane floats of the residual (conv2's
        // layout, as above), writes plane = out_slots·n·cout floats of `out`; bias holds cout floats.
        // plane is a multiple of 4 (cout is), so every float4 is aligned and inside.
        unsafe { b.launch(grid_for(plane / 4, ELEMENT_THREADS)) }
            .map_err(|e| CudaError::driver("launching splitk_reduce", e))?;
    }
    Ok(())
}

impl Trunk {
    /// One convolution on the device, outside the trunk, with either tile on any kernel family and
    /// `splits` K splits (1: none; tensor-core families only): the GPU tests run shapes ResNet-18
    /// lacks (column and K tiles cut short) through the kernels with it. `input` is
    /// `[in slot][n][cin]`, `residual` and the result `[out slot][n][cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_once(
        &self,
        t: &ConvTables,
        tile: ConvTile,
        math: ConvMath,
        splits: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        n: usize,
    ) -> Result<Vec<f32>, CudaError> {
        if !t.consistent() {
            return Err(CudaError::Setup("inconsistent convolution tables".into()));
        }
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("binding the GPU context", e))?;
        let in_slots = t.gathers.iter().map(|&g| g as usize + 1).max().unwrap_or(0);
        let out_len = t.out_slots * n * t.cout;
        if input.len() < in_slots * n * t.cin || residual.is_some_and(|r| r.len() != out_len) {
            return Err(CudaError::Setup("convolution buffers do not match the tables".into()));
        }
        let s = &self.stream;
        let what = "a single convolution";
        let mut c = DevConv::upload(s, t)?;
        if (math.tensor_cores() && !self.tensor_cores) || !math.fits(t) {
            return Err(CudaError::Setup(format!("{} cannot run this convolution on this GPU", math.kernel(tile))));
        }
        c.set_math(s, math)?;
        let d_in = s.clone_htod(&nonempty_f32(input)).map_err(|e| CudaError::driver(what, e))?;
        let d_res = residual.map(|r| s.clone_htod(r)).transpose().map_err(|e| CudaError::driver(what, e))?;
        let mut d_out = s.alloc_zeros::<f32>(out_len.max(1)).map_err(|e| CudaError::driver(what, e))?;
        let mut partial = s.alloc_zeros::<f32>((splits * out_len).max(1)).map_err(|e| CudaError::driver(what, e))?;
        let zeros = s.alloc_zeros::<f32>(t.cout).map_err(|e| CudaError::driver(what, e))?;
        let split = Split { splits, partial: &mut partial, zeros: &zeros };
        conv(s, &self.k, &c, tile, &d_in, &mut d_out, d_res.as_ref(), relu, n, split)?;
        let mut out = s.clone_dtoh(&d_out).map_err(|e| CudaError::driver(what, e))?;
        s.synchronize().map_err(|e| CudaError::driver(what, e))?;
        self.check_stored()?;
        out.truncate(out_len);
        Ok(out)
    }

    /// Errors cudarc could only store (from frees and drops, which return nothing): read after
    /// every synchronisation, so a failure there is an error of this frame, not a silent one.
    pub(super) fn check_stored(&self) -> Result<(), CudaError> {
        self.ctx.check_err().map_err(|e| CudaError::driver("an earlier asynchronous GPU operation", e))
    }

    /// Layer4 features (`[n][512]`) of the last trunk run.
    pub(super) fn layer4(&self, n: usize) -> Result<cudarc::driver::CudaView<'_, f32>, CudaError> {
        let ws = self.ws.as_ref().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        ws.taps[3].try_slice(0..n * 512).ok_or_else(|| CudaError::Setup(format!("{n} patches exceed the workspace")))
    }

    /// Cuts a `width`-wide frame on the device into `rows × cols` scaled patches (detector-gap
    /// pixels of integer frames filled) and runs the trunk on them.
    pub(super) fn features_of_frame<T: GpuPixel>(
        &mut self,
        frame: &CudaSlice<T>,
        width: usize,
        rows: usize,
        cols: usize,
        offset: f32,
        gain: f32,
    ) -> Result<(), CudaError> {
        let n = rows * cols;
        let p = self.plan.patch;
        if frame.len() < (rows * p - 1) * width + cols * p || cols * p > width {
            return Err(CudaError::Setup(format!("frame buffer too small for {rows}×{cols} patches of {p} px")));
        }
        self.reserve(n)?;
        let ws = self.ws.as_mut().ok_or_else(|| CudaError::Setup("no workspace".into()))?;
        let (w_i, cols_i, p_i, has_gap) = (i32_arg(width, "width")?, i32_arg(cols, "cols")?, p as i32, 1i32);
        let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (ROW_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(T::extract(&self.k));
        b.arg(frame).arg(&w_i).arg(&cols_i).arg(&p_i).arg(&offset).arg(&gain);
        if T::HAS_GAP {
            b.arg(&has_gap);
        }
        b.arg(&mut ws.patches).arg(&mut ws.n_invalid);
        // SAFETY: one block per patch of the rows×cols grid; every pixel read lies inside the frame
        // (checked above); writes n·p² floats and n ints of the workspace (n ≤ cap after reserve).
        unsafe { b.launch(cfg) }.map_err(|e| CudaError::driver(format!("launching {}", T::KERNEL), e))?;
        self.run_trunk(n)
    }

    pub(super) fn cosine_and_summary(
        &self,
        n: usize,
        reference: &CudaSlice<f32>,
        sims: &mut CudaSlice<f32>,
        summary: &mut CudaSlice<f32>,
        threshold: f32,
    ) -> Result<(), CudaError> {
        let feats = self.layer4(n)?;
        if reference.len() < n * 512 || sims.len() < n || summary.len() < 3 {
            return Err(CudaError::Setup("similarity buffers too small".into()));
        }
        let (n_i, c) = (i32_arg(n, "patches")?, 512i32);
        let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (ROW_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(&self.k.cosine);
        b.arg(&feats).arg(reference).arg(&n_i).arg(&c).arg(&mut *sims);
        // SAFETY: both feature buffers hold ≥ n·512 floats (checked); one block per patch writes sims[p].
        unsafe { b.launch(cfg) }.map_err(|e| CudaError::driver("launching cosine_rows", e))?;
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (ELEMENT_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(&self.k.summary);
        b.arg(&*sims).arg(&n_i).arg(&threshold).arg(summary);
        // SAFETY: reads n similarities, writes the 3-float summary (both checked above).
        unsafe { b.launch(cfg) }.map_err(|e| CudaError::driver("launching similarity_summary", e))?;
        Ok(())
    }
}
