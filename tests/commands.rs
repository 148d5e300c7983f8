//! `bench` and `demo` through the real binary.

mod common;

use common::*;

#[test]
fn bench_prints_one_json_line_with_the_figures() {
    let tmp = tempfile::tempdir().expect("tmp");
    for metric in ["resnet18", "ssim"] {
        let o = beamwatch(&["bench", "--size", "120", "--frames", "2", "--metric", metric], tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert_eq!(out.lines().count(), 1, "{out}");
        let j: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(j["patches"], 36);
        assert_eq!(j["metric"], metric);
        assert_eq!(j["frames_timed"], 2);
        for key in ["ms_per_frame_median", "patches_per_s", "peak_rss_mib"] {
            assert!(j[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {out}");
        }
        if metric == "resnet18" {
            assert_eq!(j["weights"], "random (timing only)");
            assert!(j["mac_per_patch"].as_u64() < j["dense_mac_per_patch"].as_u64());
        }
    }
}

#[test]
fn demo_runs_offline_and_sees_damage_grow() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("demo");
    let o = beamwatch(&["demo", "--out", out.to_str().expect("p"), "--frames", "4", "--size", "200"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("falls back to SSIM"), "no weights in a fresh HOME: {}", stderr(&o));
    for i in 0..4 {
        assert!(out.join(format!("frames/frame_{i:03}.tif")).is_file());
    }
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    let means: Vec<f64> = s["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["summary"]["mean_dissimilarity"].as_f64().expect("mean"))
        .collect();
    assert_eq!(means.len(), 3);
    assert!(means[0] < means[1] && means[1] < means[2], "damage should grow with dose: {means:?}");
    // Drift is simulated at (+0.6, −0.35) px per frame; registration measures it.
    let dx = s["frames"][2]["shift"]["dx_px"].as_f64().expect("dx");
    let dy = s["frames"][2]["shift"]["dy_px"].as_f64().expect("dy");
    assert!((dx - 1.8).abs() < 0.2 && (dy + 1.05).abs() < 0.2, "drift {dx}, {dy}");
    assert!(out.join("frame_0003.png").is_file());
}
