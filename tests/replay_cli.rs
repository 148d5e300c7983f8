//! `beamwatch replay` as a user runs it: a TIFF stack in, reports out; bad files give one line.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use beamwatch::simulate::series::{Series, SeriesSpec};

fn beamwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beamwatch")).args(args).output().expect("beamwatch runs")
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn a_tiff_stack_replays_into_a_full_report_with_dose_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = SeriesSpec::with_onset(100, 10, 4);
    let series = Series::new(spec.clone());
    let tif = tmp.path().join("stack.tif");
    common::write_tiff_stack(&tif, &series);
    let out = tmp.path().join("out");
    let (current, dwell, pixel) =
        (spec.beam_current_pa().to_string(), spec.dwell_time_us.to_string(), spec.pixel_size_a.to_string());
    let o = beamwatch(&[
        "replay",
        tif.to_str().expect("p"),
        "--out",
        out.to_str().expect("p"),
        "--metric",
        "ssim",
        "--beam-current-pa",
        &current,
        "--dwell-time-us",
        &dwell,
        "--pixel-size-a",
        &pixel,
        "-q",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json")).expect("json");
    assert_eq!(s["input"]["layout"], "tiff_stack", "{s}");
    assert_eq!(s["frames"], 10);
    assert_eq!(s["frames_analysed"], 10);
    // The dose came from the command line, and the summary says so.
    let d = &s["dose_inputs"];
    for k in ["beam_current_pa", "dwell_time_us", "pixel_size_a"] {
        let src = d[k]["source"].as_str().unwrap_or_default();
        assert!(src.contains("config") || src.contains("cli"), "{k}: {d}");
    }
    let per_frame = d["per_frame_e_per_a2"].as_f64().expect("per-frame dose");
    let want = spec.dose_per_frame_e_per_a2();
    assert!((per_frame - want).abs() < 1e-6 * want, "{per_frame} vs {want} e/Å²");

    // Pictures a microscopist can open.
    let outputs = &s["outputs"];
    for key in ["damage_vs_dose_png", "critical_dose_map_png"] {
        let p = outputs[key].as_str().unwrap_or_else(|| panic!("{key} missing: {outputs}"));
        let (w, h) = png_size(Path::new(p));
        assert!(w >= 200 && h >= 150, "{key}: {w}×{h}");
    }
    let overlays = outputs["overlays"].as_array().expect("overlays");
    assert!(!overlays.is_empty());
    for p in overlays {
        png_size(Path::new(p.as_str().expect("path")));
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    // Self-contained: every picture is inlined, nothing is linked from disk.
    assert!(html.matches("data:image/png;base64,").count() >= 2 + overlays.len().min(1), "pictures inlined");
    assert!(!html.contains("src=\"/"), "no links to local files");
    assert!(html.contains("e⁻/Å²"), "units in the report");
    let session = outputs["session"].as_str().expect("results session");
    let r = beamwatch::record::session::SessionReader::open(Path::new(session), false).expect("session opens");
    assert_eq!(r.analyses().expect("analyses").len(), 9, "one row per compared frame; the reference is not a row");
}

/// One line on stderr, naming the file (and the dataset where there is one); exit status 1.
fn assert_one_line_error(o: &Output, file: &Path, dataset: Option<&str>) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(&file.display().to_string()), "names the file: {stderr}");
    if let Some(d) = dataset {
        assert!(lines[0].contains(d), "names the dataset: {stderr}");
    }
}

#[test]
fn bad_files_give_one_line_naming_file_and_dataset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let out = out.to_str().expect("p");
    let path = tmp.path().join("odd.h5");
    {
        let f = hdf5::File::create(&path).expect("create");
        f.new_dataset_builder().with_data(&[1.0f32, 2.0, 3.0]).create("line").expect("1-D");
        f.new_dataset_builder().with_data(&ndarray::Array3::<u16>::zeros((3, 40, 40))).create("cube").expect("3-D");
        let text = ndarray::Array3::from_shape_fn((2, 2, 2), |_| "x".parse::<hdf5::types::VarLenUnicode>().expect("s"));
        f.new_dataset_builder().with_data(&text).create("text").expect("strings");
    }
    let p = path.to_str().expect("p");
    // Wrong rank, missing dataset, unsupported dtype.
    assert_one_line_error(&beamwatch(&["replay", p, "--dataset", "/line", "--out", out, "-q"]), &path, Some("/line"));
    assert_one_line_error(&beamwatch(&["replay", p, "--dataset", "/nope", "--out", out, "-q"]), &path, Some("/nope"));
    assert_one_line_error(&beamwatch(&["replay", p, "--dataset", "/text", "--out", out, "-q"]), &path, Some("/text"));
    // A frame axis the dataset does not have.
    let o = beamwatch(&["replay", p, "--dataset", "/cube", "--frame-axis", "3", "--out", out, "-q"]);
    assert_one_line_error(&o, &path, Some("/cube"));
    // No known layout.
    assert_one_line_error(&beamwatch(&["replay", p, "--out", out, "-q"]), &path, None);
    // Truncated.
    let bytes = std::fs::read(&path).expect("read");
    let half = tmp.path().join("half.h5");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).expect("write");
    assert_one_line_error(&beamwatch(&["replay", half.to_str().expect("p"), "--out", out, "-q"]), &half, None);
    // Not a file at all, and a frame smaller than a patch.
    let gone = tmp.path().join("gone.emd");
    assert_one_line_error(&beamwatch(&["replay", gone.to_str().expect("p"), "--out", out, "-q"]), &gone, None);
    let tiny = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/emd-samples/example_image.emd"));
    let o = beamwatch(&["replay", tiny.to_str().expect("p"), "--out", out, "--metric", "ssim", "-q"]);
    assert_one_line_error(&o, tiny, None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("smaller than one"));
}
