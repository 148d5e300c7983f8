//! Session recording and replay: the round trip is bit-exact, a SIGKILL keeps what was flushed, a
//! full disk stops recording but not monitoring.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use beamwatch::commands::demo::run_pair;
use beamwatch::commands::replay::{self, ReplayOptions};
use beamwatch::config::{Config, PipelineConfig};
use beamwatch::damage::Metric;
use beamwatch::record::FrameSource;
use beamwatch::record::session::SessionReader;
use beamwatch::simulate::publish::PublishOptions;
use beamwatch::simulate::series::SeriesSpec;

fn analysis_config(out: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.analysis.metric = Some(Metric::Ssim);
    cfg.pipeline = PipelineConfig {
        out_dir: out.to_path_buf(),
        status_interval_s: 0.0,
        skip_to_newest: false,
        queue_frames: 64,
        ..PipelineConfig::default()
    };
    cfg.sinks.pub_endpoint = Some("tcp://127.0.0.1:0".into());
    cfg
}

fn alarm_keys(r: &SessionReader) -> Vec<(String, u64)> {
    r.alarms()
        .expect("alarms")
        .iter()
        .map(|j| {
            let v: serde_json::Value = serde_json::from_str(j).expect("alarm json");
            (v["rule"].as_str().unwrap_or_default().to_string(), v["frame"].as_u64().unwrap_or(u64::MAX))
        })
        .collect()
}

#[test]
fn record_then_replay_gives_the_same_grids_bit_for_bit_and_the_same_alarms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let live_dir = tmp.path().join("live");
    let spec = SeriesSpec::with_onset(140, 16, 6);
    let mut cfg = analysis_config(&live_dir);
    // The dose comes from the config (stream v2 carries none); the replay must use what was recorded.
    cfg.dose.per_frame_e_per_a2 = Some(spec.dose_per_frame_e_per_a2());
    let popts =
        PublishOptions { format: beamwatch::decode::WireFormat::DectrisV2, fps: 25.0, ..PublishOptions::default() };
    let (live, sent) = run_pair(&spec, popts, cfg, false).expect("live run");
    assert_eq!(live.pipeline.frames_analysed, sent.frames_sent, "no frame skipped in this run");
    let rec = live.pipeline.recording.expect("recording report");
    assert_eq!(rec.frames_recorded, sent.frames_sent);
    let session = rec.files.first().cloned().expect("a session file");

    let replay_dir = tmp.path().join("replay");
    let mut rcfg = analysis_config(&replay_dir);
    rcfg.sinks.pub_endpoint = None;
    let summary = replay::run(&ReplayOptions {
        input: session.clone(),
        dataset: None,
        frame_axis: None,
        config: rcfg,
        out: replay_dir.clone(),
        record_frames: false,
        overlays: 4,
        view: false,
    })
    .expect("replay");
    assert_eq!(summary.frames, sent.frames_sent as usize);
    let live_r = SessionReader::open(&session, false).expect("live session");
    let replay_r =
        SessionReader::open(summary.outputs.session.as_deref().expect("results"), false).expect("results session");
    let (a, b) = (live_r.analyses().expect("live analyses"), replay_r.analyses().expect("replay analyses"));
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.index, y.index);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x.dissimilarity), bits(&y.dissimilarity), "frame {}", x.index);
        assert_eq!(bits(&x.similarity), bits(&y.similarity), "frame {}", x.index);
        assert_eq!(x.status, y.status);
        assert_eq!(x.cumulative_e_per_a2.to_bits(), y.cumulative_e_per_a2.to_bits(), "recorded dose reused");
    }
    let (la, ra) = (alarm_keys(&live_r), alarm_keys(&replay_r));
    assert!(!la.is_empty(), "the series raises alarms");
    assert_eq!(la, ra);
    // The reports are there.
    for f in ["summary.json", "report.html", "damage_vs_dose.png", "critical_dose_map.png", "alarms.jsonl"] {
        assert!(replay_dir.join(f).is_file(), "{f}");
    }
    assert!(!summary.outputs.overlays.is_empty());
    let html = std::fs::read_to_string(replay_dir.join("report.html")).expect("html");
    assert!(html.contains("data:image/png;base64,"));
}

/// Spawns `beamwatch` with a private HOME; stderr lines arrive on the returned channel.
fn spawn(
    args: &[&str],
    home: &Path,
    shell_prefix: Option<&str>,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let bin = env!("CARGO_BIN_EXE_beamwatch");
    let mut cmd = match shell_prefix {
        Some(prefix) => {
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &format!("{prefix}; exec '{bin}' {}", quoted.join(" "))]);
            c
        }
        None => {
            let mut c = std::process::Command::new(bin);
            c.args(args);
            c
        }
    };
    let mut child = cmd
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("TORCH_HOME", home.join("torch"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn write_config(path: &Path, port: u16, out: &Path, pipeline_extra: &str, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[analysis]\nmetric = \"ssim\"\n[ingest]\nendpoint = \"tcp://127.0.0.1:{port}\"\n[pipeline]\nout_dir = \"{}\"\nstatus_interval_s = 0.3\n{pipeline_extra}[sinks]\npub_endpoint = \"tcp://127.0.0.1:0\"\n[dose]\nper_frame_e_per_a2 = 100.0\n{extra}",
            out.display()
        ),
    )
    .expect("config");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

fn session_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("sessions dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "h5"))
        .expect("a session file")
}

#[test]
fn sigkill_during_recording_leaves_a_file_with_every_flushed_frame() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let (out, cfg) = (tmp.path().join("out"), tmp.path().join("run.toml"));
    write_config(&cfg, port, &out, "", "[record]\nflush_interval_s = 0.2\n");
    let home = tmp.path().join("home");
    let (mut daemon, lines) = spawn(&["run", "--config", cfg.to_str().expect("p")], &home, None);
    let (mut sim, _) = spawn(
        &[
            "simulate",
            "--endpoint",
            &format!("tcp://127.0.0.1:{port}"),
            "--size",
            "128",
            "--frames",
            "600",
            "--fps",
            "25",
            "--onset-frame",
            "300",
        ],
        &home,
        None,
    );
    // Wait until the status line reports at least 20 frames flushed, then kill -9.
    let t0 = Instant::now();
    let mut flushed = 0u64;
    while flushed < 20 && t0.elapsed() < Duration::from_secs(60) {
        if let Ok(line) = lines.recv_timeout(Duration::from_secs(1))
            && let Some(i) = line.find(" flushed)")
        {
            let head = &line[..i];
            flushed = head[head.rfind('(').map_or(0, |p| p + 1)..].trim().parse().unwrap_or(0);
        }
    }
    assert!(flushed >= 20, "the daemon never reported 20 flushed frames");
    daemon.kill().expect("SIGKILL");
    let _ = daemon.wait();
    let _ = sim.kill();
    let _ = sim.wait();
    let path = session_in(&out.join("sessions"));
    let mut r = SessionReader::open(&path, false).unwrap_or_else(|e| panic!("the killed session opens: {e}"));
    let frames = r.info().frames;
    assert!(frames as u64 >= flushed, "file holds {frames} frames, {flushed} were flushed before the kill");
    assert!(r.info().notes.iter().any(|n| n.contains("did not end cleanly")));
    let last = r.read(frames - 1).expect("the last frame reads");
    assert_eq!((last.frame.width(), last.frame.height()), (128, 128));
    assert!(r.dose_of(last.index).is_some(), "its dose row is there too");
}

#[test]
fn a_full_disk_stops_recording_with_an_alarm_and_monitoring_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let (out, cfg) = (tmp.path().join("out"), tmp.path().join("run.toml"));
    write_config(&cfg, port, &out, "max_series = 1\n", "[record]\nmin_free_mib = 0\n");
    let home = tmp.path().join("home");
    // A 3 MiB file-size limit (dash counts 512-byte blocks): the session file would outgrow it
    // after a few dozen frames. It is the one "disk full" a test can make without root.
    let (mut daemon, lines) = spawn(&["run", "--config", cfg.to_str().expect("p")], &home, Some("ulimit -f 6144"));
    let sim = std::process::Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args([
            "simulate",
            "--endpoint",
            &format!("tcp://127.0.0.1:{port}"),
            "--size",
            "256",
            "--frames",
            "80",
            "--fps",
            "40",
            "--onset-frame",
            "40",
        ])
        .output()
        .expect("simulator");
    if !sim.status.success() {
        let _ = daemon.kill();
        let log: Vec<String> = lines.try_iter().collect();
        panic!("simulator: {}\ndaemon: {}", String::from_utf8_lossy(&sim.stderr), log.join("\n"));
    }
    let status = daemon.wait().expect("daemon exit");
    let log: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{status:?}: {}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("recording stopped")), "one clear log line: {}", log.join("\n"));
    // The line is written after the files are finished and says what became of them: no "closed
    // cleanly" for a file whose end record then failed.
    let stopped = log.iter().find(|l| l.contains("recording stopped")).expect("line");
    assert!(stopped.contains("1 session file(s) closed cleanly"), "{stopped}");
    assert!(!log.iter().any(|l| l.contains("end record could not be written")), "{}", log.join("\n"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("daemon_report.json")).expect("report")).expect("json");
    assert_eq!(report["recording"]["failed"], true, "{report}");
    assert_eq!(report["frames_received"], 80);
    assert_eq!(
        report["frames_analysed"].as_u64().expect("n") + report["frames_skipped"].as_u64().expect("n"),
        80,
        "monitoring went on"
    );
    let alarms = std::fs::read_to_string(out.join("alarms.jsonl")).expect("alarm log");
    assert!(alarms.lines().any(|l| l.contains("\"rule\":\"recording-stopped\"")), "{alarms}");
    // Recording stopped before the limit, so the file was closed cleanly and every frame in it reads.
    let path = session_in(&out.join("sessions"));
    assert!(std::fs::metadata(&path).expect("size").len() <= 6144 * 512);
    let mut r = SessionReader::open(&path, false).unwrap_or_else(|e| panic!("partial session opens: {e}"));
    let n = r.info().frames;
    assert!(n > 0 && n < 80, "{n} frames recorded");
    assert!(r.info().notes.iter().any(|s| s.contains("stopped before the series ended")), "{:?}", r.info().notes);
    assert!(!r.info().notes.iter().any(|s| s.contains("did not end cleanly")), "{:?}", r.info().notes);
    for i in 0..n {
        let f = r.read(i).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!((f.frame.width(), f.frame.height()), (256, 256));
    }
}

#[test]
fn replay_publish_drives_a_live_daemon_that_records_the_same_frames() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A source file: a TIFF stack of simulated frames.
    let series = beamwatch::simulate::series::Series::new(SeriesSpec::with_onset(96, 8, 3));
    let tif = tmp.path().join("stack.tif");
    let mut pages = Vec::new();
    {
        let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(&tif).expect("create")).expect("tiff");
        for i in 0..8 {
            let (px, _) = series.frame(i);
            enc.write_image::<tiff::encoder::colortype::Gray16>(96, 96, &px).expect("page");
            pages.push(px);
        }
    }
    let port = free_port();
    let (out, cfg) = (tmp.path().join("out"), tmp.path().join("run.toml"));
    write_config(&cfg, port, &out, "max_series = 1\n", "");
    let home = tmp.path().join("home");
    let (mut daemon, lines) = spawn(&["run", "--config", cfg.to_str().expect("p")], &home, None);
    let publish = std::process::Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args([
            "replay",
            tif.to_str().expect("p"),
            "--publish",
            &format!("tcp://127.0.0.1:{port}"),
            "--format",
            "dectris-v2",
            "--encoding",
            "bslz4",
            "--fps",
            "40",
            "-q",
        ])
        .output()
        .expect("replay --publish");
    if !publish.status.success() {
        let _ = daemon.kill();
        let log: Vec<String> = lines.try_iter().collect();
        panic!("publish: {}\ndaemon: {}", String::from_utf8_lossy(&publish.stderr), log.join("\n"));
    }
    let status = daemon.wait().expect("daemon exit");
    let log: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{}", log.join("\n"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("daemon_report.json")).expect("report")).expect("json");
    assert_eq!(report["frames_received"], 8, "{report}");
    let mut r = SessionReader::open(&session_in(&out.join("sessions")), false).expect("live session");
    assert_eq!(r.info().frames, 8);
    for (i, page) in pages.iter().enumerate() {
        let f = r.read(i).expect("frame");
        let want: Vec<f32> = page.iter().map(|&v| f32::from(v)).collect();
        assert_eq!(f.frame.pixels(), &want[..], "frame {i} arrived as it was in the file");
    }
}
