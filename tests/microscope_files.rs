//! Microscope vendors' files (Gatan DM3/DM4, TIA .emi/.ser): every real file in
//! `shared/data/microscope-files` read through replay's [`open_source`] and the image-file reader
//! pixel for pixel against the values RosettaSciIO gives (`manifest.json` and the `.expected.npy`
//! files), with the pixel size in the dose inputs; the EELS spectrum refused in one line; the
//! binary's `replay` and `compare` on them; and hostile input — truncated, bit-flipped, huge
//! size fields — that must end in an error without a panic or a large allocation.

mod common;
#[path = "common/largest_alloc.rs"]
mod largest_alloc;

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use beamwatch::imagefile;
use beamwatch::microscope::dm::{read_dm_each_from, read_dm_from};
use beamwatch::microscope::tia::read_tia_from;
use beamwatch::microscope::{self, Image};
use beamwatch::record::{FrameSource, Layout, OpenOptions, open_source};
use common::{assert_clean_error, beamwatch, stderr};

fn fixtures() -> PathBuf {
    common::shared().join("data/microscope-files")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest.json parses")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn as_f64(v: &serde_json::Value) -> f64 {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).expect("a number")
}

fn open(path: &Path) -> Box<dyn FrameSource> {
    open_source(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// .npy: just enough to read the expected pixels of every dtype as f32

struct Npy {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// A little-endian C-order .npy (versions 1-3), its values converted to f32 as beamwatch converts
/// them (`as f32`).
fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).expect("ascii header");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let field = |key: &str| {
        let at = header.find(key).expect("key") + key.len();
        header[at..].trim_start_matches([':', ' ']).to_string()
    };
    let descr = field("'descr'");
    let descr = descr[1..].split('\'').next().expect("descr").to_string();
    let shape_text = field("'shape'");
    let shape: Vec<usize> = shape_text[1..shape_text.find(')').expect(")")]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("dim"))
        .collect();
    let data = &bytes[start + hlen..];
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk")) as f32).collect()
        };
    }
    let values: Vec<f32> = match descr.as_str() {
        "|u1" => data.iter().map(|&b| f32::from(b)).collect(),
        "|i1" => data.iter().map(|&b| f32::from(b as i8)).collect(),
        "<u2" => conv!(u16, 2),
        "<i2" => conv!(i16, 2),
        "<u4" => conv!(u32, 4),
        "<i4" => conv!(i32, 4),
        "<f4" => conv!(f32, 4),
        "<f8" => conv!(f64, 8),
        other => panic!("{}: unexpected descr {other}", path.display()),
    };
    assert_eq!(values.len(), shape.iter().product::<usize>(), "{}", path.display());
    Npy { shape, values }
}

// ---------------------------------------------------------------------------------------------
// The real files

/// Whether the manifest says the file must be refused (the EELS spectrum).
fn must_refuse(entry: &serde_json::Value) -> bool {
    entry.get("note").and_then(|n| n.as_str()).is_some_and(|n| n.contains("must refuse"))
}

#[test]
fn every_image_file_replays_pixel_exact_with_its_pixel_size() {
    let m = manifest();
    let files = m["files"].as_object().expect("files");
    let mut checked = 0;
    for (file, entry) in files {
        if must_refuse(entry) {
            continue;
        }
        let path = fixtures().join(file);
        let sig = &entry["signals"][0];
        assert_eq!(entry["signals"].as_array().map(Vec::len), Some(1), "{file}: one signal");
        let shape: Vec<usize> =
            sig["shape"].as_array().expect("shape").iter().map(|v| v.as_u64().expect("dim") as usize).collect();
        let (frames, h, w) = match shape.as_slice() {
            [h, w] => (1, *h, *w),
            [n, h, w] => (*n, *h, *w),
            s => panic!("{file}: shape {s:?}"),
        };
        let npy = read_npy(&fixtures().join(format!("{file}.{}.expected.npy", sig["signal"])));
        assert_eq!(npy.shape, shape, "{file}: npy shape");

        let mut src = open(&path);
        let info = src.info().clone();
        let want_layout = if file.ends_with(".emi") { Layout::TiaSer } else { Layout::GatanDm };
        assert_eq!(info.layout, want_layout, "{file}");
        assert_eq!((info.frames, info.height, info.width), (frames, h, w), "{file}: frames, height, width");
        for i in 0..frames {
            let f = src.read(i).unwrap_or_else(|e| panic!("{file} frame {i}: {e}"));
            assert_eq!((f.frame.width(), f.frame.height()), (w, h), "{file} frame {i}");
            assert!(f.frame.pixels() == &npy.values[i * w * h..(i + 1) * w * h], "{file} frame {i}: pixels differ");
            assert_eq!(f.index, i as u64);
        }
        assert!(src.read(frames).is_err(), "{file}: a frame past the end is an error");

        // Pixel size: the manifest's x scale in nm, as Å; none for 1/nm (diffraction) or
        // uncalibrated axes.
        let x = sig["axes"].as_array().expect("axes").last().expect("x axis");
        let units = x["units"].as_str().expect("units");
        let pixel_a = info.dose.pixel_size_a;
        if units == "nm" {
            let want = as_f64(&x["scale"]) * 10.0;
            assert!(pixel_a.is_some_and(|a| close(a, want)), "{file}: pixel size {pixel_a:?} Å, want {want}");
            assert!(info.notes[0].contains("pixel size") && info.notes[0].contains(" Å"), "{file}: {:?}", info.notes);
        } else {
            assert_eq!(pixel_a, None, "{file}: {units} is not a real-space pixel size");
            assert!(info.notes.iter().any(|n| n.contains("pixel size not in file")), "{file}: {:?}", info.notes);
        }
        let format = if file.ends_with(".emi") { "FEI/Thermo Fisher TIA" } else { "Gatan DigitalMicrograph" };
        assert!(info.notes[0].starts_with(format), "{file}: the first note names the format: {:?}", info.notes);

        // The image-file reader of `compare` gives the same frames.
        let loaded = imagefile::read_frames(&path, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.len(), frames, "{file}: read_frames");
        for (i, l) in loaded.iter().enumerate() {
            assert!(l.frame.pixels() == &npy.values[i * w * h..(i + 1) * w * h], "{file} read_frames frame {i}");
        }
        checked += 1;
    }
    assert_eq!(checked, 8, "every image file of the manifest");
}

#[test]
fn dose_metadata_and_notes_of_the_real_files() {
    // TIA: a scanned STEM image, dwell time in the .emi (29 µs); read through the .ser too.
    let emi = open(&fixtures().join("16_STOimage.emi"));
    let ser = open(&fixtures().join("16_STOimage_1.ser"));
    for info in [emi.info(), ser.info()] {
        assert_eq!(info.layout, Layout::TiaSer);
        assert!(info.dose.dwell_time_us.is_some_and(|us| close(us, 29.0)), "{:?}", info.dose);
        assert!(info.dose.pixel_size_a.is_some_and(|a| close(a, 0.10012704240403384)), "{:?}", info.dose);
        assert_eq!(info.dose.beam_current_pa, None);
        assert!(info.notes.iter().any(|n| n == "beam current not in file: give it with --beam-current-pa or [dose] beam_current_pa"));
        assert_eq!(info.dtype, beamwatch::frame::PixelType::U16);
    }
    let mut a = emi;
    let mut b = ser;
    assert!(a.read(0).expect("emi frame").frame == b.read(0).expect("ser frame").frame);

    // DM3 STEM image: dwell time 3.5 µs from DigiScan, probe current recorded as 0 (unknown).
    let stem = open(&fixtures().join("2D_test_STEM_image.dm3"));
    let info = stem.info();
    assert_eq!(info.dose.dwell_time_us, Some(3.5));
    assert_eq!(info.dose.beam_current_pa, None);
    assert!(info.notes[0].starts_with("Gatan DigitalMicrograph DM3: pixel size 0.248538"), "{:?}", info.notes);
    assert!(info.notes[0].contains("200 kV"), "{:?}", info.notes);
    assert_eq!(info.dtype, beamwatch::frame::PixelType::U32);

    // Diffraction pattern: 1/nm calibration, int32 pixels read as f32 with a note.
    let diff = open(&fixtures().join("2D_test_diffraction_pattern.dm3"));
    let info = diff.info();
    assert!(info.notes[0].contains("1/nm") && info.notes[0].contains("no real-space pixel size"), "{:?}", info.notes);
    assert!(info.notes.iter().any(|n| n.starts_with("int32 pixels converted to f32")), "{:?}", info.notes);
    assert_eq!(info.dtype, beamwatch::frame::PixelType::F32);
}

#[test]
fn the_eels_spectrum_is_refused_in_one_line() {
    let path = fixtures().join("08_carbon.dm3");
    let e = open_source(&path, &OpenOptions::default()).err().expect("a spectrum is not a series").to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.starts_with(&path.display().to_string()), "names the file: {e}");
    assert!(e.contains("spectrum"), "{e}");
    assert!(e.contains("not an image"), "{e}");
    let e = imagefile::read_frames(&path, false).expect_err("a spectrum is not an image").to_string();
    assert!(!e.contains('\n') && e.contains("spectrum") && e.contains("08_carbon.dm3"), "{e}");
}

#[test]
fn replay_runs_on_a_tia_and_a_dm_file_and_compare_on_a_dm_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (file, layout) in [("16_STOimage.emi", "tia_ser"), ("2D_test_STEM_image.dm3", "gatan_dm")] {
        let out = tmp.path().join(format!("out-{file}"));
        let input = fixtures().join(file);
        let o = beamwatch(
            &["replay", input.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "psnr"],
            tmp.path(),
        );
        let err = stderr(&o);
        assert!(o.status.success(), "{file}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json")).expect("json");
        assert!(s["frames"].as_u64().is_some_and(|n| n >= 1), "{file}: {s}");
        assert_eq!(s["input"]["layout"], layout, "{file}: {s}");
        let pixel = &s["dose_inputs"]["pixel_size_a"];
        assert_eq!(pixel["source"], "series_header", "{file}: the pixel size comes from the file: {pixel}");
        assert!(pixel["value"].as_f64().is_some_and(|a| a > 0.0), "{file}: {pixel}");
    }

    let out = tmp.path().join("out-compare");
    let stem = fixtures().join("2D_test_STEM_image.dm3");
    let stem = stem.to_str().expect("p");
    let o = beamwatch(&["compare", stem, stem, "--out", out.to_str().expect("p"), "--metric", "psnr"], tmp.path());
    let err = stderr(&o);
    assert!(o.status.success(), "compare: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(std::fs::read_dir(&out).expect("compare output").next().is_some(), "compare wrote nothing");

    // The spectrum: one error line naming what it is.
    let carbon = fixtures().join("08_carbon.dm3");
    let o = beamwatch(
        &["replay", carbon.to_str().expect("p"), "--out", tmp.path().join("c").to_str().expect("p")],
        tmp.path(),
    );
    assert_clean_error(&o, "spectrum");
}

// ---------------------------------------------------------------------------------------------
// Hand-made files: what the real ones do not cover

/// Writes DM3 (v4 = false) or DM4 tag streams by hand (little-endian values).
struct Dm {
    v4: bool,
    buf: Vec<u8>,
}

impl Dm {
    fn new(v4: bool, root_tags: u64) -> Dm {
        let mut d = Dm { v4, buf: Vec::new() };
        d.buf.extend_from_slice(&(if v4 { 4u32 } else { 3u32 }).to_be_bytes());
        d.word(0); // file size: not trusted by the reader
        d.buf.extend_from_slice(&1u32.to_be_bytes()); // little-endian values
        d.buf.extend_from_slice(&[0, 0]);
        d.word(root_tags);
        d
    }

    fn word(&mut self, x: u64) {
        if self.v4 {
            self.buf.extend_from_slice(&x.to_be_bytes());
        } else {
            self.buf.extend_from_slice(&(x as u32).to_be_bytes());
        }
    }

    fn label(&mut self, kind: u8, name: &str) {
        self.buf.push(kind);
        self.buf.extend_from_slice(&(name.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        if self.v4 {
            self.buf.extend_from_slice(&0u64.to_be_bytes());
        }
    }

    fn group(&mut self, name: &str, ntags: u64) {
        self.label(20, name);
        self.buf.extend_from_slice(&[0, 0]);
        self.word(ntags);
    }

    fn data(&mut self, name: &str, info: &[u64], payload: &[u8]) {
        self.label(21, name);
        self.buf.extend_from_slice(b"%%%%");
        self.word(info.len() as u64);
        for &w in info {
            self.word(w);
        }
        self.buf.extend_from_slice(payload);
    }

    fn u32_tag(&mut self, name: &str, x: u32) {
        self.data(name, &[5], &x.to_le_bytes());
    }

    fn f32_tag(&mut self, name: &str, x: f32) {
        self.data(name, &[6], &x.to_le_bytes());
    }

    fn text_tag(&mut self, name: &str, s: &str) {
        let units: Vec<u16> = s.encode_utf16().collect();
        let b: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
        self.data(name, &[20, 4, units.len() as u64], &b);
    }

    /// One ImageList entry: DataType `code`, `dims` (x first), a Data array of encoded element
    /// type `elem` with `count` elements and raw `payload`, calibrated 0.5 `units` per pixel,
    /// a DigiScan sample time of 2.5 µs and a probe current of 0.04 nA.
    #[allow(clippy::too_many_arguments)]
    fn image(&mut self, code: u32, dims: &[u32], elem: u64, count: u64, payload: &[u8], units: &str) {
        self.group("", 2);
        self.group("ImageData", 4);
        self.group("Calibrations", 1);
        self.group("Dimension", dims.len() as u64);
        for _ in dims {
            self.group("", 3);
            self.f32_tag("Origin", -2.0);
            self.f32_tag("Scale", 0.5);
            self.text_tag("Units", units);
        }
        self.data("Data", &[20, elem, count], payload);
        self.u32_tag("DataType", code);
        self.group("Dimensions", dims.len() as u64);
        for &n in dims {
            self.u32_tag("", n);
        }
        self.group("ImageTags", 2);
        self.group("DigiScan", 1);
        self.data("Sample Time", &[7], &2.5f64.to_le_bytes());
        self.group("Microscope Info", 1);
        self.data("Probe Current (nA)", &[7], &0.04f64.to_le_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0; 8]);
        self.buf
    }
}

/// A one-image DM file.
fn dm_image(v4: bool, code: u32, dims: &[u32], elem: u64, count: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = Dm::new(v4, 1);
    d.group("ImageList", 1);
    d.image(code, dims, elem, count, payload, "nm");
    d.finish()
}

/// A TIA .ser holding `frames` images of `sx` x `sy` u16 pixels (value = frame*1000 + index),
/// SeriesVersion 0x0210 (4-byte offsets) or 0x0220 (8-byte), calibrated 1e-10 m per pixel.
fn ser_series(version: u16, frames: u32, sx: i32, sy: i32) -> Vec<u8> {
    let wide = version == 0x0220;
    let mut b = Vec::new();
    b.extend_from_slice(&0x4949u16.to_le_bytes());
    b.extend_from_slice(&0x0197u16.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&0x4122u32.to_le_bytes());
    b.extend_from_slice(&0x4152u32.to_le_bytes());
    b.extend_from_slice(&frames.to_le_bytes()); // total
    b.extend_from_slice(&frames.to_le_bytes()); // valid
    let offset_array_at = b.len();
    b.extend_from_slice(&vec![0u8; if wide { 8 } else { 4 }]);
    b.extend_from_slice(&1u32.to_le_bytes()); // one series dimension
    b.extend_from_slice(&(frames as i32).to_le_bytes());
    b.extend_from_slice(&0f64.to_le_bytes());
    b.extend_from_slice(&0.5f64.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(b"Time");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(b"s");
    let array_at = b.len() as u64;
    let w = if wide { 8 } else { 4 };
    let elements_at = array_at + 2 * w * frames as u64;
    let elem_len = 50 + 2 * (sx as u64) * (sy as u64);
    if wide {
        b[offset_array_at..offset_array_at + 8].copy_from_slice(&array_at.to_le_bytes());
    } else {
        b[offset_array_at..offset_array_at + 4].copy_from_slice(&(array_at as u32).to_le_bytes());
    }
    for f in 0..frames as u64 {
        let at = elements_at + f * elem_len;
        if wide {
            b.extend_from_slice(&at.to_le_bytes());
        } else {
            b.extend_from_slice(&(at as u32).to_le_bytes());
        }
    }
    for _ in 0..frames {
        b.extend_from_slice(&vec![0u8; w as usize]); // tag offsets (unused)
    }
    for f in 0..frames {
        for _axis in 0..2 {
            b.extend_from_slice(&(-1e-9f64).to_le_bytes());
            b.extend_from_slice(&1e-10f64.to_le_bytes());
            b.extend_from_slice(&0i32.to_le_bytes());
        }
        b.extend_from_slice(&2i16.to_le_bytes());
        b.extend_from_slice(&sx.to_le_bytes());
        b.extend_from_slice(&sy.to_le_bytes());
        for i in 0..(sx * sy) as u32 {
            b.extend_from_slice(&((f * 1000 + i) as u16).to_le_bytes());
        }
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[test]
fn a_dm_file_gives_its_first_image_that_is_not_refused_with_a_note() {
    let tmp = tempfile::tempdir().expect("tmp");
    // No Thumbnails group and three entries: entry 0 is taken for the thumbnail, entry 1 is a
    // spectrum (refused), entry 2 a 4×3 u8 image.
    let mut d = Dm::new(false, 1);
    d.group("ImageList", 3);
    d.image(6, &[2, 2], 10, 4, &[9; 4], "");
    d.image(2, &[5], 6, 5, &[0; 20], "eV");
    let px: Vec<u8> = (0..12).collect();
    d.image(6, &[4, 3], 10, 12, &px, "nm");
    let path = write(tmp.path(), "several.dm3", &d.finish());
    let mut src = open(&path);
    let info = src.info().clone();
    assert_eq!((info.frames, info.height, info.width), (1, 3, 4));
    assert!(info.notes.iter().any(|n| n == "the file holds 2 images: image 1 is read"), "{:?}", info.notes);
    assert!(info.notes.iter().any(|n| n.starts_with("skipped: image 0 is a 1-D spectrum")), "{:?}", info.notes);
    assert_eq!(info.dose.pixel_size_a, Some(5.0), "0.5 nm is 5 Å");
    assert_eq!(info.dose.dwell_time_us, Some(2.5));
    assert!(info.dose.beam_current_pa.is_some_and(|pa| close(pa, 40.0)), "0.04 nA is 40 pA: {:?}", info.dose);
    assert!(!info.notes.iter().any(|n| n.contains("not in file")), "every dose input is in the file: {:?}", info.notes);
    let f = src.read(0).expect("frame").frame;
    assert_eq!(f.pixels(), px.iter().map(|&v| f32::from(v)).collect::<Vec<_>>());
    assert_eq!(imagefile::read_frames(&path, false).expect("read_frames").len(), 1);

    // Every image refused: one line naming each.
    let mut d = Dm::new(false, 1);
    d.group("ImageList", 3);
    d.image(6, &[2, 2], 10, 4, &[9; 4], "");
    d.image(2, &[5], 6, 5, &[0; 20], "eV");
    d.image(6, &[2, 2, 2, 2], 10, 16, &[1; 16], "");
    let path = write(tmp.path(), "none.dm4", &d.finish());
    let e = open_source(&path, &OpenOptions::default()).err().expect("refused").to_string();
    assert!(e.contains("no image can be read: image 0 is a 1-D spectrum"), "{e}");
    assert!(e.contains("image 1 has 4 dimensions"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn pixel_types_become_frames() {
    let tmp = tempfile::tempdir().expect("tmp");
    // i8 (DataType 9, element type 9), 2-frame stack [2, 2, 2]: converted to f32 with a note.
    let px: Vec<u8> = [-3i8, -2, -1, 0, 1, 2, 3, 4].iter().map(|&v| v as u8).collect();
    let path = write(tmp.path(), "i8.dm4", &dm_image(true, 9, &[2, 2, 2], 9, 8, &px));
    let mut src = open(&path);
    assert_eq!(src.info().frames, 2);
    assert!(src.info().notes.iter().any(|n| n == "int8 pixels converted to f32 (exactly)"), "{:?}", src.info().notes);
    assert_eq!(src.read(1).expect("frame 1").frame.pixels(), &[1.0, 2.0, 3.0, 4.0]);
    // f64 (12 / 7), bool (14 / 8 → one byte each), u64 (40 / 12).
    let px: Vec<u8> = [0.5f64, 1.5, -2.5, 1e3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f64_path = write(tmp.path(), "f64.dm3", &dm_image(false, 12, &[2, 2], 7, 4, &px));
    assert_eq!(open(&f64_path).read(0).expect("f64").frame.pixels(), &[0.5, 1.5, -2.5, 1000.0]);
    let bool_path = write(tmp.path(), "bool.dm3", &dm_image(false, 14, &[2, 2], 8, 4, &[0, 1, 7, 0]));
    assert_eq!(open(&bool_path).read(0).expect("bool").frame.pixels(), &[0.0, 1.0, 1.0, 0.0]);
    let px: Vec<u8> = [1u64, 2, 3, 1 << 40].iter().flat_map(|v| v.to_le_bytes()).collect();
    let u64_path = write(tmp.path(), "u64.dm3", &dm_image(false, 40, &[2, 2], 12, 4, &px));
    assert_eq!(open(&u64_path).read(0).expect("u64").frame.pixels(), &[1.0, 2.0, 3.0, (1u64 << 40) as f32]);
    // u16 at the dtype maximum: a gap when masking is asked for.
    let px: Vec<u8> = [1u16, 65535, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let u16_path = write(tmp.path(), "u16.dm3", &dm_image(false, 10, &[2, 2], 4, 4, &px));
    let opts = OpenOptions { mask_gaps: true, ..OpenOptions::default() };
    let f = open_source(&u16_path, &opts).expect("u16").read(0).expect("frame").frame;
    assert_eq!(f.n_invalid(), 1);
    // NaN in a float image: a one-line error at open.
    let px: Vec<u8> = [1f32, f32::NAN, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let nan_path = write(tmp.path(), "nan.dm3", &dm_image(false, 2, &[2, 2], 6, 4, &px));
    let e = open_source(&nan_path, &OpenOptions::default()).err().expect("NaN").to_string();
    assert!(e.contains("NaN") && e.contains("nan.dm3"), "{e}");
    // A TIA series of 3 frames, read from a .ser without an .emi; rows come top-first.
    let ser = write(tmp.path(), "series_1.ser", &ser_series(0x0220, 3, 4, 3));
    let mut src = open(&ser);
    let info = src.info().clone();
    assert_eq!((info.layout, info.frames, info.height, info.width), (Layout::TiaSer, 3, 3, 4));
    assert!(info.dose.pixel_size_a.is_some_and(|a| close(a, 1.0)), "1e-10 m is 1 Å: {:?}", info.dose);
    assert_eq!(&src.read(2).expect("frame 2").frame.pixels()[..4], &[2008.0, 2009.0, 2010.0, 2011.0]);
    // The same bytes under another name are still recognised by their header.
    let renamed = write(tmp.path(), "series.bin", &ser_series(0x0210, 2, 4, 3));
    assert_eq!(open(&renamed).info().frames, 2);
    // An .emi without its .ser.
    let emi = write(tmp.path(), "alone.emi", b"JK\0\x02 not much");
    let e = open_source(&emi, &OpenOptions::default()).err().expect("no .ser").to_string();
    assert!(e.contains("no alone_1.ser beside it"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Hostile input: no panic, one-line errors naming the file, no large allocation

/// A fixed-seed xorshift generator, so the mutations are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const DM_FILES: &[&str] = &[
    "08_carbon.dm3",
    "2D_test-1.dm4",
    "2D_test-10.dm4",
    "2D_test-2.dm3",
    "2D_test_STEM_image.dm3",
    "2D_test_diffraction_pattern.dm3",
    "3D_test-1.dm3",
    "3D_test-1.dm4",
];

fn load(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).expect("fixture")
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    err: usize,
}

/// Runs `read`, turning a panic into a test failure that names the mutation.
fn survive(tally: &mut Tally, what: &str, read: impl FnOnce() -> bool) {
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(true) => tally.ok += 1,
        Ok(false) => tally.err += 1,
        Err(_) => panic!("reader panicked on {what}"),
    }
}

fn check_image(img: &Image) {
    assert_eq!(img.shape.iter().product::<usize>(), img.pixels.len());
    assert_eq!(img.axes.len(), img.shape.len());
    assert!(img.metadata.len() <= microscope::MAX_METADATA_ENTRIES);
}

fn read_dm_bytes(name: &str, bytes: Vec<u8>) -> bool {
    // The per-image reader first (what replay uses), then the whole-file one.
    if let Ok(each) = read_dm_each_from(name, Cursor::new(bytes.clone())) {
        each.iter().flatten().for_each(check_image);
    }
    match read_dm_from(name, Cursor::new(bytes)) {
        Ok(images) => {
            images.iter().for_each(check_image);
            true
        }
        Err(e) => {
            let e = e.to_string();
            assert!(!e.contains('\n'), "multi-line error: {e}");
            assert!(e.starts_with(name), "error does not name the file: {e}");
            false
        }
    }
}

fn read_ser_bytes(ser: Vec<u8>, emi: Option<&[u8]>) -> bool {
    match read_tia_from("x_1.ser", Cursor::new(ser), emi, 1) {
        Ok(images) => {
            images.iter().for_each(check_image);
            true
        }
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
            false
        }
    }
}

/// 30 truncation lengths: the first 12 bytes one by one, then spread over the file.
fn truncations(len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..12.min(len)).collect();
    v.extend((0..18).map(|i| 12 + len.saturating_sub(12) * i / 18));
    v
}

/// `n` random (position, xor) pairs: half over the whole file, half within the first `focus`
/// bytes (where headers and tag trees live).
fn flips(len: usize, focus: usize, n: usize, rng: &mut Rng) -> Vec<(usize, u8)> {
    (0..n)
        .map(|i| {
            let span = if i % 2 == 0 { len } else { focus.min(len) };
            (rng.below(span), (rng.next() % 255 + 1) as u8)
        })
        .collect()
}

#[test]
fn dm_truncated_flipped_and_huge_sizes_never_panic() {
    let mut tally = Tally::default();
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let huge: &[u64] = &[u64::MAX, 0xFFFF_FFFF, 0x8000_0000, 0];
    for &name in DM_FILES {
        let orig = load(name);
        for cut in truncations(orig.len()) {
            survive(&mut tally, &format!("{name} cut at {cut}"), || read_dm_bytes(name, orig[..cut].to_vec()));
        }
        for (pos, x) in flips(orig.len(), 8192, 120, &mut rng) {
            let mut b = orig.clone();
            b[pos] ^= x;
            survive(&mut tally, &format!("{name} byte {pos} ^= {x:#x}"), || read_dm_bytes(name, b));
        }
        // Size fields: the info-array words after %%%% markers (entry count, types, lengths,
        // counts) set to huge or boundary values, at 16 markers spread over the file.
        let v4 = orig[3] == 4;
        let w = if v4 { 8 } else { 4 };
        let markers: Vec<usize> = orig.windows(4).enumerate().filter(|(_, s)| s == b"%%%%").map(|(i, _)| i).collect();
        let step = markers.len().div_ceil(16).max(1);
        for &m in markers.iter().step_by(step) {
            for word in 0..5 {
                let at = m + 4 + word * w;
                if at + w > orig.len() {
                    continue;
                }
                for &h in huge {
                    let mut b = orig.clone();
                    if v4 {
                        b[at..at + 8].copy_from_slice(&h.to_be_bytes());
                    } else {
                        b[at..at + 4].copy_from_slice(&(h as u32).to_be_bytes());
                    }
                    survive(&mut tally, &format!("{name} word {word} after %%%% at {m} = {h:#x}"), || {
                        read_dm_bytes(name, b)
                    });
                }
            }
        }
        for at in (0..16.min(orig.len())).step_by(4) {
            for &h in huge {
                let mut b = orig.clone();
                b[at..at + 4].copy_from_slice(&(h as u32).to_be_bytes());
                survive(&mut tally, &format!("{name} header word at {at} = {h:#x}"), || read_dm_bytes(name, b));
            }
        }
    }
    eprintln!("DM mutations: {tally:?}");
    assert!(tally.ok > 0 && tally.err > 0 && tally.ok + tally.err > 3000, "{tally:?}");
}

#[test]
fn ser_and_emi_truncated_flipped_and_huge_sizes_never_panic() {
    let mut tally = Tally::default();
    let mut rng = Rng(0x0dd_f00d_cafe_beef);
    let orig = load("16_STOimage_1.ser");
    for cut in truncations(orig.len()) {
        survive(&mut tally, &format!("ser cut at {cut}"), || read_ser_bytes(orig[..cut].to_vec(), None));
    }
    for (pos, x) in flips(orig.len(), 256, 100, &mut rng) {
        let mut b = orig.clone();
        b[pos] ^= x;
        survive(&mut tally, &format!("ser byte {pos} ^= {x:#x}"), || read_ser_bytes(b, None));
    }
    // Header words (counts, offsets, dimension fields) and the data element's header
    // (calibrations, DataType, ArraySizeX/Y at element + 40, 42, 46).
    let element = u32::from_le_bytes(orig[68..72].try_into().expect("4 bytes")) as usize;
    let mut fields: Vec<usize> = (6..80).step_by(2).collect();
    fields.extend([element + 16, element + 36, element + 40, element + 42, element + 46]);
    for &at in &fields {
        for h in [u32::MAX, 0x7FFF_FFFF, 0x8000_0000, 0x1_0000, 1, 0] {
            let mut b = orig.clone();
            b[at..at + 4].copy_from_slice(&h.to_le_bytes());
            survive(&mut tally, &format!("ser u32 at {at} = {h:#x}"), || read_ser_bytes(b, None));
        }
    }
    eprintln!("SER mutations: {tally:?}");
    assert!(tally.ok > 0 && tally.err > 0, "{tally:?}");

    // The .emi only adds metadata: cut or damaged, it never makes a read fail.
    let mut tally = Tally::default();
    let ser = orig;
    let emi = load("16_STOimage.emi");
    let start = emi.windows(12).position(|w| w == b"<ObjectInfo>").expect("ObjectInfo");
    let end = emi.windows(13).position(|w| w == b"</ObjectInfo>").expect("/ObjectInfo") + 13;
    let mut cuts = truncations(emi.len());
    cuts.extend((0..30).map(|i| start + (end - start) * i / 30));
    for cut in cuts {
        survive(&mut tally, &format!("emi cut at {cut}"), || read_ser_bytes(ser.clone(), Some(&emi[..cut])));
    }
    for i in 0..100 {
        let mut b = emi.clone();
        let pos = if i % 2 == 0 { rng.below(emi.len()) } else { start + rng.below(end - start) };
        b[pos] = [b'<', b'>', b'/', b'&', 0, 0xFF][rng.below(6)];
        survive(&mut tally, &format!("emi byte {pos}"), || read_ser_bytes(ser.clone(), Some(&b)));
    }
    eprintln!("EMI mutations: {tally:?}");
    assert_eq!(tally.err, 0, "{tally:?}");
}

#[test]
fn damaged_files_through_replay_and_compare_end_in_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut rng = Rng(0xbeef_0000_1234_5678);
    let mut tally = Tally::default();
    for (k, &name) in DM_FILES.iter().chain(&["16_STOimage_1.ser"]).enumerate() {
        let orig = load(name);
        let ext = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("dm3");
        for case in 0..25 {
            let mut b = orig.clone();
            if case % 5 == 0 {
                b.truncate(rng.below(b.len()));
            } else {
                for _ in 0..1 + rng.below(3) {
                    let pos = rng.below(b.len().min(4096));
                    b[pos] ^= (rng.next() % 255 + 1) as u8;
                }
            }
            let path = write(tmp.path(), &format!("m{k}_{case}.{ext}"), &b);
            let shown = path.display().to_string();
            survive(&mut tally, &format!("{name} case {case}"), || {
                let one_line = |e: String| {
                    assert!(!e.contains('\n') && e.starts_with(&shown), "{e}");
                };
                let opened = match open_source(&path, &OpenOptions::default()) {
                    Ok(mut src) => {
                        (0..src.info().frames).all(|i| src.read(i).map_err(|e| one_line(e.to_string())).is_ok())
                    }
                    Err(e) => {
                        one_line(e.to_string());
                        false
                    }
                };
                if let Err(e) = imagefile::read_frames(&path, false) {
                    one_line(e.to_string());
                }
                opened
            });
        }
    }
    eprintln!("damaged files: {tally:?}");
    assert!(tally.ok + tally.err == 9 * 25 && tally.err > 0, "{tally:?}");
}


/// Runs `read`, asserting it errs and allocates no block over 1 MiB.
fn fails_small_and_fast(what: &str, read: impl FnOnce() -> Result<(), String>) -> String {
    largest_alloc::reset();
    let err = read().expect_err(what);
    let largest = largest_alloc::largest();
    assert!(largest < 1 << 20, "{what}: allocated a block of {largest} bytes");
    assert!(!err.contains('\n'), "{what}: {err}");
    err
}

fn dm(bytes: Vec<u8>) -> Result<(), String> {
    read_dm_from("huge.dm4", Cursor::new(bytes)).map(|_| ()).map_err(|e| e.to_string())
}

fn ser(bytes: Vec<u8>) -> Result<(), String> {
    read_tia_from("huge_1.ser", Cursor::new(bytes), None::<&[u8]>, 1).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn huge_claims_error_fast_without_allocating() {
    // A DM4 image of 2^20 x 2^20 u8 whose Data array claims 2^40 bytes, 16 of them present.
    let b = dm_image(true, 6, &[1 << 20, 1 << 20], 10, 1 << 40, &[0; 16]);
    let e = fails_small_and_fast("DM4 2^40-byte array", || dm(b));
    assert!(e.contains("truncated: 1099511627776 bytes needed"), "{e}");

    // The same image with a Data array that is in the file: beyond the frame limit, refused
    // before its pixels are read.
    let b = dm_image(true, 6, &[1 << 20, 1 << 20], 10, 16, &[0; 16]);
    let e = fails_small_and_fast("DM4 2^40-pixel image", || dm(b));
    assert!(e.contains("image 0: frames of 1048576 x 1048576 pixels exceed the limit"), "{e}");

    // Two frames of 8192 x 8192 u8 (within the limits) claimed, 16 bytes present.
    let b = dm_image(true, 6, &[8192, 8192, 2], 10, 1 << 27, &[0; 16]);
    let e = fails_small_and_fast("DM4 2^27-byte array", || dm(b));
    assert!(e.contains("truncated: 134217728 bytes needed"), "{e}");

    // DM3: 2^32-1 f64 elements (a 32 GiB array) declared in a tiny file.
    let b = dm_image(false, 12, &[65535, 65537], 7, u32::MAX as u64, &[0; 64]);
    let e = fails_small_and_fast("DM3 32 GiB array", || dm(b));
    assert!(e.contains("truncated"), "{e}");

    // A stack of more frames than the limit.
    let b = dm_image(false, 6, &[2, 2, 200_000], 10, 16, &[0; 16]);
    let e = fails_small_and_fast("DM3 200 000 frames", || dm(b));
    assert!(e.contains("more than the limit of 100000 frames"), "{e}");

    // SER: 2^31-1 valid elements.
    let mut b = ser_series(0x0210, 1, 4, 3);
    b[14..18].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes()); // TotalNumberElements
    b[18..22].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes()); // ValidNumberElements
    let e = fails_small_and_fast("SER 2^31 elements", || ser(b));
    assert!(e.contains("data offset array: truncated"), "{e}");

    // SER: one image of 2^31-1 x 2^31-1 pixels.
    let mut b = ser_series(0x0220, 1, 4, 3);
    let at = b.len() - 24 - 50; // element header starts 50 bytes before its 24 pixel bytes
    b[at + 42..at + 46].copy_from_slice(&i32::MAX.to_le_bytes());
    b[at + 46..at + 50].copy_from_slice(&i32::MAX.to_le_bytes());
    let e = fails_small_and_fast("SER 2^62-pixel image", || ser(b));
    assert!(e.contains("exceed the limit"), "{e}");

    // A file over the image-file limit (sparse: nothing is written past the header), through
    // replay's reader and the image-file reader.
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("big.dm3");
    let head = dm_image(false, 6, &[2, 2], 10, 4, &[0; 4]);
    std::fs::write(&path, &head).expect("write");
    let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(beamwatch::limits::MAX_IMAGE_FILE_BYTES + 1).expect("sparse file");
    drop(f);
    let e = fails_small_and_fast("5 GiB DM3 through open_source", || {
        open_source(&path, &OpenOptions::default()).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(e.contains("exceeds the 4294967296 byte limit") && e.contains("big.dm3"), "{e}");
    let e = fails_small_and_fast("5 GiB DM3 through read_frames", || {
        imagefile::read_frames(&path, false).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(e.contains("exceeds the 4294967296 byte limit"), "{e}");
}
