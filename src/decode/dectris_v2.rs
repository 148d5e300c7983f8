//! DECTRIS stream v2: one CBOR map per message, `type` = start | image | end.
//!
//! Image data: `data: {channel: tag40([[rows, cols], typed array])}` where the typed array is an
//! RFC 8746 tag (64 u8, 65/69 u16 BE/LE, 66/70 u32 BE/LE, 81/85 f32 BE/LE) around either the raw
//! bytes or tag 56500 `[algorithm, element size, bytes]` with algorithm "bslz4" or "lz4". Tag 1040
//! in place of 40 means column-major. The configured channel is analysed (default: the first one the
//! start message announces).

use ciborium::Value;

use super::bslz4;
use super::{
    DecodeError, DecodeErrorKind, DoseHeader, FrameMsg, Message, SeriesInfo, WireFormat, check_shape, derr,
    frame_from_bytes, pixel_type,
};
use crate::frame::PixelType;

/// What a series' start message told us.
#[derive(Clone)]
pub struct State {
    channel: Option<String>,
    announced: Vec<String>,
}

/// (series, image_id) of an `image` message, its data skipped unread (see
/// [`super::Decoder::peek_image`]).
pub fn peek_image(parts: &[&[u8]]) -> Option<(String, u64)> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Series {
        Int(u64),
        Text(String),
    }
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "type")]
        kind: String,
        series_id: Option<Series>,
        image_id: Option<u64>,
    }
    let [part] = parts else { return None };
    // The self-describe tag 55799 (d9 d9 f7) in front of the map.
    let body = part.strip_prefix(&[0xd9, 0xd9, 0xf7]).unwrap_or(part);
    let p: Peek = ciborium::de::from_reader(body).ok()?;
    (p.kind == "image").then_some(())?;
    let series = match p.series_id? {
        Series::Int(i) => i.to_string(),
        Series::Text(t) => t,
    };
    Some((series, p.image_id?))
}

fn cbor(detail: impl Into<String>) -> DecodeError {
    derr(DecodeErrorKind::Cbor, detail)
}

fn get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v)
}

fn int(v: Option<&Value>) -> Option<u64> {
    v.and_then(|v| v.as_integer()).and_then(|i| u64::try_from(i).ok())
}

fn float(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => i64::try_from(*i).ok().map(|i| i as f64),
        _ => None,
    }
}

fn series_key(map: &[(Value, Value)]) -> Result<String, DecodeError> {
    match get(map, "series_id") {
        Some(Value::Integer(i)) => Ok(u64::try_from(*i).map(|v| v.to_string()).unwrap_or_else(|_| format!("{i:?}"))),
        Some(Value::Text(t)) => Ok(t.clone()),
        _ => Err(cbor("message without series_id")),
    }
}

/// A rational `[numerator, denominator]` in seconds → nanoseconds.
fn rational_ns(v: Option<&Value>) -> Option<u64> {
    let a = v?.as_array()?;
    let (n, d) = (u128::try_from(a.first()?.as_integer()?).ok()?, u128::try_from(a.get(1)?.as_integer()?).ok()?);
    (d > 0).then(|| (n * 1_000_000_000 / d).min(u64::MAX as u128) as u64)
}

/// RFC 8746 typed-array tag → (pixel type, big-endian).
fn typed_tag(tag: u64) -> Result<(PixelType, bool), DecodeError> {
    match tag {
        64 | 68 => Ok((PixelType::U8, false)),
        65 => Ok((PixelType::U16, true)),
        69 => Ok((PixelType::U16, false)),
        66 => Ok((PixelType::U32, true)),
        70 => Ok((PixelType::U32, false)),
        81 => Ok((PixelType::F32, true)),
        85 => Ok((PixelType::F32, false)),
        t => Err(derr(DecodeErrorKind::Dtype, format!("unsupported typed-array tag {t} (u8, u16, u32, f32 only)"))),
    }
}

/// tag40/1040 multi-dimensional array → raw row-major bytes, pixel type, endianness, rows, cols.
fn decode_array(v: &Value) -> Result<(Vec<u8>, PixelType, bool, usize, usize), DecodeError> {
    let (tag, inner) = match v {
        Value::Tag(t @ (40 | 1040), inner) => (*t, inner),
        _ => return Err(cbor("channel data is not a tag-40 (or 1040) multi-dimensional array")),
    };
    let arr =
        inner.as_array().filter(|a| a.len() == 2).ok_or_else(|| cbor("multi-dimensional array is not [dims, data]"))?;
    let dims = arr[0].as_array().ok_or_else(|| cbor("dims is not an array"))?;
    let dims: Vec<usize> = dims
        .iter()
        .map(|d| int(Some(d)).map(|v| v as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| cbor("dims are not integers"))?;
    let [rows, cols] = dims[..] else {
        return Err(derr(DecodeErrorKind::Shape, format!("dims {dims:?} are not 2-D")));
    };
    check_shape(rows, cols)?;
    let (ttag, payload) = match &arr[1] {
        Value::Tag(t, p) => (*t, p),
        _ => return Err(cbor("data is not a typed array")),
    };
    let (dtype, big) = typed_tag(ttag)?;
    let elem = dtype.bytes();
    let expected = rows * cols * elem;
    let bytes = match payload.as_ref() {
        Value::Bytes(b) => {
            if b.len() != expected {
                return Err(derr(
                    DecodeErrorKind::Size,
                    format!("{} bytes for {rows}×{cols} {}", b.len(), dtype.name()),
                ));
            }
            b.clone()
        }
        Value::Tag(56500, c) => {
            let c = c
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| cbor("tag 56500 is not [algorithm, element size, bytes]"))?;
            let alg = c[0].as_text().ok_or_else(|| cbor("compression algorithm is not text"))?;
            let blob = c[2].as_bytes().ok_or_else(|| cbor("compressed data is not bytes"))?;
            let comp = |e: bslz4::CodecError| derr(DecodeErrorKind::Compression, format!("{alg}: {e}"));
            match alg {
                "bslz4" => {
                    let es = int(Some(&c[1])).unwrap_or(0) as usize;
                    if es != elem {
                        return Err(derr(
                            DecodeErrorKind::Compression,
                            format!("bslz4 element size {es} for {} pixels", dtype.name()),
                        ));
                    }
                    bslz4::decode_bslz4(blob, elem, expected).map_err(comp)?
                }
                "lz4" => bslz4::decode_lz4_any(blob, expected).map_err(comp)?,
                other => return Err(derr(DecodeErrorKind::Compression, format!("unknown compression '{other}'"))),
            }
        }
        _ => return Err(cbor("typed array holds neither bytes nor tag 56500")),
    };
    let bytes = if tag == 1040 { column_to_row_major(&bytes, rows, cols, elem) } else { bytes };
    Ok((bytes, dtype, big, rows, cols))
}

fn column_to_row_major(b: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; b.len()];
    for c in 0..cols {
        for r in 0..rows {
            let (src, dst) = ((c * rows + r) * elem, (r * cols + c) * elem);
            out[dst..dst + elem].copy_from_slice(&b[src..src + elem]);
        }
    }
    out
}

/// The start message's `user_data` (what the detector's `header_appendix` becomes) as JSON.
fn user_data(map: &[(Value, Value)]) -> Option<serde_json::Value> {
    get(map, "user_data")?.deserialized::<serde_json::Value>().ok().filter(serde_json::Value::is_object)
}

impl State {
    pub fn new(channel: Option<String>) -> Self {
        Self { channel, announced: Vec::new() }
    }

    pub fn decode(&mut self, parts: &[&[u8]], mask_gaps: bool) -> Result<Message, DecodeError> {
        if parts.len() != 1 {
            return Err(derr(
                DecodeErrorKind::Parts,
                format!("stream-v2 message has {} parts, expected 1", parts.len()),
            ));
        }
        let mut v: Value = ciborium::de::from_reader(parts[0]).map_err(|e| cbor(format!("{e}")))?;
        if let Value::Tag(55799, inner) = v {
            v = *inner;
        }
        let map = v.as_map().ok_or_else(|| cbor("message is not a CBOR map"))?;
        let kind = get(map, "type").and_then(Value::as_text).ok_or_else(|| cbor("message without type"))?;
        match kind {
            "start" => self.start(map),
            "image" => self.image(map, mask_gaps),
            "end" => Ok(Message::SeriesEnd { series: series_key(map)? }),
            other => Err(derr(DecodeErrorKind::UnknownMessage, format!("unknown message type '{other}'"))),
        }
    }

    fn start(&mut self, map: &[(Value, Value)]) -> Result<Message, DecodeError> {
        let series = series_key(map)?;
        self.announced = get(map, "channels")
            .and_then(Value::as_array)
            .map(|chs| {
                chs.iter()
                    .filter_map(|c| match c {
                        Value::Text(t) => Some(t.clone()),
                        Value::Map(m) => get(m, "name").and_then(Value::as_text).map(str::to_owned),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let shape = match (int(get(map, "image_size_y")), int(get(map, "image_size_x"))) {
            (Some(r), Some(c)) => {
                check_shape(r as usize, c as usize)?;
                Some((r as usize, c as usize))
            }
            _ => None,
        };
        let dtype = get(map, "image_dtype").and_then(Value::as_text).map(pixel_type).transpose()?;
        Ok(Message::SeriesStart(SeriesInfo {
            series,
            format: WireFormat::DectrisV2,
            frames_expected: int(get(map, "number_of_images")),
            shape,
            dtype,
            frame_time_s: float(get(map, "frame_time")),
            // beamwatch's keys in user_data (docs/wire-format.md): scan shape and dose inputs.
            dose: user_data(map).map(|v| super::dose_json(&v)).unwrap_or_default(),
            scan_hint: user_data(map)
                .and_then(|v| super::scan_hint_json(&v))
                .map(|s| (s, crate::fourd::ShapeSource::StreamUserData)),
        }))
    }

    fn image(&self, map: &[(Value, Value)], mask_gaps: bool) -> Result<Message, DecodeError> {
        let series = series_key(map)?;
        let index = int(get(map, "image_id")).ok_or_else(|| cbor("image without image_id"))?;
        let data = get(map, "data").and_then(Value::as_map).ok_or_else(|| cbor("image without a data map"))?;
        let wanted = self.channel.clone().or_else(|| self.announced.first().cloned()).or_else(|| {
            let mut keys: Vec<&str> = data.iter().filter_map(|(k, _)| k.as_text()).collect();
            keys.sort_unstable();
            keys.first().map(|k| k.to_string())
        });
        let name = wanted.ok_or_else(|| cbor("image has no channels"))?;
        let arr = get(data, &name).ok_or_else(|| {
            let have: Vec<&str> = data.iter().filter_map(|(k, _)| k.as_text()).collect();
            derr(DecodeErrorKind::Channel, format!("channel '{name}' not in image (has {have:?})"))
        })?;
        let (bytes, dtype, big, rows, cols) = decode_array(arr)?;
        let frame = frame_from_bytes(&bytes, rows, cols, dtype, big, mask_gaps)?;
        Ok(Message::Frame(Box::new(FrameMsg {
            series,
            index,
            frame,
            timestamp_ns: rational_ns(get(map, "start_time")),
            dose: DoseHeader::default(),
            format: WireFormat::DectrisV2,
            scan: None,
        })))
    }
}

// ---- Encoding (simulator) ----

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Serialising a Value into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(v, &mut out);
    out
}

pub fn encode_start(
    series_id: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    frames: u64,
    frame_time_s: f64,
    channels: &[&str],
) -> Vec<Vec<u8>> {
    encode_start_with_user_data(series_id, rows, cols, dtype, frames, frame_time_s, channels, None)
}

/// [`encode_start`] with a `user_data` entry (what a detector's `header_appendix` becomes).
#[allow(clippy::too_many_arguments)]
pub fn encode_start_with_user_data(
    series_id: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    frames: u64,
    frame_time_s: f64,
    channels: &[&str],
    user_data: Option<&serde_json::Value>,
) -> Vec<Vec<u8>> {
    let mut m = vec![
        (text("type"), text("start")),
        (text("series_id"), Value::Integer(series_id.into())),
        (text("series_unique_id"), text(&format!("beamwatch-sim-{series_id}"))),
        (text("image_size_x"), Value::Integer((cols as u64).into())),
        (text("image_size_y"), Value::Integer((rows as u64).into())),
        (text("image_dtype"), text(&format!("uint{}", dtype.bytes() * 8))),
        (text("number_of_images"), Value::Integer(frames.into())),
        (text("frame_time"), Value::Float(frame_time_s)),
        (text("count_time"), Value::Float(frame_time_s)),
        (text("channels"), Value::Array(channels.iter().map(|c| Value::Map(vec![(text("name"), text(c))])).collect())),
    ];
    if let Some(ud) = user_data.and_then(|u| Value::serialized(u).ok()) {
        m.push((text("user_data"), ud));
    }
    vec![to_bytes(&Value::Map(m))]
}

/// `channels`: (name, little-endian pixels); `compression`: "bslz4", "lz4" or "none".
/// (The arguments are the message's own fields.)
#[allow(clippy::too_many_arguments)]
pub fn encode_image(
    series_id: u64,
    image_id: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    channels: &[(&str, &[u8])],
    compression: &str,
    start_time_ns: u64,
) -> Vec<Vec<u8>> {
    let elem = dtype.bytes();
    let data = channels
        .iter()
        .map(|(name, px)| {
            let payload = match compression {
                "bslz4" => Value::Tag(
                    56500,
                    Box::new(Value::Array(vec![
                        text("bslz4"),
                        Value::Integer((elem as u64).into()),
                        Value::Bytes(bslz4::encode_bslz4(px, elem, bslz4::DEFAULT_BLOCK_BYTES)),
                    ])),
                ),
                "lz4" => Value::Tag(
                    56500,
                    Box::new(Value::Array(vec![
                        text("lz4"),
                        Value::Integer(0u64.into()),
                        Value::Bytes(bslz4::encode_lz4_framed(px, 8192)),
                    ])),
                ),
                _ => Value::Bytes(px.to_vec()),
            };
            (text(name), typed_array(rows, cols, dtype, payload))
        })
        .collect();
    image_message(series_id, image_id, start_time_ns, data)
}

/// An RFC 8746 multi-dimensional typed array (tag 40) of `rows × cols` elements of `dtype`.
fn typed_array(rows: usize, cols: usize, dtype: PixelType, payload: Value) -> Value {
    let tag = match dtype {
        PixelType::U8 => 64,
        PixelType::U16 => 69,
        PixelType::U32 => 70,
        PixelType::F32 => 85,
    };
    Value::Tag(
        40,
        Box::new(Value::Array(vec![
            Value::Array(vec![Value::Integer((rows as u64).into()), Value::Integer((cols as u64).into())]),
            Value::Tag(tag, Box::new(payload)),
        ])),
    )
}

/// The image message around its channels' arrays.
fn image_message(series_id: u64, image_id: u64, start_time_ns: u64, data: Vec<(Value, Value)>) -> Vec<Vec<u8>> {
    let m = Value::Map(vec![
        (text("type"), text("image")),
        (text("series_id"), Value::Integer(series_id.into())),
        (text("series_unique_id"), text(&format!("beamwatch-sim-{series_id}"))),
        (text("image_id"), Value::Integer(image_id.into())),
        (
            text("start_time"),
            Value::Array(vec![Value::Integer(start_time_ns.into()), Value::Integer(1_000_000_000u64.into())]),
        ),
        (text("data"), Value::Map(data)),
    ]);
    vec![to_bytes(&m)]
}

/// An image message around a pattern already compressed with bitshuffle-LZ4 (12-byte header
/// included), in channel `channel`: what a detector sends, without compressing again (the
/// live benchmark sends pre-compressed patterns at rates the encoder could not keep up with).
#[allow(clippy::too_many_arguments)]
pub fn encode_image_bslz4(
    series_id: u64,
    image_id: u64,
    rows: usize,
    cols: usize,
    dtype: PixelType,
    channel: &str,
    blob: &[u8],
    start_time_ns: u64,
) -> Vec<Vec<u8>> {
    let payload = Value::Tag(
        56500,
        Box::new(Value::Array(vec![
            text("bslz4"),
            Value::Integer((dtype.bytes() as u64).into()),
            Value::Bytes(blob.to_vec()),
        ])),
    );
    image_message(series_id, image_id, start_time_ns, vec![(text(channel), typed_array(rows, cols, dtype, payload))])
}

pub fn encode_end(series_id: u64) -> Vec<Vec<u8>> {
    vec![to_bytes(&Value::Map(vec![
        (text("type"), text("end")),
        (text("series_id"), Value::Integer(series_id.into())),
    ]))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(m: &[Vec<u8>]) -> Vec<&[u8]> {
        m.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn round_trip_channels_and_compressions() {
        let (rows, cols) = (4, 6);
        let a: Vec<u8> = (0..24u16).flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = (0..24u16).flat_map(|v| (v * 2).to_le_bytes()).collect();
        let mut st = State::new(None);
        assert!(
            matches!(st.decode(&one(&encode_start(5, rows, cols, PixelType::U16, 2, 0.1, &["t1", "t2"])), true), Ok(Message::SeriesStart(s)) if s.shape == Some((4, 6)))
        );
        for comp in ["bslz4", "lz4", "none"] {
            let m = encode_image(5, 1, rows, cols, PixelType::U16, &[("t1", &a), ("t2", &b)], comp, 10);
            match st.decode(&one(&m), true) {
                Ok(Message::Frame(f)) => assert_eq!(f.frame.at(5, 3), 23.0, "{comp}: first announced channel"),
                other => panic!("{comp}: {other:?}"),
            }
            let mut t2 = State::new(Some("t2".into()));
            match t2.decode(&one(&m), true) {
                Ok(Message::Frame(f)) => assert_eq!(f.frame.at(5, 3), 46.0),
                other => panic!("{other:?}"),
            }
            let mut missing = State::new(Some("difference".into()));
            assert!(missing.decode(&one(&m), true).is_err());
        }
        assert!(matches!(st.decode(&one(&encode_end(5)), true), Ok(Message::SeriesEnd { series }) if series == "5"));
    }

    #[test]
    fn bad_cbor_is_classified() {
        let mut st = State::new(None);
        assert_eq!(st.decode(&[&[0xa1, 0x64]], true).expect_err("truncated").kind, DecodeErrorKind::Cbor);
        // A byte string claiming 2^40 bytes in a 12-byte message: an error, no allocation.
        let liar = [0xa1, 0x61, b'x', 0x5b, 0, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(st.decode(&[&liar], true).expect_err("liar").kind, DecodeErrorKind::Cbor);
        let not_map = to_bytes(&Value::Array(vec![]));
        assert_eq!(st.decode(&[&not_map], true).expect_err("array").kind, DecodeErrorKind::Cbor);
        let m = encode_image(1, 0, 2, 2, PixelType::U16, &[("c", &[0u8; 6])], "none", 0);
        assert_eq!(st.decode(&one(&m), true).expect_err("size").kind, DecodeErrorKind::Size);
    }
}
