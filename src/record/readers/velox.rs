//! Thermo Fisher Velox `.emd`: `/Data/Image/<32-hex uuid>/Data` of shape (height, width, frames)
//! — FRAMES LAST — with `/Data/Image/<uuid>/Metadata`, a uint8 array (N, frames) holding one
//! NUL-padded JSON document per column (one per frame), its values strings.
//!
//! Dose inputs, per frame from that frame's column: `Optics.LastMeasuredScreenCurrent` (A),
//! `Scan.DwellTime` (s), `BinaryResult.PixelSize.width` (in `BinaryResult.PixelUnitX`, m).

use std::path::Path;

use hdf5::{Hyperslab, SliceOrIndex};
use serde_json::Value as Json;

use crate::decode::DoseHeader;
use crate::record::{FrameSource, Layout, OpenOptions, ReadError, SourceFrame, SourceInfo};

use super::attrs;
use super::h5frames::{Geometry, H5Frames};
use super::{Described, h5_message, note_missing_dose, source_info};

/// Largest metadata column read (the real ones are 60 000 bytes).
const MAX_METADATA_BYTES: usize = 16 << 20;

/// The Velox source of `file`, if it is one.
pub(super) fn detect(
    path: &Path,
    file: &hdf5::File,
    opts: &OpenOptions,
) -> Result<Option<Box<dyn FrameSource>>, ReadError> {
    let Ok(images) = file.group("Data/Image") else { return Ok(None) };
    let mut uuids: Vec<String> = images
        .member_names()
        .map_err(|e| ReadError::new(path, Some("/Data/Image"), h5_message(&e)))?
        .into_iter()
        .filter(|u| images.group(u).is_ok_and(|g| g.link_exists("Data")))
        .collect();
    uuids.sort();
    let Some(uuid) = uuids.first().cloned() else { return Ok(None) };
    let group = images.group(&uuid).map_err(|e| ReadError::new(path, Some("/Data/Image"), h5_message(&e)))?;
    let name = format!("/Data/Image/{uuid}/Data");
    let ds = group.dataset("Data").map_err(|e| ReadError::new(path, Some(&name), h5_message(&e)))?;
    let shape = ds.shape();
    let geom = match shape.len() {
        2 => Geometry::with_axes(&shape, vec![], vec![]),
        3 => Geometry::with_axes(&shape, vec![2], vec![]),
        r => Err(format!("Velox image data is {r}-D (shape {shape:?}); expected (height, width, frames)")),
    }
    .map_err(|p| ReadError::new(path, Some(&name), p))?;
    let frames = H5Frames::new(path, ds, &name, geom, opts.mask_gaps)?;

    let mut notes = Vec::new();
    let metadata = Metadata::open(&group, frames.geom.frames, &mut notes);
    let first = metadata.as_ref().and_then(|m| m.json(0).map_err(|p| notes.push(p)).ok());
    let dose = first.as_ref().map(dose_of).unwrap_or_default();
    if let Some(detector) = first.as_ref().and_then(|j| text_at(j, &["BinaryResult", "Detector"])) {
        notes.push(format!("detector {detector}"));
    }
    if uuids.len() > 1 {
        notes.push(format!(
            "{} images in /Data/Image ({}); reading {uuid} (name another with --dataset /Data/Image/<uuid>/Data)",
            uuids.len(),
            uuids.join(", ")
        ));
    }
    note_missing_dose(&dose, &mut notes);
    let described = Described { layout: Layout::Velox, dataset: name, series: uuid, dose, notes };
    let info = source_info(path, &frames, described);
    Ok(Some(Box::new(VeloxSource { info, frames, metadata, _file: file.clone() })))
}

struct VeloxSource {
    info: SourceInfo,
    frames: H5Frames,
    metadata: Option<Metadata>,
    _file: hdf5::File,
}

impl FrameSource for VeloxSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let frame = self.frames.read(i)?;
        // A frame whose metadata column is unreadable still replays; the series values stand.
        let dose = self.metadata.as_ref().and_then(|m| m.json(i).ok()).map(|j| dose_of(&j)).unwrap_or_default();
        Ok(SourceFrame { index: i as u64, frame, dose, timestamp_ns: None })
    }
}

/// The per-frame JSON columns.
struct Metadata {
    ds: hdf5::Dataset,
    len: usize,
    columns: usize,
}

impl Metadata {
    /// The `Metadata` dataset next to `Data`, if it has the expected (bytes, columns) shape;
    /// otherwise `None` with a note.
    fn open(group: &hdf5::Group, frames: usize, notes: &mut Vec<String>) -> Option<Self> {
        let Ok(ds) = group.dataset("Metadata") else {
            notes.push("no Metadata dataset: no dose inputs read".into());
            return None;
        };
        let shape = ds.shape();
        let (len, columns) = match shape[..] {
            [len, columns] if len > 0 && columns > 0 && len <= MAX_METADATA_BYTES => (len, columns),
            _ => {
                notes.push(format!("Metadata has shape {shape:?}, not (bytes, frames): no dose inputs read"));
                return None;
            }
        };
        if columns < frames {
            notes.push(format!("Metadata has {columns} columns for {frames} frames: later frames use the last"));
        }
        Some(Self { ds, len, columns })
    }

    /// The JSON document of frame `i` (the last column for frames beyond the columns).
    fn json(&self, i: usize) -> Result<Json, String> {
        let column = i.min(self.columns - 1);
        let sel = Hyperslab::from(vec![
            SliceOrIndex::SliceCount { start: 0, step: 1, count: self.len, block: 1 },
            SliceOrIndex::Index(column),
        ]);
        let bytes = self
            .ds
            .as_reader()
            .read_slice_1d::<u8, _>(sel)
            .map_err(|e| format!("Metadata column {column} unreadable: {}", h5_message(&e)))?
            .into_raw_vec_and_offset()
            .0;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        serde_json::from_slice(&bytes[..end]).map_err(|e| format!("Metadata column {column} is not JSON: {e}"))
    }
}

/// The dose inputs of one frame's metadata.
fn dose_of(j: &Json) -> DoseHeader {
    let current = number_at(j, &["Optics", "LastMeasuredScreenCurrent"]).and_then(|a| attrs::positive(a * 1e12));
    let dwell = number_at(j, &["Scan", "DwellTime"]).and_then(|s| attrs::positive(s * 1e6));
    let unit = text_at(j, &["BinaryResult", "PixelUnitX"]).unwrap_or_else(|| "m".into());
    let pixel = number_at(j, &["BinaryResult", "PixelSize", "width"]).and_then(|w| attrs::length_to_angstrom(w, &unit));
    DoseHeader { beam_current_pa: current, dwell_time_us: dwell, pixel_size_a: pixel }
}

fn at<'a>(j: &'a Json, keys: &[&str]) -> Option<&'a Json> {
    keys.iter().try_fold(j, |node, k| node.get(k))
}

/// Velox writes numbers as strings; a number is accepted too.
fn number_at(j: &Json, keys: &[&str]) -> Option<f64> {
    match at(j, keys)? {
        Json::String(s) => s.trim().parse().ok(),
        Json::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn text_at(j: &Json, keys: &[&str]) -> Option<String> {
    match at(j, keys)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dose_from_string_values() {
        let j: Json = serde_json::from_str(
            r#"{"Optics":{"LastMeasuredScreenCurrent":"5e-11"},"Scan":{"DwellTime":"2e-06"},
                "BinaryResult":{"PixelSize":{"width":"2e-10"},"PixelUnitX":"m"}}"#,
        )
        .expect("json");
        let d = dose_of(&j);
        assert!((d.beam_current_pa.unwrap_or(0.0) - 50.0).abs() < 1e-9);
        assert!((d.dwell_time_us.unwrap_or(0.0) - 2.0).abs() < 1e-12);
        assert!((d.pixel_size_a.unwrap_or(0.0) - 2.0).abs() < 1e-12);
        let none = dose_of(&serde_json::from_str(r#"{"Optics":{"LastMeasuredScreenCurrent":"0"}}"#).expect("json"));
        assert_eq!(none, DoseHeader::default());
    }
}
