//! The `/fourd` group of a 4D-STEM series' session file: every virtual image of every scan, the
//! masked positions, the spot table and the spot intensities per scan, and the dose each position
//! has had. Created with the file (SWMR allows no new objects later), appended one scan at a time.
//!
//! ```text
//! /fourd                        attrs: scan_rows, scan_cols, shape_source, detectors (comma-separated),
//!                               analysed_detector, centre_x_px, centre_y_px, bf_radius_px (NaN: unknown),
//!                               regions_rows, regions_cols, beam_current_source
//! /fourd/virtual/<detector>     (S, rows, cols) f32   one image per scan, chunked per scan
//! /fourd/masked                 (S, rows, cols) u8    1: no pattern or more than one arrived
//! /fourd/scan_index             (S) u64               scan number of each row
//! /fourd/complete               (S) u8                0: cut short by the end of the series
//! /fourd/spots                  (n, 5) f64            x_px, y_px, radius_px, bg_inner_px, bg_outer_px
//! /fourd/spot_intensity         (S, n) f64            background-subtracted, summed over the scan
//! /fourd/region_spot_intensity  (S, regions, n) f64   the same per region (row-major)
//! /fourd/cumulative_dose_e_per_a2  (S) f64            dose at every position after each scan
//! /fourd/dose_map_e_per_a2      (S, rows, cols) f32   cumulative dose per position after each scan
//! ```

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, H5Type};
use ndarray::{Array2, Array3, s};

use crate::decode::ScanFrame;
use crate::dose::FrameDose;

/// What the group is created with (from the series' first scan).
#[derive(Clone, Debug)]
pub struct FourDMeta {
    pub rows: usize,
    pub cols: usize,
    pub detectors: Vec<String>,
    pub analysed: String,
    pub spots: Vec<[f64; 5]>,
    pub regions: (usize, usize),
    pub centre_px: Option<(f64, f64)>,
    pub bf_radius_px: Option<f64>,
    pub shape_source: String,
    pub beam_current_source: String,
}

impl FourDMeta {
    pub fn of(scan: &ScanFrame, analysed: &str, dose: &FrameDose) -> Self {
        let r = &scan.result;
        Self {
            rows: r.shape.rows,
            cols: r.shape.cols,
            detectors: r.detector_names.clone(),
            analysed: analysed.to_string(),
            spots: scan
                .spots
                .iter()
                .map(|s| [s.x_px, s.y_px, s.radius_px, s.background_inner_px, s.background_outer_px])
                .collect(),
            regions: scan.regions,
            centre_px: scan.centre_px,
            bf_radius_px: scan.bf_radius_px,
            shape_source: serde_json::to_value(scan.shape_source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            beam_current_source: match dose.beam_current_pa.source {
                crate::dose::Source::EstimatedFromCounts => {
                    "estimated from counts (counting detector: 1 count = 1 electron)".to_string()
                }
                s => serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            },
        }
    }
}

pub struct FourDGroup {
    meta: FourDMeta,
    virtual_images: Vec<Dataset>,
    masked: Dataset,
    scan_index: Dataset,
    complete: Dataset,
    spot_intensity: Dataset,
    region_spot_intensity: Dataset,
    cumulative: Dataset,
    dose_map: Dataset,
    /// The running per-position dose (e⁻/Å²).
    dose_now: Vec<f32>,
    n: usize,
}

fn text_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value.parse().unwrap_or_default();
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
}

fn f64_attr(loc: &hdf5::Location, name: &str, value: f64) -> hdf5::Result<()> {
    loc.new_attr::<f64>().create(name)?.write_scalar(&value)
}

fn u64_attr(loc: &hdf5::Location, name: &str, value: u64) -> hdf5::Result<()> {
    loc.new_attr::<u64>().create(name)?.write_scalar(&value)
}

fn describe(ds: &Dataset, units: &str, axes: &str, what: &str) -> hdf5::Result<()> {
    text_attr(ds, "units", units)?;
    text_attr(ds, "axes", axes)?;
    text_attr(ds, "long_name", what)
}

fn images<T: H5Type>(g: &hdf5::Group, name: &str, rows: usize, cols: usize) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>().chunk((1, rows.max(1), cols.max(1))).shape((0.., rows, cols)).create(name)
}

fn column<T: H5Type>(g: &hdf5::Group, name: &str) -> hdf5::Result<Dataset> {
    g.new_dataset::<T>().chunk(64).shape(0..).create(name)
}

impl FourDGroup {
    /// Creates `/fourd` in `file` (before SWMR writing starts).
    pub fn create(file: &File, meta: FourDMeta) -> hdf5::Result<Self> {
        let g = file.create_group("fourd")?;
        let (rows, cols) = (meta.rows, meta.cols);
        u64_attr(&g, "scan_rows", rows as u64)?;
        u64_attr(&g, "scan_cols", cols as u64)?;
        text_attr(&g, "shape_source", &meta.shape_source)?;
        text_attr(&g, "detectors", &meta.detectors.join(","))?;
        text_attr(&g, "analysed_detector", &meta.analysed)?;
        let (cx, cy) = meta.centre_px.unwrap_or((f64::NAN, f64::NAN));
        f64_attr(&g, "centre_x_px", cx)?;
        f64_attr(&g, "centre_y_px", cy)?;
        f64_attr(&g, "bf_radius_px", meta.bf_radius_px.unwrap_or(f64::NAN))?;
        u64_attr(&g, "regions_rows", meta.regions.0 as u64)?;
        u64_attr(&g, "regions_cols", meta.regions.1 as u64)?;
        text_attr(&g, "beam_current_source", &meta.beam_current_source)?;
        let vg = g.create_group("virtual")?;
        let mut virtual_images = Vec::new();
        for name in &meta.detectors {
            let ds = images::<f32>(&vg, name, rows, cols)?;
            describe(
                &ds,
                "counts",
                "scan, scan row, scan column",
                &format!("virtual detector `{name}`, one image per scan"),
            )?;
            virtual_images.push(ds);
        }
        let masked = images::<u8>(&g, "masked", rows, cols)?;
        describe(
            &masked,
            "",
            "scan, scan row, scan column",
            "1: no pattern, or more than one, arrived for this position",
        )?;
        let scan_index = column::<u64>(&g, "scan_index")?;
        describe(&scan_index, "", "scan", "scan number of each row")?;
        let complete = column::<u8>(&g, "complete")?;
        describe(&complete, "", "scan", "0: the scan was cut short by the end of the series")?;
        let n = meta.spots.len();
        let spots = g.new_dataset::<f64>().shape((n, 5)).create("spots")?;
        if n > 0 {
            let flat: Vec<f64> = meta.spots.iter().flatten().copied().collect();
            spots
                .write(&Array2::from_shape_vec((n, 5), flat).map_err(|e| hdf5::Error::from(e.to_string().as_str()))?)?;
        }
        describe(
            &spots,
            "px",
            "spot, (x, y, radius, background inner, background outer)",
            "Bragg spots found in the reference scan's mean pattern",
        )?;
        let spot_intensity = g.new_dataset::<f64>().chunk((1, n.max(1))).shape((0.., 0..)).create("spot_intensity")?;
        describe(&spot_intensity, "counts", "scan, spot", "background-subtracted spot intensity summed over the scan")?;
        let regions = meta.regions.0 * meta.regions.1;
        let region_spot_intensity = g
            .new_dataset::<f64>()
            .chunk((1, regions.max(1), n.max(1)))
            .shape((0.., 0.., 0..))
            .create("region_spot_intensity")?;
        describe(
            &region_spot_intensity,
            "counts",
            "scan, region (row-major), spot",
            "spot intensity per region of the scan",
        )?;
        let cumulative = column::<f64>(&g, "cumulative_dose_e_per_a2")?;
        describe(&cumulative, "e-/Å^2", "scan", "dose at every probe position after this scan (NaN: unknown)")?;
        let dose_map = images::<f32>(&g, "dose_map_e_per_a2", rows, cols)?;
        describe(
            &dose_map,
            "e-/Å^2",
            "scan, scan row, scan column",
            "cumulative dose per probe position after this scan (masked positions too: the beam was there)",
        )?;
        Ok(Self {
            dose_now: vec![0.0; rows * cols],
            meta,
            virtual_images,
            masked,
            scan_index,
            complete,
            spot_intensity,
            region_spot_intensity,
            cumulative,
            dose_map,
            n: 0,
        })
    }

    /// Appends one scan.
    pub fn push(&mut self, scan: &ScanFrame, dose: &FrameDose) -> hdf5::Result<()> {
        let r = &scan.result;
        let (rows, cols, k) = (self.meta.rows, self.meta.cols, self.n);
        if r.shape.rows != rows || r.shape.cols != cols {
            return Err(hdf5::Error::from("a scan of another shape than the series' first"));
        }
        let shaped = |v: Vec<f32>| {
            Array3::from_shape_vec((1, rows, cols), v).map_err(|e| hdf5::Error::from(e.to_string().as_str()))
        };
        for (ds, name) in self.virtual_images.iter().zip(&self.meta.detectors) {
            let Some(i) = r.detector_names.iter().position(|n| n == name) else { continue };
            ds.resize((k + 1, rows, cols))?;
            ds.write_slice(&shaped(r.images[i].clone())?, s![k..k + 1, .., ..])?;
        }
        self.masked.resize((k + 1, rows, cols))?;
        let m: Vec<u8> = r.masked.iter().map(|&b| u8::from(b)).collect();
        self.masked.write_slice(
            &Array3::from_shape_vec((1, rows, cols), m).map_err(|e| hdf5::Error::from(e.to_string().as_str()))?,
            s![k..k + 1, .., ..],
        )?;
        self.scan_index.resize(k + 1)?;
        self.scan_index.write_slice(&[r.scan], s![k..k + 1])?;
        self.complete.resize(k + 1)?;
        self.complete.write_slice(&[u8::from(r.complete)], s![k..k + 1])?;
        let n = r.spot_intensity.len();
        let width = self.spot_intensity.shape().get(1).copied().unwrap_or(0).max(n);
        self.spot_intensity.resize((k + 1, width))?;
        if n > 0 {
            self.spot_intensity.write_slice(&r.spot_intensity, s![k, 0..n])?;
        }
        let regions = r.region_spot_intensity.len();
        let rshape = self.region_spot_intensity.shape();
        let (rr, rn) = (rshape.get(1).copied().unwrap_or(0).max(regions), rshape.get(2).copied().unwrap_or(0).max(n));
        self.region_spot_intensity.resize((k + 1, rr, rn))?;
        for (j, v) in r.region_spot_intensity.iter().enumerate() {
            if !v.is_empty() {
                self.region_spot_intensity.write_slice(v, s![k, j, 0..v.len()])?;
            }
        }
        self.cumulative.resize(k + 1)?;
        self.cumulative.write_slice(&[dose.cumulative_e_per_a2.unwrap_or(f64::NAN)], s![k..k + 1])?;
        // Every position the scan reached had the beam, masked or not; an incomplete scan's
        // positions after its last pattern had none (they are masked and the scan is incomplete:
        // the unmasked ones are known to have been reached).
        let per_scan = dose.per_frame_e_per_a2.map_or(f32::NAN, |d| d as f32);
        for (i, d) in self.dose_now.iter_mut().enumerate() {
            if r.complete || !r.masked.get(i).copied().unwrap_or(true) {
                *d += per_scan;
            }
        }
        self.dose_map.resize((k + 1, rows, cols))?;
        self.dose_map.write_slice(&shaped(self.dose_now.clone())?, s![k..k + 1, .., ..])?;
        self.n += 1;
        Ok(())
    }
}
