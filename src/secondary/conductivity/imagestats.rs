//! The honest baseline: ridge regression of log10 σ on eight statistics of the whole image, fitted
//! inside the same outer folds as the CNNs (issue 21: on real SEM images such a model beat the CNN
//! that looked at one centre crop).
//!
//! Features of an image (gray 0..1, after the annotation band is cut): mean, standard deviation,
//! the fractions of pixels below mean − std, below mean − 2·std and above mean + std (pores, dark
//! boundaries, bright phases), edge density (share of pixels whose central-difference gradient
//! exceeds the standard deviation), mean gradient / std, and the spread of 8 × 8 block means / std
//! (local-mean spread: how patchy the microstructure is).
//!
//! The fit is over samples (features averaged over a sample's images, target its log10 σ), so
//! every sample weighs the same whatever its image count and the inner cross-validation splits
//! samples, never images. Columns are standardised on the training samples; λ (on the scale of
//! n·I added to XᵀX) is chosen from [`LAMBDAS`] by [`INNER_FOLDS`]-fold cross-validation on the
//! training samples only.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, SemImage};

pub const N_FEATURES: usize = 8;
pub const NAMES: [&str; N_FEATURES] = [
    "mean",
    "std",
    "frac<mean-std",
    "frac<mean-2std",
    "frac>mean+std",
    "edge density",
    "mean gradient/std",
    "8px block-mean spread/std",
];
pub const LAMBDAS: [f64; 7] = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0];
pub const INNER_FOLDS: usize = 5;
const BLOCK_PX: usize = 8;

/// The eight statistics of one image.
pub fn features(im: &SemImage) -> [f64; N_FEATURES] {
    let (w, h) = (im.width, im.height);
    let px = &im.pixels;
    let n = px.len().max(1) as f64;
    let mean = px.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (px.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-6);
    let frac = |f: &dyn Fn(f64) -> bool| px.iter().filter(|&&v| f(v as f64)).count() as f64 / n;
    let dark1 = frac(&|v| v < mean - std);
    let dark2 = frac(&|v| v < mean - 2.0 * std);
    let bright = frac(&|v| v > mean + std);
    let (mut edges, mut grad_sum, mut m) = (0usize, 0f64, 0usize);
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let gx = (px[y * w + x + 1] - px[y * w + x - 1]) as f64 / 2.0;
            let gy = (px[(y + 1) * w + x] - px[(y - 1) * w + x]) as f64 / 2.0;
            let g = (gx * gx + gy * gy).sqrt();
            grad_sum += g;
            edges += usize::from(g > std);
            m += 1;
        }
    }
    let m = m.max(1) as f64;
    let mut blocks = Vec::new();
    for by in 0..h / BLOCK_PX {
        for bx in 0..w / BLOCK_PX {
            let mut s = 0f64;
            for y in by * BLOCK_PX..(by + 1) * BLOCK_PX {
                s += px[y * w + bx * BLOCK_PX..y * w + (bx + 1) * BLOCK_PX].iter().map(|&v| v as f64).sum::<f64>();
            }
            blocks.push(s / (BLOCK_PX * BLOCK_PX) as f64);
        }
    }
    let nb = blocks.len().max(1) as f64;
    let bm = blocks.iter().sum::<f64>() / nb;
    let spread = (blocks.iter().map(|b| (b - bm).powi(2)).sum::<f64>() / nb).sqrt();
    [mean, std, dark1, dark2, bright, edges as f64 / m, grad_sum / m / std, spread / std]
}

/// A fitted ridge model: standardisation, coefficients, intercept and the λ chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ridge {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub lambda: f64,
    /// Cross-validated MSE of the chosen λ, (log10 S/cm)².
    pub cv_mse: f64,
}

impl Ridge {
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.intercept
            + x.iter()
                .zip(&self.coef)
                .zip(self.mean.iter().zip(&self.std))
                .map(|((v, c), (m, s))| c * (v - m) / s)
                .sum::<f64>()
    }
}

/// Ridge at one λ on rows `x` (each [`N_FEATURES`] long) and targets `y`.
pub fn fit_at(x: &[Vec<f64>], y: &[f64], lambda: f64) -> Ridge {
    let n = x.len().max(1) as f64;
    let d = x.first().map_or(0, Vec::len);
    let mean: Vec<f64> = (0..d).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    let std: Vec<f64> = (0..d)
        .map(|j| {
            let s = (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt();
            if s > 1e-12 { s } else { f64::INFINITY }
        })
        .collect();
    let z: Vec<Vec<f64>> = x.iter().map(|r| (0..d).map(|j| (r[j] - mean[j]) / std[j]).collect()).collect();
    let ym = y.iter().sum::<f64>() / n;
    // (ZᵀZ + λ n I) β = Zᵀ (y − ȳ), a d × d system solved by Gaussian elimination.
    let mut a = vec![vec![0.0; d + 1]; d];
    for (r, &t) in z.iter().zip(y) {
        for i in 0..d {
            for j in 0..d {
                a[i][j] += r[i] * r[j];
            }
            a[i][d] += r[i] * (t - ym);
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += lambda * n;
    }
    let coef = solve(a);
    Ridge { mean, std, coef, intercept: ym, lambda, cv_mse: f64::NAN }
}

/// Solves the augmented system `a` (d × (d + 1)) by elimination with partial pivoting; the matrix
/// is symmetric positive definite (λ > 0), so pivots stay away from zero.
fn solve(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let d = a.len();
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, p);
        let piv = a[c][c];
        if piv.abs() < 1e-300 {
            continue;
        }
        for r in c + 1..d {
            let f = a[r][c] / piv;
            for k in c..=d {
                a[r][k] -= f * a[c][k];
            }
        }
    }
    let mut x = vec![0.0; d];
    for r in (0..d).rev() {
        let s: f64 = (r + 1..d).map(|k| a[r][k] * x[k]).sum();
        x[r] = if a[r][r].abs() < 1e-300 { 0.0 } else { (a[r][d] - s) / a[r][r] };
    }
    x
}

/// λ by k-fold cross-validation over the rows (= samples), then the fit on all of them.
pub fn fit_cv(x: &[Vec<f64>], y: &[f64], seed: u64) -> Ridge {
    let n = x.len();
    let k = INNER_FOLDS.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut best = (LAMBDAS[0], f64::INFINITY);
    if k >= 2 {
        for &l in &LAMBDAS {
            let mut sse = 0.0;
            for f in 0..k {
                let (tr, te): (Vec<usize>, Vec<usize>) = order.iter().enumerate().map(|(i, &s)| (i % k == f, s)).fold(
                    (Vec::new(), Vec::new()),
                    |(mut tr, mut te), (is_test, s)| {
                        if is_test {
                            te.push(s)
                        } else {
                            tr.push(s)
                        }
                        (tr, te)
                    },
                );
                let m = fit_at(
                    &tr.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
                    &tr.iter().map(|&i| y[i]).collect::<Vec<_>>(),
                    l,
                );
                sse += te.iter().map(|&i| (m.predict(&x[i]) - y[i]).powi(2)).sum::<f64>();
            }
            let mse = sse / n as f64;
            if mse < best.1 {
                best = (l, mse);
            }
        }
    }
    let mut m = fit_at(x, y, best.0);
    m.cv_mse = best.1;
    m
}

/// The mean feature row of each of `samples` over its images (`per_image` = [`features`] of every
/// image of `ds`).
pub fn sample_rows(ds: &Dataset, per_image: &[[f64; N_FEATURES]], samples: &[usize]) -> Vec<Vec<f64>> {
    samples
        .iter()
        .map(|&s| {
            let imgs = ds.images_of(s);
            let k = imgs.len().max(1) as f64;
            (0..N_FEATURES).map(|j| imgs.iter().map(|&i| per_image[i][j]).sum::<f64>() / k).collect()
        })
        .collect()
}
