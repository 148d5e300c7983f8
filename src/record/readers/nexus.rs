//! DECTRIS NeXus (NXmx) from the detector's file writer: a master file whose
//! `/entry/data/data_000001`, `data_000002`, ... are external links to
//! `<name>_data_00000N.h5:/entry/data/data`, each (N, Y, X) chunked one frame per chunk and
//! compressed with bitshuffle-LZ4 (HDF5 filter 32008) or LZ4 (32004). Newer writers put a 4-D
//! `/entry/data/data` [images, channels, y, x] in the master itself; channel 0 is read.
//!
//! No HDF5 filter plugin is installed (or needed): compressed chunks are fetched as stored with a
//! direct chunk read and decoded by our own decoder (see [`super::chunks`]).
//!
//! The links are resolved here, relative to the master file's directory (HDF5 itself would try
//! the current directory first), so errors can name the data file.

use std::ffi::{CStr, CString, c_char, c_uint};
use std::path::{Path, PathBuf};

use hdf5::{IndexType, IterationOrder, LinkType};
use hdf5_sys::h5l::{H5L_TYPE_EXTERNAL, H5L_info1_t, H5Lget_info1, H5Lget_val, H5Lunpack_elink_val};
use hdf5_sys::h5p::H5P_DEFAULT;

use crate::decode::DoseHeader;
use crate::record::{FrameSource, Layout, OpenOptions, ReadError, SourceFrame, SourceInfo, h5sync};

use super::chunks::last_h5_error;
use super::h5frames::{Geometry, H5Frames};
use super::{file_stem, h5_message, note_missing_dose};

/// Longest external-link value accepted (file name + object path).
const MAX_LINK_VALUE: usize = 1 << 16;

/// One data file (or the master's own dataset) and the frames it holds.
struct Part {
    /// The file holding the dataset (for notes).
    path: PathBuf,
    frames: H5Frames,
    /// Global index of its first frame.
    start: usize,
    /// Held so the data file stays open.
    _file: Option<hdf5::File>,
}

/// The DECTRIS NeXus source of `file`, if it is one.
pub(super) fn detect(
    path: &Path,
    file: &hdf5::File,
    opts: &OpenOptions,
) -> Result<Option<Box<dyn FrameSource>>, ReadError> {
    let Ok(group) = file.group("entry/data") else { return Ok(None) };
    let links = group
        .links(IndexType::Name, IterationOrder::Increasing)
        .map_err(|e| ReadError::new(path, Some("/entry/data"), h5_message(&e)))?;
    let mut numbered: Vec<(u64, String, LinkType)> = links
        .iter()
        .filter_map(|(n, info)| Some((n.strip_prefix("data_")?.parse().ok()?, n.clone(), info.link_type)))
        .collect();
    numbered.sort_by_key(|(k, _, _)| *k);
    let chosen: Vec<(String, LinkType)> = if numbered.is_empty() {
        links.into_iter().filter(|(n, _)| n == "data").map(|(n, i)| (n, i.link_type)).collect()
    } else {
        numbered.into_iter().map(|(_, n, t)| (n, t)).collect()
    };
    if chosen.is_empty() {
        return Ok(None);
    }
    let mut parts: Vec<Part> = Vec::with_capacity(chosen.len());
    let mut notes = Vec::new();
    let mut total = 0usize;
    for (link, kind) in &chosen {
        let part = open_part(path, &group, link, *kind, total, opts.mask_gaps, &mut notes)?;
        if let Some(first) = parts.first() {
            check_same_frames(first, &part)?;
        }
        total = total
            .checked_add(part.frames.geom.frames)
            .ok_or_else(|| ReadError::new(path, Some("/entry/data"), "frame count overflows"))?;
        parts.push(part);
    }
    let Some(first) = parts.first() else { return Ok(None) };
    let dataset = match &chosen[..] {
        [(one, _)] => format!("/entry/data/{one}"),
        [(a, _), .., (b, _)] => format!("/entry/data/{a}..{b}"),
        [] => String::new(),
    };
    if parts.len() > 1 || first.path != path {
        let files: Vec<String> = parts.iter().map(|p| file_name(&p.path)).collect();
        notes.push(format!("{total} frames from {} data files: {}", parts.len(), files.join(", ")));
    }
    notes.push("DECTRIS NeXus files hold no beam current, dwell time or scan pixel size".into());
    let dose = DoseHeader::default();
    note_missing_dose(&dose, &mut notes);
    let stem = file_stem(path);
    let series = stem.strip_suffix("_master").unwrap_or(&stem).to_owned();
    let info = SourceInfo {
        path: path.to_owned(),
        layout: Layout::DectrisNexus,
        dataset,
        series,
        frames: total,
        width: first.frames.geom.width,
        height: first.frames.geom.height,
        dtype: first.frames.pixel.pixel_type(),
        dose,
        notes,
        scan_shape: None,
    };
    Ok(Some(Box::new(NexusSource { info, parts, _master: file.clone() })))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// Opens the dataset behind link `link` of `/entry/data` and works out how to read it.
fn open_part(
    master: &Path,
    group: &hdf5::Group,
    link: &str,
    kind: LinkType,
    start: usize,
    mask_gaps: bool,
    notes: &mut Vec<String>,
) -> Result<Part, ReadError> {
    let link_path = format!("/entry/data/{link}");
    let (path, name, file, ds) = if kind == LinkType::External {
        let (target, object) = external_target(group, link).map_err(|p| ReadError::new(master, Some(&link_path), p))?;
        let data_path = resolve(master, &target);
        if !data_path.is_file() {
            return Err(ReadError::new(
                master,
                Some(&link_path),
                format!("links to {target}:{object}, but data file {} does not exist", data_path.display()),
            ));
        }
        let f = hdf5::File::open(&data_path).map_err(|e| {
            ReadError::new(
                &data_path,
                None,
                format!("cannot open data file (linked from {link_path}): {}", h5_message(&e)),
            )
        })?;
        let ds = f.dataset(&object).map_err(|e| ReadError::new(&data_path, Some(&object), h5_message(&e)))?;
        (data_path, object, Some(f), ds)
    } else {
        let ds = group.dataset(link).map_err(|e| ReadError::new(master, Some(&link_path), h5_message(&e)))?;
        (master.to_owned(), link_path, None, ds)
    };
    let shape = ds.shape();
    let geom = match shape.len() {
        2 => Geometry::with_axes(&shape, vec![], vec![]),
        3 => Geometry::with_axes(&shape, vec![0], vec![]),
        4 => {
            let note = format!("4-D data [images, channels, y, x] with {} channels: channel 0 is read", shape[1]);
            if !notes.contains(&note) {
                notes.push(note);
            }
            Geometry::with_axes(&shape, vec![0], vec![(1, 0)])
        }
        r => {
            Err(format!("DECTRIS data is {r}-D (shape {shape:?}); expected (images, y, x), (images, channels, y, x) or one (y, x) image"))
        }
    }
    .map_err(|p| ReadError::new(&path, Some(&name), p))?;
    let frames = H5Frames::new(&path, ds, &name, geom, mask_gaps)?;
    Ok(Part { path, frames, start, _file: file })
}

fn check_same_frames(first: &Part, part: &Part) -> Result<(), ReadError> {
    let (a, b) = (&first.frames, &part.frames);
    let size = |f: &H5Frames| (f.geom.width, f.geom.height, f.pixel);
    if size(a) != size(b) {
        return Err(ReadError::new(
            &part.path,
            Some(b.name()),
            format!(
                "frames of {}×{} {:?} differ from the first data file's {}×{} {:?}",
                b.geom.width, b.geom.height, b.pixel, a.geom.width, a.geom.height, a.pixel
            ),
        ));
    }
    Ok(())
}

/// The external link `link` of `group` as (file name, object path), without following it.
fn external_target(group: &hdf5::Group, link: &str) -> Result<(String, String), String> {
    let cname = CString::new(link).map_err(|_| "link name contains NUL".to_string())?;
    h5sync(|| {
        let mut info = H5L_info1_t::default();
        // SAFETY: `group` is open, `cname` is NUL-terminated and `info` is a valid out-pointer.
        if unsafe { H5Lget_info1(group.id(), cname.as_ptr(), &mut info, H5P_DEFAULT) } < 0 {
            return Err(format!("cannot read the link: {}", last_h5_error()));
        }
        if info.type_ != H5L_TYPE_EXTERNAL {
            return Err(format!("expected an external link, found {:?}", info.type_));
        }
        // SAFETY: for an external link the union holds the size of the link's value.
        let size = unsafe { *info.u.val_size() };
        if size == 0 || size > MAX_LINK_VALUE {
            return Err(format!("external link value of {size} bytes"));
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` holds `size` bytes, the size HDF5 reported for this link's value.
        if unsafe { H5Lget_val(group.id(), cname.as_ptr(), buf.as_mut_ptr().cast(), size, H5P_DEFAULT) } < 0 {
            return Err(format!("cannot read the link value: {}", last_h5_error()));
        }
        let (mut flags, mut file, mut object): (c_uint, *const c_char, *const c_char) =
            (0, std::ptr::null(), std::ptr::null());
        // SAFETY: `buf` is the link value of `size` bytes; the out-pointers are valid.
        if unsafe { H5Lunpack_elink_val(buf.as_ptr().cast(), size, &mut flags, &mut file, &mut object) } < 0
            || file.is_null()
            || object.is_null()
        {
            return Err(format!("malformed external link: {}", last_h5_error()));
        }
        // SAFETY: on success both pointers point at NUL-terminated strings inside `buf`, which
        // outlives these borrows (they are copied out at once).
        let (file, object) = unsafe { (CStr::from_ptr(file), CStr::from_ptr(object)) };
        Ok((file.to_string_lossy().into_owned(), object.to_string_lossy().into_owned()))
    })
}

/// A data file named in a link: relative names are relative to the master's directory; an
/// absolute name that does not exist (a file moved with its master) is looked for there too.
fn resolve(master: &Path, target: &str) -> PathBuf {
    let dir = master.parent().unwrap_or(Path::new("."));
    let t = Path::new(target);
    if t.is_absolute() {
        if t.exists() {
            return t.to_owned();
        }
        return t.file_name().map_or_else(|| t.to_owned(), |n| dir.join(n));
    }
    dir.join(t)
}

struct NexusSource {
    info: SourceInfo,
    parts: Vec<Part>,
    _master: hdf5::File,
}

impl FrameSource for NexusSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, i: usize) -> Result<SourceFrame, ReadError> {
        let k = self.parts.partition_point(|p| p.start <= i).saturating_sub(1);
        let out_of_range = || {
            let problem = format!("frame {i} is out of range ({} frames)", self.info.frames);
            ReadError::new(&self.info.path, Some(&self.info.dataset), problem)
        };
        if i >= self.info.frames {
            return Err(out_of_range());
        }
        let Some(part) = self.parts.get_mut(k) else { return Err(out_of_range()) };
        let local = i - part.start;
        let frame = part.frames.read(local).map_err(|mut e| {
            // Errors count frames within the data file; say where that is in the series.
            if part.start > 0 {
                e.problem = format!("{} (frame {i} of the series)", e.problem);
            }
            e
        })?;
        Ok(SourceFrame { index: i as u64, frame, dose: DoseHeader::default(), timestamp_ns: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_next_to_the_master() {
        let master = Path::new("/data/run/scan_master.h5");
        assert_eq!(resolve(master, "scan_data_000001.h5"), PathBuf::from("/data/run/scan_data_000001.h5"));
        assert_eq!(resolve(master, "/nowhere/x/scan_data_000001.h5"), PathBuf::from("/data/run/scan_data_000001.h5"));
    }
}
