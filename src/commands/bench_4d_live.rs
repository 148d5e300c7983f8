//! `beamwatch bench-4d --live`: the daemon's 4D-STEM path end to end over real loopback ZeroMQ,
//! stream v2 — patterns received, routed to the pattern workers, decoded, reduced, merged into
//! scans, analysed and published — at a sustained pattern rate, or the highest rate with nothing
//! lost (stepping up until a loss, then the last clean rate).
//!
//! The sender is the simulator's socket with the bench's synthetic ARINA-like patterns
//! ([`super::bench_4d::counting_patterns`]) compressed once before the run: rendering and
//! compressing each pattern as `simulate --fourd` does takes one core more than the daemon needs,
//! and on a small machine would measure the simulator. The scan shape travels in `user_data`.
//!
//! Latency: for every scan, the time from its last pattern received to its scan result published
//! (the daemon's `frame_latency_ms`), and to its alarm where one fires (`alarm_latency_ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::bench_4d::{compress_patterns, counting_patterns, counting_patterns_with_spots};
use crate::Error;
use crate::config::{Config, PipelineConfig};
use crate::decode::{WireFormat, dectris_v2};
use crate::fourd::ScanShape;
use crate::frame::PixelType;
use crate::simulate::publish::PublishError;
use crate::simulate::publish::{PublishOptions, open, send};
use crate::telemetry::Percentiles;

#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub pattern_px: usize,
    pub scan: ScanShape,
    pub scans: usize,
    /// Patterns per second; `None`: step up to the highest rate with nothing lost.
    pub rate: Option<f64>,
    /// Distinct patterns the scans cycle through.
    pub distinct: usize,
    /// `[fourd] decode_threads` (`None`: the daemon's default).
    pub threads: Option<usize>,
    /// Serve the live view on this address (`None`: no view).
    pub view_bind: Option<String>,
    /// Odd scans carry the Bragg spots faded to 40 %: the spot-fading alarm fires on each of them
    /// and clears on the next even one, so the run measures last pattern → alarm.
    pub fade_odd_scans: bool,
}

/// One run at one rate.
#[derive(Clone, Debug, Serialize)]
pub struct LiveTrial {
    pub rate_patterns_per_s: f64,
    pub patterns_sent: u64,
    pub patterns_received: u64,
    /// Patterns that ended in a scan (filled or duplicate positions) or were counted as dropped,
    /// late, of the wrong size or refused: every received pattern, when nothing is unaccounted.
    pub patterns_accounted: u64,
    pub patterns_lost: u64,
    pub patterns_dropped_queue: u64,
    pub positions_masked_missing: u64,
    pub scans_completed: u64,
    pub scans_incomplete: u64,
    /// Sent patterns over the sending time.
    pub achieved_patterns_per_s: f64,
    /// Compressed bytes sent per second, in MB (10⁶ bytes).
    pub achieved_mb_per_s: f64,
    /// Decoded pattern bytes per second, in MB.
    pub decoded_mb_per_s: f64,
    /// Last pattern received → scan result published (ms).
    pub scan_latency_ms: Option<Percentiles>,
    /// Last pattern received → alarm published (ms), where alarms fired.
    pub alarm_latency_ms: Option<Percentiles>,
    pub alarms: u64,
}

impl LiveTrial {
    /// Nothing lost: every pattern sent arrived, was accounted and filled its position.
    pub fn clean(&self) -> bool {
        self.patterns_lost == 0
            && self.patterns_dropped_queue == 0
            && self.positions_masked_missing == 0
            && self.patterns_accounted == self.patterns_received
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveBench {
    pub cpu: String,
    pub pattern_px: usize,
    pub scan_rows: usize,
    pub scan_cols: usize,
    pub scans: usize,
    pub decode_threads: usize,
    pub compressed_bytes_per_pattern: f64,
    /// The run at `--rate`, or the fastest clean run of the search.
    pub result: LiveTrial,
    /// Search mode: the highest rate tried with nothing lost.
    pub max_clean_patterns_per_s: Option<f64>,
    pub trials: Vec<LiveTrial>,
}

pub fn run(opts: &LiveOptions) -> Result<LiveBench, Error> {
    // The faded set: see `fade_odd_scans`.
    let n = opts.distinct.max(1);
    let full = compress_patterns(&counting_patterns(opts.pattern_px, n, 20));
    let faded = compress_patterns(&counting_patterns_with_spots(opts.pattern_px, n, 21, 0.4 * 12.0));
    let blobs = Arc::new([full, faded]);
    let all = blobs.iter().flatten();
    let mean_bytes = all.clone().map(Vec::len).sum::<usize>() as f64 / all.count().max(1) as f64;
    // One directory per run (runs may share a process: tests).
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run_n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = std::env::temp_dir().join(format!("beamwatch-bench-4d-live-{}-{run_n}", std::process::id()));
    crate::report::ensure_dir(&scratch)?;
    let mut trials = Vec::new();
    let outcome = (|| {
        match opts.rate {
            Some(rate) => {
                let t = trial(opts, &blobs, rate, &scratch.join("run"))?;
                Ok((t, None))
            }
            None => {
                // Double the rate until a run loses something, then halve the step between the last
                // clean rate and the first lossy one, three times.
                let (mut clean, mut lossy): (Option<f64>, Option<f64>) = (None, None);
                let mut rate = 2000.0;
                for k in 0..10 {
                    let t = trial(opts, &blobs, rate, &scratch.join(format!("t{k}")))?;
                    tracing::info!("{rate:.0} patterns/s: {} sent, {} lost", t.patterns_sent, t.patterns_lost);
                    let ok = t.clean();
                    trials.push(t);
                    if ok {
                        clean = Some(rate);
                    } else {
                        lossy = Some(rate);
                    }
                    rate = match (clean, lossy) {
                        (Some(c), None) => c * 2.0,
                        (None, Some(l)) => l / 2.0,
                        (Some(c), Some(l)) if l / c > 1.15 => (c + l) / 2.0,
                        _ => break,
                    };
                    if rate < 100.0 {
                        break;
                    }
                }
                let best = clean
                    .and_then(|c| trials.iter().find(|t| t.rate_patterns_per_s == c).cloned())
                    .or_else(|| trials.last().cloned());
                let Some(best) = best else { return Err(Error::Usage("bench-4d --live: no trial ran".into())) };
                Ok((best, clean))
            }
        }
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let (result, max) = outcome?;
    Ok(LiveBench {
        cpu: super::bench_4d::cpu_model(),
        pattern_px: opts.pattern_px,
        scan_rows: opts.scan.rows,
        scan_cols: opts.scan.cols,
        scans: opts.scans,
        decode_threads: crate::pipeline::scan_pool::threads_for(&fourd_config(opts).fourd),
        compressed_bytes_per_pattern: mean_bytes,
        result,
        max_clean_patterns_per_s: max,
        trials,
    })
}

fn fourd_config(opts: &LiveOptions) -> Config {
    let mut cfg = Config::default();
    cfg.fourd.enabled = true;
    cfg.fourd.decode_threads = opts.threads;
    cfg
}

/// What the sender reports.
struct Sent {
    patterns: u64,
    bytes: u64,
    seconds: f64,
}

fn trial(
    opts: &LiveOptions,
    blobs: &Arc<[Vec<Vec<u8>>; 2]>,
    rate: f64,
    out: &std::path::Path,
) -> Result<LiveTrial, Error> {
    let mut cfg = fourd_config(opts);
    // The scan result is published on the results socket (the latency's end); a classical metric
    // keeps the per-scan analysis independent of weights.
    cfg.analysis.metric = Some(crate::damage::Metric::Ssim);
    cfg.sinks.pub_endpoint = Some("tcp://127.0.0.1:0".into());
    cfg.pipeline = PipelineConfig { out_dir: out.to_path_buf(), status_interval_s: 0.0, ..PipelineConfig::default() };
    cfg.view.enabled = opts.view_bind.is_some();
    if let Some(bind) = &opts.view_bind {
        cfg.view.bind = bind.clone();
    }
    let popts = PublishOptions { format: WireFormat::DectrisV2, series_count: 1, ..PublishOptions::default() };
    let (blobs, o) = (blobs.clone(), opts.clone());
    let (daemon, sent) = super::demo::run_with(popts, cfg, false, move |popts, stop, bound| {
        tokio::spawn(async move { send_series(&popts, &o, &blobs, rate, stop, bound).await })
    })?;
    let s = &daemon.pipeline.scans;
    let positions = opts.scan.positions();
    let in_scans = (s.scans_completed + s.scans_incomplete) * positions
        - s.patterns_masked_missing.min((s.scans_completed + s.scans_incomplete) * positions)
        + s.patterns_duplicate;
    let accounted = in_scans + s.patterns_late + s.patterns_wrong_size + s.patterns_refused + s.patterns_dropped_queue;
    let p = &daemon.pipeline;
    let decoded_bytes = (opts.pattern_px * opts.pattern_px * 2) as f64;
    let secs = sent.seconds.max(1e-9);
    Ok(LiveTrial {
        rate_patterns_per_s: rate,
        patterns_sent: sent.patterns,
        patterns_received: s.patterns_received,
        patterns_accounted: accounted,
        patterns_lost: sent.patterns.saturating_sub(s.patterns_received),
        patterns_dropped_queue: s.patterns_dropped_queue,
        positions_masked_missing: s.patterns_masked_missing,
        scans_completed: s.scans_completed,
        scans_incomplete: s.scans_incomplete,
        achieved_patterns_per_s: sent.patterns as f64 / secs,
        achieved_mb_per_s: sent.bytes as f64 / secs / 1e6,
        decoded_mb_per_s: sent.patterns as f64 * decoded_bytes / secs / 1e6,
        scan_latency_ms: p.frame_latency_ms,
        alarm_latency_ms: p.alarm_latency_ms,
        alarms: p.alarms,
    })
}

/// Sends one series of `opts.scans` scans of pre-compressed patterns at `rate` patterns/s.
async fn send_series(
    popts: &PublishOptions,
    opts: &LiveOptions,
    blobs: &[Vec<Vec<u8>>; 2],
    rate: f64,
    stop: CancellationToken,
    bound: tokio::sync::oneshot::Sender<String>,
) -> Result<Sent, PublishError> {
    let (mut out, ep) = open(popts).await?;
    let _ = bound.send(ep.clone());
    let px = opts.pattern_px;
    let total = opts.scan.positions() * opts.scans as u64;
    let user = serde_json::json!({"scan_rows": opts.scan.rows, "scan_cols": opts.scan.cols});
    let start =
        dectris_v2::encode_start_with_user_data(1, px, px, PixelType::U16, total, 1e-5, &["threshold_1"], Some(&user));
    let deadline = Instant::now() + Duration::from_secs_f64(popts.wait_for_peer_s);
    send(&mut out, start, deadline, &ep).await?;
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let t0 = Instant::now();
    let mut next = t0;
    let mut sent = Sent { patterns: 0, bytes: 0, seconds: 0.0 };
    for i in 0..total {
        if stop.is_cancelled() {
            break;
        }
        next += period;
        // Sleep only when ahead by more than a millisecond: timers are coarser than a pattern.
        let ahead = next.saturating_duration_since(Instant::now());
        if ahead > Duration::from_millis(1) {
            tokio::time::sleep(ahead).await;
        }
        let set = &blobs[usize::from(opts.fade_odd_scans && (i / opts.scan.positions().max(1)) % 2 == 1)];
        let blob = &set[(i % set.len() as u64) as usize];
        let msg = dectris_v2::encode_image_bslz4(1, i, px, px, PixelType::U16, "threshold_1", blob, i * 10_000);
        sent.bytes += msg.iter().map(Vec::len).sum::<usize>() as u64;
        send(&mut out, msg, deadline, &ep).await?;
        sent.patterns += 1;
    }
    sent.seconds = t0.elapsed().as_secs_f64();
    send(&mut out, dectris_v2::encode_end(1), deadline, &ep).await?;
    // The daemon stops after the series; the socket stays open until it has taken everything.
    stop.cancelled().await;
    Ok(sent)
}
