//! The daemon's one memory budget (`[limits] memory_mib`): every queue and buffer whose size
//! depends on what peers send or how fast consumers read draws its bytes from it — the guard's
//! messages in flight, the analysis queue, the re-publisher's and the result PUB's queues, every
//! subscriber's buffer, the recorder's queue. A reservation that does not fit is refused: the
//! caller drops that message or frame whole and the refusal is counted by [`Kind`]. Nothing waits
//! for memory except a replay (which may) and nothing aborts.
//!
//! Per-peer and per-subscriber allowances stay as they were (one slow subscriber cannot take
//! everything), but they are now also shares of this one total, so twenty stalled subscribers
//! cannot hold twenty allowances.
//!
//! What is not drawn from it: the fixed cost of the process (code, the ResNet weights, the CUDA
//! context, thread stacks, the allocator's slack) — see [`FIXED_OVERHEAD_MIB`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::limits;

/// `[limits]`: the memory the daemon keeps to.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes the daemon's queues and buffers may hold together (MiB), beyond its fixed cost.
    pub memory_mib: f64,
}

/// 4 GiB: a small share of an instrument PC (32–128 GiB), and room for one 5760×4092 frame's
/// analysis (K3-sized, 23.6 M px × [`ANALYSIS_BYTES_PER_PIXEL`] ≈ 1.8 GiB, within half the budget).
pub const DEFAULT_MEMORY_MIB: f64 = 4096.0;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { memory_mib: DEFAULT_MEMORY_MIB }
    }
}

impl LimitsConfig {
    /// `(key, value, why)` when the value is impossible.
    pub fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        let m = self.memory_mib;
        (!(m.is_finite() && (MIN_MEMORY_MIB..=1e7).contains(&m)))
            .then(|| ("limits.memory_mib", m.to_string(), "must be between 16 and 10,000,000 MiB"))
    }
}

/// Below this the daemon could not hold a small frame's analysis and its sockets' buffers.
pub const MIN_MEMORY_MIB: f64 = 16.0;

/// What the process costs beyond the budget: code and libraries, thread stacks, the tokio runtime,
/// the allocator's slack, the ResNet-18 weights (45 MiB) and their folded copy. Tests check
/// resident memory against `memory_mib + FIXED_OVERHEAD_MIB` with the default engine (fp32);
/// `precision = "bf16"` adds its packed weights and larger per-thread chunks (`bench` at 1020²:
/// peak RSS 196 MiB against fp32's 154 MiB, README "Speed").
pub const FIXED_OVERHEAD_MIB: f64 = 192.0;

/// Bytes a frame's analysis holds per pixel, reserved when the frame enters the analysis queue and
/// released when it is analysed or dropped. Counted from the buffers the analysis allocates for a
/// frame of n pixels (bytes per pixel):
/// - the frame: f32 pixels 4 + gap mask 1 = 5; the decoded wire pixels before conversion ≤ 4;
/// - registration (`register.rs`): the window 4, the reference spectrum 8, the previous frame's
///   spectrum 8 (and a jump candidate's 8), this frame's spectrum 8, the cross-power spectrum 8,
///   the correlation surface 4 = 48 at most;
/// - the shifted copy (`register::apply`): two passes of pixels and masks, 10;
/// - the series' reference frame and the scaled patches of this frame: 5 + 4.
///
/// Sum 76 → 80 (rounded up; the per-series state is charged to every queued frame, which errs on
/// the side of refusing).
pub const ANALYSIS_BYTES_PER_PIXEL: u64 = 80;

/// One frame's analysis may take at most this share of the budget (the rest: the queue behind it,
/// the sockets, the recorder).
pub const FRAME_SHARE: u64 = 2;

/// One message in flight through the guard may take at most this share of the budget.
pub const MESSAGE_SHARE: u64 = 8;

/// What a reservation is for (the report counts refusals by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A message a peer is sending through the guard.
    Ingest,
    /// A frame waiting for (or in) the analysis.
    AnalysisQueue,
    /// A frame larger than one frame's share of the budget (refused, never reserved).
    FrameSize,
    /// The queue into the re-publishing PUB socket.
    Republish,
    /// The queue into the alarm/result PUB socket.
    ResultsPub,
    /// A subscriber's buffer (re-publisher or results).
    Subscribers,
    /// Frame pixels waiting for the disk.
    Recorder,
    /// 4D-STEM patterns waiting for the pattern workers (decode + reduce).
    FourDQueue,
}

impl Kind {
    /// The most this kind may hold, as a divisor of the budget. Everything but the analysis
    /// queue together holds at most half, so a series' reference frame — which waits for room,
    /// and fits half the budget — always gets it once the analysis has worked off its queue, however
    /// many peers and stalled subscribers hold their shares.
    fn share(self) -> u64 {
        match self {
            Kind::AnalysisQueue | Kind::FrameSize => 1,
            Kind::Ingest => 4,
            Kind::Subscribers => 8,
            Kind::Republish | Kind::Recorder | Kind::FourDQueue => 16,
            Kind::ResultsPub => 32,
        }
    }
}

const KINDS: [Kind; 8] = [
    Kind::Ingest,
    Kind::AnalysisQueue,
    Kind::FrameSize,
    Kind::Republish,
    Kind::ResultsPub,
    Kind::Subscribers,
    Kind::Recorder,
    Kind::FourDQueue,
];

/// The budget: a byte count handed out in [`Reservation`]s.
#[derive(Debug)]
pub struct Budget {
    total: u64,
    used: AtomicU64,
    peak: AtomicU64,
    by_kind: [AtomicU64; KINDS.len()],
    refused: [AtomicU64; KINDS.len()],
}

/// Bytes held from a [`Budget`]; given back when dropped.
#[derive(Debug)]
#[must_use = "the bytes are given back when the reservation is dropped"]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
    kind: Kind,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.by_kind[self.kind as usize].fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Budget {
    pub fn new(total_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            total: total_bytes,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            by_kind: Default::default(),
            refused: Default::default(),
        })
    }

    pub fn from_config(cfg: &LimitsConfig) -> Arc<Self> {
        Self::new((cfg.memory_mib * 1024.0 * 1024.0) as u64)
    }

    /// No limit beyond the fixed ones (tools and tests that hold a handful of frames).
    pub fn unlimited() -> Arc<Self> {
        Self::new(u64::MAX / 2)
    }

    /// `bytes` for `kind`, or `None` (counted) when they do not fit the budget or the kind's share.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64, kind: Kind) -> Option<Reservation> {
        let r = self.reserve_quietly(bytes, kind);
        if r.is_none() {
            self.refuse(kind);
        }
        r
    }

    /// [`Self::try_reserve`] without counting a refusal (for callers that wait and retry).
    pub fn reserve_quietly(self: &Arc<Self>, bytes: u64, kind: Kind) -> Option<Reservation> {
        let mine = &self.by_kind[kind as usize];
        let cap = self.total / kind.share();
        mine.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| m.checked_add(bytes).filter(|&a| a <= cap)).ok()?;
        match self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(bytes).filter(|&a| a <= self.total))
        {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                Some(Reservation { budget: self.clone(), bytes, kind })
            }
            Err(_) => {
                mine.fetch_sub(bytes, Ordering::AcqRel);
                None
            }
        }
    }

    /// Counts a refusal that needed no reservation attempt (a frame over its share).
    pub fn refuse(&self, kind: Kind) {
        self.refused[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Refusals so far, by kind (kinds never refused are left out).
    pub fn refused(&self) -> BTreeMap<Kind, u64> {
        KINDS.iter().map(|&k| (k, self.refused[k as usize].load(Ordering::Relaxed))).filter(|&(_, n)| n > 0).collect()
    }

    /// Bytes one frame of `pixels` reserves for its analysis.
    pub fn frame_bytes(pixels: usize) -> u64 {
        (pixels as u64).saturating_mul(ANALYSIS_BYTES_PER_PIXEL)
    }

    /// The largest frame (pixels) whose analysis fits one frame's share, and the fixed limit.
    pub fn max_frame_pixels(&self) -> usize {
        let by_budget = self.total / FRAME_SHARE / ANALYSIS_BYTES_PER_PIXEL;
        (by_budget.min(limits::MAX_FRAME_PIXELS as u64)) as usize
    }

    /// A subscriber's allowance: the configured one, within an equal part of the subscribers'
    /// share for every subscriber the PUB sockets may serve at once (`subscribers_at_most`) — so
    /// stalled subscribers, however many, never starve one that reads.
    pub fn subscriber_allowance(&self, configured: u64, subscribers_at_most: u64) -> u64 {
        configured.min(self.total / Kind::Subscribers.share() / subscribers_at_most.max(1))
    }

    /// The largest message a peer may have in flight through the guard.
    pub fn max_message_bytes(&self) -> u64 {
        self.total / MESSAGE_SHARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_given_back_and_refusals_counted() {
        let b = Budget::new(1000);
        let a = b.try_reserve(600, Kind::AnalysisQueue).expect("fits");
        assert!(b.try_reserve(500, Kind::AnalysisQueue).is_none());
        assert!(b.try_reserve(126, Kind::Subscribers).is_none(), "over the subscribers' eighth");
        let c = b.try_reserve(400, Kind::AnalysisQueue).expect("fits exactly");
        assert_eq!(b.used_bytes(), 1000);
        drop(a);
        assert_eq!(b.used_bytes(), 400);
        assert!(b.try_reserve(u64::MAX, Kind::Recorder).is_none(), "no overflow");
        drop(c);
        assert_eq!(b.used_bytes(), 0);
        assert_eq!(b.peak_bytes(), 1000);
        let s = b.try_reserve(125, Kind::Subscribers).expect("the subscribers' eighth");
        drop(s);
        assert_eq!(b.used_bytes(), 0);
        let r = b.refused();
        assert_eq!(r.get(&Kind::AnalysisQueue), Some(&1));
        assert_eq!(r.get(&Kind::Subscribers), Some(&1));
        assert_eq!(r.get(&Kind::Recorder), Some(&1));
        assert_eq!(r.get(&Kind::Ingest), None);
    }

    #[test]
    fn the_frame_limit_follows_the_budget() {
        let small = Budget::from_config(&LimitsConfig { memory_mib: 256.0 });
        // 128 MiB for one frame at 80 B/px: 1.68 M px (a 1280² frame fits, a 2048² does not).
        assert!(small.max_frame_pixels() >= 1280 * 1280 && small.max_frame_pixels() < 2048 * 2048);
        let default = Budget::from_config(&LimitsConfig::default());
        assert!(default.max_frame_pixels() >= 5760 * 4092, "a K3 frame fits the default");
        assert!(Budget::unlimited().max_frame_pixels() == limits::MAX_FRAME_PIXELS);
    }
}
