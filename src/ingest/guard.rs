//! The guard: a TCP relay between an untrusted peer and our ZeroMQ socket that checks every ZMTP
//! frame's declared length before forwarding it (see [`super::zmtp`]). A peer that declares an
//! oversized frame or message is disconnected and counted; the socket never sees the claim.
//!
//! - connect mode (the detector binds, we connect): the guard listens on loopback, our socket
//!   connects to it, and the guard dials the detector for each connection it accepts; when the
//!   detector is down the guard drops the connection and the socket's own reconnect retries.
//! - bind mode (senders connect to us): the guard listens on the public address and dials our
//!   socket, bound on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::accept::{AcceptStats, Acceptor, MAX_PEERS};
use super::zmtp::{self, Limits, ZmtpError};
use crate::budget::Budget;

#[derive(Default, Debug)]
pub struct GuardStats {
    pub connections: AtomicU64,
    /// Peers disconnected for what they sent (oversized frames or messages, too many parts, a
    /// stalled greeting or message).
    pub rejected: AtomicU64,
    pub dial_failures: AtomicU64,
    /// Accept errors and peers refused over the cap.
    pub accept: Arc<AcceptStats>,
}

/// `tcp://host:port` → `host:port` (`*` → all interfaces).
pub fn tcp_addr(endpoint: &str) -> Result<String, String> {
    let rest =
        endpoint.strip_prefix("tcp://").ok_or_else(|| format!("endpoint '{endpoint}' is not tcp://HOST:PORT"))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("endpoint '{endpoint}' has no port"))?;
    port.parse::<u16>().map_err(|_| format!("endpoint '{endpoint}' has an invalid port"))?;
    let host = if host == "*" { "0.0.0.0" } else { host };
    Ok(format!("{host}:{port}"))
}

/// Relays one connection: `untrusted` → `trusted` checked, the other way as it is.
async fn relay(
    untrusted: TcpStream,
    trusted: TcpStream,
    limits: Limits,
    budget: Arc<Budget>,
    stats: Arc<GuardStats>,
    peer: String,
) {
    let _ = untrusted.set_nodelay(true);
    let _ = trusted.set_nodelay(true);
    let (mut ur, mut uw) = untrusted.into_split();
    let (mut tr, mut tw) = trusted.into_split();
    let inbound = async {
        let r = zmtp::pipe_within(&mut ur, &mut tw, limits, Some(&budget)).await;
        let _ = tw.shutdown().await;
        r
    };
    let outbound = async {
        let r = tokio::io::copy(&mut tr, &mut uw).await;
        let _ = uw.shutdown().await;
        r
    };
    // Whichever side ends first ends the relay: a vanished peer closes our side too.
    tokio::select! {
        r = inbound => match r {
            Ok(_) => tracing::debug!("guard: {peer} closed"),
            Err(ZmtpError::Io(e)) => tracing::info!("guard: connection to {peer} ended: {e}"),
            Err(e) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!("guard: disconnected {peer}: {e}");
            }
        },
        _ = outbound => tracing::debug!("guard: local socket closed the connection to {peer}"),
    }
}

/// Connect mode. Returns the loopback endpoint our socket should connect to.
pub async fn connect_mode(
    remote: &str,
    limits: Limits,
    budget: Arc<Budget>,
    stats: Arc<GuardStats>,
    shutdown: CancellationToken,
) -> std::io::Result<String> {
    let remote = tcp_addr(remote).map_err(std::io::Error::other)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let local = format!("tcp://{}", listener.local_addr()?);
    let mut acceptor = Acceptor::new(listener, MAX_PEERS, "guard", stats.accept.clone());
    tokio::spawn(async move {
        while let Some((inner, _, slot)) = acceptor.next(&shutdown).await {
            let (remote, stats, budget) = (remote.clone(), stats.clone(), budget.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&remote)).await {
                    Ok(Ok(peer)) => {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("guard: connected to {remote}");
                        relay(peer, inner, limits, budget, stats, remote).await;
                    }
                    Ok(Err(e)) => {
                        // Logged at debug after the first: the socket retries every second.
                        if stats.dial_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!("guard: cannot reach {remote}: {e} (will keep retrying)");
                        }
                    }
                    Err(_) => {
                        if stats.dial_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!("guard: connecting to {remote} timed out (will keep retrying)");
                        }
                    }
                }
            });
        }
    });
    Ok(local)
}

/// Bind mode: listen on `public`, relay each peer to `internal` (our socket's loopback endpoint).
/// Returns the bound public address.
pub async fn bind_mode(
    public: &str,
    internal: &str,
    limits: Limits,
    budget: Arc<Budget>,
    stats: Arc<GuardStats>,
    shutdown: CancellationToken,
) -> std::io::Result<String> {
    let public = tcp_addr(public).map_err(std::io::Error::other)?;
    let internal = tcp_addr(internal).map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(&public).await?;
    let bound = format!("tcp://{}", listener.local_addr()?);
    let mut acceptor = Acceptor::new(listener, MAX_PEERS, "guard", stats.accept.clone());
    tokio::spawn(async move {
        while let Some((peer, addr, slot)) = acceptor.next(&shutdown).await {
            let (internal, stats, budget) = (internal.clone(), stats.clone(), budget.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match TcpStream::connect(&internal).await {
                    Ok(inner) => {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("guard: {addr} connected");
                        relay(peer, inner, limits, budget, stats, addr.to_string()).await;
                    }
                    Err(e) => tracing::error!("guard: cannot reach our own socket at {internal}: {e}"),
                }
            });
        }
    });
    Ok(bound)
}
