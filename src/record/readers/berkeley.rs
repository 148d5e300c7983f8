//! Berkeley EMD 0.2 (openNCEM / ncempy, HyperSpy): root attribute `version_major = 0`; any group
//! with `emd_group_type = 1` is a data group holding `data` and `dim1 .. dimN` (dim1 describes
//! axis 0). A time series is a 3-D `data` whose first axis counts frames. Writers disagree on
//! types — `version_major` and `emd_group_type` are integers in some files and strings in others —
//! so both are accepted.
//!
//! Dose inputs: `microscope/` attribute `dwell time` (s), and the pixel size from the dim vector of
//! the column axis when its units are a length (`n_m`, `nm`, `Å`, `m`, ...).

use std::path::Path;

use crate::decode::DoseHeader;
use crate::record::{FrameSource, Layout, OpenOptions, ReadError};

use super::attrs::{self, Value};
use super::h5frames::H5Frames;
use super::{Described, PlainSource, file_stem, note_missing_dose};

/// The Berkeley EMD source of `file`, if it is one.
pub(super) fn detect(
    path: &Path,
    file: &hdf5::File,
    opts: &OpenOptions,
) -> Result<Option<Box<dyn FrameSource>>, ReadError> {
    if attrs::attr(file, "version_major").and_then(|v| v.number()) != Some(0.0) {
        return Ok(None);
    }
    let groups = attrs::find_groups(file, "/", &is_data_group);
    // Prefer a group whose data can hold frames; a 1-D spectrum group may come first by name.
    let Some((group_path, group)) =
        groups.iter().find(|(_, g)| g.dataset("data").is_ok_and(|d| d.ndim() >= 2)).or_else(|| groups.first()).cloned()
    else {
        return Ok(None);
    };
    let name = format!("{}/data", group_path.trim_end_matches('/'));
    let ds = group.dataset("data").map_err(|e| ReadError::new(path, Some(&name), super::h5_message(&e)))?;
    let (frames, mut notes) = H5Frames::standard(path, ds, &name, None, opts.mask_gaps)?;
    if groups.len() > 1 {
        let all: Vec<&str> = groups.iter().map(|(p, _)| p.as_str()).collect();
        notes.push(format!(
            "{} data groups ({}); reading {group_path} (name another with --dataset <group>/data)",
            groups.len(),
            all.join(", ")
        ));
    }
    let mut dose = DoseHeader { dwell_time_us: dwell_time_us(file), ..DoseHeader::default() };
    dose.pixel_size_a = pixel_size_a(&group, frames.geom.x_axis + 1, &mut notes);
    note_missing_dose(&dose, &mut notes);
    let described = Described { layout: Layout::BerkeleyEmd, dataset: name, series: file_stem(path), dose, notes };
    Ok(Some(PlainSource::boxed(path, file.clone(), frames, described)))
}

fn is_data_group(g: &hdf5::Group) -> bool {
    attrs::attr(g, "emd_group_type").and_then(|v| v.number()) == Some(1.0) && g.link_exists("data")
}

/// `microscope/` attribute `dwell time` in seconds → µs.
fn dwell_time_us(file: &hdf5::File) -> Option<f64> {
    let microscope = file.group("microscope").ok()?;
    attrs::attr(&microscope, "dwell time").and_then(|v| v.number()).and_then(|s| attrs::positive(s * 1e6))
}

/// The step of dim vector `dim{n}` (a full coordinate vector or `[start, step]`; either way the
/// first two values differ by one step) in its units, as Å.
fn pixel_size_a(group: &hdf5::Group, n: usize, notes: &mut Vec<String>) -> Option<f64> {
    let name = format!("dim{n}");
    let ds = group.dataset(&name).ok()?;
    if ds.ndim() != 1 || ds.size() < 2 {
        return None;
    }
    let v = ds.as_reader().read_slice_1d::<f64, _>(0..2).ok()?;
    let (Some(first), Some(second)) = (v.get(0), v.get(1)) else { return None };
    let units = attrs::attr(&ds, "units").map(|u: Value| u.text()).unwrap_or_default();
    let step = (second - first).abs();
    let size = attrs::length_to_angstrom(step, &units);
    if size.is_none() {
        notes.push(format!("{name} (the column axis) has units '{units}', not a length"));
    }
    size
}
