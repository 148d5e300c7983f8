//! What the analysis hands its results to. Every consumer sees the same events in the same order
//! on the compute thread, so each must return at once: both built-in consumers (the alarm sinks
//! and the recorder) only queue the event for their own task or thread.
//!
//! Per analysed frame the order is its alarms first, then the frame itself: the frame's result
//! (with its grid) is bigger and less urgent.

use std::time::Instant;

use serde::Serialize;

use super::summary::SeriesSummary;
use crate::alarms::sinks::Sinks;
use crate::alarms::{Alarm, Clear};
use crate::damage::{FrameAnalysis, Summary};
use crate::dose::FrameDose;
use crate::frame::Frame;
use crate::record::recorder::Recorder;
use crate::view::hub::{FrameUpdate, Hub};

/// One analysed frame.
pub struct Analysed<'a> {
    pub series: &'a str,
    pub frame: u64,
    pub dose: &'a FrameDose,
    /// When the frame arrived (latencies are measured from here).
    pub received: Instant,
    pub analysis: &'a FrameAnalysis,
    pub analysis_ms: f64,
    /// The frame as received (the analysis' drift-corrected copy, if any, is in `analysis`).
    pub frame_pixels: &'a Frame,
    /// The per-patch thresholds the frame was judged by (NaN: not judged); `None` while calibrating.
    pub thresholds: Option<&'a [f32]>,
}

pub enum Event<'a> {
    Alarm(&'a Alarm),
    Cleared(&'a Clear),
    Analysed(&'a Analysed<'a>),
    /// A series ended; `json` is `summary` serialised once for every consumer.
    SeriesEnded {
        summary: &'a SeriesSummary,
        json: &'a serde_json::Value,
    },
}

/// Something that takes the analysis' results. Runs on the compute thread: never block.
pub trait Consumer: Send {
    fn on(&mut self, event: &Event<'_>);
}

/// The alarm sinks: alarms to the PUB socket, the log and the command; frame results and series
/// summaries to the PUB socket.
impl Consumer for Sinks {
    fn on(&mut self, event: &Event<'_>) {
        match event {
            Event::Alarm(a) => self.alarm(Box::new((*a).clone())),
            Event::Cleared(c) => self.clear((*c).clone()),
            Event::Analysed(f) => {
                if let Ok(json) = serde_json::to_string(&FrameResult::of(f)) {
                    self.frame(json, Some(f.received));
                }
            }
            Event::SeriesEnded { json, .. } => self.summary((*json).clone()),
        }
    }
}

/// The session recorder: results, alarms and the series summary into the series' file (frames
/// and their dose reach it from the receive side, before the analysis).
impl Consumer for Recorder {
    fn on(&mut self, event: &Event<'_>) {
        match event {
            Event::Alarm(a) => self.alarm(&a.series, serde_json::to_string(a).unwrap_or_default()),
            Event::Cleared(_) => {}
            Event::Analysed(f) => {
                self.analysis(f.series, f.frame, f.analysis, f.analysis_ms, f.dose.cumulative_e_per_a2)
            }
            Event::SeriesEnded { summary, json } => self.end_series(&summary.series, Some(json.to_string())),
        }
    }
}

/// The live view: every result, as it happens (the hub only queues; its worker makes the images).
impl Consumer for Hub {
    fn on(&mut self, event: &Event<'_>) {
        match event {
            Event::Alarm(a) => self.alarm(*a),
            Event::Cleared(c) => self.cleared(*c),
            Event::Analysed(f) => {
                let a = f.analysis;
                let status: Vec<u8> = a.map.status.iter().map(|s| s.code()).collect();
                self.frame(FrameUpdate {
                    series: f.series,
                    frame: f.frame,
                    dose: Some(f.dose),
                    cumulative_e_per_a2: f.dose.cumulative_e_per_a2,
                    summary: Some(&a.summary),
                    mean: None,
                    area: None,
                    above: None,
                    shift: a.shift,
                    grid: a.map.grid,
                    dissimilarity: &a.map.dissimilarity,
                    status: &status,
                    thresholds: f.thresholds.map(<[f32]>::to_vec),
                    image: Some(a.aligned.as_ref().unwrap_or(f.frame_pixels)),
                    pixel_size_a: f.dose.pixel_size_a.value,
                });
            }
            Event::SeriesEnded { json, .. } => self.series_ended(json),
        }
    }
}

/// A frame's result on the PUB socket (topic `beamwatch.frame`), for live viewers.
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

impl<'a> FrameResult<'a> {
    fn of(f: &'a Analysed<'a>) -> Self {
        let a = f.analysis;
        Self {
            kind: "frame",
            series: f.series,
            frame: f.frame,
            dose: f.dose,
            summary: &a.summary,
            shift: a.shift,
            analysis_ms: f.analysis_ms,
            rows: a.map.grid.rows,
            cols: a.map.grid.cols,
            dissimilarity: a
                .map
                .dissimilarity
                .iter()
                .zip(&a.map.status)
                .map(|(d, s)| s.analysed().then(|| (d * 1e4).round() / 1e4))
                .collect(),
        }
    }
}
