//! `beamwatch watch`: files copied into a folder one by one — one of them written slowly, with a
//! pause longer than the settle time half-way — give the same analysis as a replay of the same
//! files, and every file is read once, whole.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beamwatch::record::session::SessionReader;
use beamwatch::simulate::series::{Series, SeriesSpec};
use common::{beamwatch, stderr};

fn tiff_bytes(px: &[u16], n: usize) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut enc = tiff::encoder::TiffEncoder::new(&mut buf).expect("tiff");
    enc.write_image::<tiff::encoder::colortype::Gray16>(n as u32, n as u32, px).expect("page");
    buf.into_inner()
}

fn session_in(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .expect("sessions")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "h5"))
        .unwrap_or_else(|| panic!("no session in {}", dir.display()))
}

#[test]
fn files_copied_into_a_folder_give_the_same_analysis_as_a_replay() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (n, frames) = (128usize, 10usize);
    let series = Series::new(SeriesSpec::with_onset(n, frames, 4));
    let files: Vec<(String, Vec<u8>)> =
        (0..frames).map(|i| (format!("frame_{i:03}.tif"), tiff_bytes(&series.frame(i).0, n))).collect();
    // The same files in a folder of their own, for the replay.
    let all = tmp.path().join("all");
    std::fs::create_dir(&all).expect("dir");
    for (name, bytes) in &files {
        std::fs::write(all.join(name), bytes).expect("write");
    }
    let cfg = tmp.path().join("watch.toml");
    std::fs::write(&cfg, "[sinks]\npub_endpoint = \"tcp://127.0.0.1:0\"\n[view]\nenabled = false\n").expect("config");
    let watched = tmp.path().join("export");
    std::fs::create_dir(&watched).expect("dir");
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["watch", watched.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "psnr"])
        .args([
            "--config",
            cfg.to_str().expect("p"),
            "--poll-s",
            "0.1",
            "--settle-s",
            "0.5",
            "--exit-after-idle-s",
            "4",
        ])
        .env("HOME", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("beamwatch watch");
    std::thread::sleep(Duration::from_millis(500));
    for (i, (name, bytes)) in files.iter().enumerate() {
        let path = watched.join(name);
        if i == 3 {
            // A slow writer: half the file, a pause longer than the settle time, the rest.
            let mut f = std::fs::File::create(&path).expect("create");
            f.write_all(&bytes[..bytes.len() / 2]).expect("half");
            f.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(1600));
            f.write_all(&bytes[bytes.len() / 2..]).expect("rest");
        } else {
            std::fs::write(&path, bytes).expect("copy");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("watch did not stop after its idle time");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().expect("output");
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(status.success(), "{log}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("watch_report.json")).expect("report")).expect("json");
    assert_eq!(report["files_read"], frames, "{report}");
    assert_eq!(report["files_rejected"], 0, "{report}");
    assert_eq!(report["frames_handed"], frames, "{report}");
    assert_eq!(report["frames_received"], frames, "{report}");
    assert_eq!(report["series_started"], 1, "{report}");

    let replay_out = tmp.path().join("replay");
    let r = beamwatch(
        &["replay", all.to_str().expect("p"), "--out", replay_out.to_str().expect("p"), "--metric", "psnr"],
        tmp.path(),
    );
    assert!(r.status.success(), "{}", stderr(&r));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(replay_out.join("summary.json")).expect("summary")).expect("json");
    let replayed = SessionReader::open(Path::new(summary["outputs"]["session"].as_str().expect("session")), false)
        .expect("replay session");
    let watched_session = SessionReader::open(&session_in(&out.join("sessions")), false).expect("watch session");
    let (a, b) = (watched_session.analyses().expect("analyses"), replayed.analyses().expect("analyses"));
    assert_eq!(a.len(), frames - 1, "every frame after the reference compared");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.index, y.index);
        assert_eq!(x.status, y.status, "frame {}", x.index);
        let same = x.dissimilarity.iter().zip(&y.dissimilarity).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "frame {}: the watched analysis differs from the replay's", x.index);
    }
    let rules = |r: &SessionReader| -> Vec<(String, u64)> {
        r.alarms()
            .expect("alarms")
            .iter()
            .map(|j| serde_json::from_str::<serde_json::Value>(j).expect("alarm json"))
            .map(|v| (v["rule"].as_str().unwrap_or_default().to_string(), v["frame"].as_u64().unwrap_or(0)))
            .collect()
    };
    assert_eq!(rules(&watched_session), rules(&replayed), "the same alarms on the same frames");
}

#[test]
fn a_file_that_never_becomes_readable_is_rejected_and_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let watched = tmp.path().join("export");
    std::fs::create_dir(&watched).expect("dir");
    std::fs::write(watched.join("broken.tif"), b"II*\0garbage that is not a TIFF").expect("write");
    let cfg = tmp.path().join("watch.toml");
    std::fs::write(&cfg, "[sinks]\npub_endpoint = \"tcp://127.0.0.1:0\"\n[view]\nenabled = false\n").expect("config");
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["watch", watched.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "psnr"])
        .args(["--config", cfg.to_str().expect("p"), "--poll-s", "0.1", "--settle-s", "0.2", "--give-up-s", "1.5"])
        .args(["--exit-after-idle-s", "1"])
        .env("HOME", tmp.path())
        .output()
        .expect("watch");
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("watch_report.json")).expect("report")).expect("json");
    // Tried until the give-up time (it might have been a slow writer), then rejected and named.
    assert_eq!(report["files_read"], 0, "{report}");
    assert_eq!(report["files_rejected"], 1, "{report}");
    assert!(report["rejected"][0][0].as_str().is_some_and(|p| p.ends_with("broken.tif")), "{report}");
    assert_eq!(report["frames_received"], 0, "{report}");
}
