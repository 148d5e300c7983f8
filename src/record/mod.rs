//! HDF5 sessions: recording what the daemon sees, and reading recorded series back.
//!
//! - [`session`]: beamwatch's own session file layout (documented in `docs/session-format.md`).
//! - [`recorder`]: the recorder — one SWMR file per series, flushed at least every second.
//! - [`readers`]: frames from files — beamwatch sessions, Berkeley EMD 0.2, Velox EMD, DECTRIS
//!   NeXus, EMD 1.0, any 3-D dataset, TIFF stacks, image folders, Gatan DM3/DM4 and TIA
//!   `.emi`/`.ser` files — behind one [`FrameSource`].

pub mod extent;
pub mod fourd_group;
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
    /// A Gatan DigitalMicrograph DM3 or DM4 file.
    GatanDm,
    /// An FEI / Thermo Fisher TIA `.ser` file (named directly or through its `.emi`).
    TiaSer,
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
    /// A 4-D dataset (Rx, Ry, Qy, Qx): its two leading axes, the 4D-STEM scan shape (rows, cols)
    /// when its frames are read as diffraction patterns.
    #[serde(default)]
    pub scan_shape: Option<(usize, usize)>,
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
    /// The dose inputs (beam current, dwell time, pixel size, with their sources) beamwatch
    /// recorded for frame `i` — session files only.
    fn recorded_inputs(&self, _i: usize) -> Option<[crate::dose::Input; 3]> {
        None
    }
}

pub use crate::imagefile::ReadError;

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

/// A file-name stem for a series id: collision-free and bounded. Series ids are data (a detector or
/// a client chooses them), not file names: letters, digits, `-` and `_` are kept, every other byte
/// becomes `%XX` (so "a/b" and "a_b" stay apart), and an id whose stem would exceed
/// [`STEM_MAX_BYTES`] keeps its first bytes and gains `~` and a hash of the whole id.
pub fn file_stem(series: &str) -> String {
    use sha2::Digest;
    let piece = |b: u8| if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") };
    let stem: String = series.bytes().map(piece).collect();
    if stem.len() <= STEM_MAX_BYTES {
        return stem;
    }
    // Keep whole pieces (never half an escape), then `~` and 16 hex digits of the id's sha256.
    let mut head = String::with_capacity(STEM_MAX_BYTES);
    for p in series.bytes().map(piece) {
        if head.len() + p.len() > STEM_MAX_BYTES - 17 {
            break;
        }
        head.push_str(&p);
    }
    let hash = sha2::Sha256::digest(series.as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{head}~{hex}")
}

/// Longest stem [`file_stem`] returns: room for a prefix, a timestamp and an extension within the
/// 255 bytes most file systems allow.
pub const STEM_MAX_BYTES: usize = 96;

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

#[cfg(test)]
mod tests {
    use super::{STEM_MAX_BYTES, file_stem};

    #[test]
    fn file_stems_are_distinct_and_bounded() {
        assert_eq!(file_stem("1"), "1");
        assert_eq!(file_stem("scan-2_b"), "scan-2_b");
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_eq!(file_stem("a/b"), "a%2Fb");
        assert_ne!(file_stem("a%2Fb"), file_stem("a/b"));
        let long = "x".repeat(300);
        let other = format!("{}y", "x".repeat(299));
        let (a, b) = (file_stem(&long), file_stem(&other));
        assert!(a.len() <= STEM_MAX_BYTES && b.len() <= STEM_MAX_BYTES, "{a} {b}");
        assert_ne!(a, b);
        // A long id of escaped bytes is cut between escapes, never inside one.
        let slashes = file_stem(&"/".repeat(100));
        let head = slashes.split('~').next().unwrap_or_default();
        assert!(head.len().is_multiple_of(3) && head.chars().filter(|&c| c == '%').count() == head.len() / 3, "{slashes}");
    }
}
