//! Gatan DigitalMicrograph DM3 / DM4 reader.
//!
//! Layout: a header (version 3 or 4, file size, byte-order flag; all big-endian), then a tree of
//! tags. Every size and info-array entry is a big-endian u32 in DM3 and u64 in DM4; tag values
//! use the byte order of the header flag (little-endian in practice). Images live under
//! `ImageList`; each entry holds `ImageData` with `DataType`, `Dimensions` (x fastest),
//! `Calibrations.Dimension` (Origin, Scale, Units per dimension) and the pixel array `Data`.
//!
//! Which entries are images: every `ImageList` entry except those named by
//! `Thumbnails.*.ImageIndex` (as RosettaSciIO does); a file without a `Thumbnails` group and
//! with two or more entries has entry 0 skipped, the usual place of the thumbnail.
//!
//! What is refused (with a one-line error naming the image):
//! - 1-D data: fewer than two axes, or either of the last two axes of length 1 (DM stores an
//!   EELS spectrum as N x 1, which would otherwise pass for an image);
//! - spectrum images: the fast axis is calibrated in eV or keV;
//! - complex (FFT) and RGB data, and unknown DataType codes;
//! - a whole file when any one of its images is refused, so a caller never silently gets a
//!   subset of a document ([`read_dm`]); [`read_dm_each`] instead gives each image or why it was
//!   refused, for a caller that takes one image and says which;
//! - an image beyond the limits of [`crate::limits`] (pixels per frame, frames), before its
//!   pixels are allocated.
//!
//! Hostile input: the tag tree is at most [`MAX_DEPTH`] groups deep and [`MAX_TAGS`] tags in all;
//! arrays are not read during parsing (only their offset is kept) except small ones shown in the
//! metadata; every size is multiplied with checked arithmetic and checked against the bytes left
//! in the file before anything is allocated.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use super::types::{
    Axis, FileError, Image, Kind, MAX_METADATA_ENTRIES, MAX_VALUE_CHARS, Pixels, Res, Src, check_limits,
    check_pixel_bytes, clean,
};

/// Deepest nesting of tag groups accepted (real files use fewer than 10).
pub const MAX_DEPTH: usize = 64;
/// Most tags accepted in one file (real files hold a few thousand).
pub const MAX_TAGS: u64 = 200_000;
/// Longest info array accepted: a struct of up to 1024 fields.
const MAX_INFO: u64 = 3 + 2 * 1024 + 2;
/// Characters kept of a tag label.
const MAX_LABEL_CHARS: usize = 256;
/// Longest metadata key kept; deeper paths are dropped from the metadata.
const MAX_KEY_BYTES: usize = 1024;
/// Most dimensions accepted for an image.
const MAX_DIMS: usize = 8;
/// Numeric arrays up to this length are read and shown in the metadata.
const SMALL_ARRAY: u64 = 16;
/// u16 arrays (DM's strings) up to this length are read and shown as text.
const MAX_TEXT_UNITS: u64 = 4096;

/// Reads every image of a DM3/DM4 file except the thumbnail.
pub fn read_dm(path: &Path) -> Result<Vec<Image>, FileError> {
    let name = file_name(path);
    let file = File::open(path).map_err(|e| FileError::new(&name, &format!("cannot open: {e}")))?;
    // Default 8 KiB buffer: skips beyond it seek, so at worst one buffer is read per skip.
    read_dm_from(&name, BufReader::new(file))
}

/// As [`read_dm`], from any seekable source; `name` is used in error messages.
pub fn read_dm_from<R: Read + Seek>(name: &str, source: R) -> Result<Vec<Image>, FileError> {
    read_all(source).map_err(|e| FileError::new(name, &e))
}

/// Every image of a DM3/DM4 file except the thumbnail, each read or refused on its own: the
/// outer error is for the file (not DM, corrupt tag tree), an inner one for one image (its
/// refusal, as [`read_dm`] would report it).
pub fn read_dm_each(path: &Path) -> Result<Vec<Result<Image, String>>, FileError> {
    let name = file_name(path);
    let file = File::open(path).map_err(|e| FileError::new(&name, &format!("cannot open: {e}")))?;
    read_dm_each_from(&name, BufReader::new(file))
}

/// As [`read_dm_each`], from any seekable source; `name` is used in error messages.
pub fn read_dm_each_from<R: Read + Seek>(name: &str, source: R) -> Result<Vec<Result<Image, String>>, FileError> {
    read_each(source).map_err(|e| FileError::new(name, &e))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned()
}

fn read_all<R: Read + Seek>(source: R) -> Res<Vec<Image>> {
    read_each(source)?.into_iter().collect()
}

fn read_each<R: Read + Seek>(source: R) -> Res<Vec<Res<Image>>> {
    let mut src = Src::new(source)?;
    let fmt = parse_header(&mut src)?;
    let mut parser = Parser { src, fmt, tags: 0 };
    let root = parser.group_body(0)?;
    parser.images_each(&root)
}

// ---------------------------------------------------------------------------------------------
// Tag tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Format {
    /// DM4: sizes and info entries are 8 bytes, and each tag carries its byte length.
    v4: bool,
    /// Byte order of tag values and pixel data.
    le: bool,
}

/// A tag value. Arrays keep their place in the file and are read later, if needed.
#[derive(Debug)]
enum Val {
    I(i64),
    U(u64),
    F32(f32),
    F64(f64),
    B(bool),
    Text(String),
    Struct(Vec<Val>),
    Array { elem: u64, count: u64, offset: u64, shown: Option<String> },
    Other(String),
}

#[derive(Debug)]
struct Node {
    name: String,
    kind: NodeKind,
}

#[derive(Debug)]
enum NodeKind {
    Group(Vec<Node>),
    Data(Val),
}

fn parse_header<R: Read + Seek>(src: &mut Src<R>) -> Res<Format> {
    let short = |_| "too short for a DM3/DM4 header".to_string();
    let v4 = match src.u32(false).map_err(short)? {
        3 => false,
        4 => true,
        v => return Err(format!("not a DM3/DM4 file (version field {v})")),
    };
    // The declared file size is not trusted: every read is checked against the real length.
    if v4 {
        src.u64(false).map_err(short)?;
    } else {
        src.u32(false).map_err(short)?;
    }
    let le = match src.u32(false).map_err(short)? {
        0 => false,
        1 => true,
        o => return Err(format!("bad byte-order flag {o} in the DM header")),
    };
    Ok(Format { v4, le })
}

/// Byte width of a simple DM encoded type, None for the compound ones (struct, string, array).
fn simple_width(t: u64) -> Option<u64> {
    match t {
        8..=10 => Some(1),
        2 | 4 => Some(2),
        3 | 5 | 6 => Some(4),
        7 | 11 | 12 => Some(8),
        _ => None,
    }
}

fn type_name(t: u64) -> &'static str {
    match t {
        2 => "i16",
        3 => "i32",
        4 => "u16",
        5 => "u32",
        6 => "f32",
        7 => "f64",
        8 => "bool",
        9 => "i8",
        10 => "u8",
        11 => "i64",
        12 => "u64",
        15 => "struct",
        18 => "string",
        20 => "array",
        _ => "unknown",
    }
}

/// Labels are bytes: UTF-8 from recent writers, Latin-1 (e.g. "µ" as 0xB5) from older ones.
fn decode_label(raw: &[u8]) -> String {
    let text = match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    };
    clean(&text, MAX_LABEL_CHARS)
}

struct Parser<R> {
    src: Src<R>,
    fmt: Format,
    /// Tags seen so far, against [`MAX_TAGS`].
    tags: u64,
}

impl<R: Read + Seek> Parser<R> {
    /// A size or info entry: u32 in DM3, u64 in DM4, always big-endian.
    fn word(&mut self) -> Res<u64> {
        if self.fmt.v4 { self.src.u64(false) } else { self.src.u32(false).map(u64::from) }
    }

    /// The body of a tag group (sorted flag, open flag, tag count, tags) at nesting `depth`.
    fn group_body(&mut self, depth: usize) -> Res<Vec<Node>> {
        self.src.u8()?; // sorted
        self.src.u8()?; // open
        let count = self.word()?;
        let mut nodes = Vec::new();
        // No preallocation from `count`: the tag budget and the file length end a lying count.
        for _ in 0..count {
            nodes.push(self.tag(depth)?);
        }
        Ok(nodes)
    }

    fn tag(&mut self, depth: usize) -> Res<Node> {
        self.tags += 1;
        if self.tags > MAX_TAGS {
            return Err(format!("more than {MAX_TAGS} tags: not a plausible DM file"));
        }
        let at = self.src.pos();
        let kind = self.src.u8()?;
        let label_len = self.src.u16(false)?;
        let label = self.src.bytes(u64::from(label_len))?;
        let name = decode_label(&label);
        if self.fmt.v4 {
            self.src.u64(false)?; // byte length of the tag; we size everything ourselves
        }
        let kind = match kind {
            20 => {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!("tag groups nested deeper than {MAX_DEPTH} at offset {at}"));
                }
                NodeKind::Group(self.group_body(depth + 1)?)
            }
            21 => NodeKind::Data(self.data_tag()?),
            k => return Err(format!("unknown tag kind {k} at offset {at}")),
        };
        Ok(Node { name, kind })
    }

    fn data_tag(&mut self) -> Res<Val> {
        let at = self.src.pos();
        if self.src.take::<4>()? != *b"%%%%" {
            return Err(format!("data tag without its %%%% marker at offset {at}"));
        }
        let n = self.word()?;
        if n == 0 || n > MAX_INFO {
            return Err(format!("data tag at offset {at} has an info array of {n} entries"));
        }
        // n <= MAX_INFO, so this allocation is small whatever the file says.
        let mut info = Vec::with_capacity(n as usize);
        for _ in 0..n {
            info.push(self.word()?);
        }
        self.value(&info).map_err(|e| format!("data tag at offset {at}: {e}"))
    }

    /// Reads (or, for arrays, locates) the value an info array describes.
    fn value(&mut self, info: &[u64]) -> Res<Val> {
        match info {
            [t] if simple_width(*t).is_some() => self.scalar(*t),
            [18, len] => self.string(*len),
            [15, ..] => {
                let (fields, next) = struct_fields(info, 1)?;
                if next != info.len() {
                    return Err("struct info array has trailing entries".into());
                }
                let vals = fields.iter().map(|&t| self.scalar(t)).collect::<Res<Vec<_>>>()?;
                Ok(Val::Struct(vals))
            }
            [20, ..] => self.array(info),
            _ => Err(format!("unknown encoding {:?}", info.iter().take(4).collect::<Vec<_>>())),
        }
    }

    fn scalar(&mut self, t: u64) -> Res<Val> {
        let le = self.fmt.le;
        let s = &mut self.src;
        Ok(match t {
            2 => Val::I(i64::from(s.i16(le)?)),
            3 => Val::I(i64::from(s.i32(le)?)),
            4 => Val::U(u64::from(s.u16(le)?)),
            5 => Val::U(u64::from(s.u32(le)?)),
            6 => Val::F32(f32::from_bits(s.u32(le)?)),
            7 => Val::F64(s.f64(le)?),
            8 => Val::B(s.u8()? != 0),
            9 => Val::I(i64::from(s.u8()? as i8)),
            10 => Val::U(u64::from(s.u8()?)),
            11 => Val::I(s.u64(le)? as i64),
            12 => Val::U(s.u64(le)?),
            _ => return Err(format!("type {t} is not a simple type")),
        })
    }

    /// A type-18 string: `len` one-byte characters (as RosettaSciIO reads it).
    fn string(&mut self, len: u64) -> Res<Val> {
        self.src.need(len)?;
        let keep = len.min(MAX_VALUE_CHARS as u64);
        let raw = self.src.bytes(keep)?;
        self.src.skip(len - keep)?;
        Ok(Val::Text(decode_label(&raw)))
    }

    fn array(&mut self, info: &[u64]) -> Res<Val> {
        match info {
            [20, t, count] if simple_width(*t).is_some() => self.simple_array(*t, *count),
            [20, 15, ..] => {
                let (fields, next) = struct_fields(info, 2)?;
                let count = match info.get(next..) {
                    Some([c]) => *c,
                    _ => return Err("array-of-struct info array has the wrong length".into()),
                };
                let width = fields.iter().filter_map(|&t| simple_width(t)).sum::<u64>();
                self.skip_elements(count, width)?;
                Ok(Val::Other(format!("<array of {count} structs>")))
            }
            [20, 18, len, count] => {
                self.skip_elements(*count, *len)?;
                Ok(Val::Other(format!("<array of {count} strings>")))
            }
            [20, 20, t, len, count] => {
                let width = simple_width(*t).ok_or_else(|| format!("array of arrays of type {t}"))?;
                let inner = len.checked_mul(width).ok_or("array of arrays overflows")?;
                self.skip_elements(*count, inner)?;
                Ok(Val::Other(format!("<array of {count} arrays>")))
            }
            _ => Err(format!("unknown array encoding {:?}", info.iter().take(5).collect::<Vec<_>>())),
        }
    }

    /// Skips `count` elements of `width` bytes, all of which must be in the file.
    fn skip_elements(&mut self, count: u64, width: u64) -> Res<()> {
        let bytes = count.checked_mul(width).ok_or_else(|| format!("array of {count} x {width} bytes overflows"))?;
        self.src.skip(bytes)
    }

    /// Locates an array of a simple type; reads it only when it is small enough to show.
    fn simple_array(&mut self, t: u64, count: u64) -> Res<Val> {
        let width = simple_width(t).ok_or("not a simple type")?;
        let bytes = count.checked_mul(width).ok_or_else(|| format!("array of {count} {} overflows", type_name(t)))?;
        self.src.need(bytes)?;
        let offset = self.src.pos();
        let shown = if t == 4 && count <= MAX_TEXT_UNITS {
            Some(self.utf16(count)?)
        } else if count <= SMALL_ARRAY {
            let vals = (0..count).map(|_| self.scalar(t).map(|v| v.text())).collect::<Res<Vec<_>>>()?;
            Some(format!("[{}]", vals.join(", ")))
        } else {
            self.src.skip(bytes)?;
            None
        };
        Ok(Val::Array { elem: t, count, offset, shown })
    }

    /// DM strings are arrays of u16 code units (UTF-16 / UCS-2).
    fn utf16(&mut self, count: u64) -> Res<String> {
        let le = self.fmt.le;
        let units = (0..count).map(|_| self.src.u16(le)).collect::<Res<Vec<u16>>>()?;
        let text: String = char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
        Ok(clean(&text, MAX_VALUE_CHARS))
    }
}

/// Field types of a struct definition starting at `info[at]` (name length, field count, then
/// name length + type per field). Returns the types and the index after the definition.
fn struct_fields(info: &[u64], at: usize) -> Res<(Vec<u64>, usize)> {
    let n = *info.get(at + 1).ok_or("struct definition is cut short")?;
    let n = usize::try_from(n).map_err(|_| "struct field count is too large")?;
    let end = n.checked_mul(2).and_then(|x| x.checked_add(at + 2)).ok_or("struct field count is too large")?;
    let pairs = info.get(at + 2..end).ok_or("struct definition is cut short")?;
    let fields: Vec<u64> = pairs.chunks_exact(2).filter_map(|p| p.get(1).copied()).collect();
    if let Some(bad) = fields.iter().find(|&&t| simple_width(t).is_none()) {
        return Err(format!("struct field of non-simple type {bad}"));
    }
    Ok((fields, end))
}

impl Val {
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::I(x) => Some(x as f64),
            Val::U(x) => Some(x as f64),
            Val::F32(x) => Some(f64::from(x)),
            Val::F64(x) => Some(x),
            Val::B(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match *self {
            Val::I(x) => u64::try_from(x).ok(),
            Val::U(x) => Some(x),
            _ => None,
        }
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            Val::Array { elem: 4, shown: Some(s), .. } => Some(s),
            _ => None,
        }
    }

    /// The value as metadata text.
    fn text(&self) -> String {
        match self {
            Val::I(x) => x.to_string(),
            Val::U(x) => x.to_string(),
            Val::F32(x) => x.to_string(),
            Val::F64(x) => x.to_string(),
            Val::B(b) => b.to_string(),
            Val::Text(s) | Val::Other(s) => s.clone(),
            Val::Struct(v) => format!("({})", v.iter().map(Val::text).collect::<Vec<_>>().join(", ")),
            Val::Array { shown: Some(s), .. } => s.clone(),
            Val::Array { elem, count, .. } => format!("<{} array, {count} elements>", type_name(*elem)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

fn child<'a>(nodes: &'a [Node], name: &str) -> Option<&'a Node> {
    nodes.iter().find(|n| n.name == name)
}

fn group<'a>(nodes: &'a [Node], name: &str) -> Option<&'a [Node]> {
    match &child(nodes, name)?.kind {
        NodeKind::Group(g) => Some(g),
        NodeKind::Data(_) => None,
    }
}

fn data<'a>(nodes: &'a [Node], name: &str) -> Option<&'a Val> {
    match &child(nodes, name)?.kind {
        NodeKind::Data(v) => Some(v),
        NodeKind::Group(_) => None,
    }
}

/// The children of a group that are themselves groups, numbered among groups only (the
/// numbering `Thumbnails.*.ImageIndex` refers to, RosettaSciIO's `TagGroupN`).
fn subgroups(nodes: &[Node]) -> impl Iterator<Item = (usize, &[Node])> {
    nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Group(g) => Some(g.as_slice()),
            NodeKind::Data(_) => None,
        })
        .enumerate()
}

/// `ImageList` positions named as thumbnails, or None when the file has no `Thumbnails` group.
fn thumbnail_indices(root: &[Node]) -> Option<Vec<u64>> {
    let thumbs = group(root, "Thumbnails")?;
    Some(subgroups(thumbs).filter_map(|(_, t)| data(t, "ImageIndex").and_then(Val::as_u64)).collect())
}

/// Pixel type of a DM `ImageData.DataType` code, or why it is refused.
fn pixel_kind(code: u64) -> Res<Kind> {
    Ok(match code {
        1 => Kind::I16,
        2 => Kind::F32,
        6 => Kind::U8,
        7 => Kind::I32,
        9 => Kind::I8,
        10 => Kind::U16,
        11 => Kind::U32,
        12 => Kind::F64,
        14 => Kind::Bool,
        39 => Kind::I64,
        40 => Kind::U64,
        3 | 5 | 13 | 27 | 28 => {
            return Err(format!("holds complex-valued (FFT) data (DataType {code}), not supported"));
        }
        8 | 15..=26 => return Err(format!("holds RGB colour data (DataType {code}), not supported")),
        _ => return Err(format!("has unsupported DataType {code}")),
    })
}

fn is_float_kind(k: Kind) -> bool {
    matches!(k, Kind::F32 | Kind::F64)
}

fn is_float_type(t: u64) -> bool {
    matches!(t, 6 | 7)
}

fn is_energy(units: &str) -> bool {
    matches!(units, "eV" | "keV")
}

/// How an axis reads in a refusal message: "'Energy loss' in eV" or "uncalibrated".
fn describe(a: &Axis) -> String {
    let name = match a.units.as_str() {
        "eV" => "Energy loss",
        "keV" => "Energy",
        _ => a.name.as_str(),
    };
    if a.units.is_empty() { "uncalibrated".to_string() } else { format!("'{name}' in {}", a.units) }
}

/// Refuses what a beam-damage monitor cannot treat as an image: 1-D data (either of the last
/// two axes of length 1) and energy-dispersive data (fast axis in eV or keV).
fn refuse_non_image(axes: &[Axis], k: usize) -> Res<()> {
    let shape: Vec<usize> = axes.iter().map(|a| a.size).collect();
    let last_two = axes.get(axes.len().saturating_sub(2)..).unwrap_or(axes);
    if axes.len() < 2 || last_two.iter().any(|a| a.size == 1) {
        let long: Vec<&Axis> = axes.iter().filter(|a| a.size > 1).collect();
        let channel = match long.as_slice() {
            [c] => Some(*c),
            [] => axes.last(),
            _ => None,
        };
        if let Some(channel) = channel {
            return Err(format!(
                "image {k} is a 1-D spectrum ({} channels, {}), not an image",
                channel.size,
                describe(channel)
            ));
        }
        return Err(format!("image {k} is 1-D along its last two axes (shape {shape:?}), not an image"));
    }
    if let Some(fast) = axes.last().filter(|a| is_energy(&a.units)) {
        return Err(format!(
            "image {k} is a spectrum image (fast axis {}, shape {shape:?}), not an image",
            describe(fast)
        ));
    }
    Ok(())
}

/// `ImageData.Dimensions`, fastest (x) first.
fn dimensions(idata: &[Node]) -> Res<Vec<u64>> {
    let dims = group(idata, "Dimensions").ok_or("no ImageData.Dimensions")?;
    let sizes = dims
        .iter()
        .map(|n| match &n.kind {
            NodeKind::Data(v) => v.as_u64().ok_or("a dimension is not a non-negative integer"),
            NodeKind::Group(_) => Err("a dimension is a group"),
        })
        .collect::<Result<Vec<u64>, _>>()?;
    if sizes.is_empty() || sizes.len() > MAX_DIMS {
        return Err(format!("has {} dimensions (1 to {MAX_DIMS} supported)", sizes.len()));
    }
    if sizes.contains(&0) {
        return Err(format!("has a zero-length dimension {sizes:?}"));
    }
    Ok(sizes)
}

/// Axes in C order (slowest first) from DM dimensions and calibrations (fastest first).
/// offset = -Origin * Scale, as RosettaSciIO computes it. A non-finite calibration counts as
/// uncalibrated (scale 1, offset 0, no units) so callers never do arithmetic on NaN.
fn axes(idata: &[Node], dims: &[u64]) -> Res<Vec<Axis>> {
    let cals: Vec<&[Node]> = group(idata, "Calibrations")
        .and_then(|c| group(c, "Dimension"))
        .map(|d| subgroups(d).map(|(_, g)| g).collect())
        .unwrap_or_default();
    let mut axes = Vec::with_capacity(dims.len());
    for (d, &size) in dims.iter().enumerate() {
        let cal = cals.get(d).copied().unwrap_or(&[]);
        let origin = data(cal, "Origin").and_then(Val::as_f64).unwrap_or(0.0);
        let scale = data(cal, "Scale").and_then(Val::as_f64).unwrap_or(1.0);
        let units = data(cal, "Units").and_then(Val::as_text).unwrap_or("").to_string();
        let (scale, offset, units) = if scale.is_finite() && origin.is_finite() {
            (scale, -origin * scale, units)
        } else {
            (1.0, 0.0, String::new())
        };
        let name = match d {
            0 => "x".to_string(),
            1 => "y".to_string(),
            2 => "z".to_string(),
            _ => format!("dim{d}"),
        };
        let size = usize::try_from(size).map_err(|_| format!("dimension {size} is too large"))?;
        axes.push(Axis { name, size, scale, offset, units });
    }
    axes.reverse();
    Ok(axes)
}

/// Flattens a tag tree into `path -> value text`, skipping the pixel array itself.
fn flatten(nodes: &[Node], prefix: &str, out: &mut Vec<(String, String)>) {
    for (i, n) in nodes.iter().enumerate() {
        if out.len() >= MAX_METADATA_ENTRIES {
            return;
        }
        let name = if n.name.is_empty() { i.to_string() } else { n.name.clone() };
        let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        if path.len() > MAX_KEY_BYTES {
            continue;
        }
        match &n.kind {
            NodeKind::Group(g) => flatten(g, &path, out),
            NodeKind::Data(v) if path != "ImageData.Data" => out.push((path, clean(&v.text(), MAX_VALUE_CHARS))),
            NodeKind::Data(_) => {}
        }
    }
}

impl<R: Read + Seek> Parser<R> {
    /// Each image of `ImageList` but the thumbnails, or why it is refused.
    fn images_each(&mut self, root: &[Node]) -> Res<Vec<Res<Image>>> {
        let list = group(root, "ImageList").ok_or("no ImageList: not a DM image document")?;
        let entries: Vec<(usize, &[Node])> = subgroups(list).collect();
        let thumbs = thumbnail_indices(root);
        let is_thumb = |i: usize| match &thumbs {
            Some(t) => t.contains(&(i as u64)),
            None => entries.len() >= 2 && i == 0,
        };
        let kept: Vec<&[Node]> = entries.iter().filter(|(i, _)| !is_thumb(*i)).map(|(_, g)| *g).collect();
        if kept.is_empty() {
            return Err("no image in ImageList besides the thumbnail".into());
        }
        Ok(kept.iter().enumerate().map(|(k, entry)| self.image(entry, k)).collect())
    }

    fn image(&mut self, entry: &[Node], k: usize) -> Res<Image> {
        let at = |e: String| if e.starts_with("image ") { e } else { format!("image {k}: {e}") };
        let idata = group(entry, "ImageData").ok_or_else(|| at("no ImageData group".into()))?;
        let code = data(idata, "DataType").and_then(Val::as_u64).ok_or_else(|| at("no ImageData.DataType".into()))?;
        let kind = pixel_kind(code).map_err(|e| format!("image {k} {e}"))?;
        let dims = dimensions(idata).map_err(|e| at(e.to_string()))?;
        let axes = axes(idata, &dims).map_err(at)?;
        refuse_non_image(&axes, k)?;
        check_limits(&axes.iter().map(|a| a.size).collect::<Vec<_>>()).map_err(at)?;
        let pixels = self.pixels(idata, kind, &dims).map_err(at)?;
        let mut metadata = vec![("File.Format".to_string(), if self.fmt.v4 { "DM4" } else { "DM3" }.to_string())];
        flatten(entry, "", &mut metadata);
        Ok(Image { shape: axes.iter().map(|a| a.size).collect(), axes, pixels, metadata })
    }

    /// Reads the `ImageData.Data` array after checking it agrees with DataType and Dimensions.
    fn pixels(&mut self, idata: &[Node], kind: Kind, dims: &[u64]) -> Res<Pixels> {
        let Some(Val::Array { elem, count, offset, .. }) = data(idata, "Data") else {
            return Err("ImageData.Data is missing or not an array".into());
        };
        let (elem, count, offset) = (*elem, *count, *offset);
        let width = simple_width(elem).unwrap_or(0);
        if width != kind.width() || is_float_type(elem) != is_float_kind(kind) {
            return Err(format!("DataType says {kind:?} but the array holds {}", type_name(elem)));
        }
        let npix = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or("dimensions overflow")?;
        if npix != count {
            return Err(format!("dimensions {dims:?} make {npix} pixels but the array holds {count}"));
        }
        self.src.seek_to(offset)?;
        check_pixel_bytes(&self.src, kind, count)?;
        let n = usize::try_from(count).map_err(|_| "too many pixels for this machine")?;
        let mut pixels = Pixels::with_capacity(kind, n);
        pixels.read_more(&mut self.src, n, self.fmt.le)?;
        Ok(pixels)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn struct_definitions() {
        // [15, name len, 2 fields, (0, i32), (0, f32)]
        let info = [15, 0, 2, 0, 3, 0, 6];
        assert_eq!(struct_fields(&info, 1), Ok((vec![3, 6], 7)));
        assert!(struct_fields(&[15, 0, 5, 0, 3], 1).is_err());
        assert!(struct_fields(&[15, 0, u64::MAX], 1).is_err());
        assert!(struct_fields(&[15, 0, 1, 0, 20], 1).is_err());
    }

    fn axis(size: usize, units: &str) -> Axis {
        Axis { name: "x".into(), size, scale: 1.0, offset: 0.0, units: units.into() }
    }

    #[test]
    fn refusals() {
        let spectrum = [axis(1, ""), axis(2048, "eV")];
        let e = refuse_non_image(&spectrum, 0).unwrap_err();
        assert_eq!(e, "image 0 is a 1-D spectrum (2048 channels, 'Energy loss' in eV), not an image");
        assert!(refuse_non_image(&[axis(5, "nm")], 1).unwrap_err().contains("1-D spectrum (5 channels"));
        assert!(refuse_non_image(&[axis(3, ""), axis(1, ""), axis(4, "")], 0).unwrap_err().contains("last two"));
        assert!(
            refuse_non_image(&[axis(3, "nm"), axis(4, "nm"), axis(100, "eV")], 0)
                .unwrap_err()
                .contains("spectrum image")
        );
        assert!(refuse_non_image(&[axis(2, ""), axis(2, "")], 0).is_ok());
    }
}
