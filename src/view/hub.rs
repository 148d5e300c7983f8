//! The view's state and its event stream.
//!
//! The hub keeps what a browser needs to draw the session — every series (at most [`SERIES_KEPT`])
//! with its damage-versus-dose timeline, the latest per-patch map, the dose at which each patch
//! first crossed its threshold, alarms, the critical-dose fit and the latest frame as a grey PNG —
//! and broadcasts each change as one small event. A browser that connects gets the whole state at
//! once, then the events.
//!
//! Nothing here waits on a browser: the state is changed under a short lock and events go into a
//! bounded broadcast buffer (`event_buffer` events, shared by every client); a client that falls
//! behind loses the stale events and is sent the whole state again. The PNG and the fit are made on
//! the hub's own worker thread, once per frame whatever the number of clients, and only for the
//! newest frame when frames come faster than that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::alarms::forecast;
use crate::clock::rfc3339;
use crate::damage::Summary;
use crate::dose::FrameDose;
use crate::frame::Frame;
use crate::patches::PatchGrid;
use crate::register::Shift;

/// Series the view keeps; older ones leave the selector.
pub const SERIES_KEPT: usize = 32;
/// Timeline points kept per series; beyond, every other old point is dropped (the curve keeps its
/// shape, memory stays flat however long a series runs).
pub const POINTS_KEPT: usize = 20_000;
/// Alarms kept per series (the newest).
pub const ALARMS_KEPT: usize = 500;
/// The frame image is reduced (block mean) to at most this many pixels a side.
pub const IMAGE_MAX_SIDE: usize = 512;

/// One event for the browsers: its SSE name and JSON body, serialised once.
#[derive(Debug)]
pub struct Msg {
    pub event: &'static str,
    pub json: String,
}

/// What the page says about where its data come from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HubMeta {
    /// "live tcp://…", "replay of …", "recorded session …".
    pub source: String,
    /// Frames are still arriving (false for a recorded session).
    pub live: bool,
    pub metric: String,
    /// Why this metric, and with which weights.
    pub metric_choice: String,
    pub weights: Option<String>,
    /// Shown in red: e.g. "weights: SYNTHETIC (not ImageNet-trained)".
    pub warning: Option<String>,
    pub backend: String,
    pub started: String,
}

/// Counters for the status panel (set about once a second by the pipeline).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    /// Messages that could not be decoded plus frames that could not be analysed.
    pub frames_rejected: u64,
    pub frames_not_registered: u64,
    pub frames_without_patches: u64,
    pub alarms: u64,
    /// "12 frames recorded (12 flushed)", "recording STOPPED", or none when recording is off.
    pub recorder: Option<String>,
    pub recorder_stopped: bool,
    pub rss_mib: Option<f64>,
    /// Received frames per second over the last seconds.
    pub frame_rate_hz: Option<f64>,
    /// e⁻/Å² per second over the last seconds.
    pub dose_rate_e_per_a2_s: Option<f64>,
    pub cumulative_dose_e_per_a2: Option<f64>,
    pub clients: usize,
    /// Events stale clients missed (they were sent the whole state instead).
    pub client_resyncs: u64,
}

/// One analysed frame, as the view takes it (from the live analysis or from a session file).
pub struct FrameUpdate<'a> {
    pub series: &'a str,
    pub frame: u64,
    pub dose: Option<&'a FrameDose>,
    pub cumulative_e_per_a2: Option<f64>,
    pub summary: Option<&'a Summary>,
    /// Mean dissimilarity, damaged-area share and share above threshold when there is no
    /// summary (a session file).
    pub mean: Option<f64>,
    pub area: Option<f64>,
    pub above: Option<f64>,
    pub shift: Option<Shift>,
    pub grid: PatchGrid,
    /// Row-major per patch.
    pub dissimilarity: &'a [f32],
    pub status: &'a [u8],
    /// Per-patch thresholds (NaN: not judged); `None` while calibrating.
    pub thresholds: Option<Vec<f32>>,
    /// The frame the patches were cut from (drift-corrected when registration is on).
    pub image: Option<&'a Frame>,
    /// Scan pixel size (Å), for the scale bar.
    pub pixel_size_a: Option<f64>,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Point {
    frame: u64,
    dose: Option<f64>,
    mean: Option<f64>,
    /// Damaged-area share (connected significant patches).
    area: Option<f64>,
    /// Share of patches above their threshold.
    above: Option<f64>,
    threshold: Option<f64>,
    calibrating: bool,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Crossing {
    frame: u64,
    dose: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
struct Grid {
    rows: usize,
    cols: usize,
    patch_px: usize,
    width_px: usize,
    height_px: usize,
}

#[derive(Clone, Debug, Serialize)]
struct Latest {
    frame: u64,
    dose: Option<FrameDose>,
    summary: Option<Summary>,
    shift: Option<Shift>,
    values: Vec<Option<f64>>,
    status: Vec<u8>,
}

struct Image {
    frame: u64,
    png: Bytes,
}

struct SeriesView {
    n: u64,
    id: String,
    started: String,
    grid: Option<Grid>,
    pixel_size_a: Option<f64>,
    timeline: Vec<Point>,
    /// Thinning step of the timeline (1: every frame kept).
    stride: u64,
    latest: Option<Latest>,
    thresholds: Option<Arc<Vec<f32>>>,
    crossings: Vec<Option<Crossing>>,
    alarms: VecDeque<Value>,
    /// `{fit, note}`: the critical-dose fit of the mean dissimilarity, or why there is none.
    fit: Value,
    ended: Option<Value>,
    image: Option<Image>,
}

impl SeriesView {
    fn new(n: u64, id: &str) -> Self {
        Self {
            n,
            id: id.to_string(),
            started: rfc3339(SystemTime::now()),
            grid: None,
            pixel_size_a: None,
            timeline: Vec::new(),
            stride: 1,
            latest: None,
            thresholds: None,
            crossings: Vec::new(),
            alarms: VecDeque::new(),
            fit: json!({"fit": null, "note": "not determined yet"}),
            ended: None,
            image: None,
        }
    }

    fn brief(&self) -> Value {
        json!({
            "n": self.n,
            "id": self.id,
            "started": self.started,
            "frames": self.timeline.last().map(|p| p.frame),
            "alarms": self.alarms.len(),
            "ended": self.ended.is_some(),
        })
    }

    fn detail(&self) -> Value {
        json!({
            "n": self.n,
            "id": self.id,
            "started": self.started,
            "grid": self.grid,
            "pixel_size_a": self.pixel_size_a,
            "timeline": self.timeline,
            "latest": self.latest,
            "thresholds": self.thresholds.as_deref().map(|t| rounded_all(t)),
            "crossings": self.crossings,
            "alarms": self.alarms,
            "fit": self.fit,
            "ended": self.ended,
            "image_frame": self.image.as_ref().map(|i| i.frame),
        })
    }

    fn push_point(&mut self, p: Point) {
        if self.stride > 1 && !p.frame.is_multiple_of(self.stride) && self.timeline.len() > 1 {
            // Thinned: the newest point replaces the last one unless it is on the stride.
            if let Some(last) = self.timeline.last_mut()
                && !last.frame.is_multiple_of(self.stride)
            {
                *last = p;
                return;
            }
        }
        self.timeline.push(p);
        if self.timeline.len() > POINTS_KEPT {
            self.stride *= 2;
            let stride = self.stride;
            let newest = self.timeline.pop();
            self.timeline.retain(|q| q.frame.is_multiple_of(stride));
            self.timeline.extend(newest);
        }
    }
}

#[derive(Default)]
struct State {
    meta: HubMeta,
    status: Status,
    series: VecDeque<SeriesView>,
    next_n: u64,
    /// (when, frames received, cumulative dose) of recent status updates, for the rates.
    rates: VecDeque<(Instant, u64, Option<f64>)>,
}

impl State {
    fn find(&mut self, id: &str) -> Option<&mut SeriesView> {
        self.series.iter_mut().rev().find(|s| s.id == id)
    }

    /// The series `id`; a new one (announced) when it is not the newest.
    fn series(&mut self, id: &str, tx: &broadcast::Sender<Arc<Msg>>) -> &mut SeriesView {
        if self.series.back().is_none_or(|s| s.id != id) {
            let n = self.next_n;
            self.next_n += 1;
            if self.series.len() == SERIES_KEPT {
                self.series.pop_front();
            }
            let s = SeriesView::new(n, id);
            send(tx, "series", &s.brief());
            self.series.push_back(s);
        }
        // Just pushed or checked above.
        let last = self.series.len() - 1;
        &mut self.series[last]
    }
}

/// Work for the hub's worker thread: the newest frame's image, and a fit to redo.
#[derive(Default)]
struct Pending {
    image: Option<(u64, u64, Reduced)>,
    fit: Option<u64>,
    /// The worker is making an image or a fit now.
    busy: bool,
}

/// A frame reduced for display: f32 block means (NaN where every pixel was a gap).
struct Reduced {
    width: usize,
    height: usize,
    pixels: Vec<f32>,
}

struct Inner {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Msg>>,
    pending: Mutex<Pending>,
    wake: Condvar,
    clients: AtomicUsize,
    resyncs: AtomicU64,
}

/// The view's shared state; cheap to clone (one per consumer, server, status task).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent-enough view data: keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn send(tx: &broadcast::Sender<Arc<Msg>>, event: &'static str, body: &Value) {
    // No receiver is not an error: nobody is watching.
    let _ = tx.send(Arc::new(Msg { event, json: body.to_string() }));
}

/// Four decimals, as f64 (an f32 would print as its f64 expansion: 0.91839998960495).
fn rounded(v: f32) -> Option<f64> {
    v.is_finite().then(|| (f64::from(v) * 1e4).round() / 1e4)
}

fn rounded_all(v: &[f32]) -> Vec<Option<f64>> {
    v.iter().map(|&x| rounded(x)).collect()
}

impl Hub {
    /// A hub with room for `event_buffer` events per client; starts its worker thread.
    pub fn new(mut meta: HubMeta, event_buffer: usize) -> Self {
        if meta.started.is_empty() {
            meta.started = rfc3339(SystemTime::now());
        }
        let (tx, _) = broadcast::channel(event_buffer.max(4));
        let inner = Arc::new(Inner {
            state: Mutex::new(State { meta, ..State::default() }),
            tx,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            clients: AtomicUsize::new(0),
            resyncs: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new().name("bw-view".into()).spawn(move || worker(weak));
        if let Err(e) = spawned {
            // Without the worker the page still gets every number; only the frame image and the
            // running fit are missing.
            tracing::error!("live view: cannot start its worker thread ({e}): no frame images");
        }
        Self { inner }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Msg>> {
        self.inner.tx.subscribe()
    }

    pub fn meta(&self) -> HubMeta {
        lock(&self.inner.state).meta.clone()
    }

    /// A browser connected (`+1`) or left (`-1`).
    pub(crate) fn clients(&self) -> &AtomicUsize {
        &self.inner.clients
    }

    pub(crate) fn resynced(&self) {
        self.inner.resyncs.fetch_add(1, Relaxed);
    }

    /// Everything a browser that connects now needs: meta, status, the series list and the detail
    /// of the newest series.
    pub fn state_json(&self) -> String {
        let st = lock(&self.inner.state);
        json!({
            "meta": st.meta,
            "status": self.status_with_clients(&st.status),
            "series": st.series.iter().map(SeriesView::brief).collect::<Vec<_>>(),
            "current": st.series.back().map(SeriesView::detail),
        })
        .to_string()
    }

    fn status_with_clients(&self, s: &Status) -> Status {
        Status {
            clients: self.inner.clients.load(Relaxed),
            client_resyncs: self.inner.resyncs.load(Relaxed),
            ..s.clone()
        }
    }

    /// The detail of series number `n` (as `state_json` numbers them).
    pub fn series_json(&self, n: u64) -> Option<String> {
        let st = lock(&self.inner.state);
        st.series.iter().find(|s| s.n == n).map(|s| s.detail().to_string())
    }

    /// The latest frame image of series `n` (PNG).
    pub fn image(&self, n: u64) -> Option<Bytes> {
        let st = lock(&self.inner.state);
        st.series.iter().find(|s| s.n == n).and_then(|s| s.image.as_ref()).map(|i| i.png.clone())
    }

    /// An analysed frame.
    pub fn frame(&self, f: FrameUpdate<'_>) {
        // Reduced outside the lock: the only per-frame pixel work on the caller's thread.
        let reduced = f.image.map(reduce);
        let n;
        {
            let mut st = lock(&self.inner.state);
            let tx = &self.inner.tx;
            let s = st.series(f.series, tx);
            n = s.n;
            let grid = Grid {
                rows: f.grid.rows,
                cols: f.grid.cols,
                patch_px: f.grid.patch_px,
                width_px: f.grid.width_px,
                height_px: f.grid.height_px,
            };
            let new_grid = s.grid.as_ref().is_none_or(|g| (g.rows, g.cols) != (grid.rows, grid.cols));
            if new_grid {
                s.crossings = vec![None; f.grid.len()];
            }
            s.grid = Some(grid);
            if f.pixel_size_a.is_some() {
                s.pixel_size_a = f.pixel_size_a;
            }
            let dose = f.cumulative_e_per_a2.or(f.dose.and_then(|d| d.cumulative_e_per_a2));
            let thresholds_changed = match (&f.thresholds, &s.thresholds) {
                (Some(a), Some(b)) => {
                    a.len() != b.len() || a.iter().zip(b.iter()).any(|(x, y)| x.to_bits() != y.to_bits())
                }
                (Some(_), None) => true,
                _ => false,
            };
            if thresholds_changed {
                s.thresholds = f.thresholds.map(Arc::new);
            }
            let calibrating = f.summary.is_some_and(|s| s.calibrating);
            let mut crossed = Vec::new();
            if let Some(t) = s.thresholds.as_ref().filter(|_| !calibrating) {
                for (p, ((&v, &code), &th)) in f.dissimilarity.iter().zip(f.status).zip(t.iter()).enumerate() {
                    let analysed = code <= 1;
                    if analysed
                        && v > th
                        && let Some(slot @ None) = s.crossings.get_mut(p)
                    {
                        *slot = Some(Crossing { frame: f.frame, dose });
                        crossed.push(json!([p, f.frame, dose]));
                    }
                }
            }
            let point = Point {
                frame: f.frame,
                dose,
                mean: f.summary.and_then(|s| s.mean_dissimilarity).or(f.mean),
                area: f.summary.and_then(|s| s.damaged_area_fraction).or(f.area),
                above: f.summary.and_then(|s| s.fraction_above_threshold).or(f.above),
                threshold: f.summary.and_then(|s| s.threshold).and_then(rounded),
                calibrating: f.summary.is_some_and(|s| s.calibrating),
            };
            s.push_point(point);
            let values: Vec<Option<f64>> =
                f.dissimilarity.iter().zip(f.status).map(|(&v, &c)| if c <= 1 { rounded(v) } else { None }).collect();
            let latest = Latest {
                frame: f.frame,
                dose: f.dose.cloned(),
                summary: f.summary.cloned(),
                shift: f.shift,
                values,
                status: f.status.to_vec(),
            };
            let mut body = json!({
                "series": n,
                "point": point,
                "latest": latest,
                "crossed": crossed,
            });
            if new_grid {
                body["grid"] = json!(s.grid);
                body["pixel_size_a"] = json!(s.pixel_size_a);
            }
            if thresholds_changed {
                body["thresholds"] = json!(s.thresholds.as_deref().map(|t| rounded_all(t)));
            }
            s.latest = Some(latest);
            send(tx, "frame", &body);
        }
        let mut p = lock(&self.inner.pending);
        if let Some(r) = reduced {
            p.image = Some((n, f.frame, r));
        }
        p.fit = Some(n);
        self.inner.wake.notify_one();
    }

    /// An alarm as the sinks publish it; the view adds when it reached the view (for latency).
    pub fn alarm(&self, alarm: &impl Serialize) {
        let Ok(mut v) = serde_json::to_value(alarm) else { return };
        let now_ms = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        v["view_unix_ms"] = json!(now_ms);
        let id = v["series"].as_str().unwrap_or_default().to_string();
        let mut st = lock(&self.inner.state);
        let s = st.series(&id, &self.inner.tx);
        v["series_n"] = json!(s.n);
        if s.alarms.len() == ALARMS_KEPT {
            s.alarms.pop_front();
        }
        s.alarms.push_back(v.clone());
        send(&self.inner.tx, "alarm", &v);
    }

    /// Rows of a 4D-STEM scan's virtual image filled while the scan goes on (`scan_rows`; the
    /// daemon sends at most ten a second).
    pub fn scan_rows(&self, update: &Value) {
        send(&self.inner.tx, "scan_rows", update);
    }

    /// An alarm cleared (hysteresis).
    pub fn cleared(&self, clear: &impl Serialize) {
        let Ok(v) = serde_json::to_value(clear) else { return };
        send(&self.inner.tx, "cleared", &v);
    }

    /// A series ended: its summary (as `series_<id>.json` has it).
    pub fn series_ended(&self, summary: &Value) {
        let id = summary["series"].as_str().unwrap_or_default().to_string();
        let brief = json!({
            "frames_received": summary["frames_received"],
            "frames_analysed": summary["frames_analysed"],
            "frames_skipped": summary["frames_skipped"],
            "frames_not_registered": summary["frames_not_registered"],
            "frames_without_patches": summary["frames_without_patches"],
            "analysis_errors": summary["analysis_errors"],
            "patch_threshold": summary["noise_floor"]["method"].as_str().map(|_| summary["noise_floor"].clone()),
            "ended": summary["ended"],
        });
        let mut st = lock(&self.inner.state);
        let Some(s) = st.find(&id) else { return };
        s.fit = json!({"fit": summary["critical_dose_fit"], "note": summary["critical_dose_note"]});
        s.ended = Some(brief.clone());
        let body = json!({"series": s.n, "ended": brief, "fit": s.fit});
        send(&self.inner.tx, "series_end", &body);
    }

    /// New counters; the rates come from the last seconds of them. Sent to the browsers when
    /// something changed.
    pub fn set_status(&self, mut status: Status) {
        let mut st = lock(&self.inner.state);
        let now = Instant::now();
        st.rates.push_back((now, status.frames_received, status.cumulative_dose_e_per_a2));
        while st.rates.len() > 2
            && st.rates.front().is_some_and(|(t, ..)| now.duration_since(*t) > Duration::from_secs(5))
        {
            st.rates.pop_front();
        }
        if let (Some(&(t0, r0, _)), Some(&(t1, r1, d1))) = (st.rates.front(), st.rates.back()) {
            let dt = t1.duration_since(t0).as_secs_f64();
            if dt > 0.5 {
                status.frame_rate_hz = Some(r1.saturating_sub(r0) as f64 / dt);
            }
            // From the oldest update that knew the dose (a series' first frames may not).
            let first_dose = st.rates.iter().find_map(|&(t, _, d)| Some((t, d?)));
            if let (Some((t0, a)), Some(b)) = (first_dose, d1) {
                let dt = t1.duration_since(t0).as_secs_f64();
                if dt > 0.5 && b >= a {
                    status.dose_rate_e_per_a2_s = Some((b - a) / dt);
                }
            }
        }
        if status != st.status {
            st.status = status;
            let body = serde_json::to_value(self.status_with_clients(&st.status)).unwrap_or_default();
            send(&self.inner.tx, "status", &body);
        }
    }

    /// The newest series' cumulative dose (for the status panel).
    pub fn current_dose(&self) -> Option<f64> {
        let st = lock(&self.inner.state);
        st.series.back().and_then(|s| s.timeline.last()).and_then(|p| p.dose)
    }

    /// Waits (at most `timeout`) until the worker has made every image and fit asked of it.
    pub fn settle(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            {
                let p = lock(&self.inner.pending);
                if p.image.is_none() && p.fit.is_none() && !p.busy {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Block means down to at most [`IMAGE_MAX_SIDE`] a side; gaps left out (NaN when a block is all gaps).
fn reduce(frame: &Frame) -> Reduced {
    let (w, h) = (frame.width(), frame.height());
    let k = w.max(h).div_ceil(IMAGE_MAX_SIDE).max(1);
    let (rw, rh) = (w.div_ceil(k), h.div_ceil(k));
    let mut sum = vec![0f32; rw * rh];
    let mut count = vec![0u32; rw * rh];
    let px = frame.pixels();
    for y in 0..h {
        let row = &px[y * w..(y + 1) * w];
        let out = (y / k) * rw;
        for (x, &v) in row.iter().enumerate() {
            if v.is_finite() && frame.is_valid(y * w + x) {
                sum[out + x / k] += v;
                count[out + x / k] += 1;
            }
        }
    }
    let pixels = sum.iter().zip(&count).map(|(&s, &c)| if c > 0 { s / c as f32 } else { f32::NAN }).collect();
    Reduced { width: rw, height: rh, pixels }
}

/// Grey PNG of a reduced frame, contrast from its 0.5th to 99.5th percentile.
fn encode(r: &Reduced) -> Option<Bytes> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut finite: Vec<f32> = r.pixels.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    finite.sort_unstable_by(f32::total_cmp);
    let at = |q: f64| finite[((finite.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(0.005), at(0.995));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let grey: Vec<u8> = r
        .pixels
        .iter()
        .map(|&v| if v.is_finite() { (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8 } else { 0 })
        .collect();
    let mut out = Vec::with_capacity(grey.len() / 2);
    let enc = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub);
    enc.write_image(&grey, r.width as u32, r.height as u32, image::ExtendedColorType::L8).ok()?;
    Some(Bytes::from(out))
}

/// The hub's worker: images and fits, newest first; ends when the hub is gone. With nobody
/// watching, and for fits always, at most one a second: the analysis shares these cores.
fn worker(hub: Weak<Inner>) {
    let idle_every = Duration::from_secs(1);
    let mut last_image: Option<Instant> = None;
    let mut last_fit: Option<Instant> = None;
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let (image, fit, took) = {
            let mut p = lock(&inner.pending);
            if p.image.is_none() && p.fit.is_none() {
                let (guard, _) =
                    inner.wake.wait_timeout(p, Duration::from_millis(250)).unwrap_or_else(|e| e.into_inner());
                p = guard;
            }
            let watched = inner.clients.load(Relaxed) > 0;
            let image_due = watched || last_image.is_none_or(|t| t.elapsed() >= idle_every);
            let fit_due = last_fit.is_none_or(|t| t.elapsed() >= idle_every);
            let image = if image_due { p.image.take() } else { None };
            let fit = if fit_due { p.fit.take() } else { None };
            p.busy = image.is_some() || fit.is_some();
            let took = p.busy;
            (image, fit, took)
        };
        if let Some((n, frame, r)) = image {
            last_image = Some(Instant::now());
            if let Some(png) = encode(&r) {
                let mut st = lock(&inner.state);
                if let Some(s) = st.series.iter_mut().find(|s| s.n == n)
                    && s.image.as_ref().is_none_or(|i| i.frame <= frame)
                {
                    s.image = Some(Image { frame, png });
                    let body = json!({"series": n, "frame": frame, "width": r.width, "height": r.height});
                    send(&inner.tx, "image", &body);
                }
            }
        }
        if let Some(n) = fit {
            last_fit = Some(Instant::now());
            let points: Option<(Vec<f64>, Vec<f64>)> = {
                let st = lock(&inner.state);
                st.series.iter().find(|s| s.n == n).filter(|s| s.ended.is_none()).map(|s| {
                    s.timeline.iter().filter(|p| !p.calibrating).filter_map(|p| Some((p.dose?, p.mean?))).unzip()
                })
            };
            if let Some((d, m)) = points {
                let (fit, note) = forecast::reported(forecast::fit(&d, &m));
                let v = json!({"fit": fit, "note": note});
                let mut st = lock(&inner.state);
                if let Some(s) = st.series.iter_mut().find(|s| s.n == n)
                    && s.ended.is_none()
                    && s.fit != v
                {
                    s.fit = v.clone();
                    send(&inner.tx, "fit", &json!({"series": n, "fit": v}));
                }
            }
        }
        lock(&inner.pending).busy = false;
        drop(inner);
        if !took {
            // Rate-limited work still pending: look again shortly rather than spin.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl HubMeta {
    /// What the page says about a pipeline's analysis.
    pub fn of(provenance: &crate::report::provenance::Provenance, source: &str, live: bool, backend: &str) -> Self {
        let weights = provenance.weights.as_ref();
        Self {
            source: source.to_string(),
            live,
            metric: provenance.metric.name.name().to_string(),
            metric_choice: provenance.metric_choice.clone(),
            weights: weights
                .map(|w| format!("{} (sha256 {}…)", w.origin_label, w.sha256.get(..12).unwrap_or(&w.sha256))),
            warning: weights.and_then(|w| w.origin.picture_warning()),
            backend: backend.to_string(),
            started: String::new(),
        }
    }

    /// The same from a session file's provenance JSON (`beamwatch view`).
    pub fn of_json(provenance: &Value, source: &str) -> Self {
        let w = &provenance["weights"];
        let origin = w["origin"].as_str();
        let label = w["origin_label"].as_str().unwrap_or("unknown origin");
        Self {
            source: source.to_string(),
            live: false,
            metric: provenance["metric"]["name"].as_str().unwrap_or("?").to_string(),
            metric_choice: provenance["metric_choice"].as_str().unwrap_or_default().to_string(),
            weights: origin.map(|_| label.to_string()),
            warning: origin.filter(|o| *o != "torchvision_imagenet1k_v1").map(|_| format!("weights: {label}")),
            backend: "recorded".into(),
            started: String::new(),
        }
    }
}
