//! beamwatch session files: one HDF5 file per series, written as SWMR so a reader (or a crash) always
//! finds a consistent file. Layout (see `docs/session-format.md`):
//!
//! ```text
//! /                     attrs: beamwatch_format, beamwatch_version, series, source, wire_format,
//!                       created, width, height, dtype, patch_px, grid_rows, grid_cols,
//!                       frames_every, provenance (JSON); at a clean end also complete = 1, summary (JSON)
//! /frames               (N, H, W) as received (u8/u16/u32/f32), chunked per frame, deflate
//! /frame_index          (N) u64      frame number of each stored frame
//! /received/<column>    one row per received frame: index, received_unix_ns, timestamp_ns,
//!                       dose_e_per_a2, cumulative_e_per_a2, beam_current_pa, dwell_time_us,
//!                       pixel_size_a, dose_sources
//! /analysis/<column>    one row per analysed frame: index, similarity (M, rows, cols),
//!                       dissimilarity (M, rows, cols), status (M, rows, cols), mean, max,
//!                       fraction_above, damaged_area, shift_dx_px, shift_dy_px, analysis_ms,
//!                       cumulative_e_per_a2
//! /alarms               (A) fixed 4096-byte UTF-8 strings: one alarm JSON per row
//! /data/frames          Berkeley EMD 0.2 group: data (= /frames), dim1 (= /frame_index), dim2 y, dim3 x
//! /data/dissimilarity   EMD group: data (= /analysis/dissimilarity), dim1 (= /analysis/index), patch y, x
//! ```
//! `/frames`, `/frame_index`, `/analysis/dissimilarity` and `/analysis/index` are soft links to the
//! EMD groups' datasets (a hard link would hide the EMD name from HDF5 visitors such as HyperSpy's).
//! Every dataset has `units`, `axes` and `long_name` attributes.
//! Unknown values are NaN (floats) or −1 (timestamps).

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, H5Type};
use ndarray::{Array3, ArrayView3, s};

use super::extent;
use super::{FrameSource, Layout, ReadError, SourceFrame, SourceInfo};
use crate::damage::{SimilarityMap, Summary};
use crate::decode::{DoseHeader, WireFormat};
use crate::dose::{FrameDose, Input, Source};
use crate::frame::{Frame, PixelType};
use crate::register::Shift;

/// Root attribute value identifying our files. Version 2 lays the frames and the dissimilarity maps
/// out as Berkeley EMD 0.2 groups too, puts units on every dataset and stores alarms as strings;
/// version 1 files are still read.
pub const FORMAT: &str = "beamwatch-session/2";
/// Bytes per alarm (a longer alarm JSON is cut at a character boundary).
pub const ALARM_BYTES: usize = 4096;
/// One alarm: its JSON, as a fixed-length UTF-8 string.
type AlarmText = hdf5::types::FixedUnicode<ALARM_BYTES>;
/// Rows per chunk of the one-column tables.
const ROW_CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("{}: {what}: {source}", path.display())]
#[must_use]
pub struct RecordError {
    pub path: PathBuf,
    pub what: String,
    pub source: hdf5::Error,
}

/// Frame pixels in their received type (f32 frames hold integers exactly up to 2²⁴).
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    F32(Vec<f32>),
}

impl Pixels {
    pub fn from_frame(f: &Frame) -> Self {
        let p = f.pixels();
        match f.dtype() {
            PixelType::U8 => Self::U8(p.iter().map(|&v| v as u8).collect()),
            PixelType::U16 => Self::U16(p.iter().map(|&v| v as u16).collect()),
            PixelType::U32 => Self::U32(p.iter().map(|&v| v as u32).collect()),
            PixelType::F32 => Self::F32(p.to_vec()),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len() * 2,
            Self::U32(v) => v.len() * 4,
            Self::F32(v) => v.len() * 4,
        }
    }
}

/// What a session file records about its series, written at creation.
#[derive(Clone, Debug)]
pub struct SessionMeta {
    pub series: String,
    /// "live tcp://…" or "replay of <file>".
    pub source: String,
    pub format: WireFormat,
    pub width: usize,
    pub height: usize,
    pub dtype: PixelType,
    pub patch_px: usize,
    pub grid_rows: usize,
    pub grid_cols: usize,
    /// 0: no frames; 1: every frame; N: every Nth.
    pub frames_every: u32,
    /// Deflate level for frames (0: none).
    pub deflate: u8,
    pub provenance_json: String,
    /// A 4D-STEM series: its `/fourd` group (see [`super::fourd_group`]).
    pub fourd: Option<super::fourd_group::FourDMeta>,
}

/// One received frame's dose record.
#[derive(Clone, Debug)]
pub struct ReceivedRow {
    pub index: u64,
    pub received_unix_ns: u64,
    pub timestamp_ns: Option<u64>,
    pub dose: FrameDose,
}

/// (units, description) of a `/received` column.
fn received_units(name: &str) -> (&'static str, &'static str) {
    match name {
        "index" => ("", "frame number"),
        "received_unix_ns" => ("ns", "when the frame arrived (Unix time)"),
        "timestamp_ns" => ("ns", "the sender's timestamp (−1: none)"),
        "dose_e_per_a2" => ("e-/Å^2", "dose of this frame (NaN: unknown)"),
        "cumulative_e_per_a2" => ("e-/Å^2", "cumulative dose after this frame"),
        "beam_current_pa" => ("pA", "beam current used for the dose"),
        "dwell_time_us" => ("µs", "dwell time per scan pixel used for the dose"),
        "pixel_size_a" => ("Å", "scan pixel size used for the dose"),
        _ => ("", "where each dose input came from (see docs/session-format.md)"),
    }
}

/// (units, description) of an `/analysis` column.
fn analysis_units(name: &str) -> (&'static str, &'static str) {
    match name {
        "mean" => ("", "mean patch dissimilarity"),
        "max" => ("", "largest patch dissimilarity"),
        "fraction_above" => ("", "share of analysed patches above their threshold"),
        "damaged_area" => ("", "share of analysed patches in connected significant regions"),
        "shift_dx_px" => ("px", "measured drift along x"),
        "shift_dy_px" => ("px", "measured drift along y"),
        "shift_peak" => ("", "phase-correlation peak of the drift measurement"),
        "analysis_ms" => ("ms", "time to analyse the frame"),
        _ => ("e-/Å^2", "cumulative dose at this frame"),
    }
}

/// Source codes in `dose_sources`: 2 bits per input (current, dwell, pixel size).
fn source_code(s: Source) -> u8 {
    match s {
        Source::Missing => 0,
        // Two bits per input: an estimate from counts is stored as the frame's own (the session's
        // `fourd` group says it was estimated).
        Source::FrameHeader | Source::EstimatedFromCounts => 1,
        Source::SeriesHeader => 2,
        Source::Config => 3,
    }
}

fn nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// A resizable 1-D column.
struct Column {
    ds: Dataset,
}

impl Column {
    fn new<T: H5Type>(group: &hdf5::Group, name: &str) -> hdf5::Result<Self> {
        let ds = group.new_dataset::<T>().chunk(ROW_CHUNK).shape(0..).create(name)?;
        Ok(Self { ds })
    }

    fn push<T: H5Type + Copy>(&self, row: usize, v: T) -> hdf5::Result<()> {
        self.ds.resize(row + 1)?;
        self.ds.write_slice(&[v], s![row..row + 1])
    }
}

/// Writes one series' session file.
pub struct SessionWriter {
    path: PathBuf,
    file: File,
    meta: SessionMeta,
    frames: Option<Dataset>,
    frame_index: Option<Column>,
    recv: Vec<(&'static str, Column)>,
    ana: Vec<(&'static str, Column)>,
    ana_grids: [Dataset; 3],
    alarms: Dataset,
    fourd: Option<super::fourd_group::FourDGroup>,
    /// The last scan pixel size (Å) a received frame knew: the EMD axes are calibrated with it.
    pixel_size_a: Option<f64>,
    n_frames: usize,
    n_recv: usize,
    n_ana: usize,
    n_alarms: usize,
}

const RECV_COLUMNS: [&str; 9] = [
    "index",
    "received_unix_ns",
    "timestamp_ns",
    "dose_e_per_a2",
    "cumulative_e_per_a2",
    "beam_current_pa",
    "dwell_time_us",
    "pixel_size_a",
    "dose_sources",
];
const ANA_COLUMNS: [&str; 10] = [
    "index",
    "mean",
    "max",
    "fraction_above",
    "damaged_area",
    "shift_dx_px",
    "shift_dy_px",
    "analysis_ms",
    "cumulative_e_per_a2",
    "shift_peak",
];

/// A growable (n, h, w) stack chunked one slice per chunk, optionally deflated.
fn stack<T: H5Type>(g: &hdf5::Group, name: &str, h: usize, w: usize, deflate: u8) -> hdf5::Result<Dataset> {
    // HDF5 refuses zero-sized chunk dimensions; a frame smaller than one patch has a 0×0 grid.
    let b = g.new_dataset::<T>().chunk((1, h.max(1), w.max(1)));
    let b = if deflate > 0 { b.deflate(deflate) } else { b };
    b.shape((0.., h, w)).create(name)
}

fn string_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value.parse().unwrap_or_default();
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
}

fn u64_attr(loc: &hdf5::Location, name: &str, value: u64) -> hdf5::Result<()> {
    loc.new_attr::<u64>().create(name)?.write_scalar(&value)
}

/// What a dataset holds, for h5py, HyperSpy and people: `units` and `axes` (comma-separated axis
/// names, slowest first) and a sentence.
fn describe(ds: &Dataset, units: &str, axes: &str, what: &str) -> hdf5::Result<()> {
    string_attr(ds, "units", units)?;
    string_attr(ds, "axes", axes)?;
    string_attr(ds, "long_name", what)
}

/// A Berkeley EMD 0.2 data group (`emd_group_type = 1`) under `/data`: `data` (N, H, W) with `dim1`
/// (the growing first axis, a [`Column`] of frame numbers) and `dim2`/`dim3` (positions along y and
/// x, in pixels of the frame until the pixel size is known at the end, see [`calibrate_dims`]).
struct EmdGroup {
    data: Dataset,
    dim1: Column,
}

fn emd_group<T: H5Type>(
    file: &File,
    name: &str,
    (h, w): (usize, usize),
    deflate: u8,
    step_px: f64,
) -> hdf5::Result<EmdGroup> {
    let g = file.create_group(&format!("data/{name}"))?;
    g.new_attr::<i32>().create("emd_group_type")?.write_scalar(&1)?;
    let data = stack::<T>(&g, "data", h, w, deflate)?;
    let dim1 = Column::new::<u64>(&g, "dim1")?;
    string_attr(&dim1.ds, "name", "frame")?;
    for (dim, n, axis) in [("dim2", h, "y"), ("dim3", w, "x")] {
        let pos: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5 * f64::from(u8::from(step_px > 1.0))) * step_px).collect();
        let ds = g.new_dataset::<f64>().shape(n.max(1)).create(dim)?;
        if n > 0 {
            ds.write(&pos)?;
        }
        string_attr(&ds, "name", axis)?;
    }
    Ok(EmdGroup { data, dim1 })
}

/// At the end of a series: the EMD groups' y/x axes in nm when the scan pixel size is known (units
/// `[n_m]`, the EMD convention RosettaSciIO reads), else in pixels.
fn calibrate_dims(f: &File, group: &str, step_px: f64, pixel_size_a: Option<f64>) -> hdf5::Result<()> {
    let Ok(g) = f.group(&format!("data/{group}")) else { return Ok(()) };
    for dim in ["dim2", "dim3"] {
        let ds = g.dataset(dim)?;
        let n = ds.size();
        let (scale, units) = match pixel_size_a {
            Some(a) => (step_px * a / 10.0, "[n_m]"),
            None => (step_px, "[p_x]"),
        };
        let centre = if step_px > 1.0 { 0.5 } else { 0.0 };
        let pos: Vec<f64> = (0..n).map(|i| (i as f64 + centre) * scale).collect();
        if n > 0 && ds.shape().first() == Some(&n) {
            ds.write(&pos)?;
        }
        string_attr(&ds, "units", units)?;
    }
    Ok(())
}

impl SessionWriter {
    /// Creates the file with every dataset, then switches it to SWMR writing.
    pub fn create(path: &Path, meta: SessionMeta) -> Result<Self, RecordError> {
        let err = |what: &str| {
            let (path, what) = (path.to_owned(), what.to_string());
            move |source| RecordError { path, what, source }
        };
        let file = File::with_options().with_fapl(|p| p.libver_latest()).create_excl(path).map_err(err("create"))?;
        let root: &hdf5::Location = &file;
        string_attr(root, "beamwatch_format", FORMAT).map_err(err("attributes"))?;
        string_attr(root, "beamwatch_version", env!("CARGO_PKG_VERSION")).map_err(err("attributes"))?;
        string_attr(root, "series", &meta.series).map_err(err("attributes"))?;
        string_attr(root, "source", &meta.source).map_err(err("attributes"))?;
        string_attr(root, "wire_format", meta.format.name()).map_err(err("attributes"))?;
        string_attr(root, "created", &crate::clock::rfc3339(std::time::SystemTime::now()))
            .map_err(err("attributes"))?;
        string_attr(root, "dtype", meta.dtype.name()).map_err(err("attributes"))?;
        string_attr(root, "provenance", &meta.provenance_json).map_err(err("attributes"))?;
        for (name, v) in [
            ("width", meta.width),
            ("height", meta.height),
            ("patch_px", meta.patch_px),
            ("grid_rows", meta.grid_rows),
            ("grid_cols", meta.grid_cols),
            ("frames_every", meta.frames_every as usize),
        ] {
            u64_attr(root, name, v as u64).map_err(err("attributes"))?;
        }
        for (name, v) in [("version_major", 0u64), ("version_minor", 2)] {
            // Berkeley EMD 0.2: HyperSpy/RosettaSciIO and py4DSTEM read the /data groups.
            u64_attr(root, name, v).map_err(err("attributes"))?;
        }
        let (h, w) = (meta.height, meta.width);
        let (frames, frame_index) = if meta.frames_every > 0 {
            let z = meta.deflate.min(9);
            let g = match meta.dtype {
                PixelType::U8 => emd_group::<u8>(&file, "frames", (h, w), z, 1.0),
                PixelType::U16 => emd_group::<u16>(&file, "frames", (h, w), z, 1.0),
                PixelType::U32 => emd_group::<u32>(&file, "frames", (h, w), z, 1.0),
                PixelType::F32 => emd_group::<f32>(&file, "frames", (h, w), z, 1.0),
            }
            .map_err(err("frames dataset"))?;
            let units = if meta.dtype == PixelType::F32 { "a.u." } else { "counts" };
            describe(&g.data, units, "frame, y, x", "the stored frames as received").map_err(err("frames dataset"))?;
            describe(&g.dim1.ds, "", "frame", "frame number of each stored frame").map_err(err("frames dataset"))?;
            // The version-1 paths, for readers that know them.
            file.link_soft("/data/frames/data", "frames").map_err(err("frames link"))?;
            file.link_soft("/data/frames/dim1", "frame_index").map_err(err("frames link"))?;
            (Some(g.data), Some(g.dim1))
        } else {
            (None, None)
        };
        let recv_g = file.create_group("received").map_err(err("received"))?;
        let mut recv = Vec::new();
        for name in RECV_COLUMNS {
            let c = match name {
                "index" | "received_unix_ns" => Column::new::<u64>(&recv_g, name),
                "timestamp_ns" => Column::new::<i64>(&recv_g, name),
                "dose_sources" => Column::new::<u8>(&recv_g, name),
                _ => Column::new::<f64>(&recv_g, name),
            }
            .map_err(err("received"))?;
            let (units, what) = received_units(name);
            describe(&c.ds, units, "received frame", what).map_err(err("received"))?;
            recv.push((name, c));
        }
        let ana_g = file.create_group("analysis").map_err(err("analysis"))?;
        let (r, c) = (meta.grid_rows, meta.grid_cols);
        let dis = emd_group::<f32>(&file, "dissimilarity", (r, c), 0, meta.patch_px as f64)
            .map_err(err("analysis grids"))?;
        describe(&dis.data, "", "analysed frame, patch row, patch column", "per-patch dissimilarity (NaN: not analysed)")
            .map_err(err("analysis grids"))?;
        describe(&dis.dim1.ds, "", "analysed frame", "frame number of each analysed frame (the reference is not a row)")
            .map_err(err("analysis"))?;
        ana_g.link_soft("/data/dissimilarity/data", "dissimilarity").map_err(err("analysis link"))?;
        ana_g.link_soft("/data/dissimilarity/dim1", "index").map_err(err("analysis link"))?;
        let mut ana = vec![("index", dis.dim1)];
        for name in ANA_COLUMNS.into_iter().filter(|n| *n != "index") {
            let col = Column::new::<f64>(&ana_g, name).map_err(err("analysis"))?;
            let (units, what) = analysis_units(name);
            describe(&col.ds, units, "analysed frame", what).map_err(err("analysis"))?;
            ana.push((name, col));
        }
        let grid = |name: &str, u8s: bool| {
            if u8s { stack::<u8>(&ana_g, name, r, c, 0) } else { stack::<f32>(&ana_g, name, r, c, 0) }
        };
        let similarity = grid("similarity", false).map_err(err("analysis grids"))?;
        let status = grid("status", true).map_err(err("analysis grids"))?;
        let axes = "analysed frame, patch row, patch column";
        describe(&similarity, "", axes, "per-patch similarity (NaN: not analysed)").map_err(err("analysis grids"))?;
        describe(&status, "", axes, "0 analysed, 1 analysed with gaps filled, 2 excluded (gaps), 3 excluded (outside the drift overlap)")
            .map_err(err("analysis grids"))?;
        let ana_grids = [similarity, dis.data, status];
        let alarms = file
            .new_dataset::<AlarmText>()
            .chunk(16)
            .shape(0..)
            .create("alarms")
            .map_err(err("alarms"))?;
        describe(&alarms, "", "alarm", "one alarm per row: the JSON the PUB socket and the alarm log carry")
            .map_err(err("alarms"))?;
        let fourd = match &meta.fourd {
            Some(m) => Some(super::fourd_group::FourDGroup::create(&file, m.clone()).map_err(err("fourd group"))?),
            None => None,
        };
        file.start_swmr().map_err(err("start SWMR writing"))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            meta,
            frames,
            frame_index,
            recv,
            ana,
            ana_grids,
            alarms,
            fourd,
            pixel_size_a: None,
            n_frames: 0,
            n_recv: 0,
            n_ana: 0,
            n_alarms: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &SessionMeta {
        &self.meta
    }

    pub fn frames_written(&self) -> usize {
        self.n_frames
    }

    fn err(&self, what: &str) -> impl Fn(hdf5::Error) -> RecordError + '_ {
        let what = what.to_string();
        move |source| RecordError { path: self.path.clone(), what: what.clone(), source }
    }

    /// Whether frame `index` is one this file stores.
    pub fn wants_frame(&self, index: u64) -> bool {
        self.meta.frames_every > 0 && index.is_multiple_of(self.meta.frames_every as u64)
    }

    pub fn frame(&mut self, index: u64, px: &Pixels) -> Result<(), RecordError> {
        let (Some(ds), Some(col)) = (&self.frames, &self.frame_index) else { return Ok(()) };
        let (h, w, n) = (self.meta.height, self.meta.width, self.n_frames);
        ds.resize((n + 1, h, w)).map_err(self.err("frames"))?;
        let sel = s![n..n + 1, .., ..];
        let shape = (1, h, w);
        let written = match px {
            Pixels::U8(v) => ArrayView3::from_shape(shape, v).map(|a| ds.write_slice(a, sel)),
            Pixels::U16(v) => ArrayView3::from_shape(shape, v).map(|a| ds.write_slice(a, sel)),
            Pixels::U32(v) => ArrayView3::from_shape(shape, v).map(|a| ds.write_slice(a, sel)),
            Pixels::F32(v) => ArrayView3::from_shape(shape, v).map(|a| ds.write_slice(a, sel)),
        };
        match written {
            Ok(r) => r.map_err(self.err("frames"))?,
            Err(e) => {
                return Err(RecordError {
                    path: self.path.clone(),
                    what: format!("frame {index}: {e}"),
                    source: hdf5::Error::from("wrong frame size"),
                });
            }
        }
        col.push(n, index).map_err(self.err("frame_index"))?;
        self.n_frames += 1;
        Ok(())
    }

    pub fn received(&mut self, r: &ReceivedRow) -> Result<(), RecordError> {
        let d = &r.dose;
        if let Some(a) = d.pixel_size_a.value.filter(|a| a.is_finite() && *a > 0.0) {
            self.pixel_size_a = Some(a);
        }
        let sources = source_code(d.beam_current_pa.source)
            | (source_code(d.dwell_time_us.source) << 2)
            | (source_code(d.pixel_size_a.source) << 4)
            | (u8::from(d.per_frame_from_config) << 6)
            | (u8::from(d.upper_estimate) << 7);
        let n = self.n_recv;
        for (name, c) in &self.recv {
            match *name {
                "index" => c.push(n, r.index),
                "received_unix_ns" => c.push(n, r.received_unix_ns),
                "timestamp_ns" => c.push(n, r.timestamp_ns.map_or(-1i64, |t| t.min(i64::MAX as u64) as i64)),
                "dose_e_per_a2" => c.push(n, nan(d.per_frame_e_per_a2)),
                "cumulative_e_per_a2" => c.push(n, nan(d.cumulative_e_per_a2)),
                "beam_current_pa" => c.push(n, nan(d.beam_current_pa.value)),
                "dwell_time_us" => c.push(n, nan(d.dwell_time_us.value)),
                "pixel_size_a" => c.push(n, nan(d.pixel_size_a.value)),
                _ => c.push(n, sources),
            }
            .map_err(self.err("received"))?;
        }
        self.n_recv += 1;
        Ok(())
    }

    pub fn analysis(
        &mut self,
        index: u64,
        map: &SimilarityMap,
        summary: &Summary,
        shift: Option<Shift>,
        analysis_ms: f64,
        cumulative: Option<f64>,
    ) -> Result<(), RecordError> {
        let (r, c, n) = (self.meta.grid_rows, self.meta.grid_cols, self.n_ana);
        if map.grid.rows != r || map.grid.cols != c {
            return Err(RecordError {
                path: self.path.clone(),
                what: format!(
                    "frame {index}: grid {}×{} differs from the file's {r}×{c}",
                    map.grid.rows, map.grid.cols
                ),
                source: hdf5::Error::from("grid mismatch"),
            });
        }
        let status: Vec<u8> = map.status.iter().map(|&s| s.code()).collect();
        let sel = s![n..n + 1, .., ..];
        for ds in &self.ana_grids {
            ds.resize((n + 1, r, c)).map_err(self.err("analysis grids"))?;
        }
        let view = |v: &[f32]| ArrayView3::from_shape((1, r, c), v).map(|a| a.to_owned());
        if let (Ok(sim), Ok(dis), Ok(st)) =
            (view(&map.similarity), view(&map.dissimilarity), ArrayView3::from_shape((1, r, c), &status[..]))
        {
            self.ana_grids[0].write_slice(&sim, sel).map_err(self.err("similarity"))?;
            self.ana_grids[1].write_slice(&dis, sel).map_err(self.err("dissimilarity"))?;
            self.ana_grids[2].write_slice(st, sel).map_err(self.err("status"))?;
        }
        for (name, col) in &self.ana {
            match *name {
                "index" => col.push(n, index),
                "mean" => col.push(n, nan(summary.mean_dissimilarity)),
                "max" => col.push(n, nan(summary.max_dissimilarity)),
                "fraction_above" => col.push(n, nan(summary.fraction_above_threshold)),
                "damaged_area" => col.push(n, nan(summary.damaged_area_fraction)),
                "shift_dx_px" => col.push(n, nan(shift.map(|s| s.dx_px))),
                "shift_dy_px" => col.push(n, nan(shift.map(|s| s.dy_px))),
                "shift_peak" => col.push(n, nan(shift.map(|s| s.peak))),
                "analysis_ms" => col.push(n, analysis_ms),
                _ => col.push(n, nan(cumulative)),
            }
            .map_err(self.err("analysis"))?;
        }
        self.n_ana += 1;
        Ok(())
    }

    pub fn alarm(&mut self, json: &str) -> Result<(), RecordError> {
        let mut end = json.len().min(ALARM_BYTES);
        while !json.is_char_boundary(end) {
            end -= 1;
        }
        let text: AlarmText = json[..end].parse().map_err(|e| RecordError {
            path: self.path.clone(),
            what: format!("alarm text: {e}"),
            source: hdf5::Error::from("string"),
        })?;
        let i = self.n_alarms;
        self.alarms.resize(i + 1).map_err(self.err("alarms"))?;
        self.alarms.write_slice(&[text], s![i..i + 1]).map_err(self.err("alarms"))?;
        self.n_alarms += 1;
        Ok(())
    }

    /// Makes everything written so far durable and visible to SWMR readers.
    /// Appends a 4D-STEM scan to `/fourd` (a file made without the group ignores it).
    pub fn scan(&mut self, scan: &crate::decode::ScanFrame, dose: &FrameDose) -> Result<(), RecordError> {
        let path = self.path.clone();
        match self.fourd.as_mut() {
            Some(g) => g.push(scan, dose).map_err(|source| RecordError { path, what: "fourd".into(), source }),
            None => Ok(()),
        }
    }

    pub fn flush(&self) -> Result<(), RecordError> {
        self.file.flush().map_err(self.err("flush"))
    }

    /// Closes a file that recording stopped on before its series ended, saying why in the file.
    pub fn finish_stopped(self, why: &str) -> Result<PathBuf, RecordError> {
        self.close(None, Some(why))
    }

    /// Flushes, closes, and marks the file complete with the series summary (outside SWMR).
    pub fn finish(self, summary_json: Option<&str>) -> Result<PathBuf, RecordError> {
        self.close(summary_json, None)
    }

    fn close(self, summary_json: Option<&str>, stopped_early: Option<&str>) -> Result<PathBuf, RecordError> {
        self.flush()?;
        let path = self.path.clone();
        let (pixel_size_a, patch_px) = (self.pixel_size_a, self.meta.patch_px as f64);
        drop(self);
        let err = |what: &'static str| {
            let path = path.clone();
            move |source| RecordError { path, what: what.into(), source }
        };
        let f = File::open_rw(&path).map_err(err("reopen to finish"))?;
        calibrate_dims(&f, "frames", 1.0, pixel_size_a).map_err(err("EMD axes"))?;
        calibrate_dims(&f, "dissimilarity", patch_px, pixel_size_a).map_err(err("EMD axes"))?;
        u64_attr(&f, "complete", 1).map_err(err("complete flag"))?;
        if let Some(s) = summary_json {
            string_attr(&f, "summary", s).map_err(err("summary"))?;
        }
        if let Some(why) = stopped_early {
            string_attr(&f, "stopped_early", why).map_err(err("stopped_early"))?;
        }
        Ok(path)
    }
}

// ---- Reading ----

/// Opens a session for reading; a file whose writer died mid-series is opened in SWMR-read mode
/// (HDF5 1.10 otherwise refuses it as "still open for writing").
pub fn open_file(path: &Path) -> Result<File, ReadError> {
    match File::open(path) {
        Ok(f) => Ok(f),
        Err(first) => File::open_as(path, hdf5::file::OpenMode::ReadSWMR)
            .map_err(|_| ReadError::new(path, None, format!("not a readable HDF5 file: {first}"))),
    }
}

/// Whether `path` is a beamwatch session file.
pub fn is_session(path: &Path) -> bool {
    open_file(path)
        .ok()
        .and_then(|f| read_string_attr(&f, "beamwatch_format"))
        .is_some_and(|v| v.starts_with("beamwatch-session"))
}

fn read_string_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    loc.attr(name).ok()?.read_scalar::<VarLenUnicode>().ok().map(|v| v.as_str().to_string())
}

fn read_u64_attr(loc: &hdf5::Location, name: &str) -> Option<u64> {
    loc.attr(name).ok()?.read_scalar::<u64>().ok()
}

/// One analysed frame as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAnalysis {
    pub index: u64,
    pub dissimilarity: Vec<f32>,
    pub similarity: Vec<f32>,
    pub status: Vec<u8>,
    pub mean: f64,
    pub cumulative_e_per_a2: f64,
    pub shift: Option<Shift>,
}

/// A session file read back: frames for replay, and the results for reports and tests.
pub struct SessionReader {
    file: File,
    info: SourceInfo,
    frames: Option<Dataset>,
    frame_index: Vec<u64>,
    /// (frame index, per-frame dose, cumulative dose) of every received frame.
    dose: Vec<(u64, f64, f64)>,
    /// The dose inputs (beam current, dwell time, pixel size) each received frame was computed
    /// from, with their sources, in the order of `dose`.
    inputs: Vec<[Input; 3]>,
    mask_gaps: bool,
}

fn read_col<T: H5Type + Copy + Default>(file: &File, path: &Path, name: &str) -> Result<Vec<T>, ReadError> {
    let ds = file.dataset(name).map_err(|e| ReadError::new(path, Some(name), e.to_string()))?;
    // The column's length is a claim: believed as far as its storage holds it, read in chunks.
    extent::read_column::<T>(&ds).map_err(|e| ReadError::new(path, Some(name), e))
}

/// The recorded dose inputs of `n` received rows; rows a file lacks (or cannot read) are missing.
fn recorded_inputs(file: &File, path: &Path, n: usize) -> Vec<[Input; 3]> {
    let col = |name: &str| read_col::<f64>(file, path, name).unwrap_or_default();
    let (current, dwell, pixel) =
        (col("received/beam_current_pa"), col("received/dwell_time_us"), col("received/pixel_size_a"));
    let sources: Vec<u8> = read_col(file, path, "received/dose_sources").unwrap_or_default();
    let decode = |code: u8| match code & 3 {
        1 => Source::FrameHeader,
        2 => Source::SeriesHeader,
        3 => Source::Config,
        _ => Source::Missing,
    };
    (0..n)
        .map(|k| {
            let code = sources.get(k).copied().unwrap_or(0);
            let input = |values: &[f64], shift: u8| {
                let value = values.get(k).copied().filter(|v| v.is_finite() && *v > 0.0);
                Input { value, source: if value.is_some() { decode(code >> shift) } else { Source::Missing } }
            };
            [input(&current, 0), input(&dwell, 2), input(&pixel, 4)]
        })
        .collect()
}

impl SessionReader {
    pub fn open(path: &Path, mask_gaps: bool) -> Result<Self, ReadError> {
        let file = open_file(path)?;
        let fmt = read_string_attr(&file, "beamwatch_format").unwrap_or_default();
        if !fmt.starts_with("beamwatch-session") {
            return Err(ReadError::new(path, None, "not a beamwatch session file (no beamwatch_format attribute)"));
        }
        let attr = |n: &str| {
            read_u64_attr(&file, n).ok_or_else(|| ReadError::new(path, Some(&format!("/@{n}")), "attribute missing"))
        };
        let (width, height) = (attr("width")? as usize, attr("height")? as usize);
        let dtype = match read_string_attr(&file, "dtype").as_deref() {
            Some("u8") => PixelType::U8,
            Some("u16") => PixelType::U16,
            Some("u32") => PixelType::U32,
            Some("f32") => PixelType::F32,
            other => return Err(ReadError::new(path, Some("/@dtype"), format!("unsupported pixel type {other:?}"))),
        };
        let frames = file.dataset("frames").ok();
        let frame_index: Vec<u64> = if frames.is_some() { read_col(&file, path, "frame_index")? } else { Vec::new() };
        // Under SWMR a crash can leave the frame data one row ahead of its index column.
        let n = frames.as_ref().map_or(0, |d| d.shape().first().copied().unwrap_or(0)).min(frame_index.len());
        let idx: Vec<u64> = read_col(&file, path, "received/index")?;
        let per: Vec<f64> = read_col(&file, path, "received/dose_e_per_a2")?;
        let cum: Vec<f64> = read_col(&file, path, "received/cumulative_e_per_a2")?;
        let dose: Vec<(u64, f64, f64)> = idx.iter().zip(per.iter().zip(&cum)).map(|(&i, (&p, &c))| (i, p, c)).collect();
        let inputs = recorded_inputs(&file, path, dose.len());
        let mut notes = Vec::new();
        if read_u64_attr(&file, "complete") != Some(1) {
            notes.push(
                "the recording did not end cleanly (no end record): it holds what was flushed before it stopped".into(),
            );
        }
        if let Some(why) = read_string_attr(&file, "stopped_early") {
            notes.push(format!("recording stopped before the series ended: {why}"));
        }
        let every = read_u64_attr(&file, "frames_every").unwrap_or(0);
        if every > 1 {
            notes.push(format!("every {every}th frame was recorded; doses include the frames in between"));
        }
        if frames.is_none() {
            notes.push("this session holds results only (frames were not recorded)".into());
        }
        let info = SourceInfo {
            path: path.to_owned(),
            layout: Layout::BeamwatchSession,
            dataset: "/frames".into(),
            series: read_string_attr(&file, "series").unwrap_or_default(),
            frames: n,
            width,
            height,
            dtype,
            dose: DoseHeader::default(),
            notes,
            scan_shape: None,
        };
        Ok(Self { file, info, frames, frame_index: frame_index[..n].to_vec(), dose, inputs, mask_gaps })
    }

    /// Recorded (dose per frame, cumulative dose) of frame number `index`.
    pub fn dose_of(&self, index: u64) -> Option<(f64, f64)> {
        self.dose
            .iter()
            .find(|(i, ..)| *i == index)
            .map(|&(_, p, c)| (p, c))
            .filter(|(p, c)| p.is_finite() && c.is_finite())
    }

    /// The dose inputs frame number `index` was computed from (beam current, dwell time, pixel
    /// size), with where each came from.
    pub fn inputs_of(&self, index: u64) -> Option<[Input; 3]> {
        let k = self.dose.iter().position(|(i, ..)| *i == index)?;
        self.inputs.get(k).copied()
    }

    /// Every analysed frame stored in the file.
    pub fn analyses(&self) -> Result<Vec<StoredAnalysis>, ReadError> {
        let path = &self.info.path;
        let idx: Vec<u64> = read_col(&self.file, path, "analysis/index")?;
        let mean: Vec<f64> = read_col(&self.file, path, "analysis/mean")?;
        let cum: Vec<f64> = read_col(&self.file, path, "analysis/cumulative_e_per_a2")?;
        let dx: Vec<f64> = read_col(&self.file, path, "analysis/shift_dx_px")?;
        let dy: Vec<f64> = read_col(&self.file, path, "analysis/shift_dy_px")?;
        let grid = |name: &str| -> Result<Array3<f32>, ReadError> {
            let ds = self.file.dataset(name).map_err(|e| ReadError::new(path, Some(name), e.to_string()))?;
            extent::verified_elements(&ds, 4).map_err(|e| ReadError::new(path, Some(name), e))?;
            ds.read::<f32, ndarray::Ix3>().map_err(|e| ReadError::new(path, Some(name), e.to_string()))
        };
        let sim = grid("analysis/similarity")?;
        let dis = grid("analysis/dissimilarity")?;
        let st = self
            .file
            .dataset("analysis/status")
            .map_err(|e| e.to_string())
            .and_then(|d| extent::verified_elements(&d, 1).map(|_| d))
            .and_then(|d| d.read::<u8, ndarray::Ix3>().map_err(|e| e.to_string()))
            .map_err(|e| ReadError::new(path, Some("analysis/status"), e))?;
        let n = idx.len().min(sim.shape()[0]).min(dis.shape()[0]).min(st.shape()[0]).min(mean.len()).min(cum.len());
        Ok((0..n)
            .map(|k| StoredAnalysis {
                index: idx[k],
                similarity: sim.slice(s![k, .., ..]).iter().copied().collect(),
                dissimilarity: dis.slice(s![k, .., ..]).iter().copied().collect(),
                status: st.slice(s![k, .., ..]).iter().copied().collect(),
                mean: mean[k],
                cumulative_e_per_a2: cum[k],
                shift: (dx[k].is_finite() && dy[k].is_finite()).then_some(Shift {
                    dx_px: dx[k],
                    dy_px: dy[k],
                    peak: f64::NAN,
                }),
            })
            .collect())
    }

    /// Every stored alarm JSON (version 2: one string per alarm; version 1: NUL-padded byte rows).
    pub fn alarms(&self) -> Result<Vec<String>, ReadError> {
        let path = &self.info.path;
        let bad = |e: hdf5::Error| ReadError::new(path, Some("alarms"), e.to_string());
        let ds = self.file.dataset("alarms").map_err(bad)?;
        // One byte per element at least, whatever the row type: bounds the rows by the stored bytes.
        extent::verified_elements(&ds, 1).map_err(|e| ReadError::new(path, Some("alarms"), e))?;
        if ds.ndim() == 1 {
            let rows = ds.read_raw::<AlarmText>().map_err(bad)?;
            return Ok(rows.iter().map(|t| t.as_str().to_string()).collect());
        }
        let rows: ndarray::Array2<u8> = ds.read_2d().map_err(bad)?;
        Ok(rows
            .outer_iter()
            .map(|r| {
                let b: Vec<u8> = r.iter().copied().take_while(|&b| b != 0).collect();
                String::from_utf8_lossy(&b).into_owned()
            })
            .collect())
    }

    /// The series summary written at a clean end.
    pub fn summary_json(&self) -> Option<String> {
        read_string_attr(&self.file, "summary")
    }

    pub fn provenance_json(&self) -> Option<String> {
        read_string_attr(&self.file, "provenance")
    }
}

impl FrameSource for SessionReader {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let path = self.info.path.clone();
        let bad = |e: String| ReadError::new(&path, Some("/frames"), e);
        let ds = self.frames.as_ref().ok_or_else(|| bad("no frames recorded in this session".into()))?;
        if i >= self.info.frames {
            return Err(bad(format!("frame {i} of {}", self.info.frames)));
        }
        let (w, h) = (self.info.width, self.info.height);
        let sel = s![i, .., ..];
        let frame = match self.info.dtype {
            PixelType::U8 => ds.read_slice_2d::<u8, _>(sel).map_err(|e| bad(e.to_string())).and_then(|a| {
                Frame::from_ints(w, h, &a.iter().copied().collect::<Vec<_>>(), self.mask_gaps)
                    .map_err(|e| bad(e.to_string()))
            }),
            PixelType::U16 => ds.read_slice_2d::<u16, _>(sel).map_err(|e| bad(e.to_string())).and_then(|a| {
                Frame::from_ints(w, h, &a.iter().copied().collect::<Vec<_>>(), self.mask_gaps)
                    .map_err(|e| bad(e.to_string()))
            }),
            PixelType::U32 => ds.read_slice_2d::<u32, _>(sel).map_err(|e| bad(e.to_string())).and_then(|a| {
                Frame::from_ints(w, h, &a.iter().copied().collect::<Vec<_>>(), self.mask_gaps)
                    .map_err(|e| bad(e.to_string()))
            }),
            PixelType::F32 => ds
                .read_slice_2d::<f32, _>(sel)
                .map_err(|e| bad(e.to_string()))
                .and_then(|a| Frame::from_f32(w, h, a.iter().copied().collect()).map_err(|e| bad(e.to_string()))),
        }?;
        Ok(SourceFrame { index: self.frame_index[i], frame, dose: DoseHeader::default(), timestamp_ns: None })
    }

    fn recorded_dose(&self, i: usize) -> Option<(f64, f64)> {
        self.frame_index.get(i).and_then(|&idx| self.dose_of(idx))
    }

    fn recorded_inputs(&self, i: usize) -> Option<[Input; 3]> {
        self.frame_index.get(i).and_then(|&idx| self.inputs_of(idx))
    }
}
