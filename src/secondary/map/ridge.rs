//! The honest baseline: ridge regression of the target on the same descriptors.
//!
//! Columns are standardised with the training rows' mean and standard deviation (constant columns
//! dropped); the fit is the closed form in its dual: β = Xᵀ(XXᵀ + λI)⁻¹(y − ȳ), solved by Cholesky
//! (n ≤ a few thousand rows, p ≈ 3000 columns, so the n × n system is the small one). λ is chosen by
//! k-fold cross-validation on the training rows only (each fold standardised on its own training
//! part) from a log grid.

use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::MapError;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RidgeFit {
    pub lambda: f64,
    /// (λ, cross-validated mean squared error) over the grid.
    pub cv: Vec<(f64, f64)>,
    #[serde(skip)]
    mean: Array1<f64>,
    #[serde(skip)]
    scale: Array1<f64>,
    #[serde(skip)]
    coef: Array1<f64>,
    intercept: f64,
}

pub fn default_lambdas() -> Vec<f64> {
    (-2..=10).map(|k| 10f64.powf(k as f64 * 0.5)).collect()
}

struct Standardised {
    x: Array2<f64>,
    mean: Array1<f64>,
    scale: Array1<f64>,
}

fn standardise(x: &Array2<f64>) -> Standardised {
    let n = x.nrows().max(1) as f64;
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(x.ncols()));
    let sd: Array1<f64> = (0..x.ncols())
        .map(|j| {
            let m = mean[j];
            (x.column(j).iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt()
        })
        .collect();
    // Constant columns carry nothing; a zero scale drops them.
    let scale = sd.mapv(|s| if s > 1e-12 { 1.0 / s } else { 0.0 });
    let xs = (x - &mean) * &scale;
    Standardised { x: xs, mean, scale }
}

/// Solves (K + λI) a = y for symmetric positive definite K by Cholesky.
fn solve(k: &Array2<f64>, lambda: f64, y: &Array1<f64>) -> Result<Array1<f64>, MapError> {
    let n = k.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let mut s = k[[i, j]] + if i == j { lambda } else { 0.0 };
            for p in 0..j {
                s -= l[[i, p]] * l[[j, p]];
            }
            if i == j {
                if s <= 0.0 {
                    return Err(MapError::Invalid(format!("ridge: system not positive definite at λ = {lambda}")));
                }
                l[[i, i]] = s.sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    let mut z = Array1::<f64>::zeros(n);
    for i in 0..n {
        let s: f64 = (0..i).map(|p| l[[i, p]] * z[p]).sum();
        z[i] = (y[i] - s) / l[[i, i]];
    }
    let mut a = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|p| l[[p, i]] * a[p]).sum();
        a[i] = (z[i] - s) / l[[i, i]];
    }
    Ok(a)
}

fn fit_at(x: &Array2<f64>, y: &[f64], lambdas: &[f64]) -> Result<Vec<(Array1<f64>, f64, Standardised)>, MapError> {
    let s = standardise(x);
    let ym = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let yc = Array1::from_iter(y.iter().map(|v| v - ym));
    let k = s.x.dot(&s.x.t());
    let mut out = Vec::new();
    for &lam in lambdas {
        let a = solve(&k, lam, &yc)?;
        let coef = s.x.t().dot(&a);
        out.push((coef, ym, Standardised { x: Array2::zeros((0, 0)), mean: s.mean.clone(), scale: s.scale.clone() }));
    }
    Ok(out)
}

fn predict_with(coef: &Array1<f64>, intercept: f64, mean: &Array1<f64>, scale: &Array1<f64>, x: &Array2<f64>) -> Vec<f64> {
    let xs = (x - mean) * scale;
    xs.dot(coef).iter().map(|v| v + intercept).collect()
}

/// Fits ridge with λ chosen by `folds`-fold cross-validation over `lambdas`.
pub fn fit_cv(x: &Array2<f64>, y: &[f64], lambdas: &[f64], folds: usize, seed: u64) -> Result<RidgeFit, MapError> {
    let n = x.nrows();
    if n < folds.max(2) || n != y.len() {
        return Err(MapError::Invalid(format!("ridge: {n} rows are too few for {folds}-fold cross-validation")));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut sse = vec![0.0; lambdas.len()];
    for f in 0..folds {
        let test: Vec<usize> = idx.iter().copied().enumerate().filter(|(k, _)| k % folds == f).map(|(_, i)| i).collect();
        let train: Vec<usize> = idx.iter().copied().enumerate().filter(|(k, _)| k % folds != f).map(|(_, i)| i).collect();
        let xt = x.select(Axis(0), &train);
        let yt: Vec<f64> = train.iter().map(|&i| y[i]).collect();
        let xv = x.select(Axis(0), &test);
        for (k, (coef, b, s)) in fit_at(&xt, &yt, lambdas)?.into_iter().enumerate() {
            let p = predict_with(&coef, b, &s.mean, &s.scale, &xv);
            sse[k] += p.iter().zip(&test).map(|(p, &i)| (p - y[i]).powi(2)).sum::<f64>();
        }
    }
    let cv: Vec<(f64, f64)> = lambdas.iter().zip(&sse).map(|(&l, &s)| (l, s / n as f64)).collect();
    let best = cv.iter().copied().fold((f64::NAN, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let (coef, intercept, s) = fit_at(x, y, &[best.0])?.into_iter().next().ok_or_else(|| MapError::Invalid("ridge: no fit".into()))?;
    Ok(RidgeFit { lambda: best.0, cv, mean: s.mean, scale: s.scale, coef, intercept })
}

impl RidgeFit {
    pub fn predict(&self, x: &Array2<f64>) -> Vec<f64> {
        predict_with(&self.coef, self.intercept, &self.mean, &self.scale, x)
    }
}
