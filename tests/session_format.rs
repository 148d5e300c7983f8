//! Session files describe themselves: what HyperSpy users load them with (RosettaSciIO's EMD reader,
//! h5py) finds the frames and the dissimilarity maps with calibrated axes, units on every dataset
//! and the alarms as strings. The Python tools come from `./tools/setup.sh` (a venv under `.tools/`);
//! without them this test fails and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use beamwatch::simulate::series::{Series, SeriesSpec};
use common::{beamwatch, stderr};

fn python() -> PathBuf {
    let p = std::env::var_os("BEAMWATCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python"));
    assert!(p.exists(), "{}: no Python with h5py and RosettaSciIO; run ./tools/setup.sh first", p.display());
    p
}

const CHECK: &str = r#"
import json, sys
import h5py, numpy as np
from rsciio.emd import file_reader

path, pixel_nm, patch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
signals = {s["metadata"]["General"]["title"]: s for s in file_reader(path)}
out = {}
for name in ("frames", "dissimilarity"):
    s = signals[name]
    out[name] = {
        "shape": list(s["data"].shape),
        "axes": [{k: (float(a[k]) if k in ("scale", "offset") else a[k]) for k in ("name", "size", "scale", "offset", "units")} for a in s["axes"]],
    }
with h5py.File(path, "r") as f:
    # The same pixels through the EMD group as through the version-1 path.
    out["frames_equal"] = bool(np.array_equal(np.asarray(signals["frames"]["data"]).transpose(), f["frames"][()]))
    d = np.asarray(signals["dissimilarity"]["data"]).transpose()
    out["dissimilarity_equal"] = bool(np.array_equal(d, f["analysis/dissimilarity"][()], equal_nan=True))
    missing = []
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith("data/") and not name.split("/")[-1].startswith("dim"):
            if "units" not in obj.attrs or "axes" not in obj.attrs:
                missing.append(name)
    f.visititems(visit)
    out["without_units"] = missing
    out["alarms"] = [json.loads(a) for a in f["alarms"][()]]
    out["format"] = f.attrs["beamwatch_format"]
print(json.dumps(out))
"#;

#[test]
fn rosettasciio_loads_frames_and_maps_with_calibrated_axes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let series = Series::new(SeriesSpec::with_onset(160, 14, 5));
    let tif = tmp.path().join("stack.tif");
    common::write_tiff_stack(&tif, &series);
    let out = tmp.path().join("out");
    let pixel_a = 0.5;
    let o = beamwatch(
        &[
            "replay",
            tif.to_str().expect("p"),
            "--out",
            out.to_str().expect("p"),
            "--metric",
            "psnr",
            "--pixel-size-a",
            &pixel_a.to_string(),
            "--beam-current-pa",
            "4",
            "--dwell-time-us",
            "2",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    let session = summary["outputs"]["session"].as_str().expect("results session").to_string();
    let run = Command::new(python())
        .args(["-c", CHECK, &session, &(pixel_a / 10.0).to_string(), "20"])
        .output()
        .expect("python runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("python's json");
    assert_eq!(v["format"], "beamwatch-session/2");
    // Frames: every frame stored by default, axes x, y in nm with the pixel size, then the frame.
    let frames = &v["frames"];
    assert_eq!(frames["shape"], serde_json::json!([160, 160, 14]), "{v}");
    let ax = frames["axes"].as_array().expect("axes");
    for (a, name) in ax.iter().zip(["x", "y"]) {
        assert_eq!(a["name"], name, "{a}");
        assert_eq!(a["units"], "nm", "{a}");
        assert!((a["scale"].as_f64().expect("scale") - 0.05).abs() < 1e-9, "{a}");
    }
    assert_eq!(ax[2]["name"], "frame");
    assert_eq!(v["frames_equal"], true);
    // One dissimilarity map per compared frame, on the patch grid: 20 px = 1 nm per patch, centred.
    let d = &v["dissimilarity"];
    assert_eq!(d["shape"], serde_json::json!([8, 8, 13]), "{v}");
    let dx = &d["axes"][0];
    assert_eq!(dx["units"], "nm");
    assert!((dx["scale"].as_f64().expect("scale") - 1.0).abs() < 1e-9, "{dx}");
    assert!((dx["offset"].as_f64().expect("offset") - 0.5).abs() < 1e-9, "{dx}");
    assert_eq!(v["dissimilarity_equal"], true);
    assert_eq!(v["without_units"], serde_json::json!([]), "datasets without units/axes attributes");
    // Alarms are strings, each the alarm's JSON.
    let alarms = v["alarms"].as_array().expect("alarms");
    let expected = summary["series"]["alarms"].as_array().map_or(0, Vec::len);
    assert_eq!(alarms.len(), expected, "{v}");
    assert!(alarms.iter().all(|a| a["type"] == "alarm" && a["rule"].is_string()), "{alarms:?}");

    // Replaying the results session keeps the dose inputs it recorded, with their sources.
    let again = tmp.path().join("again");
    let o = beamwatch(&["replay", &session, "--out", again.to_str().expect("p"), "--metric", "psnr"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let s2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("summary.json")).expect("summary")).expect("json");
    let d = &s2["dose_inputs"];
    for (key, value) in [("beam_current_pa", 4.0), ("dwell_time_us", 2.0), ("pixel_size_a", pixel_a)] {
        assert_eq!(d[key]["value"].as_f64(), Some(value), "{key}: {d}");
        assert_eq!(d[key]["source"], "config", "{key}: where the first replay took it from: {d}");
    }
    assert_eq!(d["per_frame_e_per_a2"], summary["dose_inputs"]["per_frame_e_per_a2"], "{d}");
}

#[test]
fn a_dose_given_on_the_command_line_is_not_reported_missing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tif = tmp.path().join("stack.tif");
    common::write_tiff_stack(&tif, &Series::new(SeriesSpec::with_onset(100, 4, 2)));
    let out = tmp.path().join("out");
    let o = beamwatch(
        &["replay", tif.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "psnr"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = common::stdout(&o);
    assert!(
        text.contains("beam current not in file: give it with --beam-current-pa or [dose] beam_current_pa"),
        "{text}"
    );
    let o = beamwatch(
        &[
            "replay",
            tif.to_str().expect("p"),
            "--out",
            out.to_str().expect("p"),
            "--metric",
            "psnr",
            "--beam-current-pa",
            "7.5",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = common::stdout(&o);
    assert!(!text.contains("give it with --beam-current-pa"), "{text}");
    assert!(text.contains("7.5 pA from --beam-current-pa"), "{text}");
}

#[test]
fn version_1_sessions_still_replay() {
    // A version-1 file as the daemon wrote it before format 2: built here with the same layout.
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("v1.h5");
    let (n, h, w) = (4usize, 40usize, 40usize);
    {
        let f = hdf5::File::create(&path).expect("create");
        let attr = |name: &str, v: &str| {
            let v: hdf5::types::VarLenUnicode = v.parse().expect("text");
            f.new_attr::<hdf5::types::VarLenUnicode>().create(name).expect("attr").write_scalar(&v).expect("write");
        };
        attr("beamwatch_format", "beamwatch-session/1");
        attr("series", "old");
        attr("dtype", "u16");
        for (name, v) in [("width", w as u64), ("height", h as u64), ("frames_every", 1)] {
            f.new_attr::<u64>().create(name).expect("attr").write_scalar(&v).expect("write");
        }
        let series = Series::new(SeriesSpec::with_onset(w, n, 2));
        let px: Vec<u16> = (0..n).flat_map(|i| series.frame(i).0).collect();
        f.new_dataset_builder()
            .with_data(&ndarray::Array3::from_shape_vec((n, h, w), px).expect("shape"))
            .create("frames")
            .expect("frames");
        f.new_dataset_builder().with_data(&(0..n as u64).collect::<Vec<_>>()).create("frame_index").expect("index");
        let g = f.create_group("received").expect("group");
        g.new_dataset_builder().with_data(&(0..n as u64).collect::<Vec<_>>()).create("index").expect("col");
        for col in ["dose_e_per_a2", "cumulative_e_per_a2"] {
            g.new_dataset_builder().with_data(&vec![f64::NAN; n]).create(col).expect("col");
        }
        let a = f.create_group("analysis").expect("group");
        a.new_dataset_builder().with_data(&Vec::<u64>::new()).create("index").expect("col");
        let alarm = br#"{"type":"alarm","rule":"old-rule"}"#;
        let mut row = vec![0u8; 4096];
        row[..alarm.len()].copy_from_slice(alarm);
        f.new_dataset_builder()
            .with_data(&ndarray::Array2::from_shape_vec((1, 4096), row).expect("row"))
            .create("alarms")
            .expect("alarms");
    }
    let r = beamwatch::record::session::SessionReader::open(&path, true).expect("opens");
    assert_eq!(r.alarms().expect("alarms"), vec![r#"{"type":"alarm","rule":"old-rule"}"#.to_string()]);
    let out = tmp.path().join("out");
    let o = beamwatch(
        &["replay", path.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "psnr"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(s["frames"], 4, "{s}");
}
