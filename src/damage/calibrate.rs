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
//! Three values are few, so each baseline is **shrunk** toward the field's median level by the
//! empirical-Bayes factor `B = τ² / (τ² + σ²/k)` (τ²: the spread of the true levels, the variance of
//! the baselines less their estimation error σ²/k). Without it a patch whose three calibration
//! values came out low by chance keeps a threshold too low for the whole series: on the undamaged
//! series of the known-truth suite the quietest quarter of baselines then sat 0.3–0.6 σ too low on
//! every later frame, the busiest as much too high (docs/evaluation.md).
//!
//! A later value is *significant* when its logarithm exceeds `b_p + z · σ · √(1 + B/k)` (the
//! spread of a new value around a shrunk baseline). Its **z-score** `(ln d − b_p) / (σ √(1 + B/k))`
//! is what the onset rule's block test sums (see [`super::blocks`]). `z` follows from the false-alarm rate the
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
    /// Mean shrinkage factor B of the baselines toward the field's median (1: none).
    #[serde(default)]
    pub shrinkage: Option<f64>,
    /// Per patch: the shrunk baseline of ln(dissimilarity + offset) and the spread of a new value
    /// around it (NaN: not judged). Internal: the thresholds above carry the same information.
    /// Correlation of the noise of neighbouring patches (edge-sharing, corner-sharing), from the
    /// calibration frames, never below 0: the block test's variance (see [`super::blocks`]).
    #[serde(default)]
    pub neighbour_correlation: Option<[f64; 2]>,
    #[serde(skip)]
    pub patch_baseline_ln: Vec<f64>,
    #[serde(skip)]
    pub patch_scale_ln: Vec<f64>,
}

impl NoiseFloor {
    /// Per-patch thresholds with NaN where a patch is not judged.
    pub fn thresholds(&self) -> Vec<f32> {
        self.patch_threshold.iter().map(|t| t.unwrap_or(f32::NAN)).collect()
    }

    /// Per-patch z-scores of a map against this floor (NaN where a patch is not judged or was not
    /// analysed).
    pub fn z_scores(&self, map: &SimilarityMap) -> Vec<f32> {
        (0..map.dissimilarity.len())
            .map(|p| {
                let (b, s) = (self.patch_baseline_ln.get(p), self.patch_scale_ln.get(p));
                match (b, s) {
                    (Some(&b), Some(&s)) if b.is_finite() && s > 0.0 && map.status[p].analysed() => {
                        let d = f64::from(map.dissimilarity[p]);
                        if d.is_finite() { ((d.max(0.0) + self.offset).ln() - b) as f32 / s as f32 } else { f32::NAN }
                    }
                    _ => f32::NAN,
                }
            })
            .collect()
    }

    /// One line for logs, reports and pictures.
    pub fn describe(&self) -> String {
        format!(
            "patch threshold calibrated on frames {}: median {:.4} (baseline {:.4} × {:.2}, i.e. {:.2} σ above it on a log scale, σ = {:.3}; 1 false patch per {} frames)",
            frame_list(&self.frames),
            self.median_threshold,
            self.median_baseline,
            (self.z * self.sigma * (1.0 + self.shrinkage.unwrap_or(1.0) / self.frames.len().max(1) as f64).sqrt()).exp(),
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
                    && let Some(floor) = calibrate(seen, *false_patch_every_frames, map.grid.cols)
                {
                    tracing::info!("{}", floor.describe());
                    *self = Self::Ready(floor);
                }
                None
            }
        }
    }

    /// Per-patch z-scores against the calibrated floor; `None` while calibrating or with a fixed
    /// threshold (which has no noise scale).
    pub fn z_scores(&self, map: &SimilarityMap) -> Option<Vec<f32>> {
        self.noise_floor().map(|f| f.z_scores(map))
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
/// excluded patches; `cols` patches per row). `None` when no patch has two calibration values.
pub fn calibrate(maps: &[(u64, Vec<f32>)], false_patch_every_frames: f64, cols: usize) -> Option<NoiseFloor> {
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
    let neighbours = neighbour_correlation(maps, &baseline, offset, cols);
    let shrink = shrink_toward_median(&mut baseline, &counts, sigma);
    let back = |l: f64| (l.exp() - offset) as f32;
    let scale: Vec<f64> = (0..n)
        .map(|p| {
            let k = counts[p].max(1) as f64;
            if baseline[p].is_finite() { sigma * (1.0 + shrink.factor[p] / k).sqrt() } else { f64::NAN }
        })
        .collect();
    let patch_threshold: Vec<Option<f32>> =
        (0..n).map(|p| baseline[p].is_finite().then(|| back(baseline[p] + z * scale[p]))).collect();
    let mut b: Vec<f64> = baseline.iter().copied().filter(|v| v.is_finite()).map(|l| f64::from(back(l))).collect();
    let mut t: Vec<f64> = patch_threshold.iter().flatten().map(|&v| v as f64).collect();
    Some(NoiseFloor {
        method: "per-patch baseline (mean of ln dissimilarity over the calibration frames, shrunk toward the field's median) + z × pooled robust σ of ln dissimilarity".into(),
        frames: maps.iter().map(|(i, _)| *i).collect(),
        false_patch_every_frames,
        calibrated_patches: calibrated,
        z,
        sigma,
        offset,
        median_baseline: median(&mut b)?,
        median_threshold: median(&mut t)?,
        patch_threshold,
        shrinkage: Some(shrink.mean_factor),
        neighbour_correlation: Some(neighbours),
        patch_baseline_ln: baseline,
        patch_scale_ln: scale,
    })
}

/// Correlation of the calibration residuals (each value's log less its patch's mean) between
/// edge-sharing and between corner-sharing neighbours. Pre-filtering and resampling spread one
/// patch's noise into the next a little (measured 0.005–0.06 at σ = 2 px); summed over a block,
/// that is up to 10 % more spread than independent patches would have.
fn neighbour_correlation(maps: &[(u64, Vec<f32>)], mean_ln: &[f64], offset: f64, cols: usize) -> [f64; 2] {
    let n = mean_ln.len();
    if cols == 0 || n % cols != 0 {
        return [0.0; 2];
    }
    let rows = n / cols;
    let mut out = [0.0; 2];
    let mut var = (0.0, 0usize);
    let mut sums = [(0.0, 0usize); 2];
    for (_, m) in maps {
        let r = |p: usize| -> Option<f64> {
            let v = *m.get(p)?;
            (v.is_finite() && mean_ln[p].is_finite()).then(|| (f64::from(v).max(0.0) + offset).ln() - mean_ln[p])
        };
        for p in 0..n {
            let Some(a) = r(p) else { continue };
            var.0 += a * a;
            var.1 += 1;
            let (y, x) = (p / cols, p % cols);
            let edge = [(x + 1 < cols).then(|| p + 1), (y + 1 < rows).then(|| p + cols)];
            let corner = [(x + 1 < cols && y + 1 < rows).then(|| p + cols + 1), (x > 0 && y + 1 < rows).then(|| p + cols - 1)];
            for (k, group) in [edge, corner].into_iter().enumerate() {
                for q in group.into_iter().flatten() {
                    if let Some(b) = r(q) {
                        sums[k].0 += a * b;
                        sums[k].1 += 1;
                    }
                }
            }
        }
    }
    if var.1 == 0 || var.0 <= 0.0 {
        return out;
    }
    let variance = var.0 / var.1 as f64;
    for k in 0..2 {
        if sums[k].1 > 0 {
            out[k] = (sums[k].0 / sums[k].1 as f64 / variance).clamp(0.0, 1.0);
        }
    }
    out
}

struct Shrinkage {
    /// Per patch B = τ² / (τ² + σ²/k) (NaN where no baseline).
    factor: Vec<f64>,
    mean_factor: f64,
}

/// Shrinks each baseline toward the median baseline by its empirical-Bayes factor (see the module
/// comment). τ² is the plain variance of the baselines less their median estimation error, never
/// below 1 % of it: a robust variance would shrink the busiest patches (the real outliers) hardest
/// and give them thresholds inside their own noise.
fn shrink_toward_median(baseline: &mut [f64], counts: &[usize], sigma: f64) -> Shrinkage {
    let mut finite: Vec<f64> = baseline.iter().copied().filter(|b| b.is_finite()).collect();
    let n = finite.len();
    let error = |p: usize| sigma * sigma / counts[p].max(1) as f64;
    let mut errors: Vec<f64> = (0..baseline.len()).filter(|&p| baseline[p].is_finite()).map(error).collect();
    let (Some(centre), Some(typical_error)) = (median(&mut finite), median(&mut errors)) else {
        return Shrinkage { factor: vec![f64::NAN; baseline.len()], mean_factor: 1.0 };
    };
    let mean = finite.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { finite.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    let tau2 = (var - typical_error).max(0.01 * typical_error);
    let mut factor = vec![f64::NAN; baseline.len()];
    for (p, b) in baseline.iter_mut().enumerate() {
        if b.is_finite() {
            let f = tau2 / (tau2 + error(p));
            *b = centre + f * (*b - centre);
            factor[p] = f;
        }
    }
    let mean_factor = factor.iter().filter(|f| f.is_finite()).sum::<f64>() / n.max(1) as f64;
    Shrinkage { factor, mean_factor }
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
