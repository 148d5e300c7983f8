//! The live daemon: socket → decode → [`Pipeline`] (dose, recording, analysis, alarms).
//!
//! The receive loop (tokio) never waits on the analysis: a frame that finds the pipeline's queue
//! full is passed over and counted ([`WhenFull::Skip`]); only series boundaries and each series'
//! reference frame wait for room. Every received message is accounted for: decoded into a frame
//! (analysed or skipped), understood and not needed, or rejected with a reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::alarms::Rule;
use crate::budget::{Budget, Kind};
use crate::clock::rfc3339;
use crate::config::Config;
use crate::decode::{DecodeErrorKind, Decoder, Message};
use crate::ingest::bounded_pub::BoundedPub;
use crate::ingest::{IngestError, Receiver};
use crate::pipeline::scans::ScanStage;
use crate::pipeline::stats::get;
use crate::pipeline::{ComputeGone, Handed, Pipeline, PipelineError, PipelineOptions, PipelineReport, WhenFull};
use crate::report::provenance::Provenance;
use crate::telemetry::rss_mib;
use crate::view::{Hub, HubMeta, ViewServer};

/// What the daemon reports when it stops (also `daemon_report.json`): what it received, and what
/// the pipeline made of it.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonReport {
    pub started: String,
    pub stopped: String,
    pub ingest: String,
    pub messages: u64,
    pub decode_errors: BTreeMap<DecodeErrorKind, u64>,
    pub ignored_messages: u64,
    pub guard_connections: u64,
    pub guard_rejected: u64,
    /// Peers closed on arrival because the guard's socket had its cap of peers.
    pub guard_peers_refused: u64,
    /// Accept errors (e.g. out of file descriptors), retried with a pause.
    pub guard_accept_errors: u64,
    /// Times the peer went away and the socket was rebuilt and reconnected.
    pub reconnects: u64,
    pub republished: Option<u64>,
    pub republish_dropped: Option<u64>,
    /// `[limits] memory_mib`: what the queues and buffers below may hold together.
    pub memory_budget_mib: f64,
    /// The most they held at once.
    pub budget_peak_mib: f64,
    /// What did not fit, by what it was for (messages, frames, subscriber messages), dropped whole.
    pub budget_refused: BTreeMap<Kind, u64>,
    pub rss_start_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    /// The live view's address, when it was served.
    pub view_url: Option<String>,
    #[serde(flatten)]
    pub pipeline: PipelineReport,
}

/// What the receive side counts itself (the pipeline counts frames).
#[derive(Default)]
struct Received {
    messages: u64,
    ignored: u64,
    decode_errors: BTreeMap<DecodeErrorKind, u64>,
}

impl Received {
    fn rejected(&self) -> u64 {
        self.decode_errors.values().sum()
    }
}

/// What a caller may hand the daemon besides its configuration.
#[derive(Default)]
pub struct Hooks {
    /// Receives the alarm PUB endpoint once the sockets are up.
    pub ready: Option<tokio::sync::oneshot::Sender<String>>,
    /// Keep the live view after the daemon stops, until this token fires (`demo --view`): the
    /// server is handed back with the report. `None`: the view stops with the daemon.
    pub keep_view: Option<CancellationToken>,
}

/// Runs the daemon until `cancel` fires, the configured number of series has ended, or the analysis
/// dies. `ready` receives the alarm PUB endpoint once the sockets are up.
pub async fn run(
    cfg: Config,
    rules: Vec<Rule>,
    cancel: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<String>>,
) -> Result<DaemonReport, Error> {
    run_with(cfg, rules, cancel, Hooks { ready, keep_view: None }).await.map(|(report, _)| report)
}

/// Starts the view `cfg` asks for; a view that cannot start is logged and left off (monitoring
/// matters more than the page).
pub async fn start_view(cfg: &Config, meta: HubMeta, cancel: CancellationToken) -> Option<(Hub, ViewServer)> {
    if !cfg.view.enabled {
        return None;
    }
    let hub = Hub::new(meta, cfg.view.event_buffer);
    match crate::view::serve(hub.clone(), &cfg.view, cancel).await {
        Ok(server) => {
            match &server.token {
                Some(_) => tracing::warn!(
                    "live view on {} for other computers too: open {} (the token is needed)",
                    server.addr,
                    server.url
                ),
                None => tracing::info!("live view: {}", server.url),
            }
            Some((hub, server))
        }
        Err(e) => {
            tracing::error!("{e}; monitoring goes on without the live view (set [view] bind, or enabled = false)");
            None
        }
    }
}

/// [`run`] with the caller's [`Hooks`]; the view server comes back when `keep_view` asked for it.
pub async fn run_with(
    cfg: Config,
    rules: Vec<Rule>,
    cancel: CancellationToken,
    hooks: Hooks,
) -> Result<(DaemonReport, Option<ViewServer>), Error> {
    let Hooks { ready, keep_view } = hooks;
    let started = SystemTime::now();
    let rss_start = rss_mib();
    // Our own listeners (guard, re-publisher, PUB sockets) stop with the caller's token or when
    // this function returns, whichever comes first.
    let internal = cancel.child_token();
    let _stop_on_return = internal.clone().drop_guard();
    let out = cfg.pipeline.out_dir.clone();
    crate::report::ensure_dir(&out)?;
    let setup = crate::damage::setup::prepare(&cfg.analysis)?;
    let source = format!("live {}", cfg.ingest.endpoint);
    let provenance = Provenance::new(&setup.settings, setup.weights.as_ref(), setup.choice.clone());
    let meta = HubMeta::of(&provenance, &source, true, &setup.backend_name());
    let view_stop = keep_view.clone().unwrap_or_else(|| internal.clone());
    let view = start_view(&cfg, meta, view_stop).await;
    let mut context = serde_json::Map::new();
    context.insert("config".into(), serde_json::to_value(&cfg).unwrap_or_default());
    let hub = view.as_ref().map(|(hub, _)| hub.clone());
    let mut rows_view = RowsToView::new(hub.clone());
    let budget = Budget::from_config(&cfg.limits);
    tracing::info!(
        "memory budget {} MiB: frames up to {} px, messages up to {} MiB in flight",
        cfg.limits.memory_mib,
        budget.max_frame_pixels(),
        budget.max_message_bytes() >> 20
    );
    let mut pipeline = Pipeline::start(PipelineOptions::from_config(
        &cfg,
        setup,
        rules,
        source,
        context,
        internal.clone(),
        hub,
        budget.clone(),
    ))
    .await?;
    let republisher = match cfg.pipeline.republish.as_deref().filter(|r| !r.is_empty()) {
        Some(ep) => {
            let allowance = (cfg.pipeline.republish_buffer_mib * 1024.0 * 1024.0) as u64;
            let r = BoundedPub::start(ep, allowance, budget.clone(), Kind::Republish, internal.clone()).await?;
            tracing::info!("re-publishing every received message on {}", r.endpoint);
            Some(r)
        }
        None => None,
    };
    let mut receiver = Receiver::open(&cfg.ingest, internal.clone(), budget.clone()).await?;
    tracing::info!(
        "beamwatch daemon: {}; metric {}; alarms on {}",
        receiver.describe,
        pipeline.provenance().metric_choice,
        pipeline.alarm_endpoint().unwrap_or("(no PUB socket)")
    );
    if let Some(r) = ready {
        let _ = r.send(pipeline.alarm_endpoint().unwrap_or_default().to_string());
    }
    let mut decoder =
        Decoder::new(cfg.ingest.format, cfg.ingest.channel.clone(), cfg.analysis.mask_gaps).within(&budget);
    // In 4D-STEM mode the patterns go to the pattern workers undecoded; their scans come back
    // through `scans.drain` (woken by `wake`).
    let mut scans = ScanStage::pooled(&cfg, budget.clone(), pipeline.shared_stats());
    let wake = scans.wake();
    let mut got = Received::default();
    let status_every = Duration::from_secs_f64(cfg.pipeline.status_interval_s.max(0.0));
    let mut next_status = Instant::now() + status_every;
    let mut series_done = 0u64;
    'receive: loop {
        let msg = tokio::select! {
            m = receiver.recv() => m,
            _ = cancel.cancelled() => break 'receive,
            _ = woken(&wake) => {
                let out = scans.drain(pipeline.stats());
                count_worker_errors(&mut scans, &mut got, &pipeline);
                rows_view.add(scans.take_rows());
                if hand_all(&mut pipeline, &mut scans, out, Instant::now(), &cfg, &mut series_done).await.is_break() {
                    break 'receive;
                }
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(rows_view.wait_ms())) => {
                rows_view.flush_due();
                status_line(&pipeline, &got, status_every, &mut next_status);
                continue;
            }
        };
        status_line(&pipeline, &got, status_every, &mut next_status);
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
        got.messages += 1;
        let n = got.messages;
        let mut parts: Vec<Bytes> = msg.into_vec();
        if let Some(r) = &republisher {
            r.send(parts.clone());
        }
        let peeked = {
            let refs: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
            scans.wake().and_then(|_| decoder.peek_image(&refs))
        };
        if let Some((series, index)) = peeked {
            match scans.route_raw(&series, index, parts, pipeline.stats()) {
                Ok(()) => continue 'receive,
                Err(back) => parts = back,
            }
        }
        let refs: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
        let decoded = match decoder.decode(&refs) {
            Err(e) => {
                if e.kind == DecodeErrorKind::OverBudget {
                    budget.refuse(Kind::FrameSize);
                }
                *got.decode_errors.entry(e.kind).or_default() += 1;
                crate::pipeline::stats::inc(&pipeline.stats().messages_rejected);
                tracing::warn!(
                    "message {n} rejected ({} parts, {} bytes): {e}",
                    parts.len(),
                    parts.iter().map(Bytes::len).sum::<usize>()
                );
                continue 'receive;
            }
            Ok(Message::Ignored(what)) => {
                got.ignored += 1;
                tracing::debug!("message {n}: {what} (not needed)");
                continue 'receive;
            }
            Ok(m) => m,
        };
        // In 4D-STEM mode the patterns become one frame per scan here; otherwise unchanged.
        let mut out = scans.process_live(decoded, &decoder, pipeline.stats());
        out.extend(scans.drain(pipeline.stats()));
        count_worker_errors(&mut scans, &mut got, &pipeline);
        rows_view.add(scans.take_rows());
        if hand_all(&mut pipeline, &mut scans, out, received, &cfg, &mut series_done).await.is_break() {
            break 'receive;
        }
    }

    // The scan being filled when the source stops comes out (incomplete) before the pipeline ends.
    for m in scans.finish(pipeline.stats()) {
        let received = scans.received_at(&m).unwrap_or_else(Instant::now);
        if pipeline.hand(m, None, received, WhenFull::Skip).await.is_err() {
            break;
        }
    }
    count_worker_errors(&mut scans, &mut got, &pipeline);
    let finished = pipeline.finish().await;
    let (pipeline_report, died) = match finished {
        Ok(r) => (r, None),
        Err(PipelineError::AnalysisDied { message, report }) => (*report, Some(message)),
        Err(e) => return Err(e.into()),
    };
    let report = DaemonReport {
        started: rfc3339(started),
        stopped: rfc3339(SystemTime::now()),
        ingest: receiver.describe.clone(),
        messages: got.messages,
        decode_errors: got.decode_errors.clone(),
        ignored_messages: got.ignored,
        guard_connections: get(&receiver.guard.connections),
        guard_rejected: get(&receiver.guard.rejected),
        guard_peers_refused: get(&receiver.guard.accept.peers_refused),
        guard_accept_errors: get(&receiver.guard.accept.accept_errors),
        reconnects: receiver.reconnects,
        republished: republisher.as_ref().map(|r| get(&r.stats.sent)),
        republish_dropped: republisher.as_ref().map(|r| get(&r.stats.dropped_queue) + get(&r.stats.dropped_slow)),
        memory_budget_mib: cfg.limits.memory_mib,
        budget_peak_mib: (budget.peak_bytes() as f64 / 1048576.0 * 10.0).round() / 10.0,
        budget_refused: budget.refused(),
        rss_start_mib: rss_start,
        rss_end_mib: rss_mib(),
        view_url: view.as_ref().map(|(_, server)| server.url.clone()),
        pipeline: pipeline_report,
    };
    let view = match view {
        Some((_, server)) if keep_view.is_some() => Some(server),
        Some((_, server)) => {
            server.stop().await;
            None
        }
        None => None,
    };
    let path = out.join("daemon_report.json");
    match serde_json::to_vec_pretty(&report) {
        Ok(b) => crate::report::write_atomic(&path, &b)?,
        Err(e) => tracing::error!("daemon report not serialised: {e}"),
    }
    let p = &report.pipeline;
    tracing::info!(
        "stopped: {} messages, {} frames received, {} analysed, {} skipped, {} decode errors, {} analysis errors, {} alarms",
        report.messages,
        p.frames_received,
        p.frames_analysed,
        p.frames_skipped,
        got.rejected(),
        p.analysis_errors,
        p.alarms
    );
    match died {
        Some(message) => Err(PipelineError::AnalysisDied { message, report: Box::new(report.pipeline) }.into()),
        None => Ok((report, view)),
    }
}

/// The live view's rows of the scan being filled: collected as the workers fill them, sent at most
/// ten times a second (`scan_rows` events), so a fast scan does not flood the page.
struct RowsToView {
    hub: Option<crate::view::Hub>,
    pending: Vec<crate::pipeline::scans::ScanRows>,
    last_sent: Instant,
}

impl RowsToView {
    const EVERY: Duration = Duration::from_millis(100);

    fn new(hub: Option<crate::view::Hub>) -> Self {
        Self { hub, pending: Vec::new(), last_sent: Instant::now() - Self::EVERY }
    }

    fn add(&mut self, rows: Vec<crate::pipeline::scans::ScanRows>) {
        if self.hub.is_none() {
            return;
        }
        self.pending.extend(rows.into_iter().filter(|r| !r.values.is_empty()));
        self.flush_due();
    }

    /// How long the receive loop may wait for a message before rows are due (status: 500 ms).
    fn wait_ms(&self) -> u64 {
        if self.pending.is_empty() { 500 } else { 100 }
    }

    fn flush_due(&mut self) {
        let Some(hub) = &self.hub else { return };
        if self.pending.is_empty() || self.last_sent.elapsed() < Self::EVERY {
            return;
        }
        self.last_sent = Instant::now();
        // One event per scan: its blocks of rows in the order they were filled.
        let mut by_scan: Vec<(String, u64, usize, String, Vec<serde_json::Value>)> = Vec::new();
        for r in self.pending.drain(..) {
            let block = serde_json::json!({"row": r.rows.start, "rows": r.rows.len(), "values": r.values});
            match by_scan.last_mut() {
                Some(last) if last.0 == r.series && last.1 == r.scan => last.4.push(block),
                _ => by_scan.push((r.series, r.scan, r.cols, r.detector, vec![block])),
            }
        }
        for (series, scan, cols, detector, blocks) in by_scan {
            hub.scan_rows(&serde_json::json!({
                "series": series, "scan": scan, "cols": cols, "detector": detector, "blocks": blocks,
            }));
        }
    }
}

/// Resolves when the pattern workers have results (never without workers).
async fn woken(wake: &Option<std::sync::Arc<tokio::sync::Notify>>) {
    match wake {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Patterns the workers could not decode count as the receive loop's decode errors.
fn count_worker_errors(scans: &mut ScanStage, got: &mut Received, pipeline: &Pipeline) {
    for e in scans.take_decode_errors() {
        *got.decode_errors.entry(e.kind).or_default() += 1;
        crate::pipeline::stats::inc(&pipeline.stats().messages_rejected);
        tracing::warn!("4D pattern rejected: {e}");
    }
}

/// Hands messages to the pipeline in order; `Break` when the daemon should stop (the configured
/// number of series is done, or the compute thread is gone).
async fn hand_all(
    pipeline: &mut Pipeline,
    scans: &mut ScanStage,
    msgs: Vec<Message>,
    received: Instant,
    cfg: &Config,
    series_done: &mut u64,
) -> std::ops::ControlFlow<()> {
    for m in msgs {
        // A scan's frame was received, for the latencies, when its last pattern was.
        let received = scans.received_at(&m).unwrap_or(received);
        match pipeline.hand(m, None, received, WhenFull::Skip).await {
            Ok(Handed::SeriesEnded) => {
                *series_done += 1;
                if cfg.pipeline.max_series > 0 && *series_done >= cfg.pipeline.max_series {
                    tracing::info!("{series_done} series done: stopping as configured");
                    return std::ops::ControlFlow::Break(());
                }
            }
            Ok(_) => {}
            Err(ComputeGone) => {
                tracing::error!("the compute thread stopped; shutting down");
                return std::ops::ControlFlow::Break(());
            }
        }
    }
    std::ops::ControlFlow::Continue(())
}

fn status_line(pipeline: &Pipeline, got: &Received, every: Duration, next: &mut Instant) {
    if every.is_zero() || Instant::now() < *next {
        return;
    }
    *next = Instant::now() + every;
    let s = pipeline.stats();
    tracing::info!(
        "status: {} frames received, {} analysed, {} skipped, {} rejected, {} alarms{}, RSS {} MiB",
        get(&s.frames_received),
        get(&s.frames_analysed),
        get(&s.frames_skipped),
        got.rejected() + get(&s.analysis_errors),
        pipeline.alarms_raised(),
        pipeline.recording_status().map(|r| format!(", {r}")).unwrap_or_default(),
        rss_mib().map_or("?".into(), |m| format!("{m:.0}"))
    );
}

/// Waits for SIGINT or SIGTERM and cancels `cancel`.
pub async fn stop_on_signal(cancel: CancellationToken) {
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
    cancel.cancel();
}
