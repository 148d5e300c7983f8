//! What a series leaves behind when it ends: its summary (`series_<id>.json`, the session file's
//! `/summary`, the `beamwatch.summary` topic) — frames accounted, dose, alarms, the
//! damage-versus-dose timeline and the critical-dose fit.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::alarms::AlarmRecord;
use crate::alarms::forecast::Fit;
use crate::damage::Summary;
use crate::decode::SeriesInfo;
use crate::dose::FrameDose;
use crate::report::provenance::Provenance;

/// One analysed frame in a series summary.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    pub frame: u64,
    pub cumulative_dose_e_per_a2: Option<f64>,
    pub mean_dissimilarity: Option<f64>,
    pub fraction_above_threshold: Option<f64>,
    pub damaged_area_fraction: Option<f64>,
}

/// Written to `series_<id>.json` and published when a series ends.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub series: String,
    pub info: SeriesInfo,
    pub started: String,
    pub ended: String,
    /// The series ended because a new one started or the daemon stopped, not by an end message.
    pub implicit_end: bool,
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    pub analysis_errors: u64,
    pub reference_frame: Option<u64>,
    pub last_dose: Option<FrameDose>,
    pub last_summary: Option<Summary>,
    /// Damage curve s(D) = floor + A·(1 − exp(−D/Dc)) fitted to the mean dissimilarity.
    pub critical_dose_fit: Option<Fit>,
    pub alarms: Vec<AlarmRecord>,
    pub timeline: Vec<TimelinePoint>,
    pub provenance: Provenance,
}

impl SeriesSummary {
    /// One log line's worth: the fitted critical dose, or why there is none.
    pub fn fit_text(&self) -> String {
        match self.critical_dose_fit {
            Some(f) if f.determined() => format!(
                "; critical dose {:.0} ± {:.0} e⁻/Å² after {:.0} e⁻/Å²",
                f.critical_dose_e_per_a2,
                f.critical_dose_sigma_e_per_a2.unwrap_or(f64::NAN),
                f.onset_dose_e_per_a2
            ),
            Some(_) => "; critical dose not determined yet".into(),
            None => String::new(),
        }
    }
}

/// `series_<stem>.json` in `dir`, the stem from [`crate::record::file_stem`].
pub fn path(dir: &Path, series: &str) -> PathBuf {
    dir.join(format!("series_{}.json", crate::record::file_stem(series)))
}
