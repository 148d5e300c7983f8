//! The `beamwatch` command line: parses arguments into the library's option structs, runs the
//! command, prints its result, and prints any error once, as one line naming what went wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use beamwatch::commands::{bench, bench_live, compare, demo, replay, run as daemon_cmd, simulate, weights};
use beamwatch::config::{AnalysisConfig, Config, Mode};
use beamwatch::damage::Metric;
use beamwatch::engine::BackendChoice;
use beamwatch::decode::WireFormat;
use beamwatch::frame::ScaleMode;
use beamwatch::register::Registration;
use beamwatch::simulate::publish::{PublishOptions, SendSocket};
use beamwatch::simulate::series::SeriesSpec;

/// Electron-beam damage monitor: where and at what dose the beam damages your sample.
#[derive(Parser)]
#[command(name = "beamwatch", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The live monitor: attach to an acquisition stream and raise dose/damage alarms.
    Run(RunArgs),
    /// Publish a simulated, beam-damaged STEM series over ZeroMQ, as a detector would.
    Simulate(SimulateArgs),
    /// Run a recorded series (HDF5 session, Velox/Berkeley EMD, DECTRIS NeXus, EMD 1.0, any 3-D dataset,
    /// TIFF stack or image folder) through the analysis and write reports; or stream it with --publish.
    Replay(ReplayArgs),
    /// Patch-wise similarity of image frames to a reference frame (TIFF, PNG, .npy).
    Compare(CompareArgs),
    /// Time the per-frame analysis on a synthetic frame; prints one JSON line.
    Bench(BenchArgs),
    /// Time the live daemon end to end over loopback sockets (latency, sustainable frame rate).
    BenchLive(BenchLiveArgs),
    /// Simulator and monitor together on this machine: watch a simulated sample get damaged.
    Demo(DemoArgs),
    /// Score comparison settings (metric × pre-filter × registration) on series with known damage.
    Evaluate(EvaluateArgs),
    /// Import, verify, locate or download ResNet-18 weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// SEM image → ionic conductivity (secondary stage): import or synthesise a dataset, evaluate and
    /// train the CNNs, predict new images.
    #[command(subcommand)]
    Conductivity(ConductivityCommand),
    /// The autoencoder materials map: featurise compounds, train the W sweep, decode and query the map.
    #[command(subcommand)]
    Map(MapCommand),
}

#[derive(Args)]
struct EvaluateArgs {
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
    /// Truth for a series without one: an HDF5 file with /truth/damage (frames × H × W), or a
    /// mask image (non-zero = damaged) that applies from --truth-onset on.
    #[arg(long)]
    truth: Option<PathBuf>,
    #[arg(long)]
    truth_onset: Option<usize>,
    /// Metrics to score.
    #[arg(long, value_delimiter = ',', default_value = "resnet18,lpips,ssim,ncc,psnr")]
    metrics: Vec<Metric>,
    /// Pre-filter σ values (px; 0 = off).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    sigma: Vec<f32>,
    /// Registration: on (sub-pixel), off, integer.
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    register: Vec<String>,
    /// The alarm rule whose first alarm is the detection.
    #[arg(long, default_value = "damage-onset")]
    rule: String,
    /// Configuration file ([analysis] base settings, [[alarms]]).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

/// Analysis options shared by commands (override the config file).
#[derive(Args)]
struct AnalysisArgs {
    /// TOML configuration file (its [analysis] table); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// ResNet-18 weights (safetensors or torchvision .pth).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// resnet18 (the seed paper's layer4 cosine), lpips (layer1..4), ssim, psnr or ncc.
    /// Default: resnet18, or psnr with a warning when no weights are found.
    #[arg(long)]
    metric: Option<Metric>,
    /// Patch edge in pixels.
    #[arg(long)]
    patch: Option<usize>,
    /// Per-patch dissimilarity above which a patch counts as damaged (default: per metric).
    #[arg(long)]
    threshold: Option<f32>,
    /// Drift correction before comparing: off, integer or subpixel (the default; bare flag: subpixel).
    #[arg(long, num_args = 0..=1, default_missing_value = "subpixel")]
    register: Option<Registration>,
    /// Intensity scaling: reference (min–max of the reference frame), dtype, none.
    #[arg(long, value_parser = parse_scale)]
    scale: Option<ScaleMode>,
    /// Treat pixels at the dtype maximum as ordinary signal instead of detector gaps.
    #[arg(long)]
    no_gap_mask: bool,
    /// CPU threads (0 = all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Feature engine hardware: auto (GPU when usable, else CPU), cpu, or cuda (GPU or error).
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Gaussian pre-filter σ in pixels on both frames before patching (0 = off; default 2).
    #[arg(long)]
    prefilter_sigma: Option<f32>,
}

fn parse_scale(s: &str) -> Result<ScaleMode, String> {
    match s {
        "reference" => Ok(ScaleMode::Reference),
        "dtype" => Ok(ScaleMode::Dtype),
        "none" => Ok(ScaleMode::None),
        _ => Err(format!("unknown scale '{s}' (reference, dtype, none)")),
    }
}

impl AnalysisArgs {
    /// The configuration file (or the defaults) with these flags applied to its [analysis].
    fn config(&self) -> Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        self.apply(&mut cfg.analysis);
        Ok(cfg)
    }

    fn resolve(&self) -> Result<AnalysisConfig> {
        Ok(self.config()?.analysis)
    }

    fn apply(&self, cfg: &mut AnalysisConfig) {
        if self.weights.is_some() {
            cfg.weights = self.weights.clone();
        }
        if self.metric.is_some() {
            cfg.metric = self.metric;
        }
        if let Some(p) = self.patch {
            cfg.patch_px = p;
        }
        if self.threshold.is_some() {
            cfg.threshold = self.threshold;
        }
        if let Some(r) = self.register {
            cfg.registration = r;
        }
        if let Some(s) = self.scale {
            cfg.scale = s;
        }
        if self.no_gap_mask {
            cfg.mask_gaps = false;
        }
        if let Some(t) = self.threads {
            cfg.threads = t;
        }
        if let Some(b) = self.backend {
            cfg.backend = b;
        }
        if let Some(s) = self.prefilter_sigma {
            cfg.prefilter_sigma_px = s;
        }
    }
}

#[derive(Args)]
struct CompareArgs {
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

#[derive(Args)]
struct BenchArgs {
    /// ResNet-18 weights; without, random weights (timing does not depend on values).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Frame edge in pixels.
    #[arg(long, default_value_t = 1020)]
    size: usize,
    /// Frames to time (after one untimed warm-up frame).
    #[arg(long, default_value_t = 5)]
    frames: usize,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value = "resnet18")]
    metric: Metric,
    #[arg(long, default_value_t = 20)]
    patch: usize,
    /// Patches per work chunk (tuning).
    #[arg(long)]
    chunk: Option<usize>,
    /// Gaussian pre-filter σ in pixels (0 = off).
    #[arg(long, default_value_t = beamwatch::damage::DEFAULT_PREFILTER_SIGMA_PX)]
    prefilter_sigma: f32,
    /// auto (GPU when usable), cpu, or cuda (GPU or error; adds kernel and all-GPU frame times).
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
}

#[derive(Args)]
struct BenchLiveArgs {
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Frames per second; omit to search for the highest rate with no skipped frame.
    #[arg(long)]
    fps: Option<f64>,
    /// Frames per run.
    #[arg(long, default_value_t = 60)]
    frames: usize,
    /// Frames per series; each series gives one alarm-latency sample.
    #[arg(long, default_value_t = 6)]
    series_frames: usize,
    #[arg(long, default_value = "dectris-v2")]
    format: WireFormat,
    #[arg(long, default_value = "resnet18")]
    metric: Metric,
    /// ResNet-18 weights; without, random weights (timing does not depend on values).
    #[arg(long)]
    weights: Option<PathBuf>,
}

#[derive(Args)]
struct ReplayArgs {
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
    /// Beam current (pA), when the file does not say.
    #[arg(long)]
    beam_current_pa: Option<f64>,
    /// Dwell time per pixel (µs), when the file does not say.
    #[arg(long)]
    dwell_time_us: Option<f64>,
    /// Scan pixel size (Å), when the file does not say.
    #[arg(long)]
    pixel_size_a: Option<f64>,
    /// Store the frames in the results session too.
    #[arg(long)]
    record_frames: bool,
    /// Most per-frame overlay pictures to draw.
    #[arg(long, default_value_t = 12)]
    overlays: usize,
    /// Stream the file over ZeroMQ on this endpoint instead of analysing it.
    #[arg(long)]
    publish: Option<String>,
    /// With --publish: beamwatch, dectris-v1 or dectris-v2.
    #[arg(long, default_value = "beamwatch")]
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

#[derive(Args)]
struct DemoArgs {
    /// Output directory (alarm log, series summary, daemon report).
    #[arg(long, default_value = "beamwatch-demo")]
    out: PathBuf,
    /// ResNet-18 weights (default: search; without any, SSIM with a warning).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Wire format between simulator and monitor: beamwatch, dectris-v1, dectris-v2.
    #[arg(long, default_value = "dectris-v2")]
    format: WireFormat,
    /// Frame edge in pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, default_value_t = 24)]
    frames: usize,
    /// Frame at which the beam starts to damage the sample.
    #[arg(long, default_value_t = 8)]
    onset_frame: usize,
    /// Frames per second.
    #[arg(long, default_value_t = 8.0)]
    fps: f64,
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (see configs/); without one, the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override [ingest] endpoint, e.g. tcp://detector:31001.
    #[arg(long)]
    endpoint: Option<String>,
    /// Override [ingest] format: auto, beamwatch, dectris-v1, dectris-v2.
    #[arg(long)]
    format: Option<WireFormat>,
    /// Bind instead of connect.
    #[arg(long)]
    bind: bool,
    /// Override [pipeline] out_dir.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this many series (0: run until SIGINT/SIGTERM).
    #[arg(long)]
    max_series: Option<u64>,
    /// Override [analysis] weights.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Override [analysis] metric.
    #[arg(long)]
    metric: Option<Metric>,
}

#[derive(Args)]
struct SimulateArgs {
    /// Endpoint to bind (default, like a detector) or connect to (--connect).
    #[arg(long, default_value = "tcp://127.0.0.1:9999")]
    endpoint: String,
    #[arg(long)]
    connect: bool,
    /// Send on a PUB socket instead of PUSH.
    #[arg(long)]
    publish: bool,
    /// beamwatch, dectris-v1 or dectris-v2.
    #[arg(long, default_value = "beamwatch")]
    format: WireFormat,
    /// dectris-v1 encoding (<, lz4<, bs16-lz4<) or dectris-v2 compression (bslz4, lz4, none).
    #[arg(long, default_value = "")]
    encoding: String,
    #[arg(long, default_value_t = 512)]
    size: usize,
    #[arg(long, default_value_t = 40)]
    frames: usize,
    #[arg(long, default_value_t = 2.0)]
    fps: f64,
    /// Frame at which damage nucleates.
    #[arg(long, default_value_t = 12)]
    onset_frame: usize,
    /// Electrons per scan pixel per frame (shot noise and dose).
    #[arg(long, default_value_t = 50.0)]
    electrons_per_px: f64,
    /// Series to send one after another.
    #[arg(long, default_value_t = 1)]
    series: u64,
    /// Write the ground truth (onset, damaged fraction, drift per frame) to this JSON file.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// beamwatch format: leave beam current, dwell and pixel size out of the series header.
    #[arg(long)]
    no_dose_header: bool,
    /// Seconds to wait for a receiver.
    #[arg(long, default_value_t = 60.0)]
    wait_s: f64,
    /// How damage shows: amorphous, contrast-loss or vacancies.
    #[arg(long, value_enum, default_value = "amorphous")]
    damage: beamwatch::simulate::DamageModel,
    /// Write the series and its per-pixel truth to this HDF5 file instead of sending it.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// Convert a torchvision .pth checkpoint or a safetensors file into beamwatch's weight file.
    Import {
        source: PathBuf,
        /// Destination (default: beamwatch's data directory, where every command looks).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Report what a weight file is: layout, sha256, tensor fingerprint, whether it is torchvision
    /// IMAGENET1K_V1.
    Verify {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit with an error unless the file is torchvision IMAGENET1K_V1.
        #[arg(long)]
        require_imagenet: bool,
    },
    /// Download torchvision's resnet18-f37072fd.pth (needs internet), check it, import it.
    Fetch {
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Where beamwatch looks for weights, in order, and what is there.
    Where,
}

fn main() -> ExitCode {
    // A file over the size limit (ulimit -f, a quota) must fail the write — the recorder then stops
    // with an alarm — not kill the monitor with SIGXFSZ.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts is sound.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BEAMWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("beamwatch={level},warn")));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Compare(a) => {
            let opts = compare::CompareOptions {
                reference: a.reference,
                frames: a.frames,
                out: a.out,
                analysis: a.analysis.resolve()?,
            };
            let s = compare::run(&opts)?;
            print_compare(&s);
        }
        Command::Bench(a) => {
            let r = bench::run(&bench::BenchOptions {
                weights: a.weights,
                size_px: a.size,
                frames: a.frames,
                threads: a.threads,
                patch_px: a.patch,
                metric: a.metric,
                chunk: a.chunk,
                prefilter_sigma_px: a.prefilter_sigma,
                backend: a.backend,
            })?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::BenchLive(a) => {
            let r = bench_live::run(&bench_live::LiveBenchOptions {
                size_px: a.size,
                fps: a.fps,
                frames: a.frames,
                series_frames: a.series_frames,
                format: a.format,
                metric: a.metric,
                weights: a.weights,
            })?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Demo(a) => {
            let o = demo::run(&demo::DemoOptions {
                out: a.out.clone(),
                weights: a.weights,
                format: a.format,
                size_px: a.size,
                frames: a.frames,
                onset_frame: a.onset_frame,
                fps: a.fps,
            })?;
            print_demo(&o, &a.out);
        }
        Command::Replay(a) => run_replay(a)?,
        Command::Run(a) => {
            let (mut cfg, source) = match &a.config {
                Some(p) => (Config::load(p)?, p.clone()),
                None => (Config::default(), PathBuf::from("built-in defaults")),
            };
            if let Some(e) = a.endpoint {
                cfg.ingest.endpoint = e;
            }
            if let Some(f) = a.format {
                cfg.ingest.format = f;
            }
            if a.bind {
                cfg.ingest.mode = Mode::Bind;
            }
            if let Some(o) = a.out {
                cfg.pipeline.out_dir = o;
            }
            if let Some(n) = a.max_series {
                cfg.pipeline.max_series = n;
            }
            if a.weights.is_some() {
                cfg.analysis.weights = a.weights;
            }
            if a.metric.is_some() {
                cfg.analysis.metric = a.metric;
            }
            let r = daemon_cmd::run(cfg, &source)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Evaluate(a) => run_evaluate(a)?,
        Command::Simulate(a) => {
            let mut spec = SeriesSpec::new(a.size, a.frames, a.onset_frame, a.electrons_per_px);
            spec.model = a.damage;
            if let Some(out) = a.out {
                let series = beamwatch::simulate::series::Series::new(spec);
                let onset = series.onset_frame();
                let bar = beamwatch::progress::items_bar(a.frames as u64, "simulating");
                let path = beamwatch::simulate::file::write(&series, &out, |_| bar.inc(1))?;
                bar.finish_and_clear();
                println!(
                    "wrote {} frames of {}×{} px ({} damage, onset at frame {}) with per-pixel truth to {}",
                    a.frames,
                    a.size,
                    a.size,
                    a.damage.name(),
                    onset.map_or("-".into(), |o| o.to_string()),
                    path.display()
                );
                return Ok(());
            }
            let r = simulate::run(&simulate::SimulateOptions {
                spec,
                publish: PublishOptions {
                    endpoint: a.endpoint,
                    mode: if a.connect { Mode::Connect } else { Mode::Bind },
                    socket: if a.publish { SendSocket::Pub } else { SendSocket::Push },
                    format: a.format,
                    encoding: a.encoding,
                    fps: a.fps,
                    series_count: a.series,
                    first_series_id: 1,
                    dose_in_header: !a.no_dose_header,
                    wait_for_peer_s: a.wait_s,
                },
                truth: a.truth,
            })?;
            println!(
                "sent {} series, {} frames ({} messages) on {}; damage onset at frame {}",
                r.series_sent,
                r.frames_sent,
                r.messages_sent,
                r.endpoint,
                r.onset_frame.map_or("-".into(), |f| f.to_string())
            );
        }
        Command::Weights(w) => run_weights(w)?,
        Command::Conductivity(c) => run_conductivity(c)?,
        Command::Map(m) => run_map(m)?,
    }
    Ok(())
}

fn run_evaluate(a: EvaluateArgs) -> Result<()> {
    use beamwatch::commands::evaluate::{self, EvaluateOptions, SuiteSpec};
    use beamwatch::register::Registration;
    let mut config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if a.weights.is_some() {
        config.analysis.weights = a.weights;
    }
    let registrations = a
        .register
        .iter()
        .map(|r| match r.as_str() {
            "on" | "subpixel" => Ok(Registration::Subpixel),
            "integer" => Ok(Registration::Integer),
            "off" => Ok(Registration::Off),
            other => Err(anyhow::anyhow!("--register: unknown value '{other}' (on, off, integer)")),
        })
        .collect::<Result<Vec<_>>>()?;
    if a.metrics.is_empty() || a.sigma.is_empty() || registrations.is_empty() {
        anyhow::bail!("--metrics, --sigma and --register each need at least one value");
    }
    let suite = a.suite.then(|| SuiteSpec {
        size_px: a.size,
        frames: a.frames,
        electrons_per_px: a.electrons_per_px.clone(),
        seeds: a.seeds.clone(),
        ..SuiteSpec::default()
    });
    let r = evaluate::run(&EvaluateOptions {
        inputs: a.inputs,
        truth: a.truth,
        truth_onset: a.truth_onset,
        suite,
        metrics: a.metrics,
        sigmas_px: a.sigma,
        registrations,
        config,
        rule: a.rule,
        out: a.out.clone(),
    })?;
    if let Some(w) = &r.weights {
        println!("weights for resnet18/lpips: {w}");
    }
    print!("{}", evaluate::markdown(&r));
    if let Some(best) = r.ranking.first() {
        println!(
            "\nbest for early damage: {} (mean AUC at the first damaged frame {})",
            best.label,
            best.mean_auc_early.map_or("–".into(), |v| format!("{v:.3}"))
        );
    }
    println!("outputs: {}", a.out.display());
    Ok(())
}

fn run_replay(a: ReplayArgs) -> Result<()> {
    if let Some(endpoint) = a.publish {
        let mut p = replay::publish_options(endpoint, a.format, a.fps);
        p.encoding = a.encoding;
        if a.connect {
            p.mode = Mode::Connect;
        }
        let sent = replay::publish_file(&replay::PublishFileOptions {
            input: a.input,
            dataset: a.dataset,
            frame_axis: a.frame_axis,
            publish: p,
        })?;
        println!("published {sent} frames");
        return Ok(());
    }
    let mut cfg = a.analysis.config()?;
    for (dst, src) in [
        (&mut cfg.dose.beam_current_pa, a.beam_current_pa),
        (&mut cfg.dose.dwell_time_us, a.dwell_time_us),
        (&mut cfg.dose.pixel_size_a, a.pixel_size_a),
    ] {
        if src.is_some() {
            *dst = src;
        }
    }
    let out = a.out.context("--out is required")?;
    let s = replay::run(&replay::ReplayOptions {
        input: a.input,
        dataset: a.dataset,
        frame_axis: a.frame_axis,
        config: cfg,
        out,
        record_frames: a.record_frames,
        overlays: a.overlays,
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

fn run_weights(cmd: WeightsCommand) -> Result<()> {
    match cmd {
        WeightsCommand::Import { source, out } => {
            let imp = weights::import(&source, out.as_deref())?;
            println!("wrote {}", imp.out.display());
            print_identity(&imp.identity);
        }
        WeightsCommand::Verify { file, json, require_imagenet } => {
            let id = weights::verify(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&id)?);
            } else {
                print_identity(&id);
            }
            if require_imagenet && id.provenance != beamwatch::weights::identity::Provenance::TorchvisionImagenet1kV1 {
                return Err(weights::not_imagenet(&id).into());
            }
            if let Err(reason) = &id.layout {
                anyhow::bail!("{}: not a usable ResNet-18: {reason}", file.display());
            }
        }
        WeightsCommand::Fetch { url, out } => {
            let imp = weights::fetch(url.as_deref(), out.as_deref()).context("weights fetch")?;
            println!("wrote {}", imp.out.display());
            print_identity(&imp.identity);
        }
        WeightsCommand::Where => {
            for (c, exists) in weights::locate() {
                println!("{} {} ({})", if exists { "found  " } else { "missing" }, c.path.display(), c.origin);
            }
        }
    }
    Ok(())
}

fn print_demo(o: &demo::DemoOutcome, out: &std::path::Path) {
    let d = &o.daemon;
    let onset = o.publisher.onset_frame;
    println!(
        "simulated: {} frames sent at {:.0} e⁻/Å² per frame; damage starts at frame {} ({:.0} e⁻/Å² cumulative)",
        o.publisher.frames_sent,
        o.dose_per_frame_e_per_a2,
        onset.map_or("-".into(), |f| f.to_string()),
        onset.map_or(f64::NAN, |f| (f + 1) as f64 * o.dose_per_frame_e_per_a2)
    );
    println!("monitor: {} — metric {}", d.ingest, d.provenance.metric_choice);
    println!(
        "frames: {} received, {} analysed, {} skipped, {} rejected",
        d.frames_received,
        d.frames_analysed,
        d.frames_skipped,
        d.analysis_errors + d.decode_errors.values().sum::<u64>()
    );
    for s in &d.series {
        println!("alarms in series {}:", s.series);
        if s.alarms.is_empty() {
            println!("  (none)");
        }
        for a in &s.alarms {
            let rel = onset.map_or(String::new(), |f| format!(" ({:+} frames from onset)", a.frame as i64 - f as i64));
            println!(
                "  frame {:>3}{rel}  {:>8}  {:<17} at {:>8.0} e⁻/Å²: {}",
                a.frame,
                format!("{:?}", a.level).to_lowercase(),
                a.rule,
                a.cumulative_dose_e_per_a2.unwrap_or(f64::NAN),
                a.message
            );
        }
        match &s.critical_dose_fit {
            Some(f) if f.determined() => println!(
                "critical dose (fit to the mean dissimilarity): Dc = {:.0} ± {:.0} e⁻/Å² after an incubation dose of {:.0} e⁻/Å²",
                f.critical_dose_e_per_a2,
                f.critical_dose_sigma_e_per_a2.unwrap_or(f64::NAN),
                f.onset_dose_e_per_a2
            ),
            Some(_) => {
                println!("critical dose: not determined by this series (the damage curve has not bent over yet)")
            }
            None => println!("critical dose: too few analysed frames with a known dose to fit"),
        }
        println!("summary: {}", s.summary_file);
    }
    if let Some(l) = &d.alarm_latency_ms {
        println!("frame received → alarm published: p50 {:.1} ms, p99 {:.1} ms", l.p50, l.p99);
    }
    println!("alarm log: {}", out.join("alarms.jsonl").display());
}

fn print_identity(id: &beamwatch::weights::identity::Identity) {
    println!("file:        {}", id.path);
    println!("sha256:      {}", id.file_sha256);
    match &id.layout {
        Ok(()) => println!("layout:      ResNet-18 trunk complete ({} tensors)", id.n_tensors),
        Err(e) => println!("layout:      NOT a usable ResNet-18: {e}"),
    }
    println!("fingerprint: {}", id.tensor_fingerprint.as_deref().unwrap_or("-"));
    println!("identity:    {}", id.provenance.label());
    println!("evidence:    {}", id.evidence);
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
    if let Some(f) = s.frames.first() {
        println!(
            "threshold {} on {}; area = connected regions of ≥ {} patches",
            f.summary.threshold, p.metric.dissimilarity, f.summary.min_region_patches
        );
    }
    println!("wrote {}, {} and {} overlay PNG(s)", s.files.similarity_csv, s.files.summary_json, s.frames.len());
}

// ---------------------------------------------------------------------------------------------
// beamwatch conductivity …

#[derive(Subcommand)]
enum ConductivityCommand {
    /// Build the stage's HDF5 dataset from a folder of TIFF/PNG images and a CSV sample table
    /// (columns sample_id, x, y, T1_c, T2_c, conductivity_s_per_cm; optional images = a;b;c).
    Import {
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        table: PathBuf,
        #[arg(long, default_value = "conductivity-dataset.h5")]
        out: PathBuf,
        /// Accept samples without a measured conductivity (a set to predict, not to train on).
        #[arg(long)]
        allow_missing_target: bool,
    },
    /// Synthetic pellets (Voronoi grains, boundaries, pores, β grains) with conductivity from a
    /// pixel-level Laplace solve: dataset.h5, PNG images, samples.csv and truth.csv in --out.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        set: SynthSetArgs,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Evaluate the models (leave-one-sample-out or k-fold over samples, inner ensembles), write
    /// results.h5, metrics.json and the plots, and fit the final model on all samples for `predict`.
    Train(ConductivityTrainArgs),
    /// The documented run in one command: synthesise pellets (default 50 × 3 images of 96 px), then
    /// train and evaluate every model with the quick protocol (5-fold over samples, 64 px crops).
    Demo {
        #[arg(long, default_value = "conductivity-demo")]
        out: PathBuf,
        #[command(flatten)]
        set: SynthSetArgs,
        /// Seed of the synthetic pellets (the training seed is --seed).
        #[arg(long, default_value_t = 1)]
        data_seed: u64,
        #[command(flatten)]
        settings: ConductivitySettingsArgs,
    },
    /// Predict log10 σ of new images with a trained model (`train --out DIR` → DIR/model).
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// A dataset file (`import` / `synth`).
        #[arg(long, conflicts_with_all = ["images", "table"])]
        data: Option<PathBuf>,
        /// A folder of images (with --table for models that use descriptors).
        #[arg(long)]
        images: Option<PathBuf>,
        #[arg(long, requires = "images")]
        table: Option<PathBuf>,
        #[arg(long, default_value = "conductivity-predictions")]
        out: PathBuf,
        /// ResNet-18 weights (resnet18 models; default: the file the model was trained with).
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Time descriptor construction, a training step, inference, synthesis and trunk features;
    /// prints one JSON line.
    Bench {
        #[arg(long, default_value_t = 64)]
        crop: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Synthetic image edge, px.
        #[arg(long, default_value_t = 96)]
        size: usize,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// CPU threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

/// The size of a synthetic pellet set (`conductivity synth` and `demo`).
#[derive(Args)]
struct SynthSetArgs {
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Images per sample: N, or MIN-MAX drawn per sample (the paper: 1-3).
    #[arg(long, default_value = "3")]
    images_per_sample: String,
    /// Image edge, px.
    #[arg(long, default_value_t = 96)]
    size: usize,
}

#[derive(Args)]
struct ConductivityTrainArgs {
    /// The dataset (HDF5 from `import` or `synth`).
    #[arg(long)]
    data: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    settings: ConductivitySettingsArgs,
}

/// Training and protocol settings shared by `train` and `demo` (override the config file).
#[derive(Args)]
struct ConductivitySettingsArgs {
    /// Settings file (configs/conductivity/train.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Models to evaluate: baseline, descriptors, attention, descriptors-only, resnet18.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<beamwatch::secondary::conductivity::model::Arch>>,
    /// loso (leave one sample out, the paper) or kfold.
    #[arg(long)]
    protocol: Option<String>,
    /// Outer folds of --protocol kfold.
    #[arg(long)]
    folds: Option<usize>,
    #[arg(long)]
    inner_folds: Option<usize>,
    /// Ensemble members per outer fold (default: all inner folds for loso, 1 for kfold).
    #[arg(long)]
    members: Option<usize>,
    /// Crop edge, px (the paper: 512).
    #[arg(long)]
    crop: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Model fitted on all samples and saved for `predict` (or "none").
    #[arg(long = "final")]
    final_model: Option<String>,
    /// Segmentation overlays to draw.
    #[arg(long)]
    overlays: Option<usize>,
    /// ResNet-18 weights for resnet18.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// The config file (or `base`) with the flags applied.
fn conductivity_config(
    a: &ConductivitySettingsArgs,
    base: beamwatch::secondary::conductivity::config::ConductivityConfig,
) -> Result<beamwatch::secondary::conductivity::config::ConductivityConfig> {
    use beamwatch::secondary::conductivity::config::ConductivityConfig;
    let mut c = match &a.config {
        Some(p) => ConductivityConfig::load(p)?,
        None => base,
    };
    if let Some(m) = &a.models {
        c.run.models = m.clone();
    }
    if let Some(p) = &a.protocol {
        c.protocol.kind = p.clone();
    }
    for (dst, src) in [(&mut c.protocol.folds, a.folds), (&mut c.protocol.inner_folds, a.inner_folds)] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    if a.members.is_some() {
        c.protocol.members = a.members;
    }
    for (dst, src) in [
        (&mut c.train.crop_px, a.crop),
        (&mut c.train.max_epochs, a.epochs),
        (&mut c.train.patience, a.patience),
        (&mut c.train.batch, a.batch),
        (&mut c.run.overlays, a.overlays),
    ] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    if let Some(v) = a.lr {
        c.train.learning_rate = v;
    }
    if let Some(v) = a.seed {
        c.protocol.seed = v;
    }
    if let Some(v) = &a.final_model {
        c.run.final_model = v.clone();
    }
    c.validate()?;
    Ok(c)
}

fn run_conductivity(cmd: ConductivityCommand) -> Result<()> {
    use beamwatch::commands::conductivity as cond;
    match cmd {
        ConductivityCommand::Import { images, table, out, allow_missing_target } => {
            let s = cond::import(&cond::ImportOptions { images, table, out, allow_missing_target })?;
            print_conductivity_summary(&s);
        }
        ConductivityCommand::Synth { out, set, seed } => {
            let spec = synth_spec(&set, seed)?;
            let (files, s) = cond::synth(&spec, &out)?;
            print_conductivity_summary(&s);
            println!("images: {}  table: {}  truth: {}", files.images_dir.display(), files.table.display(), files.truth_table.display());
        }
        ConductivityCommand::Demo { out, set, data_seed, settings } => {
            let t0 = std::time::Instant::now();
            let spec = synth_spec(&set, data_seed)?;
            let config = conductivity_config(&settings, beamwatch::secondary::conductivity::config::ConductivityConfig::quick())?;
            let (files, s) = cond::synth(&spec, &out)?;
            print_conductivity_summary(&s);
            println!("synthesised in {:.1} s; training …", t0.elapsed().as_secs_f64());
            let r = cond::train(&cond::TrainOptions {
                data: files.dataset,
                out: out.join("run"),
                config,
                weights: settings.weights,
                threads: settings.threads,
            })?;
            print_train(&r);
            println!("demo wall time (synthesis + training) {:.1} s", t0.elapsed().as_secs_f64());
        }
        ConductivityCommand::Train(a) => {
            let config = conductivity_config(&a.settings, Default::default())?;
            let r = cond::train(&cond::TrainOptions {
                data: a.data,
                out: a.out,
                config,
                weights: a.settings.weights,
                threads: a.settings.threads,
            })?;
            print_train(&r);
        }

        ConductivityCommand::Predict { model, data, images, table, out, weights } => {
            let r = cond::predict(&cond::PredictOptions { model, data, images, table, out, weights })?;
            println!("model: {}", r.model);
            println!("{:<16} {:>6} {:>14} {:>14} {:>14}", "sample", "images", "log10 σ (S/cm)", "σ (S/cm)", "measured log10");
            for s in &r.samples {
                println!(
                    "{:<16} {:>6} {:>14.3} {:>14.3e} {:>14}",
                    s.sample_id,
                    s.images,
                    s.predicted_log10_s_per_cm,
                    s.predicted_s_per_cm,
                    s.measured_log10_s_per_cm.map_or("-".into(), |m| format!("{m:.3}"))
                );
            }
            if let (Some(r2), Some(e)) = (r.r2, r.rmse_log10) {
                println!("R² = {r2:.3}, RMSE = {e:.3} log10 S/cm");
            }
            println!("wrote {} and {}", r.csv.display(), r.h5.display());
        }
        ConductivityCommand::Bench { crop, batch, size, weights, threads } => {
            let r = cond::bench(&cond::BenchOptions { crop_px: crop, batch, image_px: size, weights, threads })?;
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}

fn print_conductivity_summary(s: &beamwatch::commands::conductivity::DatasetSummary) {
    println!(
        "{}: {} samples, {} images ({}–{} px edge), {} with a measured conductivity{}",
        s.path.display(),
        s.samples,
        s.images,
        s.min_edge_px,
        s.max_edge_px,
        s.with_conductivity,
        s.log10_range.map_or(String::new(), |(a, b)| format!(", log10 σ {a:.2} … {b:.2} (S/cm)"))
    );
}

fn synth_spec(set: &SynthSetArgs, seed: u64) -> Result<beamwatch::secondary::conductivity::synth::SynthSpec> {
    let per_sample = set.images_per_sample.as_str();
    let (lo, hi) = match per_sample.split_once('-') {
        Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
        None => (per_sample.trim().parse(), per_sample.trim().parse()),
    };
    let (Ok(images_min), Ok(images_max)) = (lo, hi) else {
        anyhow::bail!("--images-per-sample: expected N or MIN-MAX, got {per_sample:?}");
    };
    Ok(beamwatch::secondary::conductivity::synth::SynthSpec { samples: set.samples, images_min, images_max, size_px: set.size, seed })
}

fn print_train(r: &beamwatch::commands::conductivity::TrainReport) {
    print_conductivity_summary(&r.dataset);
    println!(
        "protocol: {}, {} outer folds × {} member(s), {} px crops",
        r.protocol, r.outer_folds, r.members_per_fold, r.crop_px
    );
    if let Some(t) = &r.trunk {
        println!("resnet18 trunk: {t}");
    }
    println!("{:<52} {:>7} {:>13} {:>9} {:>8} {:>9}", "model (held-out samples)", "R²", "RMSE log10", "image R²", "epochs", "time s");
    for m in &r.models {
        println!(
            "{:<52} {:>7.3} {:>13.3} {:>9.3} {:>8.1} {:>9.1}",
            m.label, m.r2, m.rmse_log10, m.image_r2, m.mean_best_epoch, m.seconds
        );
    }
    for (arch, why) in &r.skipped {
        println!("{arch}: skipped — {why}");
    }
    if let Some(o) = &r.interpretation {
        println!(
            "segmentation ({} positive / {} negative GAP channels): pores + boundaries are {:.0} % of the negative group's region and {:.0} % of the positive group's, against {:.0} % of all pixels",
            r.channels_positive.unwrap_or(0),
            r.channels_negative.unwrap_or(0),
            100.0 * o.negative_region_defects,
            100.0 * o.positive_region_defects,
            100.0 * o.defect_fraction
        );
    }
    if let (Some(arch), Some(dir)) = (r.final_model, &r.files.model_dir) {
        println!("final {arch} model (all samples, {:.0} s): {}", r.final_fit_seconds.unwrap_or(0.0), dir.display());
    }
    println!("results: {}  metrics: {}  plot: {}", r.files.results_h5.display(), r.files.metrics_json.display(), r.files.diagnostic_png.display());
    println!("wall time {:.1} s", r.wall_seconds);
}

// ---- beamwatch map ----------------------------------------------------------------------------

#[derive(Subcommand)]
enum MapCommand {
    /// Compute compositional and structural descriptors of a compound table into an HDF5 dataset.
    Featurize {
        /// CSV with id, formula and target columns (OBELiX's all.csv works as it is).
        #[arg(long)]
        table: PathBuf,
        /// CIFs: a folder or a .tar.gz, files named <id>.cif (or a `cif` column in the table).
        #[arg(long)]
        cifs: Option<PathBuf>,
        /// CSV whose id column lists the training compounds (e.g. OBELiX's train.csv).
        #[arg(long)]
        train_ids: Option<PathBuf>,
        /// CSV whose id column lists the test compounds (e.g. OBELiX's test.csv).
        #[arg(long)]
        test_ids: Option<PathBuf>,
        /// Leave out rows whose conductivity is only an upper bound ("<1E-10") instead of keeping
        /// them at the bound.
        #[arg(long)]
        drop_censored: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the map for every W of the sweep; write the model, results.h5, tables and pictures.
    Train {
        /// Dataset from `map featurize`.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        train: MapTrainArgs,
    },
    /// Featurise OBELiX with its official train/test split, train the sweep, fit the ridge baseline.
    Evaluate {
        /// OBELiX's data/downloads folder (all.csv, train.csv, test.csv, all_cifs.tar.gz).
        #[arg(long)]
        obelix: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        train: MapTrainArgs,
    },
    /// Decode a point (x_comp, x_struct) of the map into descriptors and a predicted target.
    #[command(allow_negative_numbers = true)]
    Decode {
        x_comp: f64,
        x_struct: f64,
        /// Output folder of `map train` / `map evaluate`.
        #[arg(long)]
        model: PathBuf,
        /// Write the decoded descriptors to this HDF5 file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// …and/or to this CSV (block, label, value).
        #[arg(long)]
        csv: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The compounds nearest to a point of the map.
    #[command(allow_negative_numbers = true)]
    Near {
        x_comp: f64,
        x_struct: f64,
        #[arg(long)]
        model: PathBuf,
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[arg(long)]
        json: bool,
    },
    /// Time descriptor construction, a training epoch and inference; prints one JSON line.
    Bench {
        /// Time the structural descriptors of this CIF (default: a garnet-sized synthetic cell).
        #[arg(long)]
        cif: Option<PathBuf>,
    },
}

#[derive(Args)]
struct MapTrainArgs {
    /// TOML file of training settings (see configs/map/train.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The W values of the sweep.
    #[arg(long, value_delimiter = ',')]
    w: Option<Vec<f64>>,
    /// The W whose model is saved and drawn as map.png.
    #[arg(long)]
    pick_w: Option<f64>,
    #[arg(long)]
    max_epochs: Option<usize>,
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
}

impl MapTrainArgs {
    fn resolve(&self) -> Result<beamwatch::secondary::map::train::TrainConfig> {
        let mut c = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("{}", p.display()))?
            }
            None => beamwatch::secondary::map::train::TrainConfig::default(),
        };
        if let Some(w) = &self.w {
            c.w_values = w.clone();
        }
        if let Some(v) = self.pick_w {
            c.pick_w = v;
        }
        if let Some(v) = self.max_epochs {
            c.max_epochs = v;
        }
        if let Some(v) = self.patience {
            c.patience = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        Ok(c)
    }
}

fn run_map(cmd: MapCommand) -> Result<()> {
    use beamwatch::commands::map;
    match cmd {
        MapCommand::Featurize { table, cifs, train_ids, test_ids, drop_censored, out } => {
            let censored = if drop_censored {
                beamwatch::secondary::map::dataset::Censored::Drop
            } else {
                beamwatch::secondary::map::dataset::Censored::Bound
            };
            let r = map::featurize(&map::FeaturizeOptions { table, cifs, train_ids, test_ids, censored, out: out.clone() })?;
            print_featurize(&r);
            println!("wrote {}", out.display());
        }
        MapCommand::Train { data, out, train } => {
            let r = map::train(&map::TrainOptions { dataset: data, out, config: train.resolve()? })?;
            print!("{}", r.markdown);
            println!("outputs in {}", r.out);
        }
        MapCommand::Evaluate { obelix, out, train } => {
            let r = map::evaluate(&map::EvaluateOptions { obelix, out: out.clone(), config: train.resolve()? })?;
            print_featurize(&r.featurize);
            print!("{}", r.train.markdown);
            println!("total wall time {:.1} s; report: {}", r.wall_s, out.join("report.md").display());
        }
        MapCommand::Decode { x_comp, x_struct, model, out, csv, json } => {
            let r = map::decode(&map::DecodeOptions { model_dir: model, x_comp, x_struct, out, csv })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!("({:.3}, {:.3}): predicted target {:.2} {}", r.x_comp, r.x_struct, r.predicted_target, r.target_units);
            let els: Vec<String> = r.elements.iter().map(|(e, x)| format!("{e} {x:.2}")).collect();
            println!("decoded composition (atomic fractions from the AN histogram, Σ = {:.2}): {}", r.an_histogram_sum, els.join(", "));
            for (name, peak) in &r.rdf_first_peak_a {
                println!("{name}: first peak {}", peak.map_or("none".into(), |p| format!("{p:.2} Å")));
            }
            for n in &r.nearest {
                println!("near: {} {} ({}) at distance {:.3}, measured {:.2}", n.id, n.formula, n.family, n.distance, n.measured);
            }
            for f in &r.files {
                println!("wrote {f}");
            }
        }
        MapCommand::Near { x_comp, x_struct, model, k, json } => {
            let r = map::near(&model, x_comp, x_struct, k)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!("({x_comp:.3}, {x_struct:.3}): predicted {:.2} {}", r.predicted_here, r.target_units);
            println!("{:>4}  {:<6} {:<34} {:<13} {:>8} {:>8} {:>8} {:>9} {:>9}  role", "rank", "id", "formula", "family", "x_comp", "x_struct", "distance", "measured", "predicted");
            for (i, n) in r.rows.iter().enumerate() {
                println!(
                    "{:>4}  {:<6} {:<34} {:<13} {:>8.3} {:>8.3} {:>8.3} {:>9.2} {:>9.2}  {}",
                    i + 1, n.id, n.formula, n.family, n.x_comp, n.x_struct, n.distance, n.measured, n.predicted, n.role
                );
            }
            println!("({} compounds without a structure are on the composition axis only and not ranked)", r.without_structure);
        }
        MapCommand::Bench { cif } => {
            let r = map::bench(cif.as_deref())?;
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}

fn print_featurize(r: &beamwatch::secondary::map::dataset::FeaturizeReport) {
    println!(
        "{} compounds ({} train, {} test), {} with a CIF; descriptors: {} compositional + {} structural; {} targets censored at their bound{}",
        r.compounds,
        r.train,
        r.test,
        r.with_structure,
        r.composition_dim,
        r.structure_dim,
        r.censored,
        if r.dropped_censored > 0 { format!(", {} censored rows dropped", r.dropped_censored) } else { String::new() }
    );
    println!(
        "time: {:.1} s wall; {:.2} ms per formula, {:.1} ms per CIF (CPU)",
        r.wall_s, r.composition_ms_per_compound, r.structure_ms_per_cif
    );
    if let Some((a, n)) = r.family_agreement {
        println!("families: our rules agree with the table's Family column for {a} of {n} compounds");
    }
    if !r.cif_formula_mismatches.is_empty() {
        println!("note: {} CIFs whose composition differs from the formula (kept as given):", r.cif_formula_mismatches.len());
        for m in &r.cif_formula_mismatches {
            println!("  {m}");
        }
    }
}
