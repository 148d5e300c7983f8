//! The live monitor's subcommands: `run`, `simulate`, `demo`, `bench`, `bench-live`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::analysis::{AnalysisArgs, FourDFlags};
use super::view::ViewFlags;
use crate::Error;
use crate::commands::{bench, bench_live, demo, run as daemon_cmd, simulate};
use crate::damage::{DEFAULT_PREFILTER_SIGMA_PX, Metric};
use crate::decode::WireFormat;
use crate::engine::{BackendChoice, Precision};
use crate::imagefile::ReadError;
use crate::ingest::Mode;
use crate::simulate::image::{ImageSeries, ImageSeriesSpec};
use crate::simulate::publish::{PublishOptions, SendSocket};
use crate::simulate::series::{Series, SeriesSpec};
use crate::simulate::{DamageModel, Simulation};

#[derive(Args)]
pub struct RunArgs {
    /// Configuration ([ingest], [pipeline], [analysis], [dose], [sinks], [record], [[alarms]]; see
    /// configs/) and analysis flags; without --config, the defaults.
    #[command(flatten)]
    analysis: AnalysisArgs,
    /// Override [ingest] endpoint, e.g. tcp://detector:31001.
    #[arg(long)]
    endpoint: Option<String>,
    /// Override [ingest] format.
    #[arg(long, value_enum)]
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
    #[command(flatten)]
    view: ViewFlags,
    #[command(flatten)]
    fourd: FourDFlags,
}

impl RunArgs {
    pub fn run(self) -> Result<(), Error> {
        let mut cfg = self.analysis.config()?;
        self.fourd.apply(&mut cfg);
        if let Some(e) = self.endpoint {
            cfg.ingest.endpoint = e;
        }
        if let Some(f) = self.format {
            cfg.ingest.format = f;
        }
        if self.bind {
            cfg.ingest.mode = Mode::Bind;
        }
        if let Some(o) = self.out {
            cfg.pipeline.out_dir = o;
        }
        if let Some(n) = self.max_series {
            cfg.pipeline.max_series = n;
        }
        self.view.apply(&mut cfg.view)?;
        let source = self.analysis.config.unwrap_or_else(|| PathBuf::from("built-in defaults"));
        let r = daemon_cmd::run(cfg, &source)?;
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        Ok(())
    }
}

#[derive(Args)]
pub struct SimulateArgs {
    /// Endpoint to bind (default, like a detector) or connect to (--connect).
    #[arg(long, default_value = "tcp://127.0.0.1:9999")]
    endpoint: String,
    #[arg(long)]
    connect: bool,
    /// Send on a PUB socket instead of PUSH.
    #[arg(long)]
    publish: bool,
    #[arg(long, value_enum, default_value = "beamwatch")]
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
    /// How damage shows.
    #[arg(long, value_enum, default_value = "amorphous")]
    damage: DamageModel,
    /// Write the series and its per-pixel truth to this HDF5 file instead of sending it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --out: build the series from this real image (TIFF, PNG, .npy) instead of the ideal
    /// crystal: its lattice is the specimen, damaged (amorphous or contrast-loss), drifting and
    /// shot-noisy; frames of --size px are cut from its centre.
    #[arg(long, requires = "out")]
    from_image: Option<PathBuf>,
    /// Random seed of the damage sites and the noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// 4D-STEM: scan a crystal and send one diffraction pattern per probe position (u16,
    /// bitshuffle-LZ4, --format dectris-v1 or dectris-v2; --fps is patterns/s, 0 = as fast as
    /// possible); spots fade at a known critical dose per region.
    #[arg(long)]
    fourd: bool,
    #[command(flatten)]
    fourd_args: FourdArgs,
}

/// The 4D-STEM simulator's settings (with --fourd).
#[derive(Args)]
pub struct FourdArgs {
    /// Scan shape ROWSxCOLS.
    #[arg(long, default_value = "32x32", value_parser = parse_shape)]
    scan_shape: (usize, usize),
    /// Scans of the same area (the first is the reference).
    #[arg(long, default_value_t = 8)]
    scans: usize,
    /// Detector pixels per side.
    #[arg(long, default_value_t = 96)]
    pattern_px: usize,
    #[arg(long, default_value_t = 5000.0)]
    electrons_per_pattern: f64,
    /// Dwell time per probe position (= frame time), µs.
    #[arg(long, default_value_t = 100.0)]
    dwell_us: f64,
    /// Scan step (scan pixel size), Å.
    #[arg(long, default_value_t = 11.0)]
    step_a: f64,
    /// Damage regions ROWSxCOLS over the scan.
    #[arg(long, default_value = "2x2", value_parser = parse_shape)]
    regions: (usize, usize),
    /// Critical dose per region (e⁻/Å², row-major over the regions).
    #[arg(long, value_delimiter = ',', default_values_t = [60.0, 120.0, 240.0, 480.0])]
    critical_doses: Vec<f64>,
}

fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (r, c) = s.split_once(['x', 'X', ',']).ok_or_else(|| format!("'{s}' is not ROWSxCOLS"))?;
    let n =
        |v: &str| v.trim().parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| format!("'{s}' is not ROWSxCOLS"));
    Ok((n(r)?, n(c)?))
}

impl SimulateArgs {
    pub fn run(self) -> Result<(), Error> {
        if self.fourd {
            return self.run_fourd();
        }
        let mut spec = SeriesSpec::new(self.size, self.frames, self.onset_frame, self.electrons_per_px);
        spec.model = self.damage;
        spec.seed = self.seed;
        if let Some(out) = self.out {
            let series: Box<dyn Simulation> = match &self.from_image {
                Some(image_path) => {
                    let mut frames = crate::imagefile::read_frames(image_path, false)?;
                    let image = frames
                        .drain(..)
                        .next()
                        .ok_or_else(|| ReadError::new(image_path, None, "no image in the file"))?
                        .frame;
                    let mut s = ImageSeriesSpec::new(
                        &image_path.display().to_string(),
                        self.size,
                        self.frames,
                        self.onset_frame,
                        self.electrons_per_px,
                    );
                    s.model = self.damage;
                    s.seed = self.seed;
                    Box::new(ImageSeries::new(&image, s).map_err(|e| ReadError::new(image_path, None, e.to_string()))?)
                }
                None => Box::new(Series::new(spec)),
            };
            let onset = series.onset_frame();
            let bar = crate::progress::items_bar(self.frames as u64, "simulating");
            let path = crate::simulate::file::write(series.as_ref(), &out, |_| bar.inc(1))
                .map_err(|e| Error::Output { path: out.clone(), problem: e.to_string() })?;
            bar.finish_and_clear();
            println!(
                "wrote {} frames of {}×{} px ({} damage, onset at frame {}) with per-pixel truth to {}",
                self.frames,
                self.size,
                self.size,
                self.damage.name(),
                onset.map_or("-".into(), |o| o.to_string()),
                path.display()
            );
            return Ok(());
        }
        let r = simulate::run(&simulate::SimulateOptions {
            spec,
            publish: PublishOptions {
                endpoint: self.endpoint,
                mode: if self.connect { Mode::Connect } else { Mode::Bind },
                socket: if self.publish { SendSocket::Pub } else { SendSocket::Push },
                format: self.format,
                encoding: self.encoding,
                fps: self.fps,
                series_count: self.series,
                first_series_id: 1,
                dose_in_header: !self.no_dose_header,
                wait_for_peer_s: self.wait_s,
            },
            truth: self.truth,
        })?;
        println!(
            "sent {} series, {} frames ({} messages) on {}; damage onset at frame {}",
            r.series_sent,
            r.frames_sent,
            r.messages_sent,
            r.endpoint,
            r.onset_frame.map_or("-".into(), |f| f.to_string())
        );
        Ok(())
    }
}

impl SimulateArgs {
    fn run_fourd(self) -> Result<(), Error> {
        use crate::simulate::fourd::FourdSpec;
        let a = self.fourd_args;
        let spec = FourdSpec {
            scan_rows: a.scan_shape.0,
            scan_cols: a.scan_shape.1,
            scans: a.scans.max(1),
            detector_px: a.pattern_px.max(8),
            electrons_per_pattern: a.electrons_per_pattern,
            dwell_time_us: a.dwell_us,
            pixel_size_a: a.step_a,
            regions_rows: a.regions.0,
            regions_cols: a.regions.1,
            critical_doses_e_per_a2: a.critical_doses,
            seed: self.seed,
        };
        let dose = spec.dose_per_scan_e_per_a2();
        let format = if self.format == WireFormat::DectrisV2 { WireFormat::DectrisV2 } else { WireFormat::DectrisV1 };
        let r = simulate::run_fourd(&simulate::FourdOptions {
            spec,
            publish: PublishOptions {
                endpoint: self.endpoint,
                mode: if self.connect { Mode::Connect } else { Mode::Bind },
                socket: if self.publish { SendSocket::Pub } else { SendSocket::Push },
                format,
                encoding: String::new(),
                fps: self.fps,
                series_count: 1,
                first_series_id: 1,
                dose_in_header: true,
                wait_for_peer_s: self.wait_s,
            },
            patterns_per_s: self.fps,
            truth: self.truth,
        })?;
        println!(
            "sent {} patterns ({} messages, {}) on {} in {:.1} s ({:.0} patterns/s); {dose:.1} e⁻/Å² per scan",
            r.patterns_sent,
            r.messages_sent,
            format.name(),
            r.endpoint,
            r.seconds,
            r.patterns_sent as f64 / r.seconds.max(1e-9)
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct DemoArgs {
    /// Output directory (alarm log, series summary, daemon report).
    #[arg(long, default_value = "beamwatch-demo")]
    out: PathBuf,
    /// ResNet-18 weights (default: search; without any, PSNR with a warning).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Wire format between simulator and monitor.
    #[arg(long, value_enum, default_value = "dectris-v2")]
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
    /// Keep the live view up after the demo, until Ctrl-C.
    #[arg(long, conflicts_with = "no_view")]
    view: bool,
    #[command(flatten)]
    view_flags: ViewFlags,
    /// 4D-STEM: a scanned crystal whose Bragg spots fade at a known critical dose per region,
    /// one diffraction pattern per probe position (stream v1 or v2, bitshuffle-LZ4 u16).
    #[arg(long)]
    fourd: bool,
    /// With --fourd: patterns per second sent (0: as fast as the monitor takes them).
    #[arg(long, default_value_t = 20_000.0, requires = "fourd")]
    patterns_per_s: f64,
}

impl DemoArgs {
    pub fn run(self) -> Result<(), Error> {
        let mut view = crate::view::ViewConfig::default();
        self.view_flags.apply(&mut view)?;
        let opts = demo::DemoOptions {
            out: self.out.clone(),
            weights: self.weights,
            format: self.format,
            size_px: self.size,
            frames: self.frames,
            onset_frame: self.onset_frame,
            fps: self.fps,
            view,
            keep_view: self.view,
            patterns_per_s: self.patterns_per_s,
        };
        if self.fourd {
            // 80×80 probe positions: a virtual image of 4×4 patches for the real-space analysis.
            let spec = crate::simulate::fourd::FourdSpec { scan_rows: 80, scan_cols: 80, ..Default::default() };
            let o = demo::run_fourd(&opts, spec)?;
            print_fourd_demo(&o, &self.out);
            return Ok(());
        }
        let o = demo::run(&opts)?;
        print_demo(&o, &self.out);
        Ok(())
    }
}

fn print_demo(o: &demo::DemoOutcome, out: &Path) {
    let d = &o.daemon;
    let p = &d.pipeline;
    let onset = o.publisher.onset_frame;
    println!(
        "simulated: {} frames sent at {:.0} e⁻/Å² per frame; damage starts at frame {} ({:.0} e⁻/Å² cumulative)",
        o.publisher.frames_sent,
        o.dose_per_frame_e_per_a2,
        onset.map_or("-".into(), |f| f.to_string()),
        onset.map_or(f64::NAN, |f| (f + 1) as f64 * o.dose_per_frame_e_per_a2)
    );
    println!("monitor: {} — metric {}", d.ingest, p.provenance.metric_choice);
    println!(
        "frames: {} received, {} analysed, {} skipped, {} not registered, {} without patches, {} rejected",
        p.frames_received,
        p.frames_analysed,
        p.frames_skipped,
        p.frames_not_registered,
        p.frames_without_patches,
        p.analysis_errors + d.decode_errors.values().sum::<u64>()
    );
    for s in &p.series {
        println!("series {}: {}", s.series, s.patch_threshold);
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
        match (&s.critical_dose_fit, &s.critical_dose_note) {
            (Some(f), _) => println!(
                "critical dose (fit to the mean dissimilarity): Dc = {:.0} ± {:.0} e⁻/Å² after an incubation dose of {:.0} e⁻/Å²",
                f.critical_dose_e_per_a2,
                f.critical_dose_sigma_e_per_a2.unwrap_or(f64::NAN),
                f.onset_dose_e_per_a2
            ),
            (None, why) => println!("critical dose: {}", why.as_deref().unwrap_or("not determined")),
        }
        println!("summary: {}", s.summary_file);
    }
    if let Some(l) = &p.alarm_latency_ms {
        println!("frame received → alarm published: p50 {:.1} ms, p99 {:.1} ms", l.p50, l.p99);
    }
    println!("alarm log: {}", out.join("alarms.jsonl").display());
}

fn print_fourd_demo(o: &demo::FourdDemoOutcome, out: &Path) {
    let (d, spec) = (&o.daemon, &o.spec);
    let p = &d.pipeline;
    let sim = crate::simulate::fourd::FourdSim::new(spec.clone());
    println!(
        "simulated: {} scans of {}×{} positions, {}×{} px patterns, {} patterns sent in {:.1} s; {:.1} e⁻/Å² per scan",
        spec.scans,
        spec.scan_rows,
        spec.scan_cols,
        spec.detector_px,
        spec.detector_px,
        o.publisher.patterns_sent,
        o.publisher.seconds,
        spec.dose_per_scan_e_per_a2()
    );
    let sc = &p.scans;
    println!(
        "monitor: {} patterns received, {} scans completed ({} incomplete), {} masked (missing), {} duplicate, {} late, {} rejected",
        sc.patterns_received,
        sc.scans_completed,
        sc.scans_incomplete,
        sc.patterns_masked_missing,
        sc.patterns_duplicate,
        sc.patterns_late,
        sc.patterns_refused + sc.patterns_wrong_size + d.decode_errors.values().sum::<u64>()
    );
    println!(
        "virtual images: {} analysed with {} (the `{}` detector)",
        p.frames_analysed,
        p.provenance.metric_choice,
        crate::fourd::FourDConfig::default().analyse
    );
    for s in &p.series {
        let Some(x) = &s.diffraction else { continue };
        let show = |f: &crate::pipeline::summary::Fading| match (f.dc_e_per_a2, f.dc_sigma_e_per_a2) {
            (Some(dc), Some(sd)) => {
                format!("Dc = {} ± {} e⁻/Å²", crate::report::format::dose(dc), crate::report::format::sig(sd, 2))
            }
            _ => f.note.clone().unwrap_or_else(|| "not determined".into()),
        };
        println!("spot fading, series {} ({} spots): whole scan {}", s.series, x.spots, show(&x.fading));
        for (k, r) in x.regions.iter().enumerate() {
            println!(
                "  region {} (row {}, col {}): {}   (simulated: Dc = {} e⁻/Å²)",
                k + 1,
                r.row,
                r.col,
                show(&r.fading),
                crate::report::format::dose(sim.critical_dose(k))
            );
        }
        println!("alarms in series {}:", s.series);
        if s.alarms.is_empty() {
            println!("  (none)");
        }
        for a in &s.alarms {
            println!(
                "  scan {:>3}  {:>8}  {:<17} at {:>8.0} e⁻/Å²: {}",
                a.frame,
                format!("{:?}", a.level).to_lowercase(),
                a.rule,
                a.cumulative_dose_e_per_a2.unwrap_or(f64::NAN),
                a.message
            );
        }
        println!("summary: {}", s.summary_file);
        println!(
            "spot-fading plot: {}",
            out.join(format!("fading_{}.png", crate::record::file_stem(&s.series))).display()
        );
    }
    println!("alarm log: {}", out.join("alarms.jsonl").display());
}

#[derive(Args)]
pub struct BenchArgs {
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
    #[arg(long, value_enum, ignore_case = true, default_value = "resnet18")]
    metric: Metric,
    #[arg(long, default_value_t = 20)]
    patch: usize,
    /// Patches per work chunk (tuning; default: 192 in fp32, 1,536 in bf16, balanced across threads).
    #[arg(long)]
    chunk: Option<usize>,
    /// Gaussian pre-filter σ in pixels (0 = off).
    #[arg(long, default_value_t = DEFAULT_PREFILTER_SIGMA_PX)]
    prefilter_sigma: f32,
    /// auto (GPU when usable), cpu, or cuda (GPU or error; adds kernel and all-GPU frame times).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Also time the CPU trunk stage by stage (gather, GEMM, epilogue per layer) on extra frames;
    /// on the GPU, every convolution on its own, on each kernel family (FFMA, 3×TF32, bf16).
    #[arg(long)]
    layers: bool,
    /// Number format: fp32 (exact) or bf16 (AVX512-BF16 CPUs, bf16 tensor cores on GPUs; README "Precision").
    #[arg(long, value_enum, default_value = "fp32")]
    precision: Precision,
    /// Run bf16 wherever the CPU has AVX512-BF16, even where it measures slower than fp32 (without
    /// it, bf16 is kept only where faster, as the daemon does; the JSON says what the probe measured).
    #[arg(long)]
    force_precision: bool,
}

impl BenchArgs {
    pub fn run(self) -> Result<(), Error> {
        let r = bench::run(&bench::BenchOptions {
            weights: self.weights,
            size_px: self.size,
            frames: self.frames,
            threads: self.threads,
            patch_px: self.patch,
            metric: self.metric,
            chunk: self.chunk,
            prefilter_sigma_px: self.prefilter_sigma,
            backend: self.backend,
            layers: self.layers,
            precision: self.precision,
            force_precision: self.force_precision,
        })?;
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
        Ok(())
    }
}

#[derive(Args)]
pub struct BenchLiveArgs {
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
    #[arg(long, value_enum, default_value = "dectris-v2")]
    format: WireFormat,
    #[arg(long, value_enum, ignore_case = true, default_value = "resnet18")]
    metric: Metric,
    /// ResNet-18 weights; without, random weights (timing does not depend on values).
    #[arg(long)]
    weights: Option<PathBuf>,
}

impl BenchLiveArgs {
    pub fn run(self) -> Result<(), Error> {
        let r = bench_live::run(&bench_live::LiveBenchOptions {
            size_px: self.size,
            fps: self.fps,
            frames: self.frames,
            series_frames: self.series_frames,
            format: self.format,
            metric: self.metric,
            weights: self.weights,
        })?;
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct Bench4dArgs {
    /// Only the bitshuffle-LZ4 decoding (old decoder, new with lz4_flex, new with liblz4).
    #[arg(long)]
    decode_only: bool,
    /// Pattern sizes (square, u16 pixels).
    #[arg(long, value_delimiter = ',', default_values_t = [96usize, 192])]
    sizes: Vec<usize>,
    /// --decode-only: patterns per size (decoded five times by each decoder). Full mode: distinct
    /// synthetic patterns per size (the scans cycle through them).
    #[arg(long)]
    patterns: Option<usize>,
    /// Threads (default: 1 with --decode-only, 2 otherwise).
    #[arg(long)]
    threads: Option<usize>,
    /// Full mode: the scan shape, ROWSxCOLS.
    #[arg(long, default_value = "64x64", value_parser = parse_scan_shape)]
    scan: crate::fourd::ScanShape,
    /// Full mode: scans per timed round.
    #[arg(long, default_value_t = 2)]
    scans_per_round: usize,
    /// Full mode: timed rounds (the best of each decoder and of decode + reduce counts).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Full mode: skip the C bitshuffle library anchor even where its Python package is installed.
    #[arg(long)]
    no_c_anchor: bool,
    /// Also write each size's blobs to DIR/bslz4_<size>.bin for tools/bench_bitshuffle.py.
    #[arg(long)]
    blobs_dir: Option<PathBuf>,
    /// Print JSON lines instead of the table.
    #[arg(long)]
    json: bool,
    /// End to end: the daemon (in this process) fed by a stream-v2 sender over loopback ZeroMQ;
    /// patterns sent / received / accounted, patterns/s, MB/s, and per scan the time from its last
    /// pattern to its result published. Uses --sizes, --scan (default 256x256 here), --threads
    /// ([fourd] decode_threads).
    #[arg(long)]
    live: bool,
    /// --live: patterns per second; absent: the highest rate with nothing lost (stepping).
    #[arg(long)]
    rate: Option<f64>,
    /// --live: scans per run (the latency percentiles are over these).
    #[arg(long, default_value_t = 4)]
    scans: usize,
}

fn parse_scan_shape(s: &str) -> Result<crate::fourd::ScanShape, String> {
    let (r, c) = s.split_once(['x', '×']).ok_or_else(|| format!("expected ROWSxCOLS, got {s:?}"))?;
    let n = |v: &str| v.trim().parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| format!("bad scan size {v:?}"));
    Ok(crate::fourd::ScanShape { rows: n(r)?, cols: n(c)? })
}

impl Bench4dArgs {
    pub fn run(self) -> Result<(), Error> {
        use crate::commands::bench_4d;
        let cpu = bench_4d::cpu_model();
        if self.live {
            return self.run_live(&cpu);
        }
        if !self.decode_only {
            return self.run_full(&cpu);
        }
        let threads = self.threads.unwrap_or(1);
        let patterns = self.patterns.unwrap_or(20000);
        if !self.json {
            println!("CPU: {cpu}");
            println!(
                "pattern  threads  kernel  bytes/pattern  old patterns/s  old MB/s  new+lz4_flex patterns/s  new+liblz4 patterns/s  new MB/s  new/old"
            );
        }
        for &px in &self.sizes {
            let blobs = bench_4d::compress_patterns(&bench_4d::counting_patterns(px, patterns.max(1), 20));
            if let Some(dir) = &self.blobs_dir {
                let path = dir.join(format!("bslz4_{px}.bin"));
                bench_4d::write_blobs(&path, &blobs).map_err(|e| Error::Output { path, problem: e.to_string() })?;
            }
            let b = bench_4d::bench_blobs(&blobs, px, threads, 5);
            if self.json {
                println!("{}", serde_json::to_string(&b).unwrap_or_default());
            } else {
                println!(
                    "{px:>3}×{px:<3}  {:>7}  {:>6}  {:>13.0}  {:>14.0}  {:>8.0}  {:>23.0}  {:>21.0}  {:>8.0}  {:>6.2}×",
                    b.threads,
                    b.kernel,
                    b.compressed_bytes_per_pattern,
                    b.old.patterns_per_s,
                    b.old.mb_per_s_out,
                    b.new_flex.patterns_per_s,
                    b.new.patterns_per_s,
                    b.new.mb_per_s_out,
                    b.new.patterns_per_s / b.old.patterns_per_s
                );
            }
        }
        Ok(())
    }

    fn run_live(&self, cpu: &str) -> Result<(), Error> {
        use crate::commands::bench_4d_live::{LiveOptions, run};
        // The 64x64 default is the reduce benchmark's; the live latency is asked for 256×256 scans.
        let scan = if self.scan == (crate::fourd::ScanShape { rows: 64, cols: 64 }) {
            crate::fourd::ScanShape { rows: 256, cols: 256 }
        } else {
            self.scan
        };
        if !self.json {
            println!("CPU: {cpu}");
        }
        for &px in &self.sizes {
            let opts = LiveOptions {
                pattern_px: px,
                scan,
                scans: self.scans.max(1),
                rate: self.rate,
                distinct: self.patterns.unwrap_or(1024),
                threads: self.threads,
                view_bind: None,
                fade_odd_scans: true,
            };
            let b = run(&opts)?;
            if self.json {
                println!("{}", serde_json::to_string(&b).unwrap_or_default());
                continue;
            }
            let r = &b.result;
            let ms = |p: &Option<crate::telemetry::Percentiles>| {
                p.as_ref().map_or("-".to_string(), |p| {
                    format!("p50 {:.1} ms, p99 {:.1} ms over {} scans", p.p50, p.p99, p.count)
                })
            };
            println!(
                "{px}×{px} u16 bslz4 ({:.0} B/pattern), scan {}×{} × {} scans, {} decode threads",
                b.compressed_bytes_per_pattern, b.scan_rows, b.scan_cols, b.scans, b.decode_threads
            );
            if let Some(max) = b.max_clean_patterns_per_s {
                println!("  highest rate with nothing lost: {max:.0} patterns/s ({} trials)", b.trials.len());
            } else if self.rate.is_none() {
                println!("  no rate tried was free of loss ({} trials)", b.trials.len());
            }
            println!(
                "  at {:.0} patterns/s asked: sent {}, received {}, accounted {}, lost {}, dropped at the queue {}, masked {}",
                r.rate_patterns_per_s,
                r.patterns_sent,
                r.patterns_received,
                r.patterns_accounted,
                r.patterns_lost,
                r.patterns_dropped_queue,
                r.positions_masked_missing
            );
            println!(
                "  achieved {:.0} patterns/s, {:.1} MB/s on the wire ({:.0} MB/s decoded); scans {} complete, {} incomplete",
                r.achieved_patterns_per_s,
                r.achieved_mb_per_s,
                r.decoded_mb_per_s,
                r.scans_completed,
                r.scans_incomplete
            );
            println!("  last pattern → scan result published: {}", ms(&r.scan_latency_ms));
            println!("  last pattern → alarm published: {} ({} alarms)", ms(&r.alarm_latency_ms), r.alarms);
        }
        Ok(())
    }

    fn run_full(&self, cpu: &str) -> Result<(), Error> {
        use crate::commands::bench_4d;
        let threads = self.threads.unwrap_or(2).max(1);
        let python = if self.no_c_anchor { None } else { bench_4d::python_with_bitshuffle() };
        if !self.json {
            println!("CPU: {cpu}");
            println!(
                "decode + reduce = decode_bslz4_u16_into (liblz4) → ScanAssembler::push_u16 (bf, adf, sum, com_x, com_y and the 2×2 region sums for the spots in one integer pass over the u16 pixels; no u16→f32 stage); one assembler per thread over its band of scan rows"
            );
            match &python {
                Some(py) => println!(
                    "C bitshuffle anchor: {} tools/bench_bitshuffle.py, OMP_NUM_THREADS=1, 1 thread",
                    py.display()
                ),
                None => println!(
                    "C bitshuffle anchor: not measured (no Python with `bitshuffle`; run with --blobs-dir DIR, then OMP_NUM_THREADS=1 python tools/bench_bitshuffle.py DIR/bslz4_96.bin …)"
                ),
            }
            println!(
                "pattern  threads  scan    bytes/pattern  old pat/s  new+lz4_flex pat/s  new+liblz4 pat/s  decode+reduce pat/s  reduce MB/s  spots  ns/pattern (1 thread): decode convert detectors region-sums  C bitshuffle pat/s (1 thread)"
            );
        }
        for &px in &self.sizes {
            let opts = bench_4d::FullOptions {
                pattern_px: px,
                distinct: self.patterns.unwrap_or(2048),
                scan: self.scan,
                scans_per_round: self.scans_per_round,
                threads,
                rounds: self.rounds,
            };
            let b = bench_4d::bench_full(&opts, python.as_deref());
            if let Some(dir) = &self.blobs_dir {
                let blobs = bench_4d::compress_patterns(&bench_4d::counting_patterns(px, opts.distinct.max(1), 20));
                let path = dir.join(format!("bslz4_{px}.bin"));
                bench_4d::write_blobs(&path, &blobs).map_err(|e| Error::Output { path, problem: e.to_string() })?;
            }
            if self.json {
                let mut v = serde_json::to_value(&b).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("cpu".into(), cpu.into());
                }
                println!("{v}");
            } else {
                let s = &b.stages_ns_per_pattern;
                let c = b.c_bitshuffle.map_or_else(|| "-".to_string(), |r| format!("{:.0}", r.patterns_per_s));
                println!(
                    "{px:>3}×{px:<3}  {:>7}  {:>3}×{:<3}  {:>13.0}  {:>9.0}  {:>18.0}  {:>16.0}  {:>19.0}  {:>11.0}  {:>5}  {:>6.0} {:>7.0} {:>9.0} {:>11.0}  {c:>10}",
                    b.threads,
                    b.scan_rows,
                    b.scan_cols,
                    b.compressed_bytes_per_pattern,
                    b.old.patterns_per_s,
                    b.new_flex.patterns_per_s,
                    b.new.patterns_per_s,
                    b.reduce.patterns_per_s,
                    b.reduce.mb_per_s_out,
                    b.spots_found,
                    s.decode,
                    s.convert,
                    s.detectors,
                    s.region_sums,
                );
            }
        }
        Ok(())
    }
}
