//! Patterns in arrival order → completed scans.

use super::detectors::VirtualDetectors;
use super::geometry::{ScanPos, ScanShape};
use super::spots::Spot;
use super::{FourDConfig, FourDError};

/// One completed (or, at the end of a series, incomplete) scan.
#[derive(Clone, Debug)]
pub struct ScanResult {
    pub scan: u64,
    pub shape: ScanShape,
    /// One image per detector (same order as `detector_names`), rows × cols, row-major.
    pub detector_names: Vec<String>,
    pub images: Vec<Vec<f32>>,
    /// true where no pattern (missing) or more than one (duplicate) arrived: masked, never shifted.
    pub masked: Vec<bool>,
    pub missing: u64,
    pub duplicates: u64,
    /// false for a scan cut short by the end of the series.
    pub complete: bool,
    /// Spot intensities of the whole scan (one per spot), and per region (regions row-major).
    pub spot_intensity: Vec<f64>,
    pub region_spot_intensity: Vec<Vec<f64>>,
    /// Total counts per position (the `sum` detector, for the beam-current estimate), summed.
    pub total_counts: f64,
    /// The summed pattern of each region and how many patterns it holds: what the spot
    /// intensities were integrated from, so that the parts of a scan reduced in bands
    /// ([`super::bands`]) can be merged into the whole scan's.
    pub region_sums: Vec<Vec<f64>>,
    pub region_patterns: Vec<u64>,
}

/// A pattern's pixels: f32 (any values), or u16 counts (reduced in one integer pass, exact).
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    F32(&'a [f32]),
    U16(&'a [u16]),
}

impl Pixels<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(p) => p.len(),
            Self::U16(p) => p.len(),
        }
    }

    fn to_f32(self) -> Vec<f32> {
        match self {
            Self::F32(p) => p.to_vec(),
            Self::U16(p) => p.iter().map(|&v| f32::from(v)).collect(),
        }
    }
}

/// Patterns a region's u32 summed pattern takes before it is folded into the f64 one:
/// 65537 · 65535 < 2³².
const U32_SUM_PATTERNS: u32 = 65537;

/// Events while patterns arrive.
#[derive(Clone, Debug)]
pub enum ScanEvent {
    /// Rows newly filled in the current scan (for the live view).
    Rows {
        scan: u64,
        rows: std::ops::Range<usize>,
    },
    Complete(Box<ScanResult>),
}

/// Assembles scans from patterns. Holds at most `centre_patterns` patterns (until the centre is
/// known), one summed pattern per region and the images of the scan being filled.
///
/// Ordering: only the current scan is held. A pattern for a later scan completes the current one
/// (positions not filled yet are masked as missing); a pattern for a scan already completed is
/// counted late and dropped. Scans for which no pattern arrived at all are not emitted (a warning
/// is logged). Within a scan the order does not matter.
///
/// Masked positions (missing or duplicate) hold 0 in every virtual image. Only the first pattern
/// at a position enters the region sums; spot intensities are scaled to a full scan (× positions /
/// patterns summed; a region's to that region's positions), so a missing pattern does not look
/// like fading.
pub struct ScanAssembler {
    pub shape: ScanShape,
    pub detectors: Option<VirtualDetectors>,
    pub spots: Vec<Spot>,
    cfg: FourDConfig,
    /// (width, height) fixed by the first pattern.
    size: Option<(usize, usize)>,
    /// Patterns held until the centre is known: (index, pixels, invalid).
    held: Vec<(u64, Vec<f32>, Option<Vec<bool>>)>,
    /// Scans below this are completed (or skipped): their patterns are late.
    done_below: u64,
    current: Option<ScanState>,
    spots_found: bool,
    late: u64,
    /// Region of each scan row / column.
    region_of_row: Vec<usize>,
    region_of_col: Vec<usize>,
    region_positions: Vec<u64>,
    /// Per-pattern detector values (reused: no allocation per pattern).
    values: Vec<f64>,
    /// A u16 pattern with its invalid pixels zeroed (reused).
    zeroed: Vec<u16>,
}

struct ScanState {
    scan: u64,
    images: Vec<Vec<f32>>,
    /// Patterns seen per position (saturating).
    hits: Vec<u8>,
    filled: u64,
    duplicates: u64,
    row_filled: Vec<usize>,
    rows_emitted: usize,
    max_row_seen: usize,
    region_sums: Vec<Vec<f64>>,
    /// u16 patterns summed in u32 (exact, and a quarter of the f64 work per pattern); folded
    /// into `region_sums` at the scan's end or after [`U32_SUM_PATTERNS`] patterns.
    region_sums_u32: Vec<Vec<u32>>,
    region_u32_n: Vec<u32>,
    region_n: Vec<u64>,
}

impl ScanState {
    /// Region `r`'s u32 sums folded into its f64 sums (allocated here if needed).
    fn fold_u32(&mut self, r: usize, len: usize) {
        if self.region_u32_n[r] == 0 {
            return;
        }
        let sum = &mut self.region_sums[r];
        if sum.is_empty() {
            *sum = vec![0.0; len];
        }
        for (s, c) in sum.iter_mut().zip(self.region_sums_u32[r].iter_mut()) {
            *s += f64::from(*c);
            *c = 0;
        }
        self.region_u32_n[r] = 0;
    }
}

impl ScanAssembler {
    pub fn new(cfg: &FourDConfig, shape: ScanShape) -> Result<Self, FourDError> {
        if shape.rows == 0 || shape.cols == 0 {
            return Err(FourDError::NoShape { why: format!("the scan shape {}×{} is empty", shape.rows, shape.cols) });
        }
        for (i, d) in cfg.detectors.iter().enumerate() {
            if cfg.detectors[..i].iter().any(|e| e.name == d.name) {
                return Err(FourDError::Detector { name: d.name.clone(), why: "name used twice".into() });
            }
        }
        if !cfg.detectors.iter().any(|d| d.name == cfg.analyse) {
            return Err(FourDError::UnknownAnalyse(cfg.analyse.clone()));
        }
        let bad = |name: &str, why: &str| Err(FourDError::Detector { name: name.into(), why: why.into() });
        if cfg.regions_rows == 0 || cfg.regions_cols == 0 {
            return bad("regions", "regions_rows and regions_cols must be ≥ 1");
        }
        if cfg.centre_patterns == 0 {
            return bad("centre_patterns", "centre_patterns must be ≥ 1");
        }
        if let Some((x, y)) = cfg.centre_px
            && !(x.is_finite() && y.is_finite())
        {
            return bad("centre_px", "the centre must be finite");
        }
        // Radii settings that cannot work at any pattern size fail now, not at the first pattern.
        for d in &cfg.detectors {
            super::detectors::check_spec(d, cfg.pixel_mrad)?;
        }
        // Regions split the scan as evenly as the rows / columns allow (more regions than rows:
        // some regions stay empty and report NaN).
        let region_of_row = (0..shape.rows).map(|r| r * cfg.regions_rows / shape.rows).collect::<Vec<_>>();
        let region_of_col = (0..shape.cols).map(|c| c * cfg.regions_cols / shape.cols).collect::<Vec<_>>();
        let mut region_positions = vec![0u64; cfg.regions_rows * cfg.regions_cols];
        for &rr in &region_of_row {
            for &rc in &region_of_col {
                region_positions[rr * cfg.regions_cols + rc] += 1;
            }
        }
        Ok(Self {
            shape,
            detectors: None,
            spots: Vec::new(),
            cfg: cfg.clone(),
            size: None,
            held: Vec::new(),
            done_below: 0,
            current: None,
            spots_found: false,
            late: 0,
            region_of_row,
            region_of_col,
            region_positions,
            values: vec![0.0; cfg.detectors.len()],
            zeroed: Vec::new(),
        })
    }

    /// One pattern at series image `index`. Its position comes from the index alone; a pattern
    /// for a scan already completed is counted late and dropped.
    pub fn push(
        &mut self,
        index: u64,
        width: usize,
        height: usize,
        pixels: &[f32],
        invalid: Option<&[bool]>,
    ) -> Result<Vec<ScanEvent>, FourDError> {
        self.push_pixels(index, width, height, Pixels::F32(pixels), invalid)
    }

    /// [`Self::push`] for u16 counts: the virtual detectors and the region sum in one integer
    /// pass over the pixels, with the same results as pushing them as f32.
    pub fn push_u16(
        &mut self,
        index: u64,
        width: usize,
        height: usize,
        pixels: &[u16],
        invalid: Option<&[bool]>,
    ) -> Result<Vec<ScanEvent>, FourDError> {
        self.push_pixels(index, width, height, Pixels::U16(pixels), invalid)
    }

    /// [`Self::push`] for either kind of pixels.
    pub fn push_pixels(
        &mut self,
        index: u64,
        width: usize,
        height: usize,
        pixels: Pixels<'_>,
        invalid: Option<&[bool]>,
    ) -> Result<Vec<ScanEvent>, FourDError> {
        let (want_w, want_h) = *self.size.get_or_insert((width, height));
        if (width, height) != (want_w, want_h) {
            return Err(FourDError::PatternSize { got_w: width, got_h: height, want_w, want_h });
        }
        let n = width * height;
        if pixels.len() != n || invalid.is_some_and(|m| m.len() != n) {
            // The pixels do not match the size the pattern claims.
            let got = if pixels.len() != n { pixels.len() } else { invalid.map_or(0, <[bool]>::len) };
            return Err(FourDError::PatternSize { got_w: got, got_h: 1, want_w, want_h });
        }
        let mut events = Vec::new();
        if self.detectors.is_none() {
            let scan = self.shape.position(index).scan;
            let first_scan = self.held.first().map(|h| self.shape.position(h.0).scan);
            // A later scan ends the first one: the centre comes from what was held.
            if first_scan.is_some_and(|f| scan > f) {
                self.resolve_centre(&mut events)?;
            } else if self.cfg.centre_px.is_some() && !self.cfg.detectors.iter().any(super::detectors::needs_bf_radius)
            {
                self.build_detectors(self.cfg.centre_px.unwrap_or_default(), f64::NAN)?;
            } else {
                self.held.push((index, pixels.to_f32(), invalid.map(<[bool]>::to_vec)));
                let enough = (self.cfg.centre_patterns as u64).min(self.shape.positions());
                if self.held.len() as u64 >= enough {
                    self.resolve_centre(&mut events)?;
                }
                return Ok(events);
            }
        }
        self.process(index, pixels, invalid, &mut events);
        Ok(events)
    }

    /// The series ended: the scan being filled (if any pattern arrived for it) comes out
    /// incomplete, masked where nothing arrived.
    pub fn finish(&mut self) -> Vec<ScanEvent> {
        let mut events = Vec::new();
        if !self.held.is_empty()
            && let Err(e) = self.resolve_centre(&mut events)
        {
            tracing::warn!("4D series ended before the virtual detectors could be set up: {e}");
        }
        if let Some(state) = self.current.take() {
            self.done_below = state.scan + 1;
            events.push(self.complete(state, false));
        }
        events
    }

    pub fn position(&self, index: u64) -> ScanPos {
        self.shape.position(index)
    }

    /// Patterns dropped because they came after their scan was completed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Takes the pattern geometry another assembler of the same series found (centre, radii and
    /// the reference scan's spots): this one then holds no patterns and finds no spots.
    pub fn adopt(&mut self, detectors: VirtualDetectors, spots: Vec<Spot>) {
        self.size = Some((detectors.width, detectors.height));
        self.detectors = Some(detectors);
        self.spots = spots;
        self.spots_found = true;
    }

    /// A pattern of scan `scan` arrived elsewhere: the scan being filled, if earlier, completes
    /// (masked where nothing arrived) and patterns of scans before `scan` are late from now on —
    /// what a pattern of `scan` arriving here would do.
    pub fn complete_before(&mut self, scan: u64) -> Vec<ScanEvent> {
        let mut events = Vec::new();
        if self.current.as_ref().is_some_and(|c| c.scan < scan)
            && let Some(state) = self.current.take()
        {
            events.push(self.complete(state, true));
        }
        if self.current.is_none() {
            self.done_below = self.done_below.max(scan);
        }
        events
    }

    /// The values of detector `k` over `rows` of scan `scan` while that scan is being filled (for
    /// the live view's rows); `None` once it is complete (its result has them).
    pub fn current_rows(&self, scan: u64, k: usize, rows: std::ops::Range<usize>) -> Option<&[f32]> {
        let c = self.current.as_ref().filter(|c| c.scan == scan)?;
        c.images.get(k)?.get(rows.start * self.shape.cols..rows.end * self.shape.cols)
    }

    /// Patterns held now while the centre is not known (never more than `centre_patterns`).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn build_detectors(&mut self, centre: (f64, f64), bf_radius_px: f64) -> Result<(), FourDError> {
        let (w, h) = self.size.unwrap_or((0, 0));
        self.detectors =
            Some(VirtualDetectors::new(&self.cfg.detectors, w, h, centre, bf_radius_px, self.cfg.pixel_mrad)?);
        Ok(())
    }

    /// Centre and bright-field radius from the mean of the held patterns, then the held patterns
    /// go through as if they had just arrived.
    fn resolve_centre(&mut self, events: &mut Vec<ScanEvent>) -> Result<(), FourDError> {
        let held = std::mem::take(&mut self.held);
        let (w, h) = self.size.unwrap_or((0, 0));
        let mut mean = vec![0.0f64; w * h];
        for (_, p, inv) in &held {
            for (i, (m, &v)) in mean.iter_mut().zip(p).enumerate() {
                if !inv.as_ref().is_some_and(|inv| inv[i]) {
                    *m += v as f64;
                }
            }
        }
        let k = held.len().max(1) as f64;
        mean.iter_mut().for_each(|m| *m /= k);
        let (found, bf) = super::detectors::find_centre(&mean, w, h);
        let centre = self.cfg.centre_px.unwrap_or(found);
        tracing::info!(
            centre_x_px = centre.0,
            centre_y_px = centre.1,
            bf_radius_px = bf,
            patterns = held.len(),
            "4D pattern centre"
        );
        self.build_detectors(centre, bf)?;
        for (index, p, inv) in &held {
            self.process(*index, Pixels::F32(p), inv.as_deref(), events);
        }
        Ok(())
    }

    fn process(&mut self, index: u64, pixels: Pixels<'_>, invalid: Option<&[bool]>, events: &mut Vec<ScanEvent>) {
        if self.detectors.is_none() {
            return;
        }
        let pos = self.shape.position(index);
        if pos.scan < self.done_below {
            self.late += 1;
            return;
        }
        if self.current.as_ref().is_some_and(|c| pos.scan > c.scan)
            && let Some(state) = self.current.take()
        {
            self.done_below = state.scan + 1;
            events.push(self.complete(state, true));
        }
        if self.current.is_none() {
            if pos.scan > self.done_below && self.spots_found {
                tracing::warn!(from = self.done_below, to = pos.scan, "4D scans with no pattern at all skipped");
            }
            self.done_below = pos.scan;
            self.current = Some(self.new_scan(pos.scan));
        }
        let (Some((w, h)), Some(det)) = (self.size, self.detectors.as_ref()) else { return };
        let cols = self.shape.cols;
        let p = pos.row * cols + pos.col;
        let region = self.region_of_row[pos.row] * self.cfg.regions_cols + self.region_of_col[pos.col];
        let Some(state) = self.current.as_mut() else { return };
        // Only a position's first pattern enters the region sums.
        let first = state.hits[p] == 0;
        match pixels {
            Pixels::F32(pixels) => {
                det.apply(pixels, invalid, &mut self.values);
                if first {
                    let sum = &mut state.region_sums[region];
                    if sum.is_empty() {
                        *sum = vec![0.0; w * h];
                    }
                    match invalid {
                        None => sum.iter_mut().zip(pixels).for_each(|(s, &v)| *s += v as f64),
                        Some(m) => sum.iter_mut().zip(pixels).zip(m).for_each(|((s, &v), &bad)| {
                            if !bad {
                                *s += v as f64
                            }
                        }),
                    }
                }
            }
            Pixels::U16(mut pixels) => {
                if let Some(m) = invalid {
                    // Leaving a pixel out of every sum is counting it as 0.
                    self.zeroed.clear();
                    self.zeroed.extend(pixels.iter().zip(m).map(|(&v, &bad)| if bad { 0 } else { v }));
                    pixels = &self.zeroed;
                }
                let sum_into = if first {
                    if state.region_u32_n[region] == U32_SUM_PATTERNS {
                        state.fold_u32(region, w * h);
                    }
                    let sum = &mut state.region_sums_u32[region];
                    if sum.is_empty() {
                        *sum = vec![0; w * h];
                    }
                    state.region_u32_n[region] += 1;
                    Some(&mut sum[..])
                } else {
                    None
                };
                det.reduce_u16(pixels, &mut self.values, sum_into);
            }
        }
        state.hits[p] = state.hits[p].saturating_add(1);
        state.max_row_seen = state.max_row_seen.max(pos.row);
        if first {
            for (img, &v) in state.images.iter_mut().zip(&self.values) {
                img[p] = v as f32;
            }
            state.filled += 1;
            state.row_filled[pos.row] += 1;
            state.region_n[region] += 1;
        } else {
            state.duplicates += 1;
        }
        // Rows are done when full, or when the probe is two rows further on (a row's missing
        // pattern is then late, not coming).
        let start = state.rows_emitted;
        while state.rows_emitted < self.shape.rows
            && (state.row_filled[state.rows_emitted] == cols || state.max_row_seen > state.rows_emitted + 1)
        {
            state.rows_emitted += 1;
        }
        if state.rows_emitted > start {
            events.push(ScanEvent::Rows { scan: state.scan, rows: start..state.rows_emitted });
        }
        if state.filled == self.shape.positions()
            && let Some(state) = self.current.take()
        {
            self.done_below = state.scan + 1;
            events.push(self.complete(state, true));
        }
    }

    fn new_scan(&self, scan: u64) -> ScanState {
        let positions = self.shape.rows * self.shape.cols;
        let regions = self.cfg.regions_rows * self.cfg.regions_cols;
        ScanState {
            scan,
            images: vec![vec![0.0; positions]; self.cfg.detectors.len()],
            hits: vec![0; positions],
            filled: 0,
            duplicates: 0,
            row_filled: vec![0; self.shape.rows],
            rows_emitted: 0,
            max_row_seen: 0,
            // Allocated at a region's first pattern.
            region_sums: vec![Vec::new(); regions],
            region_sums_u32: vec![Vec::new(); regions],
            region_u32_n: vec![0; regions],
            region_n: vec![0; regions],
        }
    }

    fn complete(&mut self, mut state: ScanState, complete: bool) -> ScanEvent {
        let (w, h) = self.size.unwrap_or((0, 0));
        for r in 0..state.region_sums.len() {
            state.fold_u32(r, w * h);
        }
        let masked: Vec<bool> = state.hits.iter().map(|&n| n != 1).collect();
        let missing = state.hits.iter().filter(|&&n| n == 0).count() as u64;
        for img in &mut state.images {
            for (v, &m) in img.iter_mut().zip(&masked) {
                if m {
                    *v = 0.0;
                }
            }
        }
        let mut total = vec![0.0f64; w * h];
        for sum in state.region_sums.iter().filter(|s| !s.is_empty()) {
            total.iter_mut().zip(sum).for_each(|(t, s)| *t += s);
        }
        let n_total: u64 = state.region_n.iter().sum();
        if !self.spots_found && n_total > 0 {
            self.spots_found = true;
            let mean: Vec<f64> = total.iter().map(|t| t / n_total as f64).collect();
            let (found_centre, found_bf) = super::detectors::find_centre(&mean, w, h);
            let (centre, bf) = match &self.detectors {
                Some(d) if d.bf_radius_px.is_finite() => (d.centre_px, d.bf_radius_px),
                Some(d) => (d.centre_px, found_bf),
                None => (found_centre, found_bf),
            };
            self.spots = super::spots::find_spots(&mean, w, h, centre, bf, &self.cfg.spots);
            tracing::info!(spots = self.spots.len(), scan = state.scan, "Bragg spots found in the reference scan");
        }
        let scale = |positions: u64, n: u64| if n > 0 { positions as f64 / n as f64 } else { f64::NAN };
        let spot_intensity: Vec<f64> = super::spots::integrate_spots(&total, w.max(1), &self.spots)
            .into_iter()
            .map(|v| v * scale(self.shape.positions(), n_total))
            .collect();
        let region_spot_intensity = state
            .region_sums
            .iter()
            .zip(&state.region_n)
            .zip(&self.region_positions)
            .map(|((sum, &n), &positions)| {
                if n == 0 {
                    vec![f64::NAN; self.spots.len()]
                } else {
                    super::spots::integrate_spots(sum, w.max(1), &self.spots)
                        .into_iter()
                        .map(|v| v * scale(positions, n))
                        .collect()
                }
            })
            .collect();
        let result = ScanResult {
            scan: state.scan,
            shape: self.shape,
            detector_names: self.cfg.detectors.iter().map(|d| d.name.clone()).collect(),
            images: state.images,
            masked,
            missing,
            duplicates: state.duplicates,
            complete,
            spot_intensity,
            region_spot_intensity,
            total_counts: total.iter().sum(),
            region_sums: state.region_sums,
            region_patterns: state.region_n,
        };
        ScanEvent::Complete(Box::new(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourd::detectors::{DetectorKind, DetectorSpec};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const W: usize = 52;
    const SHAPE: ScanShape = ScanShape { rows: 6, cols: 5 };
    const BEAM: (f64, f64) = (25.3, 25.6);
    /// 16 px from the beam: the spots' background annuli stay clear of the bright-field disk.
    const SPOTS: [(f64, f64); 4] = [(41.3, 25.6), (9.3, 25.6), (25.3, 41.6), (25.3, 9.6)];

    /// An integer pattern for series image `index`: Poisson-like background, a bright-field disk
    /// whose brightness follows the position, Bragg spots of total `spot_total` each.
    fn pattern(index: u64, spot_total: f64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(index);
        let bf = 150.0 + (index % 7) as f64 * 3.0;
        (0..W * W)
            .map(|i| {
                let (x, y) = ((i % W) as f64, (i / W) as f64);
                let r = ((x - BEAM.0).powi(2) + (y - BEAM.1).powi(2)).sqrt();
                let mut v = rng.random_range(0..5u32) as f64 + if r < 5.5 { bf } else { 0.0 };
                // Position-dependent dark-field signal, flat under the spots (so their local
                // background takes it out exactly).
                if r >= 5.5 {
                    v += (index % 3) as f64;
                }
                for (sx, sy) in SPOTS {
                    let d2 = (x - sx).powi(2) + (y - sy).powi(2);
                    v += spot_total / (2.0 * std::f64::consts::PI * 1.44) * (-d2 / (2.0 * 1.44)).exp();
                }
                v.round() as f32
            })
            .collect()
    }

    fn explicit_cfg() -> FourDConfig {
        let d = |name: &str, kind| DetectorSpec { name: name.into(), kind };
        FourDConfig {
            enabled: true,
            detectors: vec![
                d("bf", DetectorKind::Disk { radius_px: Some(5.0), radius_mrad: None }),
                d(
                    "adf",
                    DetectorKind::Annulus {
                        inner_px: Some(7.0),
                        outer_px: Some(15.0),
                        inner_mrad: None,
                        outer_mrad: None,
                    },
                ),
                d("sum", DetectorKind::Sum),
            ],
            analyse: "adf".into(),
            centre_px: Some(BEAM),
            centre_patterns: 8,
            ..FourDConfig::default()
        }
    }

    /// The virtual detector straight from its definition: pixels at inner ≤ r < outer.
    fn brute(p: &[f32], c: (f64, f64), inner: f64, outer: f64) -> f32 {
        let mut s = 0.0f64;
        for (i, &v) in p.iter().enumerate() {
            let r = (((i % W) as f64 - c.0).powi(2) + ((i / W) as f64 - c.1).powi(2)).sqrt();
            if r >= inner && r < outer {
                s += v as f64;
            }
        }
        s as f32
    }

    fn completes(events: &[ScanEvent]) -> Vec<ScanResult> {
        events.iter().filter_map(|e| if let ScanEvent::Complete(r) = e { Some((**r).clone()) } else { None }).collect()
    }

    /// Pushes the images `indices` (pattern of each from `pattern(index, spot_total(scan))`),
    /// then finishes; all Complete results in order.
    fn run(
        cfg: &FourDConfig,
        indices: impl IntoIterator<Item = u64>,
        spot_total: impl Fn(u64) -> f64,
    ) -> (ScanAssembler, Vec<ScanResult>) {
        let mut a = ScanAssembler::new(cfg, SHAPE).expect("valid config");
        let mut events = Vec::new();
        for i in indices {
            let p = pattern(i, spot_total(SHAPE.position(i).scan));
            events.extend(a.push(i, W, W, &p, None).expect("pattern accepted"));
        }
        events.extend(a.finish());
        (a, completes(&events))
    }

    #[test]
    fn virtual_images_equal_brute_force_exactly_on_integer_data() {
        let n = SHAPE.positions();
        let (_, scans) = run(&explicit_cfg(), 0..2 * n, |_| 2000.0);
        assert_eq!(scans.len(), 2);
        for s in &scans {
            assert!(s.complete && s.missing == 0 && s.duplicates == 0 && s.masked.iter().all(|m| !m));
            assert_eq!(s.detector_names, ["bf", "adf", "sum"]);
            for p in 0..n {
                let pat = pattern(s.scan * n + p, 2000.0);
                assert_eq!(s.images[0][p as usize], brute(&pat, BEAM, -1.0, 5.0), "bf at {p}");
                assert_eq!(s.images[1][p as usize], brute(&pat, BEAM, 7.0, 15.0), "adf at {p}");
                assert_eq!(s.images[2][p as usize], brute(&pat, BEAM, -1.0, f64::INFINITY), "sum at {p}");
            }
            let total: f64 =
                (0..n).map(|p| brute(&pattern(s.scan * n + p, 2000.0), BEAM, -1.0, f64::INFINITY) as f64).sum();
            assert_eq!(s.total_counts, total);
        }
    }

    #[test]
    fn found_centre_and_default_detectors_match_brute_force_with_the_found_geometry() {
        let cfg = FourDConfig { enabled: true, centre_patterns: 10, ..FourDConfig::default() };
        let n = SHAPE.positions();
        let (a, scans) = run(&cfg, 0..n, |_| 2000.0);
        let d = a.detectors.as_ref().expect("detectors built");
        assert!((d.centre_px.0 - BEAM.0).abs() < 0.5 && (d.centre_px.1 - BEAM.1).abs() < 0.5, "{:?}", d.centre_px);
        assert!((d.bf_radius_px - 5.5).abs() < 1.0, "{}", d.bf_radius_px);
        let (bf, adf) = (d.radii_px(0).expect("disk"), d.radii_px(1).expect("annulus"));
        let s = &scans[0];
        for p in 0..n as usize {
            let pat = pattern(p as u64, 2000.0);
            assert_eq!(s.images[0][p], brute(&pat, d.centre_px, -1.0, bf.1));
            assert_eq!(s.images[1][p], brute(&pat, d.centre_px, adf.0, adf.1));
        }
    }

    #[test]
    fn u16_pushes_give_the_same_scans_as_f32_pushes() {
        let n = SHAPE.positions();
        let invalid: Vec<bool> = (0..W * W).map(|i| i % 31 == 5).collect();
        let cfg = FourDConfig { regions_rows: 2, regions_cols: 2, centre_patterns: 10, ..FourDConfig::default() };
        let cfg = FourDConfig { enabled: true, ..cfg };
        for inv in [None, Some(&invalid[..])] {
            let (mut a, mut b) =
                (ScanAssembler::new(&cfg, SHAPE).expect("valid"), ScanAssembler::new(&cfg, SHAPE).expect("valid"));
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            // Two scans, a duplicate and a missing position in the second.
            for i in (0..2 * n).filter(|&i| i != n + 4).chain([n + 9]) {
                let f = pattern(i, 2000.0);
                let u: Vec<u16> = f.iter().map(|&v| v as u16).collect();
                assert!(u.iter().zip(&f).all(|(&u, &f)| f32::from(u) == f), "integer test data");
                ea.extend(a.push(i, W, W, &f, inv).expect("ok"));
                eb.extend(b.push_u16(i, W, W, &u, inv).expect("ok"));
            }
            ea.extend(a.finish());
            eb.extend(b.finish());
            let (sa, sb) = (completes(&ea), completes(&eb));
            assert_eq!(sa.len(), 2);
            assert_eq!(sb.len(), 2);
            assert!(!a.spots.is_empty() && a.spots.len() == b.spots.len());
            for (x, y) in sa.iter().zip(&sb) {
                assert_eq!((x.missing, x.duplicates, &x.masked), (y.missing, y.duplicates, &y.masked));
                // bf, adf, sum exactly; centre of mass to rounding (f64 sums against exact integers).
                for k in 0..3 {
                    assert_eq!(x.images[k], y.images[k], "detector {k}");
                }
                for k in 3..x.images.len() {
                    for (p, q) in x.images[k].iter().zip(&y.images[k]) {
                        assert!((p - q).abs() <= 1e-4 * p.abs().max(1.0), "detector {k}: {p} vs {q}");
                    }
                }
                assert_eq!(x.spot_intensity, y.spot_intensity);
                assert_eq!(x.region_spot_intensity, y.region_spot_intensity);
                assert_eq!(x.total_counts, y.total_counts);
            }
        }
        // A u16 pattern of the wrong length is an error.
        let mut a = ScanAssembler::new(&explicit_cfg(), SHAPE).expect("valid");
        assert!(matches!(a.push_u16(0, W, W, &[1; 10], None), Err(FourDError::PatternSize { .. })));
    }

    #[test]
    fn a_missing_pattern_masks_its_position_and_leaves_the_rest_unchanged() {
        let n = SHAPE.positions();
        let (_, full) = run(&explicit_cfg(), 0..n, |_| 2000.0);
        let gone = 13u64;
        let (_, holed) = run(&explicit_cfg(), (0..n).filter(|&i| i != gone), |_| 2000.0);
        // The scan cannot know it is over until the series ends: finish() gives it, incomplete.
        assert_eq!(holed.len(), 1);
        let (f, h) = (&full[0], &holed[0]);
        assert!(!h.complete);
        assert_eq!((h.missing, h.duplicates), (1, 0));
        for p in 0..n as usize {
            assert_eq!(h.masked[p], p as u64 == gone, "mask at {p}");
            for k in 0..3 {
                if p as u64 == gone {
                    assert_eq!(h.images[k][p], 0.0);
                } else {
                    assert_eq!(h.images[k][p], f.images[k][p], "detector {k} at {p}");
                }
            }
        }
        // The same hole in the first of two scans: the second scan's first pattern completes it.
        let (_, two) = run(&explicit_cfg(), (0..2 * n).filter(|&i| i != gone), |_| 2000.0);
        assert_eq!(two.len(), 2);
        assert!(two[0].complete && two[0].missing == 1 && two[0].masked[gone as usize]);
        assert!(two[1].complete && two[1].missing == 0);
    }

    #[test]
    fn a_duplicate_masks_its_position() {
        let n = SHAPE.positions();
        let (_, full) = run(&explicit_cfg(), 0..n, |_| 2000.0);
        let dup = 7u64;
        let mut a = ScanAssembler::new(&explicit_cfg(), SHAPE).expect("valid");
        let mut events = Vec::new();
        for i in 0..n {
            events.extend(a.push(i, W, W, &pattern(i, 2000.0), None).expect("ok"));
            if i == 3 {
                // A second pattern for position 7 before its first: both arrive, neither is kept.
                events.extend(a.push(dup, W, W, &pattern(999, 2000.0), None).expect("ok"));
            }
        }
        events.extend(a.finish());
        let s = &completes(&events)[0];
        assert!(s.complete);
        assert_eq!((s.missing, s.duplicates), (0, 1));
        for p in 0..n as usize {
            assert_eq!(s.masked[p], p as u64 == dup);
            if p as u64 != dup {
                assert_eq!(s.images[1][p], full[0].images[1][p]);
            } else {
                assert_eq!(s.images[1][p], 0.0);
            }
        }
    }

    #[test]
    fn a_pattern_of_the_wrong_size_is_an_error_and_changes_nothing() {
        let n = SHAPE.positions();
        let (_, full) = run(&explicit_cfg(), 0..n, |_| 2000.0);
        let mut a = ScanAssembler::new(&explicit_cfg(), SHAPE).expect("valid");
        let mut events = Vec::new();
        for i in 0..n {
            if i == 11 {
                let err = a.push(i, W - 1, W, &vec![1.0; (W - 1) * W], None).err().expect("an error");
                assert_eq!(err, FourDError::PatternSize { got_w: W - 1, got_h: W, want_w: W, want_h: W });
                let err = a.push(i, W, W, &[1.0; 10], None).err().expect("an error");
                assert!(matches!(err, FourDError::PatternSize { .. }));
            }
            events.extend(a.push(i, W, W, &pattern(i, 2000.0), None).expect("ok"));
        }
        let s = &completes(&events)[0];
        assert!(s.complete && s.masked.iter().all(|m| !m));
        assert_eq!(s.images, full[0].images);
    }

    #[test]
    fn three_scans_then_an_incomplete_one_and_rows_in_raster_order() {
        let n = SHAPE.positions();
        let mut a = ScanAssembler::new(&explicit_cfg(), SHAPE).expect("valid");
        let mut events = Vec::new();
        for i in 0..3 * n + 17 {
            events.extend(a.push(i, W, W, &pattern(i, 2000.0), None).expect("ok"));
        }
        let before_finish = completes(&events);
        assert_eq!(
            before_finish.iter().map(|s| (s.scan, s.complete)).collect::<Vec<_>>(),
            [(0, true), (1, true), (2, true)]
        );
        events.extend(a.finish());
        let all = completes(&events);
        assert_eq!(all.len(), 4);
        let last = &all[3];
        assert_eq!((last.scan, last.complete, last.missing), (3, false, n - 17));
        assert!(last.masked[..17].iter().all(|m| !m) && last.masked[17..].iter().all(|&m| m));
        // Rows of each scan come once, in order, and before its Complete event.
        for scan in 0..3u64 {
            let rows: Vec<usize> = events
                .iter()
                .filter_map(|e| match e {
                    ScanEvent::Rows { scan: s, rows } if *s == scan => Some(rows.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(rows, (0..SHAPE.rows).collect::<Vec<_>>(), "scan {scan}");
        }
        // A pattern for a completed scan is late: dropped and counted.
        assert!(a.push(5, W, W, &pattern(5, 2000.0), None).expect("ok").is_empty());
        assert_eq!(a.late(), 1);
    }

    #[test]
    fn spots_found_in_the_first_scan_fade_with_their_amplitude() {
        let n = SHAPE.positions();
        let cfg = FourDConfig {
            enabled: true,
            centre_patterns: 10,
            regions_rows: 2,
            regions_cols: 1,
            ..FourDConfig::default()
        };
        let scale = |scan: u64| 0.7f64.powi(scan as i32);
        let (a, scans) = run(&cfg, 0..4 * n, |scan| 3000.0 * scale(scan));
        assert_eq!(a.spots.len(), 4, "{:?}", a.spots);
        for s in &a.spots {
            assert!(SPOTS.iter().any(|&(x, y)| (s.x_px - x).abs() < 0.3 && (s.y_px - y).abs() < 0.3), "{s:?}");
        }
        assert_eq!(scans.len(), 4);
        for s in &scans {
            assert_eq!(s.spot_intensity.len(), 4);
            assert_eq!(s.region_spot_intensity.len(), 2);
            for k in 0..4 {
                // Each pattern holds ≈ 3000·scale (rounded to integers, on Poisson-like noise).
                let per_pattern = s.spot_intensity[k] / n as f64;
                let want = 3000.0 * scale(s.scan);
                assert!((per_pattern / want - 1.0).abs() < 0.05, "scan {} spot {k}: {per_pattern} vs {want}", s.scan);
                for region in &s.region_spot_intensity {
                    // Each region holds half the positions.
                    assert!(
                        (2.0 * region[k] / s.spot_intensity[k] - 1.0).abs() < 0.05,
                        "{region:?} vs {:?}",
                        s.spot_intensity
                    );
                }
            }
        }
        for pair in scans.windows(2) {
            for k in 0..4 {
                let ratio = pair[1].spot_intensity[k] / pair[0].spot_intensity[k];
                assert!((ratio - 0.7).abs() < 0.05, "scan {} spot {k}: ratio {ratio}", pair[1].scan);
            }
        }
    }

    #[test]
    fn held_patterns_never_exceed_centre_patterns() {
        let cfg = FourDConfig { enabled: true, centre_patterns: 7, ..FourDConfig::default() };
        let mut a = ScanAssembler::new(&cfg, SHAPE).expect("valid");
        let mut most = 0;
        let mut first_rows_at = None;
        for i in 0..2 * SHAPE.positions() {
            let ev = a.push(i, W, W, &pattern(i, 2000.0), None).expect("ok");
            most = most.max(a.held());
            if first_rows_at.is_none() && ev.iter().any(|e| matches!(e, ScanEvent::Rows { .. })) {
                first_rows_at = Some(i);
            }
            assert_eq!(a.detectors.is_some(), i >= 6, "at {i}");
        }
        assert_eq!(most, 6);
        // The held patterns were replayed: the first row (5 positions) was ready at the 7th.
        assert_eq!(first_rows_at, Some(6));
        // A first scan shorter than centre_patterns: the centre comes from that scan.
        let cfg = FourDConfig { enabled: true, centre_patterns: 1000, ..FourDConfig::default() };
        let (a, scans) = run(&cfg, 0..SHAPE.positions() + 3, |_| 2000.0);
        assert!(a.detectors.is_some());
        assert_eq!(scans.len(), 2);
        assert!(scans[0].complete && !scans[1].complete);
    }

    #[test]
    fn configuration_errors_by_fault() {
        let base = FourDConfig::default();
        let mut c = base.clone();
        c.analyse = "haadf".into();
        assert_eq!(ScanAssembler::new(&c, SHAPE).err(), Some(FourDError::UnknownAnalyse("haadf".into())));
        let mut c = base.clone();
        c.detectors.push(c.detectors[0].clone());
        assert!(matches!(ScanAssembler::new(&c, SHAPE).err(), Some(FourDError::Detector { name, .. }) if name == "bf"));
        let c = FourDConfig { regions_rows: 0, ..base.clone() };
        assert!(ScanAssembler::new(&c, SHAPE).is_err());
        let c = FourDConfig { centre_patterns: 0, ..base.clone() };
        assert!(ScanAssembler::new(&c, SHAPE).is_err());
        let mut c = base.clone();
        c.detectors[0].kind = DetectorKind::Disk { radius_px: None, radius_mrad: Some(10.0) };
        assert!(
            matches!(ScanAssembler::new(&c, SHAPE).err(), Some(FourDError::Detector { why, .. }) if why.contains("pixel_mrad"))
        );
        assert!(ScanAssembler::new(&base, ScanShape { rows: 0, cols: 4 }).is_err());
    }
}
