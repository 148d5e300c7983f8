//! Hostile input, as an attacker would send it: files whose headers claim more than they hold,
//! frames with absurd pixel values, series ids that are no file names, slow alarm commands. Each
//! test writes the attack itself (files in a temporary folder, traffic on 127.0.0.1) and asserts
//! that it ends in a clear error or a counted refusal, within a small memory bound — never an
//! abort, never a hang.

mod common;
#[path = "common/largest_alloc.rs"]
mod largest_alloc;

use std::path::Path;

use beamwatch::decode::WireFormat;
use beamwatch::frame::PixelType;
use beamwatch::record::readers::open;
use beamwatch::record::session::{SessionMeta, SessionReader, SessionWriter};
use beamwatch::record::{FrameSource, OpenOptions};

// ---------------------------------------------------------------------------------------------

/// Resident memory of this process (`VmRSS`), MiB.
fn rss_mib() -> f64 {
    beamwatch::telemetry::rss_mib().expect("VmRSS")
}

/// Runs `attack` on this thread and returns its result, asserting that no single block over
/// `max_block` bytes was allocated and resident memory grew by less than 64 MiB.
fn bounded<T>(what: &str, max_block: usize, attack: impl FnOnce() -> T) -> T {
    largest_alloc::reset();
    let before = rss_mib();
    let out = attack();
    let largest = largest_alloc::largest();
    let grew = rss_mib() - before;
    assert!(largest <= max_block, "{what}: allocated a block of {largest} bytes (bound {max_block})");
    assert!(grew < 64.0, "{what}: resident memory grew by {grew:.0} MiB");
    out
}

fn read_error(what: &str, path: &Path) -> String {
    let e = bounded(what, 8 << 20, || match open(path, &OpenOptions::default()) {
        Ok(mut src) => {
            // Opening may succeed for a file whose claims only show when frames are read.
            let n = src.info().frames;
            match (0..n.min(4)).try_for_each(|i| src.read(i).map(|_| ())) {
                Ok(()) => panic!("{what}: {} opened and read ({n} frames) but should not", path.display()),
                Err(e) => e.to_string(),
            }
        }
        Err(e) => e.to_string(),
    });
    assert!(!e.contains('\n'), "{what}: not one line: {e}");
    assert!(e.contains(&path.display().to_string()), "{what}: does not name the file: {e}");
    e
}

// ---------------------------------------------------------------------------------------------
// Row 4 of the issue: files whose index claims 2³⁴ rows; a Berkeley EMD claiming 2³⁰ frames.

fn small_session(path: &Path) {
    let meta = SessionMeta {
        series: "s".into(),
        source: "test".into(),
        format: WireFormat::Beamwatch,
        width: 8,
        height: 8,
        dtype: PixelType::U16,
        patch_px: 8,
        grid_rows: 1,
        grid_cols: 1,
        frames_every: 1,
        deflate: 0,
        provenance_json: "{}".into(),
        fourd: None,
    };
    let mut w = SessionWriter::create(path, meta).expect("session");
    w.frame(0, &beamwatch::record::session::Pixels::U16(vec![7; 64])).expect("frame");
    w.finish(None).expect("finish");
}

#[test]
fn a_session_index_claiming_2_34_rows_is_refused_without_allocating_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    for column in ["frame_index", "received/index", "received/dose_e_per_a2"] {
        let path = tmp.path().join(format!("{}.h5", column.replace('/', "_")));
        small_session(&path);
        assert!(SessionReader::open(&path, false).is_ok(), "the untouched session opens");
        {
            let f = hdf5::File::open_rw(&path).expect("rw");
            f.dataset(column).expect(column).resize(1usize << 34).expect("resize");
        }
        let e = bounded(column, 8 << 20, || match SessionReader::open(&path, false) {
            Ok(r) => r.analyses().map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        })
        .expect_err("refused");
        assert!(!e.contains('\n') && e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(column) && e.contains("17179869184") && e.contains("refused"), "{e}");
    }
}

#[test]
fn a_berkeley_emd_claiming_2_30_frames_is_refused_at_open() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("claims.emd");
    {
        let f = hdf5::File::create(&path).expect("create");
        f.new_attr::<i64>().create("version_major").and_then(|a| a.write_scalar(&0i64)).expect("attr");
        let g = f.create_group("data").and_then(|d| d.create_group("series")).expect("group");
        g.new_attr::<i64>().create("emd_group_type").and_then(|a| a.write_scalar(&1i64)).expect("attr");
        // Chunked, resizable, one frame written, then extended to 2³⁰ frames: the file stays small.
        let ds = g.new_dataset::<u16>().chunk((1, 4, 4)).shape((1.., 4, 4)).create("data").expect("data");
        ds.write(&ndarray::Array3::<u16>::from_elem((1, 4, 4), 3)).expect("write");
        ds.resize((1usize << 30, 4, 4)).expect("resize");
    }
    assert!(std::fs::metadata(&path).expect("meta").len() < 1 << 20);
    let e = read_error("EMD 2^30 frames", &path);
    assert!(e.contains("/data/series/data") && e.contains("refused"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Row 5: a small deflate TIFF of 120 large pages; a PNG header claiming 16384² 16-bit pixels.

fn write_zero_tiff(path: &Path, pages: usize, side: u32) {
    use tiff::encoder::{Compression, DeflateLevel, TiffEncoder, colortype::Gray8};
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut enc = TiffEncoder::new(file).expect("tiff").with_compression(Compression::Deflate(DeflateLevel::Fast));
    let zeros = vec![0u8; (side * side) as usize];
    for _ in 0..pages {
        enc.write_image::<Gray8>(side, side, &zeros).expect("page");
    }
}

#[test]
fn a_small_deflate_tiff_of_120_large_pages_is_read_one_page_at_a_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("stack.tif");
    write_zero_tiff(&path, 120, 2048);
    let len = std::fs::metadata(&path).expect("meta").len();
    assert!(len < 4 << 20, "the attack file is small: {len} bytes");
    // Replay's reader: every page read, one page (4 MiB of u8, 16 MiB as f32) in memory at a time.
    let frames = bounded("TIFF stack via replay", 20 << 20, || {
        let mut src = open(&path, &OpenOptions::default()).expect("open");
        assert_eq!(src.info().frames, 120);
        (0..120).map(|i| src.read(i).expect("page").frame.pixels()[0]).filter(|&v| v == 0.0).count()
    });
    assert_eq!(frames, 120);
    // The readers that hold a whole file: refused from the page headers, before decoding.
    let e = bounded("TIFF stack whole", 8 << 20, || beamwatch::imagefile::read_frames(&path, false))
        .expect_err("120 pages of 2048² are more than is held at once");
    assert!(e.to_string().contains("120 pages hold 503316480 pixels"), "{e}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend(data);
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
}

#[test]
fn a_png_claiming_16384_squared_16_bit_pixels_is_refused_before_decoding() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("huge.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(16384u32.to_be_bytes());
    ihdr.extend(16384u32.to_be_bytes());
    ihdr.extend([16, 0, 0, 0, 0]); // 16-bit gray, deflate, adaptive filters, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    // A zlib stream of a few rows of zeros: the rest would have to be decoded to find it missing.
    png_chunk(&mut png, b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x04, 0xff, 0xfb, 0, 0, 0, 0, 0, 0, 0, 1]);
    png_chunk(&mut png, b"IEND", &[]);
    std::fs::write(&path, &png).expect("write");
    let e = read_error("PNG 16384² 16-bit", &path);
    assert!(e.contains("limit"), "{e}");
    let e = bounded("PNG whole", 8 << 20, || beamwatch::imagefile::read_frames(&path, false)).expect_err("refused");
    assert!(e.to_string().contains("limit"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Row 10: a 1.5 KB bitshuffle-LZ4 blob whose header claims 1 GiB.

#[test]
fn a_small_bitshuffle_lz4_blob_claiming_a_gigabyte_allocates_nothing_large() {
    use beamwatch::decode::bslz4::{decode_bslz4, decode_lz4_any, decode_lz4_framed};
    let claimed = 1usize << 30;
    let mut blob = (claimed as u64).to_be_bytes().to_vec();
    blob.extend(8192u32.to_be_bytes());
    // Blocks of 8192 bytes each claimed by 4 compressed bytes, 200 of them: 1.6 KB.
    for _ in 0..200 {
        blob.extend(4u32.to_be_bytes());
        blob.extend([0x1f, 0, 0, 0]);
    }
    assert!(blob.len() < 2048);
    let e = bounded("bslz4", 1 << 20, || decode_bslz4(&blob, 2, claimed)).expect_err("refused");
    assert!(e.to_string().contains("cannot decode"), "{e}");
    let e = bounded("lz4 framed", 1 << 20, || decode_lz4_framed(&blob, claimed)).expect_err("refused");
    assert!(e.to_string().contains("cannot decode"), "{e}");
    let e = bounded("lz4 bare", 1 << 20, || decode_lz4_any(&blob[12..], claimed)).expect_err("refused");
    assert!(e.to_string().contains("cannot decode"), "{e}");
    // A blob with every block present but the last missing: refused before allocating too.
    let mut short = (claimed as u64).to_be_bytes().to_vec();
    short.extend((1u32 << 20).to_be_bytes());
    short.extend(8000u32.to_be_bytes());
    short.extend(vec![0u8; 8000]);
    let e = bounded("bslz4 short", 1 << 20, || decode_bslz4(&short, 2, claimed)).expect_err("refused");
    assert!(e.to_string().contains("block 1: truncated"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Row 9: frames with finite pixels of ±3.4e38 (and ones far beyond the reference's range) are
// bad frames, counted, never NaN metrics; good frames after them are analysed.

mod live {

    use tokio_util::sync::CancellationToken;
    use zeromq::Socket;

    use beamwatch::alarms::sinks::SinkConfig;
    use beamwatch::config::{Config, IngestConfig, Mode, PipelineConfig};
    use beamwatch::damage::Metric;
    use beamwatch::decode::{DoseHeader, SeriesInfo, WireFormat};
    use beamwatch::frame::PixelType;

    pub fn config(out: &std::path::Path, endpoint: String) -> Config {
        let mut cfg = Config::default();
        cfg.analysis.metric = Some(Metric::Ssim);
        cfg.ingest =
            IngestConfig { endpoint, mode: Mode::Connect, format: WireFormat::Auto, ..IngestConfig::default() };
        cfg.pipeline = PipelineConfig {
            out_dir: out.to_path_buf(),
            max_series: 1,
            status_interval_s: 0.0,
            skip_to_newest: false,
            queue_frames: 64,
            ..PipelineConfig::default()
        };
        cfg.sinks = SinkConfig { pub_endpoint: Some("tcp://127.0.0.1:0".into()), ..SinkConfig::default() };
        cfg
    }

    pub async fn sender() -> (zeromq::PushSocket, String) {
        let mut s = zeromq::PushSocket::new();
        let ep = s.bind("tcp://127.0.0.1:0").await.expect("bind").to_string();
        (s, ep)
    }

    pub use super::common::push_parts as send;

    pub fn lattice(w: usize, h: usize) -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                1000.0 + 600.0 * (x * 0.6).sin() * (y * 0.5).cos()
            })
            .collect()
    }

    pub fn info(series: &str, w: usize, h: usize, dtype: PixelType) -> SeriesInfo {
        SeriesInfo {
            series: series.into(),
            format: WireFormat::Beamwatch,
            frames_expected: None,
            shape: Some((h, w)),
            dtype: Some(dtype),
            frame_time_s: None,
            dose: DoseHeader { beam_current_pa: Some(10.0), dwell_time_us: Some(1.0), pixel_size_a: Some(1.0) },
            scan_hint: None,
        }
    }

    pub fn stop_token() -> CancellationToken {
        CancellationToken::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_absurd_finite_pixels_are_counted_bad_frames_never_nan_metrics() {
    use beamwatch::decode::{DecodeErrorKind, own};
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut tx, ep) = live::sender().await;
    let cfg = live::config(tmp.path(), ep);
    let rules = cfg.validate(Path::new("test")).expect("valid");
    let d = tokio::spawn(beamwatch::daemon::run(cfg, rules, live::stop_token(), None));
    let (w, h) = (64, 48);
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let frame = |i: u64, px: &[f32]| own::encode_frame("s1", i, h, w, PixelType::F32, f32_bytes(px), None, None);
    let good = live::lattice(w, h);
    live::send(&mut tx, own::encode_start(&live::info("s1", w, h, PixelType::F32))).await;
    live::send(&mut tx, frame(0, &good)).await;
    // ±3.4e38: finite, and the overflow of any difference taken of them.
    let mut huge = good.clone();
    huge[5] = 3.4e38;
    huge[6] = -3.4e38;
    live::send(&mut tx, frame(1, &huge)).await;
    // 10¹¹: within the pixel limit but 10⁸ times the reference's range once scaled.
    let bright: Vec<f32> = good.iter().map(|v| v * 1e8).collect();
    live::send(&mut tx, frame(2, &bright)).await;
    for i in 3..6 {
        live::send(&mut tx, frame(i, &good)).await;
    }
    live::send(&mut tx, own::encode_end("s1")).await;
    let report = tokio::time::timeout(std::time::Duration::from_secs(30), d)
        .await
        .expect("daemon finished")
        .expect("task")
        .expect("run");
    assert_eq!(report.decode_errors.get(&DecodeErrorKind::Pixels), Some(&1), "{:?}", report.decode_errors);
    assert_eq!(report.pipeline.analysis_errors, 1, "the frame far beyond the reference's range");
    assert_eq!(report.pipeline.frames_analysed, 4, "the reference and the three good frames after the bad ones");
    let series = report.pipeline.series.first().expect("series");
    let file = tmp.path().join(&series.summary_file);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let summary: serde_json::Value = serde_json::from_str(&text).expect("summary json");
    let mean = summary["last_summary"]["mean_dissimilarity"].as_f64().expect("a mean dissimilarity");
    assert!(mean.is_finite() && mean.abs() < 1e-3, "the good frames match the reference: {mean}");
}

// ---------------------------------------------------------------------------------------------
// Row 7: series ids are data. A 300-character id records (a bounded, collision-free file name);
// a series whose file cannot be created is alarmed once and the next series records again; each
// series keeps its summary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_whose_file_cannot_be_made_costs_that_series_only() {
    use beamwatch::decode::own;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let sessions = out.join("sessions");
    std::fs::create_dir_all(&out).expect("out");
    // The sessions folder cannot be made while a plain file holds its name.
    std::fs::write(&sessions, b"in the way").expect("block");
    let (mut tx, ep) = live::sender().await;
    let mut cfg = live::config(&out, ep);
    cfg.pipeline.max_series = 2;
    let rules = cfg.validate(Path::new("test")).expect("valid");
    let d = tokio::spawn(beamwatch::daemon::run(cfg, rules, live::stop_token(), None));
    let (w, h) = (64, 48);
    let px: Vec<u8> = live::lattice(w, h).iter().flat_map(|v| (*v as u16).to_le_bytes()).collect();
    // Two ids of 300 characters that differ only in their last one, with a slash in them.
    let first = format!("{}/a", "x".repeat(298));
    let second = format!("{}/b", "x".repeat(298));
    for (k, id) in [&first, &second].into_iter().enumerate() {
        live::send(&mut tx, own::encode_start(&live::info(id, w, h, PixelType::U16))).await;
        for i in 0..3 {
            live::send(&mut tx, own::encode_frame(id, i, h, w, PixelType::U16, px.clone(), None, None)).await;
        }
        live::send(&mut tx, own::encode_end(id)).await;
        if k == 0 {
            // Wait for the alarm of the first series, then clear the way for the second.
            let log = out.join("alarms.jsonl");
            let mut seen = false;
            for _ in 0..500 {
                if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("series-not-recorded")) {
                    seen = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(seen, "the first series' failure is alarmed");
            std::fs::remove_file(&sessions).expect("unblock");
        }
    }
    let report = tokio::time::timeout(std::time::Duration::from_secs(30), d)
        .await
        .expect("daemon finished")
        .expect("task")
        .expect("run");
    let rec = report.pipeline.recording.as_ref().expect("recording");
    assert!(!rec.failed, "recording did not stop for good: {rec:?}");
    assert_eq!(rec.series_not_recorded, 1, "{rec:?}");
    assert_eq!(rec.files.len(), 1, "the second series is recorded: {rec:?}");
    let name = rec.files[0].file_name().expect("name").to_string_lossy().into_owned();
    assert!(name.len() < 255, "{name}");
    let r = SessionReader::open(&rec.files[0], false).expect("the second series' file opens");
    assert_eq!(r.info().series, second);
    assert_eq!(r.info().frames, 3);
    // One alarm for the first series, none for the second; both series have their summary.
    let alarms = std::fs::read_to_string(out.join("alarms.jsonl")).expect("alarm log");
    assert_eq!(alarms.lines().filter(|l| l.contains("series-not-recorded")).count(), 1, "{alarms}");
    assert_eq!(report.pipeline.series.len(), 2);
    let files: Vec<&str> = report.pipeline.series.iter().map(|s| s.summary_file.as_str()).collect();
    assert_ne!(files[0], files[1]);
    for f in files {
        let p = out.join(f);
        let p = if p.exists() { p } else { std::path::PathBuf::from(f) };
        assert!(p.exists(), "summary {f}");
    }
}

// ---------------------------------------------------------------------------------------------
// Row 6: an alarm with a 100 kB series id and a slow `command` sink. The timeout covers the whole
// call (a command that never reads its stdin used to block the write before the timeout began);
// a slow command delays neither the next alarm nor its command; commands beyond the queue are
// dropped and counted.

use common::test_alarm as alarm;

/// Waits (up to 20 s) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_alarm_command_is_bounded_by_its_timeout_and_delays_no_other_alarm() {
    use beamwatch::alarms::sinks::{COMMAND_QUEUE, COMMANDS_AT_ONCE, SinkConfig, Sinks};
    use std::sync::atomic::Ordering::Relaxed;
    let tmp = tempfile::tempdir().expect("tmp");
    let stop = live::stop_token();
    let huge_id = "s".repeat(100_000);

    // A command that never reads its 100 kB stdin: killed at its 0.3 s timeout.
    let cfg = SinkConfig {
        pub_endpoint: None,
        log: None,
        command: Some(vec!["sleep".into(), "60".into()]),
        command_timeout_s: 0.3,
    };
    let (sinks, _task) = Sinks::start(&cfg, tmp.path().join("a.jsonl"), stop.clone()).await.expect("sinks");
    sinks.alarm(alarm("hangs", huge_id.clone()));
    assert!(eventually(|| sinks.stats.commands_failed.load(Relaxed) == 1).await, "killed at its timeout");

    // A command slow for one alarm only: the next alarm's command runs meanwhile.
    let got = tmp.path().join("got");
    let script = format!("if grep -q slow-one; then sleep 60; else echo ran >> '{}'; fi", got.display());
    let cfg = SinkConfig { command: Some(vec!["sh".into(), "-c".into(), script]), command_timeout_s: 60.0, ..cfg };
    let (sinks, _task) = Sinks::start(&cfg, tmp.path().join("b.jsonl"), stop.clone()).await.expect("sinks");
    sinks.alarm(alarm("slow-one", huge_id.clone()));
    sinks.alarm(alarm("next", "s".into()));
    assert!(eventually(|| got.exists()).await, "the next alarm's command ran while the slow one still runs");
    assert_eq!(sinks.stats.commands_ok.load(Relaxed), 1);
    assert_eq!(sinks.stats.commands_failed.load(Relaxed), 0, "the slow one is still running");

    // A flood of alarms at a command that takes a minute: every alarm is logged at once; the
    // commands beyond the running ones and the queue are dropped and counted.
    let cfg = SinkConfig { command: Some(vec!["sleep".into(), "60".into()]), command_timeout_s: 60.0, ..cfg };
    let log = tmp.path().join("c.jsonl");
    let (sinks, _task) = Sinks::start(&cfg, log.clone(), stop.clone()).await.expect("sinks");
    let n = 300;
    for i in 0..n {
        sinks.alarm(alarm(&format!("flood-{i}"), "s".into()));
        if i % 50 == 0 {
            sinks.flush().await;
        }
    }
    sinks.flush().await;
    let logged = std::fs::read_to_string(&log).expect("log").lines().count();
    assert_eq!(logged, n, "every alarm logged while the commands wait");
    let dropped = sinks.stats.commands_dropped.load(Relaxed) as usize;
    assert!(dropped >= n - COMMAND_QUEUE - COMMANDS_AT_ONCE - 1, "{dropped} commands dropped");
    assert!(dropped < n, "{dropped}");
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// Rows 1, 2 and 8: zero-length multipart parts, more peers than the cap. The guard cuts the first
// off at the part cap (empty parts count toward the message size too), refuses peers beyond the
// cap on arrival; both are counted, and an honest sender afterwards is analysed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_parts_and_a_crowd_of_idle_peers_are_refused_and_counted() {
    use beamwatch::decode::own;
    use beamwatch::ingest::accept::MAX_PEERS;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zeromq::Socket;
    let tmp = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let mut cfg = live::config(tmp.path(), format!("tcp://127.0.0.1:{port}"));
    cfg.ingest.mode = beamwatch::config::Mode::Bind;
    let rules = cfg.validate(Path::new("test")).expect("valid");
    let (rtx, rrx) = tokio::sync::oneshot::channel();
    let d = tokio::spawn(beamwatch::daemon::run(cfg, rules, live::stop_token(), Some(rtx)));
    rrx.await.expect("ready");
    let rss_before = rss_mib();

    // A peer sending a million empty parts (2 MB on the wire) in one message.
    let mut greeting = vec![0u8; 64];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    let mut evil = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    evil.write_all(&greeting).await.expect("greeting");
    let mut theirs = [0u8; 64];
    evil.read_exact(&mut theirs).await.expect("the socket answers the greeting");
    let empties = b"\x01\x00".repeat(1 << 20);
    let _ = evil.write_all(&empties).await; // the guard may close before it is all written
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), evil.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the guard closes the connection");

    // More idle peers than the cap: the ones beyond it are closed on arrival.
    let mut crowd = Vec::new();
    for _ in 0..MAX_PEERS + 8 {
        crowd.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    let mut refused = 0;
    for c in &mut crowd {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut b)).await {
            refused += 1;
        }
    }
    assert!(refused >= 8, "{refused} of the crowd were closed on arrival");
    drop(crowd);

    // An honest sender afterwards is served and analysed.
    let mut good = zeromq::PushSocket::new();
    let ep = format!("tcp://127.0.0.1:{port}");
    let mut connected = false;
    for _ in 0..100 {
        if good.connect(&ep).await.is_ok() {
            connected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(connected);
    let (w, h) = (64, 48);
    let px: Vec<u8> = live::lattice(w, h).iter().flat_map(|v| (*v as u16).to_le_bytes()).collect();
    live::send(&mut good, own::encode_start(&live::info("ok", w, h, PixelType::U16))).await;
    for i in 0..3 {
        live::send(&mut good, own::encode_frame("ok", i, h, w, PixelType::U16, px.clone(), None, None)).await;
    }
    live::send(&mut good, own::encode_end("ok")).await;
    let report = tokio::time::timeout(std::time::Duration::from_secs(30), d)
        .await
        .expect("daemon finished")
        .expect("task")
        .expect("run");
    assert_eq!(report.guard_rejected, 1, "the empty-parts peer");
    assert!(report.guard_peers_refused >= 8, "{}", report.guard_peers_refused);
    assert_eq!(report.pipeline.frames_analysed, 3);
    let grew = rss_mib() - rss_before;
    assert!(grew < 64.0, "resident memory grew by {grew:.0} MiB");
    let _ = good.close().await;
}

// ---------------------------------------------------------------------------------------------
// Rows 3 and 8, and the memory budget: the daemon runs as its own process (the built binary) with
// a small `[limits] memory_mib`, so its peak resident memory (`VmHWM`) can be held against the
// budget plus the documented fixed overhead. Attacks: frames whose analysis would not fit (LZ4
// blobs of half a megabyte claiming 8192² and 16384² pixels), six peers sending messages at the
// limit at once, twenty subscribers that never read.

mod budgeted {
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use beamwatch::budget::FIXED_OVERHEAD_MIB;

    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
    }

    /// A daemon process listening (bind mode) on `port`, results published on `pub_port`.
    pub struct Daemon {
        child: Child,
        pub out: PathBuf,
        pub memory_mib: f64,
        pub port: u16,
        pub pub_port: u16,
    }

    impl Daemon {
        /// `extra`: more TOML for the `[analysis]` and `[pipeline]` tables (their keys, one a line).
        pub fn start(dir: &Path, memory_mib: f64, analysis: &str, pipeline: &str) -> Self {
            let (port, pub_port) = (free_port(), free_port());
            let out = dir.join("out");
            let cfg = dir.join("daemon.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[limits]\nmemory_mib = {memory_mib}\n[analysis]\nmetric = \"ssim\"\n{analysis}\n\
                     [ingest]\nendpoint = \"tcp://127.0.0.1:{port}\"\nmode = \"bind\"\n\
                     [pipeline]\nout_dir = \"{}\"\nstatus_interval_s = 0\n{pipeline}\n\
                     [sinks]\npub_endpoint = \"tcp://127.0.0.1:{pub_port}\"\n[view]\nenabled = false\n",
                    out.display()
                ),
            )
            .expect("config");
            let home = dir.join("home");
            let child = Command::new(env!("CARGO_BIN_EXE_beamwatch"))
                .args(["run", "--config", cfg.to_str().expect("utf-8 path")])
                .env("HOME", &home)
                .env("XDG_DATA_HOME", home.join("data"))
                .env("TORCH_HOME", home.join("torch"))
                .env("BEAMWATCH_LOG", "beamwatch=info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the daemon");
            let d = Self { child, out, memory_mib, port, pub_port };
            // Listening once the results PUB socket accepts (it binds after the ingest socket).
            for _ in 0..600 {
                if std::net::TcpStream::connect(("127.0.0.1", pub_port)).is_ok() {
                    return d;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("the daemon did not start listening");
        }

        pub fn endpoint(&self) -> String {
            format!("tcp://127.0.0.1:{}", self.port)
        }

        fn status(&self, key: &str) -> f64 {
            let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
            let line = s.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in {s}"));
            let kb: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB");
            kb / 1024.0
        }

        /// Asserts the daemon is alive and its peak resident memory so far is within the budget
        /// plus the fixed overhead; returns the peak (MiB).
        pub fn assert_peak_within_budget(&mut self) -> f64 {
            assert!(self.child.try_wait().expect("wait").is_none(), "the daemon is alive");
            let peak = self.status("VmHWM:");
            let bound = self.memory_mib + FIXED_OVERHEAD_MIB;
            assert!(peak < bound, "peak resident memory {peak:.0} MiB, over {bound:.0} MiB");
            peak
        }

        /// Waits (up to 120 s) for the summary of `series`, i.e. its end was analysed.
        pub fn wait_for_series(&self, series: &str) -> serde_json::Value {
            for _ in 0..2400 {
                if let Ok(dir) = std::fs::read_dir(&self.out) {
                    for e in dir.filter_map(Result::ok) {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with("series_")
                            && name.ends_with(".json")
                            && let Ok(text) = std::fs::read_to_string(e.path())
                            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                            && v["series"] == series
                        {
                            return v;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("no summary of series {series}");
        }

        /// SIGTERM; the daemon's report.
        pub fn stop(mut self) -> serde_json::Value {
            let term = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
            assert!(term.success());
            let status = self.child.wait().expect("exit");
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            assert!(status.success(), "exit {status:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            let text = std::fs::read(self.out.join("daemon_report.json")).expect("daemon_report.json");
            serde_json::from_slice(&text).expect("report json")
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A good series of `n` 256×256 frames in the daemon's own format.
    pub async fn good_series(s: &mut zeromq::PushSocket, id: &str, n: u64) {
        use beamwatch::decode::own;
        use beamwatch::frame::PixelType;
        let (w, h) = (256, 256);
        let px: Vec<u8> = super::live::lattice(w, h).iter().flat_map(|v| (*v as u16).to_le_bytes()).collect();
        super::live::send(s, own::encode_start(&super::live::info(id, w, h, PixelType::U16))).await;
        for i in 0..n {
            super::live::send(s, own::encode_frame(id, i, h, w, PixelType::U16, px.clone(), None, None)).await;
        }
        super::live::send(s, own::encode_end(id)).await;
    }

    pub async fn push_to(endpoint: &str) -> zeromq::PushSocket {
        use zeromq::Socket;
        let mut s = zeromq::PushSocket::new();
        for _ in 0..100 {
            if s.connect(endpoint).await.is_ok() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot connect to {endpoint}");
    }

    /// A ZMTP 3 greeting (NULL mechanism) and a READY command for `socket_type`.
    pub fn handshake(socket_type: &str) -> Vec<u8> {
        let mut g = vec![0u8; 64];
        g[0] = 0xff;
        g[9] = 0x7f;
        g[10] = 3;
        g[12..16].copy_from_slice(b"NULL");
        let mut body = b"\x05READY\x0bSocket-Type".to_vec();
        body.extend((socket_type.len() as u32).to_be_bytes());
        body.extend(socket_type.as_bytes());
        g.push(0x04);
        g.push(body.len() as u8);
        g.extend(body);
        g
    }
}

/// A DECTRIS stream-v1 image message claiming `side`² u16 pixels, its LZ4 blob the real
/// compression of that many zeros (1 MiB blocks; a few kB each on the wire).
fn lz4_zeros_image(series: u64, frame: u64, side: usize) -> Vec<Vec<u8>> {
    use beamwatch::decode::bslz4::encode_lz4_framed;
    let block = 1usize << 20;
    let total = side * side * 2;
    let one = encode_lz4_framed(&vec![0u8; block], block);
    let mut blob = Vec::new();
    blob.extend((total as u64).to_be_bytes());
    blob.extend((block as u32).to_be_bytes());
    for _ in 0..total / block {
        blob.extend(&one[12..]);
    }
    let h = serde_json::json!({"htype": "dimage-1.0", "series": series, "frame": frame});
    let d = serde_json::json!({"htype": "dimage_d-1.0", "shape": [side, side], "type": "uint16",
        "encoding": "lz4<", "size": blob.len()});
    let c = serde_json::json!({"htype": "dconfig-1.0", "start_time": 0, "stop_time": 0, "real_time": 0});
    vec![h.to_string().into_bytes(), d.to_string().into_bytes(), blob, c.to_string().into_bytes()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_frames_whose_analysis_would_not_fit_the_budget_are_refused_and_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut d = budgeted::Daemon::start(tmp.path(), 256.0, "", "skip_to_newest = false\nqueue_frames = 16");
    let mut tx = budgeted::push_to(&d.endpoint()).await;
    // 16384²: over the fixed limit. 8192² and 2048²: within it, but their analysis (80 B/px)
    // would take 5 GiB and 320 MiB of a 256 MiB budget.
    let claims = [(16384, 4), (8192, 6), (2048, 6)];
    let mut wire = 0;
    for (k, &(side, n)) in claims.iter().enumerate() {
        for i in 0..n {
            let m = lz4_zeros_image(k as u64 + 1, i, side);
            wire = wire.max(m[2].len());
            live::send(&mut tx, m).await;
        }
    }
    assert!(wire < 4 << 20, "the largest blob is {wire} bytes on the wire");
    // 1024² frames fit (80 MiB each): at most three wait at once; the rest are passed over.
    {
        use beamwatch::decode::own;
        let px: Vec<u8> = (0..1024 * 1024).flat_map(|i: u32| ((i * 7 % 4001) as u16).to_le_bytes()).collect();
        live::send(&mut tx, own::encode_start(&live::info("mid", 1024, 1024, PixelType::U16))).await;
        for i in 0..12 {
            live::send(&mut tx, own::encode_frame("mid", i, 1024, 1024, PixelType::U16, px.clone(), None, None)).await;
        }
        live::send(&mut tx, own::encode_end("mid")).await;
    }
    // Once those are worked off, a good series is analysed whole.
    d.wait_for_series("mid");
    budgeted::good_series(&mut tx, "after", 4).await;
    let summary = d.wait_for_series("after");
    let peak = d.assert_peak_within_budget();
    let report = d.stop();
    assert_eq!(report["decode_errors"]["shape"], 4, "{report:#}");
    assert_eq!(report["decode_errors"]["over_budget"], 12, "{report:#}");
    assert_eq!(report["budget_refused"]["frame_size"], 12, "{report:#}");
    assert_eq!(report["memory_budget_mib"], 256.0);
    let held = report["budget_peak_mib"].as_f64().expect("peak");
    assert!(held <= 256.0 && held >= 80.0, "the budget held {held} MiB at most");
    // Every 1024² frame is accounted for: analysed or passed over (queue or budget).
    let mid = report["series"].as_array().expect("series").iter().find(|s| s["series"] == "mid").expect("mid");
    let (analysed, skipped) = (mid["frames_analysed"].as_u64().expect("n"), mid["frames_skipped"].as_u64().expect("n"));
    assert_eq!(analysed + skipped, 12, "{mid}");
    assert_eq!(summary["frames_analysed"], 4, "the good series afterwards: {summary}");
    eprintln!("peak RSS {peak:.0} MiB; budget held at most {held} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_peers_sending_messages_at_the_limit_at_once_get_two_places_and_the_rest_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().expect("tmp");
    let mut d = budgeted::Daemon::start(tmp.path(), 256.0, "", "skip_to_newest = false\nqueue_frames = 16");
    // 256 MiB: one message in flight may take 32 MiB, all of them together 64 MiB.
    let body = (32usize << 20) - 1024;
    let half = vec![0x5au8; body / 2];
    let mut peers = Vec::new();
    for _ in 0..6 {
        let mut p = tokio::net::TcpStream::connect(("127.0.0.1", d.port)).await.expect("connect");
        p.write_all(&budgeted::handshake("PUSH")).await.expect("handshake");
        let mut greeting = [0u8; 64];
        p.read_exact(&mut greeting).await.expect("the socket's greeting");
        // One part of `body` bytes (LONG frame), half of it sent now.
        let mut head = vec![0x02u8];
        head.extend((body as u64).to_be_bytes());
        p.write_all(&head).await.expect("header");
        let _ = p.write_all(&half).await; // a refused peer may be closed before it is all written
        peers.push(p);
    }
    // The guard cuts off the peers whose message does not fit (the socket's READY may come first).
    let mut open = Vec::new();
    let mut cut = 0;
    for mut p in peers {
        let mut b = vec![0u8; 4096];
        let mut closed = false;
        loop {
            match tokio::time::timeout(Duration::from_millis(500), p.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
        if closed {
            cut += 1;
        } else {
            open.push(p);
        }
    }
    assert_eq!(cut, 4, "two messages at the limit fit the ingest share, the other four peers are cut off");
    let peak_during = d.assert_peak_within_budget();
    for mut p in open {
        p.write_all(&half[..body - body / 2]).await.expect("the rest");
        p.flush().await.expect("flush");
    }
    let mut tx = budgeted::push_to(&d.endpoint()).await;
    budgeted::good_series(&mut tx, "after", 3).await;
    assert_eq!(d.wait_for_series("after")["frames_analysed"], 3);
    let peak = d.assert_peak_within_budget();
    let report = d.stop();
    assert_eq!(report["guard_rejected"], 4, "{report:#}");
    assert_eq!(report["budget_refused"]["ingest"], 4, "{report:#}");
    assert_eq!(report["decode_errors"]["format"], 2, "the two whole messages, garbage: {report:#}");
    eprintln!("peak RSS {peak_during:.0} MiB with the peers, {peak:.0} MiB at the end");
}

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_subscribers_that_never_read_cost_a_bounded_share_and_their_drops_are_reported() {
    use beamwatch::decode::own;
    use beamwatch::ingest::bounded_pub::MAX_SUBSCRIBERS;
    use tokio::io::AsyncWriteExt;
    use zeromq::{Socket, SocketRecv};
    let tmp = tempfile::tempdir().expect("tmp");
    let mut d = budgeted::Daemon::start(tmp.path(), 128.0, "patch_px = 8", "skip_to_newest = false");
    // One subscriber that reads (it paces the sender), then twenty that never read.
    let mut reader = zeromq::SubSocket::new();
    reader.connect(&format!("tcp://127.0.0.1:{}", d.pub_port)).await.expect("reader");
    reader.subscribe("beamwatch.frame").await.expect("subscribe");
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock.connect(([127, 0, 0, 1], d.pub_port).into()).await.expect("connect");
        let mut hello = budgeted::handshake("SUB");
        hello.extend([0x00, 0x01, 0x01]); // a ZMTP 3.0 subscription to everything
        let _ = s.write_all(&hello).await;
        stalled.push(s);
    }
    let mut tx = budgeted::push_to(&d.endpoint()).await;
    let (w, h) = (1024, 512);
    let px: Vec<u8> = live::lattice(w, h).iter().flat_map(|v| (*v as u16).to_le_bytes()).collect();
    live::send(&mut tx, own::encode_start(&live::info("subs", w, h, PixelType::U16))).await;
    let frames = 200u64;
    let mut results = 0u64;
    for i in 0..frames {
        live::send(&mut tx, own::encode_frame("subs", i, h, w, PixelType::U16, px.clone(), None, None)).await;
        // One frame at a time: wait for its result (the reader still gets every result).
        if i > 0 {
            let m =
                tokio::time::timeout(Duration::from_secs(60), reader.recv()).await.expect("a result").expect("recv");
            assert!(m.get(0).is_some_and(|t| t.as_ref() == b"beamwatch.frame"));
            results += 1;
        }
    }
    live::send(&mut tx, own::encode_end("subs")).await;
    d.wait_for_series("subs");
    let peak = d.assert_peak_within_budget();
    // The ones over the cap were closed on arrival; the others are still connected, unread.
    let mut closed = 0;
    for s in &mut stalled {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), s.peek(&mut b)).await {
            closed += 1;
        }
    }
    assert!(closed >= 20 - (MAX_SUBSCRIBERS - 1), "{closed} closed");
    let report = d.stop();
    assert_eq!(results, frames - 1);
    let dropped = report["results_dropped_slow_subscribers"].as_u64().expect("dropped count");
    assert!(dropped > 0, "the stalled subscribers' results are dropped and counted: {report:#}");
    assert!(report["budget_peak_mib"].as_f64().expect("peak") <= 128.0);
    eprintln!("peak RSS {peak:.0} MiB; {dropped} results dropped for stalled subscribers");
    drop(stalled);
}
