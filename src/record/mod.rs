//! HDF5 sessions: recording what the daemon sees, and reading recorded series back.
//!
//! - [`session`]: beamwatch's own session file layout (documented in `docs/session-format.md`).
//! - [`writer`]: the recorder — one SWMR file per series, flushed at least every second.
//! - [`readers`]: frames from files — beamwatch sessions, Berkeley EMD 0.2, Velox EMD, DECTRIS
//!   NeXus, EMD 1.0, any 3-D dataset, TIFF stacks and image folders — behind one [`FrameSource`].

pub mod readers;
pub mod recorder;
pub mod session;
mod space;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decode::DoseHeader;
use crate::frame::{Frame, PixelType};

/// The file layouts replay understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    BeamwatchSession,
    BerkeleyEmd,
    Velox,
    DectrisNexus,
    Emd1,
    /// A dataset named with `--dataset`.
    Dataset,
    TiffStack,
    ImageFolder,
}

/// What a file says about its series, and where each fact came from.
#[derive(Clone, Debug, Serialize)]
pub struct SourceInfo {
    pub path: PathBuf,
    pub layout: Layout,
    /// The dataset path inside the file (or a description for image files).
    pub dataset: String,
    /// A name for the series (file stem, Velox/NeXus ids, ...).
    pub series: String,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    pub dtype: PixelType,
    /// Series-level dose inputs found in the file (per-frame values, if any, come with frames).
    pub dose: DoseHeader,
    /// Plain-language notes for the output: which metadata was found, which was missing, how the
    /// frames were taken from the dataset.
    pub notes: Vec<String>,
}

/// One frame read from a file.
#[derive(Clone, Debug)]
pub struct SourceFrame {
    /// 0-based frame index in the series.
    pub index: u64,
    pub frame: Frame,
    /// Per-frame dose inputs found in the file (empty where the file has none).
    pub dose: DoseHeader,
    pub timestamp_ns: Option<u64>,
}

/// A file read frame by frame.
pub trait FrameSource: Send {
    fn info(&self) -> &SourceInfo;
    /// Frame `i` (0-based, `i < info().frames`).
    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError>;
    /// (dose per frame, cumulative dose) in e⁻/Å² as recorded by beamwatch for frame `i` — set only
    /// by beamwatch's own session files, which also count frames that were not stored.
    fn recorded_dose(&self, _i: usize) -> Option<(f64, f64)> {
        None
    }
}

/// A file that cannot be read: names the file, the dataset (when there is one) and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {problem}", path.display(), dataset.as_ref().map(|d| format!(":{d}")).unwrap_or_default())]
#[must_use]
pub struct ReadError {
    pub path: PathBuf,
    pub dataset: Option<String>,
    pub problem: String,
}

impl ReadError {
    pub fn new(path: &Path, dataset: Option<&str>, problem: impl Into<String>) -> Self {
        Self { path: path.to_owned(), dataset: dataset.map(str::to_owned), problem: problem.into() }
    }
}

/// How to open a file for replay.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Read this dataset instead of detecting the layout.
    pub dataset: Option<String>,
    /// With `dataset`: the axis that counts frames (default 0).
    pub frame_axis: Option<usize>,
    /// Integer pixels at the dtype maximum are gaps.
    pub mask_gaps: bool,
}

/// Runs raw HDF5 C calls under the library lock `hdf5` uses for every call it makes.
pub fn h5sync<T>(f: impl FnOnce() -> T) -> T {
    hdf5::sync::sync(f)
}

/// Opens any supported input for replay: beamwatch's own session files first, then the microscope
/// layouts, images and datasets of [`readers::open`].
pub fn open_source(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    if opts.dataset.is_none() && path.is_file() && session::is_session(path) {
        return Ok(Box::new(session::SessionReader::open(path, opts.mask_gaps)?));
    }
    readers::open(path, opts)
}
