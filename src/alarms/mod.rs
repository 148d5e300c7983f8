//! Dose-threshold and damage alarms: rules from the config, evaluated on every analysed frame (and
//! the dose budget on every received frame), with debounce and hysteresis so one event gives one
//! alarm.
//!
//! - [`forecast`]: the critical-dose fit behind the forecast rule.
//! - [`sinks`]: where alarms go — a ZeroMQ PUB socket, an append-only JSON-lines log, a command.

pub mod forecast;
pub mod sinks;

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::damage::blocks::Block;
use crate::damage::calibrate::normal_upper_quantile;
use crate::damage::{SimilarityMap, Summary};
use crate::dose::FrameDose;
use crate::clock::rfc3339;
use forecast::Fit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Critical,
}

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Mean dissimilarity of the frame above `above`.
    MeanDissimilarity,
    /// Share of analysed patches above their (calibrated) threshold, above `above`.
    FractionAbove,
    /// A connected cluster of at least `patches` significant patches: the first few damaged
    /// patches, long before they are a share of the field.
    Cluster,
    /// Share of analysed patches in connected damaged regions, above `above`.
    DamagedArea,
    /// Cumulative dose reaches `budget_e_per_a2`.
    DoseBudget,
    /// The fitted damage curve predicts `signal` reaches `above` within `within_frames` frames.
    Forecast,
    /// 4D-STEM: the summed Bragg-spot intensity has lost at least `above` (a fraction) of the
    /// reference scan's, by more than 3σ of its Poisson noise.
    SpotFading,
    /// 4D-STEM: the fitted spot fading predicts the fraction lost reaches `above` within
    /// `within_frames` scans.
    SpotForecast,
    /// Not a rule: raised by the daemon itself when the session recording stops (e.g. disk full).
    RecordingStopped,
}

/// A per-frame damage signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    MeanDissimilarity,
    FractionAbove,
    DamagedArea,
}

impl Signal {
    pub fn of(self, s: &Summary) -> Option<f64> {
        match self {
            Self::MeanDissimilarity => s.mean_dissimilarity,
            Self::FractionAbove => s.fraction_above_threshold,
            Self::DamagedArea => s.damaged_area_fraction,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::MeanDissimilarity => "mean dissimilarity",
            Self::FractionAbove => "share of patches above the patch threshold",
            Self::DamagedArea => "damaged-area share",
        }
    }
}

fn one() -> u32 {
    1
}
fn default_clear() -> f64 {
    0.8
}

/// One `[[alarms]]` table of the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub level: Level,
    pub when: When,
    /// Threshold of the signal (and the forecast's target).
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub budget_e_per_a2: Option<f64>,
    /// Cluster: the fewest connected significant patches that fire.
    #[serde(default)]
    pub patches: Option<u32>,
    /// Cluster: also fire when a 2×2 or 3×3 block of patches is jointly significant, at one false
    /// block per this many undamaged frames (default [`DEFAULT_ONSET_BLOCK_FALSE_EVERY_FRAMES`];
    /// 0 turns the block test off).
    #[serde(default)]
    pub block_false_every_frames: Option<f64>,
    /// Forecast: the signal to forecast (default mean_dissimilarity).
    #[serde(default)]
    pub signal: Option<Signal>,
    /// Forecast: alarm when the target is predicted within this many frames.
    #[serde(default)]
    pub within_frames: Option<f64>,
    /// Debounce: consecutive analysed frames the condition must hold.
    #[serde(default = "one")]
    pub hold_frames: u32,
    /// Hysteresis: an active alarm re-arms once the signal falls below this share of `above`.
    #[serde(default = "default_clear")]
    pub clear_fraction: f64,
}

/// Onset rule defaults, chosen by the known-truth evaluation (docs/evaluation.md): the smallest
/// cluster and hold with no false alarm in the suite's undamaged series and frames, for every metric.
pub const DEFAULT_ONSET_CLUSTER_PATCHES: u32 = 2;
pub const DEFAULT_ONSET_HOLD_FRAMES: u32 = 1;
/// One false block per 10,000 undamaged frames (nominal, for normal z-scores). On the known-truth
/// suite the realised rate was about twice the nominal one (1 false alarm per metric in 174 undamaged
/// frames at a nominal 1 per 333); 10,000 left none and kept every metric's mean onset delay ≤ 1
/// frame (docs/evaluation.md).
pub const DEFAULT_ONSET_BLOCK_FALSE_EVERY_FRAMES: f64 = 10_000.0;

/// A built-in rule: fires on one frame above `above`, clears below half of it.
fn built_in(name: &str, level: Level, when: When, above: f64) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        level,
        when,
        above: Some(above),
        patches: None,
        block_false_every_frames: None,
        budget_e_per_a2: None,
        signal: None,
        within_frames: None,
        hold_frames: 1,
        clear_fraction: 0.5,
    }
}

/// The rules used when a configuration lists none. Every one is relative to the calibrated
/// per-patch threshold (significant patches), so it means the same for every metric and weights.
pub fn default_rules() -> Vec<RuleConfig> {
    let rule = built_in;
    vec![
        RuleConfig {
            above: None,
            patches: Some(DEFAULT_ONSET_CLUSTER_PATCHES),
            hold_frames: DEFAULT_ONSET_HOLD_FRAMES,
            ..rule("damage-onset", Level::Warning, When::Cluster, 0.0)
        },
        rule("damage-spreading", Level::Critical, When::DamagedArea, 0.10),
        RuleConfig {
            signal: Some(Signal::DamagedArea),
            within_frames: Some(5.0),
            ..rule("damage-forecast", Level::Warning, When::Forecast, 0.10)
        },
    ]
}

/// The rules added to the defaults when `[fourd]` is enabled (and the configuration lists none):
/// spot fading of 30 % (critical), and its forecast within 3 scans (warning).
pub fn default_fourd_rules() -> Vec<RuleConfig> {
    let rule = |name: &str, level, when| built_in(name, level, when, 0.3);
    vec![
        rule("spot-fading", Level::Critical, When::SpotFading),
        RuleConfig { within_frames: Some(3.0), ..rule("spot-forecast", Level::Warning, When::SpotForecast) },
    ]
}

/// A validated rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Threshold { signal: Signal, above: f64 },
    /// `block_false_every_frames`: `None` when the block test is off.
    Cluster { patches: usize, block_false_every_frames: Option<f64> },
    DoseBudget { budget_e_per_a2: f64 },
    Forecast { signal: Signal, above: f64, within_frames: f64 },
    SpotFading { above: f64 },
    SpotForecast { above: f64, within_frames: f64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub level: Level,
    pub kind: Kind,
    pub hold_frames: u32,
    pub clear_fraction: f64,
}

impl RuleConfig {
    /// Turns the table into a rule, or says which key is missing or wrong.
    pub fn validate(&self) -> Result<Rule, String> {
        let positive = |key: &str, v: Option<f64>| -> Result<f64, String> {
            match v {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                Some(x) => Err(format!("`{key}` = {x} must be a positive number")),
                None => Err(format!(
                    "`{key}` is required when when = \"{}\"",
                    serde_json::to_value(self.when)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )),
            }
        };
        if self.name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        if self.hold_frames == 0 {
            return Err("`hold_frames` must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.clear_fraction) {
            return Err(format!("`clear_fraction` = {} must be within 0..=1", self.clear_fraction));
        }
        let kind = match self.when {
            When::MeanDissimilarity => {
                Kind::Threshold { signal: Signal::MeanDissimilarity, above: positive("above", self.above)? }
            }
            When::FractionAbove => {
                Kind::Threshold { signal: Signal::FractionAbove, above: positive("above", self.above)? }
            }
            When::DamagedArea => Kind::Threshold { signal: Signal::DamagedArea, above: positive("above", self.above)? },
            When::Cluster => match self.patches {
                Some(k) if k >= 1 => Kind::Cluster {
                    patches: k as usize,
                    block_false_every_frames: match self.block_false_every_frames {
                        None => Some(DEFAULT_ONSET_BLOCK_FALSE_EVERY_FRAMES),
                        Some(f) if f == 0.0 => None,
                        Some(f) if f.is_finite() && f >= 1.0 => Some(f),
                        Some(f) => {
                            return Err(format!(
                                "`block_false_every_frames` = {f} must be at least 1 (frames), or 0 to turn the block test off"
                            ));
                        }
                    },
                },
                Some(_) => return Err("`patches` must be at least 1".into()),
                None => return Err("`patches` is required when when = \"cluster\"".into()),
            },
            When::DoseBudget => {
                Kind::DoseBudget { budget_e_per_a2: positive("budget_e_per_a2", self.budget_e_per_a2)? }
            }
            When::RecordingStopped => {
                return Err("`when = \"recording_stopped\"` is raised by beamwatch itself, not a rule".into());
            }
            When::SpotFading | When::SpotForecast => {
                let above = positive("above", self.above)?;
                if above >= 1.0 {
                    return Err(format!("`above` = {above} is a fraction of the spot intensity lost: below 1"));
                }
                match self.when {
                    When::SpotFading => Kind::SpotFading { above },
                    _ => Kind::SpotForecast { above, within_frames: positive("within_frames", self.within_frames)? },
                }
            }
            When::Forecast => Kind::Forecast {
                signal: self.signal.unwrap_or(Signal::MeanDissimilarity),
                above: positive("above", self.above)?,
                within_frames: positive("within_frames", self.within_frames)?,
            },
        };
        Ok(Rule {
            name: self.name.clone(),
            level: self.level,
            kind,
            hold_frames: self.hold_frames,
            clear_fraction: self.clear_fraction,
        })
    }
}

/// The block (of those in a frame's summary) furthest above its threshold, with that threshold:
/// the z for one false block per `false_every_frames` frames, shared between the block edges and
/// over every position tested (a normal tail; see [`crate::damage::blocks`]).
fn strongest_block(blocks: &[Block], false_every_frames: f64) -> Option<(Block, f64)> {
    blocks
        .iter()
        .map(|b| {
            let p = 1.0 / (false_every_frames * blocks.len() as f64 * b.positions.max(1) as f64);
            (b.clone(), normal_upper_quantile(p))
        })
        .max_by(|a, b| (a.0.z - a.1).total_cmp(&(b.0.z - b.1)))
}

/// A patch worth looking at.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorstPatch {
    pub row: usize,
    pub col: usize,
    pub x_px: usize,
    pub y_px: usize,
    pub dissimilarity: f32,
}

/// The `n` most dissimilar analysed patches.
pub fn worst_patches(map: &SimilarityMap, n: usize) -> Vec<WorstPatch> {
    let mut idx: Vec<usize> = (0..map.status.len()).filter(|&i| map.status[i].analysed()).collect();
    idx.sort_by(|&a, &b| map.dissimilarity[b].total_cmp(&map.dissimilarity[a]));
    idx.into_iter()
        .take(n)
        .map(|i| {
            let (x, y) = map.grid.origin(i);
            WorstPatch {
                row: i / map.grid.cols,
                col: i % map.grid.cols,
                x_px: x,
                y_px: y,
                dissimilarity: map.dissimilarity[i],
            }
        })
        .collect()
}

/// Forecast details carried by a forecast alarm and the series summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForecastInfo {
    pub fit: Fit,
    pub target: f64,
    pub dose_to_target_e_per_a2: Option<f64>,
    pub frames_to_target: Option<f64>,
}

/// An alarm, as every sink receives it (JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Alarm {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rule: String,
    pub level: Level,
    pub when: When,
    pub series: String,
    pub frame: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub cumulative_dose_e_per_a2: Option<f64>,
    pub dose_per_frame_e_per_a2: Option<f64>,
    pub value: f64,
    pub threshold: f64,
    pub worst_patches: Vec<WorstPatch>,
    pub forecast: Option<ForecastInfo>,
    pub message: String,
    /// When the frame that raised it arrived (for latency accounting; not serialised).
    #[serde(skip)]
    pub received: Option<Instant>,
}

/// An alarm in brief, as series summaries and reports list it.
#[derive(Clone, Debug, Serialize)]
pub struct AlarmRecord {
    pub rule: String,
    pub level: Level,
    pub frame: u64,
    pub cumulative_dose_e_per_a2: Option<f64>,
    pub value: f64,
    pub message: String,
}

impl From<&Alarm> for AlarmRecord {
    fn from(a: &Alarm) -> Self {
        Self {
            rule: a.rule.clone(),
            level: a.level,
            frame: a.frame,
            cumulative_dose_e_per_a2: a.cumulative_dose_e_per_a2,
            value: a.value,
            message: a.message.clone(),
        }
    }
}

/// An active alarm re-armed (written to the log only).
#[derive(Clone, Debug, Serialize)]
pub struct Clear {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rule: String,
    pub series: String,
    pub frame: u64,
    pub time: String,
    pub value: f64,
}

#[derive(Clone, Debug)]
pub enum Event {
    Alarm(Box<Alarm>),
    Clear(Clear),
}

/// The alarm raised when recording stops (monitoring goes on).
pub fn recording_stopped(why: &str) -> Alarm {
    recorder_alarm("recording-stopped", "", format!("session recording stopped, monitoring continues: {why}"))
}

/// Raised by the recorder when one series' session file cannot be created; recording goes on
/// with the next series.
pub fn series_not_recorded(series: &str, why: &str) -> Alarm {
    recorder_alarm(
        "series-not-recorded",
        series,
        format!("this series is not recorded, monitoring continues and the next series is recorded: {why}"),
    )
}

/// A critical alarm about the recording, not about a frame.
fn recorder_alarm(rule: &str, series: &str, message: String) -> Alarm {
    Alarm {
        kind: "alarm",
        rule: rule.into(),
        level: Level::Critical,
        when: When::RecordingStopped,
        series: series.to_string(),
        frame: 0,
        time: rfc3339(SystemTime::now()),
        cumulative_dose_e_per_a2: None,
        dose_per_frame_e_per_a2: None,
        value: 0.0,
        threshold: 0.0,
        worst_patches: Vec::new(),
        forecast: None,
        message,
        received: None,
    }
}

/// One rule's judgement of one frame.
struct Verdict {
    when: When,
    firing: bool,
    clears: bool,
    /// The signal (threshold rules) or the frames until the forecast target (forecast rules).
    value: f64,
    /// `above` (threshold rules) or `within_frames` (forecast rules).
    threshold: f64,
    forecast: Option<ForecastInfo>,
    message: String,
}

struct RuleState {
    rule: Rule,
    held: u32,
    active: bool,
}

/// Where and when a verdict was reached: what an alarm or a clear reports beside the verdict.
struct At<'a> {
    series: &'a str,
    frame: u64,
    time: SystemTime,
    received: Option<Instant>,
    dose: &'a FrameDose,
}

impl RuleState {
    /// Debounce and hysteresis, the same for every rule: an inactive rule fires after
    /// `hold_frames` firing verdicts in a row; an active one clears when its verdict says so.
    fn step(&mut self, v: Verdict, at: &At<'_>, worst: impl FnOnce() -> Vec<WorstPatch>) -> Option<Event> {
        if self.active {
            if !v.clears {
                return None;
            }
            self.active = false;
            self.held = 0;
            return Some(Event::Clear(Clear {
                kind: "clear",
                rule: self.rule.name.clone(),
                series: at.series.into(),
                frame: at.frame,
                time: rfc3339(at.time),
                value: v.value,
            }));
        }
        self.held = if v.firing { self.held + 1 } else { 0 };
        if self.held < self.rule.hold_frames {
            return None;
        }
        self.active = true;
        Some(Event::Alarm(Box::new(Alarm {
            kind: "alarm",
            rule: self.rule.name.clone(),
            level: self.rule.level,
            when: v.when,
            series: at.series.to_string(),
            frame: at.frame,
            time: rfc3339(at.time),
            cumulative_dose_e_per_a2: at.dose.cumulative_e_per_a2,
            dose_per_frame_e_per_a2: at.dose.per_frame_e_per_a2,
            value: v.value,
            threshold: v.threshold,
            worst_patches: worst(),
            forecast: v.forecast,
            message: v.message,
            received: at.received,
        })))
    }
}

/// One analysed frame, as the rules see it.
pub struct Observation<'a> {
    pub series: &'a str,
    pub frame: u64,
    pub time: SystemTime,
    pub received: Option<Instant>,
    pub dose: &'a FrameDose,
    pub summary: &'a Summary,
    pub map: &'a SimilarityMap,
}

/// Evaluates the rules of one series.
pub struct AlarmEngine {
    rules: Vec<RuleState>,
    /// (cumulative dose, summary) of every analysed frame with a known dose.
    history: Vec<(f64, Summary)>,
}

impl AlarmEngine {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules.into_iter().map(|rule| RuleState { rule, held: 0, active: false }).collect(),
            history: Vec::new(),
        }
    }

    /// A new series: every rule re-arms, the history starts over.
    pub fn reset(&mut self) {
        for r in &mut self.rules {
            r.held = 0;
            r.active = false;
        }
        self.history.clear();
    }

    /// The current fit of `signal` over the series (for summaries).
    pub fn fit(&self, signal: Signal) -> Option<Fit> {
        let (d, s): (Vec<f64>, Vec<f64>) =
            self.history.iter().filter_map(|(d, sum)| signal.of(sum).map(|v| (*d, v))).unzip();
        forecast::fit(&d, &s)
    }

    /// Dose-budget rules on any received frame (analysed or skipped).
    pub fn observe_dose(
        &mut self,
        series: &str,
        frame: u64,
        dose: &FrameDose,
        received: Option<Instant>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(total) = dose.cumulative_e_per_a2 else { return out };
        for st in &mut self.rules {
            if let Kind::DoseBudget { budget_e_per_a2 } = st.rule.kind
                && !st.active
                && total >= budget_e_per_a2
            {
                st.active = true;
                out.push(Event::Alarm(Box::new(Alarm {
                    kind: "alarm",
                    rule: st.rule.name.clone(),
                    level: st.rule.level,
                    when: When::DoseBudget,
                    series: series.to_string(),
                    frame,
                    time: rfc3339(SystemTime::now()),
                    cumulative_dose_e_per_a2: Some(total),
                    dose_per_frame_e_per_a2: dose.per_frame_e_per_a2,
                    value: total,
                    threshold: budget_e_per_a2,
                    worst_patches: Vec::new(),
                    forecast: None,
                    message: format!(
                        "cumulative dose {total:.1} e⁻/Å² reached the budget of {budget_e_per_a2:.1} e⁻/Å²"
                    ),
                    received,
                })));
            }
        }
        out
    }

    /// Threshold and forecast rules on an analysed frame.
    pub fn observe(&mut self, o: &Observation<'_>) -> Vec<Event> {
        if let Some(total) = o.dose.cumulative_e_per_a2 {
            self.history.push((total, o.summary.clone()));
        }
        let at = At { series: o.series, frame: o.frame, time: o.time, received: o.received, dose: o.dose };
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let Some(v) = self.verdict(i, o) else { continue };
            out.extend(self.rules[i].step(v, &at, || worst_patches(o.map, 5)));
        }
        out
    }

    /// What rule `i` says about this frame; `None` when it has nothing to judge (no data yet).
    fn verdict(&self, i: usize, o: &Observation<'_>) -> Option<Verdict> {
        let rule = &self.rules[i].rule;
        match rule.kind {
            Kind::Threshold { signal, above } => {
                let value = signal.of(o.summary)?;
                let when = match signal {
                    Signal::MeanDissimilarity => When::MeanDissimilarity,
                    Signal::FractionAbove => When::FractionAbove,
                    Signal::DamagedArea => When::DamagedArea,
                };
                Some(Verdict {
                    when,
                    firing: value > above,
                    clears: value < rule.clear_fraction * above,
                    value,
                    threshold: above,
                    forecast: None,
                    message: format!("{} {value:.4} above {above}", signal.label()),
                })
            }
            Kind::Cluster { patches, block_false_every_frames } => {
                let largest = o.summary.largest_region_patches?;
                let at = worst_patches(o.map, 1)
                    .first()
                    .map(|w| format!(", worst patch at row {} col {} ({} px, {} px)", w.row, w.col, w.x_px, w.y_px))
                    .unwrap_or_default();
                let block = block_false_every_frames.and_then(|f| strongest_block(&o.summary.blocks, f));
                let pair = largest >= patches;
                let block_fires = block.as_ref().is_some_and(|(b, t)| b.z > *t);
                let message = match &block {
                    Some((b, t)) if block_fires && !pair => format!(
                        "{e}×{e} block of patches at row {} col {} jointly above the noise floor (Σz/{e} = {:.2} > {t:.2}: 1 false block per {} frames); {largest} connected significant patches{at}",
                        b.row,
                        b.col,
                        b.z,
                        block_false_every_frames.unwrap_or(f64::NAN),
                        e = b.edge_patches,
                    ),
                    _ => format!("{largest} connected patches above the noise floor (rule: ≥ {patches}){at}"),
                };
                Some(Verdict {
                    when: When::Cluster,
                    firing: pair || block_fires,
                    clears: (largest as f64) < rule.clear_fraction * patches as f64
                        && block.as_ref().is_none_or(|(b, t)| b.z < rule.clear_fraction * t),
                    value: largest as f64,
                    threshold: patches as f64,
                    forecast: None,
                    message,
                })
            }
            Kind::Forecast { signal, above, within_frames } => {
                let info = self.forecast(signal, above, o.dose)?;
                let frames = info.frames_to_target?;
                let message = format!(
                    "{} predicted to reach {above} in {frames:.1} frames (at {:.0} e⁻/Å²); critical dose {:.0}{} e⁻/Å²",
                    signal.label(),
                    info.dose_to_target_e_per_a2.unwrap_or(f64::NAN),
                    info.fit.critical_dose_e_per_a2,
                    info.fit.critical_dose_sigma_e_per_a2.map(|s| format!(" ± {s:.0}")).unwrap_or_default()
                );
                // A forecast is one event per series: it does not clear.
                Some(Verdict {
                    when: When::Forecast,
                    firing: frames <= within_frames,
                    clears: false,
                    value: frames,
                    threshold: within_frames,
                    forecast: Some(info),
                    message,
                })
            }
            Kind::DoseBudget { .. } | Kind::SpotFading { .. } | Kind::SpotForecast { .. } => None,
        }
    }

    /// Spot-fading rules on a 4D-STEM scan.
    pub fn observe_spots(&mut self, o: &SpotObservation<'_>) -> Vec<Event> {
        let at = At { series: o.series, frame: o.frame, time: o.time, received: o.received, dose: o.dose };
        let mut out = Vec::new();
        for st in &mut self.rules {
            let Some(v) = spot_verdict(&st.rule, o) else { continue };
            out.extend(st.step(v, &at, Vec::new));
        }
        out
    }

    /// Forecast of `signal` reaching `above`, only while it has not (a forecast of what already
    /// happened is the threshold rule's job), and only from a fit the data support: at least five
    /// points, a rise above the fitted floor of more than twice the residual scatter, and a critical
    /// dose known to better than ±100 %.
    fn forecast(&self, signal: Signal, above: f64, dose: &FrameDose) -> Option<ForecastInfo> {
        let fit = self.fit(signal)?;
        let (now_dose, now) = self.history.last().and_then(|(d, s)| signal.of(s).map(|v| (*d, v)))?;
        if now >= above
            || fit.points < 5
            || fit.saturation <= 0.0
            || now - fit.noise_floor <= 2.0 * fit.rms_residual
            || !fit.determined()
        {
            return None;
        }
        let d_star = fit.dose_to_reach(above);
        let frames = match (d_star, dose.per_frame_e_per_a2) {
            (Some(ds), Some(pf)) if pf > 0.0 => Some(((ds - now_dose) / pf).max(0.0)),
            _ => None,
        };
        Some(ForecastInfo { fit, target: above, dose_to_target_e_per_a2: d_star, frames_to_target: frames })
    }
}

/// One 4D-STEM scan, as the spot rules see it.
pub struct SpotObservation<'a> {
    pub series: &'a str,
    /// The scan's frame index (its scan number).
    pub frame: u64,
    pub time: SystemTime,
    pub received: Option<Instant>,
    pub dose: &'a FrameDose,
    /// Summed background-subtracted spot intensity of the reference (first) scan and of this one.
    pub reference_intensity: f64,
    pub intensity: f64,
    /// The fading fit over the series so far, when the data determine it.
    pub fit: Option<&'a crate::fourd::FadingFit>,
}

/// The fraction of the reference spot intensity lost, and the loss in units of its Poisson σ
/// (σ² = I_ref + I_now: 1 count = 1 electron, the background's own noise left out, so this σ is a
/// lower bound). `None` without a positive reference.
pub fn spot_loss(reference: f64, now: f64) -> Option<(f64, f64)> {
    if !(reference.is_finite() && reference > 0.0 && now.is_finite()) {
        return None;
    }
    let sigma = (reference + now.max(0.0)).sqrt().max(1e-12);
    Some(((reference - now) / reference, (reference - now) / sigma))
}

fn spot_verdict(rule: &Rule, o: &SpotObservation<'_>) -> Option<Verdict> {
    match rule.kind {
        Kind::SpotFading { above } => {
            let (lost, z) = spot_loss(o.reference_intensity, o.intensity)?;
            Some(Verdict {
                when: When::SpotFading,
                firing: lost >= above && z > 3.0,
                clears: lost < rule.clear_fraction * above,
                value: lost,
                threshold: above,
                forecast: None,
                message: format!(
                    "Bragg spots lost {:.1} % of their reference intensity ({z:.1}σ; rule: ≥ {:.0} %)",
                    100.0 * lost,
                    100.0 * above
                ),
            })
        }
        Kind::SpotForecast { above, within_frames } => {
            let fit = o.fit?;
            let (lost, _) = spot_loss(o.reference_intensity, o.intensity)?;
            let now = o.dose.cumulative_e_per_a2?;
            let per_scan = o.dose.per_frame_e_per_a2.filter(|d| *d > 0.0)?;
            if lost >= above || fit.points < 3 {
                return None;
            }
            // I(D) = I₀·exp(−D/Dc) + c loses the fraction 1 − exp(−D/Dc) of I₀ by dose D.
            let d_star = -fit.dc_e_per_a2 * (1.0 - above).ln();
            let scans = ((d_star - now) / per_scan).max(0.0);
            Some(Verdict {
                when: When::SpotForecast,
                firing: scans <= within_frames,
                clears: false,
                value: scans,
                threshold: within_frames,
                forecast: None,
                message: format!(
                    "Bragg spots predicted to lose {:.0} % in {scans:.1} scans (at {d_star:.0} e⁻/Å²); spot-fading Dc {:.0} ± {:.0} e⁻/Å²",
                    100.0 * above,
                    fit.dc_e_per_a2,
                    fit.dc_sigma_e_per_a2
                ),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dose::{Input, Source};
    use crate::patches::{PatchGrid, PatchStatus};

    fn dose(total: f64) -> FrameDose {
        let i = Input { value: Some(1.0), source: Source::Config };
        FrameDose {
            per_frame_e_per_a2: Some(10.0),
            cumulative_e_per_a2: Some(total),
            beam_current_pa: i,
            dwell_time_us: i,
            pixel_size_a: i,
            per_frame_from_config: false,
            upper_estimate: false,
        }
    }

    fn map(d: f32) -> (SimilarityMap, Summary) {
        let grid = PatchGrid::new(40, 40, 20).expect("grid");
        let m = SimilarityMap {
            grid,
            similarity: vec![1.0 - d; 4],
            dissimilarity: vec![d; 4],
            status: vec![PatchStatus::Ok; 4],
        };
        let s = Summary::of(&m, Some(&[0.1; 4]), Some(0.1), None, 2);
        (m, s)
    }

    fn rule(toml_text: &str) -> Rule {
        toml::from_str::<RuleConfig>(toml_text).expect("toml").validate().expect("valid")
    }

    fn run(engine: &mut AlarmEngine, values: &[f32]) -> Vec<(u64, String)> {
        let mut fired = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            let (m, s) = map(v);
            let d = dose(10.0 * (i + 1) as f64);
            let o = Observation {
                series: "s",
                frame: i as u64,
                time: SystemTime::now(),
                received: None,
                dose: &d,
                summary: &s,
                map: &m,
            };
            for e in engine.observe(&o) {
                match e {
                    Event::Alarm(a) => fired.push((a.frame, a.rule.clone())),
                    Event::Clear(c) => fired.push((c.frame, format!("clear {}", c.rule))),
                }
            }
        }
        fired
    }

    #[test]
    fn debounce_and_hysteresis_give_one_alarm_per_event() {
        let r = rule(
            "name = 'mean'\nlevel = 'warning'\nwhen = 'mean_dissimilarity'\nabove = 0.1\nhold_frames = 2\nclear_fraction = 0.5",
        );
        let mut e = AlarmEngine::new(vec![r]);
        // One noisy frame does not fire; two in a row do; hovering near the threshold does not
        // re-fire; falling below half re-arms; the next rise fires again.
        let fired = run(&mut e, &[0.02, 0.12, 0.03, 0.12, 0.13, 0.09, 0.11, 0.12, 0.04, 0.12, 0.15]);
        assert_eq!(fired, vec![(4, "mean".to_string()), (8, "clear mean".to_string()), (10, "mean".to_string())]);
    }

    #[test]
    fn dose_budget_fires_once() {
        let r = rule("name = 'budget'\nlevel = 'critical'\nwhen = 'dose_budget'\nbudget_e_per_a2 = 25.0");
        let mut e = AlarmEngine::new(vec![r]);
        let n: usize = (1..=5).map(|i| e.observe_dose("s", i, &dose(10.0 * i as f64), None).len()).sum();
        assert_eq!(n, 1);
    }

    #[test]
    fn forecast_fires_before_the_threshold_is_reached() {
        let r = rule("name = 'soon'\nlevel = 'warning'\nwhen = 'forecast'\nabove = 0.3\nwithin_frames = 4");
        let mut e = AlarmEngine::new(vec![r]);
        // Dc = 100 e/Å², A = 0.5, floor 0.02, 10 e/Å² per frame: 0.3 is reached near frame 9.
        let v: Vec<f32> = (1..=12).map(|i| (0.02 + 0.5 * (1.0 - (-(10.0 * i as f64) / 100.0).exp())) as f32).collect();
        let fired = run(&mut e, &v);
        assert_eq!(fired.len(), 1, "{fired:?}");
        let at = fired[0].0 as usize;
        assert!(v[at] < 0.3, "fired at frame {at} before the target is reached");
        assert!(at >= 4, "needs five points first: {at}");
    }

    /// A 3×3 block of patches each 2 σ above its floor: none is significant alone (so no pair
    /// forms), but together they are (Σz/3 = 6), and the onset rule fires on the block; with the
    /// block test off it does not.
    #[test]
    fn a_block_of_moderately_raised_patches_fires_the_onset_rule() {
        let grid = PatchGrid::new(200, 200, 20).expect("grid"); // 10 × 10 patches
        let n = grid.len();
        let mut z = vec![0f32; n];
        for y in 4..7 {
            for x in 5..8 {
                z[y * 10 + x] = 2.0;
            }
        }
        let d: Vec<f32> = z.iter().map(|z| 0.01 * (1.0 + 0.1 * z)).collect();
        let m = SimilarityMap {
            grid,
            similarity: d.iter().map(|v| 1.0 - v).collect(),
            dissimilarity: d.clone(),
            status: vec![PatchStatus::Ok; n],
        };
        // Every patch's threshold is above the raised ones: no significant patch at all.
        let s = Summary::of(&m, Some(&vec![0.05; n]), Some(0.05), Some((&z, [0.0; 2])), 2);
        assert_eq!(s.largest_region_patches, Some(0));
        let onset = |extra: &str| rule(&format!("name = 'onset'\nlevel = 'warning'\nwhen = 'cluster'\npatches = 2\n{extra}"));
        let fires = |r: Rule| {
            let mut e = AlarmEngine::new(vec![r]);
            let d = dose(10.0);
            let o = Observation {
                series: "s",
                frame: 1,
                time: SystemTime::now(),
                received: None,
                dose: &d,
                summary: &s,
                map: &m,
            };
            e.observe(&o).into_iter().find_map(|e| match e {
                Event::Alarm(a) => Some(a.message),
                Event::Clear(_) => None,
            })
        };
        let msg = fires(onset("")).expect("the default block test fires");
        assert!(msg.contains("3×3 block") && msg.contains("row 4 col 5"), "{msg}");
        assert_eq!(fires(onset("block_false_every_frames = 0")), None);
        // At one false block per 10¹² frames the threshold (≈ 7.3) is above the block's 6.
        assert_eq!(fires(onset("block_false_every_frames = 1e12")), None);
        assert!(
            toml::from_str::<RuleConfig>("name = 'x'\nlevel = 'warning'\nwhen = 'cluster'\npatches = 2\nblock_false_every_frames = 0.5")
                .expect("toml")
                .validate()
                .expect_err("below one frame")
                .contains("block_false_every_frames")
        );
    }

    #[test]
    fn rule_validation_names_the_key() {
        let bad = toml::from_str::<RuleConfig>("name = 'x'\nlevel = 'warning'\nwhen = 'forecast'\nabove = 0.2")
            .expect("toml");
        assert!(bad.validate().expect_err("missing").contains("within_frames"));
        assert!(toml::from_str::<RuleConfig>("name = 'x'\nlevel = 'loud'\nwhen = 'forecast'").is_err());
    }
}
