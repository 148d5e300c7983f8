//! Types shared by the DM and TIA readers, a length-checked byte source, and the
//! metadata accessors on [`Image`].

use std::fmt;
use std::io::{Read, Seek, SeekFrom};

use crate::limits;

/// Pixels one image may hold in memory: refused beyond this even when the file is that big,
/// so a daemon reading a hostile or huge file never asks for more. Pixel data lies in the file,
/// so this is the image-file limit of [`crate::limits`].
pub const MAX_PIXEL_BYTES: u64 = limits::MAX_IMAGE_FILE_BYTES;

/// Metadata entries kept per image; the rest are dropped (DM files can hold tens of thousands).
pub const MAX_METADATA_ENTRIES: usize = 2000;

/// Longest metadata value kept, in characters.
pub(super) const MAX_VALUE_CHARS: usize = 1024;

/// Pixel values, in C order of [`Image::shape`].
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// DM "binary" images (DataType 14), one byte per pixel, nonzero = true.
    Bool(Vec<bool>),
}

/// One axis of an image, slowest first like [`Image::shape`].
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub size: usize,
    pub scale: f64,
    pub offset: f64,
    pub units: String,
}

/// One image (or stack of images) read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// C order, slowest first: `[y, x]` or `[frames, y, x]`.
    pub shape: Vec<usize>,
    pub axes: Vec<Axis>,
    pub pixels: Pixels,
    /// Flattened tag paths -> value text, at most [`MAX_METADATA_ENTRIES`].
    pub metadata: Vec<(String, String)>,
}

/// A one-line error naming the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub what: String,
}

impl FileError {
    /// `file: message`, forced onto one line.
    pub(super) fn new(file: &str, msg: &str) -> Self {
        FileError { what: clean(&format!("{file}: {msg}"), 400) }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for FileError {}

/// Errors inside the readers are plain messages; the public functions add the file name.
pub(super) type Res<T> = Result<T, String>;

/// Replaces control characters (newlines included) so text from a file stays on one line,
/// and cuts it to `max` characters.
pub(super) fn clean(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Length-checked reading
// ---------------------------------------------------------------------------------------------

/// Skips up to this many bytes are read rather than seeked (the default BufReader capacity).
const SHORT_SKIP: usize = 8192;

/// A reader that knows the file length, so every read and seek is checked against it before
/// anything is allocated.
pub(super) struct Src<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Src<R> {
    /// Refuses a source longer than [`limits::MAX_IMAGE_FILE_BYTES`] before reading any of it.
    pub(super) fn new(mut inner: R) -> Res<Self> {
        let len = inner.seek(SeekFrom::End(0)).map_err(|e| format!("cannot read: {e}"))?;
        if len > limits::MAX_IMAGE_FILE_BYTES {
            return Err(format!("file of {len} bytes exceeds the {} byte limit", limits::MAX_IMAGE_FILE_BYTES));
        }
        inner.seek(SeekFrom::Start(0)).map_err(|e| format!("cannot read: {e}"))?;
        Ok(Src { inner, pos: 0, len })
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    pub(super) fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    pub(super) fn seek_to(&mut self, at: u64) -> Res<()> {
        if at > self.len {
            return Err(format!("offset {at} is past the end of the file ({} bytes)", self.len));
        }
        self.inner.seek(SeekFrom::Start(at)).map_err(|e| format!("cannot seek to {at}: {e}"))?;
        self.pos = at;
        Ok(())
    }

    /// Skips `n` bytes that must lie inside the file. Short skips are read through, so a
    /// buffered source keeps its buffer (a seek would drop it and re-read for every small tag).
    pub(super) fn skip(&mut self, n: u64) -> Res<()> {
        self.need(n)?;
        if n <= SHORT_SKIP as u64 {
            let mut scratch = [0u8; SHORT_SKIP];
            return self.fill(scratch.get_mut(..n as usize).unwrap_or_default());
        }
        // need() guarantees pos + n <= len, so this cannot overflow.
        self.seek_to(self.pos.saturating_add(n))
    }

    /// Fails unless `n` more bytes exist: called before any allocation sized from the file.
    pub(super) fn need(&self, n: u64) -> Res<()> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {n} bytes needed at offset {} but the file has {} bytes",
                self.pos, self.len
            ));
        }
        Ok(())
    }

    pub(super) fn fill(&mut self, buf: &mut [u8]) -> Res<()> {
        let n = buf.len() as u64;
        self.need(n)?;
        self.inner.read_exact(buf).map_err(|e| format!("cannot read {n} bytes at offset {}: {e}", self.pos))?;
        self.pos += n;
        Ok(())
    }

    pub(super) fn take<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    /// Reads `n` bytes, after checking they exist.
    pub(super) fn bytes(&mut self, n: u64) -> Res<Vec<u8>> {
        self.need(n)?;
        let size = usize::try_from(n).map_err(|_| format!("a {n}-byte block is too large"))?;
        let mut v = vec![0u8; size];
        self.fill(&mut v)?;
        Ok(v)
    }

    pub(super) fn u8(&mut self) -> Res<u8> {
        Ok(u8::from_le_bytes(self.take()?))
    }
    pub(super) fn u16(&mut self, le: bool) -> Res<u16> {
        let b = self.take()?;
        Ok(if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }
    pub(super) fn i16(&mut self, le: bool) -> Res<i16> {
        let b = self.take()?;
        Ok(if le { i16::from_le_bytes(b) } else { i16::from_be_bytes(b) })
    }
    pub(super) fn u32(&mut self, le: bool) -> Res<u32> {
        let b = self.take()?;
        Ok(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
    pub(super) fn i32(&mut self, le: bool) -> Res<i32> {
        let b = self.take()?;
        Ok(if le { i32::from_le_bytes(b) } else { i32::from_be_bytes(b) })
    }
    pub(super) fn u64(&mut self, le: bool) -> Res<u64> {
        let b = self.take()?;
        Ok(if le { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    }
    pub(super) fn f64(&mut self, le: bool) -> Res<f64> {
        let b = self.take()?;
        Ok(if le { f64::from_le_bytes(b) } else { f64::from_be_bytes(b) })
    }
}

// ---------------------------------------------------------------------------------------------
// Pixel decoding
// ---------------------------------------------------------------------------------------------

/// Element type of a pixel array on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Bool,
}

impl Kind {
    pub(super) fn width(self) -> u64 {
        match self {
            Kind::U8 | Kind::I8 | Kind::Bool => 1,
            Kind::U16 | Kind::I16 => 2,
            Kind::U32 | Kind::I32 | Kind::F32 => 4,
            Kind::U64 | Kind::I64 | Kind::F64 => 8,
        }
    }
}

/// Bytes decoded per read: large enough to be fast, small enough not to double peak memory.
const CHUNK_BYTES: usize = 1 << 20;

/// Checks that `count` pixels of `kind` are allowed and present in the file from the current
/// position, and returns their byte length. Call before allocating anything for them.
pub(super) fn check_pixel_bytes<R: Read + Seek>(src: &Src<R>, kind: Kind, count: u64) -> Res<u64> {
    let bytes = count
        .checked_mul(kind.width())
        .ok_or_else(|| format!("{count} pixels of {} bytes overflow a 64-bit size", kind.width()))?;
    if bytes > MAX_PIXEL_BYTES {
        return Err(format!("pixel data of {bytes} bytes exceeds the {MAX_PIXEL_BYTES}-byte limit"));
    }
    src.need(bytes)?;
    Ok(bytes)
}

/// Refuses an image shape (C order, `[.., y, x]`) beyond the limits of [`crate::limits`] before
/// its pixels are allocated: a frame (the last two axes) over [`limits::MAX_FRAME_PIXELS`], or
/// more than [`limits::MAX_PAGES`] frames (the product of the other axes).
pub(super) fn check_limits(shape: &[usize]) -> Res<()> {
    let split = shape.len().saturating_sub(2);
    let (stack, frame) = shape.split_at(split);
    let px = frame.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if px.is_none_or(|n| n > limits::MAX_FRAME_PIXELS) {
        let sides: Vec<String> = frame.iter().map(usize::to_string).collect();
        return Err(format!(
            "frames of {} pixels exceed the limit of {} pixels per frame",
            sides.join(" x "),
            limits::MAX_FRAME_PIXELS
        ));
    }
    let frames = stack.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if frames.is_none_or(|n| n > limits::MAX_PAGES) {
        return Err(format!("shape {shape:?} holds more than the limit of {} frames", limits::MAX_PAGES));
    }
    Ok(())
}

/// Reads `count` elements of `N` bytes each, converting each, in bounded chunks.
fn decode_into<R: Read + Seek, T, const N: usize>(
    src: &mut Src<R>,
    count: usize,
    out: &mut Vec<T>,
    conv: fn([u8; N]) -> T,
) -> Res<()> {
    let per_chunk = (CHUNK_BYTES / N).max(1);
    let mut buf = vec![0u8; per_chunk.min(count).saturating_mul(N)];
    let mut left = count;
    while left > 0 {
        let n = left.min(per_chunk);
        let part = buf.get_mut(..n * N).ok_or("internal: chunk larger than buffer")?;
        src.fill(part)?;
        out.extend(part.chunks_exact(N).filter_map(|c| <[u8; N]>::try_from(c).ok()).map(conv));
        left -= n;
    }
    Ok(())
}

impl Pixels {
    /// An empty vector of `kind` with room for `cap` pixels (already checked against the file).
    pub(super) fn with_capacity(kind: Kind, cap: usize) -> Pixels {
        match kind {
            Kind::U8 => Pixels::U8(Vec::with_capacity(cap)),
            Kind::I8 => Pixels::I8(Vec::with_capacity(cap)),
            Kind::U16 => Pixels::U16(Vec::with_capacity(cap)),
            Kind::I16 => Pixels::I16(Vec::with_capacity(cap)),
            Kind::U32 => Pixels::U32(Vec::with_capacity(cap)),
            Kind::I32 => Pixels::I32(Vec::with_capacity(cap)),
            Kind::U64 => Pixels::U64(Vec::with_capacity(cap)),
            Kind::I64 => Pixels::I64(Vec::with_capacity(cap)),
            Kind::F32 => Pixels::F32(Vec::with_capacity(cap)),
            Kind::F64 => Pixels::F64(Vec::with_capacity(cap)),
            Kind::Bool => Pixels::Bool(Vec::with_capacity(cap)),
        }
    }

    /// Appends `count` pixels read from `src` (the caller checked they are in the file).
    pub(super) fn read_more<R: Read + Seek>(&mut self, src: &mut Src<R>, count: usize, le: bool) -> Res<()> {
        match self {
            Pixels::U8(v) => decode_into(src, count, v, u8::from_le_bytes),
            Pixels::I8(v) => decode_into(src, count, v, i8::from_le_bytes),
            Pixels::Bool(v) => decode_into(src, count, v, |b: [u8; 1]| u8::from_le_bytes(b) != 0),
            Pixels::U16(v) => decode_into(src, count, v, if le { u16::from_le_bytes } else { u16::from_be_bytes }),
            Pixels::I16(v) => decode_into(src, count, v, if le { i16::from_le_bytes } else { i16::from_be_bytes }),
            Pixels::U32(v) => decode_into(src, count, v, if le { u32::from_le_bytes } else { u32::from_be_bytes }),
            Pixels::I32(v) => decode_into(src, count, v, if le { i32::from_le_bytes } else { i32::from_be_bytes }),
            Pixels::U64(v) => decode_into(src, count, v, if le { u64::from_le_bytes } else { u64::from_be_bytes }),
            Pixels::I64(v) => decode_into(src, count, v, if le { i64::from_le_bytes } else { i64::from_be_bytes }),
            Pixels::F32(v) => decode_into(src, count, v, if le { f32::from_le_bytes } else { f32::from_be_bytes }),
            Pixels::F64(v) => decode_into(src, count, v, if le { f64::from_le_bytes } else { f64::from_be_bytes }),
        }
    }

    /// Reverses the row order of every `rows` x `cols` frame (TIA stores images bottom-up).
    pub(super) fn flip_rows(&mut self, rows: usize, cols: usize) {
        match self {
            Pixels::U8(v) => flip(v, rows, cols),
            Pixels::I8(v) => flip(v, rows, cols),
            Pixels::Bool(v) => flip(v, rows, cols),
            Pixels::U16(v) => flip(v, rows, cols),
            Pixels::I16(v) => flip(v, rows, cols),
            Pixels::U32(v) => flip(v, rows, cols),
            Pixels::I32(v) => flip(v, rows, cols),
            Pixels::U64(v) => flip(v, rows, cols),
            Pixels::I64(v) => flip(v, rows, cols),
            Pixels::F32(v) => flip(v, rows, cols),
            Pixels::F64(v) => flip(v, rows, cols),
        }
    }

    /// Number of pixels.
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::I8(v) => v.len(),
            Pixels::Bool(v) => v.len(),
            Pixels::U16(v) => v.len(),
            Pixels::I16(v) => v.len(),
            Pixels::U32(v) => v.len(),
            Pixels::I32(v) => v.len(),
            Pixels::U64(v) => v.len(),
            Pixels::I64(v) => v.len(),
            Pixels::F32(v) => v.len(),
            Pixels::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The NumPy name of the element type ("uint16", "float32", ...).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Pixels::U8(_) => "uint8",
            Pixels::I8(_) => "int8",
            Pixels::Bool(_) => "bool",
            Pixels::U16(_) => "uint16",
            Pixels::I16(_) => "int16",
            Pixels::U32(_) => "uint32",
            Pixels::I32(_) => "int32",
            Pixels::U64(_) => "uint64",
            Pixels::I64(_) => "int64",
            Pixels::F32(_) => "float32",
            Pixels::F64(_) => "float64",
        }
    }
}

fn flip<T>(v: &mut [T], rows: usize, cols: usize) {
    let Some(frame_len) = rows.checked_mul(cols).filter(|&n| n > 0) else { return };
    for frame in v.chunks_exact_mut(frame_len) {
        for r in 0..rows / 2 {
            // Rows r and rows-1-r never overlap since r < rows/2.
            let (top, bottom) = frame.split_at_mut((rows - 1 - r) * cols);
            if let (Some(a), Some(b)) = (top.get_mut(r * cols..(r + 1) * cols), bottom.get_mut(..cols)) {
                a.swap_with_slice(b);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata accessors
// ---------------------------------------------------------------------------------------------

/// The leading number of a metadata value: "13500000 X" -> 13500000, "3.5" -> 3.5.
fn leading_number(s: &str) -> Option<f64> {
    let t = s.trim_start();
    let end = t
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')))
        .map_or(t.len(), |(i, _)| i);
    t.get(..end)?.parse::<f64>().ok().filter(|x| x.is_finite())
}

impl Image {
    /// The value text of an exact metadata key.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first of `keys` that is present and starts with a number.
    fn meta_number(&self, keys: &[&str]) -> Option<f64> {
        keys.iter().find_map(|k| self.meta(k).and_then(leading_number))
    }

    /// The first key starting with `prefix` whose value is a number: for DM labels such as
    /// "Emission Current (µA)", whose µ is stored as Latin-1 or UTF-8 depending on the writer.
    fn meta_number_prefix(&self, prefix: &str) -> Option<f64> {
        self.metadata.iter().filter(|(k, _)| k.starts_with(prefix)).find_map(|(_, v)| leading_number(v))
    }

    /// Positive values only: DM writes 0 for "not recorded" (probe current, emission...).
    fn positive(x: Option<f64>) -> Option<f64> {
        x.filter(|&v| v > 0.0)
    }

    /// Whether the TIA acquisition used a camera (then DwellTimePath is the exposure).
    fn tia_camera(&self) -> bool {
        self.meta("ObjectInfo.AcquireInfo.CameraNamePath").is_some()
    }

    /// Scale and units of the fast (x) axis, when calibrated.
    pub fn pixel_size(&self) -> Option<(f64, &str)> {
        let ax = self.axes.last()?;
        (self.axes.len() >= 2 && !ax.units.is_empty() && ax.scale.is_finite() && ax.scale > 0.0)
            .then_some((ax.scale, ax.units.as_str()))
    }

    /// Real-space pixel size in nm (None for uncalibrated or reciprocal-space axes).
    pub fn pixel_size_nm(&self) -> Option<f64> {
        let (scale, units) = self.pixel_size()?;
        let per_unit = match units {
            "nm" => 1.0,
            "pm" => 1e-3,
            "Å" | "A" | "Angstrom" => 0.1,
            "µm" | "μm" | "um" => 1e3,
            "mm" => 1e6,
            "m" => 1e9,
            _ => return None,
        };
        Some(scale * per_unit)
    }

    /// Scan dwell time per pixel in µs: DM `ImageTags.DigiScan.Sample Time` (µs);
    /// TIA `ObjectInfo.AcquireInfo.DwellTimePath` (s) for scanned (non-camera) images.
    pub fn dwell_time_us(&self) -> Option<f64> {
        if let Some(us) = self.meta_number(&["ImageTags.DigiScan.Sample Time"]) {
            return Self::positive(Some(us));
        }
        if self.tia_camera() {
            return None;
        }
        Self::positive(self.meta_number(&["ObjectInfo.AcquireInfo.DwellTimePath"]).map(|s| s * 1e6))
    }

    /// Camera exposure in s: DM `ImageTags.Acquisition.Parameters.High Level.Exposure (s)`,
    /// `...Detector.exposure (s)` or `ImageTags.DataBar.Exposure Time (s)`; TIA
    /// `ObjectInfo.AcquireInfo.DwellTimePath` when a camera (`CameraNamePath`) took the image.
    pub fn exposure_s(&self) -> Option<f64> {
        let dm = self.meta_number(&[
            "ImageTags.Acquisition.Parameters.High Level.Exposure (s)",
            "ImageTags.Acquisition.Parameters.Detector.exposure (s)",
            "ImageTags.DataBar.Exposure Time (s)",
        ]);
        if dm.is_some() {
            return Self::positive(dm);
        }
        if self.tia_camera() {
            return Self::positive(self.meta_number(&["ObjectInfo.AcquireInfo.DwellTimePath"]));
        }
        None
    }

    /// Frame time in s: TIA `ObjectInfo.AcquireInfo.FrameTime`.
    pub fn frame_time_s(&self) -> Option<f64> {
        Self::positive(self.meta_number(&["ObjectInfo.AcquireInfo.FrameTime"]))
    }

    /// Accelerating voltage in V: DM `ImageTags.Microscope Info.Voltage`; TIA
    /// `...MicroscopeConditions.AcceleratingVoltage` or `ExperimentalDescription.High tension_kV`.
    pub fn voltage_v(&self) -> Option<f64> {
        let v = self.meta_number(&[
            "ImageTags.Microscope Info.Voltage",
            "ObjectInfo.ExperimentalConditions.MicroscopeConditions.AcceleratingVoltage",
        ]);
        let kv = || self.meta_number(&["ObjectInfo.ExperimentalDescription.High tension_kV"]).map(|k| k * 1e3);
        Self::positive(Self::positive(v).or_else(kv))
    }

    /// Magnification: DM `ImageTags.Microscope Info.Indicated Magnification` (or `Actual
    /// Magnification`); TIA `ExperimentalDescription.Magnification_x` or `AcquireInfo.Magnification`.
    pub fn magnification(&self) -> Option<f64> {
        Self::positive(self.meta_number(&[
            "ImageTags.Microscope Info.Indicated Magnification",
            "ImageTags.Microscope Info.Actual Magnification",
            "ObjectInfo.ExperimentalDescription.Magnification_x",
            "ObjectInfo.AcquireInfo.Magnification",
        ]))
    }

    /// Probe (beam) current in nA: DM `ImageTags.Microscope Info.Probe Current (nA)`.
    pub fn beam_current_na(&self) -> Option<f64> {
        Self::positive(self.meta_number(&["ImageTags.Microscope Info.Probe Current (nA)"]))
    }

    /// Gun emission current in µA: DM `ImageTags.Microscope Info.Emission Current (µA)`;
    /// TIA `ObjectInfo.ExperimentalDescription.Emission_uA`.
    pub fn emission_ua(&self) -> Option<f64> {
        let dm = self.meta_number_prefix("ImageTags.Microscope Info.Emission Current");
        Self::positive(dm.or_else(|| self.meta_number(&["ObjectInfo.ExperimentalDescription.Emission_uA"])))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn leading_numbers() {
        assert_eq!(leading_number("13500000 X"), Some(13500000.0));
        assert_eq!(leading_number(" 3.5"), Some(3.5));
        assert_eq!(leading_number("2.9e-5"), Some(2.9e-5));
        assert_eq!(leading_number("abc"), None);
        assert_eq!(leading_number(""), None);
    }

    #[test]
    fn flips_rows_per_frame() {
        let mut p = Pixels::U8(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        p.flip_rows(3, 2);
        assert_eq!(p, Pixels::U8(vec![5, 6, 3, 4, 1, 2, 11, 12, 9, 10, 7, 8]));
        p.flip_rows(0, 2); // no panic on empty frames
    }

    #[test]
    fn shapes_beyond_the_limits_are_refused() {
        assert!(check_limits(&[2, 3]).is_ok());
        assert!(check_limits(&[limits::MAX_PAGES, 2, 2]).is_ok());
        assert!(check_limits(&[8193, 8192]).unwrap_err().contains("per frame"));
        assert!(check_limits(&[usize::MAX, 2]).is_err());
        assert!(check_limits(&[limits::MAX_PAGES + 1, 2, 2]).unwrap_err().contains("frames"));
        assert!(check_limits(&[usize::MAX, 2, 2, 2]).is_err());
    }

    #[test]
    fn clean_is_one_line() {
        assert_eq!(clean("a\nb", 10), "a b");
        assert_eq!(clean("abcdef", 3), "abc…");
    }
}
