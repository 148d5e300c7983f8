//! 4D-STEM end to end: diffraction patterns written here (a bright-field disk whose value encodes
//! the probe position, a diffuse ring and four Bragg spots fading at a known critical dose per
//! region of the scan) go over real ZeroMQ sockets in DECTRIS stream v1 and v2 into the daemon, or
//! into files (an ARINA-layout NeXus pair with bitshuffle-LZ4 chunks, an EMD 1.0 datacube) that
//! `replay` reads. The virtual images recorded in the HDF5 session must equal the same virtual
//! detectors computed here from the same patterns — exactly: the patterns are integers and hold
//! nothing near the detector edges, so no pixel-centre convention can change a sum.

mod common;

use std::ffi::{CString, c_uint};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdf5::types::VarLenUnicode;
use hdf5_sys::h5d::{H5Dclose, H5Dcreate2, H5Dwrite_chunk};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{H5P_DEFAULT, H5Pclose, H5Pcreate, H5Pset_chunk, H5Pset_filter};
use hdf5_sys::h5s::{H5Sclose, H5Screate_simple};
use hdf5_sys::h5z::H5Z_FLAG_OPTIONAL;
use ndarray::{Array4, ArrayD};
use tokio_util::sync::CancellationToken;
use zeromq::Socket;

use beamwatch::alarms::sinks::SinkConfig;
use beamwatch::config::{Config, IngestConfig, Mode, PipelineConfig};
use beamwatch::daemon::{self, DaemonReport};
use beamwatch::damage::Metric;
use beamwatch::decode::bslz4::{DEFAULT_BLOCK_BYTES, encode_bslz4};
use beamwatch::decode::{WireFormat, dectris_v1, dectris_v2};
use beamwatch::fourd::{DetectorKind, DetectorSpec, FourDConfig, ScanShape};
use beamwatch::frame::PixelType;
use beamwatch::record::h5sync;

use common::push_parts as send;

/// Pattern edge (px), pattern centre, scan shape, scans per series.
const PX: usize = 48;
const CENTRE: f64 = 24.0;
const ROWS: usize = 16;
const COLS: usize = 16;
const SCANS: usize = 6;
/// Dose per scan at every position (e⁻/Å²): 1 ms per pattern, a 1 Å step, and the current below.
const DOSE_PER_SCAN: f64 = 40.0;
const FRAME_TIME_S: f64 = 1e-3;
const STEP_A: f64 = 1.0;
/// Critical dose of the spots per region of the scan (2 × 2 regions, row-major).
const DC_TRUTH: [f64; 4] = [60.0, 100.0, 160.0, 250.0];
/// The virtual detectors the test configures (and computes itself).
const BF_RADIUS: f64 = 4.0;
const ADF_INNER: f64 = 9.0;
const ADF_OUTER: f64 = 16.0;

fn beam_current_pa() -> f64 {
    DOSE_PER_SCAN * 1.602_176_634e-19 * STEP_A * STEP_A / FRAME_TIME_S * 1e12
}

fn r_px(x: usize, y: usize) -> f64 {
    ((x as f64 - CENTRE).powi(2) + (y as f64 - CENTRE).powi(2)).sqrt()
}

/// The pattern of scan `k` at (`row`, `col`): u16 counts. The bright-field disk (r ≤ 2.5) carries
/// a value that encodes the position; the ring 10.5 ≤ r ≤ 13.5 a small diffuse background and four
/// 3 × 3 Bragg spots at r = 12 fading as exp(−D/Dc) of their region. Nothing lies within 1.5 px of
/// a detector edge (4, 9, 16).
fn pattern(k: usize, row: usize, col: usize) -> Vec<u16> {
    let dose = (k + 1) as f64 * DOSE_PER_SCAN;
    let region = (row * 2 / ROWS) * 2 + col * 2 / COLS;
    let spot = (300.0 * (-dose / DC_TRUTH[region]).exp()).round() as u16;
    // The direct beam outshines the spots, as in a real pattern (the beam is found as the brightest region).
    let bf = 2000 + 10 * ((row * 7 + col * 3 + k * 5) % 23) as u16;
    let spots = [(36usize, 24usize), (12, 24), (24, 36), (24, 12)];
    let mut p = vec![0u16; PX * PX];
    for y in 0..PX {
        for x in 0..PX {
            let r = r_px(x, y);
            let v = &mut p[y * PX + x];
            if r <= 2.5 {
                *v = bf;
            } else if (10.5..=13.5).contains(&r) {
                *v = 3 + ((x * 31 + y * 17 + row * 13 + col * 7 + k * 3) % 4) as u16;
                if spots.iter().any(|&(sx, sy)| sx.abs_diff(x) <= 1 && sy.abs_diff(y) <= 1) {
                    *v += spot;
                }
            }
        }
    }
    p
}

/// The virtual detectors computed here: (bf, adf, sum) of a pattern.
fn virtual_of(p: &[u16]) -> (f32, f32, f32) {
    let (mut bf, mut adf, mut sum) = (0f64, 0f64, 0f64);
    for y in 0..PX {
        for x in 0..PX {
            let (v, r) = (p[y * PX + x] as f64, r_px(x, y));
            if r <= BF_RADIUS {
                bf += v;
            }
            if (ADF_INNER..ADF_OUTER).contains(&r) {
                adf += v;
            }
            sum += v;
        }
    }
    (bf as f32, adf as f32, sum as f32)
}

fn le(p: &[u16]) -> Vec<u8> {
    p.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn fourd_config() -> FourDConfig {
    let d = |name: &str, kind| DetectorSpec { name: name.into(), kind };
    FourDConfig {
        enabled: true,
        detectors: vec![
            d("bf", DetectorKind::Disk { radius_px: Some(BF_RADIUS), radius_mrad: None }),
            d(
                "adf",
                DetectorKind::Annulus {
                    inner_px: Some(ADF_INNER),
                    outer_px: Some(ADF_OUTER),
                    inner_mrad: None,
                    outer_mrad: None,
                },
            ),
            d("sum", DetectorKind::Sum),
        ],
        analyse: "adf".into(),
        centre_px: Some((CENTRE, CENTRE)),
        regions_rows: 2,
        regions_cols: 2,
        ..FourDConfig::default()
    }
}

fn config(out: &Path, endpoint: String) -> Config {
    let mut cfg = Config::default();
    cfg.analysis.metric = Some(Metric::Ssim);
    cfg.analysis.patch_px = 8;
    cfg.ingest = IngestConfig { endpoint, mode: Mode::Connect, ..IngestConfig::default() };
    cfg.pipeline = PipelineConfig {
        out_dir: out.to_path_buf(),
        max_series: 1,
        status_interval_s: 0.0,
        ..PipelineConfig::default()
    };
    cfg.sinks = SinkConfig { pub_endpoint: None, ..SinkConfig::default() };
    cfg.dose.beam_current_pa = Some(beam_current_pa());
    cfg.dose.pixel_size_a = Some(STEP_A);
    cfg.fourd = fourd_config();
    cfg
}

/// Stream v1 header with a header appendix carrying the scan shape inside `"beamwatch"`.
fn v1_header(series: u64, images: u64, shape: Option<ScanShape>) -> Vec<Vec<u8>> {
    let mut h = dectris_v1::encode_header(series, PX, PX, PixelType::U16, images, FRAME_TIME_S);
    if let Some(s) = shape {
        h.push(serde_json::json!({"beamwatch": {"scan_rows": s.rows, "scan_cols": s.cols}}).to_string().into_bytes());
    }
    h
}

/// Stream v2 start with `user_data = {scan_rows, scan_cols}` at its top level.
fn v2_start(series: u64, images: u64, shape: Option<ScanShape>) -> Vec<Vec<u8>> {
    let mut m = dectris_v2::encode_start(series, PX, PX, PixelType::U16, images, FRAME_TIME_S, &["threshold_1"]);
    let Some(s) = shape else { return m };
    let mut v: ciborium::Value = ciborium::de::from_reader(&m[0][..]).expect("cbor");
    if let ciborium::Value::Map(entries) = &mut v {
        let int = |n: usize| ciborium::Value::Integer((n as u64).into());
        entries.push((
            ciborium::Value::Text("user_data".into()),
            ciborium::Value::Map(vec![
                (ciborium::Value::Text("scan_rows".into()), int(s.rows)),
                (ciborium::Value::Text("scan_cols".into()), int(s.cols)),
            ]),
        ));
    }
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&v, &mut bytes).expect("cbor");
    m[0] = bytes;
    m
}

fn image(format: WireFormat, series: u64, index: u64, p: &[u16], w: usize) -> Vec<Vec<u8>> {
    match format {
        WireFormat::DectrisV1 => {
            dectris_v1::encode_image(series, index, p.len() / w, w, PixelType::U16, &le(p), "bs16-lz4<", 0)
                .expect("encode")
        }
        _ => dectris_v2::encode_image(
            series,
            index,
            p.len() / w,
            w,
            PixelType::U16,
            &[("threshold_1", &le(p))],
            "bslz4",
            0,
        ),
    }
}

fn end(format: WireFormat, series: u64) -> Vec<Vec<u8>> {
    match format {
        WireFormat::DectrisV1 => dectris_v1::encode_end(series),
        _ => dectris_v2::encode_end(series),
    }
}

fn start(format: WireFormat, series: u64, images: u64, shape: Option<ScanShape>) -> Vec<Vec<u8>> {
    match format {
        WireFormat::DectrisV1 => v1_header(series, images, shape),
        _ => v2_start(series, images, shape),
    }
}

async fn daemon_with_sender(
    cfg: Config,
) -> (zeromq::PushSocket, tokio::task::JoinHandle<Result<DaemonReport, beamwatch::Error>>) {
    let mut tx = zeromq::PushSocket::new();
    let ep = tx.bind("tcp://127.0.0.1:0").await.expect("bind").to_string();
    let mut cfg = cfg;
    cfg.ingest.endpoint = ep;
    let rules = cfg.validate(Path::new("test")).expect("valid config");
    let d = tokio::spawn(daemon::run(cfg, rules, CancellationToken::new(), None));
    (tx, d)
}

fn sessions(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "h5")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Opens a finished session for reading. A child process another test spawns (h5py) inherits
/// the open file descriptors of the moment, and with them HDF5's lock on a session still being
/// written then: the lock is held until that child exits, so the open is retried for a while.
fn open_h5(path: &Path) -> hdf5::File {
    let mut tries = 0;
    loop {
        match hdf5::File::open(path) {
            Ok(f) => return f,
            Err(e) if tries < 100 && e.to_string().contains("lock") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

/// (scans, rows, cols) of a recorded `/fourd` dataset, flattened.
fn read_cube<T: hdf5::H5Type + Copy>(file: &hdf5::File, name: &str) -> (Vec<usize>, Vec<T>) {
    let a: ArrayD<T> = file.dataset(name).unwrap_or_else(|e| panic!("{name}: {e}")).read_dyn().expect("read");
    (a.shape().to_vec(), a.iter().copied().collect())
}

/// Checks the session's virtual images against the detectors computed here, scan by scan, and
/// that exactly `masked` (scan, position) are masked. `sent(k, pos)` is the pattern that arrived.
fn check_virtual_images(session: &Path, scans: usize, masked: &[(usize, usize)]) {
    let file = open_h5(session);
    let (shape, bf) = read_cube::<f32>(&file, "fourd/virtual/bf");
    assert_eq!(shape, vec![scans, ROWS, COLS], "{}", session.display());
    let (_, adf) = read_cube::<f32>(&file, "fourd/virtual/adf");
    let (_, sum) = read_cube::<f32>(&file, "fourd/virtual/sum");
    let (_, m) = read_cube::<u8>(&file, "fourd/masked");
    let n = ROWS * COLS;
    for k in 0..scans {
        for pos in 0..n {
            let i = k * n + pos;
            let want_masked = masked.contains(&(k, pos));
            assert_eq!(m[i] == 1, want_masked, "scan {k} position {pos}: masked {}", m[i]);
            if want_masked {
                continue;
            }
            let (b, a, s) = virtual_of(&pattern(k, pos / COLS, pos % COLS));
            assert_eq!((bf[i], adf[i], sum[i]), (b, a, s), "scan {k} position {pos}");
        }
    }
    let g = file.group("fourd").expect("fourd group");
    let rows: u64 = g.attr("scan_rows").and_then(|a| a.read_scalar()).expect("scan_rows");
    assert_eq!(rows as usize, ROWS);
}

/// Over real sockets, v1 then v2: every scan's virtual images equal the detectors computed here;
/// a missing and a duplicated pattern mask their positions only; every pattern is accounted
/// for; the spot fading gives each region's critical dose within 15 % and the spot alarm fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_v1_and_v2_virtual_images_masks_accounting_and_spot_fading() {
    for format in [WireFormat::DectrisV1, WireFormat::DectrisV2] {
        let name = format.name();
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut tx, d) = daemon_with_sender(config(tmp.path(), String::new())).await;
        let n = (ROWS * COLS) as u64;
        let series = 7u64;
        let shape = ScanShape { rows: ROWS, cols: COLS };
        send(&mut tx, start(format, series, n * SCANS as u64, Some(shape))).await;
        let missing = n + 37; // scan 1
        let duplicated = 2 * n + 100; // scan 2
        let mut sent = 0u64;
        for index in 0..n * SCANS as u64 {
            if index == missing {
                continue;
            }
            let (k, pos) = ((index / n) as usize, (index % n) as usize);
            let p = pattern(k, pos / COLS, pos % COLS);
            let copies = if index == duplicated { 2 } else { 1 };
            for _ in 0..copies {
                send(&mut tx, image(format, series, index, &p, PX)).await;
                sent += 1;
            }
        }
        send(&mut tx, end(format, series)).await;
        let report = tokio::time::timeout(Duration::from_secs(240), d)
            .await
            .expect("daemon finished")
            .expect("task")
            .expect("run");
        // Every pattern is accounted for.
        let s = &report.pipeline.scans;
        assert_eq!(s.patterns_received, sent, "{name}: {s:?}");
        assert_eq!(report.decode_errors.values().sum::<u64>(), 0, "{name}");
        assert_eq!(s.patterns_wrong_size + s.patterns_refused + s.patterns_late, 0, "{name}: {s:?}");
        assert_eq!(s.scans_completed, SCANS as u64, "{name}: {s:?}");
        assert_eq!(s.scans_incomplete, 0, "{name}");
        assert!(s.patterns_masked_missing >= 1 && s.patterns_duplicate >= 1, "{name}: {s:?}");
        assert_eq!(report.pipeline.frames_received, SCANS as u64, "{name}: one frame per scan");
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join("daemon_report.json")).expect("daemon_report.json"))
                .expect("json");
        assert_eq!(written["scans"]["patterns_received"].as_u64(), Some(sent), "{name}");
        // The images, read back from the recorded session.
        let files = sessions(&tmp.path().join("sessions"));
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        let masked = [(1usize, (missing % n) as usize), (2, (duplicated % n) as usize)];
        check_virtual_images(&files[0], SCANS, &masked);
        // Spot fading: each region's Dc within 15 % of the truth; the spot alarm fired.
        let brief = report.pipeline.series.last().expect("series brief");
        let diff = brief.diffraction.as_ref().expect("diffraction summary");
        assert!(diff.spots >= 4, "{name}: {diff:?}");
        assert_eq!(diff.regions.len(), 4, "{name}");
        for (r, truth) in diff.regions.iter().zip(DC_TRUTH) {
            let dc = r.fading.dc_e_per_a2.unwrap_or_else(|| panic!("{name}: region {r:?} not determined"));
            assert!((dc - truth).abs() <= 0.15 * truth, "{name}: region ({}, {}) Dc {dc:.1} vs {truth}", r.row, r.col);
        }
        assert!(
            brief.alarms.iter().any(|a| a.rule == "spot-fading"),
            "{name}: no spot-fading alarm: {:?}",
            brief.alarms
        );
        let summary: serde_json::Value = serde_json::from_slice(
            &std::fs::read(tmp.path().join(format!("series_{series}.json"))).expect("series summary"),
        )
        .expect("json");
        assert!(summary["diffraction"]["dc_e_per_a2"].is_number() || summary["diffraction"]["note"].is_string());
        let per_scan = summary["diffraction"]["dose_per_scan_e_per_a2"].as_f64().expect("dose per scan");
        assert!((per_scan - DOSE_PER_SCAN).abs() < 1e-6 * DOSE_PER_SCAN, "{name}: {per_scan}");
    }
}

/// Bad input: a scan shape that does not divide the image count (refused, its patterns counted),
/// a pattern of the wrong size and a detector shape change mid-series (counted, masked); the
/// daemon keeps running and analyses the next good series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_4d_input_is_counted_and_the_next_series_analysed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = config(tmp.path(), String::new());
    cfg.fourd.scan_rows = Some(ROWS);
    cfg.fourd.scan_cols = Some(COLS);
    cfg.pipeline.max_series = 2;
    let (mut tx, d) = daemon_with_sender(cfg).await;
    let f = WireFormat::DectrisV2;
    let n = (ROWS * COLS) as u64;
    // 1: 300 images are not whole 16 × 16 scans.
    send(&mut tx, start(f, 1, 300, None)).await;
    for i in 0..20 {
        send(&mut tx, image(f, 1, i, &pattern(0, 0, i as usize), PX)).await;
    }
    send(&mut tx, end(f, 1)).await;
    // 2: a 24 × 24 pattern at 5, and the detector switching to 28 × 28 for ten patterns.
    send(&mut tx, start(f, 2, 2 * n, None)).await;
    let mut wrong = Vec::new();
    for i in 0..2 * n {
        let (k, pos) = ((i / n) as usize, (i % n) as usize);
        if i == 5 {
            send(&mut tx, image(f, 2, i, &vec![7u16; 24 * 24], 24)).await;
            wrong.push((k, pos));
        } else if (n + 44..n + 54).contains(&i) {
            send(&mut tx, image(f, 2, i, &vec![7u16; 28 * 28], 28)).await;
            wrong.push((k, pos));
        } else {
            send(&mut tx, image(f, 2, i, &pattern(k, pos / COLS, pos % COLS), PX)).await;
        }
    }
    send(&mut tx, end(f, 2)).await;
    // 3: good.
    send(&mut tx, start(f, 3, 2 * n, None)).await;
    for i in 0..2 * n {
        let (k, pos) = ((i / n) as usize, (i % n) as usize);
        send(&mut tx, image(f, 3, i, &pattern(k, pos / COLS, pos % COLS), PX)).await;
    }
    send(&mut tx, end(f, 3)).await;
    let report =
        tokio::time::timeout(Duration::from_secs(240), d).await.expect("daemon finished").expect("task").expect("run");
    let s = &report.pipeline.scans;
    assert_eq!(s.series_refused, 1, "{s:?}");
    assert_eq!(s.patterns_refused, 20, "{s:?}");
    assert_eq!(s.patterns_wrong_size, 11, "{s:?}");
    assert_eq!(s.patterns_received, 20 + 4 * n, "{s:?}");
    // Series 2's last scan never filled its ten positions: it ends incomplete, masked there.
    assert_eq!((s.scans_completed, s.scans_incomplete), (3, 1), "{s:?}");
    let third = report.pipeline.series.iter().find(|b| b.series == "3").expect("series 3 analysed");
    assert_eq!(third.frames_received, 2);
    assert_eq!(third.frames_analysed, 2, "{third:?}");
    // Series 2's wrong patterns left masked positions, the rest of its images exact.
    let files = sessions(&tmp.path().join("sessions"));
    let second = files
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("session_2_")))
        .unwrap_or_else(|| panic!("no session of series 2 in {files:?}"));
    check_virtual_images(second, 2, &wrong);
}

/// The patterns hold what the spot finder must find: four spots, clear of the beam.
#[test]
fn the_test_patterns_spots_are_found() {
    let n = (ROWS * COLS) as f64;
    let mut mean = vec![0f64; PX * PX];
    for pos in 0..ROWS * COLS {
        for (m, v) in mean.iter_mut().zip(pattern(0, pos / COLS, pos % COLS)) {
            *m += v as f64 / n;
        }
    }
    let (centre, bf) = beamwatch::fourd::detectors::find_centre(&mean, PX, PX);
    let spots = beamwatch::fourd::find_spots(&mean, PX, PX, (CENTRE, CENTRE), bf, &Default::default());
    assert!((centre.0 - CENTRE).abs() < 0.5 && (centre.1 - CENTRE).abs() < 0.5, "{centre:?} {bf}");
    assert_eq!(spots.len(), 4, "centre {centre:?}, bf {bf}: {spots:?}");
}

// ---- Files: an ARINA-layout NeXus pair and an EMD 1.0 datacube, replayed ----

const BSLZ4: i32 = 32008;

fn python() -> PathBuf {
    let p = std::env::var_os("BEAMWATCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python"));
    assert!(p.exists(), "{}: no Python with h5py; run ./tools/setup.sh first", p.display());
    p
}

/// Reads `/fourd` of a session with h5py: shapes, attributes and the first scan's first BF row.
const H5PY_CHECK: &str = r#"
import json, sys
import h5py
f = h5py.File(sys.argv[1], "r")
g = f["fourd"]
out = {k: list(g[k].shape) for k in ("virtual/bf", "masked", "spots", "spot_intensity",
        "region_spot_intensity", "dose_map_e_per_a2", "cumulative_dose_e_per_a2")}
out["scan_rows"] = int(g.attrs["scan_rows"])
d = g.attrs["detectors"]
out["detectors"] = d.decode() if isinstance(d, bytes) else str(d)
out["bf_first_row"] = [float(v) for v in g["virtual/bf"][0, 0, :]]
print(json.dumps(out))
"#;

/// A dataset chunked one pattern per chunk, declaring the bitshuffle filter (OPTIONAL: it is not
/// registered here) and written with direct chunk writes, as the DECTRIS file writer does.
fn write_bslz4(group: &hdf5::Group, name: &str, patterns: &[Vec<u16>]) {
    let shape = [patterns.len() as u64, PX as u64, PX as u64];
    let chunk = [1u64, PX as u64, PX as u64];
    let params: [c_uint; 5] = [0, 2, 2, 0, 2];
    let cname = CString::new(name).expect("name");
    h5sync(|| {
        // SAFETY: every pointer points at live local data of the right length; every id made here
        // is closed here.
        unsafe {
            let dcpl: hid_t = H5Pcreate(*hdf5::globals::H5P_DATASET_CREATE);
            assert!(dcpl >= 0);
            assert!(H5Pset_chunk(dcpl, 3, chunk.as_ptr()) >= 0);
            assert!(H5Pset_filter(dcpl, BSLZ4, H5Z_FLAG_OPTIONAL, params.len(), params.as_ptr()) >= 0);
            let space = H5Screate_simple(3, shape.as_ptr(), std::ptr::null());
            let ds = H5Dcreate2(
                group.id(),
                cname.as_ptr(),
                *hdf5::globals::H5T_STD_U16LE,
                space,
                H5P_DEFAULT,
                dcpl,
                H5P_DEFAULT,
            );
            assert!(ds >= 0);
            for (k, p) in patterns.iter().enumerate() {
                let blob = encode_bslz4(&le(p), 2, DEFAULT_BLOCK_BYTES);
                let offset = [k as u64, 0, 0];
                assert!(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, offset.as_ptr(), blob.len(), blob.as_ptr().cast()) >= 0);
            }
            H5Dclose(ds);
            H5Sclose(space);
            H5Pclose(dcpl);
        }
    });
}

/// `<name>_master.h5` with `/entry/data/data_000001` an external link to
/// `<name>_data_000001.h5:/entry/data/data` (N, 32, 32), N = `scans` × 16 × 16 patterns.
fn write_arina(dir: &Path, name: &str, scans: usize) -> PathBuf {
    let patterns: Vec<Vec<u16>> =
        (0..scans * ROWS * COLS).map(|i| pattern(i / (ROWS * COLS), (i / COLS) % ROWS, i % COLS)).collect();
    let master = dir.join(format!("{name}_master.h5"));
    let m = hdf5::File::create(&master).expect("master");
    let mdata = m.create_group("entry").and_then(|e| e.create_group("data")).expect("group");
    let data_name = format!("{name}_data_000001.h5");
    let f = hdf5::File::create(dir.join(&data_name)).expect("data file");
    let g = f.create_group("entry").and_then(|e| e.create_group("data")).expect("group");
    write_bslz4(&g, "data", &patterns);
    mdata.link_external(&data_name, "/entry/data/data", "data_000001").expect("link");
    master
}

fn str_attr(loc: &hdf5::Location, name: &str, v: &str) {
    let v: VarLenUnicode = v.parse().expect("string");
    loc.new_attr::<VarLenUnicode>().create(name).expect("attr").write_scalar(&v).expect("write attr");
}

/// An EMD 1.0 file with one 4-D datacube (Rx, Ry, Qx, Qy) = (16, 16, 32, 32): one scan.
fn write_emd1(path: &Path) {
    let mut cube = Array4::<u16>::zeros((ROWS, COLS, PX, PX));
    for row in 0..ROWS {
        for col in 0..COLS {
            let p = pattern(0, row, col);
            for (i, v) in p.iter().enumerate() {
                cube[[row, col, i / PX, i % PX]] = *v;
            }
        }
    }
    let f = hdf5::File::create(path).expect("emd");
    str_attr(&f, "emd_group_type", "file");
    let g = f.create_group("datacube_root").and_then(|r| r.create_group("datacube")).expect("group");
    str_attr(&g, "emd_group_type", "array");
    g.new_dataset_builder().with_data(&cube).create("data").expect("data");
}

/// `current`: state the beam current; without it a counting detector's counts estimate it.
fn replay(
    input: &Path,
    out: &Path,
    scan_shape: Option<ScanShape>,
    current: bool,
) -> beamwatch::commands::replay::ReplaySummary {
    let mut cfg = config(out, "tcp://127.0.0.1:1".into());
    cfg.dose.dwell_time_us = Some(FRAME_TIME_S * 1e6);
    cfg.scan_shape_cli = scan_shape;
    if !current {
        cfg.dose.beam_current_pa = None;
    }
    beamwatch::commands::replay::run(&beamwatch::commands::replay::ReplayOptions {
        input: input.to_path_buf(),
        dataset: None,
        frame_axis: None,
        config: cfg,
        out: out.to_path_buf(),
        record_frames: true,
        overlays: 2,
        view: false,
    })
    .expect("replay")
}

/// The NeXus pair (3-D stack, --scan-shape) and the EMD 1.0 datacube (its own 4-D shape) replay to
/// the same virtual images as the live path: the detectors computed here.
#[test]
fn replayed_arina_nexus_and_emd1_datacube_give_the_same_virtual_images() {
    let tmp = tempfile::tempdir().expect("tmp");
    let master = write_arina(tmp.path(), "arina", 2);
    let out = tmp.path().join("nexus-out");
    let s = replay(&master, &out, Some(ScanShape { rows: ROWS, cols: COLS }), true);
    assert_eq!(s.frames, 2 * ROWS * COLS);
    let session = s.outputs.session.expect("results session");
    check_virtual_images(&session, 2, &[]);

    let emd = tmp.path().join("cube.emd");
    write_emd1(&emd);
    let out = tmp.path().join("emd-out");
    let s = replay(&emd, &out, None, false);
    assert_eq!(s.input.scan_shape, Some((ROWS, COLS)));
    let session = s.outputs.session.expect("results session");
    check_virtual_images(&session, 1, &[]);
    let file = open_h5(&session);
    let source: VarLenUnicode =
        file.group("fourd").and_then(|g| g.attr("shape_source")).and_then(|a| a.read_scalar()).expect("attr");
    assert_eq!(source.as_str(), "file_metadata");
    // No current was given: the u16 patterns (a counting detector) estimate it, and say so.
    let current: VarLenUnicode =
        file.group("fourd").and_then(|g| g.attr("beam_current_source")).and_then(|a| a.read_scalar()).expect("attr");
    assert!(current.as_str().starts_with("estimated from counts"), "{}", current.as_str());
    let series = s.series.expect("series summary");
    assert_eq!(series["diffraction"]["beam_current_source"], "estimated_from_counts", "{series}");
    let mean_counts = (0..ROWS * COLS).map(|i| virtual_of(&pattern(0, i / COLS, i % COLS)).2 as f64).sum::<f64>()
        / (ROWS * COLS) as f64;
    // I = (counts per pattern / t)·e, so the dose per scan I·t/(e·step²) is the counts per step².
    let want = mean_counts / STEP_A.powi(2);
    let got = series["diffraction"]["dose_per_scan_e_per_a2"].as_f64().expect("dose per scan");
    assert!((got - want).abs() < 1e-3 * want, "dose per scan {got} from counts, want {want}");
    drop(file);
    // h5py (a real client) reads the documented layout.
    let run = std::process::Command::new(python())
        .args(["-c", H5PY_CHECK, session.to_str().expect("path")])
        .output()
        .expect("python runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("python's json");
    assert_eq!(v["virtual/bf"], serde_json::json!([1, ROWS, COLS]), "{v}");
    assert_eq!(v["masked"], serde_json::json!([1, ROWS, COLS]), "{v}");
    assert_eq!(v["dose_map_e_per_a2"], serde_json::json!([1, ROWS, COLS]), "{v}");
    assert_eq!(v["spots"][1], 5, "{v}");
    let n_spots = v["spots"][0].as_u64().expect("spots");
    assert_eq!(v["spot_intensity"], serde_json::json!([1, n_spots]), "{v}");
    assert_eq!(v["region_spot_intensity"], serde_json::json!([1, 4, n_spots]), "{v}");
    assert_eq!(v["scan_rows"], ROWS as u64);
    assert_eq!(v["detectors"], "bf,adf,sum");
    let bf0: Vec<f32> = (0..ROWS * COLS).map(|i| virtual_of(&pattern(0, i / COLS, i % COLS)).0).collect();
    assert_eq!(v["bf_first_row"], serde_json::json!(bf0[..COLS]), "{v}");
}

// ---- The 4D simulator over real sockets ----

/// `beamwatch simulate`'s 4D mode sends Poisson patterns of a crystal whose spots fade at a known
/// critical dose per region, with the scan shape and the dose inputs in the stream's header
/// (v1 appendix, v2 user_data; no `[dose]` here). The virtual images equal the detectors computed
/// from the simulator's own patterns; every pattern is accounted for; each region's spot-fading
/// Dc is within 15 % of the truth over 8 scans; the spot alarm fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_v1_and_v2_spot_fading_dc_per_region_within_15_percent() {
    use beamwatch::simulate::fourd::{FourdSim, FourdSpec, publish};
    use beamwatch::simulate::publish::PublishOptions;
    let spec = FourdSpec {
        scan_rows: 16,
        scan_cols: 16,
        scans: 8,
        detector_px: 48,
        critical_doses_e_per_a2: vec![60.0, 100.0, 150.0, 220.0],
        ..FourdSpec::default()
    };
    let sim = std::sync::Arc::new(FourdSim::new(spec.clone()));
    let c = (spec.detector_px as f64 - 1.0) / 2.0;
    // The test's own detectors: pixel centres at integer coordinates, r² < R² (a disk),
    // inner² ≤ r² < outer² (an annulus); with the centre at x.5 no pixel lies on a boundary.
    let (bf_r, adf_in, adf_out) = (4.0f64, 9.0f64, 20.0f64);
    let own = |p: &[u16]| {
        let (mut bf, mut adf) = (0f64, 0f64);
        for (i, &v) in p.iter().enumerate() {
            let (x, y) = ((i % spec.detector_px) as f64, (i / spec.detector_px) as f64);
            let r2 = (x - c).powi(2) + (y - c).powi(2);
            if r2 < bf_r * bf_r {
                bf += v as f64;
            }
            if r2 >= adf_in * adf_in && r2 < adf_out * adf_out {
                adf += v as f64;
            }
        }
        (bf as f32, adf as f32)
    };
    for format in [WireFormat::DectrisV1, WireFormat::DectrisV2] {
        let name = format.name();
        let tmp = tempfile::tempdir().expect("tmp");
        let mut cfg = config(tmp.path(), String::new());
        cfg.dose = Default::default();
        let d = |name: &str, kind| DetectorSpec { name: name.into(), kind };
        cfg.fourd.detectors = vec![
            d("bf", DetectorKind::Disk { radius_px: Some(bf_r), radius_mrad: None }),
            d(
                "adf",
                DetectorKind::Annulus {
                    inner_px: Some(adf_in),
                    outer_px: Some(adf_out),
                    inner_mrad: None,
                    outer_mrad: None,
                },
            ),
        ];
        cfg.fourd.centre_px = Some((c, c));
        let popts = PublishOptions {
            endpoint: "tcp://127.0.0.1:0".into(),
            mode: Mode::Bind,
            format,
            ..PublishOptions::default()
        };
        let (btx, brx) = tokio::sync::oneshot::channel();
        let stop = CancellationToken::new();
        let sender = {
            let (sim, stop) = (sim.clone(), stop.clone());
            tokio::spawn(async move { publish(sim, &popts, 0.0, stop, Some(btx)).await })
        };
        cfg.ingest.endpoint = brx.await.expect("simulator endpoint");
        let rules = cfg.validate(Path::new("test")).expect("valid");
        let daemon = tokio::spawn(daemon::run(cfg, rules, stop, None));
        let report = tokio::time::timeout(Duration::from_secs(300), daemon)
            .await
            .expect("daemon finished")
            .expect("task")
            .expect("run");
        let sent = sender.await.expect("task").expect("publish");
        let s = &report.pipeline.scans;
        assert_eq!(s.patterns_received, sent.patterns_sent, "{name}: {s:?}");
        assert_eq!(s.scans_completed, spec.scans as u64, "{name}: {s:?}");
        assert_eq!(s.patterns_masked_missing + s.patterns_duplicate + s.patterns_late, 0, "{name}: {s:?}");
        // The images.
        let files = sessions(&tmp.path().join("sessions"));
        let file = open_h5(&files[0]);
        let (shape, bf) = read_cube::<f32>(&file, "fourd/virtual/bf");
        let (_, adf) = read_cube::<f32>(&file, "fourd/virtual/adf");
        assert_eq!(shape, vec![spec.scans, 16, 16], "{name}");
        for k in [0, spec.scans - 1] {
            for pos in 0..256 {
                let want = own(&sim.pattern(k, pos / 16, pos % 16));
                assert_eq!((bf[k * 256 + pos], adf[k * 256 + pos]), want, "{name}: scan {k} position {pos}");
            }
        }
        // The dose came from the stream header, the critical doses from the spots.
        let brief = report.pipeline.series.last().expect("series");
        let diff = brief.diffraction.as_ref().expect("diffraction");
        let per_scan = diff.dose_per_scan_e_per_a2.expect("dose per scan");
        assert!((per_scan - spec.dose_per_scan_e_per_a2()).abs() < 1e-6 * per_scan, "{name}: {per_scan}");
        for (r, truth) in diff.regions.iter().zip(sim.regions()) {
            let want = truth.critical_dose_e_per_a2;
            let dc = r.fading.dc_e_per_a2.unwrap_or_else(|| panic!("{name}: region {r:?} not determined"));
            assert!(
                (dc - want).abs() <= 0.15 * want,
                "{name}: region ({}, {}) Dc {dc:.1} vs truth {want}",
                r.row,
                r.col
            );
        }
        assert!(brief.alarms.iter().any(|a| a.rule == "spot-fading"), "{name}: {:?}", brief.alarms);
    }
}
