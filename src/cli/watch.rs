//! `beamwatch watch FOLDER`.

use std::path::PathBuf;

use clap::Args;

use super::analysis::{AnalysisArgs, DoseFlags};
use super::view::ViewFlags;
use crate::Error;
use crate::commands::watch;
use crate::watch::WatchOptions;

#[derive(Args)]
pub struct WatchArgs {
    /// The folder the microscope PC exports images into (TIFF, PNG, .npy, Gatan DM3/DM4, TIA
    /// .ser/.emi, HDF5 — whatever `replay` reads). Sub-folders one level down are watched too.
    folder: PathBuf,
    /// Configuration ([analysis], [dose], [sinks], [record], [view], [[alarms]]) and analysis flags.
    #[command(flatten)]
    analysis: AnalysisArgs,
    /// Output directory (alarm log, series summaries, sessions, watch_report.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds between looks at the folder.
    #[arg(long, default_value_t = 0.5)]
    poll_s: f64,
    /// A file is read once it has not changed for this many seconds.
    #[arg(long, default_value_t = 1.0)]
    settle_s: f64,
    /// A file that still cannot be read this many seconds after it appeared is rejected (counted,
    /// named in watch_report.json); until then it is taken for one still being written.
    #[arg(long, default_value_t = 60.0)]
    give_up_s: f64,
    /// A pause between files longer than this many seconds starts a new series (so does a file in
    /// another sub-folder).
    #[arg(long, default_value_t = 120.0)]
    new_series_after_s: f64,
    /// Stop when no new file has arrived for this many seconds (default: until Ctrl-C).
    #[arg(long)]
    exit_after_idle_s: Option<f64>,
    #[command(flatten)]
    dose: DoseFlags,
    #[command(flatten)]
    view: ViewFlags,
}

impl WatchArgs {
    pub fn run(self) -> Result<(), Error> {
        let mut cfg = self.analysis.config()?;
        self.dose.apply(&mut cfg.dose);
        if let Some(o) = self.out {
            cfg.pipeline.out_dir = o;
        }
        self.view.apply(&mut cfg.view)?;
        for (name, v) in [
            ("--poll-s", self.poll_s),
            ("--settle-s", self.settle_s),
            ("--give-up-s", self.give_up_s),
            ("--new-series-after-s", self.new_series_after_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Usage(format!("{name} must be a number of seconds ≥ 0")));
            }
        }
        let opts = WatchOptions {
            folder: self.folder,
            poll_s: self.poll_s,
            settle_s: self.settle_s,
            give_up_s: self.give_up_s,
            new_series_after_s: self.new_series_after_s,
            exit_after_idle_s: self.exit_after_idle_s,
        };
        let r = watch::run(cfg, opts)?;
        println!(
            "watched {}: {} files read, {} rejected, {} frames; {} analysed, {} series, {} alarms",
            r.folder.display(),
            r.files_read,
            r.files_rejected,
            r.frames_handed,
            r.pipeline.frames_analysed,
            r.pipeline.series_ended,
            r.pipeline.alarms
        );
        Ok(())
    }
}
