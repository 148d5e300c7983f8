//! Electron dose: per frame from beam current, dwell time and scan pixel size, and cumulative over
//! a series, with the source of every input recorded.
//!
//! D_frame [e⁻/Å²] = I [A] · t_dwell [s] / (e · Δx [Å]²). When the scan pixel is smaller than the
//! probe the electrons still land on the probe area, so the per-area dose is an upper estimate; the
//! output says so when the probe size is known.

use serde::{Deserialize, Serialize};

use crate::decode::DoseHeader;

/// Elementary charge in coulombs (exact, SI 2019).
pub const ELEMENTARY_CHARGE_C: f64 = 1.602_176_634e-19;

/// Dose per frame in e⁻/Å² from beam current (pA), dwell time (µs) and pixel size (Å).
pub fn dose_per_frame_e_per_a2(beam_current_pa: f64, dwell_time_us: f64, pixel_size_a: f64) -> f64 {
    (beam_current_pa * 1e-12) * (dwell_time_us * 1e-6) / (ELEMENTARY_CHARGE_C * pixel_size_a * pixel_size_a)
}

/// `[dose]` configuration: values used when the stream does not carry them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoseConfig {
    pub beam_current_pa: Option<f64>,
    pub dwell_time_us: Option<f64>,
    pub pixel_size_a: Option<f64>,
    /// Probe diameter; a scan pixel smaller than it makes the per-area dose an upper estimate.
    pub probe_size_a: Option<f64>,
    /// The dose per frame set directly (overrides current, dwell and pixel size).
    pub per_frame_e_per_a2: Option<f64>,
}

impl DoseConfig {
    /// Checks every value is a positive finite number; returns the offending key.
    pub fn invalid(&self) -> Option<(&'static str, f64)> {
        [
            ("dose.beam_current_pa", self.beam_current_pa),
            ("dose.dwell_time_us", self.dwell_time_us),
            ("dose.pixel_size_a", self.pixel_size_a),
            ("dose.probe_size_a", self.probe_size_a),
            ("dose.per_frame_e_per_a2", self.per_frame_e_per_a2),
        ]
        .into_iter()
        .find_map(|(k, v)| v.filter(|v| !(v.is_finite() && *v > 0.0)).map(|v| (k, v)))
    }
}

/// Where a dose input came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The frame's own header.
    FrameHeader,
    /// The series start message.
    SeriesHeader,
    Config,
    /// 4D-STEM with a counting detector and no current known: the mean counts per pattern over the
    /// pattern frame time × e (1 count = 1 electron).
    EstimatedFromCounts,
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Input {
    pub value: Option<f64>,
    pub source: Source,
}

fn pick(frame: Option<f64>, series: Option<f64>, config: Option<f64>) -> Input {
    let ok = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
    match (ok(frame), ok(series), ok(config)) {
        (Some(v), _, _) => Input { value: Some(v), source: Source::FrameHeader },
        (None, Some(v), _) => Input { value: Some(v), source: Source::SeriesHeader },
        (None, None, Some(v)) => Input { value: Some(v), source: Source::Config },
        _ => Input { value: None, source: Source::Missing },
    }
}

/// The dose of one frame and the series total after it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameDose {
    pub per_frame_e_per_a2: Option<f64>,
    /// Includes this frame (the reference frame already carries one frame of dose).
    pub cumulative_e_per_a2: Option<f64>,
    pub beam_current_pa: Input,
    pub dwell_time_us: Input,
    pub pixel_size_a: Input,
    /// True when the dose per frame came from `dose.per_frame_e_per_a2`.
    pub per_frame_from_config: bool,
    /// The scan pixel is smaller than the probe: the per-area dose is an upper estimate.
    pub upper_estimate: bool,
}

/// Cumulative dose of one series.
#[derive(Clone, Debug)]
pub struct DoseAccount {
    config: DoseConfig,
    series: DoseHeader,
    cumulative: f64,
    /// Once a frame's dose is unknown the total is unknown for the rest of the series.
    known: bool,
    frames: u64,
}

impl DoseAccount {
    pub fn new(config: DoseConfig, series: DoseHeader) -> Self {
        Self { config, series, cumulative: 0.0, known: true, frames: 0 }
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn cumulative_e_per_a2(&self) -> Option<f64> {
        (self.known && self.frames > 0).then_some(self.cumulative)
    }

    /// Accounts one received frame (analysed or not: every frame irradiates the sample).
    pub fn add_frame(&mut self, frame: &DoseHeader) -> FrameDose {
        let c = &self.config;
        let current = pick(frame.beam_current_pa, self.series.beam_current_pa, c.beam_current_pa);
        let dwell = pick(frame.dwell_time_us, self.series.dwell_time_us, c.dwell_time_us);
        let pixel = pick(frame.pixel_size_a, self.series.pixel_size_a, c.pixel_size_a);
        let (per_frame, from_config) = match (c.per_frame_e_per_a2, current.value, dwell.value, pixel.value) {
            (Some(d), ..) => (Some(d), true),
            (None, Some(i), Some(t), Some(x)) => (Some(dose_per_frame_e_per_a2(i, t, x)), false),
            _ => (None, false),
        };
        self.frames += 1;
        match per_frame {
            Some(d) => self.cumulative += d,
            None => self.known = false,
        }
        let upper_estimate = matches!((pixel.value, c.probe_size_a), (Some(x), Some(p)) if x < p) && !from_config;
        FrameDose {
            per_frame_e_per_a2: per_frame,
            cumulative_e_per_a2: self.cumulative_e_per_a2(),
            beam_current_pa: current,
            dwell_time_us: dwell,
            pixel_size_a: pixel,
            per_frame_from_config: from_config,
            upper_estimate,
        }
    }
}

/// What is missing for a dose, in words (for one warning per series).
pub fn missing_inputs(d: &FrameDose) -> Vec<&'static str> {
    let mut m = Vec::new();
    if d.per_frame_e_per_a2.is_none() {
        if d.beam_current_pa.value.is_none() {
            m.push("beam current (dose.beam_current_pa)");
        }
        if d.dwell_time_us.value.is_none() {
            m.push("dwell time (dose.dwell_time_us)");
        }
        if d.pixel_size_a.value.is_none() {
            m.push("pixel size (dose.pixel_size_a)");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velox_worked_example() {
        // 418.6 pA, 10 µs dwell, 0.996 Å pixels → 2.63 × 10⁴ e⁻/Å² per frame.
        let d = dose_per_frame_e_per_a2(418.6, 10.0, 0.996);
        assert!((d - 2.634e4).abs() < 5.0, "{d}");
    }

    #[test]
    fn header_beats_series_beats_config_and_totals_accumulate() {
        let cfg = DoseConfig {
            beam_current_pa: Some(10.0),
            dwell_time_us: Some(1.0),
            pixel_size_a: Some(1.0),
            probe_size_a: Some(2.0),
            ..Default::default()
        };
        let series = DoseHeader { dwell_time_us: Some(2.0), ..Default::default() };
        let mut acc = DoseAccount::new(cfg, series);
        let d1 = acc.add_frame(&DoseHeader { beam_current_pa: Some(20.0), ..Default::default() });
        assert_eq!(d1.beam_current_pa.source, Source::FrameHeader);
        assert_eq!(d1.dwell_time_us.source, Source::SeriesHeader);
        assert_eq!(d1.pixel_size_a.source, Source::Config);
        let expect = dose_per_frame_e_per_a2(20.0, 2.0, 1.0);
        assert!((d1.per_frame_e_per_a2.expect("dose") - expect).abs() < 1e-9);
        assert!(d1.upper_estimate, "1 Å pixels under a 2 Å probe");
        let d2 = acc.add_frame(&DoseHeader::default());
        assert_eq!(d2.beam_current_pa.source, Source::Config);
        let total = expect + dose_per_frame_e_per_a2(10.0, 2.0, 1.0);
        assert!((d2.cumulative_e_per_a2.expect("total") - total).abs() < 1e-9);
    }

    #[test]
    fn missing_inputs_make_the_dose_unknown_and_say_which() {
        let mut acc =
            DoseAccount::new(DoseConfig { dwell_time_us: Some(1.0), ..Default::default() }, DoseHeader::default());
        let d = acc.add_frame(&DoseHeader::default());
        assert_eq!(d.per_frame_e_per_a2, None);
        assert_eq!(d.cumulative_e_per_a2, None);
        assert_eq!(missing_inputs(&d), vec!["beam current (dose.beam_current_pa)", "pixel size (dose.pixel_size_a)"]);
        let direct = DoseConfig { per_frame_e_per_a2: Some(5.0), ..Default::default() };
        let mut acc = DoseAccount::new(direct, DoseHeader::default());
        acc.add_frame(&DoseHeader::default());
        assert_eq!(acc.add_frame(&DoseHeader::default()).cumulative_e_per_a2, Some(10.0));
        assert_eq!(
            DoseConfig { beam_current_pa: Some(-1.0), ..Default::default() }.invalid(),
            Some(("dose.beam_current_pa", -1.0))
        );
    }
}
