//! Microscope vendors' own image files → images with their calibration and acquisition
//! metadata, read with the standard library only:
//!
//! - [`dm`]: Gatan DigitalMicrograph DM3 / DM4 (`.dm3`, `.dm4`): 2-D images and 3-D stacks of
//!   integer, float or binary pixels; 1-D spectra, spectrum images, complex and RGB data are
//!   refused.
//! - [`tia`]: FEI / Thermo Fisher TIA (ES Vision): `name.emi` (metadata) + `name_N.ser` (the
//!   images, a series of 2-D elements); metres become nm and rows are flipped top-first, as
//!   RosettaSciIO shows them.
//! - [`types`]: [`Image`], [`Axis`], [`Pixels`], the one-line [`FileError`], a length-checked
//!   byte source, and the metadata accessors on [`Image`].
//!
//! Detection ([`detect`]) is by content: a DM file by its header — big-endian u32 version 3 or
//! 4 at offset 0, then the file size (u32 in DM3, u64 in DM4), then a big-endian u32 byte-order
//! flag 0 or 1 — and a TIA `.ser` by ByteOrder 0x4949, SeriesID 0x0197 and SeriesVersion
//! 0x0210 or 0x0220 (little-endian u16s at offset 0). A TIA `.emi` is recognised by its
//! extension (its own binary header is undocumented); its images are in the `_1.ser` beside it.
//!
//! Metadata read (the accessors on [`Image`] name every key): the pixel size, from the fast
//! (x) axis calibration in real-space units (`nm`, `pm`, `Å`, `µm`, `mm`, `m`; none for 1/nm
//! diffraction calibrations); the dwell time per pixel, DM `ImageTags.DigiScan.Sample Time`
//! (µs) or TIA `ObjectInfo.AcquireInfo.DwellTimePath` (s, scanned images only); the beam
//! current, DM `ImageTags.Microscope Info.Probe Current (nA)`; and, for notes, the camera
//! exposure, the frame time, the accelerating voltage, the magnification and the emission current.
//!
//! [`open`] takes the image of a file a series is made of and [`Opened::frame`] cuts it into
//! [`Frame`]s: a 2-D image is one frame, a 3-D stack `[n, y, x]` is n frames. Files larger than
//! [`crate::limits::MAX_IMAGE_FILE_BYTES`], frames over [`crate::limits::MAX_FRAME_PIXELS`] and
//! more than [`crate::limits::MAX_PAGES`] frames are refused before their pixels are allocated.

pub mod dm;
pub mod tia;
pub mod types;

use std::io::Read;
use std::path::Path;

use crate::frame::{Frame, IntPixel, PixelType};

pub use dm::{read_dm, read_dm_each};
pub use tia::read_tia;
pub use types::{Axis, FileError, Image, MAX_METADATA_ENTRIES, MAX_PIXEL_BYTES, Pixels};

/// A microscope file format, as [`detect`] recognises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Gatan DigitalMicrograph DM3 or DM4.
    Dm,
    /// A TIA `.ser` data file (its `.emi` beside it is read for metadata when present).
    TiaSer,
    /// A TIA `.emi` metadata file (the images come from the `_1.ser` beside it).
    TiaEmi,
}

/// Bytes of the head [`detect_head`] looks at.
pub const HEAD_BYTES: usize = 16;

/// The format of a file whose first bytes are `head` (at least [`HEAD_BYTES`] where the file
/// has them), or None.
pub fn detect_head(path: &Path, head: &[u8]) -> Option<Format> {
    let be32 = |at: usize| head.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
    let le16 = |at: usize| head.get(at..at + 2).and_then(|b| <[u8; 2]>::try_from(b).ok()).map(u16::from_le_bytes);
    // DM: version, file size (4 or 8 bytes), byte-order flag.
    let order_at = match be32(0) {
        Some(3) => Some(8),
        Some(4) => Some(12),
        _ => None,
    };
    if order_at.and_then(be32).is_some_and(|o| o <= 1) {
        return Some(Format::Dm);
    }
    if le16(0) == Some(0x4949) && le16(2) == Some(0x0197) && matches!(le16(4), Some(0x0210 | 0x0220)) {
        return Some(Format::TiaSer);
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    (ext.as_deref() == Some("emi")).then_some(Format::TiaEmi)
}

/// The format of the file at `path`, from its first bytes (and, for a TIA `.emi`, its name).
pub fn detect(path: &Path) -> std::io::Result<Option<Format>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::fs::File::open(path)?.take(HEAD_BYTES as u64).read_to_end(&mut head)?;
    Ok(detect_head(path, &head))
}

/// The image a series is read from, and how it was chosen.
#[derive(Debug)]
pub struct Opened {
    pub image: Image,
    /// "Gatan DigitalMicrograph DM3", "FEI/Thermo Fisher TIA (.emi/.ser)", ...
    pub format_name: String,
    /// Which image of the file (DM: the position in `ImageList`, thumbnails left out).
    pub index: usize,
    /// How many images the file holds (DM: besides thumbnails).
    pub images_in_file: usize,
    /// Plain-language notes: which image was taken and why, how pixels were converted.
    pub notes: Vec<String>,
    frames: usize,
    height: usize,
    width: usize,
}

/// Reads the file at `path` (of `format`, from [`detect`]) and takes the first image that can be
/// a series: a 2-D image or a 3-D stack that was not refused. A file whose every image is refused
/// is an error naming each refusal. Errors are one line, without the file name (the caller adds it).
pub fn open(path: &Path, format: Format) -> Result<Opened, String> {
    let name = dm::file_name(path);
    let problem = |e: FileError| {
        let prefix = format!("{name}: ");
        e.what.strip_prefix(&prefix).map(str::to_owned).unwrap_or(e.what)
    };
    let images: Vec<Result<Image, String>> = match format {
        Format::Dm => read_dm_each(path).map_err(problem)?,
        Format::TiaEmi => read_tia(path).map_err(problem)?.into_iter().map(Ok).collect(),
        Format::TiaSer => {
            let ser = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ser"));
            let read = if ser {
                read_tia(path)
            } else {
                // A .ser under another name: no .emi can be found beside it.
                let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
                tia::read_tia_from(&name, std::io::BufReader::new(file), None::<std::fs::File>, 1)
            };
            read.map_err(problem)?.into_iter().map(Ok).collect()
        }
    };
    let images_in_file = images.len();
    let mut refused = Vec::new();
    for (k, image) in images.into_iter().enumerate() {
        let image = image.and_then(|img| stack_shape(&img, k).map(|_| img));
        match image {
            Ok(image) => return Ok(opened(image, format, k, images_in_file, refused)),
            Err(why) => refused.push(why),
        }
    }
    match refused.as_slice() {
        [] => Err("holds no image".into()),
        [one] => Err(one.clone()),
        all => Err(format!("no image can be read: {}", all.join("; "))),
    }
}

/// (frames, rows, columns) of an image that can be a series, or why it cannot.
fn stack_shape(img: &Image, k: usize) -> Result<(usize, usize, usize), String> {
    match img.shape.as_slice() {
        [h, w] => Ok((1, *h, *w)),
        [n, h, w] => Ok((*n, *h, *w)),
        s => Err(format!(
            "image {k} has {} dimensions (shape {s:?}): a series is a 2-D image or a 3-D stack of images",
            s.len()
        )),
    }
}

fn opened(image: Image, format: Format, index: usize, images_in_file: usize, refused: Vec<String>) -> Opened {
    let (frames, height, width) = stack_shape(&image, index).unwrap_or((0, 0, 0));
    let format_name = match (format, image.meta("File.Format")) {
        (Format::Dm, Some(v)) => format!("Gatan DigitalMicrograph {v}"),
        (Format::Dm, None) => "Gatan DigitalMicrograph".to_string(),
        (Format::TiaSer | Format::TiaEmi, _) => "FEI/Thermo Fisher TIA (.emi/.ser)".to_string(),
    };
    let mut notes = Vec::new();
    if images_in_file > 1 {
        notes.push(format!("the file holds {images_in_file} images: image {index} is read"));
    }
    notes.extend(refused.into_iter().map(|why| format!("skipped: {why}")));
    let dtype = image.pixels.dtype_name();
    match &image.pixels {
        Pixels::U8(_) | Pixels::U16(_) | Pixels::U32(_) | Pixels::F32(_) => {}
        Pixels::I8(_) | Pixels::I16(_) => notes.push(format!("{dtype} pixels converted to f32 (exactly)")),
        Pixels::Bool(_) => notes.push("binary pixels converted to f32 as 0 and 1".to_string()),
        Pixels::I32(_) | Pixels::U64(_) | Pixels::I64(_) => {
            notes.push(format!("{dtype} pixels converted to f32 (exact up to 2^24 in magnitude)"))
        }
        Pixels::F64(_) => notes.push("float64 pixels converted to f32 (rounded to single precision)".to_string()),
    }
    Opened { image, format_name, index, images_in_file, notes, frames, height, width }
}

impl Opened {
    pub fn frames(&self) -> usize {
        self.frames
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixel type frames carry: the file's for u8/u16/u32, f32 for everything else.
    pub fn pixel_type(&self) -> PixelType {
        match self.image.pixels {
            Pixels::U8(_) => PixelType::U8,
            Pixels::U16(_) => PixelType::U16,
            Pixels::U32(_) => PixelType::U32,
            _ => PixelType::F32,
        }
    }

    /// Frame `i` (0-based, `i < frames()`); with `mask_gaps`, integer pixels at the dtype maximum
    /// are marked invalid (u8/u16/u32 only: other types are converted to f32).
    pub fn frame(&self, i: usize, mask_gaps: bool) -> Result<Frame, String> {
        let (w, h) = (self.width, self.height);
        let px = w.checked_mul(h).ok_or("frame size overflows")?;
        if i >= self.frames {
            return Err(format!("frame {i} is out of range ({} frames)", self.frames));
        }
        let range = i * px..(i + 1) * px;
        let short = || format!("frame {i}: the image holds too few pixels");
        fn ints<P: IntPixel>(w: usize, h: usize, v: Option<&[P]>, mask: bool, short: String) -> Result<Frame, String> {
            Frame::from_ints(w, h, v.ok_or(short)?, mask).map_err(|e| e.to_string())
        }
        fn floats<T: Copy>(
            w: usize,
            h: usize,
            v: Option<&[T]>,
            f: fn(T) -> f32,
            short: String,
        ) -> Result<Frame, String> {
            Frame::from_f32(w, h, v.ok_or(short)?.iter().map(|&x| f(x)).collect()).map_err(|e| e.to_string())
        }
        match &self.image.pixels {
            Pixels::U8(v) => ints(w, h, v.get(range), mask_gaps, short()),
            Pixels::U16(v) => ints(w, h, v.get(range), mask_gaps, short()),
            Pixels::U32(v) => ints(w, h, v.get(range), mask_gaps, short()),
            Pixels::I8(v) => floats(w, h, v.get(range), f32::from, short()),
            Pixels::I16(v) => floats(w, h, v.get(range), f32::from, short()),
            Pixels::I32(v) => floats(w, h, v.get(range), |x| x as f32, short()),
            Pixels::U64(v) => floats(w, h, v.get(range), |x| x as f32, short()),
            Pixels::I64(v) => floats(w, h, v.get(range), |x| x as f32, short()),
            Pixels::F32(v) => floats(w, h, v.get(range), |x| x, short()),
            Pixels::F64(v) => floats(w, h, v.get(range), |x| x as f32, short()),
            Pixels::Bool(v) => floats(w, h, v.get(range), |x| if x { 1.0 } else { 0.0 }, short()),
        }
    }

    /// One line for the output: the format, the pixel size found (or why there is none), and
    /// the other acquisition metadata the file gives.
    pub fn metadata_note(&self) -> String {
        let img = &self.image;
        let mut parts = Vec::new();
        match (img.pixel_size_nm(), img.pixel_size()) {
            (Some(nm), _) => parts.push(format!("pixel size {nm} nm ({} Å) from the x-axis calibration", nm * 10.0)),
            (None, Some((scale, units))) => {
                parts.push(format!("axes calibrated in {units} ({scale} per pixel): no real-space pixel size"))
            }
            (None, None) => parts.push("axes uncalibrated: no pixel size".to_string()),
        }
        if let Some(us) = img.dwell_time_us() {
            parts.push(format!("dwell time {us} µs"));
        }
        if let Some(s) = img.exposure_s() {
            parts.push(format!("exposure {s} s"));
        }
        if let Some(s) = img.frame_time_s() {
            parts.push(format!("frame time {s} s"));
        }
        if let Some(na) = img.beam_current_na() {
            parts.push(format!("probe current {na} nA"));
        }
        if let Some(v) = img.voltage_v() {
            parts.push(format!("{} kV", v / 1e3));
        }
        if let Some(m) = img.magnification() {
            parts.push(format!("magnification {m}×"));
        }
        format!("{}: {}", self.format_name, parts.join(", "))
    }
}
