//! Measurements of the process itself: percentiles over a bounded window of recent timings, and
//! resident memory. Every timing the daemon reports goes through [`Window`], so memory stays flat
//! however long it runs.

use serde::Serialize;

/// A bounded window of recent samples for percentiles.
#[derive(Debug)]
pub struct Window {
    samples: Vec<f64>,
    next: usize,
    cap: usize,
}

/// Samples kept by the windows behind every reported latency.
pub const WINDOW_SAMPLES: usize = 4096;

impl Default for Window {
    fn default() -> Self {
        Self::new(WINDOW_SAMPLES)
    }
}

impl Window {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self { samples: Vec::with_capacity(cap.min(WINDOW_SAMPLES)), next: 0, cap }
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

/// Resident memory of this process now (Linux `VmRSS`), MiB.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// Largest resident set of this process so far (Linux `VmHWM`), MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()?;
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
