//! DECTRIS SIMPLON stream v1 ("legacy"): JSON multipart messages.
//!
//! - `dheader-1.0` (+ detector config with header_detail basic/all, + flat field / pixel mask /
//!   count-rate table parts with "all"): a series starts.
//! - image, 4 parts: `dimage-1.0` {series, frame, hash}, `dimage_d-1.0` {shape [x, y] WIDTH FIRST,
//!   type, encoding, size}, the pixel blob, `dconfig-1.0` {start_time, stop_time, real_time (ns)}.
//! - `dseries_end-1.0`: the series ends.
//!
//! Encodings `[bs8|bs16|bs32][-lz4][<|>]`: `<` raw little-endian, `bs16-lz4<` bitshuffle-LZ4 with
//! 16-bit elements, `lz4<` LZ4 (framed or a bare block, told apart by the header).

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::bslz4;
use super::{
    DecodeError, DecodeErrorKind, DoseHeader, FrameMsg, Message, SeriesInfo, WireFormat, check_shape, derr,
    frame_from_bytes, pixel_type,
};
use crate::frame::PixelType;

#[derive(Deserialize, Serialize)]
struct Header {
    htype: String,
    #[serde(default)]
    series: Option<u64>,
    #[serde(default)]
    frame: Option<u64>,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    header_detail: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct ImageDescriptor {
    htype: String,
    /// [width, height]
    shape: [usize; 2],
    #[serde(rename = "type")]
    dtype: String,
    encoding: String,
    #[serde(default)]
    size: Option<usize>,
}

#[derive(Deserialize, Serialize, Default)]
struct ImageConfig {
    #[serde(default)]
    start_time: Option<u64>,
    #[serde(default)]
    stop_time: Option<u64>,
    #[serde(default)]
    real_time: Option<u64>,
}

/// The detector configuration sent with `dheader` (only what beamwatch uses).
#[derive(Deserialize, Serialize, Default)]
struct DetectorConfig {
    #[serde(default)]
    x_pixels_in_detector: Option<usize>,
    #[serde(default)]
    y_pixels_in_detector: Option<usize>,
    #[serde(default)]
    bit_depth_image: Option<u32>,
    #[serde(default)]
    frame_time: Option<f64>,
    #[serde(default)]
    nimages: Option<u64>,
    #[serde(default)]
    ntrigger: Option<u64>,
}

fn json<'a, T: Deserialize<'a>>(part: &'a [u8], what: &str) -> Result<T, DecodeError> {
    serde_json::from_slice(part).map_err(|e| derr(DecodeErrorKind::Json, format!("{what}: {e}")))
}

/// Pixel-blob encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Raw { big_endian: bool },
    Lz4,
    Bslz4 { elem_bits: usize },
}

pub fn parse_encoding(s: &str) -> Result<Encoding, DecodeError> {
    let bad = || derr(DecodeErrorKind::Compression, format!("unknown encoding '{s}'"));
    let (body, big_endian) = match s.strip_suffix('<') {
        Some(b) => (b, false),
        None => (s.strip_suffix('>').ok_or_else(bad)?, true),
    };
    match body {
        "" => Ok(Encoding::Raw { big_endian }),
        "lz4" if !big_endian => Ok(Encoding::Lz4),
        "bs8-lz4" if !big_endian => Ok(Encoding::Bslz4 { elem_bits: 8 }),
        "bs16-lz4" if !big_endian => Ok(Encoding::Bslz4 { elem_bits: 16 }),
        "bs32-lz4" if !big_endian => Ok(Encoding::Bslz4 { elem_bits: 32 }),
        _ => Err(bad()),
    }
}

/// The header appendix: the first JSON object after the detector config without an `htype`
/// (flat-field, mask and count-rate headers have one).
fn appendix_json(parts: &[&[u8]]) -> Option<serde_json::Value> {
    parts
        .iter()
        .filter(|p| p.first() == Some(&b'{'))
        .filter_map(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .find(|v| v.is_object() && v.get("htype").is_none())
}

/// (series, frame) of a `dimage` message from its first part alone (see
/// [`super::Decoder::peek_image`]).
pub fn peek_image(parts: &[&[u8]]) -> Option<(String, u64)> {
    if parts.len() != 4 {
        return None;
    }
    let h: Header = serde_json::from_slice(parts.first()?).ok()?;
    (h.htype == "dimage-1.0").then_some(())?;
    Some((h.series?.to_string(), h.frame?))
}

pub fn decode(parts: &[&[u8]], mask_gaps: bool) -> Result<Message, DecodeError> {
    let first = parts.first().ok_or_else(|| derr(DecodeErrorKind::Parts, "empty message"))?;
    let h: Header = json(first, "header")?;
    match h.htype.as_str() {
        "dheader-1.0" => {
            let series = h.series.ok_or_else(|| derr(DecodeErrorKind::Json, "dheader without series"))?;
            let detail = h.header_detail.as_deref().unwrap_or("basic");
            let cfg: DetectorConfig = match (detail, parts.get(1)) {
                ("none", _) => DetectorConfig::default(),
                (_, Some(p)) => json(p, "detector config")?,
                (_, None) => {
                    return Err(derr(
                        DecodeErrorKind::Parts,
                        format!("dheader with header_detail '{detail}' has no config part"),
                    ));
                }
            };
            series_start(series, &cfg, parts.get(2..).unwrap_or_default())
        }
        "dimage-1.0" => {
            if parts.len() != 4 {
                return Err(derr(
                    DecodeErrorKind::Parts,
                    format!("image message has {} parts, expected 4", parts.len()),
                ));
            }
            let series = h.series.ok_or_else(|| derr(DecodeErrorKind::Json, "dimage without series"))?;
            let frame = h.frame.ok_or_else(|| derr(DecodeErrorKind::Json, "dimage without frame"))?;
            let d: ImageDescriptor = json(parts[1], "dimage_d")?;
            if d.htype != "dimage_d-1.0" {
                return Err(derr(
                    DecodeErrorKind::UnknownMessage,
                    format!("second part is '{}', expected dimage_d-1.0", d.htype),
                ));
            }
            let cfg: ImageConfig = json(parts[3], "dconfig")?;
            let blob = parts[2];
            if let Some(size) = d.size
                && size != blob.len()
            {
                return Err(derr(
                    DecodeErrorKind::Size,
                    format!("dimage_d announces {size} bytes, blob has {}", blob.len()),
                ));
            }
            if let Some(hash) = &h.hash
                && !hash.is_empty()
            {
                let got: String = Md5::digest(blob).iter().map(|b| format!("{b:02x}")).collect();
                if !got.eq_ignore_ascii_case(hash) {
                    return Err(derr(DecodeErrorKind::Checksum, format!("md5 {got} differs from the header's {hash}")));
                }
            }
            let [cols, rows] = d.shape;
            check_shape(rows, cols)?;
            let dtype = pixel_type(&d.dtype)?;
            let expected = rows * cols * dtype.bytes();
            let comp = |e: bslz4::CodecError| derr(DecodeErrorKind::Compression, format!("{}: {e}", d.encoding));
            let (bytes, big) = match parse_encoding(&d.encoding)? {
                Encoding::Raw { big_endian } => (std::borrow::Cow::Borrowed(blob), big_endian),
                Encoding::Lz4 => (std::borrow::Cow::Owned(bslz4::decode_lz4_any(blob, expected).map_err(comp)?), false),
                Encoding::Bslz4 { elem_bits } => {
                    if elem_bits / 8 != dtype.bytes() {
                        return Err(derr(
                            DecodeErrorKind::Compression,
                            format!("encoding {} does not match pixel type {}", d.encoding, dtype.name()),
                        ));
                    }
                    (std::borrow::Cow::Owned(bslz4::decode_bslz4(blob, dtype.bytes(), expected).map_err(comp)?), false)
                }
            };
            let f = frame_from_bytes(&bytes, rows, cols, dtype, big, mask_gaps)?;
            Ok(Message::Frame(Box::new(FrameMsg {
                series: series.to_string(),
                index: frame,
                frame: f,
                timestamp_ns: cfg.start_time,
                dose: DoseHeader::default(),
                format: WireFormat::DectrisV1,
                scan: None,
            })))
        }
        "dseries_end-1.0" => {
            let series = h.series.ok_or_else(|| derr(DecodeErrorKind::Json, "dseries_end without series"))?;
            Ok(Message::SeriesEnd { series: series.to_string() })
        }
        "dflatfield-1.0" => Ok(Message::Ignored("dflatfield")),
        "dpixelmask-1.0" => Ok(Message::Ignored("dpixelmask")),
        "dcountrate_table-1.0" => Ok(Message::Ignored("dcountrate_table")),
        other => Err(derr(DecodeErrorKind::UnknownMessage, format!("unknown htype '{other}'"))),
    }
}

/// The series a `dheader` starts, with what its detector config tells.
/// `appendix`: the parts after the detector config (flat field, mask, …, the header appendix).
fn series_start(series: u64, cfg: &DetectorConfig, appendix: &[&[u8]]) -> Result<Message, DecodeError> {
    let shape = match (cfg.y_pixels_in_detector, cfg.x_pixels_in_detector) {
        (Some(r), Some(c)) => {
            check_shape(r, c)?;
            Some((r, c))
        }
        _ => None,
    };
    let dtype = match cfg.bit_depth_image {
        Some(8) => Some(PixelType::U8),
        Some(16) => Some(PixelType::U16),
        Some(32) => Some(PixelType::U32),
        _ => None,
    };
    let frames = match (cfg.nimages, cfg.ntrigger) {
        (Some(n), Some(t)) => n.checked_mul(t),
        (n, _) => n,
    };
    Ok(Message::SeriesStart(SeriesInfo {
        series: series.to_string(),
        format: WireFormat::DectrisV1,
        frames_expected: frames,
        shape,
        dtype,
        frame_time_s: cfg.frame_time,
        dose: appendix_json(appendix).map(|v| super::dose_json(&v)).unwrap_or_default(),
        scan_hint: appendix_json(appendix)
            .and_then(|v| super::scan_hint_json(&v))
            .map(|s| (s, crate::fourd::ShapeSource::HeaderAppendix)),
    }))
}

/// What stream v1 carries across messages of one socket: a `dheader` sent as a message of its own
/// (LiberTEM-rs's DECTRIS simulator sends the header as two single-part messages, the `dheader`
/// and then the detector config) waits for its config in the next message.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// The series of a single-part `dheader` whose detector config has not come yet.
    awaiting_config: Option<u64>,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    /// The series whose `dheader` came alone and awaits its detector config.
    pub fn awaiting_config(&self) -> Option<u64> {
        self.awaiting_config
    }

    /// Takes `parts` as the detector config of a `dheader` that came alone, when one waits and
    /// this is a single JSON object without `htype` (a config has none). Anything else ends the
    /// wait (`None`: decode the message as usual); a series whose config never came then starts
    /// implicitly with its first image, with unknown counts and frame time.
    pub fn follow_up(&mut self, parts: &[&[u8]]) -> Option<Result<Message, DecodeError>> {
        let series = self.awaiting_config.take()?;
        if let [part] = parts
            && part.first() == Some(&b'{')
        {
            #[derive(Deserialize)]
            struct H {
                htype: Option<serde::de::IgnoredAny>,
            }
            if let Ok(H { htype: None }) = serde_json::from_slice::<H>(part) {
                return Some(
                    json::<DetectorConfig>(part, "detector config").and_then(|cfg| series_start(series, &cfg, &[])),
                );
            }
        }
        tracing::warn!(
            "stream v1: the dheader of series {series} came without its detector config; frame count and frame time unknown"
        );
        None
    }

    /// Decodes one stream-v1 message; a single-part `dheader` that announces a config (detail
    /// `basic` or `all`) is held until the next message (see [`State::follow_up`]).
    pub fn decode(&mut self, parts: &[&[u8]], mask_gaps: bool) -> Result<Message, DecodeError> {
        if let [first] = parts
            && let Ok(h) = serde_json::from_slice::<Header>(first)
            && h.htype == "dheader-1.0"
            && h.header_detail.as_deref().unwrap_or("basic") != "none"
            && let Some(series) = h.series
        {
            self.awaiting_config = Some(series);
            return Ok(Message::Ignored("dheader (its detector config follows as a message of its own)"));
        }
        decode(parts, mask_gaps)
    }
}

// ---- Encoding (simulator) ----

pub fn encode_header(
    series: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    frames: u64,
    frame_time_s: f64,
) -> Vec<Vec<u8>> {
    let h = serde_json::json!({"htype": "dheader-1.0", "series": series, "header_detail": "basic"});
    let cfg = serde_json::json!({
        "x_pixels_in_detector": cols, "y_pixels_in_detector": rows, "bit_depth_image": dtype.bytes() * 8,
        "frame_time": frame_time_s, "count_time": frame_time_s, "nimages": frames, "ntrigger": 1,
        "trigger_mode": "ints", "compression": "bslz4",
    });
    vec![h.to_string().into_bytes(), cfg.to_string().into_bytes()]
}

/// `pixels`: little-endian raw bytes; `encoding` as on the wire (`<`, `lz4<`, `bs16-lz4<`, ...).
#[allow(clippy::too_many_arguments)]
pub fn encode_image(
    series: u64,
    frame: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    pixels: &[u8],
    encoding: &str,
    start_time_ns: u64,
) -> Result<Vec<Vec<u8>>, DecodeError> {
    let blob = match parse_encoding(encoding)? {
        Encoding::Raw { big_endian: false } => pixels.to_vec(),
        Encoding::Raw { big_endian: true } => {
            pixels.chunks_exact(dtype.bytes()).flat_map(|c| c.iter().rev().copied().collect::<Vec<_>>()).collect()
        }
        Encoding::Lz4 => bslz4::encode_lz4_framed(pixels, pixels.len().max(1)),
        Encoding::Bslz4 { elem_bits } => bslz4::encode_bslz4(pixels, elem_bits / 8, bslz4::DEFAULT_BLOCK_BYTES),
    };
    let hash: String = Md5::digest(&blob).iter().map(|b| format!("{b:02x}")).collect();
    let h = serde_json::json!({"htype": "dimage-1.0", "series": series, "frame": frame, "hash": hash});
    let d = serde_json::json!({"htype": "dimage_d-1.0", "shape": [cols, rows], "type": format!("uint{}", dtype.bytes() * 8),
        "encoding": encoding, "size": blob.len()});
    let c = serde_json::json!({"htype": "dconfig-1.0", "start_time": start_time_ns, "stop_time": start_time_ns, "real_time": 0});
    Ok(vec![h.to_string().into_bytes(), d.to_string().into_bytes(), blob, c.to_string().into_bytes()])
}

pub fn encode_end(series: u64) -> Vec<Vec<u8>> {
    vec![serde_json::json!({"htype": "dseries_end-1.0", "series": series}).to_string().into_bytes()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
        parts.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn encodings_round_trip_and_width_comes_first() {
        let (rows, cols) = (3, 5);
        let px: Vec<u8> = (0..rows * cols).flat_map(|v| ((v * 7) as u16).to_le_bytes()).collect();
        for enc in ["<", ">", "lz4<", "bs16-lz4<"] {
            let m = encode_image(3, 9, rows, cols, PixelType::U16, &px, enc, 5).expect("encode");
            match decode(&refs(&m), true) {
                Ok(Message::Frame(f)) => {
                    assert_eq!(
                        (f.series.as_str(), f.index, f.frame.width(), f.frame.height()),
                        ("3", 9, cols, rows),
                        "{enc}"
                    );
                    assert_eq!(f.frame.at(4, 0), 28.0, "{enc}");
                }
                other => panic!("{enc}: {other:?}"),
            }
        }
        let m = encode_header(3, rows, cols, PixelType::U16, 10, 0.1);
        assert!(
            matches!(decode(&refs(&m), true), Ok(Message::SeriesStart(s)) if s.shape == Some((3, 5)) && s.frames_expected == Some(10))
        );
        assert!(matches!(decode(&refs(&encode_end(3)), true), Ok(Message::SeriesEnd { series }) if series == "3"));
    }

    fn config_json() -> Vec<u8> {
        encode_header(34, 96, 128, PixelType::U16, 1024, 0.001).swap_remove(1)
    }

    #[test]
    fn a_header_in_two_single_part_messages_starts_the_series_with_its_config() {
        for detail in ["basic", "all"] {
            let mut st = State::new();
            let dheader = format!(r#"{{"header_detail":"{detail}","htype":"dheader-1.0","series":34}}"#);
            assert!(matches!(st.decode(&[dheader.as_bytes()], true), Ok(Message::Ignored(_))), "{detail}");
            assert_eq!(st.awaiting_config(), Some(34));
            let cfg = config_json();
            match st.follow_up(&[&cfg]) {
                Some(Ok(Message::SeriesStart(s))) => {
                    assert_eq!((s.series.as_str(), s.frames_expected, s.shape), ("34", Some(1024), Some((96, 128))));
                    assert_eq!((s.frame_time_s, s.dtype), (Some(0.001), Some(PixelType::U16)));
                }
                other => panic!("{detail}: {other:?}"),
            }
            assert_eq!(st.awaiting_config(), None);
            // With nothing awaited, a config alone is not taken.
            assert!(st.follow_up(&[&cfg]).is_none());
        }
        // The one-message form is unchanged.
        let mut st = State::new();
        let m = encode_header(3, 8, 8, PixelType::U16, 10, 0.1);
        assert!(matches!(st.decode(&refs(&m), true), Ok(Message::SeriesStart(s)) if s.frames_expected == Some(10)));
        assert_eq!(st.awaiting_config(), None);
        // header_detail "none" has no config: the series starts at once.
        let none = br#"{"header_detail":"none","htype":"dheader-1.0","series":5}"#;
        assert!(matches!(st.decode(&[none], true), Ok(Message::SeriesStart(s)) if s.frames_expected.is_none()));
    }

    #[test]
    fn a_missing_follow_up_leaves_the_image_to_be_decoded() {
        let mut st = State::new();
        assert!(st.decode(&[br#"{"htype":"dheader-1.0","series":34,"header_detail":"basic"}"#], true).is_ok());
        let px: Vec<u8> = (0..64u16).flat_map(|v| v.to_le_bytes()).collect();
        let img = encode_image(34, 0, 8, 8, PixelType::U16, &px, "bs16-lz4<", 0).expect("encode");
        assert!(st.follow_up(&refs(&img)).is_none(), "an image is no config");
        assert_eq!(st.awaiting_config(), None);
        assert!(
            matches!(st.decode(&refs(&img), true), Ok(Message::Frame(f)) if f.series == "34" && f.frame.at(3, 0) == 3.0)
        );
        // A config that is not JSON of a config is an error, not a series.
        st.decode(&[br#"{"htype":"dheader-1.0","series":35}"#], true).expect("dheader");
        let e = st.follow_up(&[br#"{"nimages": "many"}"#]).expect("taken").expect_err("bad config");
        assert_eq!(e.kind, DecodeErrorKind::Json);
    }

    #[test]
    fn malformed_images_are_classified() {
        let px: Vec<u8> = (0..64u16).flat_map(|v| v.to_le_bytes()).collect();
        let m = encode_image(1, 0, 8, 8, PixelType::U16, &px, "bs16-lz4<", 0).expect("encode");
        let r = refs(&m);
        assert_eq!(decode(&r[..3], true).expect_err("parts").kind, DecodeErrorKind::Parts);
        let mut corrupt = m.clone();
        let n = corrupt[2].len();
        corrupt[2][n - 3] ^= 0xff;
        assert_eq!(decode(&refs(&corrupt), true).expect_err("md5").kind, DecodeErrorKind::Checksum);
        // Without a hash, a cut LZ4 stream is a compression error.
        let cut = &m[2][..m[2].len() - 5];
        let desc = String::from_utf8_lossy(&m[1])
            .replace(&format!("\"size\":{}", m[2].len()), &format!("\"size\":{}", cut.len()));
        let e = decode(&[br#"{"htype":"dimage-1.0","series":1,"frame":0}"#, desc.as_bytes(), cut, r[3]], true)
            .expect_err("cut");
        assert_eq!(e.kind, DecodeErrorKind::Compression, "{e}");
        let wrong = String::from_utf8_lossy(&m[1]).replace("bs16-lz4<", "bs32-lz4<");
        let e = decode(&[r[0], wrong.as_bytes(), r[2], r[3]], true).expect_err("elem");
        assert_eq!(e.kind, DecodeErrorKind::Compression);
        let bad_type = String::from_utf8_lossy(&m[1]).replace("uint16", "int64");
        assert_eq!(
            decode(&[r[0], bad_type.as_bytes(), r[2], r[3]], true).expect_err("dtype").kind,
            DecodeErrorKind::Dtype
        );
        assert_eq!(
            decode(&[br#"{"htype":"dimage-1.0","series":1,"#], true).expect_err("json").kind,
            DecodeErrorKind::Json
        );
    }
}
