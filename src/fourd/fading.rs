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
pub fn fit_fading(dose_e_per_a2: &[f64], intensity: &[f64]) -> Option<FadingFit> {
    todo!("fourd-core {} {}", dose_e_per_a2.len(), intensity.len())
}
