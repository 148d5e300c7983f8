//! Sockets → raw multipart messages.
//!
//! - [`zmtp`]: ZMTP 3 frames read and checked one by one.
//! - [`accept`]: listening sockets with a cap on peers and accept errors retried with backoff.
//! - [`guard`]: the relay that checks an untrusted peer's frame sizes before our socket sees them.
//! - [`bounded_pub`]: a PUB socket with a bounded buffer per subscriber (re-publishing, alarms).
//!
//! [`Receiver::open`] sets up a PULL or SUB socket that connects or binds as configured, behind
//! the guard unless the config turns it off.

pub mod accept;
pub mod bounded_pub;
pub mod guard;
pub mod zmtp;

use std::sync::Arc;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketRecv};

use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::decode::WireFormat;
use guard::GuardStats;

/// Connect to a peer that binds (DECTRIS detectors bind PUSH), or bind and let peers connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Connect,
    Bind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    #[default]
    Pull,
    Sub,
}

/// `[ingest]`: where frames come from.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub endpoint: String,
    pub mode: Mode,
    pub socket: SocketKind,
    pub format: WireFormat,
    /// Stream-v2 channel to analyse (default: the first one the start message announces).
    pub channel: Option<String>,
    /// SUB topic prefix.
    pub subscribe: String,
    /// Largest frame part and whole multipart message a peer may send (MiB).
    pub max_frame_mib: f64,
    pub max_message_mib: f64,
    /// Check every incoming ZMTP frame before it reaches the socket (strongly recommended).
    pub guard: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            endpoint: "tcp://127.0.0.1:9999".into(),
            mode: Mode::Connect,
            socket: SocketKind::Pull,
            format: WireFormat::Auto,
            channel: None,
            subscribe: String::new(),
            max_frame_mib: 512.0,
            max_message_mib: 1024.0,
            guard: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum IngestError {
    #[error("{endpoint}: {reason}")]
    Socket { endpoint: String, reason: String },
    /// Shutdown was asked for while waiting for the peer.
    #[error("stopped while waiting for {0}")]
    Stopped(String),
}

enum Inner {
    Pull(zeromq::PullSocket),
    Sub(zeromq::SubSocket),
}

/// Connect-mode link state.
enum Link {
    Up,
    /// The peer went away: take what the old socket still holds, then rebuild.
    Draining,
    Down,
}

/// The receiving socket. In connect mode it is supervised: the first connection is retried until
/// the peer is there, and when the peer goes away (a detector restarting between acquisitions)
/// the socket is rebuilt and reconnected — `zeromq`'s PULL socket does not reconnect by itself.
pub struct Receiver {
    cfg: IngestConfig,
    inner: Option<Inner>,
    monitor: Option<futures::channel::mpsc::Receiver<zeromq::SocketEvent>>,
    link: Link,
    /// Connect mode: where our socket connects (the guard's loopback end, or the peer itself).
    target: Option<String>,
    shutdown: CancellationToken,
    /// Where peers reach us (bind mode) or whom we reach (connect mode), for logs.
    pub describe: String,
    pub guard: Arc<GuardStats>,
    pub reconnects: u64,
    /// Since when we wait for the peer, and when we last said so (one warning, then a reminder a
    /// minute: a detector that is off between sessions must not flood the log).
    waiting: Option<(Instant, Instant)>,
}

/// How often a daemon still waiting for its detector says so.
const WAITING_REMINDER: Duration = Duration::from_secs(60);

/// The configured limits, within the memory budget's share for one message in flight.
fn limits(cfg: &IngestConfig, budget: &Budget) -> zmtp::Limits {
    let most = budget.max_message_bytes();
    zmtp::Limits {
        max_frame_bytes: ((cfg.max_frame_mib * 1024.0 * 1024.0) as u64).min(most),
        max_message_bytes: ((cfg.max_message_mib * 1024.0 * 1024.0) as u64).min(most),
    }
}

impl Inner {
    fn new(kind: SocketKind) -> Self {
        match kind {
            SocketKind::Pull => Inner::Pull(zeromq::PullSocket::new()),
            SocketKind::Sub => Inner::Sub(zeromq::SubSocket::new()),
        }
    }

    fn monitor(&mut self) -> futures::channel::mpsc::Receiver<zeromq::SocketEvent> {
        match self {
            Self::Pull(s) => s.monitor(),
            Self::Sub(s) => s.monitor(),
        }
    }

    async fn connect(&mut self, ep: &str) -> zeromq::ZmqResult<()> {
        match self {
            Self::Pull(s) => s.connect(ep).await,
            Self::Sub(s) => s.connect(ep).await,
        }
    }

    async fn bind(&mut self, ep: &str) -> zeromq::ZmqResult<String> {
        let b = match self {
            Self::Pull(s) => s.bind(ep).await?,
            Self::Sub(s) => s.bind(ep).await?,
        };
        Ok(b.to_string())
    }

    async fn recv(&mut self) -> zeromq::ZmqResult<zeromq::ZmqMessage> {
        match self {
            Self::Pull(s) => s.recv().await,
            Self::Sub(s) => s.recv().await,
        }
    }
}

impl Receiver {
    /// Sets the socket up. In connect mode the peer need not be there yet: [`Self::recv`] waits.
    /// Behind the guard, messages in flight draw from `budget`.
    pub async fn open(cfg: &IngestConfig, shutdown: CancellationToken, budget: Arc<Budget>) -> Result<Self, IngestError> {
        let err = |reason: String| IngestError::Socket { endpoint: cfg.endpoint.clone(), reason };
        let stats = Arc::new(GuardStats::default());
        let mut r = Self {
            cfg: cfg.clone(),
            inner: None,
            monitor: None,
            link: Link::Down,
            target: None,
            shutdown: shutdown.clone(),
            describe: String::new(),
            guard: stats.clone(),
            reconnects: 0,
            waiting: None,
        };
        if !cfg.guard {
            tracing::warn!(
                "ingest guard is off: a peer can make the ZeroMQ socket reserve any amount of memory; trusted peers only"
            );
        }
        match (cfg.mode, cfg.guard) {
            (Mode::Connect, true) => {
                let local = guard::connect_mode(&cfg.endpoint, limits(cfg, &budget), budget.clone(), stats, shutdown)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                r.target = Some(local);
                r.describe = format!("connected to {} through the frame-size guard", cfg.endpoint);
            }
            (Mode::Connect, false) => {
                r.target = Some(cfg.endpoint.clone());
                r.describe = format!("connected to {} (no guard)", cfg.endpoint);
            }
            (Mode::Bind, guarded) => {
                let mut inner = Inner::new(cfg.socket);
                let public = if guarded {
                    let internal = inner.bind("tcp://127.0.0.1:0").await.map_err(|e| err(e.to_string()))?;
                    guard::bind_mode(&cfg.endpoint, &internal, limits(cfg, &budget), budget.clone(), stats, shutdown)
                        .await
                        .map_err(|e| err(e.to_string()))?
                } else {
                    inner.bind(&cfg.endpoint).await.map_err(|e| err(e.to_string()))?
                };
                r.subscribe(&mut inner).await?;
                r.inner = Some(inner);
                r.link = Link::Up;
                r.describe = format!(
                    "listening on {public}{}",
                    if guarded { " through the frame-size guard" } else { " (no guard)" }
                );
            }
        }
        Ok(r)
    }

    async fn subscribe(&self, inner: &mut Inner) -> Result<(), IngestError> {
        if let Inner::Sub(s) = inner {
            s.subscribe(&self.cfg.subscribe)
                .await
                .map_err(|e| IngestError::Socket { endpoint: self.cfg.endpoint.clone(), reason: e.to_string() })?;
        }
        Ok(())
    }

    /// Connects (connect mode), retrying with backoff until the peer answers or shutdown.
    async fn connect(&mut self) -> Result<(), IngestError> {
        let Some(target) = self.target.clone() else { return Ok(()) };
        let mut delay = Duration::from_millis(100);
        loop {
            let mut inner = Inner::new(self.cfg.socket);
            let monitor = inner.monitor();
            let attempt = tokio::time::timeout(Duration::from_secs(5), inner.connect(&target)).await;
            let why = match attempt {
                Ok(Ok(())) => {
                    self.subscribe(&mut inner).await?;
                    if let Some((since, _)) = self.waiting.take() {
                        tracing::info!("connected to {} after {:.0} s", self.cfg.endpoint, since.elapsed().as_secs_f64());
                    }
                    self.inner = Some(inner);
                    self.monitor = Some(monitor);
                    self.link = Link::Up;
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_string(),
            };
            let now = Instant::now();
            match self.waiting {
                None => {
                    tracing::warn!("waiting for {} ({why}); retrying", self.cfg.endpoint);
                    self.waiting = Some((now, now));
                }
                Some((since, said)) if now.duration_since(said) >= WAITING_REMINDER => {
                    tracing::info!(
                        "still waiting for {} ({why}) after {:.0} s",
                        self.cfg.endpoint,
                        now.duration_since(since).as_secs_f64()
                    );
                    self.waiting = Some((since, now));
                }
                Some(_) => tracing::debug!("waiting for {} ({why})", self.cfg.endpoint),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => return Err(IngestError::Stopped(self.cfg.endpoint.clone())),
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// The next multipart message (waiting for, and reconnecting to, the peer as needed).
    pub async fn recv(&mut self) -> Result<zeromq::ZmqMessage, IngestError> {
        use futures::StreamExt;
        loop {
            if matches!(self.link, Link::Down) {
                self.connect().await?;
            }
            let Some(inner) = self.inner.as_mut() else {
                self.link = Link::Down;
                continue;
            };
            if matches!(self.link, Link::Draining) {
                match tokio::time::timeout(Duration::from_millis(100), inner.recv()).await {
                    Ok(Ok(m)) => return Ok(m),
                    _ => {
                        self.inner = None;
                        self.monitor = None;
                        self.link = Link::Down;
                        self.reconnects += 1;
                        continue;
                    }
                }
            }
            let supervise = self.target.is_some() && matches!(self.cfg.socket, SocketKind::Pull);
            let event = async {
                match self.monitor.as_mut() {
                    Some(m) => m.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = inner.recv() => match m {
                    Ok(m) => return Ok(m),
                    Err(e) => {
                        tracing::error!("receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                ev = event => match ev {
                    Some(zeromq::SocketEvent::Disconnected(_)) if supervise => {
                        tracing::warn!("{} went away; reconnecting", self.cfg.endpoint);
                        self.link = Link::Draining;
                    }
                    Some(_) => {}
                    None => self.monitor = None,
                },
            }
        }
    }
}
