//! Where alarms go: a ZeroMQ PUB socket (JSON, topic `beamwatch.alarm`), an append-only JSON-lines
//! log flushed on every line, and an optional command run with the alarm JSON on stdin (e.g. to blank
//! the beam). One task owns all three; the analysis hands it alarms through a bounded queue and
//! never waits for it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ingest::bounded_pub::BoundedPub;
use crate::telemetry::Window;

use super::{Alarm, Clear};

/// Topic frame of every alarm published on the PUB socket.
pub const ALARM_TOPIC: &[u8] = b"beamwatch.alarm";
/// Topic frame of per-series summaries.
pub const SUMMARY_TOPIC: &[u8] = b"beamwatch.summary";
/// Topic frame of every analysed frame's result (summary and dissimilarity grid).
pub const FRAME_TOPIC: &[u8] = b"beamwatch.frame";

fn default_pub() -> Option<String> {
    Some("tcp://127.0.0.1:5557".into())
}
fn default_timeout() -> f64 {
    10.0
}

/// `[sinks]` configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// PUB endpoint for alarms (bound; loopback by default). Omit or "" to disable.
    #[serde(default = "default_pub")]
    pub pub_endpoint: Option<String>,
    /// Alarm log (JSON lines, appended). Default: `alarms.jsonl` in the output directory.
    #[serde(default)]
    pub log: Option<PathBuf>,
    /// Command run for every alarm, as an argument list (no shell); the alarm JSON is its stdin.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default = "default_timeout")]
    pub command_timeout_s: f64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self { pub_endpoint: default_pub(), log: None, command: None, command_timeout_s: default_timeout() }
    }
}

/// Counters and latencies, read by the daemon's status and summary.
pub struct SinkStats {
    pub alarms: AtomicU64,
    /// Alarms handed to the PUB socket (summaries are published too but not counted here).
    pub published: AtomicU64,
    pub logged: AtomicU64,
    pub log_errors: AtomicU64,
    pub commands_ok: AtomicU64,
    /// Commands that could not start, failed, or were killed at their timeout.
    pub commands_failed: AtomicU64,
    /// Commands not run because [`COMMAND_QUEUE`] commands were already waiting.
    pub commands_dropped: AtomicU64,
    pub dropped: AtomicU64,
    /// Frame received → alarm published, in milliseconds (recent window).
    pub latency_ms: std::sync::Mutex<Window>,
    /// Frame received → frame result published, in milliseconds (recent window).
    pub frame_latency_ms: std::sync::Mutex<Window>,
    /// Frame results not published because the queue was full (results are best effort).
    pub frames_dropped: AtomicU64,
}

impl Default for SinkStats {
    fn default() -> Self {
        Self {
            alarms: AtomicU64::new(0),
            published: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            log_errors: AtomicU64::new(0),
            commands_ok: AtomicU64::new(0),
            commands_failed: AtomicU64::new(0),
            commands_dropped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency_ms: std::sync::Mutex::new(Window::default()),
            frame_latency_ms: std::sync::Mutex::new(Window::default()),
            frames_dropped: AtomicU64::new(0),
        }
    }
}

enum Item {
    Alarm(Box<Alarm>),
    Clear(Clear),
    Summary(serde_json::Value),
    Frame(String, Option<Instant>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum SinkError {
    #[error("alarm PUB socket: {0}")]
    Bind(String),
    #[error("alarm log {}: {source}", path.display())]
    Log { path: PathBuf, source: std::io::Error },
}

/// Handle to the sink task.
#[derive(Clone)]
pub struct Sinks {
    tx: mpsc::Sender<Item>,
    pub stats: Arc<SinkStats>,
    /// The bound PUB endpoint (with the real port when 0 was asked for).
    pub pub_endpoint: Option<String>,
    /// The PUB socket's counters (sent, dropped for slow subscribers, dropped for the budget).
    pub pub_stats: Option<Arc<crate::ingest::bounded_pub::PubStats>>,
}

const QUEUE: usize = 1024;
/// Alarm commands waiting to run; more are dropped (counted).
pub const COMMAND_QUEUE: usize = 64;
/// Alarm commands running at once: a slow one delays neither the next alarm nor the next command.
pub const COMMANDS_AT_ONCE: usize = 4;
/// Per subscriber of the alarm/result PUB socket.
const PUB_BUFFER_BYTES: u64 = 64 << 20;

impl Sinks {
    /// Binds the PUB socket, opens the log, starts the task (inside a tokio runtime); no memory
    /// budget beyond the per-subscriber allowance.
    pub async fn start(
        cfg: &SinkConfig,
        default_log: PathBuf,
        shutdown: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), SinkError> {
        Self::start_within(cfg, default_log, shutdown, crate::budget::Budget::unlimited()).await
    }

    /// [`Self::start`] with the PUB socket's queue and subscribers drawing from `budget`.
    pub async fn start_within(
        cfg: &SinkConfig,
        default_log: PathBuf,
        shutdown: CancellationToken,
        budget: Arc<crate::budget::Budget>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), SinkError> {
        let log_path = cfg.log.clone().unwrap_or(default_log);
        if let Some(dir) = log_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Log { path: log_path.clone(), source })?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| SinkError::Log { path: log_path.clone(), source })?;
        let (socket, bound) = match cfg.pub_endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(ep) => {
                let p = BoundedPub::start(ep, PUB_BUFFER_BYTES, budget, crate::budget::Kind::ResultsPub, shutdown)
                    .await
                    .map_err(|e| SinkError::Bind(e.to_string()))?;
                let bound = p.endpoint.clone();
                (Some(p), Some(bound))
            }
            None => (None, None),
        };
        let pub_stats = socket.as_ref().map(|p| p.stats.clone());
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(SinkStats::default());
        let task =
            tokio::spawn(run(rx, socket, log, log_path, cfg.command.clone(), cfg.command_timeout_s, stats.clone()));
        Ok((Self { tx, stats, pub_endpoint: bound, pub_stats }, task))
    }

    fn push(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("alarm queue full: an alarm notification was dropped");
        }
    }

    pub fn alarm(&self, a: Box<Alarm>) {
        self.stats.alarms.fetch_add(1, Ordering::Relaxed);
        self.push(Item::Alarm(a));
    }

    pub fn clear(&self, c: Clear) {
        self.push(Item::Clear(c));
    }

    pub fn summary(&self, v: serde_json::Value) {
        self.push(Item::Summary(v));
    }

    /// One analysed frame's result; dropped (counted, not logged) when the queue is full, so a
    /// flood of results never crowds out alarms.
    pub fn frame(&self, json: String, received: Option<Instant>) {
        if self.tx.capacity() < QUEUE / 2 || self.tx.try_send(Item::Frame(json, received)).is_err() {
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Item>,
    socket: Option<BoundedPub>,
    mut log: std::fs::File,
    log_path: PathBuf,
    command: Option<Vec<String>>,
    timeout_s: f64,
    stats: Arc<SinkStats>,
) {
    // Commands run off the alarm path, on their own tasks (up to COMMANDS_AT_ONCE at a time, each
    // bounded by its timeout from spawn to exit), so a slow command delays neither the log, the PUB
    // socket, nor the next alarm's command.
    let cmd_tx = command.filter(|a| !a.is_empty()).map(|argv| {
        let (tx, mut cmd_rx) = mpsc::channel::<String>(COMMAND_QUEUE);
        let stats = stats.clone();
        let argv = Arc::new(argv);
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(COMMANDS_AT_ONCE));
            while let Some(json) = cmd_rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (argv, stats) = (argv.clone(), stats.clone());
                tokio::spawn(async move {
                    run_command(&argv, &json, timeout_s, &stats).await;
                    drop(slot);
                });
            }
        });
        tx
    });
    while let Some(item) = rx.recv().await {
        let (topic, json, received) = match item {
            Item::Alarm(a) => {
                let json = serde_json::to_string(&*a).unwrap_or_default();
                if let Some(tx) = &cmd_tx
                    && tx.try_send(json.clone()).is_err()
                {
                    stats.commands_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("alarm command queue full: command not run for alarm {} (counted)", a.rule);
                }
                write_line(&mut log, &log_path, &json, &stats);
                (ALARM_TOPIC, json, a.received)
            }
            Item::Clear(c) => {
                write_line(&mut log, &log_path, &serde_json::to_string(&c).unwrap_or_default(), &stats);
                continue;
            }
            Item::Summary(v) => (SUMMARY_TOPIC, v.to_string(), None),
            Item::Frame(json, received) => {
                // Results are best effort: dropped when the PUB queue is full, never waited for.
                if let Some(sock) = socket.as_ref() {
                    sock.send(vec![Bytes::from_static(FRAME_TOPIC), Bytes::from(json)]);
                }
                if let Some(r) = received
                    && let Ok(mut w) = stats.frame_latency_ms.lock()
                {
                    w.push(r.elapsed().as_secs_f64() * 1e3);
                }
                continue;
            }
            Item::Flush(ack) => {
                let _ = log.flush().and_then(|_| log.sync_data());
                let _ = ack.send(());
                continue;
            }
        };
        if let Some(s) = socket.as_ref() {
            // Alarms and summaries wait for room in the PUB queue; they are never dropped here.
            if s.send_waiting(vec![Bytes::from_static(topic), Bytes::from(json)]).await && topic == ALARM_TOPIC {
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Frame received → alarm handed to the PUB socket (its send never waits on subscribers).
        if let Some(r) = received
            && let Ok(mut l) = stats.latency_ms.lock()
        {
            l.push(r.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = log.flush();
}

fn write_line(log: &mut std::fs::File, path: &std::path::Path, json: &str, stats: &SinkStats) {
    match log.write_all(format!("{json}\n").as_bytes()).and_then(|_| log.flush()) {
        Ok(()) => {
            stats.logged.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.log_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("alarm log {}: write failed: {e}", path.display());
        }
    }
}

/// Runs the command with `json` on its stdin; the timeout covers the whole call (spawn, writing
/// stdin — a command that never reads it would otherwise block the write — and the wait).
async fn run_command(argv: &[String], json: &str, timeout_s: f64, stats: &SinkStats) {
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(timeout_s.max(0.1));
    match tokio::time::timeout(timeout, command_call(argv, json)).await {
        Ok(Ok(out)) if out.status.success() => {
            stats.commands_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!("alarm command {:?} done in {:.0} ms", argv[0], started.elapsed().as_secs_f64() * 1e3);
        }
        Ok(Ok(out)) => {
            stats.commands_failed.fetch_add(1, Ordering::Relaxed);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr: String = stderr.trim().chars().take(500).collect();
            tracing::error!("alarm command {:?} failed ({}): {stderr}", argv[0], out.status);
        }
        Ok(Err(e)) => {
            stats.commands_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("alarm command {:?}: {e}", argv[0]);
        }
        Err(_) => {
            // kill_on_drop ends the process when the future is dropped here.
            stats.commands_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("alarm command {:?} killed after the {timeout_s} s timeout", argv[0]);
        }
    }
}

async fn command_call(argv: &[String], json: &str) -> std::io::Result<std::process::Output> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("could not start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command may exit without reading its stdin: that is its business, not an error.
        let _ = stdin.write_all(json.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    // stderr is read while waiting, so a chatty command cannot block on a full pipe.
    child.wait_with_output().await
}
