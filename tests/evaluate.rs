//! `beamwatch evaluate` on series whose damage is known: real HDF5 files written by
//! `beamwatch simulate --out`, scored through the CLI.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn beamwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_beamwatch")).args(args).output().expect("beamwatch runs")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn simulate(path: &Path, damage: &str, onset: &str) {
    ok(beamwatch(&[
        "simulate",
        "--out",
        path.to_str().expect("p"),
        "--size",
        "160",
        "--frames",
        "9",
        "--onset-frame",
        onset,
        "--damage",
        damage,
        "--electrons-per-px",
        "100",
        "-q",
    ]));
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json")).expect("json")
}

#[test]
fn a_series_without_damage_has_no_alarm_and_an_undefined_auc() {
    let tmp = tempfile::tempdir().expect("tmp");
    let series = tmp.path().join("clean.h5");
    simulate(&series, "amorphous", "1000");
    let out = tmp.path().join("eval");
    let stdout = ok(beamwatch(&[
        "evaluate",
        series.to_str().expect("p"),
        "--metrics",
        "ssim,ncc",
        "--sigma",
        "0,2",
        "--register",
        "on,off",
        "--out",
        out.to_str().expect("p"),
        "-q",
    ]));
    let s = summary(&out);
    let results = s["results"].as_array().expect("results");
    assert_eq!(results.len(), 8, "2 metrics × 2 σ × 2 registrations");
    for r in results {
        assert!(r["onset_frame"].is_null(), "{r}");
        assert!(
            r["auc_early"].is_null() && r["auc_late"].is_null() && r["auc_mean"].is_null(),
            "undefined, not a number: {r}"
        );
        for f in r["frames"].as_array().expect("frames") {
            assert!(f["auc"].is_null(), "{f}");
            assert_eq!(f["damaged_patches"], 0);
        }
        assert!(r["onset_delay_frames"].is_null());
    }
    // With the defaults (σ = 2 px, registration on) a clean drifting series raises no alarm.
    let default = results
        .iter()
        .find(|r| r["setting"]["prefilter_sigma_px"] == 2.0 && r["setting"]["registration"] == "subpixel")
        .expect("the default setting");
    assert!(default["alarm_frame"].is_null(), "{default}");
    assert_eq!(default["false_alarms"], 0, "{default}");
    // The CSV leaves undefined AUCs empty and the table shows a dash.
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    let row = csv.lines().nth(1).expect("a row");
    assert_eq!(row.split(',').nth(6), Some(""), "auc_early empty: {row}");
    assert!(stdout.contains("| – (–) | – | – |"), "{stdout}");
    for png in ["auc_clean_ssim.png", "auc_clean_ncc.png"] {
        image::open(out.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
    }
}

#[test]
fn known_damage_is_found_and_a_truth_mask_scores_any_recorded_series() {
    let tmp = tempfile::tempdir().expect("tmp");
    let series = tmp.path().join("amorphous.h5");
    simulate(&series, "amorphous", "3");
    let out = tmp.path().join("eval");
    ok(beamwatch(&[
        "evaluate",
        series.to_str().expect("p"),
        "--metrics",
        "ssim",
        "--sigma",
        "2",
        "--register",
        "on",
        "--out",
        out.to_str().expect("p"),
        "-q",
    ]));
    let s = summary(&out);
    let r = &s["results"][0];
    assert_eq!(r["onset_frame"], 3, "{r}");
    assert!(r["auc_early"].as_f64().expect("defined") > 0.9, "{r}");
    assert!(r["auc_mean"].as_f64().expect("defined") > 0.85, "{r}");
    assert!(r["alarm_frame"].as_u64().expect("it alarms") >= 3, "no alarm before the onset: {r}");
    assert_eq!(r["false_alarms"], 0);

    // The same series scored with a hand-drawn mask (here: the true damage of the last frame,
    // applied from frame 8 on) instead of its stored truth.
    let f = hdf5::File::open(&series).expect("series");
    let cube: ndarray::Array3<f32> = f.dataset("truth/damage").expect("truth").read().expect("read");
    let last = cube.index_axis(ndarray::Axis(0), 8);
    let mask = image::GrayImage::from_fn(160, 160, |x, y| {
        image::Luma([if last[[y as usize, x as usize]] > 0.0 { 255 } else { 0 }])
    });
    let mask_path = tmp.path().join("mask.png");
    mask.save(&mask_path).expect("mask");
    let out2 = tmp.path().join("eval2");
    ok(beamwatch(&[
        "evaluate",
        series.to_str().expect("p"),
        "--truth",
        mask_path.to_str().expect("p"),
        "--truth-onset",
        "8",
        "--metrics",
        "ssim",
        "--sigma",
        "2",
        "--register",
        "on",
        "--out",
        out2.to_str().expect("p"),
        "-q",
    ]));
    let r2 = &summary(&out2)["results"][0];
    assert_eq!(r2["first_damaged_frame"], 8, "{r2}");
    let (a, b) = (r["auc_late"].as_f64().expect("a"), r2["auc_late"].as_f64().expect("b"));
    assert!((a - b).abs() < 1e-9, "the last frame scores the same against the same truth: {a} vs {b}");
    // A mask without its onset frame is a clear error.
    let o = beamwatch(&[
        "evaluate",
        series.to_str().expect("p"),
        "--truth",
        mask_path.to_str().expect("p"),
        "--metrics",
        "ssim",
        "--out",
        out2.to_str().expect("p"),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--truth-onset"));
}

/// `--precision bf16 --force-precision` scores in bf16 wherever the CPU has AVX512-BF16, whether or
/// not it is faster there (how the README measures bf16's decisions), and the report says which
/// format ran; without the switch, fp32 is what the default config runs.
#[test]
fn the_report_says_which_precision_computed_the_features() {
    let tmp = tempfile::tempdir().expect("tmp");
    let series = tmp.path().join("amorphous.h5");
    simulate(&series, "amorphous", "3");
    let weights = common::synthetic_weights();
    let run = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "evaluate",
            series.to_str().expect("p"),
            "--metrics",
            "resnet18",
            "--sigma",
            "2",
            "--register",
            "on",
            "--weights",
            weights.to_str().expect("p"),
            "--out",
            out.to_str().expect("p"),
            "-q",
        ];
        args.extend_from_slice(extra);
        let stdout = ok(beamwatch(&args));
        (summary(out), stdout)
    };
    let (fp32, stdout) = run(&[], &tmp.path().join("fp32"));
    assert_eq!(fp32["precision"], "fp32");
    assert!(stdout.contains("features computed in fp32"), "{stdout}");
    let (bf16, _) = run(&["--precision", "bf16", "--force-precision"], &tmp.path().join("bf16"));
    let native = beamwatch::engine::cpu::precision::native_bf16();
    assert_eq!(bf16["precision"], if native { "bf16" } else { "fp32" });
    let onset = |s: &serde_json::Value| s["results"][0]["onset_frame"].clone();
    assert_eq!(onset(&fp32), 3);
    assert_eq!(onset(&bf16), 3);
    if native {
        let t = |s: &serde_json::Value| s["results"][0]["threshold"].as_f64().expect("threshold");
        assert_ne!(t(&fp32), t(&bf16), "bf16 rounds differently from fp32");
    }
}
