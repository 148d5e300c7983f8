//! `beamwatch bench`: time the per-frame analysis (patching, features, similarity, summary) of a
//! synthetic STEM frame, and print one JSON line a reader can compare across machines and versions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::Error;
use crate::damage::{AnalysisSettings, Analyzer, Metric};
use crate::engine::cuda::CudaError;
use crate::engine::cuda::frame::FramePipeline;
use crate::engine::profile::{self, StageRow};
use crate::engine::{ActiveBackend, BackendChoice, Engine, EngineError, Network, Precision};
use crate::frame::Frame;
use crate::simulate::{Damage, Disc, Specimen};
use crate::weights::identity;

pub struct BenchOptions {
    pub weights: Option<PathBuf>,
    pub size_px: usize,
    pub frames: usize,
    pub threads: usize,
    pub patch_px: usize,
    pub metric: Metric,
    pub chunk: Option<usize>,
    pub prefilter_sigma_px: f32,
    pub backend: BackendChoice,
    /// Time the CPU trunk stage by stage on extra frames after the timed ones; on the GPU, every
    /// convolution on its own on each kernel family.
    pub layers: bool,
    /// The CPU path's number format.
    pub precision: Precision,
    /// bf16 wherever the CPU has it, without the speed probe (`Engine::with_precision_unmeasured`).
    pub force_precision: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// The backend the feature engine ran on ("cpu" or "cuda"), and the hardware.
    pub backend: &'static str,
    pub backend_detail: String,
    pub cpu: String,
    pub threads: usize,
    /// The CPU path's number format as it ran ("fp32" or "bf16"), and as it was asked for.
    pub precision: Precision,
    pub precision_asked: Precision,
    /// bf16 against fp32 on one thread when bf16 was asked for without `--force-precision`: the
    /// measurement that kept bf16 or fell back to fp32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision_probe: Option<crate::engine::cpu::probe::SpeedProbe>,
    pub metric: Metric,
    pub prefilter_sigma_px: f32,
    pub size_px: usize,
    pub patch_px: usize,
    pub patches: usize,
    pub frames_timed: usize,
    pub ms_per_frame_median: f64,
    pub ms_per_frame_min: f64,
    pub ms_per_frame_max: f64,
    pub patches_per_s: f64,
    /// Multiply-adds per patch of the padding-free convolutions (what the bf16 and GPU paths
    /// compute), and what the unmodified RGB network would need.
    pub mac_per_patch: Option<usize>,
    pub dense_mac_per_patch: Option<usize>,
    /// Multiply-adds per patch in the fp32 CPU path's GEMMs, which run the small maps' 3×3
    /// convolutions as Winograd products (`engine::winograd`).
    pub fp32_cpu_mac_per_patch: Option<usize>,
    /// `2 · mac_per_patch` per second: the padding-free count, whichever path ran.
    pub gflop_per_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub weights: String,
    /// With the CUDA backend: the whole frame on the GPU (see [`GpuFrameBench`]).
    pub gpu_frame: Option<GpuFrameBench>,
    /// With `--layers`: the CPU trunk's thread-milliseconds per frame, stage by stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<StageRow>>,
    /// With `--layers` on the GPU: every convolution timed on its own for the frame's patches, on
    /// each kernel family this GPU has (FFMA, 3×TF32, bf16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_convs: Option<Vec<crate::engine::cuda::trunk::ConvTiming>>,
    /// On the GPU: how each convolution runs for the frame's patches (kernel, i.e. family and
    /// tile, and K splits; measured when the trunk first met that patch count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_conv_launches: Option<Vec<crate::engine::cuda::trunk::ConvLaunch>>,
}

/// The all-GPU frame path: a u16 frame uploaded from pinned memory (overlapping the previous
/// frame's compute), patch extraction, trunk, cosine against device-resident reference features and
/// the summary; only similarities and summary come back.
#[derive(Debug, Serialize)]
pub struct GpuFrameBench {
    pub gpu: String,
    pub frames_timed: usize,
    /// GPU time between events around extraction → summary.
    pub kernel_ms_median: f64,
    pub kernel_ms_min: f64,
    /// Host wall time from frame hand-over to similarities on the host.
    pub end_to_end_ms_median: f64,
    pub end_to_end_ms_min: f64,
    pub mean_similarity: f32,
}

pub fn run(opts: &BenchOptions) -> Result<BenchResult, Error> {
    let mut settings = AnalysisSettings::new(opts.metric);
    settings.patch_px = opts.patch_px;
    settings.prefilter_sigma_px = opts.prefilter_sigma_px;
    let (engine, weights_label, macs) = if opts.metric.uses_features() {
        let (sd, label) = match &opts.weights {
            Some(p) => {
                let (id, sd) = identity::identify(p)?;
                (sd, format!("{} ({})", p.display(), id.provenance.label()))
            }
            // Timing does not depend on the values: random weights keep the benchmark runnable anywhere.
            None => (crate::weights::random_resnet18(0), "random (timing only)".to_string()),
        };
        let net = Network::from_state_dict(&sd)?;
        let mut engine = Engine::for_backend(&net, opts.patch_px, opts.threads, opts.backend)?;
        if let Some(c) = opts.chunk {
            engine = engine.with_chunk(c);
        }
        engine = if opts.force_precision {
            engine.with_precision_unmeasured(opts.precision)
        } else {
            engine.with_precision(opts.precision)
        };
        let plan = engine.plan();
        let macs = (plan.macs_per_patch(), plan.dense_macs_per_patch(&net), plan.fp32_cpu_macs_per_patch());
        (Some(Arc::new(engine)), label, Some(macs))
    } else {
        (None, "none (classical metric)".to_string(), None)
    };
    let threads = engine.as_ref().map_or(1, |e| e.threads());
    let precision = engine.as_ref().map_or(Precision::Fp32, |e| e.precision());
    let precision_probe = engine.as_ref().and_then(|e| e.precision_probe());
    let active = engine.as_ref().map_or(ActiveBackend::Cpu { threads }, |e| e.backend());
    if opts.backend == BackendChoice::Cuda && !opts.metric.uses_features() {
        return Err(Error::Usage(format!(
            "--backend cuda runs the ResNet-18 trunk; the {} metric has none (use --metric resnet18)",
            opts.metric
        )));
    }
    let (reference, frame) = frames(opts.size_px)?;
    let mut analyzer = Analyzer::new(settings, engine.clone()).map_err(|e| Error::analysis("bench", e))?;
    analyzer.set_reference(&reference).map_err(|e| Error::analysis("bench reference", e))?;
    let patches = analyzer.grid().map_or(0, |g| g.len());
    // One untimed frame: thread pools and workspaces warm up.
    analyzer.analyse(&frame).map_err(|e| Error::analysis("bench frame", e))?;
    let mut ms = Vec::with_capacity(opts.frames);
    for _ in 0..opts.frames.max(1) {
        let t = Instant::now();
        let a = analyzer.analyse(&frame).map_err(|e| Error::analysis("bench frame", e))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(a);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    // Separate frames, so that the spans' own cost never enters the figures above.
    let layers = if opts.layers && matches!(active, ActiveBackend::Cpu { .. }) && engine.is_some() {
        let frames = opts.frames.max(1);
        profile::enable(true);
        for _ in 0..frames {
            std::hint::black_box(analyzer.analyse(&frame).map_err(|e| Error::analysis("bench frame", e))?);
        }
        let rows = profile::report(frames);
        profile::enable(false);
        Some(rows)
    } else {
        None
    };
    let gpu_frame = match (&active, &engine) {
        (ActiveBackend::Cuda { gpu }, Some(e)) => Some(gpu_frame_bench(e.as_ref(), gpu, opts)?),
        _ => None,
    };
    let gpu_convs = match (&active, &engine) {
        (ActiveBackend::Cuda { .. }, Some(e)) if opts.layers => {
            use crate::engine::cuda::tables::ConvMath;
            let rows = e
                .with_gpu_trunk(|t| t.time_convs(patches, &ConvMath::ALL))
                .ok_or_else(|| CudaError::Setup("the GPU path stopped before the convolution timings".into()))
                .map_err(EngineError::from)?
                .map_err(EngineError::from)?;
            Some(rows)
        }
        _ => None,
    };
    let gpu_conv_launches = match (&active, &engine) {
        (ActiveBackend::Cuda { .. }, Some(e)) => e
            .with_gpu_trunk(|t| {
                let pass = patches.min(t.max_batch());
                t.conv_launches(pass)
            })
            .transpose()
            .map_err(EngineError::from)?,
        _ => None,
    };
    Ok(BenchResult {
        backend: active.name(),
        backend_detail: active.to_string(),
        cpu: cpu_model(),
        threads,
        precision,
        precision_asked: opts.precision,
        precision_probe,
        metric: opts.metric,
        prefilter_sigma_px: opts.prefilter_sigma_px,
        size_px: opts.size_px,
        patch_px: opts.patch_px,
        patches,
        frames_timed: ms.len(),
        ms_per_frame_median: round(median, 2),
        ms_per_frame_min: round(ms[0], 2),
        ms_per_frame_max: round(ms[ms.len() - 1], 2),
        patches_per_s: round(patches as f64 / (median / 1e3), 0),
        mac_per_patch: macs.map(|m| m.0),
        dense_mac_per_patch: macs.map(|m| m.1),
        fp32_cpu_mac_per_patch: macs.map(|m| m.2),
        gflop_per_s: macs.map(|m| round(2.0 * m.0 as f64 * patches as f64 / (median / 1e3) / 1e9, 1)),
        peak_rss_mib: crate::telemetry::peak_rss_mib(),
        weights: weights_label,
        gpu_frame,
        layers,
        gpu_convs,
        gpu_conv_launches,
    })
}

fn gpu_frame_bench(engine: &Engine, gpu: &str, opts: &BenchOptions) -> Result<GpuFrameBench, Error> {
    let (reference, frame) = frames(opts.size_px)?;
    let to_u16 = |f: &Frame| f.pixels().iter().map(|&v| v.clamp(0.0, 65_534.0) as u16).collect::<Vec<u16>>();
    let (lo, hi) = reference.valid_range();
    let gain = if hi > lo { 1.0 / (hi - lo) } else { 1.0 };
    // Reference, one warm-up frame, then the timed frames.
    let mut series = vec![to_u16(&reference)];
    series.extend(std::iter::repeat_n(to_u16(&frame), opts.frames.max(1) + 1));
    let size = opts.size_px;
    let threshold = 1.0 - opts.metric.typical_threshold();
    let run = engine
        .with_gpu_trunk(|trunk| {
            let mut p = FramePipeline::<u16>::new(trunk, size, size, lo, gain)?;
            p.run(&series, threshold)
        })
        .ok_or_else(|| CudaError::Setup("the GPU path stopped before the frame benchmark".into()))
        .map_err(EngineError::from)?
        .map_err(EngineError::from)?;
    let timed = &run[1.min(run.len())..];
    if timed.is_empty() {
        return Err(EngineError::from(CudaError::Setup("the frame benchmark timed no frame".into())).into());
    }
    let mut k: Vec<f64> = timed.iter().map(|t| t.kernel_ms as f64).collect();
    let mut e: Vec<f64> = timed.iter().map(|t| t.end_to_end_ms).collect();
    k.sort_by(f64::total_cmp);
    e.sort_by(f64::total_cmp);
    Ok(GpuFrameBench {
        gpu: gpu.to_string(),
        frames_timed: timed.len(),
        kernel_ms_median: round(k[k.len() / 2], 3),
        kernel_ms_min: round(k[0], 3),
        end_to_end_ms_median: round(e[e.len() / 2], 3),
        end_to_end_ms_min: round(e[0], 3),
        mean_similarity: timed[timed.len() - 1].mean_similarity,
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// A noisy lattice frame and a damaged, slightly drifted one, `size` px square.
fn frames(size: usize) -> Result<(Frame, Frame), Error> {
    let s = Specimen::new(size, size, 10.0, 1);
    let c = size as f64 / 2.0;
    let damage = Damage {
        discs: vec![Disc { cx: c, cy: c, radius_px: size as f64 / 6.0, edge_px: 8.0, amount: 0.8 }],
        ..Damage::default()
    };
    let a = s.render_counts(&Damage::default(), (0.0, 0.0), Some(50.0), 1);
    let b = s.render_counts(&damage, (0.7, -0.4), Some(50.0), 2);
    let mk = |v| Frame::from_f32(size, size, v).map_err(|e| Error::Usage(format!("bench frame: {e}")));
    Ok((mk(a)?, mk(b)?))
}

fn cpu_model() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {cores} cores")
}
