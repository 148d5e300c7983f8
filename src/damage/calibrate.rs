//! The per-patch damage threshold, calibrated from the series' own noise floor.
//!
//! Any fixed dissimilarity threshold is wrong somewhere: the dissimilarity of an intact patch
//! depends on the metric, the weights, the electrons per pixel, the detector and the specimen. So
//! each series measures its own: the first `frames` compared frames after the reference are taken
//! as undamaged, and give, on the logarithm of the dissimilarity,
//!
//! - each patch's **baseline** `m_p`: its mean over those frames (intact patches of different
//!   content sit at different levels), and
//! - one **noise scale** `σ`, pooled over the field: 1.4826 × the median absolute deviation of
//!   every calibration value from its patch's baseline (robust to a few odd patches), corrected
//!   for the baseline having been estimated from the same values.
//!
//! Why the logarithm: a dissimilarity made by noise alone behaves like a scaled chi-square — its
//! spread grows in proportion to its level, and its upper tail is long. Measured on an undamaged
//! series from a real SrTiO3 image (resnet18, synthetic weights), the spread of intact patches
//! grew eightfold from the quietest to the busiest quarter of the field; one pooled σ on the raw
//! values flagged 5–18 intact patches per frame where the rate asked for 0.1. On the logarithm the
//! spread is nearly the same for every patch and the tail close to normal (0–2 per frame).
//!
//! A later value is *significant* when its logarithm exceeds `m_p + z · σ · √(1 + 1/frames)` (the
//! spread of a new value around an estimated baseline). `z` follows from the false-alarm rate the
//! user sets — one falsely significant patch in the whole field per `false_patch_every_frames`
//! frames, under a normal tail — so a larger field gets a stricter `z`. Alarms then ask for
//! connected clusters of significant patches, which noise rarely makes.

use serde::{Deserialize, Serialize};

use super::SimilarityMap;

/// How the per-patch threshold is set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PatchThreshold {
    /// Per patch, from the series' first `frames` compared frames.
    Calibrated { frames: usize, false_patch_every_frames: f64 },
    /// One dissimilarity for every patch (an override: it does not adapt to the data).
    Fixed { dissimilarity: f32 },
}

/// Default calibration: 3 frames, one false patch per 5 frames. Every frame spent calibrating is a
/// frame no alarm can fire in, and damage that starts inside the window is measured against a
/// floor that already holds some of it; but the third frame narrows each baseline's error enough
/// that, with 2-patch clusters, the onset alarm came earliest with no false alarm in the
/// known-truth suite (docs/evaluation.md: with 2 frames and 1 per 10, 0.2 frames later on average).
pub const DEFAULT_CALIBRATION_FRAMES: usize = 3;
pub const DEFAULT_FALSE_PATCH_EVERY_FRAMES: f64 = 5.0;

impl Default for PatchThreshold {
    fn default() -> Self {
        Self::Calibrated {
            frames: DEFAULT_CALIBRATION_FRAMES,
            false_patch_every_frames: DEFAULT_FALSE_PATCH_EVERY_FRAMES,
        }
    }
}

impl PatchThreshold {
    /// One line for reports and pictures.
    pub fn describe(&self) -> String {
        match *self {
            Self::Calibrated { frames, false_patch_every_frames } => format!(
                "calibrated per patch from the first {frames} compared frames (1 false patch per {false_patch_every_frames} frames)"
            ),
            Self::Fixed { dissimilarity } => format!("fixed at {dissimilarity}"),
        }
    }
}

/// The calibrated noise floor of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    pub method: String,
    /// Series frames the calibration used.
    pub frames: Vec<u64>,
    pub false_patch_every_frames: f64,
    /// Patches with a baseline (the z below is for this many).
    pub calibrated_patches: usize,
    pub z: f64,
    /// Pooled noise scale σ of the natural logarithm of one patch's dissimilarity (a relative
    /// spread: 0.3 means about ±30 %).
    pub sigma: f64,
    /// Added to every dissimilarity before the logarithm (10⁻³ of the calibration's median), so
    /// that a noise-free series of zeros still has a finite floor.
    #[serde(default)]
    pub offset: f64,
    /// Median over patches of the baseline (geometric mean of the calibration values) and of the
    /// threshold.
    pub median_baseline: f64,
    pub median_threshold: f64,
    /// Per-patch threshold, row-major; `null` where a patch had no calibration value.
    pub patch_threshold: Vec<Option<f32>>,
}

impl NoiseFloor {
    /// Per-patch thresholds with NaN where a patch is not judged.
    pub fn thresholds(&self) -> Vec<f32> {
        self.patch_threshold.iter().map(|t| t.unwrap_or(f32::NAN)).collect()
    }

    /// One line for logs, reports and pictures.
    pub fn describe(&self) -> String {
        format!(
            "patch threshold calibrated on frames {}: median {:.4} (baseline {:.4} × {:.2}, i.e. {:.2} σ above it on a log scale, σ = {:.3}; 1 false patch per {} frames)",
            frame_list(&self.frames),
            self.median_threshold,
            self.median_baseline,
            (self.z * self.sigma * (1.0 + 1.0 / self.frames.len().max(1) as f64).sqrt()).exp(),
            self.z,
            self.sigma,
            self.false_patch_every_frames
        )
    }
}

fn frame_list(f: &[u64]) -> String {
    match (f.first(), f.last()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) if (b - a) as usize + 1 == f.len() => format!("{a}–{b}"),
        _ => f.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// Where a series' threshold stands.
#[derive(Clone, Debug)]
pub enum Calibration {
    Fixed(f32),
    /// Collecting calibration frames.
    Collecting { frames: usize, false_patch_every_frames: f64, seen: Vec<(u64, Vec<f32>)> },
    Ready(NoiseFloor),
}

impl Calibration {
    pub fn new(t: PatchThreshold) -> Self {
        match t {
            PatchThreshold::Fixed { dissimilarity } => Self::Fixed(dissimilarity),
            PatchThreshold::Calibrated { frames, false_patch_every_frames } => {
                Self::Collecting { frames: frames.max(2), false_patch_every_frames, seen: Vec::new() }
            }
        }
    }

    /// The per-patch thresholds for this map (frame `index`), `None` while calibrating. A
    /// calibration frame is judged by nobody: it defines the floor.
    pub fn judge(&mut self, map: &SimilarityMap, index: u64) -> Option<Vec<f32>> {
        match self {
            Self::Fixed(t) => Some(vec![*t; map.dissimilarity.len()]),
            Self::Ready(floor) => Some(floor.thresholds()),
            Self::Collecting { frames, false_patch_every_frames, seen } => {
                if !map.status.iter().any(|s| s.analysed()) {
                    return None;
                }
                let values =
                    map.status.iter().zip(&map.dissimilarity).map(|(s, &d)| if s.analysed() { d } else { f32::NAN });
                seen.push((index, values.collect()));
                if seen.len() >= *frames
                    && let Some(floor) = calibrate(seen, *false_patch_every_frames)
                {
                    tracing::info!("{}", floor.describe());
                    *self = Self::Ready(floor);
                }
                None
            }
        }
    }

    pub fn noise_floor(&self) -> Option<&NoiseFloor> {
        match self {
            Self::Ready(f) => Some(f),
            _ => None,
        }
    }

    /// Per-patch thresholds for `n` patches (NaN: not judged), `None` while calibrating.
    pub fn thresholds(&self, n: usize) -> Option<Vec<f32>> {
        match self {
            Self::Fixed(t) => Some(vec![*t; n]),
            Self::Ready(f) => Some(f.thresholds()),
            Self::Collecting { .. } => None,
        }
    }

    /// The threshold as one number (the median per-patch threshold), when there is one.
    pub fn typical(&self) -> Option<f32> {
        match self {
            Self::Fixed(t) => Some(*t),
            Self::Ready(f) => Some(f.median_threshold as f32),
            Self::Collecting { .. } => None,
        }
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// The noise floor from calibration maps (frame index, per-patch dissimilarity with NaN for
/// excluded patches). `None` when no patch has two calibration values.
pub fn calibrate(maps: &[(u64, Vec<f32>)], false_patch_every_frames: f64) -> Option<NoiseFloor> {
    let n = maps.first()?.1.len();
    let c = maps.len();
    let mut all: Vec<f64> =
        maps.iter().flat_map(|(_, m)| m.iter()).filter(|v| v.is_finite()).map(|&v| f64::from(v).max(0.0)).collect();
    let offset = (1e-3 * median(&mut all)?).max(1e-12);
    let ln = |v: f32| (f64::from(v).max(0.0) + offset).ln();
    let mut baseline = vec![f64::NAN; n];
    let mut residuals = Vec::with_capacity(n * c);
    let mut counts = vec![0usize; n];
    for p in 0..n {
        let vals: Vec<f64> =
            maps.iter().filter_map(|(_, m)| m.get(p).copied()).filter(|v| v.is_finite()).map(ln).collect();
        counts[p] = vals.len();
        if vals.is_empty() {
            continue;
        }
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        baseline[p] = m;
        if vals.len() >= 2 {
            // Scaled so each residual has the variance of one value: a residual from a mean of k
            // values has (k − 1)/k of it.
            let k = vals.len() as f64;
            let inflate = (k / (k - 1.0)).sqrt();
            residuals.extend(vals.iter().map(|v| ((v - m) * inflate).abs()));
        }
    }
    // With one patch's worth of pairs the pooled scale is still usable; with none it is not.
    if residuals.len() < 2 {
        return None;
    }
    // Never exactly zero (a noise-free series): then any change is significant, as it should be,
    // without dividing by zero anywhere.
    let sigma = (1.4826 * median(&mut residuals)?).max(1e-7);
    let calibrated = baseline.iter().filter(|b| b.is_finite()).count();
    let p_false = 1.0 / (false_patch_every_frames.max(1.0) * calibrated.max(1) as f64);
    let z = normal_upper_quantile(p_false);
    let back = |l: f64| (l.exp() - offset) as f32;
    let patch_threshold: Vec<Option<f32>> = (0..n)
        .map(|p| {
            let k = counts[p] as f64;
            baseline[p].is_finite().then(|| back(baseline[p] + z * sigma * (1.0 + 1.0 / k).sqrt()))
        })
        .collect();
    let mut b: Vec<f64> = baseline.iter().copied().filter(|v| v.is_finite()).map(|l| f64::from(back(l))).collect();
    let mut t: Vec<f64> = patch_threshold.iter().flatten().map(|&v| v as f64).collect();
    Some(NoiseFloor {
        method: "per-patch baseline (mean of ln dissimilarity over the calibration frames) + z × pooled robust σ of ln dissimilarity".into(),
        frames: maps.iter().map(|(i, _)| *i).collect(),
        false_patch_every_frames,
        calibrated_patches: calibrated,
        z,
        sigma,
        offset,
        median_baseline: median(&mut b)?,
        median_threshold: median(&mut t)?,
        patch_threshold,
    })
}

/// z with P(Z > z) = p for a standard normal Z: Acklam's rational approximation of the normal
/// quantile (relative error below 1.2e-9), for p in (1e-300, 0.5].
pub fn normal_upper_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-300, 0.5);
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    // The lower-tail quantile of p is −z.
    let lower = if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    -lower
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patches::{PatchGrid, PatchStatus};

    #[test]
    fn normal_quantiles_match_tables() {
        for (p, z) in [(0.5, 0.0), (0.158655, 1.0), (0.02275, 2.0), (0.0013499, 3.0), (3.1671e-5, 4.0), (2.8665e-7, 5.0)] {
            let got = normal_upper_quantile(p);
            assert!((got - z).abs() < 2e-3, "p = {p}: z = {got}, want {z}");
        }
    }

    fn map(d: Vec<f32>) -> SimilarityMap {
        let grid = PatchGrid::new(20 * d.len(), 20, 20).expect("grid");
        let n = d.len();
        SimilarityMap { grid, similarity: d.iter().map(|v| 1.0 - v).collect(), dissimilarity: d, status: vec![PatchStatus::Ok; n] }
    }

    #[test]
    fn the_floor_follows_each_patch_and_the_noise() {
        // 200 patches at two content levels, small noise; the threshold sits just above each
        // patch's own level, whatever the overall scale.
        for scale in [1.0f32, 1000.0] {
            let mut cal =
                Calibration::new(PatchThreshold::Calibrated { frames: 2, false_patch_every_frames: 10.0 });
            let level = |p: usize| if p.is_multiple_of(2) { 0.1 } else { 0.3 };
            let noise = |p: usize, t: usize| (((p * 7 + t * 13) % 11) as f32 - 5.0) * 0.001;
            for t in 1..=2 {
                let m = map((0..200).map(|p| scale * (level(p) + noise(p, t))).collect());
                assert!(cal.judge(&m, t as u64).is_none(), "calibration frames are not judged");
            }
            let floor = cal.noise_floor().expect("calibrated").clone();
            assert_eq!(floor.frames, vec![1, 2]);
            let thr = cal.judge(&map(vec![0.0; 200]), 3).expect("judged");
            for (p, t) in thr.iter().enumerate() {
                let above = t / scale - level(p);
                assert!(above > 0.0 && above < 0.05, "patch {p}: threshold {} over its level", above);
            }
            assert!(floor.z > 3.0 && floor.z < 4.0, "z = {}", floor.z);
        }
    }

    /// Noise whose spread grows with the patch's level (as a noise-made dissimilarity's does): a
    /// quiet and a busy half of the field each get about the false rate asked for, where one σ
    /// pooled on the raw values would flag the busy half far too often and never the quiet one.
    #[test]
    fn spread_proportional_to_level_gives_each_patch_the_asked_rate() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Gamma};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 40;
        // Scaled chi-square with 8 degrees of freedom: spread ∝ level, long upper tail.
        let chi = Gamma::new(4.0, 0.25).expect("gamma");
        let level = |p: usize| if p < n / 2 { 0.002 } else { 0.05 };
        let draw = |p: usize, rng: &mut rand_chacha::ChaCha8Rng| (level(p) * chi.sample(rng)) as f32;
        let mut cal = Calibration::new(PatchThreshold::Calibrated { frames: 2, false_patch_every_frames: 1.0 });
        for t in 1..=2 {
            let m = map((0..n).map(|p| draw(p, &mut rng)).collect());
            assert!(cal.judge(&m, t).is_none());
        }
        // Rate asked: 1 per 40 patch-frames (2.5 %), so z ≈ 1.96.
        let thr = cal.judge(&map(vec![0.0; n]), 3).expect("judged");
        let (mut quiet, mut busy) = (0usize, 0usize);
        let frames = 500;
        for _ in 0..frames {
            for (p, t) in thr.iter().enumerate() {
                if draw(p, &mut rng) > *t {
                    if p < n / 2 { quiet += 1 } else { busy += 1 }
                }
            }
        }
        let per = (frames * n / 2) as f64;
        let (q, b) = (quiet as f64 / per, busy as f64 / per);
        // (A σ pooled on the raw values gives about 0.001 and 0.46 here.)
        assert!(q > 0.002 && q < 0.06 && b > 0.002 && b < 0.06, "false rate quiet {q:.3}, busy {b:.3} (asked 0.025)");
    }

    #[test]
    fn fixed_thresholds_are_used_from_the_first_frame() {
        let mut cal = Calibration::new(PatchThreshold::Fixed { dissimilarity: 0.2 });
        assert_eq!(cal.judge(&map(vec![0.0; 3]), 1), Some(vec![0.2; 3]));
    }
}
