//! `beamwatch run --config FILE`: the live daemon, until SIGINT/SIGTERM (or `max_series`).

use std::path::Path;

use tokio::sync::watch;

use crate::Error;
use crate::config::Config;
use crate::daemon::{self, DaemonReport};

/// A multi-threaded tokio runtime for the sockets; the analysis has its own threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bw-io")
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))
}

/// Validates `cfg` (naming `source` in errors) and runs the daemon.
pub fn run(cfg: Config, source: &Path) -> Result<DaemonReport, Error> {
    let rules = cfg.validate(source)?;
    runtime()?.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(daemon::stop_on_signal(stop_tx));
        daemon::run(cfg, rules, stop_rx, None).await
    })
}
