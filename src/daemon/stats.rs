//! The daemon's counters: every message is accounted for — analysed, skipped, or rejected with a
//! reason.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::decode::DecodeErrorKind;

/// A bounded window of recent samples for percentiles (memory stays flat however long it runs).
#[derive(Debug)]
pub struct Window {
    samples: Vec<f64>,
    next: usize,
    cap: usize,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        Self { samples: Vec::with_capacity(cap), next: 0, cap }
    }

    pub fn push(&mut self, v: f64) {
        if self.samples.len() < self.cap {
            self.samples.push(v);
        } else {
            self.samples[self.next] = v;
        }
        self.next = (self.next + 1) % self.cap;
    }

    /// (p50, p99, max) of the window.
    pub fn percentiles(&self) -> Option<Percentiles> {
        percentiles(&self.samples)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn percentiles(v: &[f64]) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    Some(Percentiles { count: s.len(), p50: at(0.5), p99: at(0.99), max: s[s.len() - 1] })
}

#[derive(Debug)]
pub struct Stats {
    pub messages: AtomicU64,
    pub frames_received: AtomicU64,
    pub frames_analysed: AtomicU64,
    /// Passed over because a newer frame was waiting (analysis behind).
    pub frames_skipped: AtomicU64,
    /// Passed over at once because the queue was full (also counted in `frames_skipped`).
    pub frames_dropped_queue_full: AtomicU64,
    /// Frames that could not be analysed (e.g. shape changed mid-series, constant reference).
    pub analysis_errors: AtomicU64,
    pub ignored_messages: AtomicU64,
    pub series_started: AtomicU64,
    pub series_ended: AtomicU64,
    pub decode_errors: Mutex<BTreeMap<DecodeErrorKind, u64>>,
    pub analysis_ms: Mutex<Window>,
    /// The most recent series, in brief (bounded).
    pub series: Mutex<std::collections::VecDeque<SeriesBrief>>,
}

/// How many finished series the daemon report keeps.
pub const SERIES_KEPT: usize = 64;

/// One finished series, in brief (the full summary is in its JSON file).
#[derive(Clone, Debug, Serialize)]
pub struct SeriesBrief {
    pub series: String,
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    pub analysis_errors: u64,
    pub total_dose_e_per_a2: Option<f64>,
    pub critical_dose_fit: Option<crate::alarms::forecast::Fit>,
    pub alarms: Vec<super::compute::AlarmRecord>,
    pub summary_file: String,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            messages: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            frames_analysed: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            frames_dropped_queue_full: AtomicU64::new(0),
            analysis_errors: AtomicU64::new(0),
            ignored_messages: AtomicU64::new(0),
            series_started: AtomicU64::new(0),
            series_ended: AtomicU64::new(0),
            decode_errors: Mutex::new(BTreeMap::new()),
            analysis_ms: Mutex::new(Window::new(4096)),
            series: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Stats {
    pub fn series_done(&self, brief: SeriesBrief) {
        if let Ok(mut q) = self.series.lock() {
            if q.len() == SERIES_KEPT {
                q.pop_front();
            }
            q.push_back(brief);
        }
    }

    pub fn decode_error(&self, kind: DecodeErrorKind) {
        if let Ok(mut m) = self.decode_errors.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }

    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Resident memory of this process now (Linux `VmRSS`), MiB.
pub fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn window_keeps_only_recent_samples() {
        let mut w = super::Window::new(3);
        for v in [100.0, 1.0, 2.0, 3.0] {
            w.push(v);
        }
        let p = w.percentiles().expect("samples");
        assert_eq!((p.count, p.p50, p.max), (3, 2.0, 3.0));
    }
}
