//! Numbers as people read them in pictures and the report: significant digits without float noise
//! (`2600`, not `2599.9999999999995`), axis and colour-bar ticks on 1, 2, 5 × 10ⁿ steps, and the
//! length of a scale bar.

use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;

/// `v` to `digits` significant digits, trailing zeros dropped (`0.3`, `12.5`, `2600`); an exponent
/// only for very large or very small magnitudes. Not finite: "—".
pub fn sig(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = digits.max(1);
    let mag = v.abs().log10().floor() as i32;
    if !(-4..9).contains(&mag) {
        return format!("{v:.*e}", digits - 1);
    }
    let decimals = (digits as i32 - 1 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    // Rounding can carry into one more digit (9999.7 → "10000"), still without noise.
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    if s == "-0" { "0".into() } else { s }
}

/// A dose (or any measured value) as the pictures and the report print it: 4 significant digits.
pub fn dose(v: f64) -> String {
    sig(v, 4)
}

/// A step of 1, 2 or 5 × 10ⁿ that cuts `range` into about `n` parts.
pub fn nice_step(range: f64, n: usize) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / n.max(1) as f64;
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let m = if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// Decimals that show a multiple of `step` without noise.
pub fn step_decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 2;
    }
    // 1e-9 relative: 0.30000000000000004 as a step still counts as one decimal.
    (-(step * (1.0 + 1e-9)).log10().floor()).clamp(0.0, 12.0) as usize
}

/// Ticks on multiples of a 1, 2, 5 × 10ⁿ step within `lo..=hi` (about `n` of them), as exact as
/// their decimal labels.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return if lo.is_finite() { vec![lo] } else { Vec::new() };
    }
    let step = nice_step(hi - lo, n);
    let d = step_decimals(step) as i32;
    let clean = |v: f64| {
        let k = 10f64.powi(d);
        let r = (v * k).round() / k;
        if r == 0.0 { 0.0 } else { r }
    };
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| clean(k as f64 * step)).collect()
}

/// The smallest multiple of the tick step at or above `v` (a colour-bar top of 0.4, not 0.39).
pub fn nice_top(v: f64, n: usize) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let step = nice_step(v, n);
    let top = (v / step - 1e-9).ceil() * step;
    let k = 10f64.powi(step_decimals(step) as i32);
    (top * k).round() / k
}

/// A tick label with the decimals its step needs, never "-0".
pub fn tick_label(v: f64, step: f64) -> String {
    fmt_tick(v, step_decimals(step))
}

/// Decimals that tell apart the axis ticks plotters will place on `lo..hi` (plotters' steps are
/// 1, 2 or 5 × 10ᵏ, so one significant digit of the step is enough).
pub fn tick_decimals(lo: f64, hi: f64, max_ticks: usize) -> usize {
    let ticks = RangedCoordf64::from(lo..hi).key_points(max_ticks);
    let step = ticks.windows(2).map(|w| (w[1] - w[0]).abs()).fold(f64::INFINITY, f64::min);
    if !step.is_finite() || step <= 0.0 {
        return 2;
    }
    step_decimals(step)
}

/// A tick label: fixed decimals, and never "-0".
pub fn fmt_tick(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        s.trim_start_matches('-').to_owned()
    } else {
        s
    }
}

/// Scale-bar length in nm for an image `width_nm` wide: the 1, 2 or 5 × 10ⁿ nm closest (by ratio)
/// to 0.21 of the width, so the bar covers about a fifth of it (always between 1/8 and 1/3).
pub fn scale_bar_nm(width_nm: f64) -> Option<f64> {
    if !(width_nm.is_finite() && width_nm > 0.0) {
        return None;
    }
    let target = width_nm * 0.21;
    let p = 10f64.powf(target.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .min_by(|a, b| (a / target).ln().abs().total_cmp(&(b / target).ln().abs()))
        .map(|v| {
            // 10^n computed as a power can carry noise (0.30000000000000004); keep it round.
            let d = step_decimals(v) as i32;
            let k = 10f64.powi(d);
            (v * k).round() / k
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits_without_noise() {
        assert_eq!(dose(2599.9999999999995), "2600");
        assert_eq!(dose(1523.7), "1524");
        assert_eq!(dose(12.5), "12.5");
        assert_eq!(dose(0.30000000000000004), "0.3");
        assert_eq!(dose(0.012345), "0.01235");
        assert_eq!(dose(-0.00001), "-1.000e-5");
        assert_eq!(dose(0.0), "0");
        assert_eq!(dose(f64::NAN), "—");
        assert_eq!(dose(123456.0), "123456");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 0.39, 4), vec![0.0, 0.1, 0.2, 0.3]);
        assert_eq!(nice_top(0.39, 4), 0.4);
        assert_eq!(nice_top(0.78, 4), 0.8);
        assert_eq!(ticks(0.0, 0.4, 4), vec![0.0, 0.1, 0.2, 0.3, 0.4]);
        assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
        assert_eq!(ticks(0.0, 5200.0, 6), vec![0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]);
    }

    #[test]
    fn scale_bars_are_round_and_about_a_fifth() {
        for w in [0.37, 1.0, 3.2, 5.0, 10.0, 28.0, 51.0, 99.0, 310.0, 1234.0] {
            let l = scale_bar_nm(w).expect("length");
            let m = l / 10f64.powf(l.log10().floor());
            assert!([1.0, 2.0, 5.0].iter().any(|x| (m - x).abs() < 1e-9), "{w} nm → {l}");
            assert!((1.0 / 8.0..=1.0 / 3.0).contains(&(l / w)), "{w} nm → {l}");
        }
        assert_eq!(scale_bar_nm(5.0), Some(1.0));
        assert_eq!(scale_bar_nm(0.0), None);
    }
}
