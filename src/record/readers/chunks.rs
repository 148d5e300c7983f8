//! Direct chunk reads for data compressed with bitshuffle-LZ4 (HDF5 filter 32008) or LZ4 (32004).
//!
//! No HDF5 filter plugin is installed (or needed): a chunk is fetched as stored with
//! `H5Dread_chunk` and decoded by [`crate::decode::bslz4`], the decoder the DECTRIS stream formats
//! use — a stored chunk is byte-identical to a stream v1 `bsNN-lz4<` blob. DECTRIS writes one
//! frame per chunk; other writers (py4DSTEM users with hdf5plugin) may put several frames in a
//! chunk, so the last decoded chunk is kept for the frames that follow.

use std::ffi::c_uint;

use hdf5::filters::Filter;
use hdf5_sys::h5::{HADDR_UNDEF, haddr_t, hsize_t};
use hdf5_sys::h5d::{H5Dget_chunk_info_by_coord, H5Dread_chunk};
use hdf5_sys::h5p::H5P_DEFAULT;

use crate::decode::bslz4::{decode_bslz4, decode_lz4_any};
use crate::limits;
use crate::record::h5sync;

use super::h5_message;
use super::geometry::Geometry;

const FILTER_BSLZ4: i32 = 32008;
const FILTER_LZ4: i32 = 32004;
/// Bitshuffle's 5th filter parameter: the compressor after the shuffle (2 = LZ4, 3 = zstd).
const BSHUF_LZ4: c_uint = 2;

/// How chunks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Codec {
    Bslz4,
    Lz4,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Self::Bslz4 => "bitshuffle-LZ4",
            Self::Lz4 => "LZ4",
        }
    }
}

/// Names of plugin filters met in microscopy files, for errors.
fn filter_name(id: i32) -> &'static str {
    match id {
        307 => "bzip2",
        32000 => "LZF",
        32001 => "Blosc",
        32004 => "LZ4",
        32008 => "bitshuffle",
        32013 => "ZFP",
        32015 => "Zstandard",
        32026 => "Blosc2",
        _ => "unknown",
    }
}

/// The compression we decode ourselves, if the dataset uses it. Other pipelines are left to HDF5
/// when it has their filters, and refused here (naming the filter) when it does not.
pub(super) fn codec_of(ds: &hdf5::Dataset) -> Result<Option<Codec>, String> {
    let filters = ds.filters();
    let ids: Vec<i32> = filters.iter().map(Filter::id).collect();
    match &filters[..] {
        [Filter::User(FILTER_LZ4, _)] => Ok(Some(Codec::Lz4)),
        [Filter::User(FILTER_BSLZ4, params)] => match params.get(4) {
            Some(&BSHUF_LZ4) => Ok(Some(Codec::Bslz4)),
            Some(3) => Err("compressed with bitshuffle + zstd (filter 32008, compression 3): not supported".into()),
            _ => Err(format!(
                "compressed with bitshuffle but no LZ4 (filter 32008 parameters {params:?}): not supported"
            )),
        },
        _ if ids.contains(&FILTER_BSLZ4) || ids.contains(&FILTER_LZ4) => {
            Err(format!("filter pipeline {ids:?}: bitshuffle/LZ4 combined with other filters is not supported"))
        }
        _ => match filters.iter().find(|f| !f.is_available()) {
            Some(f) => Err(format!(
                "compressed with HDF5 filter {} ({}), which is not available here",
                f.id(),
                filter_name(f.id())
            )),
            None => Ok(None),
        },
    }
}

/// Reads frames of one compressed dataset chunk by chunk.
pub(super) struct ChunkReader {
    codec: Codec,
    /// Chunk dimensions, and element strides within a decoded chunk (C order).
    chunk: Vec<usize>,
    strides: Vec<usize>,
    big_endian: bool,
    /// The last decoded chunk: (its offset, its bytes).
    cache: Option<(Vec<hsize_t>, Vec<u8>)>,
}

impl ChunkReader {
    /// A reader for `ds` laid out as `geom`: its chunks must hold whole frames (the full row and
    /// column axes) and be small enough to decode.
    pub fn new(ds: &hdf5::Dataset, geom: &Geometry, codec: Codec) -> Result<Self, String> {
        let chunk = ds.chunk().ok_or("compressed data that is not chunked")?;
        if chunk.len() != geom.shape.len() || chunk[geom.y_axis] != geom.height || chunk[geom.x_axis] != geom.width {
            return Err(format!(
                "chunks of {chunk:?} in data of {:?} split frames: direct chunk reads need whole frames per chunk",
                geom.shape
            ));
        }
        if chunk.contains(&0)
            || chunk.iter().try_fold(1usize, |n, &c| n.checked_mul(c)).is_none_or(|n| n > limits::MAX_FRAME_PIXELS)
        {
            return Err(format!("chunks of {chunk:?} exceed the limit of {} pixels", limits::MAX_FRAME_PIXELS));
        }
        let mut strides = vec![1usize; chunk.len()];
        for a in (0..chunk.len().saturating_sub(1)).rev() {
            strides[a] = strides[a + 1] * chunk[a + 1];
        }
        let big_endian = ds.dtype().map_err(|e| h5_message(&e))?.byte_order() == hdf5::datatype::ByteOrder::BigEndian;
        Ok(Self { codec, chunk, strides, big_endian, cache: None })
    }

    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    /// The bytes of the frame at `index` (one index per axis; the image axes' are ignored), in
    /// file byte order, `elem` bytes per pixel.
    pub fn frame_bytes(
        &mut self,
        ds: &hdf5::Dataset,
        geom: &Geometry,
        index: &[usize],
        elem: usize,
    ) -> Result<Vec<u8>, String> {
        let image = |a: usize| a == geom.y_axis || a == geom.x_axis;
        let offset: Vec<hsize_t> = (0..self.chunk.len())
            .map(|a| if image(a) { 0 } else { (index[a] / self.chunk[a] * self.chunk[a]) as hsize_t })
            .collect();
        let base: usize =
            (0..self.chunk.len()).filter(|&a| !image(a)).map(|a| index[a] % self.chunk[a] * self.strides[a]).sum();
        let (ys, xs) = (self.strides[geom.y_axis], self.strides[geom.x_axis]);
        let chunk = self.decoded(ds, offset, elem)?;
        let short = "decoded chunk is shorter than its frames";
        if xs == 1 && ys == geom.width {
            // Rows and columns are the chunk's last axes (always so for DECTRIS): one block.
            let start = base * elem;
            return Ok(chunk.get(start..start + geom.width * geom.height * elem).ok_or(short)?.to_vec());
        }
        let mut out = Vec::with_capacity(geom.width * geom.height * elem);
        for y in 0..geom.height {
            for x in 0..geom.width {
                let at = (base + y * ys + x * xs) * elem;
                out.extend_from_slice(chunk.get(at..at + elem).ok_or(short)?);
            }
        }
        Ok(out)
    }

    /// The decoded chunk at `offset`, from the cache or the file.
    fn decoded(&mut self, ds: &hdf5::Dataset, offset: Vec<hsize_t>, elem: usize) -> Result<&[u8], String> {
        if self.cache.as_ref().is_none_or(|(o, _)| *o != offset) {
            self.cache = None;
            let expected = self.chunk.iter().product::<usize>() * elem;
            let (stored, skipped) = read_raw_chunk(ds, &offset, expected)?;
            let bytes = if skipped {
                // Stored without the filter (HDF5 does so when compressing a chunk fails).
                if stored.len() != expected {
                    return Err(format!("unfiltered chunk of {} bytes, expected {expected}", stored.len()));
                }
                stored
            } else {
                match self.codec {
                    Codec::Bslz4 => decode_bslz4(&stored, elem, expected),
                    Codec::Lz4 => decode_lz4_any(&stored, expected),
                }
                .map_err(|e| format!("{}: {e}", self.codec.name()))?
            };
            self.cache = Some((offset, bytes));
        }
        Ok(self.cache.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default())
    }
}

/// The HDF5 error stack of the call that just failed, as one line. Call under [`h5sync`].
pub(super) fn last_h5_error() -> String {
    match hdf5::Error::query() {
        Ok(e) | Err(e) => h5_message(&e),
    }
}

/// The stored bytes of the chunk at `offset`, and whether its (only) filter was skipped.
fn read_raw_chunk(ds: &hdf5::Dataset, offset: &[hsize_t], expected: usize) -> Result<(Vec<u8>, bool), String> {
    // LZ4's worst case grows data by 1/255 plus a few bytes per block, plus the 12-byte header
    // and 4 bytes per block: anything bigger is not an encoding of this chunk.
    let max_stored = expected + expected / 64 + 4096;
    h5sync(|| {
        let (mut mask, mut addr, mut size): (c_uint, haddr_t, hsize_t) = (0, 0, 0);
        // SAFETY: `offset` has one entry per dataset dimension; the out-pointers are valid.
        if unsafe { H5Dget_chunk_info_by_coord(ds.id(), offset.as_ptr(), &mut mask, &mut addr, &mut size) } < 0 {
            return Err(format!("cannot locate the chunk at {offset:?}: {}", last_h5_error()));
        }
        if addr == HADDR_UNDEF || size == 0 {
            return Err(format!("no chunk stored at {offset:?} (never written)"));
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max_stored)
            .ok_or_else(|| format!("stored chunk of {size} bytes is larger than any encoding of {expected} bytes"))?;
        let mut buf = vec![0u8; size];
        let mut filters: u32 = 0;
        // SAFETY: `buf` holds the chunk's stored size, reported for this very chunk just above
        // under the same lock; `offset` has one entry per dimension.
        if unsafe { H5Dread_chunk(ds.id(), H5P_DEFAULT, offset.as_ptr(), &mut filters, buf.as_mut_ptr().cast()) } < 0 {
            return Err(format!("direct chunk read at {offset:?} failed: {}", last_h5_error()));
        }
        Ok((buf, filters & 1 != 0))
    })
}
