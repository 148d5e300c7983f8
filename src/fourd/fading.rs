//! Spot fading: I(D) = I₀·exp(−D/Dc) + c against cumulative dose D → the critical dose Dc ± σ.

use serde::Serialize;

/// A fit of the fading model; `None` from [`fit_fading`] when it is not determined.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FadingFit {
    pub i0: f64,
    pub dc_e_per_a2: f64,
    pub dc_sigma_e_per_a2: f64,
    pub background: f64,
    /// Fraction of the initial intensity lost at the last point, (I(0) − I(D_last)) / I₀.
    pub fraction_lost: f64,
    pub points: usize,
}

/// Least-squares fit of I₀·exp(−D/Dc) + c to (dose, intensity) pairs (≥ 3 points, Dc > 0,
/// σ from the fit's covariance). Returns `None` when the data do not determine Dc (no decay,
/// σ larger than Dc, a non-finite result): a fit is reported only when it means something.
///
/// Variable projection: for a decay rate k = 1/Dc the model is linear in (I₀, c), solved in closed
/// form; the residual sum of squares is minimised over k by a log-spaced grid over
/// [0.01, 100] / (dose span) and a golden-section search around the best grid point. A minimum at
/// either end of that range means the data do not determine Dc (no decay seen, or all of it before
/// the second point). σ(Dc) = σ(k)/k² from the 3×3 covariance s²·(JᵀJ)⁻¹, s² = RSS/(n − 3)
/// (with 3 points, an exact fit: s² = RSS).
pub fn fit_fading(dose_e_per_a2: &[f64], intensity: &[f64]) -> Option<FadingFit> {
    let n = dose_e_per_a2.len();
    if n < 3 || intensity.len() != n || dose_e_per_a2.iter().chain(intensity).any(|v| !v.is_finite()) {
        return None;
    }
    let (d, y) = (dose_e_per_a2, intensity);
    let dmin = d.iter().copied().fold(f64::INFINITY, f64::min);
    let dmax = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = dmax - dmin;
    if span.is_nan() || span <= 0.0 {
        return None;
    }
    let (lo, hi) = ((0.01 / span).ln(), (100.0 / span).ln());
    const GRID: usize = 241;
    let at = |j: usize| lo + (hi - lo) * j as f64 / (GRID - 1) as f64;
    let rss = |lnk: f64| linear_part(d, y, lnk.exp()).map_or(f64::INFINITY, |p| p.2);
    let best = (0..GRID).min_by(|&a, &b| rss(at(a)).total_cmp(&rss(at(b))))?;
    if best == 0 || best == GRID - 1 {
        return None;
    }
    // Golden section on ln k between the grid neighbours of the best point.
    let (mut a, mut b) = (at(best - 1), at(best + 1));
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (b - g * (b - a), a + g * (b - a));
    let (mut f1, mut f2) = (rss(x1), rss(x2));
    for _ in 0..100 {
        if f1 <= f2 {
            b = x2;
            x2 = x1;
            f2 = f1;
            x1 = b - g * (b - a);
            f1 = rss(x1);
        } else {
            a = x1;
            x1 = x2;
            f1 = f2;
            x2 = a + g * (b - a);
            f2 = rss(x2);
        }
        if (b - a).abs() < 1e-13 {
            break;
        }
    }
    let k = ((a + b) / 2.0).exp();
    let (i0, c, rss_k) = linear_part(d, y, k)?;
    if i0.is_nan() || i0 <= 0.0 || k.is_nan() || k <= 0.0 {
        return None;
    }
    // Jacobian of I₀·e^(−kD) + c in (I₀, k, c).
    let mut jtj = [[0.0f64; 3]; 3];
    for &di in d {
        let e = (-k * di).exp();
        let row = [e, -i0 * di * e, 1.0];
        for r in 0..3 {
            for q in 0..3 {
                jtj[r][q] += row[r] * row[q];
            }
        }
    }
    let inv = invert3(&jtj)?;
    let s2 = rss_k / (n.saturating_sub(3)).max(1) as f64;
    let var_k = s2 * inv[1][1];
    if var_k.is_nan() || var_k < 0.0 {
        return None;
    }
    let dc = 1.0 / k;
    let sigma = var_k.sqrt() / (k * k);
    let d_last = d[n - 1];
    let fraction_lost = 1.0 - (-k * d_last).exp();
    let fit = FadingFit { i0, dc_e_per_a2: dc, dc_sigma_e_per_a2: sigma, background: c, fraction_lost, points: n };
    let finite = [fit.i0, fit.dc_e_per_a2, fit.dc_sigma_e_per_a2, fit.background, fit.fraction_lost]
        .iter()
        .all(|v| v.is_finite());
    (finite && sigma <= dc).then_some(fit)
}

/// For a fixed k: the least-squares (I₀, c) of y ≈ I₀·e^(−kD) + c and its residual sum of squares.
fn linear_part(d: &[f64], y: &[f64], k: f64) -> Option<(f64, f64, f64)> {
    let n = d.len() as f64;
    let e: Vec<f64> = d.iter().map(|&di| (-k * di).exp()).collect();
    let me = e.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut see, mut sey) = (0.0, 0.0);
    for (ei, yi) in e.iter().zip(y) {
        see += (ei - me) * (ei - me);
        sey += (ei - me) * (yi - my);
    }
    // e constant over the points (k·span → 0 in f64): I₀ and c are not separable.
    if see.is_nan() || see <= 1e-300 {
        return None;
    }
    let i0 = sey / see;
    let c = my - i0 * me;
    let rss = e.iter().zip(y).map(|(ei, yi)| (yi - i0 * ei - c).powi(2)).sum();
    Some((i0, c, rss))
}

fn invert3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            // Cofactor of (c, r), for the transpose.
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn model(d: f64, i0: f64, dc: f64, c: f64) -> f64 {
        i0 * (-d / dc).exp() + c
    }

    #[test]
    fn exact_data_recovers_dc() {
        for (dc, c) in [(80.0, 0.0), (750.0, 120.0), (0.35, 3.0)] {
            let d: Vec<f64> = (0..8).map(|i| i as f64 * dc / 4.0).collect();
            let y: Vec<f64> = d.iter().map(|&x| model(x, 1000.0, dc, c)).collect();
            let fit = fit_fading(&d, &y).expect("fit");
            assert!((fit.dc_e_per_a2 / dc - 1.0).abs() < 1e-6, "{fit:?}");
            assert!((fit.i0 / 1000.0 - 1.0).abs() < 1e-6 && (fit.background - c).abs() < 1e-3 * (1.0 + c), "{fit:?}");
            assert!(fit.dc_sigma_e_per_a2 < 1e-3 * dc, "{fit:?}");
            assert!((fit.fraction_lost - (1.0 - (-7.0f64 / 4.0).exp())).abs() < 1e-6);
            assert_eq!(fit.points, 8);
        }
        // Three points are enough for exact data.
        let d = [0.0, 50.0, 100.0];
        let y: Vec<f64> = d.iter().map(|&x| model(x, 10.0, 60.0, 1.0)).collect();
        let fit = fit_fading(&d, &y).expect("fit");
        assert!((fit.dc_e_per_a2 / 60.0 - 1.0).abs() < 1e-6, "{fit:?}");
    }

    #[test]
    fn noisy_data_within_ten_percent_with_a_finite_sigma() {
        let dc = 150.0;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut covered = 0;
        for trial in 0..20 {
            let d: Vec<f64> = (0..8).map(|i| i as f64 * 2.0 * dc / 7.0).collect();
            let y: Vec<f64> = d
                .iter()
                .map(|&x| model(x, 1000.0, dc, 50.0) * (1.0 + 0.01 * 1.732 * (2.0 * rng.random::<f64>() - 1.0)))
                .collect();
            let fit = fit_fading(&d, &y).unwrap_or_else(|| panic!("trial {trial}: no fit"));
            assert!((fit.dc_e_per_a2 / dc - 1.0).abs() < 0.10, "trial {trial}: {fit:?}");
            assert!(fit.dc_sigma_e_per_a2.is_finite() && fit.dc_sigma_e_per_a2 > 0.0, "{fit:?}");
            if (fit.dc_e_per_a2 - dc).abs() <= 2.0 * fit.dc_sigma_e_per_a2 {
                covered += 1;
            }
        }
        // σ means something: the truth lies within 2σ in most trials.
        assert!(covered >= 15, "{covered}/20");
    }

    #[test]
    fn undetermined_data_give_no_fit() {
        let d = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(fit_fading(&d, &[5.0; 5]), None, "flat");
        assert_eq!(fit_fading(&d, &[1.0, 2.0, 3.0, 4.0, 5.0]), None, "rising");
        assert_eq!(fit_fading(&d[..2], &[5.0, 4.0]), None, "two points");
        assert_eq!(fit_fading(&d, &[5.0, 4.0, f64::NAN, 3.0, 2.0]), None, "NaN");
        assert_eq!(fit_fading(&[1.0; 5], &[5.0, 4.0, 3.0, 3.0, 2.0]), None, "one dose");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let noise: Vec<f64> = (0..5).map(|_| 100.0 + rng.random::<f64>()).collect();
        assert_eq!(fit_fading(&d, &noise), None, "noise around a flat line");
    }
}
