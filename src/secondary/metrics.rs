//! Regression scores shared by the secondary stages.

/// Coefficient of determination of `pred` against `truth`; NaN when `truth` is empty or constant
/// (R² is undefined there, and a NaN in a report is honest where 0 or 1 would not be).
pub fn r2(pred: &[f64], truth: &[f64]) -> f64 {
    let n = truth.len();
    if n == 0 {
        return f64::NAN;
    }
    let mean = truth.iter().sum::<f64>() / n as f64;
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let ss_res: f64 = pred.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum();
    if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN }
}

/// Root-mean-square error, in the units of the values.
pub fn rmse(pred: &[f64], truth: &[f64]) -> f64 {
    (pred.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / truth.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_mean_and_undefined() {
        let t = [1.0, 2.0, 3.0];
        assert_eq!(r2(&t, &t), 1.0);
        assert!(r2(&[2.0; 3], &t).abs() < 1e-12, "predicting the mean scores 0");
        assert!(r2(&[1.0], &[1.0]).is_nan() && r2(&[], &[]).is_nan());
        assert!((rmse(&[1.0, 3.0], &[2.0, 2.0]) - 1.0).abs() < 1e-12);
    }
}
