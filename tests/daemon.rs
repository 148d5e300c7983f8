//! The live daemon end to end over real ZeroMQ sockets on 127.0.0.1: the simulator (or a test's own
//! sender) on one side, the daemon on the other, alarms read back from the PUB socket and the log.

mod common;

use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use beamwatch::alarms::sinks::SinkConfig;
use beamwatch::config::{Config, IngestConfig, Mode, PipelineConfig};
use beamwatch::daemon::{self, DaemonReport};
use beamwatch::damage::Metric;
use beamwatch::decode::{DecodeErrorKind, DoseHeader, SeriesInfo, WireFormat, dectris_v1, own};
use beamwatch::frame::PixelType;
use beamwatch::simulate::publish::{self, PublishOptions, PublishReport};
use beamwatch::simulate::series::SeriesSpec;

fn config(out: &std::path::Path, endpoint: String, format: WireFormat) -> Config {
    let mut cfg = Config::default();
    cfg.analysis.metric = Some(Metric::Ssim);
    cfg.ingest = IngestConfig { endpoint, mode: Mode::Connect, format, ..IngestConfig::default() };
    cfg.pipeline = PipelineConfig {
        out_dir: out.to_path_buf(),
        max_series: 1,
        status_interval_s: 0.0,
        ..PipelineConfig::default()
    };
    cfg.sinks = SinkConfig { pub_endpoint: Some("tcp://127.0.0.1:0".into()), ..SinkConfig::default() };
    cfg
}

/// Runs the simulator and the daemon against each other; also subscribes to the alarm socket.
async fn simulate_and_watch(
    spec: SeriesSpec,
    popts: PublishOptions,
    mut cfg: Config,
) -> (DaemonReport, PublishReport, Vec<serde_json::Value>) {
    let stop = CancellationToken::new();
    let (btx, brx) = oneshot::channel();
    let sim = {
        let stop = stop.clone();
        tokio::spawn(async move { publish::publish(&spec, &popts, stop, Some(btx)).await })
    };
    cfg.ingest.endpoint = brx.await.expect("simulator endpoint");
    let rules = cfg.validate(std::path::Path::new("test")).expect("valid config");
    let (rtx, rrx) = oneshot::channel();
    let d = tokio::spawn(daemon::run(cfg, rules, stop, Some(rtx)));
    let alarm_ep = rrx.await.expect("daemon ready");
    let mut sub = zeromq::SubSocket::new();
    sub.connect(&alarm_ep).await.expect("connect alarm PUB");
    sub.subscribe("beamwatch.alarm").await.expect("subscribe");
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
            if let Some(body) = m.get(1)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
            {
                got.push(v);
            }
        }
        got
    });
    let report = d.await.expect("daemon task").expect("daemon run");
    let published = sim.await.expect("simulator task").expect("simulator run");
    let alarms = collector.await.expect("collector");
    (report, published, alarms)
}

fn damage_alarm_frames(report: &DaemonReport) -> Vec<u64> {
    report
        .pipeline
        .series
        .iter()
        .flat_map(|s| s.alarms.iter().filter(|a| a.rule.starts_with("damage-")).map(|a| a.frame))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_wire_format_end_to_end_alarm_follows_the_known_onset() {
    for (format, encoding) in
        [(WireFormat::Beamwatch, ""), (WireFormat::DectrisV1, "bs16-lz4<"), (WireFormat::DectrisV2, "bslz4")]
    {
        let tmp = tempfile::tempdir().expect("tmp");
        let spec = SeriesSpec::with_onset(160, 20, 8);
        let popts = PublishOptions {
            endpoint: "tcp://127.0.0.1:0".into(),
            mode: Mode::Bind,
            format,
            encoding: encoding.into(),
            fps: 25.0,
            ..PublishOptions::default()
        };
        // Stream v1/v2 carry no beam current or scan pixel size: the config states them. The
        // beamwatch format carries them in its series header; the config is left empty then.
        let mut cfg =
            config(tmp.path(), String::new(), if format == WireFormat::DectrisV1 { WireFormat::Auto } else { format });
        if format != WireFormat::Beamwatch {
            cfg.dose.beam_current_pa = Some(spec.beam_current_pa());
            cfg.dose.dwell_time_us = Some(spec.dwell_time_us);
            cfg.dose.pixel_size_a = Some(spec.pixel_size_a);
        }
        let per_frame = spec.dose_per_frame_e_per_a2();
        let (report, published, pub_alarms) = simulate_and_watch(spec, popts, cfg).await;
        let onset = published.onset_frame.expect("onset") as u64;
        let name = format.name();
        // Every frame accounted for.
        assert_eq!(report.pipeline.frames_received, published.frames_sent, "{name}");
        assert_eq!(
            report.pipeline.frames_analysed + report.pipeline.frames_skipped,
            published.frames_sent,
            "{name}: analysed + skipped = sent"
        );
        assert_eq!(report.decode_errors.values().sum::<u64>(), 0, "{name}");
        // The damage alarm fires within a few frames of the onset, and never before it.
        let frames = damage_alarm_frames(&report);
        assert!(!frames.is_empty(), "{name}: no damage alarm");
        assert!(frames.iter().all(|&f| f >= onset), "{name}: alarm before the onset {onset}: {frames:?}");
        let first = frames.iter().copied().min().unwrap_or(u64::MAX);
        assert!(first <= onset + 4, "{name}: first alarm at {first}, onset {onset}");
        // Dose: per frame from the header (beamwatch) or the config (DECTRIS), cumulative per frame.
        let s = &report.pipeline.series[0];
        let a = &s.alarms[0];
        let dose = a.cumulative_dose_e_per_a2.expect("dose known");
        assert!(
            (dose - (a.frame + 1) as f64 * per_frame).abs() < 1e-6 * dose,
            "{name}: dose {dose} at frame {}",
            a.frame
        );
        // The same alarms came out of the PUB socket and the log.
        let log = std::fs::read_to_string(tmp.path().join("alarms.jsonl")).expect("alarm log");
        let logged: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .filter(|v: &serde_json::Value| v["type"] == "alarm")
            .collect();
        assert_eq!(logged.len() as u64, report.pipeline.alarms, "{name}");
        assert_eq!(pub_alarms.len(), logged.len(), "{name}: PUB subscriber saw every alarm");
        assert_eq!(pub_alarms[0]["rule"], logged[0]["rule"]);
        assert!(logged[0]["worst_patches"].as_array().is_some_and(|w| !w.is_empty()));
        assert!(tmp.path().join("series_1.json").is_file(), "{name}");
        assert!(tmp.path().join("daemon_report.json").is_file(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_damage_no_alarm_despite_drift_and_noise() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = SeriesSpec::with_onset(160, 16, 1000);
    let popts = PublishOptions { endpoint: "tcp://127.0.0.1:0".into(), fps: 40.0, ..PublishOptions::default() };
    let (report, published, _) =
        simulate_and_watch(spec, popts, config(tmp.path(), String::new(), WireFormat::Beamwatch)).await;
    assert_eq!(published.onset_frame, None);
    assert_eq!(report.pipeline.frames_analysed + report.pipeline.frames_skipped, 16);
    assert_eq!(report.pipeline.alarms, 0, "{:?}", report.pipeline.series);
}

/// A sender under the test's control: PUSH bound on loopback.
async fn sender() -> (zeromq::PushSocket, String) {
    let mut s = zeromq::PushSocket::new();
    let ep = s.bind("tcp://127.0.0.1:0").await.expect("bind").to_string();
    (s, ep)
}

fn msg(parts: Vec<Vec<u8>>) -> ZmqMessage {
    let mut it = parts.into_iter();
    let mut m = ZmqMessage::from(it.next().expect("part"));
    for p in it {
        m.push_back(p.into());
    }
    m
}

use common::push_parts as send;

/// A ZMTP 3.0 greeting with the NULL mechanism, as a client sends it.
fn zmtp_greeting() -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    g
}

fn lattice(w: usize, h: usize, shift: f32) -> Vec<u8> {
    (0..w * h)
        .flat_map(|i| {
            let (x, y) = ((i % w) as f32 + shift, (i / w) as f32);
            ((1000.0 + 600.0 * (x * 0.6).sin() * (y * 0.5).cos()) as u16).to_le_bytes()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_and_skipped_and_later_frames_analysed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut tx, ep) = sender().await;
    let mut cfg = config(tmp.path(), ep, WireFormat::Auto);
    // Analyse every good frame, however fast they arrive.
    cfg.pipeline.skip_to_newest = false;
    cfg.pipeline.queue_frames = 64;
    let rules = cfg.validate(std::path::Path::new("test")).expect("valid");
    let stop = CancellationToken::new();
    let d = tokio::spawn(daemon::run(cfg, rules, stop, None));
    let (w, h) = (64, 48);
    let info = SeriesInfo {
        series: "s1".into(),
        format: WireFormat::Beamwatch,
        frames_expected: None,
        shape: Some((h, w)),
        dtype: Some(PixelType::U16),
        frame_time_s: None,
        dose: DoseHeader { beam_current_pa: Some(10.0), dwell_time_us: Some(1.0), pixel_size_a: Some(1.0) },
        scan_hint: None,
    };
    let frame = |i: u64, px: Vec<u8>, rows: usize, cols: usize| {
        own::encode_frame("s1", i, rows, cols, PixelType::U16, px, None, None)
    };
    send(&mut tx, own::encode_start(&info)).await;
    send(&mut tx, frame(0, lattice(w, h, 0.0), h, w)).await;
    send(&mut tx, frame(1, lattice(w, h, 0.0), h, w)).await;
    // 1 truncated multipart: a frame header without its pixels.
    send(&mut tx, vec![frame(2, lattice(w, h, 0.0), h, w).remove(0)]).await;
    // 2 wrong size: pixels cut short.
    let mut short = frame(3, lattice(w, h, 0.0), h, w);
    short[1].truncate(100);
    send(&mut tx, short).await;
    // 3 corrupt bitshuffle-LZ4 (DECTRIS v1 image whose blob is cut).
    let mut v1 =
        dectris_v1::encode_image(7, 0, h, w, PixelType::U16, &lattice(w, h, 0.0), "bs16-lz4<", 0).expect("encode");
    v1[0] = br#"{"htype":"dimage-1.0","series":7,"frame":0}"#.to_vec();
    let cut = v1[2].len() - 9;
    v1[2].truncate(cut);
    v1[1] = String::from_utf8_lossy(&v1[1])
        .replace(&format!("\"size\":{}", cut + 9), &format!("\"size\":{cut}"))
        .into_bytes();
    send(&mut tx, v1).await;
    // 4 bad JSON, 5 bad CBOR, 6 unknown dtype.
    send(&mut tx, vec![b"{\"htype\":\"beamwatch/frame/1\", oops".to_vec(), vec![0; 10]]).await;
    send(&mut tx, vec![vec![0xa2, 0x64, b't', b'y', b'p', b'e', 0xff]]).await;
    let mut f64px = frame(4, lattice(w, h, 0.0), h, w);
    f64px[0] = String::from_utf8_lossy(&f64px[0]).replace("\"u16\"", "\"f64\"").into_bytes();
    send(&mut tx, f64px).await;
    // 7 a 2 GiB claim: a header announcing a 46341 × 46341 frame.
    let mut huge = frame(5, lattice(w, h, 0.0), h, w);
    huge[0] = String::from_utf8_lossy(&huge[0]).replace("[48,64]", "[46341,46341]").into_bytes();
    send(&mut tx, huge).await;
    // 8 the frame shape changes mid-series (decodes fine, cannot be compared).
    send(&mut tx, frame(6, lattice(32, 32, 0.0), 32, 32)).await;
    // Later good frames, then the end.
    for i in 7..10 {
        send(&mut tx, frame(i, lattice(w, h, 0.0), h, w)).await;
    }
    send(&mut tx, own::encode_end("s1")).await;
    let report =
        tokio::time::timeout(Duration::from_secs(30), d).await.expect("daemon finished").expect("task").expect("run");
    let errors = &report.decode_errors;
    assert_eq!(errors.get(&DecodeErrorKind::Parts), Some(&1), "{errors:?}");
    assert_eq!(errors.get(&DecodeErrorKind::Size), Some(&1), "{errors:?}");
    assert_eq!(errors.get(&DecodeErrorKind::Compression), Some(&1), "{errors:?}");
    assert_eq!(errors.get(&DecodeErrorKind::Json), Some(&1), "{errors:?}");
    assert_eq!(errors.get(&DecodeErrorKind::Cbor), Some(&1), "{errors:?}");
    assert_eq!(errors.get(&DecodeErrorKind::Dtype), Some(&1), "{errors:?}");
    assert_eq!(errors.get(&DecodeErrorKind::Shape), Some(&1), "{errors:?}");
    assert_eq!(report.pipeline.analysis_errors, 1, "the shape change");
    // Frames 0, 1, 7, 8, 9 are analysed (0 is the reference), 6 is rejected; nothing was lost.
    assert_eq!(report.pipeline.frames_received, 6);
    assert_eq!(report.pipeline.frames_analysed, 5, "{report:?}");
    assert_eq!(report.pipeline.frames_skipped, 0);
    assert_eq!(report.messages, 15);
    assert_eq!(report.pipeline.series_ended, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_frame_length_is_stopped_at_the_guard() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config(tmp.path(), "tcp://127.0.0.1:0".into(), WireFormat::Auto);
    cfg.ingest.mode = Mode::Bind;
    // Find a free port for the daemon's public endpoint.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    cfg.ingest.endpoint = format!("tcp://127.0.0.1:{port}");
    let rules = cfg.validate(std::path::Path::new("test")).expect("valid");
    let stop = CancellationToken::new();
    let (rtx, rrx) = oneshot::channel();
    let d = tokio::spawn(daemon::run(cfg, rules, stop, Some(rtx)));
    rrx.await.expect("ready");
    // A hostile peer: a valid ZMTP greeting, then a frame header declaring 2^40 bytes.
    let mut evil = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    evil.write_all(&zmtp_greeting()).await.expect("greeting");
    let mut theirs = [0u8; 64];
    evil.read_exact(&mut theirs).await.expect("the socket answers the greeting");
    let mut forged = vec![0x02];
    forged.extend((1u64 << 40).to_be_bytes());
    evil.write_all(&forged).await.expect("forged header");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), evil.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the guard closes the connection");
    // An honest sender afterwards is served normally.
    let mut good = zeromq::PushSocket::new();
    good.connect(&format!("tcp://127.0.0.1:{port}")).await.expect("connect");
    let (w, h) = (64, 48);
    let info = SeriesInfo {
        series: "ok".into(),
        format: WireFormat::Beamwatch,
        frames_expected: None,
        shape: None,
        dtype: None,
        frame_time_s: None,
        dose: DoseHeader::default(),
        scan_hint: None,
    };
    good.send(msg(own::encode_start(&info))).await.expect("send");
    for i in 0..3 {
        good.send(msg(own::encode_frame("ok", i, h, w, PixelType::U16, lattice(w, h, 0.0), None, None)))
            .await
            .expect("send");
    }
    good.send(msg(own::encode_end("ok"))).await.expect("send");
    let report = tokio::time::timeout(Duration::from_secs(30), d).await.expect("finished").expect("task").expect("run");
    assert_eq!(report.guard_rejected, 1);
    assert_eq!(report.pipeline.frames_received, 3);
    assert_eq!(report.pipeline.frames_analysed + report.pipeline.frames_skipped, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_stream_the_analysis_skips_to_the_newest_frame_and_counts_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    // ResNet-18 (synthetic weights) on 320² frames takes tens of ms a frame on the CPU; 200 frames/s
    // outruns it.
    let spec = SeriesSpec::with_onset(320, 60, 30);
    let popts = PublishOptions { endpoint: "tcp://127.0.0.1:0".into(), fps: 200.0, ..PublishOptions::default() };
    let mut cfg = config(tmp.path(), String::new(), WireFormat::Beamwatch);
    cfg.analysis.metric = Some(Metric::Resnet18);
    cfg.analysis.weights = Some(common::synthetic_weights());
    // The CPU engine, whatever the machine has: a GPU could keep up with 200 frames/s.
    cfg.analysis.backend = beamwatch::engine::BackendChoice::Cpu;
    cfg.pipeline.republish = Some("tcp://127.0.0.1:0".into());
    let (report, published, _) = simulate_and_watch(spec, popts, cfg).await;
    assert_eq!(report.pipeline.frames_received, published.frames_sent);
    assert!(report.pipeline.frames_skipped > 0, "{report:?}");
    // Every frame is accounted for: analysed, skipped, or not comparable with a reason (a loaded
    // machine skips long runs of frames, and a frame after a long run can fail registration).
    let p = &report.pipeline;
    assert_eq!(
        p.frames_analysed + p.frames_skipped + p.frames_not_registered + p.frames_without_patches + p.analysis_errors,
        published.frames_sent,
        "analysed + skipped + not comparable = sent: {p:?}"
    );
    assert_eq!(report.republished, Some(published.messages_sent), "every message re-published");
}

#[test]
fn sigterm_stops_the_daemon_cleanly_with_logs_and_summaries_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[analysis]\nmetric = \"ssim\"\n[ingest]\nendpoint = \"tcp://127.0.0.1:{port}\"\n[pipeline]\nout_dir = \"{}\"\nstatus_interval_s = 0.5\n[sinks]\npub_endpoint = \"tcp://127.0.0.1:0\"\n",
            tmp.path().join("out").display()
        ),
    )
    .expect("config");
    let home = tmp.path().join("home");
    let daemon = std::process::Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args(["run", "--config", cfg.to_str().expect("p")])
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("TORCH_HOME", home.join("torch"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start daemon");
    // A long series at 20 frames/s; stop the daemon in the middle of it.
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_beamwatch"))
        .args([
            "simulate",
            "--endpoint",
            &format!("tcp://127.0.0.1:{port}"),
            "--size",
            "128",
            "--frames",
            "400",
            "--fps",
            "20",
            "--onset-frame",
            "5",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start simulator");
    std::thread::sleep(Duration::from_secs(3));
    let term = std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let out = daemon.wait_with_output().expect("daemon exit");
    let _ = sim.kill();
    let _ = sim.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.contains("SIGTERM: stopping"), "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/daemon_report.json")).expect("report"))
            .expect("json");
    let received = report["frames_received"].as_u64().expect("n");
    assert!(received > 10, "{report}");
    assert_eq!(
        report["frames_analysed"].as_u64().expect("n") + report["frames_skipped"].as_u64().expect("n"),
        received
    );
    // The open series was closed and summarised; its alarms are in the log.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/series_1.json")).expect("series")).expect("json");
    assert_eq!(summary["implicit_end"], true);
    let logged = std::fs::read_to_string(tmp.path().join("out/alarms.jsonl")).expect("log").lines().count() as u64;
    assert_eq!(logged, report["alarms_logged"].as_u64().expect("n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_detector_and_reconnects_after_it_vanishes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let mut cfg = config(tmp.path(), ep.clone(), WireFormat::Beamwatch);
    cfg.pipeline.max_series = 2;
    let rules = cfg.validate(std::path::Path::new("test")).expect("valid");
    let stop = CancellationToken::new();
    // The daemon starts first: nobody is listening yet.
    let d = tokio::spawn(daemon::run(cfg, rules, stop.clone(), None));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let spec = SeriesSpec::with_onset(96, 6, 1000);
    for first_id in [1, 2] {
        // Each simulator binds the port, sends one series and goes away.
        let popts =
            PublishOptions { endpoint: ep.clone(), fps: 30.0, first_series_id: first_id, ..PublishOptions::default() };
        let sent = publish::publish(&spec, &popts, stop.clone(), None).await.expect("publish");
        assert_eq!(sent.frames_sent, 6);
    }
    let report = tokio::time::timeout(Duration::from_secs(60), d).await.expect("finished").expect("task").expect("run");
    assert_eq!(report.pipeline.series_ended, 2, "{report:?}");
    assert_eq!(report.pipeline.frames_received, 12);
    assert!(report.reconnects >= 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_costs_at_most_its_buffer() {
    use beamwatch::ingest::bounded_pub::BoundedPub;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stop = CancellationToken::new();
    let p = BoundedPub::start(
        "tcp://127.0.0.1:0",
        4 << 20,
        beamwatch::budget::Budget::unlimited(),
        beamwatch::budget::Kind::Republish,
        stop,
    ).await.expect("bind");
    let addr = p.endpoint.trim_start_matches("tcp://").to_string();
    // A subscriber that shakes hands, subscribes to everything, and never reads again.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    stalled.write_all(&zmtp_greeting()).await.expect("greeting");
    let mut ready = b"\x05READY\x0bSocket-Type".to_vec();
    ready.extend(3u32.to_be_bytes());
    ready.extend(b"SUB");
    stalled.write_all(&[0x04, ready.len() as u8]).await.expect("ready");
    stalled.write_all(&ready).await.expect("ready");
    stalled.write_all(&[0x00, 0x01, 0x01]).await.expect("subscribe all");
    let mut theirs = [0u8; 64];
    stalled.read_exact(&mut theirs).await.expect("their greeting");
    // A normal subscriber alongside.
    let mut sub = zeromq::SubSocket::new();
    sub.connect(&p.endpoint).await.expect("connect");
    sub.subscribe("").await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payload = bytes::Bytes::from(vec![7u8; 1 << 20]);
    // The reading subscriber acknowledges each message and the next is sent only then, so it never
    // has more than one 1 MiB message in flight: within its 4 MiB buffer however slowly this
    // machine schedules it (sending freely made a loaded 2-core CI machine drop one of 100).
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reader = tokio::spawn(async move {
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
            if ack_tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut received = 0;
    for _ in 0..100 {
        assert!(p.send_waiting(vec![bytes::Bytes::from_static(b"t"), payload.clone()]).await);
        match tokio::time::timeout(Duration::from_secs(10), ack_rx.recv()).await {
            Ok(Some(())) => received += 1,
            _ => break,
        }
    }
    reader.abort();
    let dropped = p.stats.dropped_slow.load(Ordering::Relaxed);
    assert_eq!(received, 100, "the reading subscriber gets every message");
    assert!(dropped >= 80, "the stalled one's messages are dropped past its 4 MiB: {dropped}");
    drop(stalled);
}

fn test_alarm(rule: &str) -> Box<beamwatch::alarms::Alarm> {
    common::test_alarm(rule, "s".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alarm_command_gets_the_alarm_on_stdin_and_is_killed_after_its_timeout() {
    use beamwatch::alarms::sinks::Sinks;
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().expect("tmp");
    let got = tmp.path().join("got.jsonl");
    let stop = CancellationToken::new();
    let cfg = SinkConfig {
        pub_endpoint: None,
        log: None,
        command: Some(vec!["sh".into(), "-c".into(), format!("cat >> '{}'", got.display())]),
        command_timeout_s: 5.0,
    };
    let (sinks, _task) = Sinks::start(&cfg, tmp.path().join("alarms.jsonl"), stop.clone()).await.expect("sinks");
    sinks.alarm(test_alarm("blank-beam"));
    sinks.flush().await;
    for _ in 0..100 {
        if sinks.stats.commands_ok.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = std::fs::read_to_string(&got).expect("the command wrote its stdin");
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("alarm JSON on stdin");
    assert_eq!(v["rule"], "blank-beam");
    assert_eq!(v["cumulative_dose_e_per_a2"], 800.0);
    let logged = std::fs::read_to_string(tmp.path().join("alarms.jsonl")).expect("log");
    assert_eq!(logged.lines().count(), 1);
    // A command that hangs is killed at its timeout and counted as failed.
    let slow = SinkConfig { command: Some(vec!["sleep".into(), "30".into()]), command_timeout_s: 0.3, ..cfg };
    let (sinks, _task) = Sinks::start(&slow, tmp.path().join("slow.jsonl"), stop).await.expect("sinks");
    let t = std::time::Instant::now();
    sinks.alarm(test_alarm("hangs"));
    while sinks.stats.commands_failed.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sinks.stats.commands_failed.load(Ordering::Relaxed), 1);
    assert!(t.elapsed() < Duration::from_secs(5), "killed near its 0.3 s timeout, not after 30 s");
}
