//! Any dataset of any HDF5 file, named by the user (`OpenOptions::dataset`): frames along
//! `OpenOptions::frame_axis` (default 0) of a 3-D dataset, a 2-D dataset as one frame, the leading
//! axes of a higher-rank one flattened. No metadata is interpreted: dose inputs come from the user.

use std::path::Path;

use hdf5::LocationType;

use crate::decode::DoseHeader;
use crate::record::{FrameSource, Layout, OpenOptions, ReadError};

use super::h5frames::H5Frames;
use super::{Described, PlainSource, file_stem, h5_message, note_missing_dose};

/// Opens dataset `name` of `file`.
pub(super) fn open(
    path: &Path,
    file: hdf5::File,
    name: &str,
    opts: &OpenOptions,
) -> Result<Box<dyn FrameSource>, ReadError> {
    let fail = |p: String| ReadError::new(path, Some(name), p);
    // `link_exists` answers false (not an error) when a group on the way is missing too.
    if !file.link_exists(name) {
        return Err(fail("no such dataset in the file".into()));
    }
    match file.loc_type_by_name(name) {
        Ok(LocationType::Dataset) => {}
        Ok(LocationType::Group) => return Err(fail("is a group, not a dataset".into())),
        Ok(_) => return Err(fail("is a named datatype, not a dataset".into())),
        Err(e) => return Err(fail(format!("cannot open: {}", h5_message(&e)))),
    }
    let ds = file.dataset(name).map_err(|e| fail(format!("cannot open: {}", h5_message(&e))))?;
    let (frames, mut notes) = H5Frames::standard(path, ds, name, opts.frame_axis, opts.mask_gaps)?;
    notes.push("dataset named with --dataset: no metadata read".into());
    let dose = DoseHeader::default();
    note_missing_dose(&dose, &mut notes);
    let described =
        Described { layout: Layout::Dataset, dataset: name.to_owned(), series: file_stem(path), dose, notes };
    Ok(PlainSource::boxed(path, file, frames, described))
}
