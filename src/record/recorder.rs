//! The recorder: a thread that owns the session files (HDF5 is not async) and writes what the
//! receive side and the compute thread hand it.
//!
//! - Frames and their dose come from the receive side, so frames the analysis skips are recorded
//!   too; analysis results and alarms come from the compute thread. A series may still be finishing
//!   its analysis while the next has started, so each open series has its own writer.
//! - Frame pixels pass a byte budget checked by the sender: when the disk is slower than the
//!   detector, pixels beyond it are not recorded (counted, warned) and the receive loop never waits.
//! - Everything is flushed at least every `flush_interval_s` (≤ 1 s), so a crash loses at most that.
//! - Before each frame the room left on the disk (and under `ulimit -f`) is checked: when it runs
//!   short, the files are closed cleanly and recording stops with a critical alarm and one log
//!   line; monitoring goes on. A write error that slips past the check (quota, I/O error) stops
//!   recording the same way, but the file then holds only what was flushed before it. The log
//!   line is written after the files are finished, and says which ones got their end record.
//! - A series id is data: its file name is a bounded, collision-free encoding of it
//!   ([`super::file_stem`]). A file that cannot be created costs that series' recording only: one
//!   `series-not-recorded` alarm, counted, and the next series is recorded again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use super::session::{Pixels, ReceivedRow, SessionMeta, SessionWriter};
use crate::damage::{SimilarityMap, Summary};
use crate::decode::WireFormat;
use crate::frame::PixelType;
use crate::register::Shift;

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn deflate_default() -> u8 {
    1
}
fn second() -> f64 {
    1.0
}
fn budget() -> f64 {
    512.0
}
fn reserve() -> f64 {
    256.0
}

/// `[record]` configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Write a session file (HDF5) per series.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where (default: `sessions/` in the pipeline's output directory).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Frames to store: 0 none (results only), 1 every frame, N every Nth.
    #[serde(default = "one")]
    pub frames_every: u32,
    /// Deflate level of stored frames (0: none, 1 fast … 9 small).
    #[serde(default = "deflate_default")]
    pub deflate: u8,
    /// Flush interval; at most 1 s.
    #[serde(default = "second")]
    pub flush_interval_s: f64,
    /// Frame bytes that may wait for the disk before frames go unrecorded (MiB).
    #[serde(default = "budget")]
    pub max_queue_mib: f64,
    /// Free space to leave on the recording disk (MiB): recording stops cleanly before this.
    #[serde(default = "reserve")]
    pub min_free_mib: f64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            frames_every: 1,
            deflate: 1,
            flush_interval_s: 1.0,
            max_queue_mib: 512.0,
            min_free_mib: 256.0,
        }
    }
}

impl RecordConfig {
    /// The offending key and why, if any value is impossible.
    pub fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        if !(self.flush_interval_s > 0.0 && self.flush_interval_s <= 1.0) {
            return Some(("record.flush_interval_s", self.flush_interval_s.to_string(), "must be in (0, 1] seconds"));
        }
        if self.deflate > 9 {
            return Some(("record.deflate", self.deflate.to_string(), "must be 0..=9"));
        }
        if !(self.max_queue_mib.is_finite() && self.max_queue_mib > 0.0) {
            return Some(("record.max_queue_mib", self.max_queue_mib.to_string(), "must be positive"));
        }
        if !(self.min_free_mib.is_finite() && self.min_free_mib >= 0.0) {
            return Some(("record.min_free_mib", self.min_free_mib.to_string(), "must be ≥ 0"));
        }
        None
    }
}

/// Counters, read by the daemon report.
#[derive(Debug, Default)]
pub struct RecordStats {
    pub files: AtomicU64,
    pub frames_recorded: AtomicU64,
    /// Frames whose pixels were not recorded because the disk fell behind.
    pub frames_not_recorded: AtomicU64,
    pub analyses: AtomicU64,
    pub alarms: AtomicU64,
    /// Frames stored and flushed (what a crash would keep).
    pub frames_flushed: AtomicU64,
    /// Recording stopped for good (a write failed, or the disk is nearly full).
    pub failed: AtomicBool,
    /// Series whose file could not be created: each alarmed once; the next series records again.
    pub series_not_recorded: AtomicU64,
    /// Why recording stopped, or else why the last series went unrecorded.
    pub error: std::sync::Mutex<Option<String>>,
    pub files_written: std::sync::Mutex<Vec<PathBuf>>,
}

/// What the recorder is told.
pub enum Item {
    Start {
        series: String,
        format: WireFormat,
        source: String,
        provenance_json: String,
    },
    Frame {
        series: String,
        index: u64,
        width: usize,
        height: usize,
        dtype: PixelType,
        pixels: Option<Pixels>,
        received: ReceivedRow,
        /// The pixels' bytes from the memory budget, given back when the item is done with.
        held: Option<crate::budget::Reservation>,
    },
    Analysis {
        series: String,
        index: u64,
        map: SimilarityMap,
        summary: Summary,
        shift: Option<Shift>,
        analysis_ms: f64,
        cumulative: Option<f64>,
    },
    Alarm {
        series: String,
        json: String,
    },
    /// A 4D-STEM scan (sent before its frame, so the file is made with its `/fourd` group).
    Scan {
        series: String,
        scan: Arc<crate::decode::ScanFrame>,
        dose: crate::dose::FrameDose,
    },
    End {
        series: String,
        summary_json: Option<String>,
    },
}

/// What failed: recording as a whole (once), or one series' file (once per series).
pub enum Failure<'a> {
    Stopped { why: &'a str },
    Series { series: &'a str, why: &'a str },
}

/// Called when recording fails (the daemon raises an alarm).
pub type OnFailure = Box<dyn Fn(Failure<'_>) + Send>;

/// Handle to the recorder thread.
#[derive(Clone)]
pub struct Recorder {
    tx: Sender<Item>,
    pub stats: Arc<RecordStats>,
    queued: Arc<AtomicUsize>,
    budget: usize,
    frames_every: u32,
    /// The daemon's memory budget (pixels waiting for the disk draw from it too).
    memory: Arc<crate::budget::Budget>,
}

struct Open {
    writer: Option<SessionWriter>,
    /// Its file could not be created: the series' items are dropped (it was alarmed once).
    refused: bool,
    format: WireFormat,
    source: String,
    provenance_json: String,
    /// A scan that came before the file was made: it shapes the `/fourd` group, then is written.
    pending_scan: Option<(Arc<crate::decode::ScanFrame>, crate::dose::FrameDose)>,
}

impl Recorder {
    /// Starts the thread. `patch_px` sizes the stored grids. The thread finishes every open file
    /// and ends when the last handle is dropped.
    pub fn start(
        cfg: &RecordConfig,
        dir: PathBuf,
        patch_px: usize,
        on_failure: OnFailure,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(RecordStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let (s, q, c) = (stats.clone(), queued.clone(), cfg.clone());
        let handle = std::thread::Builder::new()
            .name("bw-record".into())
            .spawn(move || run(rx, c, dir, patch_px, s, q, on_failure))?;
        let budget = (cfg.max_queue_mib * 1024.0 * 1024.0) as usize;
        let memory = crate::budget::Budget::unlimited();
        Ok((Self { tx, stats, queued, budget, frames_every: cfg.frames_every, memory }, handle))
    }

    /// Pixels waiting for the disk draw from `memory` as well as from `max_queue_mib`.
    pub fn within(mut self, memory: Arc<crate::budget::Budget>) -> Self {
        self.memory = memory;
        self
    }

    fn send(&self, item: Item) {
        if !self.stats.failed.load(Ordering::Relaxed) {
            let _ = self.tx.send(item);
        }
    }

    pub fn start_series(&self, series: &str, format: WireFormat, source: &str, provenance_json: String) {
        self.send(Item::Start { series: series.into(), format, source: source.into(), provenance_json });
    }

    /// Records a received frame's dose, and its pixels when this frame is one to store and the
    /// disk keeps up.
    pub fn frame(&self, series: &str, index: u64, frame: &crate::frame::Frame, received: ReceivedRow) {
        let wanted = self.frames_every > 0 && index.is_multiple_of(self.frames_every as u64);
        let mut held = None;
        let pixels = if wanted {
            let bytes = frame.len() * frame.dtype().bytes();
            let fits = self.queued.load(Ordering::Relaxed) + bytes <= self.budget;
            held = fits.then(|| self.memory.try_reserve(bytes as u64, crate::budget::Kind::Recorder)).flatten();
            if held.is_some() {
                self.queued.fetch_add(bytes, Ordering::Relaxed);
                Some(Pixels::from_frame(frame))
            } else {
                if self.stats.frames_not_recorded.fetch_add(1, Ordering::Relaxed).is_multiple_of(100) {
                    tracing::warn!(
                        "recording falls behind the stream: frame {index} of series {series} not stored (counted)"
                    );
                }
                None
            }
        } else {
            None
        };
        self.send(Item::Frame {
            series: series.into(),
            index,
            width: frame.width(),
            height: frame.height(),
            dtype: frame.dtype(),
            pixels,
            received,
            held,
        });
    }

    pub fn analysis(
        &self,
        series: &str,
        index: u64,
        a: &crate::damage::FrameAnalysis,
        analysis_ms: f64,
        cumulative: Option<f64>,
    ) {
        self.send(Item::Analysis {
            series: series.into(),
            index,
            map: a.map.clone(),
            summary: a.summary.clone(),
            shift: a.shift,
            analysis_ms,
            cumulative,
        });
    }

    pub fn alarm(&self, series: &str, json: String) {
        self.send(Item::Alarm { series: series.into(), json });
    }

    /// A 4D-STEM scan's virtual images, mask and spot intensities (before its frame).
    pub fn scan(&self, series: &str, scan: Arc<crate::decode::ScanFrame>, dose: &crate::dose::FrameDose) {
        self.send(Item::Scan { series: series.into(), scan, dose: dose.clone() });
    }

    pub fn end_series(&self, series: &str, summary_json: Option<String>) {
        self.send(Item::End { series: series.into(), summary_json });
    }
}

fn file_name(dir: &std::path::Path, series: &str) -> PathBuf {
    let safe = super::file_stem(series);
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace([':', '-'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string();
    let mut path = dir.join(format!("session_{safe}_{stamp}.h5"));
    let mut k = 1;
    while path.exists() {
        path = dir.join(format!("session_{safe}_{stamp}_{k}.h5"));
        k += 1;
    }
    path
}

fn run(
    rx: Receiver<Item>,
    cfg: RecordConfig,
    dir: PathBuf,
    patch_px: usize,
    stats: Arc<RecordStats>,
    queued: Arc<AtomicUsize>,
    on_failure: OnFailure,
) {
    let interval = Duration::from_secs_f64(cfg.flush_interval_s.clamp(0.01, 1.0));
    let mut open: HashMap<String, Open> = HashMap::new();
    // Flush within one interval of the first write not yet flushed; block while nothing is pending.
    let mut dirty_since: Option<Instant> = None;
    let mut closed_frames = 0u64;
    let min_free_bytes = (cfg.min_free_mib * 1024.0 * 1024.0) as u64;
    // Bytes handed to HDF5 since the last flush: not on disk yet, but they will be.
    let mut pending_bytes = 0u64;
    // Once per recorder: the flag, one log line, the error for the report, the alarm.
    let announce = |why: &str, files: &str| {
        if !stats.failed.swap(true, Ordering::Relaxed) {
            tracing::error!("recording stopped: {why}; monitoring continues; {files}");
            if let Ok(mut e) = stats.error.lock() {
                *e = Some(why.to_string());
            }
            on_failure(Failure::Stopped { why });
        }
    };
    // A series' file could not be created: alarmed once for that series; recording goes on.
    let not_recorded = |series: &str, why: String| {
        stats.series_not_recorded.fetch_add(1, Ordering::Relaxed);
        let shown: String = series.chars().take(80).collect();
        let why = format!("series {shown}{}: {why}", if shown.len() < series.len() { "…" } else { "" });
        tracing::error!("not recording {why}; monitoring continues, and the next series is recorded again");
        if let Ok(mut e) = stats.error.lock() {
            *e = Some(why.clone());
        }
        on_failure(Failure::Series { series, why: &why });
    };
    // A write failed: the open files are dropped as they are.
    let fail = |open: &mut HashMap<String, Open>, why: String| {
        announce(&why, "the session files hold what was flushed before");
        open.clear();
    };
    // Space ran short before any write failed: every file is closed cleanly, saying why.
    // The files are finished first, so the one log line says what happened to them.
    let stop_clean = |open: &mut HashMap<String, Open>, closed: &mut u64, why: String| {
        let (mut clean, mut unfinished) = (0usize, Vec::new());
        for (_, o) in open.drain() {
            if let Some(w) = o.writer {
                let path = w.path().to_owned();
                let (frames, done) = finish(w, End::Stopped(&why), &stats);
                *closed += frames;
                match done {
                    Ok(()) => clean += 1,
                    Err(()) => unfinished.push(path.display().to_string()),
                }
            }
        }
        let files = match (clean, unfinished.len()) {
            (0, 0) => "no session file was open".to_string(),
            (n, 0) => format!("{n} session file(s) closed cleanly"),
            (n, _) => format!(
                "{n} session file(s) closed cleanly; {} without an end record, holding what was flushed before: {}",
                unfinished.len(),
                unfinished.join(", ")
            ),
        };
        announce(&why, &files);
        stats.frames_flushed.store(*closed, Ordering::Relaxed);
    };
    loop {
        let wait = dirty_since.map_or(Duration::from_secs(3600), |t| interval.saturating_sub(t.elapsed()));
        let item = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Every handle is gone: finish what is open (a series the analysis never ended keeps
                // what was recorded, without a summary).
                for (_, o) in open.drain() {
                    if let Some(w) = o.writer {
                        closed_frames += finish(w, End::Series(None), &stats).0;
                    }
                }
                stats.frames_flushed.store(closed_frames, Ordering::Relaxed);
                return;
            }
        };
        let failed = stats.failed.load(Ordering::Relaxed);
        match item {
            None => {}
            Some(Item::Frame { pixels: Some(p), .. }) if failed => {
                queued.fetch_sub(p.bytes(), Ordering::Relaxed);
            }
            Some(_) if failed => {}
            Some(Item::Start { series, format, source, provenance_json }) => {
                open.insert(series, Open { writer: None, refused: false, format, source, provenance_json, pending_scan: None });
            }
            Some(Item::Frame { series, index, width, height, dtype, pixels, received, .. }) => {
                let bytes = pixels.as_ref().map_or(0, Pixels::bytes);
                let o = open.entry(series.clone()).or_insert_with(|| Open {
                    writer: None,
                    refused: false,
                    format: WireFormat::Auto,
                    source: String::new(),
                    provenance_json: String::new(),
                    pending_scan: None,
                });
                if o.refused {
                    queued.fetch_sub(bytes, Ordering::Relaxed);
                    continue;
                }
                if o.writer.is_none() {
                    if let Err(e) = std::fs::create_dir_all(&dir) {
                        o.refused = true;
                        not_recorded(&series, format!("{}: {e}", dir.display()));
                        queued.fetch_sub(bytes, Ordering::Relaxed);
                        continue;
                    }
                    let p = patch_px.max(1);
                    let meta = SessionMeta {
                        series: series.clone(),
                        source: o.source.clone(),
                        format: o.format,
                        width,
                        height,
                        dtype,
                        patch_px: p,
                        grid_rows: height / p,
                        grid_cols: width / p,
                        frames_every: cfg.frames_every,
                        deflate: cfg.deflate,
                        provenance_json: o.provenance_json.clone(),
                        fourd: o
                            .pending_scan
                            .as_ref()
                            .map(|(s, d)| crate::record::fourd_group::FourDMeta::of(s, &s.analysed, d)),
                    };
                    match SessionWriter::create(&file_name(&dir, &series), meta) {
                        Ok(w) => {
                            stats.files.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("recording series {series} to {}", w.path().display());
                            o.writer = Some(w);
                        }
                        Err(e) => {
                            // One file that cannot be made (a name the file system refuses, a
                            // permission) costs this series' recording, not every later one's.
                            o.refused = true;
                            not_recorded(&series, e.to_string());
                            queued.fetch_sub(bytes, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                if let (Some(w), Some(_)) = (&o.writer, &pixels) {
                    let on_disk = std::fs::metadata(w.path()).map_or(0, |m| m.len());
                    let needed = pending_bytes + 2 * bytes as u64 + (1 << 20);
                    if let Some(room) = super::space::headroom_bytes(w.path(), on_disk, min_free_bytes)
                        && room < needed
                    {
                        let why = format!(
                            "{}: the disk is nearly full ({:.1} MiB left above the {:.0} MiB reserve or the file-size limit, {:.1} MiB needed)",
                            dir.display(),
                            room as f64 / 1048576.0,
                            cfg.min_free_mib,
                            needed as f64 / 1048576.0
                        );
                        stop_clean(&mut open, &mut closed_frames, why);
                        queued.fetch_sub(bytes, Ordering::Relaxed);
                        dirty_since = None;
                        continue;
                    }
                }
                pending_bytes += bytes as u64;
                let w = o.writer.as_mut().map(|w| {
                    let mut r = w.received(&received);
                    if r.is_ok()
                        && let Some(px) = &pixels
                    {
                        if w.meta().width == width && w.meta().height == height {
                            r = w.frame(index, px);
                            if r.is_ok() {
                                stats.frames_recorded.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            tracing::warn!("series {series} frame {index}: {width}×{height} px does not fit the file's frames; dose recorded, pixels not");
                        }
                    }
                    if r.is_ok()
                        && let Some((scan, dose)) = o.pending_scan.take()
                    {
                        r = w.scan(&scan, &dose);
                    }
                    r
                });
                queued.fetch_sub(bytes, Ordering::Relaxed);
                dirty_since.get_or_insert_with(Instant::now);
                if let Some(Err(e)) = w {
                    fail(&mut open, e.to_string());
                }
            }
            Some(Item::Analysis { series, index, map, summary, shift, analysis_ms, cumulative }) => {
                if let Some(w) = open.get_mut(&series).and_then(|o| o.writer.as_mut()) {
                    match w.analysis(index, &map, &summary, shift, analysis_ms, cumulative) {
                        Ok(()) => {
                            stats.analyses.fetch_add(1, Ordering::Relaxed);
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                        Err(e) => fail(&mut open, e.to_string()),
                    }
                }
            }
            Some(Item::Alarm { series, json }) => {
                if let Some(w) = open.get_mut(&series).and_then(|o| o.writer.as_mut()) {
                    match w.alarm(&json) {
                        Ok(()) => {
                            stats.alarms.fetch_add(1, Ordering::Relaxed);
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                        Err(e) => fail(&mut open, e.to_string()),
                    }
                }
            }
            Some(Item::Scan { series, scan, dose }) => {
                let o = open.entry(series).or_insert_with(|| Open {
                    writer: None,
                    refused: false,
                    format: WireFormat::Auto,
                    source: String::new(),
                    provenance_json: String::new(),
                    pending_scan: None,
                });
                match o.writer.as_mut() {
                    Some(w) => match w.scan(&scan, &dose) {
                        Ok(()) => {
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                        Err(e) => fail(&mut open, e.to_string()),
                    },
                    None if !o.refused => o.pending_scan = Some((scan, dose)),
                    None => {}
                }
            }
            Some(Item::End { series, summary_json }) => {
                if let Some(w) = open.remove(&series).and_then(|o| o.writer) {
                    closed_frames += finish(w, End::Series(summary_json.as_deref()), &stats).0;
                }
            }
        }
        if dirty_since.is_some_and(|t| t.elapsed() >= interval) {
            let mut in_open = 0;
            let mut err = None;
            for o in open.values() {
                if let Some(w) = &o.writer {
                    match w.flush() {
                        Ok(()) => in_open += w.frames_written() as u64,
                        Err(e) => err = Some(e.to_string()),
                    }
                }
            }
            match err {
                Some(e) => fail(&mut open, e),
                None => stats.frames_flushed.store(closed_frames + in_open, Ordering::Relaxed),
            }
            pending_bytes = 0;
            dirty_since = None;
        }
    }
}

/// How a file ends: with its series (and the series summary), or because recording stopped.
enum End<'a> {
    Series(Option<&'a str>),
    Stopped(&'a str),
}

/// Finishes a file; returns the frames it holds, and whether its end record was written (the
/// failure is logged: the file keeps what was flushed before and reads as "did not end cleanly").
fn finish(w: SessionWriter, end: End<'_>, stats: &RecordStats) -> (u64, Result<(), ()>) {
    let frames = w.frames_written() as u64;
    let path = w.path().to_owned();
    let done = match end {
        End::Series(summary) => w.finish(summary),
        End::Stopped(why) => w.finish_stopped(why),
    };
    match done {
        Ok(path) => {
            tracing::info!("session file complete: {} ({frames} frames)", path.display());
            if let Ok(mut v) = stats.files_written.lock() {
                v.push(path);
            }
            (frames, Ok(()))
        }
        Err(e) => {
            tracing::error!(
                "session file {}: its end record could not be written ({e}); it keeps the frames flushed before",
                path.display()
            );
            if let Ok(mut v) = stats.files_written.lock() {
                v.push(path);
            }
            (frames, Err(()))
        }
    }
}
