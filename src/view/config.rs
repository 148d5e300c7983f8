//! `[view]`: where the page is served and who may see it.

use serde::{Deserialize, Serialize};

/// `[view]`: the live view in a browser.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewConfig {
    /// Serve the page while the daemon runs.
    pub enabled: bool,
    /// Address and port of the page. Loopback (127.0.0.1) by default: only this PC sees it. Any
    /// other address needs an access token (`token`, or one made up and printed at start-up).
    pub bind: String,
    /// Access token for a bind that is not loopback (empty: made up at start-up and printed).
    pub token: Option<String>,
    /// Browsers that may watch at once; more are answered 503.
    pub max_clients: usize,
    /// Events buffered for slow browsers; one that falls further behind gets the whole state again.
    pub event_buffer: usize,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self { enabled: true, bind: "127.0.0.1:8750".into(), token: None, max_clients: 16, event_buffer: 64 }
    }
}

impl ViewConfig {
    /// Checks the values a file can get wrong; `Err((key, why))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(("view.bind", "not an address:port (e.g. 127.0.0.1:8750)".into()));
        }
        if !(1..=1024).contains(&self.max_clients) {
            return Err(("view.max_clients", "must be 1 … 1024".into()));
        }
        if !(4..=4096).contains(&self.event_buffer) {
            return Err(("view.event_buffer", "must be 4 … 4096".into()));
        }
        if let Some(t) = &self.token
            && !t.is_empty()
            && (t.len() < 16 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(("view.token", "at least 16 characters of letters, digits, - and _".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum ViewError {
    #[error("live view: cannot listen on {bind}: {source}")]
    Bind { bind: String, source: std::io::Error },
    #[error("live view: `{bind}` is not an address:port")]
    Address { bind: String },
}
