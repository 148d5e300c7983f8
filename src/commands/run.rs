//! `beamwatch run --config FILE`: the live daemon, until SIGINT/SIGTERM (or `max_series`).

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::Config;
use crate::daemon::{self, DaemonReport};
use crate::pipeline::runtime;

/// Validates `cfg` (naming `source` in errors) and runs the daemon.
pub fn run(cfg: Config, source: &Path) -> Result<DaemonReport, Error> {
    let rules = cfg.validate(source)?;
    runtime()?.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(daemon::stop_on_signal(cancel.clone()));
        daemon::run(cfg, rules, cancel, None).await
    })
}
