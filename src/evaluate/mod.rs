//! Known-truth evaluation: how well each comparison setting finds damage whose extent is known.
//!
//! For every setting (metric × pre-filter σ × registration) a series is analysed from its first
//! frame; every later frame gets the AUC of its per-patch dissimilarity against the true damaged
//! patches, and the configured alarm rules run over it as in the daemon, so the first alarm can be
//! set against the true onset and alarms before the onset counted as false.

pub mod auc;
pub mod truth;

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::alarms::{AlarmEngine, Event, Observation, Rule};
use crate::damage::{AnalysisError, AnalysisSettings, Analyzer, Metric, PatchThreshold};
use crate::dose::{FrameDose, Input, Source};
use crate::engine::Engine;
use crate::frame::Frame;
use crate::register::Registration;

/// One combination under test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Setting {
    pub metric: Metric,
    pub prefilter_sigma_px: f32,
    pub registration: Registration,
}

impl Setting {
    pub fn label(&self) -> String {
        let reg = if self.registration == Registration::Off { "no reg" } else { "reg" };
        format!("{} σ={} {}", self.metric, self.prefilter_sigma_px, reg)
    }
}

/// A series with its truth: per frame, the per-pixel damage (reference coordinates) and the
/// cumulative dose, when known.
pub struct TruthSeries {
    pub name: String,
    pub frames: Vec<Frame>,
    pub damage: Vec<Vec<f32>>,
    pub cumulative_e_per_a2: Vec<Option<f64>>,
    /// First frame with true damage (`None`: the series is never damaged).
    pub onset_frame: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FrameScore {
    pub frame: usize,
    pub cumulative_e_per_a2: Option<f64>,
    pub damaged_patches: usize,
    pub intact_patches: usize,
    /// `None`: undefined (no damaged or no intact patch).
    pub auc: Option<f64>,
    pub mean_dissimilarity: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SettingResult {
    pub series: String,
    pub setting: Setting,
    /// How the per-patch threshold was set, and its value (median over patches) once set.
    pub threshold_mode: String,
    pub threshold: Option<f32>,
    pub frames: Vec<FrameScore>,
    /// First frame with a damaged patch (where early damage is scored).
    pub first_damaged_frame: Option<usize>,
    pub auc_early: Option<f64>,
    pub auc_late: Option<f64>,
    /// Mean AUC over every frame where it is defined.
    pub auc_mean: Option<f64>,
    pub onset_frame: Option<usize>,
    /// First frame at which the watched rule fired.
    pub alarm_frame: Option<usize>,
    /// alarm_frame − onset_frame (negative: it fired early).
    pub onset_delay_frames: Option<i64>,
    /// Alarms (any rule) raised before the true onset — all of them when there is no damage.
    pub false_alarms: usize,
    /// Frames whose drift could not be established (not scored, as the daemon does not compare them).
    pub frames_not_registered: usize,
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum EvaluateError {
    #[error("series {series}: {problem}")]
    Series { series: String, problem: String },
    #[error(transparent)]
    Analysis(#[from] crate::damage::AnalysisError),
}

/// Scores one setting on one series. `rule` names the rule whose first alarm is the detection.
pub fn evaluate(
    s: &TruthSeries,
    setting: Setting,
    base: &AnalysisSettings,
    engine: Option<Arc<Engine>>,
    rules: &[Rule],
    rule: &str,
) -> Result<SettingResult, EvaluateError> {
    let bad = |problem: String| EvaluateError::Series { series: s.name.clone(), problem };
    if s.frames.len() < 2 || s.damage.len() != s.frames.len() || s.cumulative_e_per_a2.len() != s.frames.len() {
        return Err(bad(format!(
            "{} frames, {} truth maps, {} doses: need ≥ 2 frames and one truth map and dose each",
            s.frames.len(),
            s.damage.len(),
            s.cumulative_e_per_a2.len()
        )));
    }
    let settings = AnalysisSettings {
        metric: setting.metric,
        prefilter_sigma_px: setting.prefilter_sigma_px,
        registration: setting.registration,
        // A fixed threshold is a dissimilarity of the base metric; other metrics calibrate theirs.
        threshold: match base.threshold {
            PatchThreshold::Fixed { .. } if setting.metric != base.metric => PatchThreshold::default(),
            t => t,
        },
        ..base.clone()
    };
    let threshold_mode = settings.threshold.describe();
    let mut analyzer = Analyzer::new(settings, engine)?;
    analyzer.set_reference(&s.frames[0])?;
    let grid = analyzer.grid().ok_or_else(|| bad("no patch grid".into()))?;
    let width = s.frames[0].width();
    let mut alarms = AlarmEngine::new(rules.to_vec());
    let mut scores = Vec::with_capacity(s.frames.len() - 1);
    let (mut alarm_frame, mut false_alarms) = (None, 0usize);
    let mut not_registered = 0usize;
    let mut threshold = None;
    for i in 1..s.frames.len() {
        if s.damage[i].len() != s.frames[i].len() {
            return Err(bad(format!(
                "frame {i}: truth map has {} pixels, the frame {}",
                s.damage[i].len(),
                s.frames[i].len()
            )));
        }
        let a = match analyzer.analyse_at(&s.frames[i], i as u64) {
            Ok(a) => a,
            Err(AnalysisError::NotRegistered(_)) => {
                // Not compared, as in the daemon: no score, no alarm.
                not_registered += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        threshold = a.summary.threshold.or(threshold);
        let labels = truth::patch_labels(&s.damage[i], width, &grid);
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for (k, l) in labels.iter().enumerate() {
            match l {
                Some(true) => pos.push(a.map.dissimilarity[k]),
                Some(false) => neg.push(a.map.dissimilarity[k]),
                None => {}
            }
        }
        let known = |v: Option<f64>| Input { value: v, source: Source::SeriesHeader };
        let dose = FrameDose {
            per_frame_e_per_a2: None,
            cumulative_e_per_a2: s.cumulative_e_per_a2[i],
            beam_current_pa: known(None),
            dwell_time_us: known(None),
            pixel_size_a: known(None),
            per_frame_from_config: false,
            upper_estimate: false,
        };
        let events = alarms.observe(&Observation {
            series: &s.name,
            frame: i as u64,
            time: SystemTime::now(),
            received: None,
            dose: &dose,
            summary: &a.summary,
            map: &a.map,
        });
        for e in &events {
            if let Event::Alarm(al) = e {
                if s.onset_frame.is_none_or(|o| i < o) {
                    false_alarms += 1;
                }
                if al.rule == rule && alarm_frame.is_none() {
                    alarm_frame = Some(i);
                }
            }
        }
        scores.push(FrameScore {
            frame: i,
            cumulative_e_per_a2: s.cumulative_e_per_a2[i],
            damaged_patches: pos.len(),
            intact_patches: neg.len(),
            auc: auc::auc(&pos, &neg),
            mean_dissimilarity: a.summary.mean_dissimilarity,
        });
    }
    let first = scores.iter().find(|f| f.damaged_patches > 0);
    let defined: Vec<f64> = scores.iter().filter_map(|f| f.auc).collect();
    Ok(SettingResult {
        series: s.name.clone(),
        setting,
        threshold_mode,
        threshold,
        first_damaged_frame: first.map(|f| f.frame),
        auc_early: first.and_then(|f| f.auc),
        auc_late: scores.last().and_then(|f| f.auc),
        auc_mean: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
        onset_frame: s.onset_frame,
        alarm_frame,
        onset_delay_frames: match (alarm_frame, s.onset_frame) {
            (Some(a), Some(o)) => Some(a as i64 - o as i64),
            _ => None,
        },
        false_alarms,
        frames_not_registered: not_registered,
        frames: scores,
    })
}
