//! `beamwatch view`, and the live-view flags `run`, `demo` and `replay` share.

use std::path::PathBuf;

use clap::Args;

use crate::Error;
use crate::commands::view;
use crate::view::ViewConfig;

/// Where the live view is served: flags over `[view]`.
#[derive(Args, Clone, Debug, Default)]
pub struct ViewFlags {
    /// Serve the live view on this address:port (default 127.0.0.1:8750; port 0: any free port).
    /// Any address but loopback needs an access token: [view] token, or one made up and printed.
    #[arg(long, value_name = "ADDR:PORT")]
    pub view_bind: Option<String>,
    /// Do not serve the live view.
    #[arg(long, conflicts_with = "view_bind")]
    pub no_view: bool,
}

impl ViewFlags {
    /// Applies the flags to `cfg`, checking the address.
    pub fn apply(&self, cfg: &mut ViewConfig) -> Result<(), Error> {
        if let Some(b) = &self.view_bind {
            cfg.bind = b.clone();
            cfg.enabled = true;
        }
        if self.no_view {
            cfg.enabled = false;
        }
        cfg.check().map_err(|(key, why)| Error::Usage(format!("{key}: {why}")))
    }
}

#[derive(Args)]
pub struct ViewArgs {
    /// A session file (the daemon's sessions/*.h5, a replay's results file) or a folder of them.
    path: PathBuf,
    /// Address:port of the page (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8750")]
    bind: String,
    /// Access token for an address that is not loopback (default: made up and printed).
    #[arg(long)]
    token: Option<String>,
}

impl ViewArgs {
    pub fn run(self) -> Result<(), Error> {
        let cfg = ViewConfig { bind: self.bind, token: self.token, ..ViewConfig::default() };
        cfg.check().map_err(|(key, why)| Error::Usage(format!("{key}: {why}")))?;
        view::run(&view::ViewOptions { path: self.path, view: cfg }, |url| {
            println!("live view of the recorded session(s): {url} (Ctrl-C to stop)");
        })
    }
}
