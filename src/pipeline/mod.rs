//! The one analysis pipeline: live monitoring ([`crate::daemon`]), `replay`, `demo` and
//! `bench-live` all hand their frames to a [`Pipeline`], and every consumer of results plugs in here.
//!
//! ```text
//! source ──frame()──▶ dose account ──▶ recorder (frames, dose)
//!                          │
//!                  bounded queue (async send)
//!                          ▼
//!                  compute thread: register → compare → alarms
//!                          │ events (alarms first, then the frame)
//!                          ▼
//!                  consumers: alarm sinks (PUB, log, command) · recorder (results) · …
//! ```
//!
//! - The source side is async: [`Pipeline::frame`] waits for room in the queue for a series'
//!   reference frame (never skipped) and whenever the source asks to wait ([`WhenFull::Wait`], a
//!   replay); a live source passes over a frame when the queue is full ([`WhenFull::Skip`]), and the
//!   pipeline counts it. Every frame handed in is accounted for: analysed, skipped, or not
//!   analysable with a reason.
//! - Stopping: async tasks (sockets, sinks) end on the [`CancellationToken`] the pipeline is started
//!   with; threads end when their input closes — [`Pipeline::finish`] closes the queue, the compute
//!   thread closes the open series and ends, then the recorder finishes its files.
//! - A compute thread that dies (a panic in the analysis) is reported by `finish` as
//!   [`PipelineError::AnalysisDied`], carrying the report of everything up to then so callers can
//!   still write it; [`Pipeline::frame`] answers [`ComputeGone`] as soon as it notices.
//!
//! Modules: [`compute`] (the compute thread), [`consumers`] (what results go to), [`stats`]
//! (counters), [`summary`] (what a series leaves behind).

pub mod compute;
pub mod consumers;
pub mod scan_pool;
pub mod scans;
pub mod stats;
pub mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::alarms::Rule;
use crate::budget::{Budget, Kind};
use crate::alarms::sinks::{SinkConfig, SinkError, Sinks};
use crate::damage::MetricSetup;
use crate::decode::{DoseHeader, FrameMsg, SeriesInfo};
use crate::dose::{self, DoseAccount, DoseConfig, FrameDose};
use crate::record::recorder::{Failure, OnFailure, RecordConfig, Recorder};
use crate::record::session::ReceivedRow;
use crate::report::ReportError;
use crate::report::provenance::Provenance;
use crate::record::recorder::RecordStats;
use crate::telemetry::{Percentiles, rss_mib};
use crate::view::hub::{Hub, Status};
use compute::{Compute, FrameWork, Work};
use stats::{SeriesBrief, Stats, get, inc};

/// Test hook read when a pipeline starts: the compute thread panics while analysing the frame with
/// this index, so tests can check that a dead analysis is reported (exit status, message, files).
pub const FAULT_ENV: &str = "BEAMWATCH_FAULT_PANIC_AT_FRAME";

/// How a pipeline is set up.
pub struct PipelineOptions {
    /// The metric, its settings and engine.
    pub setup: MetricSetup,
    pub rules: Vec<Rule>,
    pub dose: DoseConfig,
    pub sinks: SinkConfig,
    /// The alarm log when `sinks.log` does not name one.
    pub alarm_log: PathBuf,
    /// Session recording: its settings and directory; `None`: off.
    pub record: Option<(RecordConfig, PathBuf)>,
    /// Where `series_<id>.json` files go.
    pub summaries_dir: PathBuf,
    /// Frames that may wait for the analysis.
    pub queue_frames: usize,
    /// Analyse only the newest of several waiting frames (live); `false`: every frame in turn.
    pub skip_to_newest: bool,
    /// Where the frames come from, for the session files ("live tcp://…", "replay of …").
    pub source: String,
    /// Stored beside the provenance in every session file (the configuration, the input file).
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Ends the pipeline's async tasks (the alarm PUB socket, the view's status updates).
    pub cancel: CancellationToken,
    /// The live view, told every result and, once a second, the counters.
    pub view: Option<Hub>,
    /// The memory budget the analysis queue, the recorder's queue and the result PUB draw from.
    pub budget: Arc<Budget>,
}

impl PipelineOptions {
    /// A long-running source's pipeline as the configuration sets it up (the daemon, `watch`): the
    /// alarm log, series summaries and sessions under `[pipeline] out_dir`, the configured sinks,
    /// queue and recording; `budget` is the one the caller's sockets draw from too.
    pub fn from_config(
        cfg: &crate::config::Config,
        setup: MetricSetup,
        rules: Vec<Rule>,
        source: String,
        context: serde_json::Map<String, serde_json::Value>,
        cancel: CancellationToken,
        view: Option<Hub>,
        budget: Arc<Budget>,
    ) -> Self {
        let out = &cfg.pipeline.out_dir;
        Self {
            setup,
            rules,
            dose: cfg.dose.clone(),
            sinks: cfg.sinks.clone(),
            alarm_log: out.join("alarms.jsonl"),
            record: cfg
                .record
                .enabled
                .then(|| (cfg.record.clone(), cfg.record.dir.clone().unwrap_or(out.join("sessions")))),
            summaries_dir: out.clone(),
            queue_frames: cfg.pipeline.queue_frames,
            skip_to_newest: cfg.pipeline.skip_to_newest,
            source,
            context,
            cancel,
            view,
            budget,
        }
    }
}

/// What a source wants when the analysis queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room (replays: every frame is analysed).
    Wait,
    /// Pass the frame over and count it (live: the receive loop never waits).
    Skip,
}

/// What [`Pipeline::hand`] did with a message.
#[derive(Debug)]
pub enum Handed {
    /// A frame, with its dose.
    Frame(FrameDose),
    /// The open series ended.
    SeriesEnded,
    Other,
}

/// Dose per frame and cumulative (e⁻/Å²) as a session file recorded them, reused on replay.
#[derive(Clone, Copy, Debug)]
pub struct RecordedDose {
    pub per_frame_e_per_a2: f64,
    pub cumulative_e_per_a2: f64,
    /// Beam current, dwell time and pixel size as recorded, with their original sources.
    pub inputs: Option<[dose::Input; 3]>,
}

/// The compute thread is gone: stop feeding the pipeline and call [`Pipeline::finish`], which says why.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the compute thread stopped")]
#[must_use]
pub struct ComputeGone;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum PipelineError {
    #[error(transparent)]
    Output(#[from] ReportError),
    #[error(transparent)]
    Sinks(#[from] SinkError),
    #[error("cannot start the {what}: {source}")]
    Start { what: &'static str, source: std::io::Error },
    /// The analysis died; `report` holds everything up to then.
    #[error("the analysis died: {message}")]
    AnalysisDied { message: String, report: Box<PipelineReport> },
}

/// What a pipeline did, from start to finish.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    pub frames_dropped_queue_full: u64,
    /// Passed over because their analysis did not fit the memory budget at the time (also in
    /// `frames_skipped`).
    pub frames_dropped_budget: u64,
    /// Refused: one frame's analysis would take more than half the memory budget.
    pub frames_over_budget: u64,
    pub analysis_errors: u64,
    /// Frames whose drift could not be established (a jump, a lost lock): not compared.
    pub frames_not_registered: u64,
    /// Frames in which every patch was excluded (gaps, drift): nothing compared.
    pub frames_without_patches: u64,
    pub series_started: u64,
    pub series_ended: u64,
    /// 4D-STEM: patterns → scans (all zero when `[fourd]` is off).
    pub scans: stats::ScanCounters,
    pub alarms: u64,
    pub alarms_published: u64,
    pub alarms_logged: u64,
    pub alarm_commands_ok: u64,
    pub alarm_commands_failed: u64,
    /// Alarm commands not run because the command queue was full.
    pub alarm_commands_dropped: u64,
    /// Frame received → alarm published (ms), recent window.
    pub alarm_latency_ms: Option<Percentiles>,
    /// Frame received → the frame's result published (ms), recent window.
    pub frame_latency_ms: Option<Percentiles>,
    /// Per analysed frame (ms), recent window.
    pub analysis_ms: Option<Percentiles>,
    pub provenance: Provenance,
    /// Where alarms are published (with the real port).
    pub alarm_pub_endpoint: Option<String>,
    /// Alarm/result messages published, and dropped: for subscribers too slow to take them (their
    /// allowance or the memory budget's subscriber share full), or at the queue into the socket.
    pub results_published: Option<u64>,
    pub results_dropped_slow_subscribers: Option<u64>,
    pub results_dropped_queue: Option<u64>,
    /// The most recent series (at most 64), in brief.
    pub series: Vec<SeriesBrief>,
    pub recording: Option<RecordingReport>,
    /// Why the analysis died, when it did (the counts above stop there).
    pub analysis_died: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordingReport {
    pub files: Vec<PathBuf>,
    pub frames_recorded: u64,
    /// Frames whose pixels were not stored because the disk fell behind (their dose was).
    pub frames_not_recorded: u64,
    pub analyses: u64,
    pub alarms: u64,
    pub failed: bool,
    /// Series whose session file could not be created (each alarmed; later series recorded).
    pub series_not_recorded: u64,
    pub error: Option<String>,
}

/// The series the source side is in.
struct Open {
    series: String,
    dose: DoseAccount,
    received: u64,
    dropped: u64,
    reference_sent: bool,
    warned_dose: bool,
}

pub struct Pipeline {
    tx: mpsc::Sender<Work>,
    compute: std::thread::JoinHandle<Result<(), String>>,
    recorder: Option<(Recorder, std::thread::JoinHandle<()>)>,
    /// Why recording is off although it was asked for.
    record_error: Option<String>,
    sinks: Sinks,
    sink_task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
    view: Option<ViewFeed>,
    provenance: Provenance,
    provenance_json: String,
    source: String,
    dose: DoseConfig,
    open: Option<Open>,
    budget: Arc<Budget>,
}

/// A multi-threaded tokio runtime for the sockets and sinks; the analysis has its own threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, PipelineError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bw-io")
        .enable_all()
        .build()
        .map_err(|source| PipelineError::Start { what: "async runtime", source })
}

impl Pipeline {
    /// Opens the sinks, starts the recorder and the compute thread (inside a tokio runtime).
    pub async fn start(opts: PipelineOptions) -> Result<Self, PipelineError> {
        crate::report::ensure_dir(&opts.summaries_dir)?;
        let setup = opts.setup;
        let provenance = Provenance::new(&setup.settings, setup.weights.as_ref(), setup.choice.clone());
        let mut context = opts.context;
        context.insert("provenance".into(), serde_json::to_value(&provenance).unwrap_or_default());
        let provenance_json = serde_json::Value::Object(context).to_string();
        let (sinks, sink_task) =
            Sinks::start_within(&opts.sinks, opts.alarm_log, opts.cancel.clone(), opts.budget.clone()).await?;
        let (recorder, record_error) = match opts.record {
            Some((cfg, dir)) => {
                let s = sinks.clone();
                let on_failure: OnFailure =
                    Box::new(move |failure| {
                        s.alarm(Box::new(match failure {
                            Failure::Stopped { why } => crate::alarms::recording_stopped(why),
                            Failure::Series { series, why } => crate::alarms::series_not_recorded(series, why),
                        }))
                    });
                match Recorder::start(&cfg, dir, setup.settings.patch_px, on_failure) {
                    Ok((r, handle)) => (Some((r.within(opts.budget.clone()), handle)), None),
                    Err(e) => {
                        // Without a recorder nothing is recorded; say so, and keep monitoring.
                        let why = format!("cannot start the recorder thread: {e}");
                        tracing::error!("recording off: {why}");
                        (None, Some(why))
                    }
                }
            }
            None => (None, None),
        };
        let stats = Arc::new(Stats::default());
        let panic_at_frame = std::env::var(FAULT_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = panic_at_frame {
            tracing::warn!("{FAULT_ENV}={n}: the analysis will panic at frame {n} (a test hook)");
        }
        let mut consumers: Vec<Box<dyn consumers::Consumer>> = vec![Box::new(sinks.clone())];
        if let Some((r, _)) = &recorder {
            consumers.push(Box::new(r.clone()));
        }
        let view = opts.view.map(|hub| {
            consumers.push(Box::new(hub.clone()));
            let feed = ViewFeed {
                hub,
                stats: stats.clone(),
                sinks: sinks.stats.clone(),
                recorder: recorder.as_ref().map(|(r, _)| r.stats.clone()),
                record_error: record_error.clone(),
            };
            let (f, cancel) = (feed.clone(), opts.cancel.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = every.tick() => f.update(),
                    }
                }
            });
            feed
        });
        let compute = Compute {
            settings: setup.settings,
            engine: setup.engine,
            rules: opts.rules,
            consumers,
            stats: stats.clone(),
            summaries_dir: opts.summaries_dir,
            skip_to_newest: opts.skip_to_newest,
            provenance: provenance.clone(),
            panic_at_frame,
        };
        let (tx, rx) = mpsc::channel::<Work>(opts.queue_frames.max(1));
        let compute = std::thread::Builder::new()
            .name("bw-compute".into())
            .spawn(move || compute.run(rx))
            .map_err(|source| PipelineError::Start { what: "compute thread", source })?;
        Ok(Self {
            tx,
            compute,
            recorder,
            record_error,
            sinks,
            sink_task,
            stats,
            view,
            provenance,
            provenance_json,
            source: opts.source,
            dose: opts.dose,
            open: None,
            budget: opts.budget,
        })
    }

    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The counters, for threads that count beside the pipeline (the 4D pattern workers).
    pub fn shared_stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Where alarms are published (with the real port), if anywhere.
    pub fn alarm_endpoint(&self) -> Option<&str> {
        self.sinks.pub_endpoint.as_deref()
    }

    /// Alarms raised so far.
    pub fn alarms_raised(&self) -> u64 {
        get(&self.sinks.stats.alarms)
    }

    /// The series frames are going to now.
    pub fn open_series(&self) -> Option<&str> {
        self.open.as_ref().map(|o| o.series.as_str())
    }

    /// The recorder's state for a status line: `None` when recording is off.
    pub fn recording_status(&self) -> Option<String> {
        recording_status(self.recorder.as_ref().map(|(r, _)| &*r.stats), self.record_error.as_deref())
    }

    /// A series begins: the recorder opens it, its dose account starts, the analysis is told. A
    /// series still open is closed first (an implicit end).
    pub async fn begin_series(&mut self, info: SeriesInfo, implicit: bool) -> Result<(), ComputeGone> {
        if let Some(prev) = self.open.as_ref().map(|o| o.series.clone()) {
            if !implicit {
                tracing::warn!("series {} started before series {prev} ended; closing the latter", info.series);
            }
            self.end_series(true).await?;
        }
        inc(&self.stats.series_started);
        if let Some((r, _)) = &self.recorder {
            r.start_series(&info.series, info.format, &self.source, self.provenance_json.clone());
        }
        self.open = Some(Open {
            series: info.series.clone(),
            dose: DoseAccount::new(self.dose.clone(), info.dose),
            received: 0,
            dropped: 0,
            reference_sent: false,
            warned_dose: false,
        });
        self.tx.send(Work::Start { info, implicit }).await.map_err(|_| ComputeGone)
    }

    /// Hands a frame in: its dose is accounted (or taken as `recorded`), it is recorded, and it goes
    /// to the analysis — waiting for room if it is its series' reference or `when_full` says so.
    /// A frame of another series than the open one ends that series and begins its own (implicitly).
    pub async fn frame(
        &mut self,
        msg: Box<FrameMsg>,
        recorded: Option<RecordedDose>,
        received: Instant,
        when_full: WhenFull,
    ) -> Result<FrameDose, ComputeGone> {
        if self.open.as_ref().is_none_or(|o| o.series != msg.series) {
            let info = SeriesInfo {
                series: msg.series.clone(),
                format: msg.format,
                frames_expected: None,
                shape: None,
                dtype: Some(msg.frame.dtype()),
                frame_time_s: None,
                dose: DoseHeader::default(),
                scan_hint: None,
            };
            self.begin_series(info, true).await?;
        }
        let Some(open) = self.open.as_mut() else { return Err(ComputeGone) };
        inc(&self.stats.frames_received);
        open.received += 1;
        let mut computed = open.dose.add_frame(&msg.dose);
        if msg.scan.is_some() && computed.beam_current_pa.source == dose::Source::FrameHeader {
            // The scan stage puts a current in a scan frame's header only when it estimated it.
            computed.beam_current_pa.source = dose::Source::EstimatedFromCounts;
        }
        let dose = match recorded {
            Some(r) => recorded_dose(r, computed.upper_estimate),
            None => computed,
        };
        if dose.per_frame_e_per_a2.is_none() && !open.warned_dose {
            open.warned_dose = true;
            tracing::warn!("series {}: dose unknown — missing {}", open.series, dose::missing_inputs(&dose).join(", "));
        }
        if let Some((r, _)) = &self.recorder {
            let received_unix_ns =
                SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            if let Some(scan) = &msg.scan {
                r.scan(&msg.series, scan.clone(), &dose);
            }
            r.frame(
                &msg.series,
                msg.index,
                &msg.frame,
                ReceivedRow { index: msg.index, received_unix_ns, timestamp_ns: msg.timestamp_ns, dose: dose.clone() },
            );
        }
        // The frame's analysis draws from the memory budget: one over its share is never
        // analysable; one that does not fit now is passed over like a frame that finds the queue full.
        let pixels = msg.frame.len();
        if pixels > self.budget.max_frame_pixels() {
            self.budget.refuse(Kind::FrameSize);
            inc(&self.stats.frames_over_budget);
            open.dropped += 1;
            tracing::warn!(
                "series {} frame {}: {}×{} px is over the memory budget's frame limit ({} px for {} MiB, \
                 [limits] memory_mib); not analysed (counted)",
                open.series,
                msg.index,
                msg.frame.width(),
                msg.frame.height(),
                self.budget.max_frame_pixels(),
                self.budget.total_bytes() >> 20
            );
            return Ok(dose);
        }
        let bytes = Budget::frame_bytes(pixels);
        let must_go = !open.reference_sent || when_full == WhenFull::Wait;
        let held = if must_go {
            reserve_waiting(&self.budget, bytes).await
        } else {
            match self.budget.try_reserve(bytes, Kind::AnalysisQueue) {
                Some(r) => r,
                None => {
                    open.dropped += 1;
                    inc(&self.stats.frames_skipped);
                    inc(&self.stats.frames_dropped_budget);
                    return Ok(dose);
                }
            }
        };
        let held = Some(held);
        let work = Work::Frame(FrameWork { msg, dose: dose.clone(), received, held });
        if must_go {
            open.reference_sent = true;
            self.tx.send(work).await.map_err(|_| ComputeGone)?;
        } else {
            match self.tx.try_send(work) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    open.dropped += 1;
                    inc(&self.stats.frames_skipped);
                    inc(&self.stats.frames_dropped_queue_full);
                }
                Err(TrySendError::Closed(_)) => return Err(ComputeGone),
            }
        }
        Ok(dose)
    }

    /// One decoded message (after the [`scans::ScanStage`]) in: a series start, a frame (with its
    /// recorded dose on a session replay) or an end of the open series. `when_full` applies to
    /// ordinary frames; a 4D-STEM scan's frame always waits for room: it stands for a whole scan of
    /// patterns, and its spot intensities make the series' fading history.
    pub async fn hand(
        &mut self,
        m: crate::decode::Message,
        recorded: Option<RecordedDose>,
        received: Instant,
        when_full: WhenFull,
    ) -> Result<Handed, ComputeGone> {
        use crate::decode::Message;
        match m {
            Message::SeriesStart(info) => self.begin_series(info, false).await.map(|_| Handed::Other),
            Message::Frame(f) => {
                let when = if f.scan.is_some() { WhenFull::Wait } else { when_full };
                self.frame(f, recorded, received, when).await.map(Handed::Frame)
            }
            Message::SeriesEnd { series } if self.open_series() == Some(series.as_str()) => {
                self.end_series(false).await.map(|_| Handed::SeriesEnded)
            }
            Message::SeriesEnd { series } => {
                tracing::warn!("end of series {series}, which is not the open series");
                Ok(Handed::Other)
            }
            Message::Ignored(_) => Ok(Handed::Other),
        }
    }

    /// Ends the open series (if any); `implicit`: it ended without an end message.
    pub async fn end_series(&mut self, implicit: bool) -> Result<(), ComputeGone> {
        let Some(o) = self.open.take() else { return Ok(()) };
        let end = Work::End { series: o.series, received: o.received, dropped: o.dropped, implicit };
        self.tx.send(end).await.map_err(|_| ComputeGone)
    }

    /// Closes the open series, lets the analysis finish what is queued, finishes the session files
    /// and flushes the sinks. `Err(AnalysisDied)` carries the report when the analysis died.
    pub async fn finish(mut self) -> Result<PipelineReport, PipelineError> {
        let _ = self.end_series(true).await;
        drop(self.tx);
        let compute = self.compute;
        let died = match tokio::task::spawn_blocking(move || compute.join()).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(why))) => Some(why),
            Ok(Err(_)) | Err(_) => Some("the compute thread ended abnormally".to_string()),
        };
        // The compute thread has ended every series; the recorder finishes its files when its last
        // handle (ours) goes.
        let recording = match self.recorder {
            Some((r, handle)) => {
                let stats = r.stats.clone();
                drop(r);
                if !matches!(tokio::task::spawn_blocking(move || handle.join()).await, Ok(Ok(()))) {
                    tracing::error!("the recorder thread ended abnormally; the session files hold what was flushed");
                }
                Some(RecordingReport {
                    files: stats.files_written.lock().map(|v| v.clone()).unwrap_or_default(),
                    frames_recorded: stats.frames_recorded.load(Relaxed),
                    frames_not_recorded: stats.frames_not_recorded.load(Relaxed),
                    analyses: stats.analyses.load(Relaxed),
                    alarms: stats.alarms.load(Relaxed),
                    failed: stats.failed.load(Relaxed),
                    series_not_recorded: stats.series_not_recorded.load(Relaxed),
                    error: stats.error.lock().ok().and_then(|e| e.clone()),
                })
            }
            None => self.record_error.map(|why| RecordingReport {
                files: Vec::new(),
                frames_recorded: 0,
                frames_not_recorded: 0,
                analyses: 0,
                alarms: 0,
                failed: true,
                series_not_recorded: 0,
                error: Some(why),
            }),
        };
        self.sinks.flush().await;
        if let Some(v) = &self.view {
            // The view's last word on the counters (its status task may already have stopped).
            v.update();
        }
        let s = &self.stats;
        let k = &self.sinks.stats;
        let report = PipelineReport {
            frames_received: get(&s.frames_received),
            frames_analysed: get(&s.frames_analysed),
            frames_skipped: get(&s.frames_skipped),
            frames_dropped_queue_full: get(&s.frames_dropped_queue_full),
            frames_dropped_budget: get(&s.frames_dropped_budget),
            frames_over_budget: get(&s.frames_over_budget),
            analysis_errors: get(&s.analysis_errors),
            frames_not_registered: get(&s.frames_not_registered),
            frames_without_patches: get(&s.frames_without_patches),
            series_started: get(&s.series_started),
            series_ended: get(&s.series_ended),
            scans: s.scan_counters(),
            alarms: get(&k.alarms),
            alarms_published: get(&k.published),
            alarms_logged: get(&k.logged),
            alarm_commands_ok: get(&k.commands_ok),
            alarm_commands_failed: get(&k.commands_failed),
            alarm_commands_dropped: get(&k.commands_dropped),
            alarm_latency_ms: k.latency_ms.lock().ok().and_then(|w| w.percentiles()),
            frame_latency_ms: k.frame_latency_ms.lock().ok().and_then(|w| w.percentiles()),
            analysis_ms: s.analysis_ms.lock().ok().and_then(|w| w.percentiles()),
            provenance: self.provenance,
            alarm_pub_endpoint: self.sinks.pub_endpoint.clone(),
            results_published: self.sinks.pub_stats.as_ref().map(|p| get(&p.sent)),
            results_dropped_slow_subscribers: self.sinks.pub_stats.as_ref().map(|p| get(&p.dropped_slow)),
            results_dropped_queue: self.sinks.pub_stats.as_ref().map(|p| get(&p.dropped_queue)),
            series: s.series.lock().map(|q| q.iter().cloned().collect()).unwrap_or_default(),
            recording,
            analysis_died: died.clone(),
        };
        drop(self.sinks);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink_task).await;
        match died {
            Some(message) => Err(PipelineError::AnalysisDied { message, report: Box::new(report) }),
            None => Ok(report),
        }
    }
}

/// Waits for `bytes` of the budget: a series' reference frame and a replay's frames are never
/// passed over. The frame fits the budget's frame share, and the analysis gives back what it holds
/// as it goes, so the wait ends; sockets and subscribers refused meanwhile are counted as usual.
async fn reserve_waiting(budget: &Arc<Budget>, bytes: u64) -> crate::budget::Reservation {
    let mut pause = Duration::from_millis(1);
    loop {
        // Polled: this frame is not refused, so nothing is counted while it waits.
        if let Some(r) = budget.reserve_quietly(bytes, Kind::AnalysisQueue) {
            return r;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A recorded dose: the values as the session file has them (not re-derived), with the inputs and
/// sources it recorded for them.
fn recorded_dose(r: RecordedDose, upper_estimate: bool) -> FrameDose {
    let missing = dose::Input { value: None, source: dose::Source::Missing };
    let [current, dwell, pixel] = r.inputs.unwrap_or([missing; 3]);
    FrameDose {
        per_frame_e_per_a2: Some(r.per_frame_e_per_a2),
        cumulative_e_per_a2: Some(r.cumulative_e_per_a2),
        beam_current_pa: current,
        dwell_time_us: dwell,
        pixel_size_a: pixel,
        per_frame_from_config: false,
        upper_estimate,
    }
}

/// The recorder's state in a few words: `None` when recording is off.
fn recording_status(recorder: Option<&RecordStats>, record_error: Option<&str>) -> Option<String> {
    if let Some(why) = record_error {
        return Some(format!("recording OFF ({why})"));
    }
    let st = recorder?;
    Some(if st.failed.load(Relaxed) {
        let why = st.error.lock().ok().and_then(|e| e.clone()).unwrap_or_default();
        format!("recording STOPPED {why}").trim_end().to_string()
    } else {
        format!("{} frames recorded ({} flushed)", st.frames_recorded.load(Relaxed), st.frames_flushed.load(Relaxed))
    })
}

/// What the live view's status panel is fed from.
#[derive(Clone)]
struct ViewFeed {
    hub: Hub,
    stats: Arc<Stats>,
    sinks: Arc<crate::alarms::sinks::SinkStats>,
    recorder: Option<Arc<RecordStats>>,
    record_error: Option<String>,
}

impl ViewFeed {
    fn update(&self) {
        let s = &self.stats;
        let recorder = recording_status(self.recorder.as_deref(), self.record_error.as_deref());
        let stopped = self.record_error.is_some() || self.recorder.as_ref().is_some_and(|r| r.failed.load(Relaxed));
        self.hub.set_status(Status {
            frames_received: get(&s.frames_received),
            frames_analysed: get(&s.frames_analysed),
            frames_skipped: get(&s.frames_skipped),
            frames_rejected: get(&s.messages_rejected) + get(&s.analysis_errors),
            frames_not_registered: get(&s.frames_not_registered),
            frames_without_patches: get(&s.frames_without_patches),
            alarms: get(&self.sinks.alarms),
            recorder,
            recorder_stopped: stopped,
            rss_mib: rss_mib().map(|m| (m * 10.0).round() / 10.0),
            cumulative_dose_e_per_a2: self.hub.current_dose(),
            ..Status::default()
        });
    }
}
