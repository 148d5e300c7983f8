//! Scan row bands: a scan's rows split so that several threads reduce one scan together, each with
//! its own [`ScanAssembler`] over its band, and the bands' parts merged back into the scan's
//! [`ScanResult`].
//!
//! A pattern's band is known on arrival (frame index → scan row), so no pattern is looked at twice.
//! Bands never straddle a row of `[fourd]` regions: a band's assembler then has one region row, its
//! regions are whole-scan regions (or their parts), and the merged per-region summed patterns are
//! what one assembler over the whole scan would hold — the same spot intensities, the same images.

use super::assemble::{Pixels, ScanAssembler, ScanEvent, ScanResult};
use super::detectors::VirtualDetectors;
use super::geometry::ScanShape;
use super::spots::{Spot, integrate_spots};
use super::{FourDConfig, FourDError};

/// The rows [start, end) of band `b` of `bands` (as even as the rows allow).
pub fn band_rows(rows: usize, bands: usize, b: usize) -> (usize, usize) {
    let bands = bands.max(1);
    (b * rows / bands, (b + 1) * rows / bands)
}

/// The region row of scan row `row` (as [`ScanAssembler`] assigns regions).
fn region_row(row: usize, rows: usize, regions_rows: usize) -> usize {
    row * regions_rows / rows.max(1)
}

/// At least `wanted` bands (when the rows allow), none straddling a row of `regions_rows`
/// regions: each region row split into the same number of bands. Empty bands are left out.
pub fn plan_bands(shape: ScanShape, regions_rows: usize, wanted: usize) -> Vec<(usize, usize)> {
    let regions_rows = regions_rows.max(1);
    let per_region = wanted.max(1).div_ceil(regions_rows);
    let mut bands = Vec::new();
    let mut start = 0;
    for rr in 0..regions_rows {
        let end = (start..shape.rows).find(|&r| region_row(r, shape.rows, regions_rows) > rr).unwrap_or(shape.rows);
        for b in 0..per_region {
            let (a, z) = band_rows(end - start, per_region, b);
            if z > a {
                bands.push((start + a, start + z));
            }
        }
        start = end;
    }
    bands
}

/// One band's assembler: series image indices in, scan events with whole-scan rows out.
pub struct BandAssembler {
    pub assembler: ScanAssembler,
    /// Scan rows [start, end) of this band.
    pub rows: (usize, usize),
    cols: usize,
    positions: u64,
}

impl BandAssembler {
    /// A band of `rows` of a `scan`, its own assembler with the band's share of the region rows
    /// (`regions_rows`), and the geometry when another assembler of the series found it.
    pub fn new(
        cfg: &FourDConfig,
        scan: ScanShape,
        rows: (usize, usize),
        regions_rows: usize,
        geometry: Option<(VirtualDetectors, Vec<Spot>)>,
    ) -> Result<Self, FourDError> {
        let band = ScanShape { rows: rows.1.saturating_sub(rows.0), cols: scan.cols };
        let cfg = FourDConfig { regions_rows: regions_rows.max(1), ..cfg.clone() };
        let mut assembler = ScanAssembler::new(&cfg, band)?;
        if let Some((detectors, spots)) = geometry {
            assembler.adopt(detectors, spots);
        }
        Ok(Self { assembler, rows, cols: scan.cols, positions: scan.positions() })
    }

    /// The whole scan as one band (the reference scan, while the geometry is found).
    pub fn whole(cfg: &FourDConfig, scan: ScanShape) -> Result<Self, FourDError> {
        Self::new(cfg, scan, (0, scan.rows), cfg.regions_rows, None)
    }

    /// Whether series image `index` falls in this band.
    pub fn owns(&self, index: u64) -> bool {
        let row = ((index % self.positions.max(1)) / self.cols.max(1) as u64) as usize;
        (self.rows.0..self.rows.1).contains(&row)
    }

    /// Series image `index` (which this band owns) → the band assembler's own image index.
    fn local(&self, index: u64) -> u64 {
        let scan = index / self.positions.max(1);
        let within = index % self.positions.max(1) - (self.rows.0 * self.cols) as u64;
        scan * ((self.rows.1 - self.rows.0) * self.cols) as u64 + within
    }

    /// One pattern at series image `index` (owned by this band), f32 or u16 counts
    /// ([`ScanAssembler::push_pixels`]).
    pub fn push(
        &mut self,
        index: u64,
        width: usize,
        height: usize,
        pixels: Pixels<'_>,
        invalid: Option<&[bool]>,
    ) -> Result<Vec<ScanEvent>, FourDError> {
        let events = self.assembler.push_pixels(self.local(index), width, height, pixels, invalid)?;
        Ok(self.global(events))
    }

    /// Detector `k`'s values over whole-scan `rows` (within this band) of scan `scan` while it is
    /// being filled ([`ScanAssembler::current_rows`]).
    pub fn current_rows(&self, scan: u64, k: usize, rows: std::ops::Range<usize>) -> Option<&[f32]> {
        let local = rows.start.checked_sub(self.rows.0)?..rows.end.checked_sub(self.rows.0)?;
        self.assembler.current_rows(scan, k, local)
    }

    /// See [`ScanAssembler::complete_before`].
    pub fn complete_before(&mut self, scan: u64) -> Vec<ScanEvent> {
        let events = self.assembler.complete_before(scan);
        self.global(events)
    }

    pub fn finish(&mut self) -> Vec<ScanEvent> {
        let events = self.assembler.finish();
        self.global(events)
    }

    /// Rows events in whole-scan rows.
    fn global(&self, mut events: Vec<ScanEvent>) -> Vec<ScanEvent> {
        for e in &mut events {
            if let ScanEvent::Rows { rows, .. } = e {
                *rows = rows.start + self.rows.0..rows.end + self.rows.0;
            }
        }
        events
    }
}

/// What merging needs to know about a series' bands.
pub struct MergePlan<'a> {
    pub shape: ScanShape,
    pub bands: &'a [(usize, usize)],
    pub regions_rows: usize,
    pub regions_cols: usize,
    pub detector_names: Vec<String>,
    pub pattern_len: usize,
    pub pattern_width: usize,
    pub spots: &'a [Spot],
}

/// The parts of scan `scan` (one per band, in band order; `None` where no pattern reached a band)
/// → the whole scan's result, as one assembler over the whole scan would have given it.
/// `closed`: the scan was ended by a later scan's pattern (its missing positions are not the end
/// of the series). `None` when no band had a pattern.
pub fn merge(plan: &MergePlan<'_>, scan: u64, parts: Vec<Option<ScanResult>>, closed: bool) -> Option<ScanResult> {
    if parts.iter().all(Option::is_none) {
        return None;
    }
    let (rows, cols) = (plan.shape.rows, plan.shape.cols);
    let positions = rows * cols;
    let regions = plan.regions_rows * plan.regions_cols;
    let mut images = vec![vec![0.0f32; positions]; plan.detector_names.len()];
    let mut masked = vec![true; positions];
    let (mut missing, mut duplicates) = (0u64, 0u64);
    let mut complete = true;
    let mut region_sums: Vec<Vec<f64>> = vec![Vec::new(); regions];
    let mut region_n = vec![0u64; regions];
    for (part, &(r0, r1)) in parts.into_iter().zip(plan.bands) {
        let band_positions = (r1 - r0) * cols;
        let Some(part) = part else {
            missing += band_positions as u64;
            complete &= closed;
            continue;
        };
        let at = r0 * cols..r1 * cols;
        for (img, band_img) in images.iter_mut().zip(&part.images) {
            img[at.clone()].copy_from_slice(&band_img[..band_positions]);
        }
        masked[at].copy_from_slice(&part.masked[..band_positions]);
        missing += part.missing;
        duplicates += part.duplicates;
        complete &= part.complete;
        // The band's regions are the columns of its region row.
        let rr = region_row(r0, rows, plan.regions_rows);
        for (rc, (sum, n)) in part.region_sums.into_iter().zip(part.region_patterns).enumerate() {
            let g = rr * plan.regions_cols + rc;
            if sum.is_empty() || g >= regions {
                continue;
            }
            let into = &mut region_sums[g];
            if into.is_empty() {
                *into = sum;
            } else {
                into.iter_mut().zip(&sum).for_each(|(a, b)| *a += b);
            }
            region_n[g] += n;
        }
    }
    let width = plan.pattern_width.max(1);
    let mut total = vec![0.0f64; plan.pattern_len];
    for sum in region_sums.iter().filter(|s| !s.is_empty()) {
        total.iter_mut().zip(sum).for_each(|(t, s)| *t += s);
    }
    let n_total: u64 = region_n.iter().sum();
    let scale = |positions: u64, n: u64| if n > 0 { positions as f64 / n as f64 } else { f64::NAN };
    let spot_intensity =
        integrate_spots(&total, width, plan.spots).into_iter().map(|v| v * scale(positions as u64, n_total)).collect();
    let region_positions = region_positions(plan.shape, plan.regions_rows, plan.regions_cols);
    let region_spot_intensity = region_sums
        .iter()
        .zip(&region_n)
        .zip(&region_positions)
        .map(|((sum, &n), &p)| {
            if n == 0 {
                vec![f64::NAN; plan.spots.len()]
            } else {
                integrate_spots(sum, width, plan.spots).into_iter().map(|v| v * scale(p, n)).collect()
            }
        })
        .collect();
    Some(ScanResult {
        scan,
        shape: plan.shape,
        detector_names: plan.detector_names.clone(),
        images,
        masked,
        missing,
        duplicates,
        complete,
        spot_intensity,
        region_spot_intensity,
        total_counts: total.iter().sum(),
        region_sums,
        region_patterns: region_n,
    })
}

/// Positions per region (row-major), as [`ScanAssembler`] splits the scan.
fn region_positions(shape: ScanShape, regions_rows: usize, regions_cols: usize) -> Vec<u64> {
    let mut n = vec![0u64; regions_rows * regions_cols];
    for r in 0..shape.rows {
        for c in 0..shape.cols {
            n[region_row(r, shape.rows, regions_rows) * regions_cols + c * regions_cols / shape.cols.max(1)] += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_never_straddle_region_rows_and_cover_every_row() {
        for rows in [1usize, 2, 5, 7, 32, 256] {
            for regions in [1usize, 2, 3] {
                for wanted in [1usize, 2, 3, 4, 7] {
                    let shape = ScanShape { rows, cols: 4 };
                    let bands = plan_bands(shape, regions, wanted);
                    let covered: Vec<usize> = bands.iter().flat_map(|&(a, z)| a..z).collect();
                    assert_eq!(covered, (0..rows).collect::<Vec<_>>(), "{rows} {regions} {wanted}");
                    for &(a, z) in &bands {
                        assert_eq!(region_row(a, rows, regions), region_row(z - 1, rows, regions));
                    }
                    if regions <= rows {
                        assert!(bands.len() >= wanted.min(rows), "{rows} {regions} {wanted}: {bands:?}");
                    }
                }
            }
        }
    }
}
