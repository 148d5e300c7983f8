//! Our decoders against blobs and messages written by other implementations: the bitshuffle C
//! library (through h5py + hdf5plugin) and Python's cbor2 (../shared/fixtures).

mod common;

use beamwatch::decode::{Decoder, Message, WireFormat, bslz4, dectris_v1};
use beamwatch::frame::PixelType;
use beamwatch::weights::identity::sha256_hex;
use common::shared;

#[derive(serde::Deserialize)]
struct Case {
    case: String,
    dtype: String,
    shape: [usize; 2],
    filter: String,
    raw_sha256: String,
}

#[test]
fn bitshuffle_c_library_blobs_decode_bit_exact() {
    let dir = shared().join("fixtures/bslz4");
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(cases.len(), 15);
    for c in &cases {
        let blob = std::fs::read(dir.join(format!("{}.bin", c.case))).expect("bin");
        let raw = std::fs::read(dir.join(format!("{}.raw", c.case))).expect("raw");
        let elem = match c.dtype.as_str() {
            "uint8" => 1,
            "uint16" => 2,
            "uint32" => 4,
            d => panic!("dtype {d}"),
        };
        let expected = c.shape[0] * c.shape[1] * elem;
        assert_eq!(raw.len(), expected);
        let got = if c.filter.starts_with("bslz4") {
            bslz4::decode_bslz4(&blob, elem, expected)
        } else {
            bslz4::decode_lz4_any(&blob, expected)
        }
        .unwrap_or_else(|e| panic!("{}: {e}", c.case));
        assert_eq!(got, raw, "{}", c.case);
        assert_eq!(sha256_hex(&got), c.raw_sha256, "{}", c.case);
        // The same blob as a DECTRIS stream-v1 image part decodes to the same pixels.
        let encoding = if c.filter.starts_with("bslz4") { format!("bs{}-lz4<", elem * 8) } else { "lz4<".into() };
        let (rows, cols) = (c.shape[0], c.shape[1]);
        let d = serde_json::json!({"htype": "dimage_d-1.0", "shape": [cols, rows], "type": c.dtype, "encoding": encoding, "size": blob.len()});
        let parts: Vec<Vec<u8>> = vec![
            br#"{"htype":"dimage-1.0","series":1,"frame":0}"#.to_vec(),
            d.to_string().into_bytes(),
            blob.clone(),
            br#"{"htype":"dconfig-1.0"}"#.to_vec(),
        ];
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        match dectris_v1::decode(&refs, false) {
            Ok(Message::Frame(f)) => {
                assert_eq!((f.frame.width(), f.frame.height()), (cols, rows));
                let first = match elem {
                    1 => raw[0] as f32,
                    2 => u16::from_le_bytes([raw[0], raw[1]]) as f32,
                    _ => u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f32,
                };
                assert_eq!(f.frame.at(0, 0), first);
            }
            other => panic!("{}: {other:?}", c.case),
        }
    }
}

#[derive(serde::Deserialize)]
struct V2Manifest {
    rows: usize,
    cols: usize,
    messages: Vec<V2Message>,
}

#[derive(serde::Deserialize)]
struct V2Message {
    file: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    pixels_sha256_le_u16: std::collections::BTreeMap<String, String>,
}

#[test]
fn cbor2_stream_v2_messages_decode_with_both_channels() {
    let dir = shared().join("fixtures/stream_v2");
    let m: V2Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    for channel in ["threshold_1", "threshold_2"] {
        let mut dec = Decoder::new(WireFormat::Auto, Some(channel.into()), false);
        let mut frames = 0;
        for msg in &m.messages {
            let bytes = std::fs::read(dir.join(&msg.file)).expect("cbor");
            let out = dec.decode(&[&bytes]).unwrap_or_else(|e| panic!("{}: {e}", msg.file));
            match (msg.kind.as_str(), out) {
                ("start", Message::SeriesStart(s)) => {
                    assert_eq!(
                        (s.series.as_str(), s.shape, s.dtype),
                        ("7", Some((m.rows, m.cols)), Some(PixelType::U16))
                    );
                }
                ("image", Message::Frame(f)) => {
                    assert_eq!((f.frame.width(), f.frame.height()), (m.cols, m.rows));
                    let le: Vec<u8> = f.frame.pixels().iter().flat_map(|&v| (v as u16).to_le_bytes()).collect();
                    assert_eq!(sha256_hex(&le), msg.pixels_sha256_le_u16[channel], "{} {channel}", msg.file);
                    assert_eq!(f.index, frames);
                    frames += 1;
                }
                ("end", Message::SeriesEnd { series }) => assert_eq!(series, "7"),
                (k, other) => panic!("{}: expected {k}, got {other:?}", msg.file),
            }
        }
        assert_eq!(frames, 2);
    }
}
