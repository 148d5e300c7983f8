//! The Python client (`tools/python`) against the real daemon: a Python script sends a simulated
//! damaged series from numpy with dose metadata to `beamwatch run` through `beamwatch_client.Sender`
//! while it listens for alarms with `beamwatch_client.Subscriber`, then reads the session file the
//! daemon wrote with `beamwatch_client.read_session` and compares it with what it sent
//! (`tools/python/tests/live_series.py`).
//!
//! The Python is `$BEAMWATCH_PYTHON`, else `.tools/venv/bin/python`; `./tools/setup.sh` creates
//! that environment. Without one the test fails (it never skips): CI runs setup.sh. The client is
//! taken from this checkout (`PYTHONPATH`), whatever the environment has installed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SERIES: &str = "python-client_01";
const FRAMES: u64 = 24;
const SIZE_PX: u64 = 256;
const PATCH_PX: u64 = 20;
const ONSET_FRAME: u64 = 8;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python to run the client with, checked to have what the client and these tests import.
fn python() -> PathBuf {
    let setup = "run ./tools/setup.sh (it creates .tools/venv with pyzmq, numpy and h5py and exports BEAMWATCH_PYTHON)";
    let py = match std::env::var_os("BEAMWATCH_PYTHON").filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(v);
            assert!(p.exists(), "BEAMWATCH_PYTHON={} does not exist: {setup}", p.display());
            p
        }
        None => {
            let p = manifest().join(".tools/venv/bin/python");
            assert!(
                p.exists(),
                "no Python for the client tests: BEAMWATCH_PYTHON is not set and {} does not exist; {setup}",
                p.display()
            );
            p
        }
    };
    let o = Command::new(&py)
        .args(["-c", "import zmq, numpy, h5py"])
        .output()
        .unwrap_or_else(|e| panic!("{} does not run ({e}): {setup}", py.display()));
    assert!(
        o.status.success(),
        "{} lacks what the client needs ({}): {setup}",
        py.display(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    py
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for `child` up to `limit`; kills it and panics (with `what`'s log) past that.
fn wait(child: &mut std::process::Child, limit: Duration, what: &str, log: &Path) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}; its log:\n{}", read_text(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the test script with `args`; returns its stdout, panicking with its output when it fails.
fn script(py: &Path, args: &[&str], log_dir: &Path, name: &str) -> String {
    let (out_path, err_path) = (log_dir.join(format!("{name}.stdout")), log_dir.join(format!("{name}.stderr")));
    let mut child = Command::new(py)
        .arg(manifest().join("tools/python/tests/live_series.py"))
        .args(args)
        .env("PYTHONPATH", manifest().join("tools/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", py.display()));
    let status = wait(&mut child, Duration::from_secs(180), &format!("live_series.py {name}"), &err_path);
    let (out, err) = (read_text(&out_path), read_text(&err_path));
    assert!(status.success(), "live_series.py {name} failed ({status}):\n{out}\n{err}");
    out
}

#[test]
fn python_client_sends_a_damaged_series_gets_its_alarms_and_reads_the_session() {
    let py = python();
    let tmp = tempfile::tempdir().expect("tmp");
    let (ingest, publish) = (free_port(), free_port());
    let out = tmp.path().join("out");
    let sent = tmp.path().join("sent");
    let cfg = tmp.path().join("run.toml");
    // The Python side binds its PUSH socket; the daemon connects to it. Every frame is analysed
    // (no skipping), and the daemon stops after the one series.
    std::fs::write(
        &cfg,
        format!(
            "[analysis]\nmetric = \"psnr\"\n\
             [ingest]\nendpoint = \"tcp://127.0.0.1:{ingest}\"\nmode = \"connect\"\nformat = \"beamwatch\"\n\
             [pipeline]\nout_dir = \"{}\"\nstatus_interval_s = 0\nmax_series = 1\nskip_to_newest = false\n\
             [sinks]\npub_endpoint = \"tcp://127.0.0.1:{publish}\"\n\
             [record]\nenabled = true\nframes_every = 1\n\
             [view]\nenabled = false\n",
            out.display()
        ),
    )
    .expect("config");
    let home = tmp.path().join("home");
    let daemon_log = tmp.path().join("daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["run", "--config", cfg.to_str().expect("p")])
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("TORCH_HOME", home.join("torch"))
        .stdout(Stdio::null())
        .stderr(File::create(&daemon_log).expect("log"))
        .spawn()
        .expect("start daemon");

    let sent_arg = sent.to_str().expect("p");
    let send_out = script(
        &py,
        &[
            "send",
            "--endpoint",
            &format!("tcp://127.0.0.1:{ingest}"),
            "--pub",
            &format!("tcp://127.0.0.1:{publish}"),
            "--out",
            sent_arg,
            "--frames",
            &FRAMES.to_string(),
            "--size",
            &SIZE_PX.to_string(),
            "--onset",
            &ONSET_FRAME.to_string(),
        ],
        tmp.path(),
        "send",
    );
    let status = wait(&mut daemon, Duration::from_secs(60), "the daemon (max_series = 1)", &daemon_log);
    let log = read_text(&daemon_log);
    assert!(status.success(), "daemon exit {status}:\n{log}");

    // (a) What the Python side received, and what the daemon counted.
    let received = read_json(&sent.join("received.json"));
    assert_eq!(received["frames_sent"], FRAMES, "{send_out}");
    let alarms = received["alarms"].as_array().expect("alarms");
    assert!(
        alarms.iter().any(|a| a["rule"] == "damage-onset" && a["series"] == SERIES),
        "the Python subscriber got no damage-onset alarm: {alarms:?}\ndaemon log:\n{log}"
    );
    for a in alarms {
        assert!(a.is_object() && a["level"].is_string() && a["frame"].is_u64(), "alarm as a dict: {a}");
    }
    let summary = read_json(&out.join(format!("series_{SERIES}.json")));
    assert_eq!(summary["series"], SERIES);
    assert_eq!(summary["frames_received"], FRAMES, "every frame sent is counted: {summary}");
    assert_eq!(summary["implicit_end"], false, "the series was ended by the client's series end");
    assert_eq!(summary["info"]["frames_expected"], FRAMES, "{summary}");
    for published in received["summaries"].as_array().expect("summaries") {
        assert_eq!(published["frames_received"], FRAMES, "published summary: {published}");
    }
    let report = read_json(&out.join("daemon_report.json"));
    assert_eq!(report["frames_received"], FRAMES, "{report}");
    assert_eq!(report["frames_skipped"], 0, "{report}");

    // (b) The session file, read back with read_session().
    let files = report["recording"]["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 1, "one session file: {}", report["recording"]);
    let session = files[0].as_str().expect("path");
    let check: Value = serde_json::from_str(
        script(&py, &["check", "--session", session, "--out", sent_arg], tmp.path(), "check").trim(),
    )
    .expect("check prints JSON");
    assert!(check["format"].as_str().is_some_and(|f| f.starts_with("beamwatch-session/")), "{check}");
    assert_eq!(check["series"], SERIES);
    assert_eq!(check["complete"], true, "{check}");
    // Frames: shape, pixel type and pixel values as sent.
    assert_eq!(check["frames_shape"], serde_json::json!([FRAMES, SIZE_PX, SIZE_PX]), "{check}");
    assert_eq!(check["frames_dtype"], check["sent_dtype"], "{check}");
    assert_eq!(check["frames_dtype"], "uint16");
    for (frame, equal) in check["picked_frames_equal"].as_object().expect("picked") {
        assert_eq!(equal, true, "frame {frame} differs from what was sent");
    }
    assert_eq!(check["all_frames_equal"], true);
    // Dissimilarity grids: one per analysed frame (every frame after the reference), patch grid.
    let grid = SIZE_PX / PATCH_PX;
    assert_eq!(check["grid"], serde_json::json!([grid, grid]), "{check}");
    assert_eq!(check["dissimilarity_shape"], serde_json::json!([FRAMES - 1, grid, grid]), "{check}");
    assert_eq!(check["dissimilarity_dtype"], "float32");
    assert_eq!(check["status_shape"], check["dissimilarity_shape"]);
    assert_eq!(check["analysis_index"], serde_json::json!((1..FRAMES).collect::<Vec<_>>()));
    // Dose per frame: what the headers said (D = I·t/(e·Δx²), current per frame, dwell and pixel
    // size from the series start), the session's own inputs giving its own dose, the running sum.
    assert_eq!(check["received_index"], serde_json::json!((0..FRAMES).collect::<Vec<_>>()));
    for key in ["dose_rel_err_vs_sent", "dose_rel_err_vs_own_inputs", "cumulative_rel_err", "beam_current_rel_err"] {
        let err = check[key].as_f64().unwrap_or(f64::NAN);
        assert!(err < 1e-9, "{key} = {err}: {check}");
    }
    assert_eq!(check["dose_sources_first"]["beam_current_pa"], "frame header", "{check}");
    assert_eq!(check["dose_sources_first"]["dwell_time_us"], "series header", "{check}");
    assert_eq!(check["dose_sources_first"]["pixel_size_a"], "series header", "{check}");
    // Alarms as dicts, the same JSON the PUB socket carried.
    let stored = check["alarms"].as_array().expect("alarms");
    assert!(stored.iter().any(|a| a["rule"] == "damage-onset"), "{check}");
    for a in stored {
        assert!(alarms.contains(a), "a stored alarm the subscriber did not get (or decoded differently): {a}");
    }
}
