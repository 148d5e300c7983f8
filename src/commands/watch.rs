//! `beamwatch watch FOLDER`: image files the microscope exports into a folder, analysed as they
//! arrive (see [`crate::watch`]), until Ctrl-C or an idle time.

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::Config;
use crate::pipeline::runtime;
use crate::watch::{self, WatchOptions, WatchReport};

/// Validates `cfg` and watches the folder.
pub fn run(cfg: Config, opts: WatchOptions) -> Result<WatchReport, Error> {
    let rules = cfg.validate(std::path::Path::new("watch settings"))?;
    runtime()?.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(crate::daemon::stop_on_signal(cancel.clone()));
        watch::run(cfg, rules, opts, cancel).await
    })
}
