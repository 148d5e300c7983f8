//! `beamwatch simulate`: publish a simulated, damaged STEM series like a detector would.

use std::path::PathBuf;

use tokio::sync::watch;

use super::run::runtime;
use crate::Error;
use crate::simulate::publish::{self, PublishOptions, PublishReport};
use crate::simulate::series::SeriesSpec;

pub struct SimulateOptions {
    pub spec: SeriesSpec,
    pub publish: PublishOptions,
    /// Where to write the ground truth (JSON): onset frame, damaged fraction and drift per frame.
    pub truth: Option<PathBuf>,
}

pub fn run(opts: &SimulateOptions) -> Result<PublishReport, Error> {
    let report = runtime()?.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(crate::daemon::stop_on_signal(stop_tx));
        publish::publish(&opts.spec, &opts.publish, stop_rx, None).await
    });
    let report = report.map_err(|e| Error::Usage(e.to_string()))?;
    if let Some(path) = &opts.truth {
        let json = serde_json::json!({"spec": opts.spec, "onset_frame": report.onset_frame, "frames": report.truth});
        let bytes = serde_json::to_vec_pretty(&json)
            .map_err(|e| Error::Output { path: path.clone(), problem: e.to_string() })?;
        crate::report::write_atomic(path, &bytes)?;
    }
    Ok(report)
}
