//! The live 4D-STEM benchmark end to end, small: the daemon in this process fed over loopback
//! ZeroMQ (stream v2) by the benchmark's sender, the patterns decoded and reduced by the pattern
//! workers. Every pattern sent is received and accounted, and the per-scan latencies are reported
//! (their values are not asserted: the machine is shared).

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use beamwatch::commands::bench_4d_live::{LiveOptions, run};
use beamwatch::fourd::ScanShape;
use serde_json::Value;

#[test]
fn a_short_live_run_accounts_for_every_pattern_and_reports_latencies() {
    let opts = LiveOptions {
        pattern_px: 64,
        scan: ScanShape { rows: 32, cols: 32 },
        scans: 3,
        rate: Some(4000.0),
        distinct: 64,
        // Two workers: the scans after the reference one are merged from bands on two threads.
        threads: Some(2),
        view_bind: None,
        // Scan 1 faded: the spot-fading alarm fires on it.
        fade_odd_scans: true,
    };
    let b = run(&opts).expect("the live benchmark runs");
    let r = &b.result;
    let total = 3 * 32 * 32;
    assert_eq!(r.patterns_sent, total, "{r:?}");
    assert_eq!(r.patterns_received, total, "{r:?}");
    assert_eq!(r.patterns_accounted, total, "{r:?}");
    assert_eq!((r.patterns_lost, r.patterns_dropped_queue, r.positions_masked_missing), (0, 0, 0), "{r:?}");
    assert_eq!((r.scans_completed, r.scans_incomplete), (3, 0), "{r:?}");
    assert!(r.clean());
    assert_eq!(b.decode_threads, 2);
    let lat = r.scan_latency_ms.as_ref().expect("scan latencies reported");
    assert!(lat.count >= 1 && lat.p50.is_finite() && lat.p99 >= lat.p50, "{lat:?}");
    assert!(r.alarms >= 1, "the faded scan raises the spot-fading alarm: {r:?}");
    let alat = r.alarm_latency_ms.as_ref().expect("alarm latencies reported");
    assert!(alat.count >= 1 && alat.p99 >= alat.p50, "{alat:?}");
    assert!(r.achieved_patterns_per_s > 0.0 && r.achieved_mb_per_s > 0.0);
    assert!(b.cpu.len() > 1);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The view's server-sent events as (name, data), read on a thread.
fn subscribe(hostport: &str) -> mpsc::Receiver<(String, Value)> {
    let (tx, rx) = mpsc::channel();
    let hostport = hostport.to_string();
    std::thread::spawn(move || {
        let started = Instant::now();
        let s = loop {
            match TcpStream::connect(&hostport) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no view at {hostport}: {e}"),
            }
        };
        common::read_events(s, &hostport, tx);
    });
    rx
}

/// The live view over its real SSE endpoint: rows of each scan's virtual image arrive (with the
/// analysed detector's values) before that scan's frame, at most about ten events a second.
#[test]
fn rows_of_the_scan_being_filled_reach_the_live_view_before_the_scan_completes() {
    let port = free_port();
    let hostport = format!("127.0.0.1:{port}");
    let events = subscribe(&hostport);
    let opts = LiveOptions {
        pattern_px: 64,
        scan: ScanShape { rows: 32, cols: 32 },
        scans: 2,
        // ≈ 0.5 s per scan: several throttled row updates within each.
        rate: Some(2000.0),
        distinct: 64,
        threads: Some(2),
        view_bind: Some(hostport.clone()),
        // Unchanging scans: every scan after the reference is compared and sends its frame event.
        fade_odd_scans: false,
    };
    let b = run(&opts).expect("the live benchmark runs");
    assert!(b.result.clean(), "{:?}", b.result);
    let mut seen: Vec<(String, Value)> = Vec::new();
    while let Ok(e) = events.recv_timeout(Duration::from_secs(2)) {
        seen.push(e);
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    // Each analysed scan's frame event (the reference scan has none), and where the series ends.
    let mut ends: Vec<(u64, usize)> = seen
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n == "frame")
        .filter_map(|(i, (_, v))| Some((v["latest"]["frame"].as_u64()?, i)))
        .collect();
    assert!(!ends.is_empty(), "no frame event: {names:?}");
    let series_end = names.iter().position(|n| *n == "series_end").expect("series_end event");
    if !ends.iter().any(|&(scan, _)| scan == 0) {
        ends.push((0, series_end));
    }
    for &(scan, frame_at) in &ends {
        let rows: Vec<&Value> = seen[..frame_at]
            .iter()
            .filter(|(n, v)| n == "scan_rows" && v["scan"].as_u64() == Some(scan))
            .map(|(_, v)| v)
            .collect();
        assert!(!rows.is_empty(), "no rows of scan {scan} before its frame: {names:?}");
        // The first update holds part of the scan only: rows came while it was being filled.
        let first_rows: u64 =
            rows[0]["blocks"].as_array().expect("blocks").iter().map(|b| b["rows"].as_u64().unwrap_or(0)).sum();
        assert!(first_rows > 0 && first_rows < 32, "scan {scan}: first update has {first_rows} rows");
        for r in &rows {
            assert_eq!(r["cols"], 32);
            assert_eq!(r["detector"], "adf");
            for block in r["blocks"].as_array().expect("blocks") {
                let values = block["values"].as_array().expect("values");
                assert_eq!(values.len() as u64, block["rows"].as_u64().unwrap_or(0) * 32);
                assert!(values.iter().all(|v| v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0)));
            }
        }
    }
    let updates = names.iter().filter(|n| **n == "scan_rows").count();
    assert!(updates >= 2, "{names:?}");
}
