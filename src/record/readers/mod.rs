//! Frame sources for replay. [`open`] detects the layout of a file or folder and returns a
//! [`FrameSource`] that reads it one frame at a time.
//!
//! - HDF5 files, in detection order: `berkeley` (Berkeley EMD 0.2), `velox` (Thermo Fisher
//!   Velox EMD), `nexus` (DECTRIS NeXus master + data files, read by direct chunk reads and our
//!   own bitshuffle-LZ4 decoder), `emd1` (EMD 1.0 / py4DSTEM). With `OpenOptions::dataset` set,
//!   `dataset` reads that dataset of any HDF5 file instead.
//! - Image files: `images` (a TIFF stack, PNG, `.npy`, or a folder of them).
//! - Microscope files, by [`crate::microscope::detect`]: `dm_tia` (Gatan DM3/DM4 by their
//!   header — big-endian version 3 or 4, then the file size and a byte-order flag 0 or 1; TIA
//!   `.ser` by ByteOrder 0x4949 and SeriesID 0x0197; TIA `.emi` by its extension).
//!
//! Every failure is a one-line [`ReadError`] naming the file, the dataset and the problem.
//! beamwatch's own session files are the session reader's: they are refused here.

mod attrs;
mod berkeley;
mod chunks;
mod dataset;
mod dm_tia;
mod emd1;
mod geometry;
mod h5frames;
mod images;
mod nexus;
mod velox;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::decode::DoseHeader;

use super::{FrameSource, Layout, OpenOptions, ReadError, SourceFrame, SourceInfo};
use h5frames::H5Frames;

/// The HDF5 file signature (at offset 0, or after a user block of 512 · 2ⁿ bytes).
const HDF5_MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Opens `path` with the reader its layout needs.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| ReadError::new(path, None, format!("cannot open: {e}")))?;
    if meta.is_dir() {
        return images::open_folder(path, opts);
    }
    if is_hdf5(path, meta.len())? {
        return open_hdf5(path, opts);
    }
    if images::is_image_file(path)? {
        return images::open_file(path, opts);
    }
    let vendor =
        crate::microscope::detect(path).map_err(|e| ReadError::new(path, None, format!("cannot read: {e}")))?;
    if let Some(format) = vendor {
        return dm_tia::open(path, format, opts);
    }
    Err(ReadError::new(
        path,
        None,
        "not an HDF5 file, TIFF, PNG or .npy image, Gatan DM3/DM4 or TIA .emi/.ser file, nor a folder of images",
    ))
}

/// Looks for the HDF5 signature where the format allows it.
pub(crate) fn is_hdf5(path: &Path, len: u64) -> Result<bool, ReadError> {
    let mut file = std::fs::File::open(path).map_err(|e| ReadError::new(path, None, format!("cannot open: {e}")))?;
    let mut offset = 0u64;
    while offset + 8 <= len {
        let mut head = [0u8; 8];
        let read = file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut head));
        if read.is_ok() && &head == HDF5_MAGIC {
            return Ok(true);
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Ok(false)
}

fn open_hdf5(path: &Path, opts: &OpenOptions) -> Result<Box<dyn FrameSource>, ReadError> {
    let ds = opts.dataset.as_deref();
    let file = hdf5::File::open(path)
        .map_err(|e| ReadError::new(path, ds, format!("cannot open as HDF5: {}", h5_message(&e))))?;
    if let Some(format) = attrs::attr(&file, "beamwatch_format").map(|v| v.text())
        && format.starts_with("beamwatch-session")
    {
        return Err(ReadError::new(path, None, "beamwatch session file: use the session reader"));
    }
    if let Some(name) = ds {
        return dataset::open(path, file, name, opts);
    }
    if let Some(source) = berkeley::detect(path, &file, opts)? {
        return Ok(source);
    }
    if let Some(source) = velox::detect(path, &file, opts)? {
        return Ok(source);
    }
    if let Some(source) = nexus::detect(path, &file, opts)? {
        return Ok(source);
    }
    if let Some(source) = emd1::detect(path, &file, opts)? {
        return Ok(source);
    }
    Err(ReadError::new(
        path,
        None,
        "no known layout: looked for Berkeley EMD 0.2 (root version_major 0 and a group with emd_group_type 1), \
         Velox EMD (/Data/Image/<uuid>/Data), DECTRIS NeXus (/entry/data/data_NNNNNN links or /entry/data/data), \
         EMD 1.0 (root emd_group_type 'file' and an 'array' group with 2-D or higher data); \
         name the dataset to read with --dataset",
    ))
}

/// An HDF5 error as one line (the library's stack can span several).
fn h5_message(e: &hdf5::Error) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The name a file gives its series: its stem.
fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// The note for a dose input a file does not hold: where the user gives it instead.
pub fn missing_dose_note(what: &str, key: &str) -> String {
    format!("{what} not in file: give it with --{} or [dose] {key}", key.replace('_', "-"))
}

/// One note per dose input the file does not hold, saying where the user gives it instead.
fn note_missing_dose(dose: &DoseHeader, notes: &mut Vec<String>) {
    let missing = [
        (dose.beam_current_pa.is_none(), "beam current", "beam_current_pa"),
        (dose.dwell_time_us.is_none(), "dwell time", "dwell_time_us"),
        (dose.pixel_size_a.is_none(), "pixel size", "pixel_size_a"),
    ];
    for (_, what, key) in missing.into_iter().filter(|m| m.0) {
        notes.push(missing_dose_note(what, key));
    }
}

/// Series facts of a plain dataset source.
struct Described {
    layout: Layout,
    dataset: String,
    series: String,
    dose: DoseHeader,
    notes: Vec<String>,
}

fn source_info(path: &Path, frames: &H5Frames, d: Described) -> SourceInfo {
    SourceInfo {
        path: path.to_owned(),
        layout: d.layout,
        dataset: d.dataset,
        series: d.series,
        frames: frames.geom.frames,
        width: frames.geom.width,
        height: frames.geom.height,
        dtype: frames.pixel.pixel_type(),
        dose: d.dose,
        notes: d.notes,
        scan_shape: frames.geom.scan_shape(),
    }
}

/// A dataset whose dose metadata (if any) is series-wide: Berkeley EMD, EMD 1.0, `--dataset`.
struct PlainSource {
    info: SourceInfo,
    frames: H5Frames,
    /// Held so the file stays open as long as the source.
    _file: hdf5::File,
}

impl PlainSource {
    fn boxed(path: &Path, file: hdf5::File, frames: H5Frames, d: Described) -> Box<dyn FrameSource> {
        Box::new(Self { info: source_info(path, &frames, d), frames, _file: file })
    }
}

impl FrameSource for PlainSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let frame = self.frames.read(i)?;
        Ok(SourceFrame { index: i as u64, frame, dose: DoseHeader::default(), timestamp_ns: None })
    }
}
