//! The pipeline's counters: every frame handed to it is accounted for — analysed, skipped, or not
//! analysable with a reason.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::alarms::AlarmRecord;
use crate::alarms::forecast::Fit;
use crate::telemetry::Window;

#[derive(Debug, Default)]
pub struct Stats {
    pub frames_received: AtomicU64,
    pub frames_analysed: AtomicU64,
    /// Passed over because a newer frame was waiting (analysis behind).
    pub frames_skipped: AtomicU64,
    /// Passed over at once because the queue was full (also counted in `frames_skipped`).
    pub frames_dropped_queue_full: AtomicU64,
    /// Passed over because their analysis did not fit the memory budget at the time (also counted
    /// in `frames_skipped`).
    pub frames_dropped_budget: AtomicU64,
    /// Never analysable: one frame's analysis would take more than its share of the budget.
    pub frames_over_budget: AtomicU64,
    /// Frames that could not be analysed (e.g. shape changed mid-series, constant reference).
    pub analysis_errors: AtomicU64,
    /// Frames whose drift could not be established (not compared, no alarms).
    pub frames_not_registered: AtomicU64,
    /// Frames in which every patch was excluded (nothing compared).
    pub frames_without_patches: AtomicU64,
    /// Messages the source could not decode (counted by the source, shown by the live view).
    pub messages_rejected: AtomicU64,
    pub series_started: AtomicU64,
    pub series_ended: AtomicU64,
    /// 4D-STEM (the scan stage): diffraction patterns handed in …
    pub patterns_received: AtomicU64,
    /// … of series refused for want of a scan shape (counted and dropped),
    pub patterns_refused: AtomicU64,
    /// … of the wrong size for their series (dropped, their position masked),
    pub patterns_wrong_size: AtomicU64,
    /// … arriving after their scan was complete (dropped),
    pub patterns_late: AtomicU64,
    /// … that found the pattern workers' queue full or over its share of the memory budget
    /// (dropped, their position masked),
    pub patterns_dropped_queue: AtomicU64,
    /// positions of completed scans where no pattern arrived (masked),
    pub patterns_masked_missing: AtomicU64,
    /// positions where more than one pattern arrived (masked).
    pub patterns_duplicate: AtomicU64,
    pub scans_completed: AtomicU64,
    /// Scans cut short by the end of their series (masked where nothing arrived).
    pub scans_incomplete: AtomicU64,
    /// Scans whose analysed image could not be made (every position masked).
    pub scans_not_analysable: AtomicU64,
    /// 4D series refused (no scan shape, a shape that does not divide the image count).
    pub series_refused: AtomicU64,
    pub analysis_ms: Mutex<Window>,
    /// The most recent series, in brief (at most [`SERIES_KEPT`]).
    pub series: Mutex<VecDeque<SeriesBrief>>,
}

/// How many finished series the report keeps.
pub const SERIES_KEPT: usize = 64;

/// One finished series, in brief (the full summary is in its JSON file).
#[derive(Clone, Debug, Serialize)]
pub struct SeriesBrief {
    pub series: String,
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    pub analysis_errors: u64,
    pub frames_not_registered: u64,
    pub frames_without_patches: u64,
    /// How the per-patch threshold was set and, once calibrated, its value.
    pub patch_threshold: String,
    pub total_dose_e_per_a2: Option<f64>,
    /// `null` unless the data determine it; then the note says why.
    pub critical_dose_fit: Option<Fit>,
    pub critical_dose_note: Option<String>,
    /// 4D-STEM: the spot-fading fit (globally and per region), beside the real-space one.
    pub diffraction: Option<super::summary::Diffraction>,
    pub alarms: Vec<AlarmRecord>,
    pub summary_file: String,
}

pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

pub fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The scan stage's counters in a report (4D-STEM; zeros otherwise).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanCounters {
    pub patterns_received: u64,
    pub patterns_refused: u64,
    pub patterns_wrong_size: u64,
    pub patterns_late: u64,
    pub patterns_dropped_queue: u64,
    pub patterns_masked_missing: u64,
    pub patterns_duplicate: u64,
    pub scans_completed: u64,
    pub scans_incomplete: u64,
    pub scans_not_analysable: u64,
    pub series_refused: u64,
}

impl Stats {
    pub fn scan_counters(&self) -> ScanCounters {
        ScanCounters {
            patterns_received: get(&self.patterns_received),
            patterns_refused: get(&self.patterns_refused),
            patterns_wrong_size: get(&self.patterns_wrong_size),
            patterns_late: get(&self.patterns_late),
            patterns_dropped_queue: get(&self.patterns_dropped_queue),
            patterns_masked_missing: get(&self.patterns_masked_missing),
            patterns_duplicate: get(&self.patterns_duplicate),
            scans_completed: get(&self.scans_completed),
            scans_incomplete: get(&self.scans_incomplete),
            scans_not_analysable: get(&self.scans_not_analysable),
            series_refused: get(&self.series_refused),
        }
    }

    pub fn series_done(&self, brief: SeriesBrief) {
        if let Ok(mut q) = self.series.lock() {
            if q.len() == SERIES_KEPT {
                q.pop_front();
            }
            q.push_back(brief);
        }
    }

    pub fn analysis_time(&self, ms: f64) {
        if let Ok(mut w) = self.analysis_ms.lock() {
            w.push(ms);
        }
    }
}
