//! `beamwatch view SESSION.h5|FOLDER`: the live view's page for recorded sessions (the daemon's
//! `sessions/`, a replay's results file), for review after the fact. Serves until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::pipeline::runtime;
use crate::view::{Hub, ViewConfig, recorded};

pub struct ViewOptions {
    /// A session file, or a folder of them.
    pub path: PathBuf,
    pub view: ViewConfig,
}

/// Loads the sessions into a hub; `ready` receives the page's address once it is served.
pub fn run(opts: &ViewOptions, ready: impl FnOnce(&str)) -> Result<(), Error> {
    let files = recorded::session_files(&opts.path)?;
    let hub = Hub::new(recorded::meta(&files), opts.view.event_buffer);
    let bar = crate::progress::items_bar(files.len() as u64, "reading sessions");
    for f in &files {
        recorded::load(&hub, f)?;
        // Each series' picture is made before the next series is read (the hub makes only the
        // newest frame's picture).
        hub.settle(Duration::from_secs(3));
        bar.inc(1);
    }
    bar.finish_and_clear();
    runtime()?.block_on(async {
        let stop = CancellationToken::new();
        let server = crate::view::serve(hub, &opts.view, stop.clone()).await?;
        ready(&server.url);
        tokio::spawn(crate::daemon::stop_on_signal(stop.clone()));
        server.wait(stop).await;
        Ok(())
    })
}
