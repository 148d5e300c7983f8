//! A compute thread that dies (the analysis panics on a chosen frame, through the pipeline's test
//! hook) must not leave a monitor that looks healthy: `run` and `replay` both exit non-zero with
//! one error line saying the analysis died, after writing what they had.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beamwatch::pipeline::FAULT_ENV;
use beamwatch::record::session::SessionReader;
use beamwatch::simulate::series::{Series, SeriesSpec};

const DIE_AT: u64 = 3;

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("json")
}

#[test]
fn replay_reports_a_dead_analysis_and_keeps_what_it_had() {
    let tmp = tempfile::tempdir().expect("tmp");
    let series = Series::new(SeriesSpec::with_onset(100, 10, 4));
    let tif = tmp.path().join("stack.tif");
    common::write_tiff_stack(&tif, &series);
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["replay", tif.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "ssim", "-q"])
        .env(FAULT_ENV, DIE_AT.to_string())
        .output()
        .expect("replay runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a dead analysis must fail the replay: {stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("the analysis died") && errors[0].contains(&format!("frame {DIE_AT}")), "{stderr}");
    // What was analysed before is reported and recorded.
    let s = json(&out.join("summary.json"));
    assert_eq!(s["frames_analysed"], DIE_AT, "{s}");
    assert!(s["analysis_died"].as_str().is_some_and(|m| m.contains("panicked")), "{s}");
    let session = s["outputs"]["session"].as_str().expect("a results session");
    let r = SessionReader::open(Path::new(session), false).expect("the results session opens");
    assert_eq!(r.analyses().expect("analyses").len() as u64, DIE_AT - 1, "every frame compared before the death");
    assert!(out.join("report.html").exists());
}

#[test]
fn run_exits_non_zero_when_its_analysis_dies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let out = tmp.path().join("out");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[analysis]\nmetric = \"ssim\"\n[ingest]\nendpoint = \"tcp://127.0.0.1:{port}\"\n[pipeline]\nout_dir = \"{}\"\n\
             status_interval_s = 0\n[sinks]\npub_endpoint = \"tcp://127.0.0.1:0\"\n",
            out.display()
        ),
    )
    .expect("config");
    let home = tmp.path().join("home");
    let daemon = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["run", "--config", cfg.to_str().expect("p")])
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("TORCH_HOME", home.join("torch"))
        .env(FAULT_ENV, DIE_AT.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["simulate", "--endpoint", &format!("tcp://127.0.0.1:{port}"), "--size", "128", "--frames", "40"])
        .args(["--fps", "10", "--onset-frame", "20", "--wait-s", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start simulator");
    // The daemon stops by itself; a daemon still running after this long kept going without its
    // analysis (the failure this test exists for).
    let started = Instant::now();
    let mut daemon = daemon;
    let status = loop {
        if let Some(s) = daemon.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            let _ = sim.kill();
            panic!("the daemon kept running after its analysis died");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = sim.kill();
    let _ = sim.wait();
    let mut stderr = String::new();
    if let Some(mut e) = daemon.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "exit status {status:?}: {stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("the analysis died") && errors[0].contains(&format!("frame {DIE_AT}")), "{stderr}");
    // The report and the session file are written all the same.
    let report = json(&out.join("daemon_report.json"));
    assert!(report["analysis_died"].as_str().is_some_and(|m| m.contains("panicked")), "{report}");
    let analysed = report["frames_analysed"].as_u64().expect("n");
    assert!((1..=DIE_AT).contains(&analysed), "{report}");
    let files = report["recording"]["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{report}");
    let r = SessionReader::open(Path::new(files[0].as_str().expect("path")), false).expect("the session file opens");
    assert!(r.analyses().expect("analyses").len() as u64 <= DIE_AT, "{report}");
}
