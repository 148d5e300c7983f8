//! Critical-dose fit and forecast.
//!
//! The damage signal of frame i against the reference (e.g. mean dissimilarity) follows
//!   s(D) = b                                   for D ≤ D₀
//!   s(D) = b + A · (1 − exp(−(D − D₀) / Dc))   for D > D₀
//! with D the cumulative dose, Dc the critical dose (Egerton's 1/e dose), b the noise floor that shot
//! noise puts under every comparison, and D₀ an incubation dose before damage starts (0 for the
//! classic curve; many materials show one). For fixed (D₀, Dc) the model is linear in (b, A), so the
//! fit scans D₀ over the observed doses and Dc on a log grid, solving (b, A) by least squares, then
//! refines (b, A, ln Dc) by damped Gauss–Newton at the best D₀. σ(Dc) comes from the covariance
//! s²·(JᵀJ)⁻¹ at the optimum, conditional on D₀.

use serde::{Deserialize, Serialize};

/// A fitted damage curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub critical_dose_e_per_a2: f64,
    /// Incubation dose D₀ before the signal starts to rise.
    pub onset_dose_e_per_a2: f64,
    /// One standard deviation; `None` when the data cannot determine it.
    pub critical_dose_sigma_e_per_a2: Option<f64>,
    pub saturation: f64,
    pub noise_floor: f64,
    /// Root-mean-square residual.
    pub rms_residual: f64,
    pub points: usize,
}

impl Fit {
    pub fn predict(&self, dose: f64) -> f64 {
        self.noise_floor
            + self.saturation
                * (1.0 - (-(dose - self.onset_dose_e_per_a2).max(0.0) / self.critical_dose_e_per_a2).exp())
    }

    /// Cumulative dose at which the curve reaches `threshold`; `None` if it never does.
    pub fn dose_to_reach(&self, threshold: f64) -> Option<f64> {
        let rise = threshold - self.noise_floor;
        if rise <= 0.0 {
            return Some(0.0);
        }
        (self.saturation > rise)
            .then(|| self.onset_dose_e_per_a2 - self.critical_dose_e_per_a2 * (1.0 - rise / self.saturation).ln())
    }

    /// The curve rises (positive saturation) and its critical dose is known to better than ±100 %.
    pub fn determined(&self) -> bool {
        self.saturation > 0.0
            && self.critical_dose_e_per_a2.is_finite()
            && self.critical_dose_sigma_e_per_a2.is_some_and(|s| s < self.critical_dose_e_per_a2)
    }

    /// Why a fit is not reported (`None` when it is determined).
    pub fn rejection(&self) -> Option<String> {
        if self.determined() {
            return None;
        }
        Some(if self.saturation <= 0.0 {
            format!("not determined: the fitted curve does not rise (saturation {:.3})", self.saturation)
        } else {
            format!(
                "not determined: Dc = {:.3e} e⁻/Å² with an uncertainty of {} — the damage curve has not bent over yet",
                self.critical_dose_e_per_a2,
                self.critical_dose_sigma_e_per_a2.map_or("unknown".into(), |s| format!("± {s:.3e} e⁻/Å²"))
            )
        })
    }
}

/// A fit as outputs report it: the fit when the data determine it, else `None` and the reason.
pub fn reported(fit: Option<Fit>) -> (Option<Fit>, Option<String>) {
    match fit {
        Some(f) if f.determined() => (Some(f), None),
        Some(f) => (None, f.rejection()),
        None => (None, Some("not determined: too few analysed frames with a known dose".into())),
    }
}

/// Points beyond this are thinned (every k-th kept, the newest always) so a fit stays cheap however
/// long a series runs.
pub const MAX_POINTS: usize = 512;
/// Incubation doses tried.
const ONSET_CANDIDATES: usize = 48;

/// Least-squares (b, A) for fixed (D₀, Dc); returns (b, A, sum of squared residuals).
fn linear_part(d: &[f64], s: &[f64], d0: f64, dc: f64) -> (f64, f64, f64) {
    let n = d.len() as f64;
    let g: Vec<f64> = d.iter().map(|&x| 1.0 - (-(x - d0).max(0.0) / dc).exp()).collect();
    let (sg, ss, sgg, sgs) = g
        .iter()
        .zip(s)
        .fold((0.0, 0.0, 0.0, 0.0), |(a, b, c, e), (&gi, &si)| (a + gi, b + si, c + gi * gi, e + gi * si));
    let det = n * sgg - sg * sg;
    let (b, a) =
        if det.abs() > 1e-300 { ((ss * sgg - sg * sgs) / det, (n * sgs - sg * ss) / det) } else { (ss / n, 0.0) };
    let ssr = g.iter().zip(s).map(|(&gi, &si)| (si - b - a * gi).powi(2)).sum();
    (b, a, ssr)
}

/// Solves the 3×3 system `m · x = v` (Gaussian elimination with pivoting).
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    for c in 0..3 {
        let p = (c..3).max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))?;
        if m[p][c].abs() < 1e-300 {
            return None;
        }
        m.swap(c, p);
        v.swap(c, p);
        for r in c + 1..3 {
            let f = m[r][c] / m[c][c];
            let pivot = m[c];
            for (x, p) in m[r].iter_mut().zip(pivot).skip(c) {
                *x -= f * p;
            }
            v[r] -= f * v[c];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        x[r] = (v[r] - (r + 1..3).map(|k| m[r][k] * x[k]).sum::<f64>()) / m[r][r];
    }
    Some(x)
}

fn inverse3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut inv = [[0.0; 3]; 3];
    for (c, e) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]].into_iter().enumerate() {
        let x = solve3(m, e)?;
        for r in 0..3 {
            inv[r][c] = x[r];
        }
    }
    Some(inv)
}

/// JᵀJ and Jᵀr for θ = (b, A, ln Dc) at fixed D₀.
fn normal_equations(d: &[f64], s: &[f64], d0: f64, b: f64, a: f64, dc: f64) -> ([[f64; 3]; 3], [f64; 3], f64) {
    let (mut jtj, mut jtr, mut ssr) = ([[0.0; 3]; 3], [0.0; 3], 0.0);
    for (&x, &y) in d.iter().zip(s) {
        let x = (x - d0).max(0.0);
        let e = (-x / dc).exp();
        let r = y - (b + a * (1.0 - e));
        // ∂f/∂b = 1, ∂f/∂A = 1 − e, ∂f/∂ln Dc = −A · e · x / Dc
        let j = [1.0, 1.0 - e, -a * e * x / dc];
        for p in 0..3 {
            jtr[p] += j[p] * r;
            for q in 0..3 {
                jtj[p][q] += j[p] * j[q];
            }
        }
        ssr += r * r;
    }
    (jtj, jtr, ssr)
}

/// Fits the damage curve to (cumulative dose, signal) points; needs at least four points with
/// distinct doses.
pub fn fit(dose: &[f64], signal: &[f64]) -> Option<Fit> {
    let mut pts: Vec<(f64, f64)> = dose
        .iter()
        .zip(signal)
        .filter(|(d, s)| d.is_finite() && s.is_finite() && **d >= 0.0)
        .map(|(&d, &s)| (d, s))
        .collect();
    if pts.len() > MAX_POINTS {
        let step = pts.len().div_ceil(MAX_POINTS);
        let last = pts[pts.len() - 1];
        pts = pts.into_iter().step_by(step).collect();
        if pts.last() != Some(&last) {
            pts.push(last);
        }
    }
    if pts.len() < 4 {
        return None;
    }
    let (d, s): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
    let (dmin, dmax) = d.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    if dmax <= dmin {
        return None;
    }
    // D₀ candidates: 0, and observed doses with at least two points at or before them (a floor
    // must be seen) and three after (a rise must be seen).
    let mut sorted = d.clone();
    sorted.sort_by(f64::total_cmp);
    let usable = sorted.len().saturating_sub(3);
    let stride = usable.div_ceil(ONSET_CANDIDATES).max(1);
    let onsets: Vec<f64> = (1..usable).step_by(stride).map(|i| sorted[i]).collect();
    // Dc grid from a tenth of the mean dose step to 100× the dose range.
    let lo = ((dmax - dmin) / d.len() as f64 / 10.0).max(dmax * 1e-4).ln();
    let hi = (dmax * 100.0).ln();
    let scan = |d0: f64, best: &mut (f64, f64, (f64, f64, f64))| {
        for k in 0..=80 {
            let dc = (lo + (hi - lo) * k as f64 / 80.0).exp();
            let cand = linear_part(&d, &s, d0, dc);
            if cand.2 < best.2.2 {
                *best = (d0, dc, cand);
            }
        }
    };
    let mut classic = (0.0, dmax, linear_part(&d, &s, 0.0, dmax));
    scan(0.0, &mut classic);
    let mut delayed = classic;
    for &d0 in &onsets {
        scan(d0, &mut delayed);
    }
    // The extra parameter must earn its place (Bayesian information criterion).
    let n_pts = d.len() as f64;
    let bic = |ssr: f64, k: f64| n_pts * (ssr.max(1e-300) / n_pts).ln() + k * n_pts.ln();
    let best = if delayed.0 > 0.0 && bic(delayed.2.2, 4.0) < bic(classic.2.2, 3.0) { delayed } else { classic };
    let (d0, mut dc) = (best.0, best.1);
    let (mut b, mut a) = (best.2.0, best.2.1);
    let mut lambda = 1e-3;
    let (_, _, mut ssr) = normal_equations(&d, &s, d0, b, a, dc);
    for _ in 0..50 {
        let (jtj, jtr, _) = normal_equations(&d, &s, d0, b, a, dc);
        let mut damped = jtj;
        for (p, row) in damped.iter_mut().enumerate() {
            row[p] *= 1.0 + lambda;
        }
        let Some(step) = solve3(damped, jtr) else { break };
        let (nb, na, ndc) = (b + step[0], a + step[1], (dc.ln() + step[2].clamp(-2.0, 2.0)).exp());
        let (_, _, nssr) = normal_equations(&d, &s, d0, nb, na, ndc);
        if nssr < ssr {
            (b, a, dc, ssr) = (nb, na, ndc, nssr);
            lambda = (lambda / 3.0).max(1e-9);
            if step.iter().all(|v| v.abs() < 1e-10) {
                break;
            }
        } else {
            lambda *= 4.0;
            if lambda > 1e8 {
                break;
            }
        }
    }
    let n = d.len();
    let (jtj, _, _) = normal_equations(&d, &s, d0, b, a, dc);
    let free = if d0 > 0.0 { 4.0 } else { 3.0 };
    let s2 = ssr / (n as f64 - free).max(1.0);
    let sigma = inverse3(jtj).map(|cov| cov[2][2] * s2).filter(|v| v.is_finite() && *v >= 0.0).map(|v| dc * v.sqrt());
    Some(Fit {
        critical_dose_e_per_a2: dc,
        onset_dose_e_per_a2: d0,
        critical_dose_sigma_e_per_a2: sigma,
        saturation: a,
        noise_floor: b,
        rms_residual: (ssr / n as f64).sqrt(),
        points: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_curve_with_noise() {
        // Dc = 300 e/Å², A = 0.5, floor 0.04, 50 e/Å² per frame, deterministic "noise".
        let d: Vec<f64> = (1..=14).map(|i| 50.0 * i as f64).collect();
        let s: Vec<f64> = d
            .iter()
            .enumerate()
            .map(|(i, &x)| 0.04 + 0.5 * (1.0 - (-x / 300.0).exp()) + 0.004 * ((i * 7 % 5) as f64 - 2.0))
            .collect();
        let f = fit(&d, &s).expect("fit");
        assert!((f.critical_dose_e_per_a2 - 300.0).abs() < 30.0, "{f:?}");
        let sigma = f.critical_dose_sigma_e_per_a2.expect("sigma");
        assert!(sigma > 0.0 && sigma < 60.0, "{f:?}");
        assert!((f.noise_floor - 0.04).abs() < 0.02, "{f:?}");
        // Threshold 0.3 is reached at D = −Dc ln(1 − 0.26/0.5) ≈ 220 e/Å².
        let d_star = f.dose_to_reach(0.3).expect("reached");
        assert!((d_star - 220.0).abs() < 25.0, "{d_star}");
        assert_eq!(f.dose_to_reach(0.9), None, "above saturation: never");
    }

    #[test]
    fn finds_an_incubation_dose() {
        // Flat at 0.1 until 400 e/Å², then Dc = 200 e/Å² towards +0.6.
        let d: Vec<f64> = (1..=20).map(|i| 50.0 * i as f64).collect();
        let s: Vec<f64> = d
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                0.1 + 0.6 * (1.0 - (-(x - 400.0).max(0.0) / 200.0).exp()) + 0.003 * ((i * 3 % 4) as f64 - 1.5)
            })
            .collect();
        let f = fit(&d, &s).expect("fit");
        assert!((f.onset_dose_e_per_a2 - 400.0).abs() <= 50.0, "{f:?}");
        assert!((f.critical_dose_e_per_a2 - 200.0).abs() < 40.0, "{f:?}");
        assert!(f.determined(), "{f:?}");
    }

    #[test]
    fn refuses_too_little_data() {
        assert!(fit(&[1.0, 2.0, 3.0], &[0.0, 0.1, 0.2]).is_none());
        assert!(fit(&[5.0; 6], &[0.1; 6]).is_none());
    }
}
