//! The view's HTTP server: axum on the caller's tokio runtime (the daemon's own), read-only.
//!
//! Routes, all GET: `/` (the page), `/assets/NAME` (its script, style and uPlot), `/api/state`
//! (everything now, JSON), `/api/events` (server-sent events: `state` first, then `series`,
//! `frame`, `image`, `fit`, `alarm`, `cleared`, `series_end`, `status`), `/api/series/N` (an
//! earlier series), `/api/image/N` (series N's latest frame, grey PNG). Nothing changes what the
//! daemon does; nothing reads a file.
//!
//! A bind that is not loopback needs the access token, as `?token=` (the page then keeps it in a
//! cookie), a `Bearer` header or that cookie; without it every route answers 401. At most
//! `max_clients` event streams at once (503 beyond); request bodies are refused beyond 1 KiB.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use super::assets;
use super::config::{ViewConfig, ViewError};
use super::hub::{Hub, Msg};

/// A running view server.
pub struct ViewServer {
    /// The page's address (with the token when one is needed).
    pub url: String,
    pub addr: SocketAddr,
    pub token: Option<String>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ViewServer {
    /// Stops serving: event streams end, open requests get two seconds to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }

    /// Serves until `cancel` fires (e.g. Ctrl-C after `demo --view`).
    pub async fn wait(self, cancel: CancellationToken) {
        cancel.cancelled().await;
        self.stop().await;
    }
}

#[derive(Clone)]
struct App {
    hub: Hub,
    token: Option<Arc<str>>,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
}

/// 128 random bits as hex: the token for a bind that is not loopback, when the config has none.
fn make_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts serving `hub` on `cfg.bind` (port 0: any free port). Stops with `cancel`.
pub async fn serve(hub: Hub, cfg: &ViewConfig, cancel: CancellationToken) -> Result<ViewServer, ViewError> {
    let addr: SocketAddr = cfg.bind.parse().map_err(|_| ViewError::Address { bind: cfg.bind.clone() })?;
    let token = if addr.ip().is_loopback() {
        None
    } else {
        Some(cfg.token.clone().filter(|t| !t.is_empty()).unwrap_or_else(make_token))
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ViewError::Bind { bind: cfg.bind.clone(), source })?;
    let local = listener.local_addr().map_err(|source| ViewError::Bind { bind: cfg.bind.clone(), source })?;
    let stop = cancel.child_token();
    let app = App {
        hub,
        token: token.as_deref().map(Arc::from),
        streams: Arc::new(Semaphore::new(cfg.max_clients.max(1))),
        stop: stop.clone(),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/series/{n}", get(series))
        .route("/api/image/{n}", get(image))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(1024))
        .with_state(app);
    let shown_host = if local.ip().is_unspecified() { "<this-pc>".to_string() } else { local.ip().to_string() };
    let url = match &token {
        Some(t) => format!("http://{shown_host}:{}/?token={t}", local.port()),
        None => format!("http://{shown_host}:{}/", local.port()),
    };
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!("live view stopped: {e}");
        }
    });
    Ok(ViewServer { url, addr: local, token, stop, task })
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix("bw_token="))
}

fn query_token(req: &Request) -> Option<&str> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// Refuses every request without the token when one is needed.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(want) = app.token.as_deref() else { return next.run(req).await };
    let bearer =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let from_query = query_token(&req) == Some(want);
    let ok = from_query || bearer == Some(want) || cookie_token(req.headers()) == Some(want);
    if !ok {
        return (StatusCode::UNAUTHORIZED, "access token needed: open the address beamwatch printed at start-up\n")
            .into_response();
    }
    let mut resp = next.run(req).await;
    if from_query && let Ok(v) = HeaderValue::from_str(&format!("bw_token={want}; HttpOnly; SameSite=Strict; Path=/")) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn no_store(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index() -> Response {
    let mut r = no_store("text/html; charset=utf-8", assets::INDEX_HTML);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'",
        ),
    );
    r
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some((kind, body)) => no_store(kind, body),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

async fn state(State(app): State<App>) -> Response {
    no_store("application/json", app.hub.state_json())
}

async fn series(State(app): State<App>, Path(n): Path<String>) -> Response {
    match n.parse::<u64>().ok().and_then(|n| app.hub.series_json(n)) {
        Some(json) => no_store("application/json", json),
        None => (StatusCode::NOT_FOUND, "no such series\n").into_response(),
    }
}

async fn image(State(app): State<App>, Path(n): Path<String>) -> Response {
    let n = n.trim_end_matches(".png");
    match n.parse::<u64>().ok().and_then(|n| app.hub.image(n)) {
        Some(png) => no_store("image/png", png),
        None => (StatusCode::NOT_FOUND, "no image yet\n").into_response(),
    }
}

/// One event stream's hold on a client slot; counts the client while it lives.
struct Client {
    hub: Hub,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.hub.clients().fetch_sub(1, Relaxed);
    }
}

fn sse(m: &Msg) -> Event {
    Event::default().event(m.event).data(&m.json)
}

async fn events(State(app): State<App>) -> Response {
    let Ok(slot) = app.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many viewers (view.max_clients)\n").into_response();
    };
    app.hub.clients().fetch_add(1, Relaxed);
    // Subscribed before the state is taken: nothing falls between the two.
    let rx = app.hub.subscribe();
    let first = Event::default().event("state").data(app.hub.state_json());
    let client = Client { hub: app.hub.clone(), _slot: slot };
    let stop = app.stop.clone();
    let stream = futures::stream::unfold((rx, Some(first), client, stop), |(mut rx, first, client, stop)| async move {
        if let Some(ev) = first {
            return Some((Ok::<_, Infallible>(ev), (rx, None, client, stop)));
        }
        let next = tokio::select! {
            _ = stop.cancelled() => return None,
            r = rx.recv() => r,
        };
        match next {
            Ok(m) => Some((Ok(sse(&m)), (rx, None, client, stop))),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too far behind: the stale events are gone; the whole state replaces them.
                client.hub.resynced();
                let rx = rx.resubscribe();
                let ev = Event::default().event("state").data(client.hub.state_json());
                Some((Ok(ev), (rx, None, client, stop)))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    let mut r = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
