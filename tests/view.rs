//! The live view, end to end: a real daemon fed by the simulator over ZeroMQ, its page's state and
//! event stream over HTTP, a client that never reads, the access token for a non-local bind, and
//! the page itself in headless Chromium (driven through chromedriver) — live, and for a recorded
//! session through `beamwatch view`. Screenshots go to `$CARGO_TARGET_TMPDIR/view-*.png`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// A child process killed when dropped (a failing test leaves nothing running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_beamwatch"));
    c.env("BEAMWATCH_LOG", "beamwatch=info").env_remove("BEAMWATCH_WEIGHTS");
    c
}

/// Reads a child's stderr on a thread; returns the first `http://…/` address it logs, and a handle
/// to everything it logged.
fn watch_log(child: &mut Child) -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
    let err = child.stderr.take().expect("stderr piped");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if !sent && let Some(i) = line.find("http://") {
                let url: String = line[i..].chars().take_while(|c| !c.is_whitespace() && *c != '\u{1b}').collect();
                let _ = tx.send(url);
                sent = true;
            }
            if let Ok(mut l) = l.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no view address logged: {}", log.lock().map(|l| l.clone()).unwrap_or_default()));
    (url, log)
}

/// host:port of an `http://host:port/…` address.
fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().expect("host").to_string()
}

/// One HTTP/1.0 GET (the server closes the connection after the body): (status, body).
fn get(hostport: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n{extra}\r\n").expect("request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("response");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// An event-stream reader on its own thread: (name, JSON) of every event until the stream ends.
fn subscribe(hostport: &str) -> mpsc::Receiver<(String, Value)> {
    let s = TcpStream::connect(hostport).expect("connect");
    let (tx, rx) = mpsc::channel();
    let hostport = hostport.to_string();
    std::thread::spawn(move || common::read_events(s, &hostport, tx));
    rx
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// `beamwatch run` (PSNR, view on a free loopback port, recording into `out`) connected to a
/// simulator that sends `frames` frames of `size` px at `fps`, damage from `onset`.
struct Live {
    daemon: Proc,
    sim: Option<Proc>,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    port: u16,
}

fn start_daemon(dir: &Path) -> Live {
    start_daemon_with(dir, "[analysis]\nmetric = \"psnr\"\n", "")
}

/// The daemon with `analysis` as its `[analysis]` table and `alarms` appended.
fn start_daemon_with(dir: &Path, analysis: &str, alarms: &str) -> Live {
    let port = free_port();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "{analysis}[ingest]\nendpoint = \"tcp://127.0.0.1:{port}\"\n[pipeline]\nout_dir = \"{}\"\n\
             status_interval_s = 0\n[sinks]\npub_endpoint = \"tcp://127.0.0.1:0\"\n[view]\nbind = \"127.0.0.1:0\"\n\
             event_buffer = 256\n{alarms}",
            dir.join("out").display()
        ),
    )
    .expect("config");
    let mut child = bin()
        .args(["run", "--config", cfg.to_str().expect("p")])
        .env("HOME", dir.join("home"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let (url, log) = watch_log(&mut child);
    Live { daemon: Proc(child), sim: None, url, log, port }
}

impl Live {
    fn simulate(&mut self, size: usize, frames: usize, onset: usize, fps: f64) {
        self.simulate_series(size, frames, onset, fps, 1);
    }

    fn simulate_series(&mut self, size: usize, frames: usize, onset: usize, fps: f64, series: usize) {
        let sim = bin()
            .args(["simulate", "--endpoint", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--series", &series.to_string()])
            .args(["--size", &size.to_string(), "--frames", &frames.to_string()])
            .args(["--onset-frame", &onset.to_string(), "--fps", &fps.to_string(), "--wait-s", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start simulator");
        self.sim = Some(Proc(sim));
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let pid = self.daemon.0.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(st)) = self.daemon.0.try_wait() {
                assert!(st.success(), "daemon exit {st:?}: {}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not stop on SIGTERM: {}", self.log());
    }
}

fn series_summary(dir: &Path) -> Value {
    let out = dir.join("out");
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(&out).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("series_")))
        });
        if let Some(p) = found
            && let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(&p).expect("read"))
        {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no series summary in {}", out.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn state_and_events_carry_every_frame_and_alarm_and_a_late_client_catches_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut live = start_daemon(tmp.path());
    let hp = host_port(&live.url);
    let early = subscribe(&hp);
    // A client that connects and never reads a byte.
    let mut stalled = TcpStream::connect(&hp).expect("connect");
    write!(stalled, "GET /api/events HTTP/1.1\r\nHost: {hp}\r\n\r\n").expect("request");
    live.simulate(160, 24, 8, 12.0);
    let summary = series_summary(tmp.path());
    // Everything the first client saw, up to the series' end.
    let mut frames = Vec::new();
    let mut alarms = Vec::new();
    let mut ended = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ended && Instant::now() < deadline {
        match early.recv_timeout(Duration::from_secs(5)) {
            Ok((name, v)) => match name.as_str() {
                "frame" => frames.push(v["point"]["frame"].as_u64().expect("frame number")),
                "alarm" => alarms.push((v["rule"].as_str().expect("rule").to_string(), v["frame"].as_u64())),
                "series_end" => ended = true,
                _ => {}
            },
            Err(_) => continue,
        }
    }
    assert!(ended, "no series_end event; frames seen {frames:?}; log: {}", live.log());
    let timeline: Vec<u64> =
        summary["timeline"].as_array().expect("timeline").iter().map(|p| p["frame"].as_u64().expect("f")).collect();
    assert!(!timeline.is_empty());
    assert_eq!(frames, timeline, "every analysed frame, in order, as the series summary has them");
    let summary_alarms: Vec<(String, Option<u64>)> = summary["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|a| (a["rule"].as_str().expect("rule").to_string(), a["frame"].as_u64()))
        .collect();
    assert!(!summary_alarms.is_empty(), "the simulated damage raised no alarm: {summary}");
    assert_eq!(alarms, summary_alarms);

    // A late client gets the current state at once, over both doors.
    let (code, body) = get(&hp, "/api/state", &[]);
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).expect("state json");
    let cur = &st["current"];
    let late_frames: Vec<u64> =
        cur["timeline"].as_array().expect("timeline").iter().map(|p| p["frame"].as_u64().expect("f")).collect();
    assert_eq!(late_frames, timeline);
    assert_eq!(cur["alarms"].as_array().expect("alarms").len(), summary_alarms.len());
    assert_eq!(cur["ended"]["frames_analysed"], summary["frames_analysed"]);
    // The counters follow within a second or two.
    let started = Instant::now();
    loop {
        let st: Value = serde_json::from_str(&get(&hp, "/api/state", &[]).1).expect("state json");
        if st["status"]["frames_received"] == summary["frames_received"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "status {} vs summary {}", st["status"], summary);
        std::thread::sleep(Duration::from_millis(200));
    }
    let late = subscribe(&hp);
    let (name, first) = late.recv_timeout(Duration::from_secs(10)).expect("first event");
    assert_eq!(name, "state");
    assert_eq!(first["current"]["timeline"].as_array().map(Vec::len), Some(timeline.len()));
    // The frame picture is served once made.
    let (code, png) = get(&hp, "/api/image/0", &[]);
    assert_eq!(code, 200, "{png}");
    // Read-only: nothing but GET; no file access.
    let (code, _) = get(&hp, "/api/../../etc/passwd", &[]);
    assert_eq!(code, 404);
    // The stalled client is still connected and the daemon still answers.
    assert_eq!(get(&hp, "/api/state", &[]).0, 200);
    drop(stalled);
    live.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_costs_bounded_memory() {
    use beamwatch::frame::Frame;
    use beamwatch::patches::PatchGrid;
    use beamwatch::view::{FrameUpdate, Hub, HubMeta, ViewConfig};
    let cfg = ViewConfig { bind: "127.0.0.1:0".into(), event_buffer: 8, ..ViewConfig::default() };
    let hub = Hub::new(HubMeta::default(), cfg.event_buffer);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = beamwatch::view::serve(hub.clone(), &cfg, stop.clone()).await.expect("serve");
    let hp = server.addr.to_string();
    // The stalled client: never a read (the kernel's socket buffers, some 10 MB on loopback, fill
    // long before the flood below ends).
    let stalled = TcpStream::connect(&hp).expect("connect");
    (&stalled).write_all(format!("GET /api/events HTTP/1.1\r\nHost: {hp}\r\n\r\n").as_bytes()).expect("request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grid = PatchGrid::new(1020, 1020, 20).expect("grid");
    let frame = Frame::from_f32(1020, 1020, (0..1020 * 1020).map(|i| (i % 977) as f32).collect()).expect("frame");
    let status = vec![0u8; grid.len()];
    let rss0 = rss_kib(std::process::id());
    // ≈ 2601 patch values per event, 3000 events: some 100 MB of events the client never takes.
    let mut values = vec![0.0f32; grid.len()];
    for f in 0..3000u64 {
        for (p, v) in values.iter_mut().enumerate() {
            *v = ((p as u64 * 7919 + f * 104_729) % 10_000) as f32 / 10_000.0;
        }
        hub.frame(FrameUpdate {
            series: "flood",
            frame: f,
            dose: None,
            cumulative_e_per_a2: Some(f as f64 * 10.0),
            summary: None,
            mean: Some(0.1),
            area: Some(0.0),
            above: Some(0.0),
            shift: None,
            grid,
            dissimilarity: &values,
            status: &status,
            thresholds: Some(vec![0.5; grid.len()]),
            image: (f % 50 == 0).then_some(&frame),
            pixel_size_a: Some(0.5),
        });
        if f % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(std::process::id());
    // A reader that comes now is served at once with the newest frame.
    let hp2 = hp.clone();
    let (name, st) = tokio::task::spawn_blocking(move || subscribe(&hp2).recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("state");
    assert_eq!(name, "state");
    assert_eq!(st["current"]["latest"]["frame"], json!(2999));
    // The stalled client now reads: it is sent the whole state again (the stale events are gone),
    // not 100 MB of history.
    let resynced = tokio::task::spawn_blocking(move || {
        let mut stalled = stalled;
        stalled.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let (mut seen, mut states, mut buf) = (0usize, 0usize, vec![0u8; 1 << 16]);
        let mut eof = false;
        let mut tail: Vec<u8> = Vec::new();
        let started = Instant::now();
        while states < 2 && started.elapsed() < Duration::from_secs(20) {
            match stalled.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    seen += n;
                    tail.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&tail).into_owned();
                    states += text.matches("event: state").count();
                    // Keep a little for a marker split across reads.
                    let keep = tail.len().min(16);
                    tail.drain(..tail.len() - keep);
                }
                Err(_) => continue,
            }
        }
        (states, seen, eof)
    })
    .await
    .expect("join");
    assert!(resynced.0 >= 2, "the stalled client got no fresh state: {resynced:?}");
    assert!(resynced.1 < 30 << 20, "the stalled client was sent {} bytes of stale events", resynced.1);
    let status: Value = serde_json::from_str(&hub.state_json()).expect("json");
    assert!(status["status"]["client_resyncs"].as_u64().unwrap_or(0) >= 1, "{}", status["status"]);
    let grown_mib = (rss1 as f64 - rss0 as f64) / 1024.0;
    assert!(grown_mib < 48.0, "RSS grew {grown_mib:.1} MiB with a client that never reads ({rss0} → {rss1} KiB)");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_beyond_loopback_needs_the_token() {
    use beamwatch::view::{Hub, HubMeta, ViewConfig};
    let hub = Hub::new(HubMeta::default(), 16);
    let stop = tokio_util::sync::CancellationToken::new();
    // Loopback: no token.
    let local = ViewConfig { bind: "127.0.0.1:0".into(), ..ViewConfig::default() };
    let s = beamwatch::view::serve(hub.clone(), &local, stop.clone()).await.expect("serve");
    assert!(s.token.is_none());
    let hp = s.addr.to_string();
    assert_eq!(tokio::task::spawn_blocking(move || get(&hp, "/api/state", &[]).0).await.expect("join"), 200);
    s.stop().await;
    // Every address: a token, made up when the config has none; refused without it.
    let open = ViewConfig { bind: "0.0.0.0:0".into(), ..ViewConfig::default() };
    let s = beamwatch::view::serve(hub.clone(), &open, stop.clone()).await.expect("serve");
    let token = s.token.clone().expect("a token for a non-local bind");
    assert!(token.len() >= 32 && s.url.contains(&format!("?token={token}")), "{}", s.url);
    let hp = format!("127.0.0.1:{}", s.addr.port());
    let checks = tokio::task::spawn_blocking(move || {
        let without = [get(&hp, "/", &[]).0, get(&hp, "/api/state", &[]).0, get(&hp, "/api/events", &[]).0];
        let wrong = get(&hp, "/api/state?token=0123456789abcdef0123456789abcdef", &[]).0;
        let query = get(&hp, &format!("/api/state?token={token}"), &[]).0;
        let bearer = get(&hp, "/api/state", &[&format!("Authorization: Bearer {token}")]).0;
        let cookie = get(&hp, "/assets/view.js", &[&format!("Cookie: bw_token={token}")]).0;
        (without, wrong, query, bearer, cookie)
    })
    .await
    .expect("join");
    assert_eq!(checks.0, [401, 401, 401], "refused without the token");
    assert_eq!(checks.1, 401, "refused with a wrong token");
    assert_eq!((checks.2, checks.3, checks.4), (200, 200, 200), "accepted with it (query, header, cookie)");
    s.stop().await;
    // A token from the config is used as it is.
    let given =
        ViewConfig { bind: "0.0.0.0:0".into(), token: Some("lab-pc-7-token-abcdef".into()), ..ViewConfig::default() };
    let s = beamwatch::view::serve(hub, &given, stop).await.expect("serve");
    assert_eq!(s.token.as_deref(), Some("lab-pc-7-token-abcdef"));
    s.stop().await;
}

// ---- the page in a real browser ---------------------------------------------------------------

/// chromedriver and a headless Chromium session, closed when dropped.
struct Browser {
    _driver: Proc,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn http_json(method: &str, url: &str, body: Option<Value>) -> Value {
    let text = match (method, body) {
        ("POST", Some(b)) => ureq::post(url)
            .header("Content-Type", "application/json")
            .send(b.to_string())
            .and_then(|mut r| r.body_mut().read_to_string()),
        ("DELETE", _) => ureq::delete(url).call().and_then(|mut r| r.body_mut().read_to_string()),
        _ => ureq::get(url).call().and_then(|mut r| r.body_mut().read_to_string()),
    };
    let text = text.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
}

impl Browser {
    fn start() -> Self {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromedriver is needed for the browser tests: run ./tools/setup.sh (Debian's chromium-driver)");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile");
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Chromium is needed for the browser tests: run ./tools/setup.sh");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,1500",
                     format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let v = http_json("POST", &format!("{base}/session"), Some(caps));
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Browser { _driver: Proc(child), base, session, _profile: profile }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/session/{}/{tail}", self.base, self.session)
    }

    fn open(&self, url: &str) {
        http_json("POST", &self.url("url"), Some(json!({"url": url})));
    }

    fn eval(&self, script: &str) -> Value {
        http_json("POST", &self.url("execute/sync"), Some(json!({"script": script, "args": []})))["value"].clone()
    }

    /// Polls `script` until it returns true.
    fn wait_for(&self, script: &str, timeout: Duration, what: &str) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.eval(script) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: not within {timeout:?}; page counters {}", self.eval("return window.bw"));
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let v = http_json("GET", &self.url("screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD.decode(v["value"].as_str().expect("png")).expect("base64");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Pixels of canvas `selector` that differ from `bg` (r, g, b).
    fn painted(&self, selector: &str, bg: [u8; 3]) -> u64 {
        let script = format!(
            "const c = document.querySelector('{selector}'); if (!c) return -1; \
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
             for (let i = 0; i < d.length; i += 4) {{ if (d[i+3] > 0 && (d[i] !== {} || d[i+1] !== {} || d[i+2] !== {})) n++; }} \
             return n;",
            bg[0], bg[1], bg[2]
        );
        self.eval(&script).as_i64().unwrap_or(-1).max(0) as u64
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
    }
}

#[test]
fn the_page_shows_the_alarm_the_curve_and_the_overlay_live_and_recorded() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut live = start_daemon(tmp.path());
    let browser = Browser::start();
    browser.open(&live.url);
    browser.wait_for("return !!(window.bw && window.bw.connected)", Duration::from_secs(20), "page connected");
    live.simulate(200, 30, 10, 6.0);
    browser.wait_for("return window.bw.alarms >= 1", Duration::from_secs(90), "first damage alarm shown");
    let banner = browser.eval("const b = document.getElementById('banner'); return b.hidden ? '' : b.textContent;");
    assert!(banner.as_str().is_some_and(|t| t.contains("damage-onset") || t.contains("damage-spreading")), "{banner}");
    browser.wait_for(
        "return window.bw.curvePoints >= 3 && window.bw.overlayPatches > 0",
        Duration::from_secs(30),
        "curve and overlay drawn",
    );
    // Drawn means painted: the overlay canvas holds more than its dark background, the curve
    // canvas more than white.
    std::thread::sleep(Duration::from_millis(400));
    let overlay = browser.painted("#frame", [0x22, 0x22, 0x22]);
    assert!(overlay > 10_000, "overlay canvas painted pixels: {overlay}");
    let curve = browser.painted("#curve canvas", [255, 255, 255]);
    assert!(curve > 500, "curve canvas painted pixels: {curve}");
    let rows = browser.eval("return document.querySelectorAll('#alarms tbody tr').length");
    assert!(rows.as_u64().unwrap_or(0) >= 1, "alarm list rows: {rows}");
    let shot = browser.screenshot("view-live.png");
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);
    // Let the series end, then look at it again as a recorded session.
    let summary = series_summary(tmp.path());
    live.stop();
    let sessions = tmp.path().join("out").join("sessions");
    let mut view = bin()
        .args(["view", sessions.to_str().expect("p"), "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("beamwatch view");
    let out = view.stdout.take().expect("stdout");
    let view = Proc(view);
    let line = BufReader::new(out).lines().map_while(Result::ok).find(|l| l.contains("http://")).expect("view address");
    let url: String = line[line.find("http://").expect("url")..].split_whitespace().next().expect("url").to_string();
    browser.open(&url);
    let analysed = summary["timeline"].as_array().map_or(0, Vec::len);
    let alarms = summary["alarms"].as_array().map_or(0, Vec::len);
    browser.wait_for(
        &format!("return window.bw.curvePoints === {analysed} && window.bw.imageFrame !== null && window.bw.overlayPatches > 0"),
        Duration::from_secs(30),
        "recorded session drawn",
    );
    let shown = browser.eval("return document.querySelectorAll('#alarms tbody tr').length");
    assert_eq!(shown.as_u64(), Some(alarms as u64), "every recorded alarm listed");
    assert!(browser.painted("#dosemap", [0x22, 0x22, 0x22]) > 10_000);
    browser.screenshot("view-recorded.png");
    drop(view);
}

// ---- benchmark ---------------------------------------------------------------------------------

fn percentiles(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("p50 {:.1} ms, p99 {:.1} ms ({} samples)", at(0.5), at(0.99), v.len())
}

/// Every alarm reaches the page, with 1 and 10 clients watching — and, printed as a benchmark
/// (no timing is asserted), how long it takes: alarm handed to the view → shown in the page (the
/// page's own clock at the moment its banner changes), and the analysis time per frame with 10
/// clients against none. ResNet-18 (synthetic weights) on 256² frames, series of 6 frames at
/// 8 frames/s, an alarm on every series' first compared frame. CI runs 8 series per trial; the
/// README's figures are from `BEAMWATCH_VIEW_BENCH_SERIES=30 cargo test --release --test view
/// every_alarm -- --nocapture`.
#[test]
fn every_alarm_reaches_the_page_with_1_and_10_clients() {
    let n_series: usize =
        std::env::var("BEAMWATCH_VIEW_BENCH_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(8).max(1);
    let weights = common::synthetic_weights();
    let analysis = format!("[analysis]\nmetric = \"resnet18\"\nweights = \"{}\"\n", weights.display());
    let alarm = "[[alarms]]\nname = \"bench\"\nlevel = \"warning\"\nwhen = \"mean_dissimilarity\"\nabove = 1e-6\n";
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .unwrap_or_default();
    println!("{cpu}; {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    for clients in [0usize, 1, 10] {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut live = start_daemon_with(tmp.path(), &analysis, alarm);
        let hp = host_port(&live.url);
        let browser = (clients >= 1).then(|| {
            let b = Browser::start();
            b.open(&live.url);
            b.wait_for("return !!(window.bw && window.bw.connected)", Duration::from_secs(20), "page connected");
            b
        });
        let raw: Vec<_> = (1..clients.max(1)).map(|_| subscribe(&hp)).collect();
        live.simulate_series(256, 6, 3, 8.0, n_series);
        let started = Instant::now();
        while live.log().matches("ended:").count() < n_series && started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut page: Vec<f64> = browser
            .as_ref()
            .map(|b| b.eval("return window.bw.alarmLatencyMs"))
            .and_then(|v| v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()))
            .unwrap_or_default();
        // The other clients read every event as it comes (their threads), like browsers.
        drop(raw);
        let out = tmp.path().join("out");
        drop(browser);
        live.stop();
        let report: Value =
            serde_json::from_slice(&std::fs::read(out.join("daemon_report.json")).expect("report")).expect("json");
        let a = &report["analysis_ms"];
        println!(
            "{clients:>2} clients: analysis per frame p50 {:.1} ms p99 {:.1} ms; {} frames analysed, {} skipped; \
             alarm handed to the view → shown in the page: {}; frame received → alarm on the PUB socket: p50 {:.1} ms",
            a["p50"].as_f64().unwrap_or(f64::NAN),
            a["p99"].as_f64().unwrap_or(f64::NAN),
            report["frames_analysed"],
            report["frames_skipped"],
            percentiles(&mut page),
            report["alarm_latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        );
        let raised = report["alarms"].as_u64().expect("alarms");
        assert!(raised >= n_series as u64, "an alarm on every series: {raised} of {n_series}");
        if clients >= 1 {
            assert_eq!(page.len() as u64, raised, "every alarm shown in the page ({clients} clients)");
        }
    }
}
