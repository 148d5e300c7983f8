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
fn bench_says_which_precision_ran_and_what_the_probe_measured() {
    let tmp = tempfile::tempdir().expect("tmp");
    let native = beamwatch::engine::cpu::precision::native_bf16();
    let run = |extra: &[&str]| {
        let mut args = vec!["bench", "--size", "120", "--frames", "1", "--backend", "cpu", "--precision", "bf16"];
        args.extend_from_slice(extra);
        let o = beamwatch(&args, tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let j: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        assert_eq!(j["precision_asked"], "bf16");
        j
    };
    let j = run(&[]);
    if native {
        let probe: beamwatch::engine::cpu::probe::SpeedProbe =
            serde_json::from_value(j["precision_probe"].clone()).expect("precision_probe in the JSON");
        let kept = if probe.keeps_bf16() { "bf16" } else { "fp32" };
        println!("probe: {probe}: {kept} runs");
        assert_eq!(j["precision"], kept, "{j}");
    } else {
        assert_eq!(j["precision"], "fp32");
        assert!(j.get("precision_probe").is_none(), "{j}");
    }
    // --force-precision runs bf16 wherever the CPU has it, and times nothing first.
    let j = run(&["--force-precision"]);
    assert_eq!(j["precision"], if native { "bf16" } else { "fp32" }, "{j}");
    assert!(j.get("precision_probe").is_none(), "{j}");
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

#[test]
fn bench_4d_prints_the_figures_per_size_as_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let args = [
        "bench-4d",
        "--sizes",
        "64,48",
        "--patterns",
        "12",
        "--scan",
        "6x5",
        "--scans-per-round",
        "1",
        "--rounds",
        "1",
        "--no-c-anchor",
        "--json",
    ];
    let o = beamwatch(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (j, px) in lines.iter().zip([64, 48]) {
        assert_eq!(j["pattern_px"], px, "{j}");
        assert_eq!(j["threads"], 2);
        assert_eq!(j["patterns"], 30, "one 6×5 scan per round");
        assert_eq!(j["distinct_patterns"], 12);
        assert_eq!(j["scans_completed"], 2, "one scan, two bands: {j}");
        assert!(j["cpu"].as_str().is_some_and(|c| !c.is_empty()));
        assert!(j["c_bitshuffle"].is_null(), "--no-c-anchor");
        for rate in ["old", "new_flex", "new", "reduce"] {
            for key in ["patterns_per_s", "mb_per_s_out"] {
                assert!(j[rate][key].as_f64().is_some_and(|v| v > 0.0 && v.is_finite()), "{rate}.{key}: {j}");
            }
        }
        for stage in ["decode", "convert", "detectors", "region_sums"] {
            assert!(j["stages_ns_per_pattern"][stage].as_f64().is_some_and(|v| v >= 0.0), "{stage}: {j}");
        }
    }
    // The synthetic patterns have six Bragg spots the spot finder finds at 64 px.
    assert!(lines[0]["spots_found"].as_u64().is_some_and(|n| n >= 4), "{}", lines[0]);
    // The table form names the CPU and every column.
    let o = beamwatch(&args[..args.len() - 1], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.starts_with("CPU: "), "{table}");
    assert!(table.contains("decode+reduce pat/s") && table.contains(" 64×64 ") && table.contains(" 48×48 "), "{table}");
}

/// The benchmark's decode + reduce path (liblz4, SIMD untranspose, u16→f32, one assembler per band
/// of rows) gives, at every position, the virtual detectors computed directly from the old decoder's
/// pixels: exact for the integer sums.
#[test]
fn bench_4d_reduction_equals_a_direct_computation() {
    use beamwatch::commands::bench_4d::{
        BandReducer, bench_config, compress_patterns, counting_patterns, reduce_range,
    };
    use beamwatch::decode::bslz4::decode_bslz4_scalar;
    use beamwatch::fourd::ScanShape;
    let (px, scan) = (64usize, ScanShape { rows: 7, cols: 5 });
    let blobs = compress_patterns(&counting_patterns(px, 9, 3));
    let mut bands: Vec<BandReducer> = (0..2).map(|b| BandReducer::new(&bench_config(), scan, 2, b, px)).collect();
    let n = 3 * scan.positions();
    reduce_range(&mut bands, &blobs, px, 0, n, true);
    for b in &mut bands {
        b.finish(true);
    }
    assert_eq!(bands[0].rows, (0, 3));
    assert_eq!(bands[1].rows, (3, 7));
    for band in &bands {
        assert_eq!(band.results.len(), 3, "three complete scans per band");
        let det = band.assembler.detectors.as_ref().expect("detectors set up");
        let (cx, cy) = det.centre_px;
        assert!((cx - 31.5).abs() < 1.0 && (cy - 31.5).abs() < 1.0, "centre {cx},{cy}");
        let k = |name: &str| det.index_of(name).expect("default detector");
        let (_, bf_r) = det.radii_px(k("bf")).expect("disk");
        let (adf_in, adf_out) = det.radii_px(k("adf")).expect("annulus");
        for r in &band.results {
            assert!(r.complete && r.missing == 0 && r.duplicates == 0 && !r.masked.iter().any(|&m| m));
            for row in band.rows.0..band.rows.1 {
                for col in 0..scan.cols {
                    let index = r.scan * scan.positions() + (row * scan.cols + col) as u64;
                    let bytes =
                        decode_bslz4_scalar(&blobs[index as usize % blobs.len()], 2, px * px * 2).expect("decodes");
                    let (mut sum, mut bf, mut adf) = (0u64, 0u64, 0u64);
                    for (i, c) in bytes.chunks_exact(2).enumerate() {
                        let v = u64::from(u16::from_le_bytes([c[0], c[1]]));
                        let r2 = ((i % px) as f64 - cx).powi(2) + ((i / px) as f64 - cy).powi(2);
                        sum += v;
                        bf += if r2 < bf_r * bf_r { v } else { 0 };
                        adf += if r2 >= adf_in * adf_in && r2 < adf_out * adf_out { v } else { 0 };
                    }
                    let p = (row - band.rows.0) * scan.cols + col;
                    let at = (r.scan, row, col);
                    assert_eq!(r.images[k("sum")][p], sum as f32, "sum at {at:?}");
                    assert_eq!(r.images[k("bf")][p], bf as f32, "bf at {at:?}");
                    assert_eq!(r.images[k("adf")][p], adf as f32, "adf at {at:?}");
                }
            }
        }
        // Six spots in the synthetic patterns; the band's reference scan finds them.
        assert!(band.assembler.spots.len() >= 4, "spots {:?}", band.assembler.spots);
        assert!(band.results[2].spot_intensity.iter().all(|v| v.is_finite() && *v > 0.0));
    }
}
