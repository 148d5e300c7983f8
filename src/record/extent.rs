//! What an HDF5 dataset can really hold, checked before anything is sized by its shape.
//!
//! A dataset's shape is a claim: a chunked dataset may declare 2³⁴ rows and store none of them (HDF5
//! then reads the fill value for every row). The bytes the file has allocated for it are not a
//! claim, so a shape is believed only as far as that storage can produce it.

use hdf5::filters::Filter;
use hdf5::plist::dataset_create::Layout;

/// Most bytes a filtered (compressed) chunk can expand to per stored byte: deflate's limit is
/// about 1032:1, LZ4's about 255:1; bitshuffle-LZ4 stays under LZ4's.
pub const MAX_EXPANSION: u64 = 1100;

/// Index columns (one value per frame) are read this many rows at a time.
pub const COLUMN_CHUNK_ROWS: usize = 1 << 16;

/// Rows an index column may claim when its storage cannot be measured (a virtual dataset):
/// 16 Mi frames is days of acquisition at 100 frames/s.
pub const MAX_UNMEASURED_ROWS: u64 = 1 << 24;

/// Checks that `ds`, of `elem_bytes`-byte elements, can hold the elements its shape declares;
/// returns that count, or the problem in words.
pub fn verified_elements(ds: &hdf5::Dataset, elem_bytes: usize) -> Result<usize, String> {
    let shape = ds.shape();
    let claimed = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {shape:?} declares more elements than can be counted"))?;
    let claimed_bytes = claimed.saturating_mul(elem_bytes as u64);
    let layout = ds.layout();
    let allowed = match layout {
        Layout::Virtual => MAX_UNMEASURED_ROWS.saturating_mul(elem_bytes as u64),
        Layout::Compact | Layout::Contiguous => ds.storage_size(),
        Layout::Chunked => {
            let ratio = if ds.filters().iter().all(|f| matches!(f, Filter::Shuffle | Filter::Fletcher32)) {
                1
            } else {
                MAX_EXPANSION
            };
            // A writer that died between extending a dataset and writing its rows leaves at most one
            // unwritten chunk: allow it.
            let chunk_bytes =
                ds.chunk().map_or(0, |c| c.iter().map(|&d| d as u64).product::<u64>()) * elem_bytes as u64;
            ds.storage_size().saturating_mul(ratio).saturating_add(chunk_bytes)
        }
    };
    if claimed_bytes > allowed {
        return Err(format!(
            "shape {shape:?} declares {claimed_bytes} bytes but the file stores only {} bytes for it ({layout:?} layout): refused",
            ds.storage_size()
        ));
    }
    usize::try_from(claimed).map_err(|_| format!("shape {shape:?} is too large for this machine"))
}

/// A 1-D column read in bounded chunks after its length was verified against its storage.
pub fn read_column<T: hdf5::H5Type + Copy>(ds: &hdf5::Dataset) -> Result<Vec<T>, String> {
    if ds.ndim() != 1 {
        return Err(format!("expected a 1-D column, found shape {:?}", ds.shape()));
    }
    let n = verified_elements(ds, std::mem::size_of::<T>())?;
    let mut out = Vec::with_capacity(n.min(COLUMN_CHUNK_ROWS));
    let reader = ds.as_reader();
    let mut start = 0;
    while start < n {
        let end = (start + COLUMN_CHUNK_ROWS).min(n);
        let part = reader.read_slice_1d::<T, _>(start..end).map_err(|e| e.to_string())?;
        out.extend(part.iter().copied());
        start = end;
    }
    Ok(out)
}
