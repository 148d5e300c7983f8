//! Wire formats → messages: series start, frame, series end.
//!
//! - [`own`]: beamwatch's format (JSON header + raw pixels; `docs/wire-format.md`).
//! - [`dectris_v1`]: DECTRIS SIMPLON stream v1 (JSON multipart; raw, LZ4, bitshuffle-LZ4).
//! - [`dectris_v2`]: DECTRIS stream v2 (CBOR, RFC 8746 typed arrays, tag-56500 compression).
//! - [`bslz4`]: the bitshuffle-LZ4 / LZ4 codec shared by both DECTRIS formats and NeXus files.
//!
//! A message that cannot be decoded is a [`DecodeError`] whose [`DecodeErrorKind`] is counted by
//! the daemon; nothing here panics on malformed input, and nothing is allocated from a size claim
//! before it is checked against the bytes that actually arrived and the frame limits.

pub mod bslz4;
pub mod dectris_v1;
pub mod dectris_v2;
pub mod own;

use serde::{Deserialize, Serialize};

use crate::fourd::{ScanResult, ScanShape, ShapeSource, Spot};
use crate::frame::{Frame, PixelType};
use crate::limits;

/// Which wire format a socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// Recognise each message by its first part.
    #[default]
    Auto,
    Beamwatch,
    DectrisV1,
    DectrisV2,
}

impl WireFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Beamwatch => "beamwatch",
            Self::DectrisV1 => "dectris-v1",
            Self::DectrisV2 => "dectris-v2",
        }
    }
}

/// Dose inputs a message may carry (`None`: not in the message; the config supplies it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoseHeader {
    pub beam_current_pa: Option<f64>,
    pub dwell_time_us: Option<f64>,
    pub pixel_size_a: Option<f64>,
}

/// A series (acquisition) begins: a new reference frame follows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesInfo {
    pub series: String,
    pub format: WireFormat,
    pub frames_expected: Option<u64>,
    /// (rows, cols) announced for the series.
    pub shape: Option<(usize, usize)>,
    pub dtype: Option<PixelType>,
    pub frame_time_s: Option<f64>,
    pub dose: DoseHeader,
    /// The 4D-STEM scan shape the stream announces (stream-v2 `user_data`, a stream-v1 header
    /// appendix: `scan_rows` / `scan_cols`, see docs/wire-format.md), with where it came from.
    pub scan_hint: Option<(ScanShape, ShapeSource)>,
}

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct FrameMsg {
    pub series: String,
    pub index: u64,
    pub frame: Frame,
    pub timestamp_ns: Option<u64>,
    pub dose: DoseHeader,
    pub format: WireFormat,
    /// A 4D-STEM scan's results when this frame is a virtual image made of one scan's patterns
    /// (set by the scan stage, `None` from every decoder).
    pub scan: Option<std::sync::Arc<ScanFrame>>,
}

/// The 4D-STEM scan behind a frame: the assembler's result and what it was measured with (the
/// session's `fourd` group records them).
#[derive(Debug)]
pub struct ScanFrame {
    pub result: ScanResult,
    /// The Bragg spots integrated (found in the reference scan's mean pattern).
    pub spots: Vec<Spot>,
    /// Pattern centre (x, y) and bright-field disk radius, px, once known.
    pub centre_px: Option<(f64, f64)>,
    pub bf_radius_px: Option<f64>,
    pub shape_source: ShapeSource,
    /// The virtual detector whose image is the frame.
    pub analysed: String,
    /// The `[fourd]` regions grid (rows, cols) the region spot intensities follow.
    pub regions: (usize, usize),
}

#[derive(Clone, Debug)]
pub enum Message {
    SeriesStart(SeriesInfo),
    Frame(Box<FrameMsg>),
    SeriesEnd {
        series: String,
    },
    /// Understood but not needed (flat fields, pixel masks, …): named for the log.
    Ignored(&'static str),
}

/// What went wrong, for counting and logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeErrorKind {
    /// Fewer (or more) multipart parts than the message type needs.
    Parts,
    Json,
    Cbor,
    /// A message type this format does not have.
    UnknownMessage,
    Dtype,
    /// A shape that is zero, inconsistent or beyond the frame limits.
    Shape,
    /// A frame whose analysis would take more than one frame's share of the memory budget.
    OverBudget,
    /// Pixel bytes do not match shape × dtype.
    Size,
    Compression,
    Checksum,
    /// NaN, infinite or absurd (beyond ±10¹⁵) float pixels, or nothing but gap pixels.
    Pixels,
    /// The configured detector channel is not in the image.
    Channel,
    /// Not recognisable as any supported format.
    Format,
}

impl std::fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind}: {detail}")]
#[must_use]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub detail: String,
}

pub(crate) fn derr(kind: DecodeErrorKind, detail: impl Into<String>) -> DecodeError {
    DecodeError { kind, detail: detail.into() }
}

thread_local! {
    /// The frame limit of the [`Decoder`] decoding on this thread (its memory budget's share), set
    /// for the duration of one [`Decoder::decode`]; the fixed limit otherwise.
    static MAX_PIXELS: std::cell::Cell<Option<(usize, u64)>> = const { std::cell::Cell::new(None) };
}

/// Checks a claimed frame shape against the limits before anything is sized by it: the fixed
/// [`limits::MAX_FRAME_PIXELS`], and the decoding [`Decoder`]'s memory budget.
pub(crate) fn check_shape(rows: usize, cols: usize) -> Result<(), DecodeError> {
    if rows == 0 || cols == 0 {
        return Err(derr(DecodeErrorKind::Shape, format!("empty shape {rows}×{cols}")));
    }
    let n = match rows.checked_mul(cols) {
        Some(n) if n <= limits::MAX_FRAME_PIXELS => n,
        _ => {
            return Err(derr(
                DecodeErrorKind::Shape,
                format!("shape {rows}×{cols} exceeds the limit of {} pixels", limits::MAX_FRAME_PIXELS),
            ));
        }
    };
    match MAX_PIXELS.with(std::cell::Cell::get) {
        Some((max, budget_bytes)) if n > max => Err(derr(
            DecodeErrorKind::OverBudget,
            format!(
                "shape {rows}×{cols} ({n} px) is over the {max}-pixel limit of the memory budget ({} MiB, \
                 [limits] memory_mib): its analysis would need {} MiB, more than half of it",
                budget_bytes >> 20,
                crate::budget::Budget::frame_bytes(n) >> 20
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn pixel_type(name: &str) -> Result<PixelType, DecodeError> {
    match name {
        "u8" | "uint8" => Ok(PixelType::U8),
        "u16" | "uint16" => Ok(PixelType::U16),
        "u32" | "uint32" => Ok(PixelType::U32),
        "f32" | "float32" => Ok(PixelType::F32),
        other => Err(derr(DecodeErrorKind::Dtype, format!("unsupported pixel type '{other}' (u8, u16, u32, f32)"))),
    }
}

/// Raw pixel bytes → frame. `bytes` must hold exactly rows × cols × dtype bytes.
pub fn frame_from_bytes(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    dtype: PixelType,
    big_endian: bool,
    mask_gaps: bool,
) -> Result<Frame, DecodeError> {
    check_shape(rows, cols)?;
    let expected = rows * cols * dtype.bytes();
    if bytes.len() != expected {
        return Err(derr(
            DecodeErrorKind::Size,
            format!("{} pixel bytes for a {rows}×{cols} {} frame (expected {expected})", bytes.len(), dtype.name()),
        ));
    }
    let pixels = |e| derr(DecodeErrorKind::Pixels, format!("{e}"));
    macro_rules! ints {
        ($t:ty, $n:expr) => {{
            let v: Vec<$t> = bytes
                .chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                    if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }
                })
                .collect();
            Frame::from_ints(cols, rows, &v, mask_gaps).map_err(pixels)
        }};
    }
    match dtype {
        PixelType::U8 => Frame::from_ints(cols, rows, bytes, mask_gaps).map_err(pixels),
        PixelType::U16 => ints!(u16, 2),
        PixelType::U32 => ints!(u32, 4),
        PixelType::F32 => {
            let v: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| {
                    let a: [u8; 4] = c.try_into().unwrap_or([0; 4]);
                    if big_endian { f32::from_be_bytes(a) } else { f32::from_le_bytes(a) }
                })
                .collect();
            Frame::from_f32(cols, rows, v).map_err(pixels)
        }
    }
}

/// `scan_rows` and `scan_cols` (positive integers) at the top level of a JSON header appendix or
/// inside its `"beamwatch"` map; `None` when the pair is not there.
pub fn scan_hint_json(v: &serde_json::Value) -> Option<ScanShape> {
    let pair = |m: &serde_json::Value| {
        let n = |k: &str| m.get(k)?.as_u64().filter(|&n| n > 0).and_then(|n| usize::try_from(n).ok());
        Some(ScanShape { rows: n("scan_rows")?, cols: n("scan_cols")? })
    };
    pair(v).or_else(|| v.get("beamwatch").and_then(pair))
}

/// Dose inputs in a header appendix / `user_data` (`beam_current_pa`, `dwell_time_us`,
/// `pixel_size_a`: positive numbers, at the top level or inside `"beamwatch"`), as the series'.
pub fn dose_json(v: &serde_json::Value) -> DoseHeader {
    let num = |k: &str| {
        let at = |m: &serde_json::Value| m.get(k).and_then(serde_json::Value::as_f64).filter(|x| x.is_finite() && *x > 0.0);
        at(v).or_else(|| v.get("beamwatch").and_then(at))
    };
    DoseHeader { beam_current_pa: num("beam_current_pa"), dwell_time_us: num("dwell_time_us"), pixel_size_a: num("pixel_size_a") }
}

/// Decodes multipart messages of one socket, keeping what a format carries across messages.
/// A clone decodes the images of the series its original has seen start (the 4D pattern workers).
#[derive(Clone)]
pub struct Decoder {
    format: WireFormat,
    mask_gaps: bool,
    v1: dectris_v1::State,
    v2: dectris_v2::State,
    /// Frames over this many pixels are refused before their pixels are decoded (and the budget's
    /// size, for the message); `None`: the fixed limit only.
    max_pixels: Option<(usize, u64)>,
}

impl Decoder {
    /// `channel`: the stream-v2 channel to analyse (`None`: the first one announced).
    pub fn new(format: WireFormat, channel: Option<String>, mask_gaps: bool) -> Self {
        Self { format, mask_gaps, v1: dectris_v1::State::new(), v2: dectris_v2::State::new(channel), max_pixels: None }
    }

    /// Refuses frames whose analysis would not fit one frame's share of `budget`, before their
    /// pixels are decoded.
    pub fn within(mut self, budget: &crate::budget::Budget) -> Self {
        self.max_pixels = Some((budget.max_frame_pixels(), budget.total_bytes()));
        self
    }

    /// The (series, image index) of an image message, read without decoding its pixels; `None`
    /// for anything else, and for whatever this reading cannot tell (the full decode then
    /// decides). Lets the 4D pattern workers be handed a pattern they will decode themselves.
    pub fn peek_image(&self, parts: &[&[u8]]) -> Option<(String, u64)> {
        if self.v1.awaiting_config().is_some() {
            return None;
        }
        let format = match self.format {
            WireFormat::Auto => detect(parts).ok()?,
            f => f,
        };
        match format {
            WireFormat::DectrisV1 => dectris_v1::peek_image(parts),
            WireFormat::DectrisV2 => dectris_v2::peek_image(parts),
            WireFormat::Beamwatch | WireFormat::Auto => None,
        }
    }

    pub fn decode(&mut self, parts: &[&[u8]]) -> Result<Message, DecodeError> {
        let before = MAX_PIXELS.with(|m| m.replace(self.max_pixels));
        let r = self.decode_within(parts);
        MAX_PIXELS.with(|m| m.set(before));
        r
    }

    fn decode_within(&mut self, parts: &[&[u8]]) -> Result<Message, DecodeError> {
        // A stream-v1 detector config sent as a message of its own has no htype to detect it by.
        if let Some(m) = self.v1.follow_up(parts) {
            return m;
        }
        let format = match self.format {
            WireFormat::Auto => detect(parts)?,
            f => f,
        };
        match format {
            WireFormat::Beamwatch => own::decode(parts, self.mask_gaps),
            WireFormat::DectrisV1 => self.v1.decode(parts, self.mask_gaps),
            WireFormat::DectrisV2 => self.v2.decode(parts, self.mask_gaps),
            WireFormat::Auto => Err(derr(DecodeErrorKind::Format, "format not recognised")),
        }
    }
}

/// Recognises a message's format from its first part.
pub fn detect(parts: &[&[u8]]) -> Result<WireFormat, DecodeError> {
    let first = parts.first().ok_or_else(|| derr(DecodeErrorKind::Parts, "empty message"))?;
    match first.first() {
        Some(b'{') => {
            // Read only the htype; the format's decoder parses the header fully.
            #[derive(Deserialize)]
            struct H {
                htype: Option<String>,
            }
            let h: H =
                serde_json::from_slice(first).map_err(|e| derr(DecodeErrorKind::Json, format!("first part: {e}")))?;
            match h.htype.as_deref() {
                Some(t) if t.starts_with("beamwatch/") => Ok(WireFormat::Beamwatch),
                Some(t) if t.starts_with('d') && t.contains("-1.") => Ok(WireFormat::DectrisV1),
                Some(t) => Err(derr(DecodeErrorKind::UnknownMessage, format!("unknown htype '{t}'"))),
                None => Err(derr(DecodeErrorKind::Format, "JSON first part without htype")),
            }
        }
        // CBOR map (major type 5) or the self-describe tag 55799.
        Some(b) if (0xa0..=0xbf).contains(b) || first.starts_with(&[0xd9, 0xd9, 0xf7]) => Ok(WireFormat::DectrisV2),
        _ => Err(derr(DecodeErrorKind::Format, "first part is neither a JSON header nor a CBOR map")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_from_bytes_check_size_and_endianness() {
        let le: Vec<u8> = [1u16, 2, 3, 65535].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f = frame_from_bytes(&le, 2, 2, PixelType::U16, false, true).expect("frame");
        assert_eq!(f.pixels(), &[1.0, 2.0, 3.0, 65535.0]);
        assert_eq!(f.n_invalid(), 1);
        let be: Vec<u8> = [1u16, 2, 3, 4].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(
            frame_from_bytes(&be, 2, 2, PixelType::U16, true, true).expect("frame").pixels(),
            &[1.0, 2.0, 3.0, 4.0]
        );
        let e = frame_from_bytes(&le[..6], 2, 2, PixelType::U16, false, true).expect_err("short");
        assert_eq!(e.kind, DecodeErrorKind::Size);
        let e = frame_from_bytes(&[], 65536, 65536, PixelType::U8, false, true).expect_err("huge");
        assert_eq!(e.kind, DecodeErrorKind::Shape);
        let nan: Vec<u8> = [1.0f32, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            frame_from_bytes(&nan, 1, 2, PixelType::F32, false, true).expect_err("nan").kind,
            DecodeErrorKind::Pixels
        );
    }

    #[test]
    fn the_decoder_takes_a_v1_header_sent_as_two_messages() {
        for format in [WireFormat::Auto, WireFormat::DectrisV1] {
            let mut d = Decoder::new(format, None, true);
            let parts = dectris_v1::encode_header(34, 96, 96, PixelType::U16, 1024, 0.001);
            assert!(matches!(d.decode(&[&parts[0]]), Ok(Message::Ignored(_))));
            assert!(
                matches!(d.decode(&[&parts[1]]), Ok(Message::SeriesStart(s)) if s.frames_expected == Some(1024)),
                "{format:?}"
            );
            // A config with no dheader before it is refused as today.
            let e = d.decode(&[&parts[1]]).expect_err("unexpected");
            assert!(matches!(e.kind, DecodeErrorKind::Format | DecodeErrorKind::Json), "{format:?}: {e}");
        }
    }

    #[test]
    fn detects_formats_by_first_part() {
        assert_eq!(detect(&[br#"{"htype":"beamwatch/frame/1"}"#]), Ok(WireFormat::Beamwatch));
        assert_eq!(detect(&[br#"{"htype":"dimage-1.0","series":1}"#]), Ok(WireFormat::DectrisV1));
        assert_eq!(detect(&[&[0xa1, 0x61, 0x61, 0x01]]), Ok(WireFormat::DectrisV2));
        assert_eq!(detect(&[b"garbage"]).expect_err("garbage").kind, DecodeErrorKind::Format);
        assert_eq!(detect(&[b"{not json"]).expect_err("json").kind, DecodeErrorKind::Json);
        assert_eq!(detect(&[]).expect_err("empty").kind, DecodeErrorKind::Parts);
    }
}
