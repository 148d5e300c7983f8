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
fn demo_runs_simulator_and_monitor_offline_and_alarms_after_the_onset() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("demo");
    let o = beamwatch(
        &[
            "demo",
            "--out",
            out.to_str().expect("p"),
            "--frames",
            "18",
            "--onset-frame",
            "6",
            "--size",
            "160",
            "--fps",
            "20",
            "--format",
            "dectris-v1",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("falls back to PSNR"), "no weights in a fresh HOME: {}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("damage starts at frame 6"), "{text}");
    assert!(text.contains("18 received, 18 analysed"), "{text}");
    assert!(text.contains("patch threshold calibrated on frames 1–3"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("daemon_report.json")).expect("report")).expect("json");
    let alarms = report["series"][0]["alarms"].as_array().expect("alarms");
    assert!(!alarms.is_empty(), "{report}");
    for a in alarms {
        let f = a["frame"].as_u64().expect("frame");
        assert!(f >= 6, "alarm at frame {f}, before the onset at 6: {a}");
    }
    // The onset alarm within one frame of the true onset (PSNR, 160 px demo: measured +1).
    let onset = alarms.iter().find(|a| a["rule"] == "damage-onset").expect("an onset alarm");
    eprintln!("onset alarm at frame {} (true onset 6)", onset["frame"]);
    assert!((6..=7).contains(&onset["frame"].as_u64().expect("frame")), "{onset}");
    assert!(out.join("alarms.jsonl").is_file() && out.join("series_1.json").is_file());
}
