//! Image files → frames: TIFF (8/16/32-bit and float, gray, RGB or palette, multi-page stacks), PNG
//! (8/16-bit), JPEG (8-bit) and NumPy `.npy` (2-D, or 3-D with frames first), and the microscope
//! files of [`crate::microscope`] (Gatan DM3/DM4, TIA `.emi`/`.ser`: one frame per image, n for a
//! 3-D stack). Every failure names the file and the problem.
//!
//! Palette TIFFs (what many SEMs export): a grey palette whose entry i is i (the usual identity
//! ramp) gives the 8-bit indices as they are; any other palette is expanded to its 16-bit entries,
//! coloured ones by Rec. 601 luminance. [`sem_pixel_size`] reads the pixel size SEM software writes.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

use crate::frame::{Frame, IntPixel};
use crate::limits;
use crate::microscope;

/// A frame and where it came from (`file` or `file[page N]`).
#[derive(Clone, Debug)]
pub struct LoadedFrame {
    pub frame: Frame,
    pub source: String,
}

/// A file that cannot be read: names the file, the dataset (when there is one) and the problem.
/// Every reader of frames — image files here, HDF5 layouts in [`crate::record`] — reports this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {problem}", path.display(), dataset.as_ref().map(|d| format!(":{d}")).unwrap_or_default())]
#[must_use]
pub struct ReadError {
    pub path: PathBuf,
    pub dataset: Option<String>,
    pub problem: String,
}

impl ReadError {
    pub fn new(path: &Path, dataset: Option<&str>, problem: impl Into<String>) -> Self {
        Self { path: path.to_owned(), dataset: dataset.map(str::to_owned), problem: problem.into() }
    }
}

fn err(path: &Path, problem: impl Into<String>) -> ReadError {
    ReadError::new(path, None, problem)
}

enum Format {
    Tiff,
    Png,
    Jpeg,
    Npy,
}

fn sniff(path: &Path, head: &[u8]) -> Result<Format, ReadError> {
    if head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.starts_with(b"II+\0")
        || head.starts_with(b"MM\0+")
    {
        Ok(Format::Tiff)
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else if head.starts_with(b"\xff\xd8\xff") {
        Ok(Format::Jpeg)
    } else if head.starts_with(b"\x93NUMPY") {
        Ok(Format::Npy)
    } else {
        Err(err(
            path,
            "not a TIFF, PNG, JPEG or .npy file, nor a Gatan DM3/DM4 or TIA .emi/.ser file (unrecognised content)",
        ))
    }
}

/// Reads every frame in `path`. `mask_gaps` marks integer pixels at the dtype maximum invalid.
pub fn read_frames(path: &Path, mask_gaps: bool) -> Result<Vec<LoadedFrame>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    if meta.is_dir() {
        return Err(err(path, "is a directory, not an image file"));
    }
    if meta.len() == 0 {
        return Err(err(path, "empty file (0 bytes)"));
    }
    if meta.len() > limits::MAX_IMAGE_FILE_BYTES {
        return Err(err(
            path,
            format!("file of {} bytes exceeds the {} byte limit", meta.len(), limits::MAX_IMAGE_FILE_BYTES),
        ));
    }
    let vendor = microscope::detect(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let frames = if let Some(format) = vendor {
        read_microscope(path, format, mask_gaps)?
    } else {
        let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        match sniff(path, &bytes[..bytes.len().min(16)])? {
            Format::Tiff => read_tiff(path, &bytes, mask_gaps)?,
            Format::Png => vec![read_png(path, &bytes, mask_gaps)?],
            Format::Jpeg => vec![read_jpeg(path, &bytes)?],
            Format::Npy => read_npy(path, &bytes, mask_gaps)?,
        }
    };
    if frames.is_empty() {
        return Err(err(path, "contains no images"));
    }
    let name = path.display().to_string();
    let many = frames.len() > 1;
    Ok(frames
        .into_iter()
        .enumerate()
        .map(|(i, frame)| LoadedFrame { frame, source: if many { format!("{name}[page {i}]") } else { name.clone() } })
        .collect())
}

/// Every frame of a DM / TIA file's image (the first a series can be made of: see
/// [`microscope::open`]).
fn read_microscope(path: &Path, format: microscope::Format, mask: bool) -> Result<Vec<Frame>, ReadError> {
    let opened = microscope::open(path, format).map_err(|p| err(path, p))?;
    (0..opened.frames()).map(|i| opened.frame(i, mask).map_err(|p| err(path, p))).collect()
}

fn from_ints<P: IntPixel>(path: &Path, w: usize, h: usize, data: &[P], mask: bool) -> Result<Frame, ReadError> {
    Frame::from_ints(w, h, data, mask).map_err(|e| err(path, e.to_string()))
}

fn from_floats(path: &Path, w: usize, h: usize, data: Vec<f32>) -> Result<Frame, ReadError> {
    Frame::from_f32(w, h, data).map_err(|e| err(path, e.to_string()))
}

/// Colour → gray: channels that are all equal (a gray image saved as RGB) are taken as they are,
/// anything else by Rec. 601 luminance.
fn to_gray(samples: &[f32], channels: usize, alpha: bool) -> Vec<f32> {
    let colour = if alpha { channels - 1 } else { channels };
    samples
        .chunks_exact(channels)
        .map(|px| {
            if colour == 1 || px[..colour].iter().all(|&v| v == px[0]) {
                px[0]
            } else {
                0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]
            }
        })
        .collect()
}

/// The limits every TIFF page is decoded under: one frame of the largest size, in the widest
/// sample type (8 bytes), and strips/tiles no larger.
fn tiff_limits() -> tiff::decoder::Limits {
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = limits::MAX_FRAME_BYTES;
    limits.intermediate_buffer_size = limits::MAX_FRAME_BYTES;
    limits
}

/// Refuses a TIFF in which a tag claims more values than the file holds, before the tiff crate
/// reads it: the crate reserves a tag's value vector by its count (32 bytes a value, up to its
/// decoding limit), so a 3 kB file could make it reserve a quarter of a GiB per tag.
fn check_tag_counts<R: std::io::Read + std::io::Seek>(r: &mut R) -> Result<(), String> {
    use std::io::SeekFrom;
    let io = |e: std::io::Error| format!("cannot read: {e}");
    let len = r.seek(SeekFrom::End(0)).map_err(io)?;
    let mut head = [0u8; 16];
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let got = r.read(&mut head).map_err(io)?;
    let le = match &head[..2] {
        b"II" => true,
        b"MM" => false,
        _ => return r.seek(SeekFrom::Start(0)).map(|_| ()).map_err(io),
    };
    let uint = |b: &[u8]| -> u64 {
        let mut v = 0u64;
        for k in 0..b.len() {
            let byte = if le { b[b.len() - 1 - k] } else { b[k] };
            v = (v << 8) | u64::from(byte);
        }
        v
    };
    let big = match uint(&head[2..4]) {
        42 => false,
        43 => true,
        _ => return r.seek(SeekFrom::Start(0)).map(|_| ()).map_err(io),
    };
    let (entry_len, count_len) = if big { (20u64, 8usize) } else { (12, 2) };
    let mut next = if big && got >= 16 { uint(&head[8..16]) } else { uint(&head[4..8]) };
    let mut seen = std::collections::HashSet::new();
    // Malformed chains (past the end, cycles) are left for the tiff crate to report.
    while next != 0 && next < len && seen.insert(next) && seen.len() <= limits::MAX_PAGES {
        r.seek(SeekFrom::Start(next)).map_err(io)?;
        let mut n = [0u8; 8];
        r.read_exact(&mut n[..count_len]).map_err(io)?;
        let entries = uint(&n[..count_len]);
        if entries.saturating_mul(entry_len) > len {
            return Err(format!("an IFD at byte {next} claims {entries} entries, more than the file holds"));
        }
        let mut e = vec![0u8; entry_len as usize];
        for _ in 0..entries {
            r.read_exact(&mut e).map_err(io)?;
            let (tag, kind) = (uint(&e[0..2]), uint(&e[2..4]));
            let count = if big { uint(&e[4..12]) } else { uint(&e[4..8]) };
            let size = match kind {
                3 | 8 => 2,
                4 | 9 | 11 | 13 => 4,
                5 | 10 | 12 | 16 | 17 | 18 => 8,
                _ => 1,
            };
            if count.saturating_mul(size) > len {
                return Err(format!("tag {tag} claims {count} values, more than the file's {len} bytes hold (refused)"));
            }
        }
        let mut n = [0u8; 8];
        let off_len = if big { 8 } else { 4 };
        if r.read_exact(&mut n[..off_len]).is_err() {
            break;
        }
        next = uint(&n[..off_len]);
    }
    r.seek(SeekFrom::Start(0)).map(|_| ()).map_err(io)
}

/// A TIFF read one page at a time: a stack of any length costs one page of memory, and a page
/// is refused by its header (size, colour type) before its pixels are decoded.
pub struct TiffPages<R: std::io::Read + std::io::Seek> {
    path: PathBuf,
    dec: tiff::decoder::Decoder<R>,
    pages: usize,
    current: usize,
    mask: bool,
    /// Pages whose palette the reader applies itself (the tiff crate refuses palette images: they
    /// are handed to it relabelled as gray, see [`palette_as_gray`]).
    palette_pages: Vec<usize>,
}

impl TiffPages<std::io::BufReader<std::fs::File>> {
    /// Opens the TIFF at `path` and counts its pages (their headers only).
    pub fn open(path: &Path, mask: bool) -> Result<Self, ReadError> {
        let file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
        Self::new(path, std::io::BufReader::new(file), mask)
    }
}

impl<R: std::io::Read + std::io::Seek> TiffPages<R> {
    pub fn new(path: &Path, mut reader: R, mask: bool) -> Result<Self, ReadError> {
        check_tag_counts(&mut reader).map_err(|e| err(path, e))?;
        let terr = |page: usize, e: tiff::TiffError| err(path, format!("TIFF page {page}: {e}"));
        let mut dec = tiff::decoder::Decoder::new(reader).map_err(|e| terr(0, e))?.with_limits(tiff_limits());
        let mut pages = 1;
        while dec.more_images() {
            if pages >= limits::MAX_PAGES {
                return Err(err(path, format!("more than {} pages", limits::MAX_PAGES)));
            }
            dec.next_image().map_err(|e| terr(pages, e))?;
            pages += 1;
        }
        dec.seek_to_image(0).map_err(|e| terr(0, e))?;
        Ok(Self { path: path.to_owned(), dec, pages, current: 0, mask, palette_pages: Vec::new() })
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Page `page`'s (width, height) from its header, without decoding it.
    pub fn dimensions(&mut self, page: usize) -> Result<(usize, usize), ReadError> {
        self.seek(page)?;
        let (w, h) = self.dec.dimensions().map_err(|e| self.terr(page, e))?;
        Ok((w as usize, h as usize))
    }

    fn terr(&self, page: usize, e: tiff::TiffError) -> ReadError {
        err(&self.path, format!("TIFF page {page}: {e}"))
    }

    fn seek(&mut self, page: usize) -> Result<(), ReadError> {
        if page >= self.pages {
            return Err(err(&self.path, format!("page {page} is out of range ({} pages)", self.pages)));
        }
        if page != self.current {
            self.dec.seek_to_image(page).map_err(|e| self.terr(page, e))?;
            self.current = page;
        }
        Ok(())
    }

    /// Refuses a page whose header claims more pixel bytes than its strips or tiles could hold:
    /// their stored bytes times the most its compression can expand (uncompressed 1, PackBits 128,
    /// deflate 1032, LZW and anything else 4096). The tiff crate sizes its output by the claim.
    fn check_stored(&mut self, page: usize, w: usize, h: usize) -> Result<(), ReadError> {
        use tiff::tags::Tag;
        let samples = self.dec.find_tag_unsigned::<u64>(Tag::SamplesPerPixel).ok().flatten().unwrap_or(1);
        let bits: u64 = self
            .dec
            .find_tag_unsigned_vec::<u64>(Tag::BitsPerSample)
            .ok()
            .flatten()
            .and_then(|b| b.into_iter().max())
            .unwrap_or(1);
        let claimed = (w as u64).saturating_mul(h as u64).saturating_mul(samples).saturating_mul(bits) / 8;
        let counts = match self.dec.find_tag_unsigned_vec::<u64>(Tag::StripByteCounts).ok().flatten() {
            Some(c) => Some(c),
            None => self.dec.find_tag_unsigned_vec::<u64>(Tag::TileByteCounts).ok().flatten(),
        };
        let Some(counts) = counts else { return Ok(()) };
        let stored = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
        let ratio = match self.dec.find_tag_unsigned::<u64>(Tag::Compression).ok().flatten().unwrap_or(1) {
            1 => 1,
            32773 => 128,
            8 | 32946 => 1032,
            _ => 4096,
        };
        // Slack for padding of the last row or strip.
        if claimed > stored.saturating_mul(ratio).saturating_add(64 * 1024) {
            return Err(err(
                &self.path,
                format!(
                    "TIFF page {page}: {w}×{h} px claims {claimed} bytes, but its strips store {stored} bytes (refused)"
                ),
            ));
        }
        Ok(())
    }

    /// Decodes page `page`.
    pub fn read(&mut self, page: usize) -> Result<Frame, ReadError> {
        use tiff::ColorType;
        use tiff::decoder::DecodingResult;
        let (w, h) = self.dimensions(page)?;
        let path = self.path.clone();
        let path = path.as_path();
        if w.checked_mul(h).is_none_or(|n| n > limits::MAX_FRAME_PIXELS) {
            return Err(err(
                path,
                format!("TIFF page {page}: {w}×{h} px exceeds the limit of {} pixels", limits::MAX_FRAME_PIXELS),
            ));
        }
        let color = self.dec.colortype().map_err(|e| self.terr(page, e))?;
        let (channels, alpha) = match color {
            ColorType::Gray(_) => (1, false),
            ColorType::GrayA(_) => (2, true),
            ColorType::RGB(_) => (3, false),
            ColorType::RGBA(_) => (4, true),
            other => return Err(err(path, format!("TIFF page {page}: unsupported colour type {other:?}"))),
        };
        self.check_stored(page, w, h)?;
        let palette = if self.palette_pages.contains(&page) {
            Some(read_palette(&mut self.dec).map_err(|e| self.terr(page, e))?)
        } else {
            None
        };
        let img = self.dec.read_image().map_err(|e| self.terr(page, e))?;
        let mask = self.mask;
        if let Some(map) = palette {
            let DecodingResult::U8(v) = img else {
                return Err(err(path, format!("TIFF page {page}: only 8-bit palette images are supported")));
            };
            apply_palette(path, w, h, &v, &map, mask)
        } else if channels == 1 {
            match img {
                DecodingResult::U8(v) => from_ints(path, w, h, &v, mask),
                DecodingResult::U16(v) => from_ints(path, w, h, &v, mask),
                DecodingResult::U32(v) => from_ints(path, w, h, &v, mask),
                DecodingResult::F32(v) => from_floats(path, w, h, v),
                DecodingResult::F64(v) => from_floats(path, w, h, v.into_iter().map(|x| x as f32).collect()),
                DecodingResult::I8(v) => from_floats(path, w, h, v.into_iter().map(f32::from).collect()),
                DecodingResult::I16(v) => from_floats(path, w, h, v.into_iter().map(f32::from).collect()),
                DecodingResult::I32(v) => from_floats(path, w, h, v.into_iter().map(|x| x as f32).collect()),
                _ => Err(err(path, format!("TIFF page {page}: unsupported sample format"))),
            }
        } else {
            let samples: Vec<f32> = match img {
                DecodingResult::U8(v) => v.into_iter().map(f32::from).collect(),
                DecodingResult::U16(v) => v.into_iter().map(f32::from).collect(),
                DecodingResult::F32(v) => v,
                _ => return Err(err(path, format!("TIFF page {page}: unsupported colour sample format"))),
            };
            from_floats(path, w, h, to_gray(&samples, channels, alpha))
        }
    }
}

/// Every page of a TIFF held in memory, up to [`limits::MAX_FILE_PIXELS`] in all (checked from
/// each page's header before it is decoded).
fn read_tiff(path: &Path, bytes: &[u8], mask: bool) -> Result<Vec<Frame>, ReadError> {
    // Palette pages are decoded as gray indices and mapped here (held in memory: the relabelling
    // edits the file's bytes, so a streamed stack of palette pages is not supported).
    let patched = palette_as_gray(bytes);
    let palette_pages = patched.as_ref().map(|(_, pages)| pages.clone()).unwrap_or_default();
    let bytes = patched.as_ref().map_or(bytes, |(b, _)| b.as_slice());
    let mut pages = TiffPages::new(path, Cursor::new(bytes), mask)?;
    pages.palette_pages = palette_pages;
    // Every page's size from its header first: a stack too large to hold is refused before any
    // page is decoded.
    let mut pixels = 0usize;
    for page in 0..pages.pages() {
        let (w, h) = pages.dimensions(page)?;
        pixels = pixels.saturating_add(w.saturating_mul(h));
    }
    if pixels > limits::MAX_FILE_PIXELS {
        return Err(err(
            path,
            format!(
                "{} pages hold {pixels} pixels, more than the {} held at once (replay reads stacks page by page)",
                pages.pages(),
                limits::MAX_FILE_PIXELS
            ),
        ));
    }
    (0..pages.pages()).map(|page| pages.read(page)).collect()
}

/// The IFD entries of a classic (not Big) TIFF: (offset of the entry, tag, type, count, value field).
fn classic_ifd_entries(bytes: &[u8]) -> Option<Vec<Vec<(usize, u16, u16, u32, [u8; 4])>>> {
    let le = match bytes.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) })
    };
    let u32_at = |o: usize| {
        bytes.get(o..o + 4).map(|b| {
            if le { u32::from_le_bytes([b[0], b[1], b[2], b[3]]) } else { u32::from_be_bytes([b[0], b[1], b[2], b[3]]) }
        })
    };
    let mut pages = Vec::new();
    let mut next = u32_at(4)? as usize;
    let mut seen = std::collections::HashSet::new();
    while next != 0 && pages.len() < limits::MAX_PAGES && seen.insert(next) {
        let n = u16_at(next)? as usize;
        let mut entries = Vec::with_capacity(n);
        for k in 0..n {
            let o = next + 2 + 12 * k;
            let v = bytes.get(o + 8..o + 12)?;
            entries.push((o, u16_at(o)?, u16_at(o + 2)?, u32_at(o + 4)?, [v[0], v[1], v[2], v[3]]));
        }
        pages.push(entries);
        next = u32_at(next + 2 + 12 * n)? as usize;
    }
    Some(pages)
}

/// A copy of `bytes` whose palette pages say "gray" (PhotometricInterpretation 3 → 1), and which
/// pages those were; `None` when there are none (or the file is not a classic TIFF).
fn palette_as_gray(bytes: &[u8]) -> Option<(Vec<u8>, Vec<usize>)> {
    const PHOTOMETRIC: u16 = 262;
    const SHORT: u16 = 3;
    let le = bytes.starts_with(b"II");
    let mut out: Option<Vec<u8>> = None;
    let mut pages = Vec::new();
    for (page, entries) in classic_ifd_entries(bytes)?.into_iter().enumerate() {
        for (o, tag, ty, count, v) in entries {
            let value = if le { u16::from_le_bytes([v[0], v[1]]) } else { u16::from_be_bytes([v[0], v[1]]) };
            if tag == PHOTOMETRIC && ty == SHORT && count == 1 && value == 3 {
                let buf = out.get_or_insert_with(|| bytes.to_vec());
                let one = if le { 1u16.to_le_bytes() } else { 1u16.to_be_bytes() };
                buf[o + 8..o + 10].copy_from_slice(&one);
                pages.push(page);
            }
        }
    }
    out.map(|b| (b, pages))
}

/// The page's ColorMap: red, green and blue 16-bit entries, 256 each for 8-bit indices.
fn read_palette<R: std::io::Read + std::io::Seek>(
    dec: &mut tiff::decoder::Decoder<R>,
) -> tiff::TiffResult<Vec<[u16; 3]>> {
    let v = dec.get_tag_u16_vec(tiff::tags::Tag::ColorMap)?;
    let n = v.len() / 3;
    Ok((0..n).map(|i| [v[i], v[n + i], v[2 * n + i]]).collect())
}

fn apply_palette(
    path: &Path,
    w: usize,
    h: usize,
    idx: &[u8],
    map: &[[u16; 3]],
    mask: bool,
) -> Result<Frame, ReadError> {
    if map.len() < 256 {
        return Err(err(path, format!("TIFF palette has {} entries; an 8-bit palette image needs 256", map.len())));
    }
    let grey = map.iter().all(|c| c[0] == c[1] && c[1] == c[2]);
    // Entry i = i·257 (or i·256): the palette says nothing the indices do not.
    let identity = grey && map.iter().take(256).enumerate().all(|(i, c)| c[0] as usize / 256 == i);
    if identity {
        return from_ints(path, w, h, idx, mask);
    }
    let level = |c: &[u16; 3]| -> u16 {
        if grey { c[0] } else { (0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64).round() as u16 }
    };
    let lut: Vec<u16> = map.iter().take(256).map(level).collect();
    let px: Vec<u16> = idx.iter().map(|&i| lut[i as usize]).collect();
    from_ints(path, w, h, &px, mask)
}

fn read_jpeg(path: &Path, bytes: &[u8]) -> Result<Frame, ReadError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Jpeg);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((limits::MAX_FRAME_PIXELS * 8) as u64);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| err(path, format!("JPEG: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        let rgb = img.to_rgb8();
        from_floats(path, w, h, to_gray(&rgb.as_raw().iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), 3, false))
    } else {
        from_ints(path, w, h, img.to_luma8().as_raw(), false)
    }
}

/// A pixel size from an SEM file's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelSize {
    pub metres: f64,
    /// Where it was read: `FEI/Thermo tag 34682 PixelWidth`, `Zeiss tag 34118 Image Pixel Size`,
    /// `Hitachi sidecar PixelSize`.
    pub source: &'static str,
}

/// The pixel size that SEM software writes, where present: FEI/Thermo Fisher TIFF tag 34682 (ini
/// text, `[Scan] PixelWidth=` in metres), Zeiss SmartSEM TIFF tag 34118 (`Image Pixel Size = 2.5 nm`,
/// or the value after `AP_PIXEL_SIZE`), and a Hitachi sidecar `NAME.txt` with `PixelSize=` (nm).
/// JEOL sidecars give only a magnification and a scale-bar length, not a pixel size: not read.
pub fn sem_pixel_size(path: &Path) -> Option<PixelSize> {
    tiff_pixel_size(path).or_else(|| hitachi_sidecar(path))
}

fn tiff_pixel_size(path: &Path) -> Option<PixelSize> {
    use tiff::decoder::{Decoder, ifd::Value};
    use tiff::tags::Tag;
    let bytes = std::fs::read(path).ok()?;
    let patched = palette_as_gray(&bytes);
    let bytes = patched.as_ref().map_or(bytes.as_slice(), |(b, _)| b.as_slice());
    check_tag_counts(&mut Cursor::new(bytes)).ok()?;
    let mut dec = Decoder::new(Cursor::new(bytes)).ok()?;
    let text = |v: Value| -> Option<String> {
        match v {
            Value::Ascii(s) => Some(s),
            other => other.into_u8_vec().ok().map(|b| String::from_utf8_lossy(&b).into_owned()),
        }
    };
    if let Some(t) = dec.find_tag(Tag::Unknown(34682)).ok().flatten().and_then(text)
        && let Some(m) = fei_pixel_width(&t)
    {
        return Some(PixelSize { metres: m, source: "FEI/Thermo tag 34682 PixelWidth" });
    }
    if let Some(t) = dec.find_tag(Tag::Unknown(34118)).ok().flatten().and_then(text)
        && let Some(m) = zeiss_pixel_size(&t)
    {
        return Some(PixelSize { metres: m, source: "Zeiss tag 34118 Image Pixel Size" });
    }
    None
}

fn positive(v: f64) -> Option<f64> {
    (v.is_finite() && v > 0.0).then_some(v)
}

/// `PixelWidth=1.5e-009` in the `[Scan]` section (metres); the first one when there is no section.
fn fei_pixel_width(text: &str) -> Option<f64> {
    let mut section = String::new();
    let mut any = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(v) =
            line.strip_prefix("PixelWidth=").and_then(|v| v.trim().parse::<f64>().ok()).and_then(positive)
        {
            if section == "[Scan]" {
                return Some(v);
            }
            any = any.or(Some(v));
        }
    }
    any
}

/// `Image Pixel Size = 2.481 nm` (or the line after `AP_PIXEL_SIZE`), unit pm, nm, µm/um or mm.
fn zeiss_pixel_size(text: &str) -> Option<f64> {
    let lines: Vec<&str> = text.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).collect();
    let value = lines.iter().find_map(|l| l.strip_prefix("Image Pixel Size").map(str::trim)).or_else(|| {
        let k = lines.iter().position(|l| *l == "AP_PIXEL_SIZE")?;
        lines.get(k + 1).map(|l| l.split_once('=').map_or(*l, |(_, v)| v).trim())
    })?;
    let value = value.trim_start_matches('=').trim();
    let (num, unit) = value.split_once(char::is_whitespace).unwrap_or((value, "nm"));
    let scale = match unit.trim() {
        "pm" => 1e-12,
        "nm" => 1e-9,
        "µm" | "um" | "μm" => 1e-6,
        "mm" => 1e-3,
        _ => return None,
    };
    num.trim().parse::<f64>().ok().and_then(positive).map(|v| v * scale)
}

/// Hitachi S-/SU-series `NAME.txt` beside `NAME.tif`: `PixelSize=2.480469` (nm).
fn hitachi_sidecar(path: &Path) -> Option<PixelSize> {
    let text = std::fs::read(path.with_extension("txt")).ok()?;
    if text.len() > 1 << 20 {
        return None;
    }
    let text = String::from_utf8_lossy(&text);
    let nm = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PixelSize=")?.trim().parse::<f64>().ok())
        .and_then(positive)?;
    Some(PixelSize { metres: nm * 1e-9, source: "Hitachi sidecar PixelSize" })
}

fn read_png(path: &Path, bytes: &[u8], mask: bool) -> Result<Frame, ReadError> {
    use image::DynamicImage;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    // One frame of the largest size, whatever the sample type: the decoder refuses a header that
    // needs more before allocating it.
    limits.max_alloc = Some(limits::MAX_FRAME_BYTES as u64);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| err(path, format!("PNG: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        DynamicImage::ImageLuma8(b) => from_ints(path, w, h, b.as_raw(), mask),
        DynamicImage::ImageLuma16(b) => from_ints(path, w, h, b.as_raw(), mask),
        DynamicImage::ImageLumaA8(b) => from_ints(path, w, h, &b.pixels().map(|p| p.0[0]).collect::<Vec<_>>(), mask),
        DynamicImage::ImageLumaA16(b) => from_ints(path, w, h, &b.pixels().map(|p| p.0[0]).collect::<Vec<_>>(), mask),
        DynamicImage::ImageRgb8(b) => {
            from_floats(path, w, h, to_gray(&b.as_raw().iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), 3, false))
        }
        DynamicImage::ImageRgba8(b) => {
            from_floats(path, w, h, to_gray(&b.as_raw().iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), 4, true))
        }
        DynamicImage::ImageRgb16(b) => {
            from_floats(path, w, h, to_gray(&b.as_raw().iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), 3, false))
        }
        DynamicImage::ImageRgba16(b) => {
            from_floats(path, w, h, to_gray(&b.as_raw().iter().map(|&v| f32::from(v)).collect::<Vec<_>>(), 4, true))
        }
        other => Err(err(path, format!("PNG: unsupported pixel format {:?}", other.color()))),
    }
}

fn read_npy(path: &Path, bytes: &[u8], mask: bool) -> Result<Vec<Frame>, ReadError> {
    use ndarray_npy::npy::header::Header;
    let mut cursor = Cursor::new(bytes);
    let header = Header::from_reader(&mut cursor).map_err(|e| err(path, format!(".npy header: {e}")))?;
    let descr = header.type_descriptor.to_string().trim_matches('\'').to_string();
    let (frames, h, w) = match header.shape.as_slice() {
        [h, w] => (1, *h, *w),
        [n, h, w] => (*n, *h, *w),
        s => {
            return Err(err(
                path,
                format!(".npy array has shape {s:?}; expected 2-D (rows, cols) or 3-D (frames, rows, cols)"),
            ));
        }
    };
    // Check what the header claims against what the file holds before anything is allocated.
    let item = match descr.get(1..).unwrap_or("") {
        "u1" | "i1" | "b1" => 1,
        "u2" | "i2" | "f2" => 2,
        "u4" | "i4" | "f4" => 4,
        "u8" | "i8" | "f8" => 8,
        _ => {
            return Err(err(
                path,
                format!(
                    "unsupported .npy dtype '{descr}' (use float32, float64, uint8, uint16, uint32, int16 or int32)"
                ),
            ));
        }
    };
    let claimed = frames.checked_mul(h).and_then(|n| n.checked_mul(w)).and_then(|n| n.checked_mul(item));
    let have = bytes.len() - cursor.position() as usize;
    match claimed {
        Some(c) if c <= have => {}
        _ => {
            return Err(err(
                path,
                format!(
                    ".npy header claims {frames}×{h}×{w} values of {item} bytes but the file holds {have} data bytes"
                ),
            ));
        }
    }
    if h.checked_mul(w).is_none_or(|n| n > limits::MAX_FRAME_PIXELS) || frames > limits::MAX_PAGES {
        return Err(err(path, format!(".npy array {frames}×{h}×{w} exceeds the frame limits")));
    }
    let npy = |e: ndarray_npy::ReadNpyError| err(path, format!(".npy: {e}"));
    macro_rules! ints {
        ($t:ty) => {{
            let a = ArrayD::<$t>::read_npy(Cursor::new(bytes)).map_err(npy)?;
            split(&a, frames, h, w).into_iter().map(|v| from_ints(path, w, h, &v, mask)).collect()
        }};
    }
    macro_rules! floats {
        ($t:ty) => {{
            let a = ArrayD::<$t>::read_npy(Cursor::new(bytes)).map_err(npy)?;
            split(&a, frames, h, w)
                .into_iter()
                .map(|v| from_floats(path, w, h, v.into_iter().map(|x| x as f32).collect()))
                .collect()
        }};
    }
    match descr.get(1..).unwrap_or("") {
        "f4" => floats!(f32),
        "f8" => floats!(f64),
        "u1" => ints!(u8),
        "u2" => ints!(u16),
        "u4" => ints!(u32),
        "i2" => floats!(i16),
        "i4" => floats!(i32),
        _ => Err(err(
            path,
            format!("unsupported .npy dtype '{descr}' (use float32, float64, uint8, uint16, uint32, int16 or int32)"),
        )),
    }
}

/// Frames of a 2-D or 3-D array in logical (C) order, whatever the file's memory order
/// (`iter` walks logical order, so Fortran-ordered files come out right).
fn split<T: Copy>(a: &ArrayD<T>, frames: usize, h: usize, w: usize) -> Vec<Vec<T>> {
    let flat: Vec<T> = a.iter().copied().collect();
    flat.chunks_exact((h * w).max(1)).take(frames).map(<[T]>::to_vec).collect()
}

/// Writes a 16-bit grayscale TIFF (what microscope software exports; used by the demo and tests).
pub fn write_tiff_u16(path: &Path, width: usize, height: usize, pixels: &[u16]) -> Result<(), ReadError> {
    use tiff::encoder::{TiffEncoder, colortype::Gray16};
    let file = std::fs::File::create(path).map_err(|e| err(path, format!("cannot create: {e}")))?;
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(file)).map_err(|e| err(path, format!("TIFF: {e}")))?;
    enc.write_image::<Gray16>(width as u32, height as u32, pixels).map_err(|e| err(path, format!("TIFF: {e}")))
}
