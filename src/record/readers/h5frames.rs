//! Frames out of an HDF5 dataset, one hyperslab selection per frame (a dataset is never read
//! whole: a 4-D STEM datacube can be larger than memory).
//!
//! Which axes count frames is the layout's business ([`super::geometry::Geometry`]); the two remaining axes are the
//! frame's rows and columns, in file order, so no transpose is ever needed.

use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::H5Type;

use crate::frame::{Frame, PixelType};
use crate::record::ReadError;

use super::chunks::{self, ChunkReader};
pub(super) use super::geometry::Geometry;
use super::h5_message;

/// The pixel types a frame can be read from. Unsigned 8/16/32-bit stay integers (gap masking
/// applies); everything else becomes f32 — exact for 8- and 16-bit signed values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pixel {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Pixel {
    pub fn from_descriptor(d: &TypeDescriptor) -> Option<Self> {
        Some(match d {
            TypeDescriptor::Unsigned(IntSize::U1) => Self::U8,
            TypeDescriptor::Unsigned(IntSize::U2) => Self::U16,
            TypeDescriptor::Unsigned(IntSize::U4) => Self::U32,
            TypeDescriptor::Unsigned(IntSize::U8) => Self::U64,
            TypeDescriptor::Integer(IntSize::U1) => Self::I8,
            TypeDescriptor::Integer(IntSize::U2) => Self::I16,
            TypeDescriptor::Integer(IntSize::U4) => Self::I32,
            TypeDescriptor::Integer(IntSize::U8) => Self::I64,
            TypeDescriptor::Float(FloatSize::U4) => Self::F32,
            TypeDescriptor::Float(FloatSize::U8) => Self::F64,
            _ => return None,
        })
    }

    /// The dataset's pixel type, or a problem naming its dtype.
    pub fn of(ds: &hdf5::Dataset) -> Result<Self, String> {
        let dtype = ds.dtype().map_err(|e| format!("cannot read the dtype: {}", h5_message(&e)))?;
        match dtype.to_descriptor() {
            Ok(d) => Self::from_descriptor(&d).ok_or_else(|| {
                format!("unsupported dtype {d}: frames need integer or float pixels (uint8/16/32/64, int8/16/32/64, float32/64)")
            }),
            Err(e) => Err(format!("unsupported dtype ({}): frames need integer or float pixels", h5_message(&e))),
        }
    }

    /// The pixel type frames of this dataset get.
    pub fn pixel_type(self) -> PixelType {
        match self {
            Self::U8 => PixelType::U8,
            Self::U16 => PixelType::U16,
            Self::U32 => PixelType::U32,
            _ => PixelType::F32,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }
}

/// A dataset read frame by frame: by hyperslab selections, or — for bitshuffle-LZ4 / LZ4 data,
/// which HDF5 here cannot decode — by direct chunk reads.
pub(super) struct H5Frames {
    path: PathBuf,
    name: String,
    ds: hdf5::Dataset,
    pub geom: Geometry,
    pub pixel: Pixel,
    mask_gaps: bool,
    chunks: Option<ChunkReader>,
}

impl H5Frames {
    /// Frames of `ds` (at `name` in the file at `path`) laid out as `geom`.
    pub fn new(path: &Path, ds: hdf5::Dataset, name: &str, geom: Geometry, mask_gaps: bool) -> Result<Self, ReadError> {
        let fail = |p: String| ReadError::new(path, Some(name), p);
        let pixel = Pixel::of(&ds).map_err(fail)?;
        // The frame count comes from the shape: believed only as far as the stored bytes reach, or a
        // file claiming 2³⁰ frames would be "replayed" from fill values for ever.
        crate::record::extent::verified_elements(&ds, pixel.size()).map_err(fail)?;
        let chunks = match chunks::codec_of(&ds).map_err(fail)? {
            Some(codec) => Some(ChunkReader::new(&ds, &geom, codec).map_err(fail)?),
            None => None,
        };
        Ok(Self { path: path.to_owned(), name: name.to_owned(), ds, geom, pixel, mask_gaps, chunks })
    }

    /// Frames of `ds` by the [`Geometry::standard`] rule; returns the notes it makes.
    pub fn standard(
        path: &Path,
        ds: hdf5::Dataset,
        name: &str,
        frame_axis: Option<usize>,
        mask_gaps: bool,
    ) -> Result<(Self, Vec<String>), ReadError> {
        let (geom, notes) =
            Geometry::standard(&ds.shape(), frame_axis).map_err(|p| ReadError::new(path, Some(name), p))?;
        Ok((Self::new(path, ds, name, geom, mask_gaps)?, notes))
    }

    /// The dataset's path in its file.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn fail(&self, problem: String) -> ReadError {
        ReadError::new(&self.path, Some(&self.name), problem)
    }

    /// Frame `i`.
    pub fn read(&mut self, i: usize) -> Result<Frame, ReadError> {
        if i >= self.geom.frames {
            return Err(self.fail(format!("frame {i} is out of range ({} frames)", self.geom.frames)));
        }
        if self.chunks.is_some() { self.read_chunked(i) } else { self.read_selection(i) }
    }

    /// Frame `i`, decoded from its stored chunk.
    fn read_chunked(&mut self, i: usize) -> Result<Frame, ReadError> {
        let index = self.geom.index(i);
        let Some(chunks) = self.chunks.as_mut() else { return self.read_selection(i) };
        let big_endian = chunks.big_endian();
        let bytes = chunks.frame_bytes(&self.ds, &self.geom, &index, self.pixel.size());
        bytes
            .and_then(|b| {
                frame_from_bytes(self.pixel, big_endian, &b, self.geom.width, self.geom.height, self.mask_gaps)
            })
            .map_err(|p| self.fail(format!("frame {i}: {p}")))
    }

    /// Frame `i`, read with one hyperslab selection.
    fn read_selection(&self, i: usize) -> Result<Frame, ReadError> {
        let (w, h, mask) = (self.geom.width, self.geom.height, self.mask_gaps);
        let frame = match self.pixel {
            Pixel::U8 => Frame::from_ints(w, h, &self.values::<u8>(i)?, mask),
            Pixel::U16 => Frame::from_ints(w, h, &self.values::<u16>(i)?, mask),
            Pixel::U32 => Frame::from_ints(w, h, &self.values::<u32>(i)?, mask),
            Pixel::U64 => Frame::from_f32(w, h, self.values::<u64>(i)?.into_iter().map(|v| v as f32).collect()),
            Pixel::I8 => Frame::from_f32(w, h, self.values::<i8>(i)?.into_iter().map(f32::from).collect()),
            Pixel::I16 => Frame::from_f32(w, h, self.values::<i16>(i)?.into_iter().map(f32::from).collect()),
            Pixel::I32 => Frame::from_f32(w, h, self.values::<i32>(i)?.into_iter().map(|v| v as f32).collect()),
            Pixel::I64 => Frame::from_f32(w, h, self.values::<i64>(i)?.into_iter().map(|v| v as f32).collect()),
            Pixel::F32 => Frame::from_f32(w, h, self.values::<f32>(i)?),
            Pixel::F64 => Frame::from_f32(w, h, self.values::<f64>(i)?.into_iter().map(|v| v as f32).collect()),
        };
        frame.map_err(|e| self.fail(format!("frame {i}: {e}")))
    }

    fn values<T: H5Type>(&self, i: usize) -> Result<Vec<T>, ReadError> {
        let arr = self
            .ds
            .as_reader()
            .read_slice_2d::<T, _>(self.geom.selection(i))
            .map_err(|e| self.fail(format!("frame {i}: {}", h5_message(&e))))?;
        let (values, _) = arr.into_raw_vec_and_offset();
        if values.len() != self.geom.width * self.geom.height {
            return Err(self.fail(format!(
                "frame {i}: read {} values, expected {}",
                values.len(),
                self.geom.width * self.geom.height
            )));
        }
        Ok(values)
    }
}

/// A frame from raw element bytes in file byte order (a decoded chunk).
pub(super) fn frame_from_bytes(
    pixel: Pixel,
    big_endian: bool,
    bytes: &[u8],
    width: usize,
    height: usize,
    mask_gaps: bool,
) -> Result<Frame, String> {
    let n = width.checked_mul(height).and_then(|n| n.checked_mul(pixel.size()));
    if n != Some(bytes.len()) {
        return Err(format!(
            "{} bytes do not fill a {width}×{height} frame of {}-byte pixels",
            bytes.len(),
            pixel.size()
        ));
    }
    macro_rules! elems {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            bytes
                .chunks_exact(N)
                .map(|b| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(b);
                    if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }
                })
                .collect::<Vec<$t>>()
        }};
    }
    let frame = match pixel {
        Pixel::U8 => Frame::from_ints(width, height, bytes, mask_gaps),
        Pixel::U16 => Frame::from_ints(width, height, &elems!(u16), mask_gaps),
        Pixel::U32 => Frame::from_ints(width, height, &elems!(u32), mask_gaps),
        Pixel::U64 => Frame::from_f32(width, height, elems!(u64).into_iter().map(|v| v as f32).collect()),
        Pixel::I8 => Frame::from_f32(width, height, elems!(i8).into_iter().map(f32::from).collect()),
        Pixel::I16 => Frame::from_f32(width, height, elems!(i16).into_iter().map(f32::from).collect()),
        Pixel::I32 => Frame::from_f32(width, height, elems!(i32).into_iter().map(|v| v as f32).collect()),
        Pixel::I64 => Frame::from_f32(width, height, elems!(i64).into_iter().map(|v| v as f32).collect()),
        Pixel::F32 => Frame::from_f32(width, height, elems!(f32)),
        Pixel::F64 => Frame::from_f32(width, height, elems!(f64).into_iter().map(|v| v as f32).collect()),
    };
    frame.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_geometries() {
        let (g, notes) = Geometry::standard(&[3, 4], None).expect("2-D");
        assert_eq!((g.frames, g.height, g.width), (1, 3, 4));
        assert!(notes.is_empty());
        let (g, _) = Geometry::standard(&[4, 5, 2], Some(2)).expect("frames last");
        assert_eq!((g.frames, g.height, g.width, g.y_axis, g.x_axis), (2, 4, 5, 0, 1));
        let (g, notes) = Geometry::standard(&[2, 3, 4, 5], None).expect("4-D");
        assert_eq!((g.frames, g.height, g.width), (6, 4, 5));
        assert_eq!(notes.len(), 1);
        assert!(Geometry::standard(&[7], None).is_err());
        assert!(Geometry::standard(&[2, 3, 4], Some(3)).is_err());
        assert!(Geometry::standard(&[2, 3, 4, 5], Some(2)).is_err());
        assert!(Geometry::standard(&[0, 3, 4], None).is_err());
        assert!(Geometry::standard(&[1, 0, 4], None).is_err());
        assert!(Geometry::standard(&[1, 1 << 20, 1 << 20], None).is_err());
    }

    #[test]
    fn fixed_axes_leave_two_image_axes() {
        let g = Geometry::with_axes(&[5, 2, 6, 7], vec![0], vec![(1, 0)]).expect("channels");
        assert_eq!((g.frames, g.height, g.width), (5, 6, 7));
        assert!(Geometry::with_axes(&[5, 2, 6, 7], vec![0], vec![(1, 2)]).is_err());
        assert!(Geometry::with_axes(&[5, 2, 6, 7], vec![0], vec![]).is_err());
    }

    #[test]
    fn bytes_to_frames_in_either_byte_order() {
        let le = [1u8, 0, 0xff, 0xff];
        let f = frame_from_bytes(Pixel::U16, false, &le, 2, 1, true).expect("le");
        assert_eq!(f.pixels(), &[1.0, 65535.0]);
        assert_eq!(f.n_invalid(), 1);
        let f = frame_from_bytes(Pixel::I16, true, &[0xff, 0xfe, 0, 3], 2, 1, false).expect("be");
        assert_eq!(f.pixels(), &[-2.0, 3.0]);
        assert!(frame_from_bytes(Pixel::U16, false, &le[..3], 2, 1, false).is_err());
    }
}
