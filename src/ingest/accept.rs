//! Accepting peers without letting them run the process out of descriptors or memory: at most
//! [`MAX_PEERS`] connections per listening socket at once (more are closed on arrival, counted),
//! accept errors (e.g. out of file descriptors) retried with a growing pause instead of a busy
//! loop, and logged at most once per [`LOG_EVERY`] with the count since.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Concurrent peers per listening socket: a detector, a few consumers, a few subscribers.
pub const MAX_PEERS: usize = 64;
/// At most one log line per this interval for accept errors and refused peers.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

#[derive(Default, Debug)]
pub struct AcceptStats {
    pub accept_errors: AtomicU64,
    /// Peers closed on arrival because [`MAX_PEERS`] were connected.
    pub peers_refused: AtomicU64,
    pub peers: AtomicU64,
}

/// A log line now and then: the first event at once, then at most one per [`LOG_EVERY`] with the
/// number of events since the last line.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    since: u64,
}

impl RateLimited {
    fn event(&mut self) -> Option<u64> {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last = Some(Instant::now());
            return Some(std::mem::take(&mut self.since));
        }
        None
    }
}

/// A listener that hands out peers within the cap.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    pub stats: Arc<AcceptStats>,
    what: &'static str,
    max_peers: usize,
    pause: Duration,
    errors_log: RateLimited,
    refused_log: RateLimited,
}

/// An accepted peer's place under the cap; freed when dropped (keep it as long as the connection).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<AcceptStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.peers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Acceptor {
    pub fn new(listener: TcpListener, max_peers: usize, what: &'static str, stats: Arc<AcceptStats>) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_peers.max(1))),
            stats,
            what,
            max_peers: max_peers.max(1),
            pause: FIRST_PAUSE,
            errors_log: RateLimited::default(),
            refused_log: RateLimited::default(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next peer within the cap, or `None` once `shutdown` is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr, Slot)> {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.cancelled() => return None,
            };
            let (stream, addr) = match accepted {
                Ok(a) => {
                    self.pause = FIRST_PAUSE;
                    a
                }
                Err(e) => {
                    self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = self.errors_log.event() {
                        tracing::error!(
                            "{} accept: {e} ({n} errors since the last line; retrying with a pause)",
                            self.what
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.pause) => {}
                        _ = shutdown.cancelled() => return None,
                    }
                    self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    self.stats.peers.fetch_add(1, Ordering::Relaxed);
                    return Some((stream, addr, Slot { _permit: slot, stats: self.stats.clone() }));
                }
                Err(_) => {
                    self.stats.peers_refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = self.refused_log.event() {
                        tracing::warn!(
                            "{}: {addr} refused, {} peers already connected ({n} refused since the last line)",
                            self.what,
                            self.max_peers
                        );
                    }
                    drop(stream);
                }
            }
        }
    }
}
