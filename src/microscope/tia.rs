//! FEI / Thermo Fisher TIA (ES Vision) reader: `name.emi` (metadata) + `name_N.ser` (data).
//!
//! The `.ser` file: a little-endian header (ByteOrder 0x4949, SeriesID 0x0197, SeriesVersion
//! 0x0210 with 4-byte offsets or 0x0220 with 8-byte offsets, DataTypeID, TagTypeID, total and
//! valid element counts, the offset of the offset array, the series dimensions), then one data
//! element per acquired image: X and Y calibrations (offset f64, delta f64, element i32),
//! DataType (i16), ArraySizeX, ArraySizeY (i32) and the pixels, x fastest, bottom row first.
//!
//! What we return: one [`Image`] per `.ser`; its ValidNumberElements 2-D elements stacked as
//! `[n, y, x]`, or `[y, x]` when there is one. Rows are flipped to top-first, and calibrations
//! in metres become nm (1/m become 1/nm), as RosettaSciIO and ncempy do. Which of the two applies
//! follows RosettaSciIO's guess from the `.emi` Mode (STEM with a camera or a diffraction scan,
//! or a "Diffraction" mode outside STEM, means reciprocal space); metres without an `.emi`.
//! Unlike RosettaSciIO (which leaves offsets in metres) offsets are converted with the scale.
//! The stacking axis is named "frame", calibrated from the header's first series dimension
//! when the series has exactly one; scans of images (two series dimensions) are flattened.
//! Refused: 1-D data (DataTypeID 0x4120, or an image with a side of 1), complex pixels, and
//! series beyond the limits of [`crate::limits`] (file size, pixels per frame, frames).
//!
//! The `.emi` metadata (best effort, never an error once the file opens): each
//! `<ObjectInfo>...</ObjectInfo>` XML block; block N-1 belongs to `name_N.ser`. Leaf elements
//! become `ObjectInfo.A.B` keys; `ExperimentalDescription` rows become
//! `ObjectInfo.ExperimentalDescription.<Label>_<Unit>` (e.g. `High tension_kV`, `Emission_uA`,
//! `Magnification_x`). The dwell time per pixel is `ObjectInfo.AcquireInfo.DwellTimePath`
//! in seconds (for camera images, those with a `CameraNamePath`, it is the exposure), and
//! `ObjectInfo.AcquireInfo.FrameTime` the frame time in seconds: see [`Image::dwell_time_us`].

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek};
use std::path::{Path, PathBuf};

use super::dm::file_name;
use super::types::{
    Axis, FileError, Image, Kind, MAX_METADATA_ENTRIES, MAX_PIXEL_BYTES, MAX_VALUE_CHARS, Pixels, Res, Src,
    check_limits, check_pixel_bytes, clean,
};

/// Bytes of a 2-D data element header: two calibrations, DataType, ArraySizeX, ArraySizeY.
const ELEMENT_HEADER: u64 = 2 * (8 + 8 + 4) + 2 + 4 + 4;
/// Most series dimensions accepted (TIA writes 1 or 2).
const MAX_SER_DIMS: u32 = 16;
/// Characters kept of a dimension description or unit.
const MAX_DIM_TEXT: u64 = 256;
/// `<ObjectInfo>` blocks kept from an .emi, and the largest accepted.
const MAX_OBJECTS: usize = 16;
const MAX_OBJECT_BYTES: usize = 1 << 20;
/// Deepest XML nesting followed in an ObjectInfo block.
const MAX_XML_DEPTH: usize = 32;

/// Reads a TIA data set from its `.emi` (using the `_1.ser` beside it) or from a `_N.ser`
/// (using the `.emi` beside it for metadata, when there is one).
pub fn read_tia(path: &Path) -> Result<Vec<Image>, FileError> {
    let name = file_name(path);
    let (ser_path, emi_path, series) = companions(path).map_err(|e| FileError::new(&name, &e))?;
    let ser_name = file_name(&ser_path);
    let ser = File::open(&ser_path).map_err(|e| FileError::new(&ser_name, &format!("cannot open: {e}")))?;
    let emi = match emi_path {
        // The .emi the caller named must open; one merely found beside a .ser is optional.
        Some(p) if p == path => Some(File::open(&p).map_err(|e| FileError::new(&name, &format!("cannot open: {e}")))?),
        Some(p) => File::open(&p).ok(),
        None => None,
    };
    read_tia_from(&ser_name, BufReader::new(ser), emi.map(BufReader::new), series)
}

/// As [`read_tia`], from a `.ser` source and optionally its `.emi`; `series` is the N of
/// `name_N.ser` (1 for the first), which picks the `.emi` ObjectInfo block; `name` is used in
/// error messages.
pub fn read_tia_from<R: Read + Seek, E: Read>(
    name: &str,
    ser: R,
    emi: Option<E>,
    series: usize,
) -> Result<Vec<Image>, FileError> {
    let emi_meta = emi
        .map(emi_objects)
        .and_then(|objs| objs.into_iter().nth(series.saturating_sub(1)))
        .map(|xml| xml_entries(&xml))
        .unwrap_or_default();
    read_ser(ser, emi_meta).map(|img| vec![img]).map_err(|e| FileError::new(name, &e))
}

/// The .ser to read, the .emi beside it if any, and the series number N of `name_N.ser`.
fn companions(path: &Path) -> Res<(PathBuf, Option<PathBuf>, usize)> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match ext.as_str() {
        "emi" => {
            let ser = path.with_file_name(format!("{stem}_1.ser"));
            if !ser.is_file() {
                return Err(format!("no {stem}_1.ser beside it: TIA keeps the image data there"));
            }
            Ok((ser, Some(path.to_path_buf()), 1))
        }
        "ser" => {
            let (base, series) = match stem.rsplit_once('_') {
                Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                    (b.to_string(), n.parse::<usize>().unwrap_or(1))
                }
                _ => (stem.clone(), 1),
            };
            let emi = path.with_file_name(format!("{base}.emi"));
            Ok((path.to_path_buf(), emi.is_file().then_some(emi), series))
        }
        _ => Err("not a TIA file (expected a .emi or .ser extension)".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// .ser
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct SerDim {
    size: i32,
    offset: f64,
    delta: f64,
    description: String,
    units: String,
}

#[derive(Debug)]
struct SerHeader {
    version: u16,
    data_type_id: u32,
    tag_type_id: u32,
    total: u32,
    valid: u32,
    offset_array: u64,
    dims: Vec<SerDim>,
}

impl SerHeader {
    fn wide_offsets(&self) -> bool {
        self.version == 0x0220
    }
}

/// The header of one 2-D data element.
#[derive(Debug, Clone, Copy)]
struct Element {
    x: Cal,
    y: Cal,
    data_type: i16,
    size_x: i32,
    size_y: i32,
}

#[derive(Debug, Clone, Copy)]
struct Cal {
    offset: f64,
    delta: f64,
    element: i32,
}

fn read_header<R: Read + Seek>(src: &mut Src<R>) -> Res<SerHeader> {
    let short = |_| "too short for a TIA .ser header".to_string();
    if src.u16(true).map_err(short)? != 0x4949 {
        return Err("not a little-endian TIA .ser file (ByteOrder is not 0x4949)".into());
    }
    if src.u16(true).map_err(short)? != 0x0197 {
        return Err("not a TIA .ser file (SeriesID is not 0x0197)".into());
    }
    let version = src.u16(true).map_err(short)?;
    if version != 0x0210 && version != 0x0220 {
        return Err(format!("unknown TIA SeriesVersion {version:#06x}"));
    }
    let data_type_id = src.u32(true).map_err(short)?;
    match data_type_id {
        0x4122 => {}
        0x4120 => return Err("holds 1-D spectra (DataTypeID 0x4120), not images".into()),
        other => return Err(format!("unknown DataTypeID {other:#06x}")),
    }
    let tag_type_id = src.u32(true).map_err(short)?;
    let total = src.u32(true).map_err(short)?;
    let valid = src.u32(true).map_err(short)?;
    let offset_array = if version == 0x0220 { src.u64(true) } else { src.u32(true).map(u64::from) }.map_err(short)?;
    let ndims = src.u32(true).map_err(short)?;
    if ndims > MAX_SER_DIMS {
        return Err(format!("NumberDimensions {ndims} is implausible"));
    }
    let dims = (0..ndims).map(|_| read_dim(src)).collect::<Res<Vec<_>>>()?;
    Ok(SerHeader { version, data_type_id, tag_type_id, total, valid, offset_array, dims })
}

fn read_dim<R: Read + Seek>(src: &mut Src<R>) -> Res<SerDim> {
    let size = src.i32(true)?;
    let offset = src.f64(true)?;
    let delta = src.f64(true)?;
    let _element = src.i32(true)?;
    let description = read_text(src)?;
    let units = read_text(src)?;
    Ok(SerDim { size, offset, delta, description, units })
}

/// A length-prefixed (u32) one-byte string; long ones are cut to [`MAX_DIM_TEXT`] characters.
fn read_text<R: Read + Seek>(src: &mut Src<R>) -> Res<String> {
    let len = u64::from(src.u32(true)?);
    src.need(len)?;
    let keep = len.min(MAX_DIM_TEXT);
    let raw = src.bytes(keep)?;
    src.skip(len - keep)?;
    Ok(clean(&raw.iter().map(|&b| char::from(b)).collect::<String>(), MAX_DIM_TEXT as usize))
}

/// Offsets of the valid data elements.
fn data_offsets<R: Read + Seek>(src: &mut Src<R>, h: &SerHeader) -> Res<Vec<u64>> {
    if h.valid == 0 {
        return Err("no valid data elements (ValidNumberElements is 0)".into());
    }
    if h.valid > h.total {
        return Err(format!("ValidNumberElements {} exceeds TotalNumberElements {}", h.valid, h.total));
    }
    src.seek_to(h.offset_array).map_err(|e| format!("OffsetArrayOffset: {e}"))?;
    let width = if h.wide_offsets() { 8 } else { 4 };
    // Checked against the file before the Vec is sized from `valid`.
    src.need(u64::from(h.valid) * width).map_err(|e| format!("data offset array: {e}"))?;
    let mut offsets = Vec::with_capacity(h.valid as usize);
    for _ in 0..h.valid {
        offsets.push(if h.wide_offsets() { src.u64(true)? } else { u64::from(src.u32(true)?) });
    }
    Ok(offsets)
}

fn read_cal<R: Read + Seek>(src: &mut Src<R>) -> Res<Cal> {
    Ok(Cal { offset: src.f64(true)?, delta: src.f64(true)?, element: src.i32(true)? })
}

fn read_element<R: Read + Seek>(src: &mut Src<R>, at: u64) -> Res<Element> {
    src.seek_to(at)?;
    src.need(ELEMENT_HEADER)?;
    let x = read_cal(src)?;
    let y = read_cal(src)?;
    Ok(Element { x, y, data_type: src.i16(true)?, size_x: src.i32(true)?, size_y: src.i32(true)? })
}

fn pixel_kind(code: i16) -> Res<Kind> {
    Ok(match code {
        1 => Kind::U8,
        2 => Kind::U16,
        3 => Kind::U32,
        4 => Kind::I8,
        5 => Kind::I16,
        6 => Kind::I32,
        7 => Kind::F32,
        8 => Kind::F64,
        9 | 10 => return Err(format!("holds complex pixels (DataType {code}), not supported")),
        _ => return Err(format!("unknown pixel DataType {code}")),
    })
}

/// Image sides from the first element; refuses 1-D and empty images.
fn sides(e: &Element) -> Res<(usize, usize)> {
    let (x, y) = (e.size_x, e.size_y);
    if x < 1 || y < 1 {
        return Err(format!("bad image size {x} x {y}"));
    }
    if x == 1 || y == 1 {
        return Err(format!("image 0 is 1-D ({x} x {y} pixels), not an image"));
    }
    // Both positive i32, so they fit in usize on 32- and 64-bit machines.
    Ok((y as usize, x as usize))
}

fn read_ser<R: Read + Seek>(ser: R, emi_meta: Vec<(String, String)>) -> Res<Image> {
    let mut src = Src::new(ser)?;
    let header = read_header(&mut src)?;
    let offsets = data_offsets(&mut src, &header)?;
    let first_at = *offsets.first().ok_or("no valid data elements")?;
    let first = read_element(&mut src, first_at).map_err(|e| format!("element 0: {e}"))?;
    let kind = pixel_kind(first.data_type)?;
    let (rows, cols) = sides(&first)?;
    let frame = (rows as u64) * (cols as u64); // each side < 2^31, so no overflow
    let n = offsets.len() as u64;
    check_limits(&[offsets.len(), rows, cols])?;
    let total = frame.checked_mul(n).ok_or("pixel count overflows")?;
    let bytes = total.checked_mul(kind.width()).ok_or("pixel data size overflows")?;
    // Elements cannot overlap in a real file, so all of them together must fit in it.
    if bytes > src.len() || bytes > MAX_PIXEL_BYTES {
        return Err(format!(
            "{n} image(s) of {cols} x {rows} pixels need {bytes} bytes, more than the file ({} bytes) or the limit",
            src.len()
        ));
    }
    let frame_px = usize::try_from(frame).map_err(|_| "image too large for this machine")?;
    let mut pixels = Pixels::with_capacity(kind, usize::try_from(total).map_err(|_| "too many pixels")?);
    for (i, &at) in offsets.iter().enumerate() {
        let e = read_element(&mut src, at).map_err(|e| format!("element {i}: {e}"))?;
        if e.data_type != first.data_type || e.size_x != first.size_x || e.size_y != first.size_y {
            return Err(format!("element {i} differs in type or size from element 0"));
        }
        check_pixel_bytes(&src, kind, frame).map_err(|e| format!("element {i}: {e}"))?;
        pixels.read_more(&mut src, frame_px, true)?;
    }
    // TIA stores the bottom row first; RosettaSciIO and ncempy show it top row first.
    pixels.flip_rows(rows, cols);
    let axes = ser_axes(&header, &first, n, &emi_meta)?;
    let mut metadata = header_metadata(&header);
    metadata.extend(emi_meta);
    metadata.truncate(MAX_METADATA_ENTRIES);
    Ok(Image { shape: axes.iter().map(|a| a.size).collect(), axes, pixels, metadata })
}

/// Whether the image axes are in reciprocal space, by RosettaSciIO's rule on the .emi Mode.
fn reciprocal(header: &SerHeader, emi: &[(String, String)]) -> bool {
    let get = |k: &str| emi.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let Some(mode) = get("ObjectInfo.ExperimentalDescription.Mode") else { return false };
    let Some(dim) = header.dims.first() else { return false };
    let camera = get("ObjectInfo.AcquireInfo.CameraNamePath").is_some();
    let image_stack = dim.units.is_empty();
    let diffraction_scan = dim.size > 1 && !image_stack;
    if mode.contains("STEM") { camera || diffraction_scan } else { mode.contains("Diffraction") }
}

/// One image axis from a TIA calibration: metres -> nm, or 1/m -> 1/nm.
fn image_axis(name: &str, size: usize, cal: &Cal, reciprocal: bool) -> Axis {
    let offset = cal.offset - f64::from(cal.element) * cal.delta;
    let (factor, units) = if reciprocal { (1e-9, "1/nm") } else { (1e9, "nm") };
    let (scale, offset, units) = if cal.delta.is_finite() && offset.is_finite() {
        (cal.delta * factor, offset * factor, units)
    } else {
        (1.0, 0.0, "") // an unusable calibration counts as none
    };
    Axis { name: name.into(), size, scale, offset, units: units.into() }
}

fn ser_axes(header: &SerHeader, first: &Element, n: u64, emi: &[(String, String)]) -> Res<Vec<Axis>> {
    let (rows, cols) = sides(first)?;
    let recip = reciprocal(header, emi);
    let mut axes = Vec::with_capacity(3);
    if n > 1 {
        let size = usize::try_from(n).map_err(|_| "too many frames")?;
        let (scale, offset, units) = match header.dims.as_slice() {
            [d] if d.delta.is_finite() && d.offset.is_finite() => (d.delta, d.offset, d.units.clone()),
            _ => (1.0, 0.0, String::new()),
        };
        axes.push(Axis { name: "frame".into(), size, scale, offset, units });
    }
    axes.push(image_axis("y", rows, &first.y, recip));
    axes.push(image_axis("x", cols, &first.x, recip));
    Ok(axes)
}

fn header_metadata(h: &SerHeader) -> Vec<(String, String)> {
    let mut m = vec![
        ("File.Format".to_string(), "TIA SER".to_string()),
        ("SER.SeriesVersion".into(), format!("{:#06x}", h.version)),
        ("SER.DataTypeID".into(), format!("{:#06x}", h.data_type_id)),
        ("SER.TagTypeID".into(), format!("{:#06x}", h.tag_type_id)),
        ("SER.TotalNumberElements".into(), h.total.to_string()),
        ("SER.ValidNumberElements".into(), h.valid.to_string()),
    ];
    for (i, d) in h.dims.iter().enumerate() {
        m.push((format!("SER.Dimension{i}.Size"), d.size.to_string()));
        m.push((format!("SER.Dimension{i}.CalibrationOffset"), d.offset.to_string()));
        m.push((format!("SER.Dimension{i}.CalibrationDelta"), d.delta.to_string()));
        m.push((format!("SER.Dimension{i}.Description"), d.description.clone()));
        m.push((format!("SER.Dimension{i}.Units"), d.units.clone()));
    }
    m
}

// ---------------------------------------------------------------------------------------------
// .emi
// ---------------------------------------------------------------------------------------------

/// Where `pat` stands after byte `b`, having matched `m` bytes of it. Exact for patterns whose
/// first byte does not recur in them, as "<ObjectInfo>" and "</ObjectInfo>".
fn advance(pat: &[u8], m: usize, b: u8) -> usize {
    if pat.get(m) == Some(&b) {
        m + 1
    } else if pat.first() == Some(&b) {
        1
    } else {
        0
    }
}

/// The `<ObjectInfo>...</ObjectInfo>` blocks of an .emi, streamed so a large .emi is never
/// held in memory; at most [`MAX_OBJECTS`] blocks of [`MAX_OBJECT_BYTES`]. Read errors end the
/// scan with what was found (the .emi only adds metadata).
fn emi_objects<E: Read>(mut emi: E) -> Vec<String> {
    const START: &[u8] = b"<ObjectInfo>";
    const END: &[u8] = b"</ObjectInfo>";
    let mut objects = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut m_start, mut m_end) = (0usize, 0usize);
    let mut current: Option<Vec<u8>> = None;
    loop {
        let n = match emi.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in buf.get(..n).unwrap_or(&[]) {
            match current.as_mut() {
                None => {
                    m_start = advance(START, m_start, b);
                    if m_start == START.len() {
                        current = Some(START.to_vec());
                        (m_start, m_end) = (0, 0);
                    }
                }
                Some(obj) => {
                    obj.push(b);
                    m_end = advance(END, m_end, b);
                    if m_end == END.len() {
                        objects.push(String::from_utf8_lossy(obj).into_owned());
                        current = None;
                        if objects.len() >= MAX_OBJECTS {
                            return objects;
                        }
                    } else if obj.len() > MAX_OBJECT_BYTES {
                        current = None; // too large to be real metadata: skip it
                    }
                }
            }
        }
    }
    objects
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// One row of `ExperimentalDescription`: Label, Value, Unit.
#[derive(Default)]
struct DescRow {
    label: String,
    value: String,
    unit: String,
}

/// Flattens an ObjectInfo XML block into `path -> text` for leaf elements (best effort: a
/// malformed block yields what could be read).
fn xml_entries(xml: &str) -> Vec<(String, String)> {
    let mut x = XmlFlat::default();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        x.text.push_str(rest.get(..lt).unwrap_or(""));
        let after = rest.get(lt + 1..).unwrap_or("");
        let Some(gt) = after.find('>') else { break };
        let tag = after.get(..gt).unwrap_or("");
        rest = after.get(gt + 1..).unwrap_or("");
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let ok = if let Some(name) = tag.strip_prefix('/') {
            x.end(name.trim());
            true
        } else {
            let name = tag.trim_end_matches('/').split_whitespace().next().unwrap_or("");
            let ok = x.start(name);
            if ok && tag.ends_with('/') {
                x.end(name);
            }
            ok
        };
        if !ok || x.out.len() >= MAX_METADATA_ENTRIES {
            break;
        }
    }
    x.out
}

#[derive(Default)]
struct XmlFlat {
    /// Open elements and whether each has child elements.
    stack: Vec<(String, bool)>,
    text: String,
    row: Option<DescRow>,
    out: Vec<(String, String)>,
}

const DESC_ROW: &str = "ObjectInfo.ExperimentalDescription.Root.Data";

impl XmlFlat {
    fn path(&self) -> String {
        self.stack.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(".")
    }

    fn start(&mut self, name: &str) -> bool {
        if self.stack.len() >= MAX_XML_DEPTH {
            return false;
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.1 = true;
        }
        self.stack.push((clean(name, 128), false));
        self.text.clear();
        if self.path() == DESC_ROW {
            self.row = Some(DescRow::default());
        }
        true
    }

    fn end(&mut self, name: &str) {
        // Tolerate bad nesting: close up to the matching element, or ignore a stray end tag.
        let Some(depth) = self.stack.iter().rposition(|(n, _)| n == name) else { return };
        while self.stack.len() > depth + 1 {
            self.stack.pop();
        }
        let path = self.path();
        let Some((leaf_name, has_children)) = self.stack.pop() else { return };
        let value = clean(&unescape(self.text.trim()), MAX_VALUE_CHARS);
        self.text.clear();
        if path == DESC_ROW {
            if let Some(row) = self.row.take() {
                self.emit_row(row);
            }
        } else if let (Some(row), Some(parent)) = (self.row.as_mut(), path.strip_suffix(&format!(".{leaf_name}"))) {
            if parent == DESC_ROW {
                match leaf_name.as_str() {
                    "Label" => row.label = value,
                    "Value" => row.value = value,
                    "Unit" => row.unit = value,
                    _ => {}
                }
            }
        } else if !has_children && !value.is_empty() && leaf_name != "TrueImageHeaderInfo" {
            // TrueImageHeaderInfo holds escaped XML of numbered values only: not kept.
            self.out.push((path, value));
        }
    }

    /// `ObjectInfo.ExperimentalDescription.<Label>_<Unit>` as RosettaSciIO names them.
    fn emit_row(&mut self, row: DescRow) {
        if row.label.is_empty() {
            return;
        }
        let key = if row.unit.is_empty() {
            format!("ObjectInfo.ExperimentalDescription.{}", row.label)
        } else {
            format!("ObjectInfo.ExperimentalDescription.{}_{}", row.label, row.unit)
        };
        self.out.push((key, row.value.trim().to_string()));
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn emi_blocks_and_xml() {
        let emi = b"junk<ObjectInfo><AcquireInfo><DwellTimePath>0.000029</DwellTimePath></AcquireInfo>\
<ExperimentalDescription><Root><Data><Label>High tension</Label><Value>80</Value><Unit>kV</Unit></Data>\
<Data><Label>Mode</Label><Value> STEM</Value><Unit></Unit></Data></Root></ExperimentalDescription>\
<Empty/><Esc>a &amp; b</Esc></ObjectInfo>more<<ObjectInfo><X>1</X></ObjectInfo>";
        let objs = emi_objects(&emi[..]);
        assert_eq!(objs.len(), 2);
        let m = xml_entries(&objs[0]);
        let get = |k: &str| m.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ObjectInfo.AcquireInfo.DwellTimePath"), Some("0.000029"));
        assert_eq!(get("ObjectInfo.ExperimentalDescription.High tension_kV"), Some("80"));
        assert_eq!(get("ObjectInfo.ExperimentalDescription.Mode"), Some("STEM"));
        assert_eq!(get("ObjectInfo.Esc"), Some("a & b"));
        assert_eq!(xml_entries(&objs[1]), vec![("ObjectInfo.X".to_string(), "1".to_string())]);
    }

    #[test]
    fn xml_survives_garbage() {
        for s in [
            "<",
            "<a><b></a></c>",
            "</x>",
            "<a/><a",
            &"<a>".repeat(100),
            "<ObjectInfo><ExperimentalDescription><Root><Data></Root>",
        ] {
            let _ = xml_entries(s);
        }
    }
}
