//! The compute thread: takes work from the bounded queue, analyses frames against their series'
//! reference, runs the alarm rules, hands every result to the consumers and writes a summary when
//! a series ends. It ends when the queue closes, closing the open series.
//!
//! When it falls behind it drains everything waiting and, with `skip_to_newest`, analyses only the
//! newest frame of each run of waiting frames; the frames passed over are counted, and still count
//! for the dose (the receive side accounted them) and the dose-budget rule.
//!
//! A panic while analysing is caught here and ends the thread with a message naming the frame, so
//! the pipeline can report that the analysis died instead of running on without it.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use super::consumers::{Analysed, Consumer, Event};
use super::stats::{self, SeriesBrief, Stats};
use super::summary::{self, Diffraction, Fading, RegionFading, RegistrationNote, SeriesSummary, TimelinePoint};
use crate::alarms::{AlarmEngine, AlarmRecord, Level, Observation, Rule, Signal, SpotObservation};
use crate::clock::rfc3339;
use crate::damage::{AnalysisError, AnalysisSettings, Analyzer, FrameAnalysis, NoiseFloor, PatchThreshold, Summary};
use crate::decode::{FrameMsg, SeriesInfo};
use crate::dose::FrameDose;
use crate::engine::Engine;
use crate::register::{Lock, Shift};
use crate::report::provenance::Provenance;

/// A frame on its way to the analysis.
pub struct FrameWork {
    pub msg: Box<FrameMsg>,
    pub dose: FrameDose,
    pub received: Instant,
    /// The frame's analysis bytes from the memory budget, given back when the work is dropped
    /// (analysed or passed over).
    pub held: Option<crate::budget::Reservation>,
}

pub enum Work {
    Start { info: SeriesInfo, implicit: bool },
    Frame(FrameWork),
    End { series: String, received: u64, dropped: u64, implicit: bool },
}

impl Work {
    fn is_frame(&self) -> bool {
        matches!(self, Work::Frame(_))
    }
}

pub struct Compute {
    pub settings: AnalysisSettings,
    pub engine: Option<Arc<Engine>>,
    pub rules: Vec<Rule>,
    pub consumers: Vec<Box<dyn Consumer>>,
    pub stats: Arc<Stats>,
    /// Where `series_<id>.json` files go.
    pub summaries_dir: PathBuf,
    pub skip_to_newest: bool,
    pub provenance: Provenance,
    /// Test hook: panic while analysing this frame (see [`super::FAULT_ENV`]).
    pub panic_at_frame: Option<u64>,
}

struct Current {
    info: SeriesInfo,
    analyzer: Analyzer,
    started: SystemTime,
    analysed: u64,
    skipped: u64,
    errors: u64,
    /// Frames whose drift could not be established (not compared, no alarms).
    not_registered: u64,
    /// Frames in which no patch could be analysed (gaps, drift): compared with nothing.
    without_patches: u64,
    warned_without_patches: bool,
    registration: Vec<RegistrationNote>,
    reference: Option<u64>,
    last_dose: Option<FrameDose>,
    last_summary: Option<Summary>,
    alarms: Vec<AlarmRecord>,
    timeline: Vec<TimelinePoint>,
    /// 4D-STEM: the spot intensities of every scan against dose.
    spots: Option<SpotHistory>,
}

/// Per series, the history the spot-fading fits use: one point per scan.
struct SpotHistory {
    spots: usize,
    regions: (usize, usize),
    /// Cumulative dose after each scan (`None`: unknown, and no fit can be made).
    dose: Vec<Option<f64>>,
    /// Σ over spots of each spot's background-subtracted intensity, per scan.
    total: Vec<f64>,
    /// The same per region (row-major), per scan.
    region_total: Vec<Vec<f64>>,
    incomplete: u64,
    per_scan_e_per_a2: Option<f64>,
    dwell_s: Option<f64>,
    current_source: Option<crate::dose::Source>,
}

impl SpotHistory {
    fn push(&mut self, scan: &crate::decode::ScanFrame, dose: &FrameDose) {
        let r = &scan.result;
        self.spots = self.spots.max(r.spot_intensity.len());
        self.dose.push(dose.cumulative_e_per_a2);
        self.total.push(r.spot_intensity.iter().sum());
        self.region_total.push(r.region_spot_intensity.iter().map(|v| v.iter().sum()).collect());
        if !r.complete {
            self.incomplete += 1;
        }
        self.per_scan_e_per_a2 = dose.per_frame_e_per_a2.or(self.per_scan_e_per_a2);
        self.dwell_s = dose.dwell_time_us.value.map(|us| us * 1e-6).or(self.dwell_s);
        self.current_source = Some(dose.beam_current_pa.source);
    }

    /// The fit of one intensity history, or why there is none.
    fn fit(&self, intensity: &[f64]) -> Result<crate::fourd::FadingFit, String> {
        if self.spots == 0 {
            return Err("no Bragg spots were found in the reference scan".into());
        }
        let Some(dose) = self.dose.iter().copied().collect::<Option<Vec<f64>>>() else {
            return Err("the dose is unknown (set [dose] beam_current_pa and pixel_size_a = the probe step)".into());
        };
        if dose.len() < 3 {
            return Err(format!("{} scans; a fit needs at least 3", dose.len()));
        }
        crate::fourd::fit_fading(&dose, intensity)
            .ok_or_else(|| "the data do not determine Dc (no decay, or σ larger than Dc)".to_string())
    }

    /// The fading picture: spot intensity against dose, whole scan and regions, with the fits.
    /// Nothing when the dose is unknown (there is no dose axis to draw on).
    fn plot(&self, series: &str, path: &std::path::Path) -> Result<(), crate::report::ReportError> {
        use crate::report::fading_plot::{FadingPlot, Track, render};
        let Some(dose) = self.dose.iter().copied().collect::<Option<Vec<f64>>>() else { return Ok(()) };
        let pts = |v: &[f64]| -> Vec<(f64, f64)> { dose.iter().copied().zip(v.iter().copied()).collect() };
        let n_regions = self.region_total.iter().map(Vec::len).max().unwrap_or(0);
        let region_series: Vec<Vec<f64>> = (0..n_regions)
            .map(|k| self.region_total.iter().map(|v| v.get(k).copied().unwrap_or(f64::NAN)).collect())
            .collect();
        let whole_pts = pts(&self.total);
        let region_pts: Vec<Vec<(f64, f64)>> = region_series.iter().map(|v| pts(v)).collect();
        let whole_fit = self.fit(&self.total).ok();
        let region_fits: Vec<Option<crate::fourd::FadingFit>> = region_series.iter().map(|v| self.fit(v).ok()).collect();
        let cols = self.regions.1.max(1);
        let mut tracks = vec![Track { name: "whole scan".into(), points: &whole_pts, fit: whole_fit.as_ref() }];
        for (k, (p, f)) in region_pts.iter().zip(&region_fits).enumerate() {
            tracks.push(Track { name: format!("region {} (row {}, col {})", k + 1, k / cols, k % cols), points: p, fit: f.as_ref() });
        }
        let canvas = render(&FadingPlot {
            title: format!("Bragg spot fading — series {series}"),
            subtitle: format!(
                "{} spots, background-subtracted, summed over each scan; fit I₀·exp(−D/Dc) + c",
                self.spots
            ),
            tracks,
            warning: (self.current_source == Some(crate::dose::Source::EstimatedFromCounts))
                .then(|| "dose from a beam current estimated from detector counts".to_string()),
        })?;
        canvas.save_png(path)
    }

    fn whole_fit(&self) -> Option<crate::fourd::FadingFit> {
        self.fit(&self.total).ok()
    }

    fn summary(&self) -> Diffraction {
        let cols = self.regions.1;
        let n_regions = self.region_total.iter().map(Vec::len).max().unwrap_or(0);
        let regions = (0..n_regions)
            .map(|k| {
                let series: Vec<f64> =
                    self.region_total.iter().map(|v| v.get(k).copied().unwrap_or(f64::NAN)).collect();
                RegionFading { row: k / cols.max(1), col: k % cols.max(1), fading: Fading::of(self.fit(&series)) }
            })
            .collect();
        let reference = self.total.first().copied();
        let last = self.total.last().copied();
        Diffraction {
            scans: self.total.len(),
            scans_incomplete: self.incomplete,
            spots: self.spots,
            dose_per_scan_e_per_a2: self.per_scan_e_per_a2,
            dose_rate_e_per_a2_per_s: match (self.per_scan_e_per_a2, self.dwell_s) {
                (Some(d), Some(t)) if t > 0.0 => Some(d / t),
                _ => None,
            },
            beam_current_source: self.current_source,
            reference_spot_intensity: reference,
            last_spot_intensity: last,
            measured_fraction_lost: match (reference, last) {
                (Some(r), Some(l)) if r > 0.0 => Some((r - l) / r),
                _ => None,
            },
            fading: Fading::of(self.fit(&self.total)),
            regions,
        }
    }
}

impl Compute {
    /// Runs until the queue closes. `Err`: the analysis panicked (the message says where).
    pub fn run(mut self, mut rx: mpsc::Receiver<Work>) -> Result<(), String> {
        let mut alarms = AlarmEngine::new(self.rules.clone());
        let mut current: Option<Current> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while let Ok(w) = rx.try_recv() {
                batch.push(w);
            }
            let n = batch.len();
            let mut it = batch.into_iter().enumerate().peekable();
            while let Some((k, w)) = it.next() {
                let newer_waiting = it.peek().is_some_and(|(_, next)| next.is_frame());
                let what = match &w {
                    Work::Frame(f) => format!("frame {} of series {}", f.msg.index, f.msg.series),
                    Work::Start { info, .. } => format!("the start of series {}", info.series),
                    Work::End { series, .. } => format!("the end of series {series}"),
                };
                let step = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.step(w, &mut current, &mut alarms, newer_waiting && k + 1 < n)
                }));
                if let Err(payload) = step {
                    let why = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    return Err(format!("panicked on {what}: {why}"));
                }
            }
        }
        if let Some(c) = current.take() {
            self.finish(c, &alarms, 0, 0, true);
        }
        Ok(())
    }

    fn step(&mut self, w: Work, current: &mut Option<Current>, alarms: &mut AlarmEngine, newer_waiting: bool) {
        match w {
            Work::Start { info, implicit } => {
                if let Some(c) = current.take() {
                    self.finish(c, alarms, 0, 0, true);
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
                        *current = Some(Current {
                            info,
                            analyzer,
                            started: SystemTime::now(),
                            analysed: 0,
                            skipped: 0,
                            errors: 0,
                            not_registered: 0,
                            without_patches: 0,
                            warned_without_patches: false,
                            registration: Vec::new(),
                            reference: None,
                            last_dose: None,
                            last_summary: None,
                            alarms: Vec::new(),
                            timeline: Vec::new(),
                            spots: None,
                        });
                    }
                    Err(e) => tracing::error!("series {}: cannot analyse: {e}", info.series),
                }
            }
            Work::Frame(f) => {
                let Some(c) = current.as_mut() else { return };
                for e in alarms.observe_dose(&f.msg.series, f.msg.index, &f.dose, Some(f.received)) {
                    self.emit(c, e);
                }
                c.last_dose = Some(f.dose.clone());
                if let Some(scan) = f.msg.scan.clone() {
                    // Every scan counts for the spot fading, analysed or passed over.
                    self.observe_scan(c, alarms, &f, &scan);
                }
                if c.analyzer.has_reference() && self.skip_to_newest && newer_waiting {
                    c.skipped += 1;
                    stats::inc(&self.stats.frames_skipped);
                    return;
                }
                self.analyse(c, alarms, f);
            }
            Work::End { series, received, dropped, implicit } => match current.take() {
                Some(c) if c.info.series == series => self.finish(c, alarms, received, dropped, implicit),
                Some(c) => {
                    tracing::warn!("end of series {series} while series {} is open; closing it", c.info.series);
                    self.finish(c, alarms, received, dropped, true);
                }
                None => tracing::warn!("end of series {series} that never started"),
            },
        }
    }

    fn analyse(&mut self, c: &mut Current, alarms: &mut AlarmEngine, f: FrameWork) {
        let t = Instant::now();
        if self.panic_at_frame == Some(f.msg.index) {
            panic!("fault injection (BEAMWATCH_FAULT_PANIC_AT_FRAME={})", f.msg.index);
        }
        if !c.analyzer.has_reference() {
            match c.analyzer.set_reference_at(&f.msg.frame, f.msg.index) {
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
            self.stats.analysis_time(t.elapsed().as_secs_f64() * 1e3);
            return;
        }
        match c.analyzer.analyse_at(&f.msg.frame, f.msg.index) {
            Ok(a) if a.summary.analysed_patches == 0 => {
                // Compared with nothing: no alarm can come of it, and the user must know why.
                c.without_patches += 1;
                stats::inc(&self.stats.frames_without_patches);
                self.stats.analysis_time(t.elapsed().as_secs_f64() * 1e3);
                if !c.warned_without_patches {
                    c.warned_without_patches = true;
                    tracing::warn!(
                        "series {} frame {}: every patch is excluded, so nothing is compared and no alarm can fire: {}",
                        c.info.series,
                        f.msg.index,
                        why_no_patches(&f.msg.frame, &a)
                    );
                }
            }
            Ok(a) => {
                c.analysed += 1;
                stats::inc(&self.stats.frames_analysed);
                self.stats.analysis_time(t.elapsed().as_secs_f64() * 1e3);
                if let (Some(lock), Some(shift)) = (a.lock, a.shift)
                    && lock != Lock::Reference
                    && note_registration(&mut c.registration, f.msg.index, lock, shift)
                {
                    tracing::info!("series {} frame {}: {}", c.info.series, f.msg.index, lock.describe());
                }
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
                for e in events {
                    self.emit(c, e);
                }
                let thresholds = c.analyzer.patch_thresholds();
                let done = Analysed {
                    series: &f.msg.series,
                    frame: f.msg.index,
                    dose: &f.dose,
                    received: f.received,
                    analysis: &a,
                    analysis_ms,
                    frame_pixels: &f.msg.frame,
                    thresholds: thresholds.as_deref(),
                };
                self.tell(&Event::Analysed(&done));
                c.last_summary = Some(a.summary);
            }
            Err(AnalysisError::NotRegistered(tracked)) => {
                c.not_registered += 1;
                stats::inc(&self.stats.frames_not_registered);
                self.stats.analysis_time(t.elapsed().as_secs_f64() * 1e3);
                note_registration(&mut c.registration, f.msg.index, tracked.lock, tracked.shift);
                tracing::warn!(
                    "series {} frame {}: {}",
                    c.info.series,
                    f.msg.index,
                    AnalysisError::NotRegistered(tracked)
                );
            }
            Err(e) => self.reject(c, &f, e, "frame"),
        }
    }

    fn observe_scan(
        &mut self,
        c: &mut Current,
        alarms: &mut AlarmEngine,
        f: &FrameWork,
        scan: &crate::decode::ScanFrame,
    ) {
        let h = c.spots.get_or_insert_with(|| SpotHistory {
            spots: 0,
            regions: scan.regions,
            dose: Vec::new(),
            total: Vec::new(),
            region_total: Vec::new(),
            incomplete: 0,
            per_scan_e_per_a2: None,
            dwell_s: None,
            current_source: None,
        });
        h.push(scan, &f.dose);
        let fit = h.whole_fit();
        let (Some(&reference), Some(&now)) = (h.total.first(), h.total.last()) else { return };
        let obs = SpotObservation {
            series: &f.msg.series,
            frame: f.msg.index,
            time: SystemTime::now(),
            received: Some(f.received),
            dose: &f.dose,
            reference_intensity: reference,
            intensity: now,
            fit: fit.as_ref(),
        };
        for e in alarms.observe_spots(&obs) {
            self.emit(c, e);
        }
    }

    fn tell(&mut self, event: &Event<'_>) {
        for consumer in &mut self.consumers {
            consumer.on(event);
        }
    }

    fn reject(&self, c: &mut Current, f: &FrameWork, e: AnalysisError, what: &str) {
        c.errors += 1;
        stats::inc(&self.stats.analysis_errors);
        tracing::warn!("series {} {what} {} not analysed: {e}", f.msg.series, f.msg.index);
    }

    fn emit(&mut self, c: &mut Current, e: crate::alarms::Event) {
        match e {
            crate::alarms::Event::Alarm(a) => {
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
                c.alarms.push(AlarmRecord::from(&*a));
                self.tell(&Event::Alarm(&a));
            }
            crate::alarms::Event::Clear(cl) => {
                tracing::info!("alarm {} cleared at frame {}", cl.rule, cl.frame);
                self.tell(&Event::Cleared(&cl));
            }
        }
    }

    fn finish(&mut self, c: Current, alarms: &AlarmEngine, received: u64, dropped: u64, implicit: bool) {
        stats::inc(&self.stats.series_ended);
        let received =
            received.max(c.analysed + c.skipped + c.errors + c.not_registered + c.without_patches + dropped);
        let (critical_dose_fit, critical_dose_note) =
            crate::alarms::forecast::reported(alarms.fit(Signal::MeanDissimilarity));
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
            frames_not_registered: c.not_registered,
            frames_without_patches: c.without_patches,
            registration: c.registration,
            patch_threshold: c.analyzer.settings().threshold,
            noise_floor: c.analyzer.noise_floor().cloned(),
            reference_frame: c.reference,
            last_dose: c.last_dose,
            last_summary: c.last_summary,
            critical_dose_fit,
            critical_dose_note,
            alarms: c.alarms,
            timeline: c.timeline,
            diffraction: c.spots.as_ref().map(SpotHistory::summary),
            provenance: self.provenance.clone(),
        };
        tracing::info!(
            "series {} ended: {} frames received, {} analysed, {} skipped, {} not registered, {} without patches, {} errors, {} alarms{}",
            summary.series,
            summary.frames_received,
            summary.frames_analysed,
            summary.frames_skipped,
            summary.frames_not_registered,
            summary.frames_without_patches,
            summary.analysis_errors,
            summary.alarms.len(),
            format!("{}{}", summary.fit_text(), summary.diffraction_text())
        );
        if summary.noise_floor.is_none() && matches!(summary.patch_threshold, PatchThreshold::Calibrated { .. }) {
            tracing::warn!(
                "series {}: too few compared frames to calibrate the patch threshold ({}): no damage alarm could fire",
                summary.series,
                summary.patch_threshold.describe()
            );
        }
        let path = summary::path(&self.summaries_dir, &summary.series);
        match serde_json::to_vec_pretty(&summary) {
            Ok(bytes) => {
                if let Err(e) = crate::report::write_atomic(&path, &bytes) {
                    tracing::error!("series summary not written: {e}");
                }
            }
            Err(e) => tracing::error!("series summary not serialised: {e}"),
        }
        if let Some(h) = &c.spots {
            let png = self.summaries_dir.join(format!("fading_{}.png", crate::record::file_stem(&summary.series)));
            if let Err(e) = h.plot(&summary.series, &png) {
                tracing::error!("spot-fading plot not written: {e}");
            }
        }
        if let Ok(json) = serde_json::to_value(&summary) {
            self.tell(&Event::SeriesEnded { summary: &summary, json: &json });
        }
        self.stats.series_done(SeriesBrief {
            series: summary.series,
            frames_received: summary.frames_received,
            frames_analysed: summary.frames_analysed,
            frames_skipped: summary.frames_skipped,
            analysis_errors: summary.analysis_errors,
            frames_not_registered: summary.frames_not_registered,
            frames_without_patches: summary.frames_without_patches,
            patch_threshold: summary
                .noise_floor
                .as_ref()
                .map_or(summary.patch_threshold.describe(), NoiseFloor::describe),
            total_dose_e_per_a2: summary.last_dose.as_ref().and_then(|d| d.cumulative_e_per_a2),
            critical_dose_fit: summary.critical_dose_fit,
            critical_dose_note: summary.critical_dose_note,
            diffraction: summary.diffraction,
            alarms: summary.alarms,
            summary_file: path.display().to_string(),
        });
    }
}

/// Notes a frame that was not registered to the reference directly; consecutive frames of the same
/// kind share one note (the list stays short however long the series). `true` when a note began.
fn note_registration(notes: &mut Vec<RegistrationNote>, frame: u64, lock: Lock, shift: Shift) -> bool {
    /// Notes kept per series; later ones are counted in the last.
    const KEPT: usize = 256;
    let kind = std::mem::discriminant(&lock);
    let full = notes.len() >= KEPT;
    if let Some(last) = notes.last_mut()
        && std::mem::discriminant(&last.lock) == kind
        && (last.last_frame + 1 == frame || full)
    {
        last.last_frame = frame;
        last.frames += 1;
        return false;
    }
    if full {
        return false;
    }
    notes.push(RegistrationNote {
        first_frame: frame,
        last_frame: frame,
        frames: 1,
        lock,
        dx_px: shift.dx_px,
        dy_px: shift.dy_px,
        detail: lock.describe(),
    });
    true
}

/// Why no patch of a frame could be analysed, with what to do about it.
fn why_no_patches(frame: &crate::frame::Frame, a: &FrameAnalysis) -> String {
    use crate::patches::PatchStatus;
    let masked = a.map.status.iter().filter(|s| **s == PatchStatus::Masked).count();
    let outside = a.map.status.iter().filter(|s| **s == PatchStatus::OutsideOverlap).count();
    let gaps = 100.0 * frame.n_invalid() as f64 / frame.len().max(1) as f64;
    if masked >= outside {
        format!(
            "{gaps:.0} % of its pixels are detector gaps (at the pixel type's maximum) and {masked} patches hold too many; \
             choose another detector channel, or analyse them as signal with --no-gap-mask"
        )
    } else {
        let (dx, dy) = a.shift.map_or((0.0, 0.0), |s| (s.dx_px, s.dy_px));
        format!("the drift of ({dx:+.1}, {dy:+.1}) px has moved {outside} patches out of the field")
    }
}
