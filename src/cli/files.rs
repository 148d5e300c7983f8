//! The subcommands that analyse files: `replay`, `compare`, `evaluate`.

use std::path::PathBuf;

use clap::Args;

use super::analysis::{AnalysisArgs, DoseFlags, FourDFlags};
use crate::Error;
use crate::commands::evaluate::{self, EvaluateOptions, SuiteSpec};
use crate::commands::{compare, replay};
use crate::config::Config;
use crate::damage::Metric;
use crate::decode::WireFormat;
use crate::engine::Precision;
use crate::ingest::Mode;
use crate::register::Registration;

#[derive(Args)]
pub struct ReplayArgs {
    /// The recorded series: an HDF5 file, a TIFF stack, or a folder of images.
    input: PathBuf,
    /// Output directory (results session, summary.json, pictures, report.html). Not with --publish.
    #[arg(long, required_unless_present = "publish")]
    out: Option<PathBuf>,
    /// Read this dataset instead of detecting the file's layout.
    #[arg(long)]
    dataset: Option<String>,
    /// With --dataset: the axis that counts frames (default 0).
    #[arg(long)]
    frame_axis: Option<usize>,
    /// Configuration ([analysis], [dose], [[alarms]], [record] of --config) and analysis flags.
    #[command(flatten)]
    analysis: AnalysisArgs,
    #[command(flatten)]
    dose: DoseFlags,
    #[command(flatten)]
    fourd: FourDFlags,
    /// Leave the frames out of the results session (by default it holds them, so the session is
    /// complete on its own: HyperSpy / RosettaSciIO load frames and maps from it).
    #[arg(long)]
    no_record_frames: bool,
    /// The default since session format 2 (kept so older scripts still run).
    #[arg(long, hide = true, conflicts_with = "no_record_frames")]
    record_frames: bool,
    /// Most per-frame overlay pictures to draw.
    #[arg(long, default_value_t = 12)]
    overlays: usize,
    /// Show the replay in the live view as it runs ([view] bind, 127.0.0.1:8750 by default), and
    /// keep the page up afterwards until Ctrl-C.
    #[arg(long)]
    view: bool,
    /// Stream the file over ZeroMQ on this endpoint instead of analysing it.
    #[arg(long)]
    publish: Option<String>,
    /// With --publish: the wire format.
    #[arg(long, value_enum, default_value = "beamwatch")]
    format: WireFormat,
    /// With --publish: dectris-v1 encoding or dectris-v2 compression.
    #[arg(long, default_value = "")]
    encoding: String,
    /// With --publish: frames per second.
    #[arg(long, default_value_t = 2.0)]
    fps: f64,
    /// With --publish: connect instead of bind.
    #[arg(long)]
    connect: bool,
}

impl ReplayArgs {
    pub fn run(self) -> Result<(), Error> {
        if let Some(endpoint) = self.publish {
            let mut p = replay::publish_options(endpoint, self.format, self.fps);
            p.encoding = self.encoding;
            if self.connect {
                p.mode = Mode::Connect;
            }
            let sent = replay::publish_file(&replay::PublishFileOptions {
                input: self.input,
                dataset: self.dataset,
                frame_axis: self.frame_axis,
                publish: p,
            })?;
            println!("published {sent} frames");
            return Ok(());
        }
        let mut cfg = self.analysis.config()?;
        self.dose.apply(&mut cfg.dose);
        self.fourd.apply(&mut cfg);
        let out = self.out.ok_or_else(|| Error::Usage("--out is required".into()))?;
        let s = replay::run(&replay::ReplayOptions {
            input: self.input,
            dataset: self.dataset,
            frame_axis: self.frame_axis,
            config: cfg,
            out,
            record_frames: self.record_frames || !self.no_record_frames,
            overlays: self.overlays,
            view: self.view,
        })?;
        println!(
            "replayed {} frames of {}×{} px ({:?}): {} analysed in {:.1} s ({:.2} frames/s)",
            s.frames, s.input.width, s.input.height, s.input.layout, s.frames_analysed, s.seconds, s.frames_per_s
        );
        for n in &s.input.notes {
            println!("note: {n}");
        }
        if let Some(alarms) = s.series.as_ref().and_then(|v| v.get("alarms")).and_then(|a| a.as_array()) {
            println!("{} alarm(s)", alarms.len());
        }
        println!("report: {}", s.outputs.report_html.display());
        Ok(())
    }
}

#[derive(Args)]
pub struct CompareArgs {
    /// Reference frame (the first frame of the series); a multi-page TIFF or 3-D .npy uses its
    /// first page as reference and compares the rest.
    reference: PathBuf,
    /// Frames to compare with the reference.
    frames: Vec<PathBuf>,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    analysis: AnalysisArgs,
}

impl CompareArgs {
    pub fn run(self) -> Result<(), Error> {
        let opts = compare::CompareOptions {
            reference: self.reference,
            frames: self.frames,
            out: self.out,
            analysis: self.analysis.config()?.analysis,
        };
        let s = compare::run(&opts)?;
        print_compare(&s);
        Ok(())
    }
}

fn print_compare(s: &compare::CompareSummary) {
    let p = &s.provenance;
    println!(
        "metric: {} — similarity: {}; dissimilarity: {}",
        p.metric_choice, p.metric.similarity, p.metric.dissimilarity
    );
    if let Some(w) = &p.weights {
        println!("weights: {} (sha256 {}…) — {}", w.path, &w.sha256[..12.min(w.sha256.len())], w.origin_label);
    }
    println!(
        "reference: {} ({}×{} px, {}); {}",
        s.reference.source,
        s.reference.width_px,
        s.reference.height_px,
        s.reference.dtype.name(),
        s.remainder
    );
    println!(
        "{:>5}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}  {:>16}  {:>8}  source",
        "frame", "mean", "max", "max at", ">thr %", "area %", "drift dx,dy px", "ms"
    );
    for f in &s.frames {
        let m = &f.summary;
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
        println!(
            "{:>5}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}  {:>16}  {:>8.1}  {}",
            f.index,
            fmt(m.mean_dissimilarity),
            fmt(m.max_dissimilarity),
            m.max_at.map_or("-".into(), |(r, c)| format!("r{r} c{c}")),
            pct(m.fraction_above_threshold),
            pct(m.damaged_area_fraction),
            f.shift.map_or("-".into(), |d| format!("{:+.2},{:+.2}", d.dx_px, d.dy_px)),
            f.analysis_ms,
            f.source
        );
    }
    if let Some(f) = s.frames.last() {
        let thr = f.summary.threshold.map_or("not yet calibrated (too few frames)".into(), |t| format!("{t:.4}"));
        println!(
            "patch threshold {thr} on {} ({}); area = connected regions of ≥ {} patches; >thr and area are '-' on calibration frames",
            p.metric.dissimilarity, s.threshold, f.summary.min_region_patches
        );
    }
    println!("wrote {}, {} and {} overlay PNG(s)", s.files.similarity_csv, s.files.summary_json, s.frames.len());
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// Series files with truth (`beamwatch simulate --out`), or any recorded series with --truth.
    inputs: Vec<PathBuf>,
    /// Simulate the built-in benchmark instead: three damage models at two doses per frame.
    #[arg(long)]
    suite: bool,
    /// With --suite: frame edge (px), frames per series.
    #[arg(long, default_value_t = 320)]
    size: usize,
    #[arg(long, default_value_t = 16)]
    frames: usize,
    /// With --suite: electrons per pixel per frame, one series per value and damage model.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    electrons_per_px: Vec<f64>,
    /// With --suite: random seeds (specimen, damage sites, noise); one series per seed.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// With --suite: also build series from this real image (TIFF, PNG, .npy; repeatable):
    /// amorphous and contrast-loss damage, drift and shot noise on the image's own lattice.
    #[arg(long = "suite-image")]
    suite_images: Vec<PathBuf>,
    /// With --suite-image: frame edge (px), cut from the image's centre.
    #[arg(long, default_value_t = 512)]
    image_size: usize,
    /// Truth for a series without one: an HDF5 file with /truth/damage (frames × H × W), or a
    /// mask image (non-zero = damaged) that applies from --truth-onset on.
    #[arg(long)]
    truth: Option<PathBuf>,
    #[arg(long)]
    truth_onset: Option<usize>,
    /// Metrics to score.
    #[arg(long, value_enum, ignore_case = true, value_delimiter = ',', default_value = "resnet18,lpips,ssim,ncc,psnr")]
    metrics: Vec<Metric>,
    /// Pre-filter σ values (px; 0 = off).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    sigma: Vec<f32>,
    /// Registration: on (sub-pixel), off, integer.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "on,off")]
    register: Vec<Registration>,
    /// The alarm rule whose first alarm is the detection.
    #[arg(long, default_value = "damage-onset")]
    rule: String,
    /// Configuration file ([analysis] base settings, [[alarms]]).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Number format of the features (CPU or GPU), instead of the config's `[analysis] precision`.
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Run bf16 wherever the CPU has AVX512-BF16, even where it measures slower than fp32: to see
    /// bf16's decisions on a CPU where the daemon would not keep it.
    #[arg(long)]
    force_precision: bool,
    #[arg(long)]
    out: PathBuf,
}

impl EvaluateArgs {
    pub fn run(self) -> Result<(), Error> {
        let mut config = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if self.weights.is_some() {
            config.analysis.weights = self.weights;
        }
        if let Some(p) = self.precision {
            config.analysis.precision = p;
        }
        if self.metrics.is_empty() || self.sigma.is_empty() || self.register.is_empty() {
            return Err(Error::Usage("--metrics, --sigma and --register each need at least one value".into()));
        }
        let suite = self.suite.then(|| SuiteSpec {
            size_px: self.size,
            frames: self.frames,
            electrons_per_px: self.electrons_per_px.clone(),
            seeds: self.seeds.clone(),
            images: self.suite_images.clone(),
            image_size_px: self.image_size,
            ..SuiteSpec::default()
        });
        let r = evaluate::run(&EvaluateOptions {
            inputs: self.inputs,
            truth: self.truth,
            truth_onset: self.truth_onset,
            suite,
            metrics: self.metrics,
            sigmas_px: self.sigma,
            registrations: self.register,
            config,
            rule: self.rule,
            force_precision: self.force_precision,
            out: self.out.clone(),
        })?;
        if let Some(w) = &r.weights {
            println!("weights for resnet18/lpips: {w}");
        }
        if let Some(p) = r.precision {
            println!("features computed in {}", format!("{p:?}").to_lowercase());
        }
        print!("{}", evaluate::markdown(&r));
        if let Some(best) = r.ranking.first() {
            println!(
                "\nbest for early damage: {} (mean AUC at the first damaged frame {})",
                best.label,
                best.mean_auc_early.map_or("–".into(), |v| format!("{v:.3}"))
            );
        }
        println!("outputs: {}", self.out.display());
        Ok(())
    }
}
