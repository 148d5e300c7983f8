//! beamwatch's own wire format (specified in `docs/wire-format.md`).
//!
//! - series start, one part: `{"htype": "beamwatch/series-start/1", "series": ID, ...}`
//! - frame, two parts: `{"htype": "beamwatch/frame/1", "series": ID, "frame": N, "shape": [rows, cols],
//!   "dtype": "u16", "byte_order": "<", ...}` and the raw pixels, row-major
//! - series end, one part: `{"htype": "beamwatch/series-end/1", "series": ID}`

use serde::{Deserialize, Serialize};

use super::{
    DecodeError, DecodeErrorKind, DoseHeader, FrameMsg, Message, SeriesInfo, WireFormat, check_shape, derr,
    frame_from_bytes, pixel_type,
};
use crate::frame::PixelType;

pub const HTYPE_START: &str = "beamwatch/series-start/1";
pub const HTYPE_FRAME: &str = "beamwatch/frame/1";
pub const HTYPE_END: &str = "beamwatch/series-end/1";

/// A series id may be sent as a string or a number; both become a string.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SeriesId {
    Text(String),
    Number(u64),
}

impl std::fmt::Display for SeriesId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct StartHeader {
    pub htype: String,
    pub series: SeriesId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_time_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dose: Option<DoseHeader>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct FrameHeader {
    pub htype: String,
    pub series: SeriesId,
    pub frame: u64,
    /// [rows, cols]
    pub shape: [usize; 2],
    pub dtype: String,
    /// "<" little-endian (default) or ">" big-endian.
    #[serde(default = "little")]
    pub byte_order: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dose: Option<DoseHeader>,
}

fn little() -> String {
    "<".into()
}

#[derive(Debug, Deserialize, Serialize)]
struct EndHeader {
    htype: String,
    series: SeriesId,
}

#[derive(Deserialize)]
struct Htype {
    htype: String,
}

fn json<'a, T: Deserialize<'a>>(part: &'a [u8], what: &str) -> Result<T, DecodeError> {
    serde_json::from_slice(part).map_err(|e| derr(DecodeErrorKind::Json, format!("{what}: {e}")))
}

fn parts_exact(parts: &[&[u8]], n: usize, what: &str) -> Result<(), DecodeError> {
    if parts.len() != n {
        return Err(derr(DecodeErrorKind::Parts, format!("{what} has {} parts, expected {n}", parts.len())));
    }
    Ok(())
}

pub fn decode(parts: &[&[u8]], mask_gaps: bool) -> Result<Message, DecodeError> {
    let first = parts.first().ok_or_else(|| derr(DecodeErrorKind::Parts, "empty message"))?;
    let h: Htype = json(first, "header")?;
    match h.htype.as_str() {
        HTYPE_START => {
            parts_exact(parts, 1, "series start")?;
            let s: StartHeader = json(first, "series start")?;
            let shape = match s.shape {
                Some([r, c]) => {
                    check_shape(r, c)?;
                    Some((r, c))
                }
                None => None,
            };
            Ok(Message::SeriesStart(SeriesInfo {
                series: s.series.to_string(),
                format: WireFormat::Beamwatch,
                frames_expected: s.frames,
                shape,
                dtype: s.dtype.as_deref().map(pixel_type).transpose()?,
                frame_time_s: s.frame_time_s,
                dose: s.dose.unwrap_or_default(),
                scan_hint: None,
            }))
        }
        HTYPE_FRAME => {
            parts_exact(parts, 2, "frame")?;
            let f: FrameHeader = json(first, "frame header")?;
            let [rows, cols] = f.shape;
            let dtype = pixel_type(&f.dtype)?;
            let big = match f.byte_order.as_str() {
                "<" | "little" => false,
                ">" | "big" => true,
                o => return Err(derr(DecodeErrorKind::Dtype, format!("unknown byte_order '{o}'"))),
            };
            let frame = frame_from_bytes(parts[1], rows, cols, dtype, big, mask_gaps)?;
            Ok(Message::Frame(Box::new(FrameMsg {
                series: f.series.to_string(),
                index: f.frame,
                frame,
                timestamp_ns: f.timestamp_ns,
                dose: f.dose.unwrap_or_default(),
                format: WireFormat::Beamwatch,
                scan: None,
            })))
        }
        HTYPE_END => {
            parts_exact(parts, 1, "series end")?;
            let e: EndHeader = json(first, "series end")?;
            Ok(Message::SeriesEnd { series: e.series.to_string() })
        }
        other => Err(derr(DecodeErrorKind::UnknownMessage, format!("unknown htype '{other}'"))),
    }
}

// ---- Encoding (simulator, replay --publish) ----

pub fn encode_start(info: &SeriesInfo) -> Vec<Vec<u8>> {
    let h = StartHeader {
        htype: HTYPE_START.into(),
        series: SeriesId::Text(info.series.clone()),
        frames: info.frames_expected,
        shape: info.shape.map(|(r, c)| [r, c]),
        dtype: info.dtype.map(|d| d.name().to_string()),
        frame_time_s: info.frame_time_s,
        dose: Some(info.dose),
    };
    vec![serde_json::to_vec(&h).unwrap_or_default()]
}

/// `pixels`: little-endian raw bytes of `dtype`. (The arguments are the header's own fields.)
#[allow(clippy::too_many_arguments)]
pub fn encode_frame(
    series: &str,
    index: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    pixels: Vec<u8>,
    timestamp_ns: Option<u64>,
    dose: Option<DoseHeader>,
) -> Vec<Vec<u8>> {
    let h = FrameHeader {
        htype: HTYPE_FRAME.into(),
        series: SeriesId::Text(series.into()),
        frame: index,
        shape: [rows, cols],
        dtype: dtype.name().into(),
        byte_order: "<".into(),
        timestamp_ns,
        dose,
    };
    vec![serde_json::to_vec(&h).unwrap_or_default(), pixels]
}

pub fn encode_end(series: &str) -> Vec<Vec<u8>> {
    vec![
        serde_json::to_vec(&EndHeader { htype: HTYPE_END.into(), series: SeriesId::Text(series.into()) })
            .unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
        parts.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn round_trip_and_rejections() {
        let info = SeriesInfo {
            series: "s1".into(),
            format: WireFormat::Beamwatch,
            frames_expected: Some(3),
            shape: Some((2, 3)),
            dtype: Some(PixelType::U16),
            frame_time_s: Some(0.5),
            dose: DoseHeader { beam_current_pa: Some(40.0), dwell_time_us: Some(2.0), pixel_size_a: Some(0.5) },
            scan_hint: None,
        };
        match decode(&refs(&encode_start(&info)), true) {
            Ok(Message::SeriesStart(s)) => assert_eq!(s, info),
            other => panic!("{other:?}"),
        }
        let px: Vec<u8> = (1u16..=6).flat_map(|v| v.to_le_bytes()).collect();
        let msg = encode_frame("s1", 4, 2, 3, PixelType::U16, px.clone(), Some(7), None);
        match decode(&refs(&msg), true) {
            Ok(Message::Frame(f)) => {
                assert_eq!((f.index, f.frame.width(), f.frame.height(), f.timestamp_ns), (4, 3, 2, Some(7)));
                assert_eq!(f.frame.pixels(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            }
            other => panic!("{other:?}"),
        }
        // Numeric series ids are accepted.
        let num = br#"{"htype":"beamwatch/series-end/1","series":12}"#;
        assert!(matches!(decode(&[num], true), Ok(Message::SeriesEnd { series }) if series == "12"));
        // Truncated multipart, wrong sizes, unknown dtype, lying shape.
        assert_eq!(decode(&refs(&msg)[..1], true).expect_err("parts").kind, DecodeErrorKind::Parts);
        assert_eq!(decode(&[&msg[0], &px[..10]], true).expect_err("size").kind, DecodeErrorKind::Size);
        let bad = String::from_utf8_lossy(&msg[0]).replace("\"u16\"", "\"c64\"");
        assert_eq!(decode(&[bad.as_bytes(), &px], true).expect_err("dtype").kind, DecodeErrorKind::Dtype);
        let huge = String::from_utf8_lossy(&msg[0]).replace("[2,3]", "[46341,46341]");
        assert_eq!(decode(&[huge.as_bytes(), &px], true).expect_err("huge").kind, DecodeErrorKind::Shape);
        assert_eq!(
            decode(&[b"{\"htype\":\"beamwatch/nope/1\"}"], true).expect_err("htype").kind,
            DecodeErrorKind::UnknownMessage
        );
        assert_eq!(
            decode(&[b"{\"htype\":\"beamwatch/frame/1\",", &px], true).expect_err("json").kind,
            DecodeErrorKind::Json
        );
    }
}
