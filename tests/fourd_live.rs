//! The live 4D-STEM benchmark end to end, small: the daemon in this process fed over loopback
//! ZeroMQ (stream v2) by the benchmark's sender, the patterns decoded and reduced by the pattern
//! workers. Every pattern sent is received and accounted, and the per-scan latencies are reported
//! (their values are not asserted: the machine is shared).

use beamwatch::commands::bench_4d_live::{LiveOptions, run};
use beamwatch::fourd::ScanShape;

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
    assert!(r.achieved_patterns_per_s > 0.0 && r.achieved_mb_per_s > 0.0);
    assert!(b.cpu.len() > 1);
}
