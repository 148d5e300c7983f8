//! What a series leaves behind when it ends: its summary (`series_<id>.json`, the session file's
//! `/summary`, the `beamwatch.summary` topic) — frames accounted, dose, alarms, the
//! damage-versus-dose timeline and the critical-dose fit.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::alarms::AlarmRecord;
use crate::alarms::forecast::Fit;
use crate::damage::{NoiseFloor, PatchThreshold, Summary};
use crate::decode::SeriesInfo;
use crate::dose::FrameDose;
use crate::register::Lock;
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

/// A run of frames registered other than directly to the reference.
#[derive(Clone, Debug, Serialize)]
pub struct RegistrationNote {
    pub first_frame: u64,
    pub last_frame: u64,
    /// Frames in the run (analysed frames only: skipped frames are not registered).
    pub frames: u64,
    #[serde(flatten)]
    pub lock: Lock,
    /// Drift measured (or predicted) for the first frame of the run.
    pub dx_px: f64,
    pub dy_px: f64,
    pub detail: String,
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
    /// Frames whose drift could not be established (a jump, a lost lock): not compared.
    pub frames_not_registered: u64,
    /// Frames in which every patch was excluded (gaps, drift): nothing compared.
    pub frames_without_patches: u64,
    /// Frames not registered directly to the reference, as runs of the same kind.
    pub registration: Vec<RegistrationNote>,
    /// How the per-patch threshold is set; with `noise_floor` once calibrated (method, frames,
    /// z, σ, the per-patch thresholds).
    pub patch_threshold: PatchThreshold,
    pub noise_floor: Option<NoiseFloor>,
    pub reference_frame: Option<u64>,
    pub last_dose: Option<FrameDose>,
    pub last_summary: Option<Summary>,
    /// Damage curve s(D) = floor + A·(1 − exp(−D/Dc)) fitted to the mean dissimilarity; `null`
    /// unless the data determine it (then `critical_dose_note` says why).
    pub critical_dose_fit: Option<Fit>,
    pub critical_dose_note: Option<String>,
    pub alarms: Vec<AlarmRecord>,
    pub timeline: Vec<TimelinePoint>,
    /// 4D-STEM: Bragg-spot fading against dose, beside the real-space damage above; `null` for
    /// series of real-space frames.
    pub diffraction: Option<Diffraction>,
    pub provenance: Provenance,
}

/// A spot-fading fit I(D) = I₀·exp(−D/Dc) + c, or why there is none (never numbers for a fit the
/// data do not determine).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Fading {
    pub dc_e_per_a2: Option<f64>,
    pub dc_sigma_e_per_a2: Option<f64>,
    /// Fraction of the initial spot intensity lost at the last scan (from the fit).
    pub fraction_lost: Option<f64>,
    pub i0: Option<f64>,
    pub background: Option<f64>,
    pub points: usize,
    /// "not determined: …" when there is no fit.
    pub note: Option<String>,
}

impl Fading {
    pub fn of(fit: Result<crate::fourd::FadingFit, String>) -> Self {
        match fit {
            Ok(f) => Self {
                dc_e_per_a2: Some(f.dc_e_per_a2),
                dc_sigma_e_per_a2: Some(f.dc_sigma_e_per_a2),
                fraction_lost: Some(f.fraction_lost),
                i0: Some(f.i0),
                background: Some(f.background),
                points: f.points,
                note: None,
            },
            Err(why) => Self { note: Some(format!("not determined: {why}")), ..Self::default() },
        }
    }
}

/// One region of the scan (regions row-major) and its own spot fading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionFading {
    pub row: usize,
    pub col: usize,
    #[serde(flatten)]
    pub fading: Fading,
}

/// What the diffraction side of a 4D-STEM series shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diffraction {
    pub scans: usize,
    pub scans_incomplete: u64,
    pub spots: usize,
    /// Dose per scan at every probe position, I·t_dwell/(e·step²).
    pub dose_per_scan_e_per_a2: Option<f64>,
    /// Dose rate while the probe dwells on a position, I/(e·step²).
    pub dose_rate_e_per_a2_per_s: Option<f64>,
    /// Where the beam current came from (an estimate from counts says so).
    pub beam_current_source: Option<crate::dose::Source>,
    /// Summed spot intensity of the reference scan and the last, and the fraction lost between.
    pub reference_spot_intensity: Option<f64>,
    pub last_spot_intensity: Option<f64>,
    pub measured_fraction_lost: Option<f64>,
    #[serde(flatten)]
    pub fading: Fading,
    pub regions: Vec<RegionFading>,
}

impl SeriesSummary {
    /// The spot-fading result for a log line (4D-STEM series only).
    pub fn diffraction_text(&self) -> String {
        match &self.diffraction {
            Some(Diffraction { fading: Fading { dc_e_per_a2: Some(dc), dc_sigma_e_per_a2: Some(s), .. }, spots, .. }) => {
                format!("; spot fading ({spots} spots) Dc {dc:.0} ± {s:.0} e⁻/Å²")
            }
            Some(Diffraction { fading: Fading { note: Some(n), .. }, .. }) => format!("; spot fading {n}"),
            _ => String::new(),
        }
    }

    /// One log line's worth: the fitted critical dose, or why there is none.
    pub fn fit_text(&self) -> String {
        match (self.critical_dose_fit, &self.critical_dose_note) {
            (Some(f), _) => format!(
                "; critical dose {:.0} ± {:.0} e⁻/Å² after {:.0} e⁻/Å²",
                f.critical_dose_e_per_a2,
                f.critical_dose_sigma_e_per_a2.unwrap_or(f64::NAN),
                f.onset_dose_e_per_a2
            ),
            (None, Some(why)) => format!("; critical dose {why}"),
            (None, None) => String::new(),
        }
    }
}

/// `series_<stem>.json` in `dir`, the stem from [`crate::record::file_stem`].
pub fn path(dir: &Path, series: &str) -> PathBuf {
    dir.join(format!("series_{}.json", crate::record::file_stem(series)))
}
