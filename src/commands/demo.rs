//! `beamwatch demo`: the simulator and the daemon together on loopback — a drifting crystal that
//! the beam turns amorphous, watched live until the alarms fire. Offline; no input needed.

use std::path::PathBuf;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::alarms::sinks::SinkConfig;
use crate::config::{Config, IngestConfig, Mode, PipelineConfig};
use crate::daemon::{self, DaemonReport};
use crate::decode::WireFormat;
use crate::pipeline::runtime;
use crate::simulate::publish::{self, PublishError, PublishOptions, PublishReport};
use crate::simulate::fourd::{self, FourdReport, FourdSim, FourdSpec};
use crate::simulate::series::SeriesSpec;

pub struct DemoOptions {
    pub out: PathBuf,
    pub weights: Option<PathBuf>,
    pub format: WireFormat,
    pub size_px: usize,
    pub frames: usize,
    pub onset_frame: usize,
    pub fps: f64,
    /// The live view: `[view]` settings (served while the demo runs unless `enabled` is false).
    pub view: crate::view::ViewConfig,
    /// Keep the live view up after the demo, until Ctrl-C.
    pub keep_view: bool,
    /// 4D-STEM demo: patterns per second (0: as fast as the monitor takes them).
    pub patterns_per_s: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("beamwatch-demo"),
            weights: None,
            format: WireFormat::DectrisV2,
            size_px: 256,
            frames: 24,
            onset_frame: 8,
            fps: 8.0,
            view: crate::view::ViewConfig::default(),
            keep_view: false,
            patterns_per_s: 20_000.0,
        }
    }
}

pub struct DemoOutcome {
    pub daemon: DaemonReport,
    pub publisher: PublishReport,
    pub dose_per_frame_e_per_a2: f64,
}

pub fn run(opts: &DemoOptions) -> Result<DemoOutcome, Error> {
    let spec = SeriesSpec::with_onset(opts.size_px, opts.frames, opts.onset_frame);
    let mut cfg = Config::default();
    cfg.analysis.weights = opts.weights.clone();
    cfg.pipeline = PipelineConfig {
        out_dir: opts.out.clone(),
        max_series: 1,
        status_interval_s: 0.0,
        ..PipelineConfig::default()
    };
    // The DECTRIS streams carry no beam current or scan pixel size: the user states them.
    cfg.dose.beam_current_pa = Some(spec.beam_current_pa());
    cfg.dose.dwell_time_us = Some(spec.dwell_time_us);
    cfg.dose.pixel_size_a = Some(spec.pixel_size_a);
    cfg.view = opts.view.clone();
    cfg.view.enabled |= opts.keep_view;
    let popts = PublishOptions { format: opts.format, fps: opts.fps, ..PublishOptions::default() };
    let (daemon, publisher) = run_pair(&spec, popts, cfg, opts.keep_view)?;
    Ok(DemoOutcome { daemon, publisher, dose_per_frame_e_per_a2: spec.dose_per_frame_e_per_a2() })
}

/// Runs the simulator (bound on a free loopback port) and the daemon (connected to it, alarms on a
/// free loopback port) until the simulator's series are done; with `keep_view`, then serves the
/// live view until Ctrl-C.
pub fn run_pair(
    spec: &SeriesSpec,
    popts: PublishOptions,
    cfg: Config,
    keep_view: bool,
) -> Result<(DaemonReport, PublishReport), Error> {
    let spec = spec.clone();
    run_with(popts, cfg, keep_view, move |popts, stop, bound| {
        tokio::spawn(async move { publish::publish(&spec, &popts, stop, Some(bound)).await })
    })
}

/// [`run_pair`] with any simulator: `start` spawns it on the options (endpoint and mode set),
/// a stop token and the channel that receives its bound endpoint.
pub(crate) fn run_with<R: Send + 'static>(
    mut popts: PublishOptions,
    mut cfg: Config,
    keep_view: bool,
    start: impl FnOnce(
        PublishOptions,
        CancellationToken,
        oneshot::Sender<String>,
    ) -> tokio::task::JoinHandle<Result<R, PublishError>>,
) -> Result<(DaemonReport, R), Error> {
    popts.endpoint = "tcp://127.0.0.1:0".into();
    popts.mode = Mode::Bind;
    cfg.pipeline.max_series = popts.series_count;
    if cfg.sinks.pub_endpoint.is_some() {
        cfg.sinks = SinkConfig { pub_endpoint: Some("tcp://127.0.0.1:0".into()), ..cfg.sinks };
    }
    let format = popts.format;
    runtime()?.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(daemon::stop_on_signal(cancel.clone()));
        let (btx, brx) = oneshot::channel();
        let sim = start(popts, cancel.clone(), btx);
        // The simulator's own error says why it did not start.
        let Ok(endpoint) = brx.await else {
            return match sim.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(PublishError::Socket { endpoint: "simulator".into(), reason: "did not start".into() }.into()),
            };
        };
        cfg.ingest = IngestConfig { endpoint, mode: Mode::Connect, format, ..cfg.ingest };
        let rules = cfg.validate(std::path::Path::new("built-in settings"))?;
        let view_stop = CancellationToken::new();
        let hooks = daemon::Hooks { ready: None, keep_view: keep_view.then(|| view_stop.clone()) };
        let report = daemon::run_with(cfg, rules, cancel.clone(), hooks).await;
        // The daemon is done (or failed): the simulator need not wait for it any longer.
        cancel.cancel();
        let report = match report {
            Ok((report, Some(server))) => {
                println!("demo done; the live view stays at {} until Ctrl-C", server.url);
                tokio::spawn(daemon::stop_on_signal(view_stop.clone()));
                server.wait(view_stop).await;
                Ok(report)
            }
            Ok((report, None)) => Ok(report),
            Err(e) => Err(e),
        };
        let published = match sim.await {
            Ok(r) => r?,
            Err(e) => return Err(PublishError::Socket { endpoint: "simulator".into(), reason: e.to_string() }.into()),
        };
        Ok::<_, Error>((report?, published))
    })
}

/// What the 4D-STEM demo gives back.
pub struct FourdDemoOutcome {
    pub daemon: DaemonReport,
    pub publisher: FourdReport,
    pub spec: FourdSpec,
}

/// `beamwatch demo --fourd`: the 4D-STEM simulator (a crystal whose Bragg spots fade at a known
/// critical dose per region) and the daemon with `[fourd]` on, over loopback. The scan shape, beam
/// current, dwell time and step travel in the stream header, as a detector's header appendix would
/// carry them.
pub fn run_fourd(opts: &DemoOptions, spec: FourdSpec) -> Result<FourdDemoOutcome, Error> {
    let mut cfg = Config::default();
    cfg.analysis.weights = opts.weights.clone();
    cfg.pipeline = PipelineConfig { out_dir: opts.out.clone(), status_interval_s: 0.0, ..PipelineConfig::default() };
    cfg.fourd.enabled = true;
    cfg.fourd.regions_rows = spec.regions_rows;
    cfg.fourd.regions_cols = spec.regions_cols;
    cfg.view = opts.view.clone();
    cfg.view.enabled |= opts.keep_view;
    // Stream v1 or v2 only: the beamwatch format has no 4D-STEM header.
    let format = if opts.format == WireFormat::DectrisV1 { WireFormat::DectrisV1 } else { WireFormat::DectrisV2 };
    let popts = PublishOptions { format, ..PublishOptions::default() };
    let sim = std::sync::Arc::new(FourdSim::new(spec.clone()));
    let rate = opts.patterns_per_s;
    let (daemon, publisher) = run_with(popts, cfg, opts.keep_view, move |popts, stop, bound| {
        tokio::spawn(async move { fourd::publish(sim, &popts, rate, stop, Some(bound)).await })
    })?;
    Ok(FourdDemoOutcome { daemon, publisher, spec })
}
