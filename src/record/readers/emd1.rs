//! EMD 1.0 (emdfile, py4DSTEM): root attribute `emd_group_type = 'file'`; array groups
//! (`emd_group_type = 'array'`) hold `data` plus 0-based `dim0 .. dimN` (with `name`, `units`).
//! Calibration sits in a `metadatabundle/calibration` group of the array or one of its ancestors,
//! as small datasets (py4DSTEM) or attributes: `R_pixel_size` with `R_pixel_units`.
//!
//! A 4-D datacube (Rx, Ry, Qx, Qy) becomes Rx·Ry frames of Qx × Qy (one diffraction pattern per
//! probe position); `R_pixel_size` is then the scan step, the pixel the dose is spread over.

use std::path::Path;

use crate::decode::DoseHeader;
use crate::record::{FrameSource, Layout, OpenOptions, ReadError};

use super::attrs;
use super::h5frames::H5Frames;
use super::{Described, PlainSource, file_stem, h5_message, note_missing_dose};

/// The EMD 1.0 source of `file`, if it is one.
pub(super) fn detect(
    path: &Path,
    file: &hdf5::File,
    opts: &OpenOptions,
) -> Result<Option<Box<dyn FrameSource>>, ReadError> {
    if attrs::attr(file, "emd_group_type").map(|v| v.text()).as_deref() != Some("file") {
        return Ok(None);
    }
    let arrays = attrs::find_groups(file, "/", &is_frame_array);
    let Some((group_path, group)) = arrays.first().cloned() else { return Ok(None) };
    let name = format!("{}/data", group_path.trim_end_matches('/'));
    let ds = group.dataset("data").map_err(|e| ReadError::new(path, Some(&name), h5_message(&e)))?;
    let (frames, mut notes) = H5Frames::standard(path, ds, &name, None, opts.mask_gaps)?;
    if arrays.len() > 1 {
        let all: Vec<&str> = arrays.iter().map(|(p, _)| p.as_str()).collect();
        notes.push(format!(
            "{} arrays with 2-D or higher data ({}); reading {group_path} (name another with --dataset <array>/data)",
            arrays.len(),
            all.join(", ")
        ));
    }
    let pixel = calibrated_pixel_a(file, &group_path, &mut notes)
        .or_else(|| dim_pixel_a(&group, frames.geom.x_axis, &mut notes));
    let dose = DoseHeader { pixel_size_a: pixel, ..DoseHeader::default() };
    note_missing_dose(&dose, &mut notes);
    let described = Described { layout: Layout::Emd1, dataset: name, series: file_stem(path), dose, notes };
    Ok(Some(PlainSource::boxed(path, file.clone(), frames, described)))
}

fn is_frame_array(g: &hdf5::Group) -> bool {
    attrs::attr(g, "emd_group_type").map(|v| v.text()).as_deref() == Some("array")
        && g.link_exists("data")
        && g.dataset("data").is_ok_and(|d| d.ndim() >= 2)
}

/// `R_pixel_size` in `R_pixel_units` from the nearest `metadatabundle/calibration`, as Å.
fn calibrated_pixel_a(file: &hdf5::File, array_path: &str, notes: &mut Vec<String>) -> Option<f64> {
    let mut dir = array_path.trim_end_matches('/').to_owned();
    loop {
        let candidate = format!("{dir}/metadatabundle/calibration");
        if let Ok(cal) = file.group(&candidate) {
            let size = attrs::attr_or_dataset(&cal, "R_pixel_size").and_then(|v| v.number());
            let units = attrs::attr_or_dataset(&cal, "R_pixel_units").map(|v| v.text()).unwrap_or_default();
            if let Some(size) = size {
                let a = attrs::length_to_angstrom(size, &units);
                match a {
                    Some(_) => notes.push(format!("pixel size from {candidate}/R_pixel_size ({size} {units})")),
                    None => notes.push(format!("{candidate}/R_pixel_size is in '{units}', not a length")),
                }
                return a;
            }
        }
        let cut = dir.rfind('/')?;
        dir.truncate(cut);
    }
}

/// The step of `dim{axis}` (0-based) in its units, as Å, when there is no calibration.
fn dim_pixel_a(group: &hdf5::Group, axis: usize, notes: &mut Vec<String>) -> Option<f64> {
    let name = format!("dim{axis}");
    let ds = group.dataset(&name).ok()?;
    if ds.ndim() != 1 || ds.size() < 2 {
        return None;
    }
    let v = ds.as_reader().read_slice_1d::<f64, _>(0..2).ok()?;
    let (Some(first), Some(second)) = (v.get(0), v.get(1)) else { return None };
    let units = attrs::attr(&ds, "units").map(|u| u.text()).unwrap_or_default();
    let a = attrs::length_to_angstrom((second - first).abs(), &units);
    if a.is_some() {
        notes.push(format!("pixel size from {name} ({units})"));
    }
    a
}
