//! The live daemon: socket → decode → dose → bounded channel → compute thread → alarms.
//!
//! The receive loop (tokio) never waits on the analysis: frames go into a bounded crossbeam channel
//! and, when it is full, a frame is passed over and counted. Only series boundaries and each
//! series' reference frame wait for room (the compute thread drains the channel whenever it takes
//! work, so that wait is at most one frame's analysis). Every received frame is accounted for:
//! analysed, skipped, or rejected with a reason.
//!
//! - [`compute`]: the analysis thread and series summaries.
//! - [`stats`]: counters and percentiles.

pub mod compute;
pub mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use serde::Serialize;
use tokio::sync::watch;

use crate::Error;
use crate::alarms::sinks::Sinks;
use crate::alarms::{Rule, rfc3339};
use crate::commands::setup;
use crate::config::Config;
use crate::decode::{DecodeErrorKind, Decoder, DoseHeader, Message, SeriesInfo};
use crate::dose::{self, DoseAccount};
use crate::ingest::bounded_pub::BoundedPub;
use crate::ingest::{IngestError, Receiver};
use crate::record::recorder::Recorder;
use crate::record::session::ReceivedRow;
use crate::report::provenance::Provenance;
use compute::{Compute, FrameWork, Work};
use stats::{Percentiles, Stats, get, inc};

/// What the daemon reports when it stops (also `daemon_report.json`).
#[derive(Clone, Debug, Serialize)]
pub struct DaemonReport {
    pub started: String,
    pub stopped: String,
    pub ingest: String,
    pub messages: u64,
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    pub frames_dropped_queue_full: u64,
    pub analysis_errors: u64,
    pub decode_errors: std::collections::BTreeMap<DecodeErrorKind, u64>,
    pub ignored_messages: u64,
    pub series_started: u64,
    pub series_ended: u64,
    pub guard_connections: u64,
    pub guard_rejected: u64,
    /// Times the peer went away and the socket was rebuilt and reconnected.
    pub reconnects: u64,
    pub republished: Option<u64>,
    pub republish_dropped: Option<u64>,
    pub alarms: u64,
    pub alarms_published: u64,
    pub alarms_logged: u64,
    pub alarm_commands_ok: u64,
    pub alarm_commands_failed: u64,
    /// Frame received → alarm published (ms).
    pub alarm_latency_ms: Option<Percentiles>,
    /// Frame received → the frame's result published (ms), recent window.
    pub frame_latency_ms: Option<Percentiles>,
    /// Per analysed frame (ms), recent window.
    pub analysis_ms: Option<Percentiles>,
    pub rss_start_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    pub provenance: Provenance,
    /// Where alarms are published (with the real port).
    pub alarm_pub_endpoint: Option<String>,
    /// The most recent series (at most 64), in brief.
    pub series: Vec<stats::SeriesBrief>,
    pub recording: Option<RecordingReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecordingReport {
    pub files: Vec<std::path::PathBuf>,
    pub frames_recorded: u64,
    /// Frames whose pixels were not stored because the disk fell behind (their dose was).
    pub frames_not_recorded: u64,
    pub analyses: u64,
    pub alarms: u64,
    pub failed: bool,
    pub error: Option<String>,
}

/// The series the receive side is in.
struct Ingested {
    series: String,
    dose: DoseAccount,
    received: u64,
    dropped: u64,
    reference_sent: bool,
    warned_dose: bool,
}

/// Hands work to the compute thread, waiting (asynchronously) for room: series boundaries and
/// reference frames only. `false` if the compute thread is gone.
async fn send_waiting(tx: &Sender<Work>, mut w: Work) -> bool {
    loop {
        match tx.try_send(w) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) => {
                w = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// Runs the daemon until `shutdown` turns true, the configured number of series has ended, or the
/// compute thread fails. `ready` receives the alarm PUB endpoint once the sockets are up.
pub async fn run(
    cfg: Config,
    rules: Vec<Rule>,
    mut shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<String>>,
) -> Result<DaemonReport, Error> {
    let started = SystemTime::now();
    let rss_start = stats::rss_mib();
    // Our own listeners (guard, re-publisher) stop with the external signal or when run returns.
    let (internal_tx, internal_rx) = watch::channel(false);
    let _stop_on_return = StopOnDrop(internal_tx.clone());
    {
        let (mut outer, tx) = (shutdown.clone(), internal_tx.clone());
        tokio::spawn(async move {
            if outer.changed().await.is_ok() {
                let _ = tx.send(true);
            }
        });
    }
    let out = cfg.pipeline.out_dir.clone();
    crate::report::ensure_dir(&out)?;
    let setup = setup::prepare(&cfg.analysis)?;
    let provenance = Provenance::new(&setup.settings, setup.weights.as_ref(), setup.choice.clone());
    let (sinks, sink_task) = Sinks::start(&cfg.sinks, out.join("alarms.jsonl"), internal_rx.clone())
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    let republisher = match cfg.pipeline.republish.as_deref().filter(|r| !r.is_empty()) {
        Some(ep) => {
            let budget = (cfg.pipeline.republish_buffer_mib * 1024.0 * 1024.0) as u64;
            let r =
                BoundedPub::start(ep, budget, internal_rx.clone()).await.map_err(|e| Error::Usage(e.to_string()))?;
            tracing::info!("re-publishing every received message on {}", r.endpoint);
            Some(r)
        }
        None => None,
    };
    let stats = Arc::new(Stats::default());
    let provenance_json = serde_json::json!({"provenance": &provenance, "config": &cfg}).to_string();
    let (recorder, recorder_thread) = if cfg.record.enabled {
        let dir = cfg.record.dir.clone().unwrap_or_else(|| out.join("sessions"));
        let s = sinks.clone();
        let on_failure: crate::record::recorder::OnFailure =
            Box::new(move |why| s.alarm(Box::new(crate::alarms::recording_stopped(why))));
        let (r, h) = Recorder::start(&cfg.record, dir, setup.settings.patch_px, on_failure);
        (Some(r), Some(h))
    } else {
        (None, None)
    };
    let (tx, rx) = crossbeam_channel::bounded::<Work>(cfg.pipeline.queue_frames);
    let compute = Compute {
        recorder: recorder.clone(),
        settings: setup.settings.clone(),
        engine: setup.engine.clone(),
        rules,
        sinks: sinks.clone(),
        stats: stats.clone(),
        out_dir: out.clone(),
        skip_to_newest: cfg.pipeline.skip_to_newest,
        provenance: provenance.clone(),
    };
    let compute_thread = std::thread::Builder::new()
        .name("bw-compute".into())
        .spawn(move || compute.run(rx))
        .map_err(|e| Error::Usage(format!("cannot start the compute thread: {e}")))?;

    let mut receiver =
        Receiver::open(&cfg.ingest, internal_rx.clone()).await.map_err(|e| Error::Usage(e.to_string()))?;
    tracing::info!(
        "beamwatch daemon: {}; metric {}; alarms on {}",
        receiver.describe,
        provenance.metric_choice,
        sinks.pub_endpoint.as_deref().unwrap_or("(no PUB socket)")
    );
    if let Some(r) = ready {
        let _ = r.send(sinks.pub_endpoint.clone().unwrap_or_default());
    }
    let mut decoder = Decoder::new(cfg.ingest.format, cfg.ingest.channel.clone(), cfg.analysis.mask_gaps);
    let mut current: Option<Ingested> = None;
    let status_every = Duration::from_secs_f64(cfg.pipeline.status_interval_s.max(0.0));
    let mut next_status = Instant::now() + status_every;
    let mut series_done = 0u64;
    let mut compute_alive = true;
    'receive: loop {
        let msg = tokio::select! {
            m = receiver.recv() => m,
            _ = shutdown.changed() => break 'receive,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                status_line(&stats, status_every, &mut next_status, &sinks, recorder.as_ref());
                continue;
            }
        };
        status_line(&stats, status_every, &mut next_status, &sinks, recorder.as_ref());
        let msg = match msg {
            Ok(m) => m,
            Err(IngestError::Stopped(_)) => break 'receive,
            Err(e) => {
                tracing::error!("receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let received = Instant::now();
        inc(&stats.messages);
        let parts: Vec<Bytes> = msg.into_vec();
        if let Some(r) = &republisher {
            r.send(parts.clone());
        }
        let refs: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
        let n = get(&stats.messages);
        match decoder.decode(&refs) {
            Err(e) => {
                stats.decode_error(e.kind);
                tracing::warn!(
                    "message {n} rejected ({} parts, {} bytes): {e}",
                    parts.len(),
                    parts.iter().map(Bytes::len).sum::<usize>()
                );
            }
            Ok(Message::Ignored(what)) => {
                inc(&stats.ignored_messages);
                tracing::debug!("message {n}: {what} (not needed)");
            }
            Ok(Message::SeriesStart(info)) => {
                if let Some(prev) = current.take() {
                    tracing::warn!(
                        "series {} started before series {} ended; closing the latter",
                        info.series,
                        prev.series
                    );
                    compute_alive &= end_series(&tx, prev, true).await;
                }
                let (ing, alive) =
                    begin_series(info, false, &cfg, recorder.as_ref(), &provenance_json, &tx, &stats).await;
                current = Some(ing);
                compute_alive &= alive;
            }
            Ok(Message::Frame(f)) => {
                if current.as_ref().is_none_or(|c| c.series != f.series) {
                    if let Some(prev) = current.take() {
                        compute_alive &= end_series(&tx, prev, true).await;
                    }
                    let info = SeriesInfo {
                        series: f.series.clone(),
                        format: f.format,
                        frames_expected: None,
                        shape: None,
                        dtype: Some(f.frame.dtype()),
                        frame_time_s: None,
                        dose: DoseHeader::default(),
                    };
                    let (ing, alive) =
                        begin_series(info, true, &cfg, recorder.as_ref(), &provenance_json, &tx, &stats).await;
                    current = Some(ing);
                    compute_alive &= alive;
                }
                let Some(c) = current.as_mut() else { continue };
                inc(&stats.frames_received);
                c.received += 1;
                let d = c.dose.add_frame(&f.dose);
                if d.per_frame_e_per_a2.is_none() && !c.warned_dose {
                    c.warned_dose = true;
                    tracing::warn!(
                        "series {}: dose unknown — missing {}",
                        c.series,
                        dose::missing_inputs(&d).join(", ")
                    );
                }
                if let Some(r) = &recorder {
                    let received_unix_ns =
                        SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                    r.frame(
                        &f.series,
                        f.index,
                        &f.frame,
                        ReceivedRow { index: f.index, received_unix_ns, timestamp_ns: f.timestamp_ns, dose: d.clone() },
                    );
                }
                let work = Work::Frame(FrameWork { msg: f, dose: d, received });
                if !c.reference_sent {
                    c.reference_sent = true;
                    compute_alive &= send_waiting(&tx, work).await;
                } else {
                    match tx.try_send(work) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            c.dropped += 1;
                            inc(&stats.frames_skipped);
                            inc(&stats.frames_dropped_queue_full);
                        }
                        Err(TrySendError::Disconnected(_)) => compute_alive = false,
                    }
                }
            }
            Ok(Message::SeriesEnd { series }) => match current.take() {
                Some(c) if c.series == series => {
                    compute_alive &= end_series(&tx, c, false).await;
                    series_done += 1;
                    if cfg.pipeline.max_series > 0 && series_done >= cfg.pipeline.max_series {
                        tracing::info!("{series_done} series done: stopping as configured");
                        break 'receive;
                    }
                }
                other => {
                    tracing::warn!("end of series {series}, which is not the open series");
                    current = other;
                }
            },
        }
        if !compute_alive {
            tracing::error!("the compute thread stopped; shutting down");
            break 'receive;
        }
    }

    // Shutdown: close the open series, let the compute thread finish what is queued, flush sinks.
    if let Some(c) = current.take() {
        end_series(&tx, c, true).await;
    }
    send_waiting(&tx, Work::Stop).await;
    drop(tx);
    let joined = tokio::task::spawn_blocking(move || compute_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("the compute thread ended abnormally");
    }
    // The compute thread has sent every series end; the recorder finishes its files and stops.
    if let (Some(r), Some(h)) = (&recorder, recorder_thread) {
        r.stop();
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    sinks.flush().await;
    let report = DaemonReport {
        started: rfc3339(started),
        stopped: rfc3339(SystemTime::now()),
        ingest: receiver.describe.clone(),
        messages: get(&stats.messages),
        frames_received: get(&stats.frames_received),
        frames_analysed: get(&stats.frames_analysed),
        frames_skipped: get(&stats.frames_skipped),
        frames_dropped_queue_full: get(&stats.frames_dropped_queue_full),
        analysis_errors: get(&stats.analysis_errors),
        decode_errors: stats.decode_errors.lock().map(|m| m.clone()).unwrap_or_default(),
        ignored_messages: get(&stats.ignored_messages),
        series_started: get(&stats.series_started),
        series_ended: get(&stats.series_ended),
        guard_connections: get(&receiver.guard.connections),
        guard_rejected: get(&receiver.guard.rejected),
        reconnects: receiver.reconnects,
        republished: republisher.as_ref().map(|r| get(&r.stats.sent)),
        republish_dropped: republisher.as_ref().map(|r| get(&r.stats.dropped_queue) + get(&r.stats.dropped_slow)),
        alarms: get(&sinks.stats.alarms),
        alarms_published: get(&sinks.stats.published),
        alarms_logged: get(&sinks.stats.logged),
        alarm_commands_ok: get(&sinks.stats.commands_ok),
        alarm_commands_failed: get(&sinks.stats.commands_failed),
        alarm_latency_ms: sinks.stats.latency_ms.lock().ok().and_then(|l| stats::percentiles(&l)),
        frame_latency_ms: sinks.stats.frame_latency_ms.lock().ok().and_then(|w| w.percentiles()),
        analysis_ms: stats.analysis_ms.lock().ok().and_then(|w| w.percentiles()),
        rss_start_mib: rss_start,
        rss_end_mib: stats::rss_mib(),
        provenance,
        alarm_pub_endpoint: sinks.pub_endpoint.clone(),
        series: stats.series.lock().map(|q| q.iter().cloned().collect()).unwrap_or_default(),
        recording: recorder.as_ref().map(|r| {
            use std::sync::atomic::Ordering::Relaxed;
            let st = &r.stats;
            RecordingReport {
                files: st.files_written.lock().map(|v| v.clone()).unwrap_or_default(),
                frames_recorded: st.frames_recorded.load(Relaxed),
                frames_not_recorded: st.frames_not_recorded.load(Relaxed),
                analyses: st.analyses.load(Relaxed),
                alarms: st.alarms.load(Relaxed),
                failed: st.failed.load(Relaxed),
                error: st.error.lock().ok().and_then(|e| e.clone()),
            }
        }),
    };
    drop(sinks);
    let _ = tokio::time::timeout(Duration::from_secs(2), sink_task).await;
    let path = out.join("daemon_report.json");
    match serde_json::to_vec_pretty(&report) {
        Ok(b) => crate::report::write_atomic(&path, &b)?,
        Err(e) => tracing::error!("daemon report not serialised: {e}"),
    }
    tracing::info!(
        "stopped: {} messages, {} frames received, {} analysed, {} skipped, {} decode errors, {} analysis errors, {} alarms",
        report.messages,
        report.frames_received,
        report.frames_analysed,
        report.frames_skipped,
        stats.decode_errors_total(),
        report.analysis_errors,
        report.alarms
    );
    Ok(report)
}

/// Sends `true` when dropped.
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A series begins: the recorder opens it, the dose account starts, the compute thread is told.
async fn begin_series(
    info: SeriesInfo,
    implicit: bool,
    cfg: &Config,
    recorder: Option<&Recorder>,
    provenance_json: &str,
    tx: &Sender<Work>,
    stats: &Stats,
) -> (Ingested, bool) {
    inc(&stats.series_started);
    if let Some(r) = recorder {
        r.start_series(
            &info.series,
            info.format,
            &format!("live {}", cfg.ingest.endpoint),
            provenance_json.to_string(),
        );
    }
    let ing = Ingested {
        series: info.series.clone(),
        dose: DoseAccount::new(cfg.dose.clone(), info.dose),
        received: 0,
        dropped: 0,
        reference_sent: false,
        warned_dose: false,
    };
    (ing, send_waiting(tx, Work::Start { info, implicit }).await)
}

async fn end_series(tx: &Sender<Work>, c: Ingested, implicit: bool) -> bool {
    send_waiting(tx, Work::End { series: c.series, received: c.received, dropped: c.dropped, implicit }).await
}

fn status_line(stats: &Stats, every: Duration, next: &mut Instant, sinks: &Sinks, recorder: Option<&Recorder>) {
    if every.is_zero() || Instant::now() < *next {
        return;
    }
    *next = Instant::now() + every;
    let rec = recorder.map_or(String::new(), |r| {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &r.stats;
        if st.failed.load(Relaxed) {
            ", recording STOPPED".to_string()
        } else {
            format!(
                ", {} frames recorded ({} flushed)",
                st.frames_recorded.load(Relaxed),
                st.frames_flushed.load(Relaxed)
            )
        }
    });
    tracing::info!(
        "status: {} frames received, {} analysed, {} skipped, {} rejected, {} alarms{rec}, RSS {} MiB",
        get(&stats.frames_received),
        get(&stats.frames_analysed),
        get(&stats.frames_skipped),
        stats.decode_errors_total() + get(&stats.analysis_errors),
        get(&sinks.stats.alarms),
        stats::rss_mib().map_or("?".into(), |m| format!("{m:.0}"))
    );
}

/// Waits for SIGINT or SIGTERM and turns `tx` true.
pub async fn stop_on_signal(tx: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = tx.send(true);
}
