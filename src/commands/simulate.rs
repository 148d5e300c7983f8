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

/// `beamwatch simulate --fourd`: a 4D-STEM scan series (`crate::simulate::fourd`).
pub struct FourdOptions {
    pub spec: crate::simulate::fourd::FourdSpec,
    pub publish: PublishOptions,
    /// Patterns per second; 0: as fast as the receiver takes them.
    pub patterns_per_s: f64,
    /// Where to write the truth (JSON): scan shape, dose per scan, Dc per region, spot positions.
    pub truth: Option<PathBuf>,
}

pub fn run_fourd(opts: &FourdOptions) -> Result<crate::simulate::fourd::FourdReport, Error> {
    let sim = std::sync::Arc::new(crate::simulate::fourd::FourdSim::new(opts.spec.clone()));
    // The truth is written first: a receiver may read it while the series is still being sent.
    if let Some(path) = &opts.truth {
        let bytes = serde_json::to_vec_pretty(&sim.truth())
            .map_err(|e| Error::Output { path: path.clone(), problem: e.to_string() })?;
        crate::report::write_atomic(path, &bytes)?;
    }
    let report = runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(crate::daemon::stop_on_signal(cancel.clone()));
        crate::simulate::fourd::publish(sim, &opts.publish, opts.patterns_per_s, cancel, None).await
    })?;
    Ok(report)
}
