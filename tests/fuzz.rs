//! A fuzz suite on stable Rust: a plain seeded mutation loop per decoder, seeded from inputs the
//! encoders here write (the same kinds of messages and blobs the fixtures hold). Each target
//! asserts: no panic, and no single allocation over a small bound (a decoder must grow its output
//! by what the input can produce, not by what a header claims).
//!
//! CI runs `BEAMWATCH_FUZZ_ITERS` (default 20,000) mutations per decoder target and a tenth of it
//! per file-reader target (TIFF, PNG, .npy, DM3/DM4; a hundredth for TIA, whose seed is a real 2 MB
//! file); a long run:
//! `BEAMWATCH_FUZZ_ITERS=100000000 BEAMWATCH_FUZZ_SEED=$RANDOM cargo test --release --test fuzz`.
//! A crashing input is written to `tests/fuzz-regressions/` (commit it: every later run replays it).

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use beamwatch::decode::bslz4::{decode_bslz4, decode_lz4_any, encode_bslz4, encode_lz4_framed};
use beamwatch::decode::{Decoder, DoseHeader, SeriesInfo, WireFormat, dectris_v1, dectris_v2, own};
use beamwatch::frame::PixelType;

#[path = "common/largest_alloc.rs"]
mod largest_alloc;

/// No single block above this: the seeds are a few kB; a decoder that believes a forged header
/// asks for far more.
const MAX_BLOCK: usize = 64 << 20;

fn iterations() -> usize {
    std::env::var("BEAMWATCH_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("BEAMWATCH_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(17)
}

fn regressions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

fn pack(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend((p.len() as u32).to_le_bytes());
        out.extend(p);
    }
    out
}

fn unpack(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    while b.len() >= 4 {
        let n = (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).min(b.len() - 4);
        parts.push(b[4..4 + n].to_vec());
        b = &b[4 + n..];
    }
    parts
}

/// One mutation: flip bits, overwrite bytes with boundary values, insert, delete, splice a
/// length field with a huge value, or cut a part.
fn mutate(rng: &mut ChaCha8Rng, parts: &mut Vec<Vec<u8>>) {
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    for _ in 0..rng.random_range(1..4) {
        let (k, n_parts) = (rng.random_range(0..parts.len()), parts.len());
        let p = &mut parts[k];
        let at = if p.is_empty() { 0 } else { rng.random_range(0..p.len()) };
        match rng.random_range(0..8) {
            0 if !p.is_empty() => p[at] ^= 1 << rng.random_range(0..8),
            1 if !p.is_empty() => p[at] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
            2 => p.insert(at, rng.random()),
            3 if !p.is_empty() => {
                p.remove(at);
            }
            4 if p.len() >= at + 8 => {
                let v: u64 = [u64::MAX, 1 << 40, 1 << 31, u32::MAX as u64, 0][rng.random_range(0..5)];
                let bytes = if rng.random() { v.to_be_bytes() } else { v.to_le_bytes() };
                p[at..at + 8].copy_from_slice(&bytes);
            }
            5 => p.truncate(at),
            6 if n_parts > 1 => {
                parts.remove(k);
                return;
            }
            _ => {
                let n = rng.random_range(0..16);
                p.splice(at..at, std::iter::repeat_n(rng.random::<u8>(), n));
            }
        }
    }
}

/// Runs `target` on every stored regression input, then on `iterations()` mutations of the seeds;
/// a panicking or over-allocating input is saved and the test fails naming it.
fn fuzz(name: &str, seeds: Vec<Vec<Vec<u8>>>, target: impl Fn(&[Vec<u8>])) {
    fuzz_n(name, seeds, iterations(), target)
}

/// [`fuzz`] with `n` mutations.
fn fuzz_n(name: &str, seeds: Vec<Vec<Vec<u8>>>, n: usize, target: impl Fn(&[Vec<u8>])) {
    let check = |parts: &[Vec<u8>]| -> Result<(), String> {
        largest_alloc::reset();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(parts)));
        let largest = largest_alloc::largest();
        match r {
            Err(_) => Err("panicked".into()),
            Ok(()) if largest > MAX_BLOCK => Err(format!("allocated a block of {largest} bytes")),
            Ok(()) => Ok(()),
        }
    };
    if let Ok(dir) = std::fs::read_dir(regressions()) {
        for e in dir.filter_map(Result::ok) {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}-")) {
                let parts = unpack(&std::fs::read(e.path()).expect("regression input"));
                if let Err(why) = check(&parts) {
                    panic!("{name}: regression {file} {why}");
                }
            }
        }
    }
    for s in &seeds {
        check(s).unwrap_or_else(|why| panic!("{name}: a seed {why}"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ name.bytes().fold(0u64, |h, b| h.wrapping_mul(31) + u64::from(b)));
    for i in 0..n {
        let mut parts = seeds[i % seeds.len()].clone();
        mutate(&mut rng, &mut parts);
        if let Err(why) = check(&parts) {
            use sha2::Digest;
            let bytes = pack(&parts);
            let hash: String = sha2::Sha256::digest(&bytes).iter().take(8).map(|b| format!("{b:02x}")).collect();
            let path = regressions().join(format!("{name}-{hash}.bin"));
            let _ = std::fs::write(&path, &bytes);
            panic!("{name}: mutation {i} {why}; input kept as {}", path.display());
        }
    }
}

fn pixels(n: usize) -> Vec<u8> {
    (0..n * 2).map(|i| (i * 7 % 251) as u8).collect()
}

fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
    parts.iter().map(Vec::as_slice).collect()
}

#[test]
fn fuzz_own_format() {
    let info = SeriesInfo {
        series: "s".into(),
        format: WireFormat::Beamwatch,
        frames_expected: Some(3),
        shape: Some((12, 16)),
        dtype: Some(PixelType::U16),
        frame_time_s: Some(0.1),
        dose: DoseHeader { beam_current_pa: Some(10.0), dwell_time_us: Some(1.0), pixel_size_a: Some(1.0) },
        scan_hint: None,
    };
    let seeds = vec![
        own::encode_start(&info),
        own::encode_frame("s", 1, 12, 16, PixelType::U16, pixels(192), None, None),
        own::encode_end("s"),
    ];
    fuzz("own", seeds, |p| {
        let _ = own::decode(&refs(p), true);
    });
}

#[test]
fn fuzz_dectris_v1() {
    let seeds = vec![
        dectris_v1::encode_header(3, 12, 16, PixelType::U16, 5, 0.1),
        dectris_v1::encode_image(3, 0, 12, 16, PixelType::U16, &pixels(192), "bs16-lz4<", 0).expect("image"),
        dectris_v1::encode_image(3, 1, 12, 16, PixelType::U16, &pixels(192), "lz4<", 0).expect("image"),
        dectris_v1::encode_end(3),
    ];
    fuzz("dectris_v1", seeds, |p| {
        let _ = dectris_v1::decode(&refs(p), true);
    });
}

#[test]
fn fuzz_dectris_v2_through_the_decoder() {
    let px = pixels(192);
    let seeds = vec![
        dectris_v2::encode_start(4, 12, 16, PixelType::U16, 5, 0.1, &["threshold_1"]),
        dectris_v2::encode_image(4, 0, 12, 16, PixelType::U16, &[("threshold_1", &px)], "bslz4", 0),
        dectris_v2::encode_image(4, 1, 12, 16, PixelType::U16, &[("threshold_1", &px)], "lz4", 0),
        dectris_v2::encode_end(4),
    ];
    fuzz("dectris_v2", seeds, |p| {
        // Auto detection too; a fresh decoder each time, and one that saw the series start.
        let _ = Decoder::new(WireFormat::Auto, None, true).decode(&refs(p));
        let mut d = Decoder::new(WireFormat::DectrisV2, None, true);
        let start = dectris_v2::encode_start(4, 12, 16, PixelType::U16, 5, 0.1, &["threshold_1"]);
        let _ = d.decode(&refs(&start));
        let _ = d.decode(&refs(p));
    });
}

#[test]
fn fuzz_bitshuffle_lz4_and_lz4() {
    let px = pixels(512);
    let seeds = vec![vec![encode_bslz4(&px, 2, 256)], vec![encode_lz4_framed(&px, 256)]];
    fuzz("bslz4", seeds, |p| {
        let blob = p.first().map(Vec::as_slice).unwrap_or_default();
        for elem in [1, 2, 4] {
            let _ = decode_bslz4(blob, elem, px.len());
        }
        let _ = decode_lz4_any(blob, px.len());
        // The size a mutated header claims, as a caller trusting it would pass it (bounded).
        if blob.len() >= 8 {
            let claimed = u64::from_be_bytes(blob[..8].try_into().unwrap_or_default()).min(1 << 30) as usize;
            let _ = decode_bslz4(blob, 2, claimed);
            let _ = decode_lz4_any(blob, claimed);
        }
    });
}

#[test]
fn fuzz_zmtp_guard() {
    use beamwatch::ingest::zmtp::{FrameHeader, Limits, pipe_checked};
    let mut stream = vec![0u8; 64];
    stream[0] = 0xff;
    stream[9] = 0x7f;
    stream[10] = 3;
    stream[12..16].copy_from_slice(b"NULL");
    stream.extend(FrameHeader { more: false, command: true, len: 5 }.encode());
    stream.extend(b"READY");
    stream.extend(FrameHeader { more: true, command: false, len: 3 }.encode());
    stream.extend(b"abc");
    stream.extend(FrameHeader { more: false, command: false, len: 300 }.encode());
    stream.extend(vec![7u8; 300]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let limits = Limits { max_frame_bytes: 4096, max_message_bytes: 8192 };
    fuzz("zmtp", vec![vec![stream]], |p| {
        let input = p.first().cloned().unwrap_or_default();
        let mut out = Vec::new();
        let _ = rt.block_on(pipe_checked(&mut input.as_slice(), &mut out, limits));
        assert!(out.len() <= input.len() + 64, "the guard forwards no more than it got");
    });
}

#[test]
fn fuzz_config() {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml"))
        .expect("default config");
    fuzz("config", vec![vec![text.into_bytes()]], |p| {
        let text = String::from_utf8_lossy(p.first().map(Vec::as_slice).unwrap_or_default()).into_owned();
        if let Ok(cfg) = beamwatch::config::Config::parse(std::path::Path::new("fuzz.toml"), &text) {
            let _ = cfg.validate(std::path::Path::new("fuzz.toml"));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// File readers: each seeded from real files (the shared microscope fixtures) or small files the
// test writes with the same encoders the other tests use. A reader must refuse what a mutated
// header claims beyond the file, never allocate by it. (HDF5-based readers are not fuzzed here:
// libhdf5 is C, and a corrupted file can crash it outside what a Rust test can catch.)

fn shared_file(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("BEAMWATCH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let path = dir.join("data/microscope-files").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A file reader's target: the mutated bytes written to `file` in a private folder, then `read`.
fn file_target<'a>(
    dir: &'a std::path::Path,
    file: &'a str,
    read: impl Fn(&std::path::Path) + 'a,
) -> impl Fn(&[Vec<u8>]) + 'a {
    move |p: &[Vec<u8>]| {
        let path = dir.join(file);
        std::fs::write(&path, p.first().map(Vec::as_slice).unwrap_or_default()).expect("write");
        read(&path);
    }
}

fn small_tiff(pages: usize, deflate: bool) -> Vec<u8> {
    use tiff::encoder::{Compression, DeflateLevel, TiffEncoder, colortype::Gray16};
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let enc = TiffEncoder::new(&mut out).expect("tiff");
        let mut enc = if deflate { enc.with_compression(Compression::Deflate(DeflateLevel::Fast)) } else { enc };
        let px: Vec<u16> = (0..24 * 16).map(|i| (i * 37 % 4099) as u16).collect();
        for _ in 0..pages {
            enc.write_image::<Gray16>(24, 16, &px).expect("page");
        }
    }
    out.into_inner()
}

#[test]
fn fuzz_tiff_reader() {
    use beamwatch::record::OpenOptions;
    let tmp = tempfile::tempdir().expect("tmp");
    let seeds = vec![vec![small_tiff(3, false)], vec![small_tiff(2, true)]];
    // The page reader (compare, watch, monitor) and replay's stack reader, one page at a time.
    fuzz_n(
        "tiff",
        seeds,
        iterations() / 10,
        file_target(tmp.path(), "x.tif", |path| {
            if let Ok(mut pages) = beamwatch::imagefile::TiffPages::open(path, true) {
                for i in 0..pages.pages().min(4) {
                    let _ = pages.dimensions(i);
                    let _ = pages.read(i);
                }
            }
            if let Ok(mut src) = beamwatch::record::readers::open(path, &OpenOptions::default()) {
                for i in 0..src.info().frames.min(4) {
                    let _ = src.read(i);
                }
            }
            let _ = beamwatch::imagefile::sem_pixel_size(path);
        }),
    );
}

#[test]
fn fuzz_png_reader() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut seeds = Vec::new();
    for sixteen in [false, true] {
        let mut out = std::io::Cursor::new(Vec::new());
        let img = if sixteen {
            image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(20, 12, |x, y| {
                image::Luma([(x * 300 + y) as u16])
            }))
        } else {
            image::DynamicImage::ImageLuma8(image::ImageBuffer::from_fn(20, 12, |x, y| {
                image::Luma([(x * 7 + y) as u8])
            }))
        };
        img.write_to(&mut out, image::ImageFormat::Png).expect("png");
        seeds.push(vec![out.into_inner()]);
    }
    fuzz_n(
        "png",
        seeds,
        iterations() / 10,
        file_target(tmp.path(), "x.png", |path| {
            let _ = beamwatch::imagefile::read_frames(path, true);
        }),
    );
}

#[test]
fn fuzz_npy_reader() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut seeds = Vec::new();
    let a = ndarray::Array2::<u16>::from_shape_fn((12, 20), |(y, x)| (x * 300 + y) as u16);
    let b = ndarray::Array3::<f32>::from_shape_fn((2, 8, 10), |(k, y, x)| (k * 100 + y * 10 + x) as f32);
    for (k, write) in [
        Box::new(|p: &std::path::Path| ndarray_npy::write_npy(p, &a)) as Box<dyn Fn(&std::path::Path) -> _>,
        Box::new(|p: &std::path::Path| ndarray_npy::write_npy(p, &b)),
    ]
    .into_iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("seed{k}.npy"));
        write(&p).expect("npy");
        seeds.push(vec![std::fs::read(&p).expect("read")]);
    }
    fuzz_n(
        "npy",
        seeds,
        iterations() / 10,
        file_target(tmp.path(), "x.npy", |path| {
            let _ = beamwatch::imagefile::read_frames(path, true);
        }),
    );
}

#[test]
fn fuzz_dm_reader() {
    let seeds = vec![vec![shared_file("2D_test-2.dm3")], vec![shared_file("2D_test-1.dm4")]];
    fuzz_n("dm", seeds, iterations() / 10, |p| {
        let bytes = p.first().map(Vec::as_slice).unwrap_or_default();
        let _ = beamwatch::microscope::dm::read_dm_each_from("x.dm4", std::io::Cursor::new(bytes));
    });
}

#[test]
fn fuzz_tia_reader() {
    let seeds = vec![vec![shared_file("16_STOimage_1.ser"), shared_file("16_STOimage.emi")]];
    fuzz_n("tia", seeds, iterations() / 100, |p| {
        let ser = p.first().map(Vec::as_slice).unwrap_or_default();
        let emi = p.get(1).map(|e| std::io::Cursor::new(e.as_slice()));
        let _ = beamwatch::microscope::tia::read_tia_from("x_1.ser", std::io::Cursor::new(ser), emi, 0);
    });
}
