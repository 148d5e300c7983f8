//! Image inputs through the real CLI: every supported format is read, and every kind of bad input
//! ends with one error line naming the file and the problem — never a panic.

mod common;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3};
use ndarray_npy::WriteNpyExt;

use beamwatch::imagefile;
use common::*;

fn lattice(w: usize, h: usize, shift: f32) -> Vec<f32> {
    (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32 + shift, (i / w) as f32);
            0.5 + 0.4 * (x * 0.6).sin() * (y * 0.5).cos()
        })
        .collect()
}

fn npy_f32(path: &Path, w: usize, h: usize, v: Vec<f32>) {
    Array2::from_shape_vec((h, w), v)
        .expect("shape")
        .write_npy(std::fs::File::create(path).expect("create"))
        .expect("npy");
}

/// A 4×4 f32 .npy whose header text is edited (`from` → `to`), padding kept so the header length
/// field stays right.
fn edited_npy(path: &Path, from: &str, to: &str) {
    let mut buf = Vec::new();
    Array2::<f32>::zeros((4, 4)).write_npy(&mut buf).expect("npy");
    let header_len = u16::from_le_bytes([buf[8], buf[9]]) as usize;
    let header = std::str::from_utf8(&buf[10..10 + header_len]).expect("ascii header");
    let mut edited = header.replacen(from, to, 1);
    let grow = edited.len() as isize - header.len() as isize;
    if grow > 0 {
        edited = edited.replacen(&" ".repeat(grow as usize), "", 1);
    } else {
        edited.insert_str(edited.len() - 1, &" ".repeat((-grow) as usize));
    }
    assert_eq!(edited.len(), header.len());
    let mut out = buf[..10].to_vec();
    out.extend(edited.as_bytes());
    out.extend(&buf[10 + header_len..]);
    std::fs::write(path, out).expect("write");
}

fn compare(tmp: &Path, files: &[&Path], extra: &[&str]) -> std::process::Output {
    let out = tmp.join("out");
    let mut args: Vec<String> = vec!["compare".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend(["--out".into(), out.display().to_string(), "--metric".into(), "ssim".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    beamwatch(&refs, tmp)
}

fn csv_rows(tmp: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(tmp.join("out/similarity.csv"))
        .expect("csv")
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn png_8_and_16_bit_tiff_stack_and_npy_are_read() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let (w, h) = (64, 48);
    let v = lattice(w, h, 0.0);
    let png8 = t.join("a8.png");
    image::GrayImage::from_raw(w as u32, h as u32, v.iter().map(|x| (x * 200.0) as u8).collect())
        .expect("img")
        .save(&png8)
        .expect("png8");
    let png16 = t.join("a16.png");
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(
        w as u32,
        h as u32,
        v.iter().map(|x| (x * 60000.0) as u16).collect(),
    )
    .expect("img")
    .save(&png16)
    .expect("png16");
    let npy = t.join("a.npy");
    npy_f32(&npy, w, h, v.clone());
    for f in [&png8, &png16, &npy] {
        let frames = imagefile::read_frames(f, true).expect("read");
        assert_eq!((frames.len(), frames[0].frame.width(), frames[0].frame.height()), (1, w, h), "{}", f.display());
    }
    // A 16-bit TIFF stack: page 0 is the reference, pages 1.. are compared.
    let tif = t.join("stack.tif");
    {
        let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(&tif).expect("create")).expect("tiff");
        for s in 0..3 {
            let page: Vec<u16> = lattice(w, h, s as f32 * 2.0).iter().map(|x| (x * 60000.0) as u16).collect();
            enc.write_image::<tiff::encoder::colortype::Gray16>(w as u32, h as u32, &page).expect("page");
        }
    }
    let frames = imagefile::read_frames(&tif, true).expect("stack");
    assert_eq!(frames.len(), 3);
    assert!(frames[2].source.ends_with("[page 2]"));
    let o = compare(t, &[&tif], &["--patch", "16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(t);
    assert_eq!(rows.len(), 2 * 12, "2 compared pages × (3 rows × 4 cols) patches");
    // The right 0 px / bottom 0 px remainder is reported; a 64×48 frame with 20 px patches leaves 4 and 8.
    let o = compare(t, &[&npy, &npy], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("rightmost 4 px columns and bottom 8 px rows"), "{}", stdout(&o));
    // Identical frames: SSIM 1 for every patch.
    for r in csv_rows(t) {
        assert!((r[5].parse::<f64>().expect("num") - 1.0).abs() < 1e-9, "{r:?}");
    }
}

#[test]
fn detector_gaps_are_filled_or_excluded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let (w, h) = (40, 20);
    let mut px: Vec<u16> = lattice(w, h, 0.0).iter().map(|x| (x * 1000.0) as u16).collect();
    // Patch 0: 10 gap pixels (filled); patch 1: a whole gap column block of 200 px (excluded).
    px[..10].fill(u16::MAX);
    for y in 0..20 {
        for x in 20..30 {
            px[y * w + x] = u16::MAX;
        }
    }
    let a = t.join("gaps.npy");
    Array2::from_shape_vec((h, w), px).expect("shape").write_npy(std::fs::File::create(&a).expect("f")).expect("npy");
    let o = compare(t, &[&a, &a], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = csv_rows(t);
    assert_eq!(rows[0][7], "filled_10px");
    assert_eq!(rows[1][7], "masked");
    assert_eq!(rows[1][5], "");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("out/summary.json")).expect("json")).expect("json");
    assert_eq!(s["reference"]["invalid_px"], 210);
    assert_eq!(s["frames"][0]["summary"]["excluded_patches"], 1);
    // With masking off, the gap values are signal and every patch is analysed.
    let o = compare(t, &[&a, &a], &["--no-gap-mask"]);
    assert!(o.status.success());
    assert!(csv_rows(t).iter().all(|r| r[7] == "ok"));
}

#[test]
fn bad_inputs_give_one_line_errors_naming_file_and_problem() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let good = t.join("good.npy");
    npy_f32(&good, 40, 40, lattice(40, 40, 0.0));

    let missing = t.join("missing.tif");
    let o = compare(t, &[&good, &missing], &[]);
    assert_clean_error(&o, "missing.tif: cannot open");

    let empty = t.join("empty.png");
    std::fs::write(&empty, b"").expect("write");
    assert_clean_error(&compare(t, &[&good, &empty], &[]), "empty.png: empty file");

    let junk = t.join("notes.txt");
    std::fs::write(&junk, b"hello, not an image").expect("write");
    assert_clean_error(&compare(t, &[&good, &junk], &[]), "notes.txt: not a TIFF, PNG, JPEG or .npy");

    let dir = t.join("a_directory");
    std::fs::create_dir(&dir).expect("mkdir");
    assert_clean_error(&compare(t, &[&good, &dir], &[]), "a_directory: is a directory");

    let nan = t.join("nan.npy");
    let mut v = lattice(40, 40, 0.0);
    v[41] = f32::NAN;
    npy_f32(&nan, 40, 40, v);
    let line = assert_clean_error(&compare(t, &[&good, &nan], &[]), "nan.npy");
    assert!(line.contains("NaN") && line.contains("x=1, y=1"), "{line}");

    let shape = t.join("wrong_shape.npy");
    npy_f32(&shape, 36, 40, lattice(36, 40, 0.0));
    let line = assert_clean_error(&compare(t, &[&good, &shape], &[]), "wrong_shape.npy");
    assert!(line.contains("36×40") && line.contains("40×40"), "{line}");

    let tiny = t.join("tiny.npy");
    npy_f32(&tiny, 10, 10, lattice(10, 10, 0.0));
    assert_clean_error(&compare(t, &[&tiny, &tiny], &[]), "smaller than one 20×20 px patch");

    let truncated = t.join("truncated.png");
    image::GrayImage::from_raw(40, 40, vec![7u8; 1600]).expect("img").save(&truncated).expect("png");
    let bytes = std::fs::read(&truncated).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    assert_clean_error(&compare(t, &[&good, &truncated], &[]), "truncated.png: PNG");

    // A .npy header that claims far more data than the file holds (would be a 64 GiB allocation).
    let liar = t.join("liar.npy");
    edited_npy(&liar, "(4, 4)", "(131072, 131072)");
    let line = assert_clean_error(&compare(t, &[&good, &liar], &[]), "liar.npy");
    assert!(line.contains("claims"), "{line}");

    let complex = t.join("complex.npy");
    edited_npy(&complex, "<f4", "<c8");
    assert_clean_error(&compare(t, &[&good, &complex], &[]), "unsupported .npy dtype '<c8'");

    let cube = t.join("cube.npy");
    Array3::<f32>::zeros((2, 2, 2))
        .into_shape_with_order((2, 2, 2))
        .expect("shape")
        .write_npy(std::fs::File::create(&cube).expect("f"))
        .expect("npy");
    // 3-D is a stack of frames: fine as data, but 2×2 frames are smaller than a patch.
    assert_clean_error(&compare(t, &[&cube], &[]), "smaller than one");

    let constant = t.join("constant.npy");
    npy_f32(&constant, 40, 40, vec![3.0; 1600]);
    assert_clean_error(&compare(t, &[&constant, &good], &[]), "constant.npy: the reference frame is constant");

    assert_clean_error(&compare(t, &[&good], &[]), "nothing to compare");
    let o = compare(t, &[&good, &good], &["--patch", "0"]);
    assert_clean_error(&o, "analysis.patch_px");
}

#[test]
fn config_file_is_validated_and_flags_override_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let good = t.join("good.npy");
    npy_f32(&good, 40, 40, lattice(40, 40, 0.0));
    let bad = t.join("bad.toml");
    std::fs::write(&bad, "[analysis]\npatch_size = 20\n").expect("write");
    let cfg = bad.display().to_string();
    assert_clean_error(&compare(t, &[&good, &good], &["--config", &cfg]), "patch_size");
    let neg = t.join("neg.toml");
    std::fs::write(&neg, "[analysis]\nthreshold = -1.0\n").expect("write");
    assert_clean_error(&compare(t, &[&good, &good], &["--config", &neg.display().to_string()]), "analysis.threshold");
    // The shipped default config is valid.
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml");
    let o = compare(t, &[&good, &good], &["--config", &shipped.display().to_string(), "--patch", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(csv_rows(t).len(), 16, "--patch 10 overrides the file's 20");
}

#[test]
fn every_shipped_config_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = beamwatch::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            cfg.validate(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "default, dectris-v1, dectris-v2 and replay presets");
}
