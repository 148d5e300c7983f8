//! Where the CPU trunk spends its time, stage by stage, for `beamwatch bench --layers`.
//!
//! Off by default: a span then costs one relaxed atomic load. When on, each span adds its wall
//! time to a process-wide counter, so the figures are thread-seconds summed over the worker threads
//! (with 2 threads busy, 2 s of stage time pass in 1 s of wall time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The part of the network a span belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Frame-level work around the trunk: drift tracking and undoing it, pre-filter.
    Registration,
    /// Cutting the frame into patches.
    Patches,
    /// Cosine (or classical metric) against the reference, calibration, summary.
    Compare,
    Stem,
    MaxPool,
    Layer(usize),
}

/// What the span does there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copying activations into GEMM operands (im2col, tap gathers, type conversion).
    Gather,
    /// The GEMM itself, with whatever epilogue the GEMM library fuses.
    Gemm,
    /// Bias, residual and ReLU passes outside the GEMM; pooling.
    Epilogue,
    /// Anything else (the frame-level parts).
    Other,
}

const PARTS: usize = 9;
const OPS: usize = 4;

static ENABLED: AtomicBool = AtomicBool::new(false);
static NS: [AtomicU64; PARTS * OPS] = [const { AtomicU64::new(0) }; PARTS * OPS];

fn part_index(p: Part) -> usize {
    match p {
        Part::Registration => 0,
        Part::Patches => 1,
        Part::Compare => 2,
        Part::Stem => 3,
        Part::MaxPool => 4,
        Part::Layer(l) => 5 + l.min(3),
    }
}

fn op_index(o: Op) -> usize {
    match o {
        Op::Gather => 0,
        Op::Gemm => 1,
        Op::Epilogue => 2,
        Op::Other => 3,
    }
}

/// Starts (or stops) collecting, and clears what was collected.
pub fn enable(on: bool) {
    for c in &NS {
        c.store(0, Ordering::Relaxed);
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// Times the rest of the enclosing scope when collecting is on.
#[must_use]
pub struct Span {
    start: Option<(Instant, usize)>,
}

pub fn span(part: Part, op: Op) -> Span {
    let on = ENABLED.load(Ordering::Relaxed);
    Span { start: on.then(|| (Instant::now(), part_index(part) * OPS + op_index(op))) }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((t, i)) = self.start {
            NS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// One row of the report: thread-milliseconds per stage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageRow {
    pub part: String,
    pub gather_ms: f64,
    pub gemm_ms: f64,
    pub epilogue_ms: f64,
    pub other_ms: f64,
}

/// What was collected since [`enable`], divided by `frames`.
pub fn report(frames: usize) -> Vec<StageRow> {
    let per = |i: usize| NS[i].load(Ordering::Relaxed) as f64 / 1e6 / frames.max(1) as f64;
    let round = |v: f64| (v * 100.0).round() / 100.0;
    (0..PARTS)
        .map(|p| StageRow {
            part: match p {
                0 => "registration".to_string(),
                1 => "patches".to_string(),
                2 => "compare".to_string(),
                3 => "stem".to_string(),
                4 => "maxpool".to_string(),
                l => format!("layer{}", l - 4),
            },
            gather_ms: round(per(p * OPS)),
            gemm_ms: round(per(p * OPS + 1)),
            epilogue_ms: round(per(p * OPS + 2)),
            other_ms: round(per(p * OPS + 3)),
        })
        .collect()
}
