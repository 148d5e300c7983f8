//! The live view: what the analysis sees, in a browser on the instrument PC.
//!
//! ```text
//! compute thread ──Consumer──▶ Hub (state + bounded broadcast) ──SSE──▶ browsers
//!                                │  └─ worker thread: grey PNG once per frame, critical-dose fit
//!                                └── /api/state, /api/series/N, /api/image/N.png
//! ```
//!
//! - [`hub`]: the view's state (every series of the session: timeline, latest map, first
//!   crossings, alarms, fit) and the event stream. Updates from the compute thread never wait: the
//!   state is changed under a short lock and the event goes into a bounded broadcast buffer; a
//!   client that falls behind loses the stale events and is sent the whole state again.
//! - [`server`]: the HTTP server (axum, on the caller's tokio runtime): read-only GET routes, the
//!   server-sent event stream, a cap on clients, an access token for any bind that is not loopback.
//! - [`assets`]: the page, its script and the vendored uPlot (MIT), embedded in the binary.
//! - [`config`]: `[view]` in the configuration file.
//! - [`recorded`]: a hub filled from recorded session files (`beamwatch view`).

pub mod assets;
pub mod config;
pub mod hub;
pub mod recorded;
pub mod server;

pub use config::{ViewConfig, ViewError};
pub use hub::{FrameUpdate, Hub, HubMeta, Status};
pub use server::{ViewServer, serve};
