//! The compute thread: takes work from the bounded channel, analyses frames against their series'
//! reference, runs the alarm rules and writes a summary when a series ends.
//!
//! When it falls behind it drains everything waiting and, with `skip_to_newest`, analyses only the
//! newest frame of each run of waiting frames; the frames passed over are counted, and still count
//! for the dose (the receive side accounted them) and the dose-budget rule.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::Receiver;
use serde::Serialize;

use super::stats::{self, Stats};
use crate::alarms::forecast::Fit;
use crate::alarms::sinks::Sinks;
use crate::alarms::{AlarmEngine, Event, Level, Observation, Rule, Signal, rfc3339};
use crate::damage::{AnalysisError, AnalysisSettings, Analyzer, Summary};
use crate::decode::{FrameMsg, SeriesInfo};
use crate::dose::FrameDose;
use crate::engine::Engine;
use crate::report::provenance::Provenance;

/// A frame on its way to the analysis.
pub struct FrameWork {
    pub msg: Box<FrameMsg>,
    pub dose: FrameDose,
    pub received: Instant,
}

pub enum Work {
    Start { info: SeriesInfo, implicit: bool },
    Frame(FrameWork),
    End { series: String, received: u64, dropped: u64, implicit: bool },
    Stop,
}

impl Work {
    fn is_frame(&self) -> bool {
        matches!(self, Work::Frame(_))
    }
}

/// One analysed frame in a series summary.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    pub frame: u64,
    pub cumulative_dose_e_per_a2: Option<f64>,
    pub mean_dissimilarity: Option<f64>,
    pub fraction_above_threshold: Option<f64>,
    pub damaged_area_fraction: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlarmRecord {
    pub rule: String,
    pub level: Level,
    pub frame: u64,
    pub cumulative_dose_e_per_a2: Option<f64>,
    pub value: f64,
    pub message: String,
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

pub struct Compute {
    /// Writes results, alarms and the series end to the session file.
    pub recorder: Option<crate::record::recorder::Recorder>,
    pub settings: AnalysisSettings,
    pub engine: Option<Arc<Engine>>,
    pub rules: Vec<Rule>,
    pub sinks: Sinks,
    pub stats: Arc<Stats>,
    pub out_dir: PathBuf,
    pub skip_to_newest: bool,
    pub provenance: Provenance,
}

struct Current {
    info: SeriesInfo,
    analyzer: Analyzer,
    started: SystemTime,
    analysed: u64,
    skipped: u64,
    errors: u64,
    reference: Option<u64>,
    last_dose: Option<FrameDose>,
    last_summary: Option<Summary>,
    alarms: Vec<AlarmRecord>,
    timeline: Vec<TimelinePoint>,
}

impl Compute {
    /// Runs until a `Stop` arrives or the channel closes.
    pub fn run(self, rx: Receiver<Work>) {
        let mut alarms = AlarmEngine::new(self.rules.clone());
        let mut current: Option<Current> = None;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while let Ok(w) = rx.try_recv() {
                batch.push(w);
            }
            let n = batch.len();
            let mut it = batch.into_iter().enumerate().peekable();
            while let Some((k, w)) = it.next() {
                let newer_waiting = it.peek().is_some_and(|(_, next)| next.is_frame());
                match w {
                    Work::Start { info, implicit } => {
                        if let Some(c) = current.take() {
                            self.finish(c, &alarms, 0, 0, true);
                        }
                        alarms.reset();
                        match Analyzer::new(self.settings.clone(), self.engine.clone()) {
                            Ok(analyzer) => {
                                if implicit {
                                    tracing::warn!(
                                        "series {}: frames arrived without a start message; the first one is the reference",
                                        info.series
                                    );
                                } else {
                                    tracing::info!("series {} started ({})", info.series, info.format.name());
                                }
                                current = Some(Current {
                                    info,
                                    analyzer,
                                    started: SystemTime::now(),
                                    analysed: 0,
                                    skipped: 0,
                                    errors: 0,
                                    reference: None,
                                    last_dose: None,
                                    last_summary: None,
                                    alarms: Vec::new(),
                                    timeline: Vec::new(),
                                });
                            }
                            Err(e) => tracing::error!("series {}: cannot analyse: {e}", info.series),
                        }
                    }
                    Work::Frame(f) => {
                        let Some(c) = current.as_mut() else { continue };
                        for e in alarms.observe_dose(&f.msg.series, f.msg.index, &f.dose, Some(f.received)) {
                            self.emit(c, e);
                        }
                        c.last_dose = Some(f.dose.clone());
                        let has_reference = c.analyzer.has_reference();
                        if has_reference && self.skip_to_newest && newer_waiting && k + 1 < n {
                            c.skipped += 1;
                            stats::inc(&self.stats.frames_skipped);
                            continue;
                        }
                        self.analyse(c, &mut alarms, f);
                    }
                    Work::End { series, received, dropped, implicit } => match current.take() {
                        Some(c) if c.info.series == series => self.finish(c, &alarms, received, dropped, implicit),
                        Some(c) => {
                            tracing::warn!("end of series {series} while series {} is open; closing it", c.info.series);
                            self.finish(c, &alarms, received, dropped, true);
                        }
                        None => tracing::warn!("end of series {series} that never started"),
                    },
                    Work::Stop => {
                        if let Some(c) = current.take() {
                            self.finish(c, &alarms, 0, 0, true);
                        }
                        return;
                    }
                }
            }
        }
        if let Some(c) = current.take() {
            self.finish(c, &alarms, 0, 0, true);
        }
    }

    fn analyse(&self, c: &mut Current, alarms: &mut AlarmEngine, f: FrameWork) {
        let t = Instant::now();
        if !c.analyzer.has_reference() {
            match c.analyzer.set_reference(&f.msg.frame) {
                Ok(()) => {
                    c.reference = Some(f.msg.index);
                    c.analysed += 1;
                    stats::inc(&self.stats.frames_analysed);
                    if let Some(g) = c.analyzer.grid() {
                        tracing::info!(
                            "series {}: frame {} is the reference; {}",
                            c.info.series,
                            f.msg.index,
                            g.remainder_note()
                        );
                    }
                }
                Err(e) => self.reject(c, &f, e, "reference"),
            }
            self.record_time(t);
            return;
        }
        match c.analyzer.analyse(&f.msg.frame) {
            Ok(a) => {
                c.analysed += 1;
                stats::inc(&self.stats.frames_analysed);
                self.record_time(t);
                let obs = Observation {
                    series: &f.msg.series,
                    frame: f.msg.index,
                    time: SystemTime::now(),
                    received: Some(f.received),
                    dose: &f.dose,
                    summary: &a.summary,
                    map: &a.map,
                };
                let events = alarms.observe(&obs);
                let analysis_ms = t.elapsed().as_secs_f64() * 1e3;
                c.timeline.push(TimelinePoint {
                    frame: f.msg.index,
                    cumulative_dose_e_per_a2: f.dose.cumulative_e_per_a2,
                    mean_dissimilarity: a.summary.mean_dissimilarity,
                    fraction_above_threshold: a.summary.fraction_above_threshold,
                    damaged_area_fraction: a.summary.damaged_area_fraction,
                });
                // Alarms first: the frame result (with its grid) is bigger and less urgent.
                for e in events {
                    self.emit(c, e);
                }
                if let Some(r) = &self.recorder {
                    r.analysis(&f.msg.series, f.msg.index, &a, analysis_ms, f.dose.cumulative_e_per_a2);
                }
                self.publish_frame(&f, &a, analysis_ms);
                c.last_summary = Some(a.summary);
            }
            Err(e) => self.reject(c, &f, e, "frame"),
        }
    }

    /// The frame's result on the PUB socket (topic `beamwatch.frame`), for live viewers.
    fn publish_frame(&self, f: &FrameWork, a: &crate::damage::FrameAnalysis, analysis_ms: f64) {
        #[derive(Serialize)]
        struct FrameResult<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            series: &'a str,
            frame: u64,
            dose: &'a FrameDose,
            summary: &'a Summary,
            shift: Option<crate::register::Shift>,
            analysis_ms: f64,
            rows: usize,
            cols: usize,
            /// Row-major per-patch dissimilarity (null where a patch was not analysed).
            dissimilarity: Vec<Option<f32>>,
        }
        let grid = &a.map.grid;
        let r = FrameResult {
            kind: "frame",
            series: &f.msg.series,
            frame: f.msg.index,
            dose: &f.dose,
            summary: &a.summary,
            shift: a.shift,
            analysis_ms,
            rows: grid.rows,
            cols: grid.cols,
            dissimilarity: a
                .map
                .dissimilarity
                .iter()
                .zip(&a.map.status)
                .map(|(d, s)| s.analysed().then(|| (d * 1e4).round() / 1e4))
                .collect(),
        };
        if let Ok(json) = serde_json::to_string(&r) {
            self.sinks.frame(json, Some(f.received));
        }
    }

    fn record_time(&self, t: Instant) {
        if let Ok(mut w) = self.stats.analysis_ms.lock() {
            w.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    fn reject(&self, c: &mut Current, f: &FrameWork, e: AnalysisError, what: &str) {
        c.errors += 1;
        stats::inc(&self.stats.analysis_errors);
        tracing::warn!("series {} {what} {} not analysed: {e}", f.msg.series, f.msg.index);
    }

    fn emit(&self, c: &mut Current, e: Event) {
        match e {
            Event::Alarm(a) => {
                match a.level {
                    Level::Critical => tracing::error!(
                        "ALARM [critical] {}: series {} frame {}: {}",
                        a.rule,
                        a.series,
                        a.frame,
                        a.message
                    ),
                    Level::Warning => tracing::warn!(
                        "ALARM [warning] {}: series {} frame {}: {}",
                        a.rule,
                        a.series,
                        a.frame,
                        a.message
                    ),
                }
                if let Some(r) = &self.recorder {
                    r.alarm(&a.series, serde_json::to_string(&*a).unwrap_or_default());
                }
                c.alarms.push(AlarmRecord {
                    rule: a.rule.clone(),
                    level: a.level,
                    frame: a.frame,
                    cumulative_dose_e_per_a2: a.cumulative_dose_e_per_a2,
                    value: a.value,
                    message: a.message.clone(),
                });
                self.sinks.alarm(a);
            }
            Event::Clear(cl) => {
                tracing::info!("alarm {} cleared at frame {}", cl.rule, cl.frame);
                self.sinks.clear(cl);
            }
        }
    }

    fn finish(&self, c: Current, alarms: &AlarmEngine, received: u64, dropped: u64, implicit: bool) {
        stats::inc(&self.stats.series_ended);
        let fit = alarms.fit(Signal::MeanDissimilarity);
        let received = received.max(c.analysed + c.skipped + c.errors + dropped);
        let summary = SeriesSummary {
            kind: "series_summary",
            series: c.info.series.clone(),
            info: c.info.clone(),
            started: rfc3339(c.started),
            ended: rfc3339(SystemTime::now()),
            implicit_end: implicit,
            frames_received: received,
            frames_analysed: c.analysed,
            frames_skipped: c.skipped + dropped,
            analysis_errors: c.errors,
            reference_frame: c.reference,
            last_dose: c.last_dose,
            last_summary: c.last_summary,
            critical_dose_fit: fit,
            alarms: c.alarms,
            timeline: c.timeline,
            provenance: self.provenance.clone(),
        };
        let fit_text = match fit {
            Some(f) if f.determined() => format!(
                "; critical dose {:.0} ± {:.0} e⁻/Å² after {:.0} e⁻/Å²",
                f.critical_dose_e_per_a2,
                f.critical_dose_sigma_e_per_a2.unwrap_or(f64::NAN),
                f.onset_dose_e_per_a2
            ),
            Some(_) => "; critical dose not determined yet".into(),
            None => String::new(),
        };
        tracing::info!(
            "series {} ended: {} frames received, {} analysed, {} skipped, {} errors, {} alarms{fit_text}",
            summary.series,
            summary.frames_received,
            summary.frames_analysed,
            summary.frames_skipped,
            summary.analysis_errors,
            summary.alarms.len()
        );
        let safe: String = summary
            .series
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' { ch } else { '_' })
            .collect();
        let path = self.out_dir.join(format!("series_{safe}.json"));
        match serde_json::to_vec_pretty(&summary) {
            Ok(bytes) => {
                if let Err(e) = crate::report::write_atomic(&path, &bytes) {
                    tracing::error!("series summary not written: {e}");
                }
            }
            Err(e) => tracing::error!("series summary not serialised: {e}"),
        }
        if let Ok(v) = serde_json::to_value(&summary) {
            if let Some(r) = &self.recorder {
                r.end_series(&summary.series, Some(v.to_string()));
            }
            self.sinks.summary(v);
        }
        self.stats.series_done(stats::SeriesBrief {
            series: summary.series,
            frames_received: summary.frames_received,
            frames_analysed: summary.frames_analysed,
            frames_skipped: summary.frames_skipped,
            analysis_errors: summary.analysis_errors,
            total_dose_e_per_a2: summary.last_dose.as_ref().and_then(|d| d.cumulative_e_per_a2),
            critical_dose_fit: summary.critical_dose_fit,
            alarms: summary.alarms,
            summary_file: path.display().to_string(),
        });
    }
}
