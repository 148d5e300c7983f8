//! `beamwatch simulate`: publish a simulated, damaged STEM series like a detector would.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::pipeline::runtime;
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
        let cancel = CancellationToken::new();
        tokio::spawn(crate::daemon::stop_on_signal(cancel.clone()));
        publish::publish(&opts.spec, &opts.publish, cancel, None).await
    })?;
    if let Some(path) = &opts.truth {
        let json = serde_json::json!({"spec": opts.spec, "onset_frame": report.onset_frame, "frames": report.truth});
        let bytes = serde_json::to_vec_pretty(&json)
            .map_err(|e| Error::Output { path: path.clone(), problem: e.to_string() })?;
        crate::report::write_atomic(path, &bytes)?;
    }
    Ok(report)
}
