//! The scan stage: in 4D-STEM mode (`[fourd] enabled`), the decoded messages of a series are
//! diffraction patterns, one per probe position; this stage turns them into one STEM frame per
//! completed scan (the `analyse` virtual detector's image, carrying every detector's image and the
//! spot intensities in [`FrameMsg::scan`]) before the [`super::Pipeline`] sees them. With `[fourd]`
//! off it passes every message through unchanged, so the daemon and replay have one path.
//!
//! Nothing here fails a source: a series without a usable scan shape is refused with one error line
//! (its patterns counted as refused); a pattern of the wrong size, a late or a duplicate pattern is
//! counted and its position masked, never shifted.

use std::sync::Arc;

use bytes::Bytes;

use crate::budget::Budget;
use crate::decode::{DecodeError, Decoder, DoseHeader, FrameMsg, Message, ScanFrame, SeriesInfo, WireFormat};
use crate::dose::DoseConfig;
use crate::fourd::geometry::{ShapeHints, resolve_shape};
use crate::fourd::{FourDConfig, FourDError, ScanAssembler, ScanEvent, ScanResult, ScanShape, ShapeSource};
use crate::frame::{Frame, PixelType};

use super::scan_pool::{BandSeries, Pool, Ready, threads_for};
use super::stats::{Stats, add, inc};

/// Elementary charge (C): a counting detector's counts per second × e is the beam current.
const ELECTRON_C: f64 = 1.602_176_634e-19;

/// Where a series' patterns are reduced.
enum Assembly {
    /// Here, as they come (replay).
    Inline(ScanAssembler),
    /// By the pattern workers (the live daemon).
    Pooled(BandSeries),
}

/// The series being assembled.
struct OpenScan {
    series: String,
    format: WireFormat,
    assembly: Assembly,
    /// The geometry the scans were measured with, once known.
    spots: Vec<crate::fourd::Spot>,
    centre_px: Option<(f64, f64)>,
    bf_radius_px: Option<f64>,
    shape: ScanShape,
    /// The detector whose image is analysed.
    analyse: String,
    source: ShapeSource,
    regions: (usize, usize),
    /// The pattern pixel type (integer: a counting detector, whose counts estimate the current).
    dtype: Option<PixelType>,
    /// Per-pattern frame time from the stream (s): the dwell time of each probe position.
    frame_time_s: Option<f64>,
    /// The series header's beam current, or the configuration's: when neither is known, a counting
    /// detector's counts estimate it.
    current_known: bool,
    late_seen: u64,
    scans_out: u64,
    last_timestamp_ns: Option<u64>,
}

/// Rows of a scan being filled: the analysed detector's values (row-major; empty when the scan
/// was complete before they could be read — its frame follows).
#[derive(Clone, Debug)]
pub struct ScanRows {
    pub series: String,
    pub scan: u64,
    pub rows: std::ops::Range<usize>,
    pub cols: usize,
    pub detector: String,
    pub values: Vec<f32>,
}

/// Patterns → scans for one source (see the module notes).
pub struct ScanStage {
    cfg: FourDConfig,
    cli_shape: Option<ScanShape>,
    dose: DoseConfig,
    open: Option<OpenScan>,
    /// A series refused for want of a scan shape: its patterns are counted and dropped.
    refused: Option<String>,
    /// The pattern workers (live daemon); `None`: patterns are reduced inline.
    pool: Option<Pool>,
    /// The decoder as of the series start, for the workers to decode that series' patterns.
    decoder: Option<Decoder>,
    /// Patterns the workers could not decode, for the daemon to count.
    decode_errors: Vec<DecodeError>,
    /// Rows of the current scan filled since the last [`ScanStage::take_rows`].
    rows: Vec<ScanRows>,
    /// When the last pattern of each scan frame handed out by the workers was received, in the
    /// order of those frames (for the latency last pattern → result).
    last_pattern_at: std::collections::VecDeque<std::time::Instant>,
}

impl ScanStage {
    pub fn new(cfg: &FourDConfig, cli_shape: Option<ScanShape>, dose: &DoseConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            cli_shape,
            dose: dose.clone(),
            open: None,
            refused: None,
            pool: None,
            decoder: None,
            decode_errors: Vec::new(),
            rows: Vec::new(),
            last_pattern_at: Default::default(),
        }
    }

    /// The live daemon's stage: with `[fourd]` on, patterns are decoded and reduced by a pool of
    /// worker threads ([`super::scan_pool`]); the receive loop only routes them.
    pub fn pooled(cfg: &crate::config::Config, budget: Arc<Budget>, stats: Arc<Stats>) -> Self {
        let mut stage = Self::from_config(cfg);
        if cfg.fourd.enabled {
            stage.pool = Some(Pool::start(threads_for(&cfg.fourd), budget, stats));
        }
        stage
    }

    /// Fires when the workers have something for [`Self::drain`].
    pub fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.pool.as_ref().map(|p| p.wake.clone())
    }

    /// [`Self::process`] in the live daemon: `decoder` is the receive loop's, as it stands after
    /// decoding `msg` (a series start tells it the channels the workers must decode).
    pub fn process_live(&mut self, msg: Message, decoder: &Decoder, stats: &Stats) -> Vec<Message> {
        let new_series = match &msg {
            Message::SeriesStart(_) => true,
            Message::Frame(f) => self.open.as_ref().is_none_or(|o| o.series != f.series),
            _ => false,
        };
        if self.pool.is_some() && new_series {
            self.decoder = Some(decoder.clone());
        }
        self.process(msg, stats)
    }

    /// A pattern message of `series` at image `index` (read by [`Decoder::peek_image`]) to the
    /// workers, undecoded; `Err` gives the parts back when the stage cannot route it (no workers,
    /// another series, none open): decode it and hand it to [`Self::process_live`].
    pub fn route_raw(&mut self, series: &str, index: u64, parts: Vec<Bytes>, stats: &Stats) -> Result<(), Vec<Bytes>> {
        if self.refused.as_deref() == Some(series) {
            inc(&stats.patterns_received);
            inc(&stats.patterns_refused);
            return Ok(());
        }
        match (self.pool.as_mut(), self.open.as_mut()) {
            (Some(pool), Some(o)) if o.series == series => {
                if let Assembly::Pooled(b) = &mut o.assembly {
                    inc(&stats.patterns_received);
                    b.route_raw(pool, index, parts);
                    return Ok(());
                }
                Err(parts)
            }
            _ => Err(parts),
        }
    }

    /// What the workers have finished, in order: the STEM frames of completed scans.
    pub fn drain(&mut self, stats: &Stats) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let Some(pool) = self.pool.as_mut() else { return out };
            let Some(o) = pool.try_out() else { return out };
            let ready = match self.open.as_mut() {
                Some(OpenScan { assembly: Assembly::Pooled(b), .. }) => b.take(pool, o),
                _ => match o {
                    super::scan_pool::Out::DecodeError(e) => vec![Ready::DecodeError(e)],
                    _ => Vec::new(),
                },
            };
            out.extend(self.ready(ready, stats));
        }
    }

    /// When the last pattern of `msg` was received, for a scan frame the workers made (in the
    /// order they were handed out); `None` for anything else.
    pub fn received_at(&mut self, msg: &Message) -> Option<std::time::Instant> {
        match msg {
            Message::Frame(f) if f.scan.is_some() && self.pool.is_some() => self.last_pattern_at.pop_front(),
            _ => None,
        }
    }

    /// Patterns the workers could not decode since the last call.
    pub fn take_decode_errors(&mut self) -> Vec<DecodeError> {
        std::mem::take(&mut self.decode_errors)
    }

    /// Rows of scans filled since the last call.
    pub fn take_rows(&mut self) -> Vec<ScanRows> {
        std::mem::take(&mut self.rows)
    }

    /// Worker results → frames (and rows, decode errors kept for the daemon).
    fn ready(&mut self, ready: Vec<Ready>, stats: &Stats) -> Vec<Message> {
        let mut out = Vec::new();
        for r in ready {
            match r {
                Ready::DecodeError(e) => self.decode_errors.push(e),
                Ready::Rows { scan, rows, values } => {
                    if let Some(o) = &self.open {
                        let (series, cols, detector) = (o.series.clone(), o.shape.cols, o.analyse.clone());
                        self.rows.push(ScanRows { series, scan, rows, cols, detector, values });
                    }
                }
                Ready::Scan(result, at) => {
                    let dose = self.dose.clone();
                    let Some(o) = self.open.as_mut() else { continue };
                    if let Assembly::Pooled(b) = &o.assembly {
                        if let Some(g) = &b.geometry {
                            o.spots = g.spots.clone();
                            o.centre_px = Some(g.detectors.centre_px);
                            o.bf_radius_px = Some(g.detectors.bf_radius_px);
                        }
                        o.dtype = o.dtype.or(b.info.dtype);
                        o.last_timestamp_ns = b.info.last_timestamp_ns.or(o.last_timestamp_ns);
                    }
                    if let Some(m) = scan_frame(o, ScanEvent::Complete(result), &dose, stats) {
                        out.push(m);
                        self.last_pattern_at.push_back(at.unwrap_or_else(std::time::Instant::now));
                    }
                }
            }
        }
        out
    }

    /// The stage's configuration as a [`crate::config::Config`] gives it.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(&cfg.fourd, cfg.scan_shape_cli, &cfg.dose)
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// One decoded message in; what the pipeline should see, in order.
    pub fn process(&mut self, msg: Message, stats: &Stats) -> Vec<Message> {
        if !self.cfg.enabled {
            return vec![msg];
        }
        match msg {
            Message::SeriesStart(info) => {
                let mut out = self.close(stats);
                out.extend(self.start(info, stats));
                out
            }
            Message::Frame(f) => self.pattern(&f, stats),
            Message::SeriesEnd { series } => {
                if self.refused.as_deref() == Some(series.as_str()) {
                    self.refused = None;
                    return Vec::new();
                }
                if self.open.as_ref().is_some_and(|o| o.series == series) {
                    let mut out = self.close(stats);
                    out.push(Message::SeriesEnd { series });
                    return out;
                }
                vec![Message::SeriesEnd { series }]
            }
            other => vec![other],
        }
    }

    /// The source ends: the scan being filled comes out (incomplete).
    pub fn finish(&mut self, stats: &Stats) -> Vec<Message> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        self.close(stats)
    }

    fn start(&mut self, info: SeriesInfo, stats: &Stats) -> Vec<Message> {
        self.refused = None;
        let hints = ShapeHints {
            command_line: self.cli_shape,
            config: match (self.cfg.scan_rows, self.cfg.scan_cols) {
                (Some(rows), Some(cols)) => Some(ScanShape { rows, cols }),
                _ => None,
            },
            stream: info.scan_hint,
            images: info.frames_expected,
        };
        let resolved = resolve_shape(&hints).and_then(|(shape, source, scans)| {
            let assembly = match (self.pool.as_mut(), self.decoder.as_ref()) {
                (Some(pool), Some(decoder)) => {
                    Assembly::Pooled(BandSeries::start(pool, decoder, &self.cfg, shape)?)
                }
                _ => Assembly::Inline(ScanAssembler::new(&self.cfg, shape)?),
            };
            Ok((assembly, shape, source, scans))
        });
        let (assembly, shape, source, scans) = match resolved {
            Ok(r) => r,
            Err(e) => {
                inc(&stats.series_refused);
                tracing::error!(
                    "series {} refused as 4D-STEM ({} patterns announced): {e}; its patterns are counted and dropped",
                    info.series,
                    info.frames_expected.map_or("no count of".to_string(), |n| n.to_string())
                );
                self.refused = Some(info.series);
                return Vec::new();
            }
        };
        let how = format!(
            "series {}: scan {}×{} ({}){}",
            info.series,
            shape.rows,
            shape.cols,
            source_text(source),
            scans.map(|k| format!(", {k} scans")).unwrap_or_default()
        );
        if source == ShapeSource::PerfectSquare {
            tracing::warn!(
                "{how}: the square root of the image count, a guess — set --scan-shape or [fourd] scan_rows/cols"
            );
        } else {
            tracing::info!("{how}");
        }
        let current_known = info.dose.beam_current_pa.is_some()
            || self.dose.beam_current_pa.is_some()
            || self.dose.per_frame_e_per_a2.is_some();
        self.open = Some(OpenScan {
            series: info.series.clone(),
            format: info.format,
            assembly,
            spots: Vec::new(),
            centre_px: None,
            bf_radius_px: None,
            shape,
            analyse: self.cfg.analyse.clone(),
            source,
            regions: (self.cfg.regions_rows, self.cfg.regions_cols),
            dtype: info.dtype,
            frame_time_s: info.frame_time_s.filter(|t| t.is_finite() && *t > 0.0),
            current_known,
            late_seen: 0,
            scans_out: 0,
            last_timestamp_ns: None,
        });
        let positions = shape.positions() as f64;
        vec![Message::SeriesStart(SeriesInfo {
            series: info.series,
            format: info.format,
            frames_expected: scans,
            shape: Some((shape.rows, shape.cols)),
            dtype: Some(PixelType::F32),
            // One STEM frame per scan.
            frame_time_s: info.frame_time_s.map(|t| t * positions),
            dose: info.dose,
            scan_hint: Some((shape, source)),
        })]
    }

    fn pattern(&mut self, f: &FrameMsg, stats: &Stats) -> Vec<Message> {
        inc(&stats.patterns_received);
        if self.refused.as_deref() == Some(f.series.as_str()) {
            inc(&stats.patterns_refused);
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.open.as_ref().is_none_or(|o| o.series != f.series) {
            // Patterns without a start message: the series starts here, its shape from the
            // command line or the configuration (no image count to check it against).
            out.extend(self.close(stats));
            let info = SeriesInfo {
                series: f.series.clone(),
                format: f.format,
                frames_expected: None,
                shape: Some((f.frame.height(), f.frame.width())),
                dtype: Some(f.frame.dtype()),
                frame_time_s: None,
                dose: f.dose,
                scan_hint: None,
            };
            out.extend(self.start(info, stats));
            if self.refused.is_some() {
                inc(&stats.patterns_refused);
                return out;
            }
        }
        let Some(o) = self.open.as_mut() else { return out };
        let assembler = match &mut o.assembly {
            Assembly::Inline(a) => a,
            Assembly::Pooled(b) => {
                if let Some(pool) = self.pool.as_mut() {
                    b.route_decoded(pool, Box::new(f.clone()));
                }
                return out;
            }
        };
        o.dtype.get_or_insert(f.frame.dtype());
        if f.timestamp_ns.is_some() {
            o.last_timestamp_ns = f.timestamp_ns;
        }
        let (w, h) = (f.frame.width(), f.frame.height());
        match assembler.push(f.index, w, h, f.frame.pixels(), f.frame.invalid_mask()) {
            Ok(events) => {
                let late = assembler.late();
                if late > o.late_seen {
                    add(&stats.patterns_late, late - o.late_seen);
                    tracing::warn!(
                        "series {} pattern {}: its scan is already complete (late, counted and dropped)",
                        o.series,
                        f.index
                    );
                    o.late_seen = late;
                }
                let dose = self.dose.clone();
                if events.iter().any(|e| matches!(e, ScanEvent::Complete(_))) {
                    o.spots = assembler.spots.clone();
                    o.centre_px = assembler.detectors.as_ref().map(|d| d.centre_px);
                    o.bf_radius_px = assembler.detectors.as_ref().map(|d| d.bf_radius_px);
                }
                // The rows' values are read now, while the scan is still being filled.
                let k = assembler.detectors.as_ref().and_then(|d| d.index_of(&o.analyse)).unwrap_or(0);
                let events: Vec<(ScanEvent, Vec<f32>)> = events
                    .into_iter()
                    .map(|e| {
                        let v = match &e {
                            ScanEvent::Rows { scan, rows } => assembler.current_rows(*scan, k, rows.clone()).map(<[f32]>::to_vec),
                            _ => None,
                        };
                        (e, v.unwrap_or_default())
                    })
                    .collect();
                for (e, values) in events {
                    match e {
                        ScanEvent::Rows { scan, rows } => {
                            let (series, cols, detector) = (o.series.clone(), o.shape.cols, o.analyse.clone());
                            self.rows.push(ScanRows { series, scan, rows, cols, detector, values });
                        }
                        e => out.extend(scan_frame(o, e, &dose, stats)),
                    }
                }
            }
            Err(e @ FourDError::PatternSize { .. }) => {
                inc(&stats.patterns_wrong_size);
                let n = crate::pipeline::stats::get(&stats.patterns_wrong_size);
                if n <= 10 || n.is_power_of_two() {
                    tracing::warn!(
                        "series {} pattern {} dropped ({} so far), its position masked: {e}",
                        o.series,
                        f.index,
                        n
                    );
                }
            }
            Err(e) => {
                inc(&stats.patterns_wrong_size);
                tracing::warn!("series {} pattern {} dropped: {e}", o.series, f.index);
            }
        }
        out
    }

    /// Ends the open series' assembly: the scan being filled comes out incomplete.
    fn close(&mut self, stats: &Stats) -> Vec<Message> {
        let Some(mut o) = self.open.take() else { return Vec::new() };
        let dose = self.dose.clone();
        let events = match &mut o.assembly {
            Assembly::Inline(a) => {
                let events = a.finish();
                let late = a.late();
                if late > o.late_seen {
                    add(&stats.patterns_late, late - o.late_seen);
                }
                o.spots = a.spots.clone();
                o.centre_px = a.detectors.as_ref().map(|d| d.centre_px);
                o.bf_radius_px = a.detectors.as_ref().map(|d| d.bf_radius_px);
                events
            }
            Assembly::Pooled(b) => {
                let Some(pool) = self.pool.as_mut() else { return Vec::new() };
                let ready = b.finish(pool);
                // The series' last scans come out through the open series' geometry.
                self.open = Some(o);
                let out = self.ready(ready, stats);
                self.open = None;
                return out;
            }
        };
        events.into_iter().filter_map(|e| scan_frame(&mut o, e, &dose, stats)).collect()
    }
}

fn source_text(s: ShapeSource) -> &'static str {
    match s {
        ShapeSource::Config => "from [fourd] scan_rows/cols",
        ShapeSource::CommandLine => "from --scan-shape",
        ShapeSource::StreamUserData => "from the stream's user_data",
        ShapeSource::HeaderAppendix => "from the header appendix",
        ShapeSource::FileMetadata => "from the file's metadata",
        ShapeSource::PerfectSquare => "the square root of the image count",
    }
}

/// A completed (or incomplete) scan → the STEM frame the pipeline analyses; `None` for other events.
fn scan_frame(o: &mut OpenScan, e: ScanEvent, dose: &DoseConfig, stats: &Stats) -> Option<Message> {
    let ScanEvent::Complete(result) = e else { return None };
    let mut result: ScanResult = *result;
    // The summed patterns were for merging bands; the frame carries the integrated intensities.
    result.region_sums = Vec::new();
    add(&stats.patterns_masked_missing, result.missing);
    add(&stats.patterns_duplicate, result.duplicates);
    if result.complete {
        inc(&stats.scans_completed);
    } else {
        inc(&stats.scans_incomplete);
        tracing::warn!(
            "series {} scan {} is incomplete: the series ended with {} of {} positions missing (masked)",
            o.series,
            result.scan,
            result.missing,
            result.shape.positions()
        );
    }
    if result.missing > 0 || result.duplicates > 0 {
        tracing::warn!(
            "series {} scan {}: {} positions missing and {} duplicated: masked, the rest of the image unchanged",
            o.series,
            result.scan,
            result.missing,
            result.duplicates
        );
    }
    let Some(analyse) = result.detector_names.iter().position(|n| *n == o.analyse) else {
        inc(&stats.scans_not_analysable);
        tracing::warn!("series {} scan {}: no `{}` image to analyse", o.series, result.scan, o.analyse);
        return None;
    };
    let frame = scan_image(&result.images[analyse], &result.masked, o.shape);
    let frame = match frame {
        Ok(f) => f,
        Err(why) => {
            inc(&stats.scans_not_analysable);
            tracing::warn!(
                "series {} scan {}: its {} image cannot be analysed: {why}",
                o.series,
                result.scan,
                o.analyse
            );
            return None;
        }
    };
    let mut header = DoseHeader { dwell_time_us: o.frame_time_s.map(|t| t * 1e6), ..DoseHeader::default() };
    if !o.current_known {
        header.beam_current_pa = estimated_current_pa(o, &result, dose);
    }
    o.scans_out += 1;
    Some(Message::Frame(Box::new(FrameMsg {
        series: o.series.clone(),
        index: result.scan,
        frame,
        timestamp_ns: o.last_timestamp_ns,
        dose: header,
        format: o.format,
        scan: Some(Arc::new(ScanFrame {
            spots: o.spots.clone(),
            centre_px: o.centre_px,
            bf_radius_px: o.bf_radius_px,
            shape_source: o.source,
            regions: o.regions,
            analysed: o.analyse.clone(),
            result,
        })),
    })))
}

/// The analysed virtual image as a frame: masked positions marked invalid and filled with the
/// image's valid mean (nothing non-finite reaches the analysis).
fn scan_image(image: &[f32], masked: &[bool], shape: ScanShape) -> Result<Frame, String> {
    let ok = |i: usize, v: f32| !masked.get(i).copied().unwrap_or(false) && v.is_finite();
    let (sum, n) = image
        .iter()
        .enumerate()
        .filter(|&(i, &v)| ok(i, v))
        .fold((0f64, 0usize), |(s, n), (_, &v)| (s + v as f64, n + 1));
    if n == 0 {
        return Err("every position is masked".into());
    }
    let mean = (sum / n as f64) as f32;
    let pixels: Vec<f32> = image.iter().enumerate().map(|(i, &v)| if ok(i, v) { v } else { mean }).collect();
    let invalid: Vec<bool> = (0..pixels.len()).map(|i| !ok(i, image[i])).collect();
    let frame = Frame::from_f32(shape.cols, shape.rows, pixels).map_err(|e| e.to_string())?;
    Ok(if invalid.iter().any(|&b| b) { frame.with_invalid(invalid) } else { frame })
}

/// A counting detector (integer patterns, 1 count = 1 electron): the mean counts per pattern over
/// the pattern frame time, × e, estimate the beam current (pA). Only when no current is known and
/// the frame time is (the stream's, else `[dose] dwell_time_us`).
fn estimated_current_pa(o: &OpenScan, r: &ScanResult, dose: &DoseConfig) -> Option<f64> {
    if matches!(o.dtype, Some(PixelType::F32) | None) {
        return None;
    }
    let t_s = o.frame_time_s.or(dose.dwell_time_us.map(|us| us * 1e-6))?;
    let valid = r.masked.iter().filter(|m| !**m).count();
    if valid == 0 || !(r.total_counts.is_finite() && r.total_counts > 0.0) {
        return None;
    }
    let per_pattern = r.total_counts / valid as f64;
    Some(per_pattern / t_s * ELECTRON_C * 1e12).filter(|i| i.is_finite() && *i > 0.0)
}
