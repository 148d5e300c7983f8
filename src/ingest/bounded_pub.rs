//! A PUB socket whose memory is bounded. `zeromq`'s PUB keeps up to 100,000 messages per
//! subscriber — with megabyte frames (re-publishing) or per-frame results, effectively no bound. So
//! the real PUB socket binds on loopback only, and every external subscriber is served by a relay
//! that reads the PUB stream as fast as it comes and holds at most `buffer_bytes` of whole messages
//! for its subscriber; beyond that it drops whole messages and counts them. The queue into the PUB
//! socket is bounded too. Both draw their bytes from the daemon's memory budget as well
//! ([`crate::budget`]): the queue as its owner's kind, every subscriber's buffer as
//! [`Kind::Subscribers`] — so sixteen stalled subscribers hold at most the subscribers' share of the
//! budget, not sixteen allowances; a message that does not fit is dropped for that subscriber and
//! counted.
//!
//! Used for re-publishing every received message (a second consumer still sees all frames: DECTRIS
//! PUSH hands each message to one PULL client only) and for alarms and results.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketSend};

use super::IngestError;
use crate::budget::{Budget, Kind, Reservation};
use super::accept::{AcceptStats, Acceptor};
use super::guard::tcp_addr;
use super::zmtp::{self, Limits};

#[derive(Default, Debug)]
pub struct PubStats {
    pub sent: AtomicU64,
    /// Dropped because the queue into the PUB socket was full.
    pub dropped_queue: AtomicU64,
    /// Dropped for a subscriber whose buffer was full (per subscriber, summed).
    pub dropped_slow: AtomicU64,
    pub subscribers: AtomicU64,
    /// Of the drops above, those because the memory budget (or its share for this kind) was spent.
    pub dropped_budget: AtomicU64,
    /// Accept errors and subscribers refused over [`MAX_SUBSCRIBERS`].
    pub accept: Arc<AcceptStats>,
}

pub struct BoundedPub {
    tx: mpsc::Sender<(Vec<Bytes>, Option<Reservation>)>,
    budget: Arc<Budget>,
    /// What the queue's bytes count as.
    kind: Kind,
    pub stats: Arc<PubStats>,
    /// The public endpoint subscribers connect to.
    pub endpoint: String,
}

/// Messages waiting to enter the PUB socket.
const QUEUE: usize = 64;
/// Subscribers served at once (each with its own buffer); more are closed on arrival, counted.
pub const MAX_SUBSCRIBERS: usize = 16;
/// PUB sockets a daemon runs (results, re-publishing): their subscribers split the budget's share.
const PUB_SOCKETS: u64 = 2;

impl BoundedPub {
    /// `buffer_bytes`: each subscriber's allowance; `kind`: what the queue into the socket counts as
    /// in `budget`.
    pub async fn start(
        public: &str,
        buffer_bytes: u64,
        budget: Arc<Budget>,
        kind: Kind,
        shutdown: CancellationToken,
    ) -> Result<Self, IngestError> {
        let err = |reason: String| IngestError::Socket { endpoint: public.to_string(), reason };
        let mut socket = zeromq::PubSocket::new();
        let internal = socket.bind("tcp://127.0.0.1:0").await.map_err(|e| err(e.to_string()))?.to_string();
        let internal = tcp_addr(&internal).map_err(err)?;
        let listener = TcpListener::bind(tcp_addr(public).map_err(err)?).await.map_err(|e| err(e.to_string()))?;
        let endpoint = format!("tcp://{}", listener.local_addr().map_err(|e| err(e.to_string()))?);
        let stats = Arc::new(PubStats::default());
        let (tx, mut rx) = mpsc::channel::<(Vec<Bytes>, Option<Reservation>)>(QUEUE);
        let s = stats.clone();
        tokio::spawn(async move {
            // The reservation goes when the socket has the message (our relays read it at once).
            while let Some((parts, _held)) = rx.recv().await {
                let mut it = parts.into_iter();
                let Some(first) = it.next() else { continue };
                let mut msg = zeromq::ZmqMessage::from(first);
                for p in it {
                    msg.push_back(p);
                }
                if socket.send(msg).await.is_ok() {
                    s.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            for e in socket.close().await {
                tracing::debug!("closing a PUB socket: {e}");
            }
        });
        let s = stats.clone();
        let stop = shutdown;
        let b = budget.clone();
        let allowance = budget.subscriber_allowance(buffer_bytes, PUB_SOCKETS * MAX_SUBSCRIBERS as u64);
        if allowance < buffer_bytes {
            tracing::info!(
                "PUB {endpoint}: {} KiB per subscriber (an equal part of the memory budget's share for subscribers)",
                allowance >> 10
            );
        }
        // Subscribers are capped: each holds up to `buffer_bytes`, so the cap bounds the total.
        let mut acceptor = Acceptor::new(listener, MAX_SUBSCRIBERS, "PUB", stats.accept.clone());
        tokio::spawn(async move {
            while let Some((sub, addr, slot)) = acceptor.next(&stop).await {
                let (internal, s, b) = (internal.clone(), s.clone(), b.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let Ok(pubconn) = TcpStream::connect(&internal).await else {
                        tracing::error!("cannot reach our own PUB socket at {internal}");
                        return;
                    };
                    s.subscribers.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("PUB {addr} subscribed");
                    serve(sub, pubconn, allowance, &b, &s).await;
                    s.subscribers.fetch_sub(1, Ordering::Relaxed);
                    tracing::info!("PUB {addr} left");
                });
            }
        });
        Ok(Self { tx, budget, kind, stats, endpoint })
    }

    /// Queues a message; drops it (counted) if the queue is full or its bytes do not fit the
    /// budget. `false` when dropped.
    pub fn send(&self, parts: Vec<Bytes>) -> bool {
        let bytes = parts.iter().map(|p| p.len() as u64).sum();
        let Some(held) = self.budget.try_reserve(bytes, self.kind) else {
            self.stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped_budget.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let ok = self.tx.try_send((parts, Some(held))).is_ok();
        if !ok {
            self.stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Queues a message, waiting for room (alarms: small, and never dropped here — they take
    /// budget when there is some, and go without when there is none).
    pub async fn send_waiting(&self, parts: Vec<Bytes>) -> bool {
        let bytes = parts.iter().map(|p| p.len() as u64).sum();
        let held = self.budget.reserve_quietly(bytes, self.kind);
        self.tx.send((parts, held)).await.is_ok()
    }
}

async fn serve(sub: TcpStream, pubconn: TcpStream, allowance: u64, budget: &Arc<Budget>, stats: &PubStats) {
    let (mut sr, mut sw) = sub.into_split();
    let (mut pr, mut pw) = pubconn.into_split();
    // Subscriber → PUB: greeting, READY, SUBSCRIBE — small frames only.
    let small = Limits { max_frame_bytes: zmtp::MAX_COMMAND_BYTES, max_message_bytes: zmtp::MAX_COMMAND_BYTES };
    let up = async {
        let _ = zmtp::pipe_checked(&mut sr, &mut pw, small).await;
    };
    let down = downstream(&mut pr, &mut sw, allowance, budget, stats);
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
}

/// PUB → subscriber: whole messages through the subscriber's allowance and the shared budget;
/// beyond either, whole messages are dropped.
async fn downstream(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    allowance: u64,
    shared: &Arc<Budget>,
    stats: &PubStats,
) {
    if zmtp::pipe_greeting(from, to).await.is_err() {
        return;
    }
    let budget = allowance.clamp(1, (Semaphore::MAX_PERMITS / 2).min(u32::MAX as usize) as u64) as usize;
    let sem = Arc::new(Semaphore::new(budget));
    // Unbounded in count, bounded in bytes: every message in it holds permits and budget.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, usize, Option<Reservation>)>();
    let writer_sem = sem.clone();
    let writer = async move {
        while let Some((bytes, permits, held)) = rx.recv().await {
            if to.write_all(&bytes).await.is_err() || to.flush().await.is_err() {
                return;
            }
            writer_sem.add_permits(permits);
            drop(held);
        }
    };
    // Our own PUB socket is trusted (what it sends passed the guard or is ours); a message larger
    // than the allowance is read and dropped like any other that does not fit.
    let limits = Limits { max_frame_bytes: u64::MAX / 4, max_message_bytes: u64::MAX / 4 };
    let reader = async {
        let mut msg: Vec<u8> = Vec::new();
        let mut len = 0u64;
        loop {
            let h = match zmtp::read_header(from, &limits, len).await {
                Ok(Some(h)) => h,
                _ => return,
            };
            msg.extend(h.encode());
            let start = msg.len();
            msg.resize(start + h.len as usize, 0);
            if from.read_exact(&mut msg[start..]).await.is_err() {
                return;
            }
            if h.command {
                // Handshake commands always go through (tiny, and the session needs them).
                if tx.send((std::mem::take(&mut msg), 0, None)).is_err() {
                    return;
                }
                continue;
            }
            len += h.len + h.wire_len();
            if h.more {
                continue;
            }
            let size = msg.len();
            let permits = u32::try_from(size).ok().and_then(|n| sem.clone().try_acquire_many_owned(n).ok());
            let held = permits.as_ref().and_then(|_| shared.try_reserve(size as u64, Kind::Subscribers));
            match (permits, held) {
                (Some(p), Some(held)) => {
                    p.forget();
                    if tx.send((std::mem::take(&mut msg), size, Some(held))).is_err() {
                        return;
                    }
                }
                (p, _) => {
                    if p.is_some() {
                        stats.dropped_budget.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    msg.clear();
                }
            }
            len = 0;
        }
    };
    tokio::select! {
        _ = writer => {},
        _ = reader => {},
    }
}
