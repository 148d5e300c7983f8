//! Compositional descriptors: the `chemhist` histograms over twelve element properties.
//!
//! For each property P (table order AN, EN, MP, PN, PG, MN, AW, AR, IR, CoR, CrR, spdf):
//! 1. single: every element adds its atomic fraction x to the bin holding P (`nodata` → 0);
//! 2. product: every unordered pair of distinct elements adds x₁ + x₂ at ln P₁ + ln P₂ (a `nodata`
//!    term counts 0), range [−0.2·ln max, 2·ln max], the property's bin count, σ = 2·ln max / bins;
//! 3. difference: every pair adds x₁ + x₂ at |P₁ − P₂| (`nodata` → 0), single-histogram settings.
//!
//! Histograms with σ > 0 are smoothed as chemhist's `broad` does: a Gaussian sum over bin lower
//! edges (starting at the second bin, as chemhist does), times the bin width, values below 1e-6
//! set to 0. AN, PN, PG and spdf have σ = 0 in single and difference histograms (not smoothed);
//! products are always smoothed. Bins are [lo, hi) with edges computed by chemhist's expression, so
//! a value on an edge lands in the same bin; values outside the range are dropped (for example a
//! difference of 0 in PN, PG or spdf, whose ranges start at 1).
//!
//! 3 types × 595 bins = 1785 values (the paper says 1782; chemhist gives 1785).

use super::elements::{ElementTable, HistSetting, PROPERTIES};
use super::formula::Composition;

pub const BINS_PER_TYPE: usize = 595;
pub const DIM: usize = 3 * BINS_PER_TYPE;
const SMOOTH_FLOOR: f64 = 1e-6;

/// chemhist's bin of `v`: the i with lower ≤ v < upper, edges as `(max − min) / bins · i + min`.
pub fn bin_of(v: f64, s: &HistSetting) -> Option<usize> {
    let edge = |i: usize| (s.max - s.min) / s.bins as f64 * i as f64 + s.min;
    if !v.is_finite() || v < edge(0) || v >= edge(s.bins) {
        return None;
    }
    let guess = (((v - s.min) / (s.max - s.min)) * s.bins as f64).floor() as isize;
    // The float guess can be one off at an edge; the edge expressions decide.
    (guess - 1..=guess + 1)
        .filter(|&i| i >= 0 && (i as usize) < s.bins)
        .map(|i| i as usize)
        .find(|&i| v >= edge(i) && v < edge(i + 1))
}

/// Histogram of weighted values under `s` (σ > 0: smoothed).
pub fn histogram(values: &[(f64, f64)], s: &HistSetting) -> Vec<f64> {
    let mut h = vec![0.0; s.bins];
    for &(v, w) in values {
        if let Some(i) = bin_of(v, s) {
            h[i] += w.abs();
        }
    }
    if s.sigma > 0.0 { smooth(&h, s) } else { h }
}

/// chemhist's `broad`: out[x] = Σ_{i ≥ 1} h[i] · N(e[i] − e[x]; σ) · (e[i] − e[i−1]).
pub fn smooth(h: &[f64], s: &HistSetting) -> Vec<f64> {
    let edges: Vec<f64> = (0..s.bins).map(|i| (s.max - s.min) / s.bins as f64 * i as f64 + s.min).collect();
    let norm = (2.0 * std::f64::consts::PI * s.sigma * s.sigma).sqrt();
    let two_var = 2.0 * s.sigma * s.sigma;
    (0..s.bins)
        .map(|x| {
            let v: f64 = (1..s.bins)
                .filter(|&i| h[i] != 0.0)
                .map(|i| h[i] / norm * (-(edges[i] - edges[x]).powi(2) / two_var).exp() * (edges[i] - edges[i - 1]))
                .sum();
            if v.abs() < SMOOTH_FLOOR { 0.0 } else { v }
        })
        .collect()
}

/// The product histogram's settings for a property.
pub fn product_setting(s: &HistSetting) -> HistSetting {
    let l = s.max.ln();
    HistSetting { min: -0.2 * l, max: 2.0 * l, bins: s.bins, sigma: 2.0 * l / s.bins as f64 }
}

/// The 1785 compositional descriptors of `c`: singles of all properties, then products, then
/// differences.
pub fn descriptor(c: &Composition) -> Vec<f64> {
    let t = ElementTable::get();
    let x = c.fractions();
    let prop = |z: usize, k: usize| t.by_z(z).and_then(|e| e.props[k]);
    let mut single = Vec::with_capacity(BINS_PER_TYPE);
    let mut product = Vec::with_capacity(BINS_PER_TYPE);
    let mut difference = Vec::with_capacity(BINS_PER_TYPE);
    for (k, s) in t.settings.iter().enumerate() {
        let vals: Vec<(f64, f64)> = x.iter().map(|&(z, w)| (prop(z, k).unwrap_or(0.0), w)).collect();
        single.extend(histogram(&vals, s));
        let mut prods = Vec::new();
        let mut diffs = Vec::new();
        for i in 0..x.len() {
            for j in i + 1..x.len() {
                let (p1, p2) = (prop(x[i].0, k), prop(x[j].0, k));
                let w = x[i].1 + x[j].1;
                prods.push((p1.map_or(0.0, f64::ln) + p2.map_or(0.0, f64::ln), w));
                diffs.push(((p1.unwrap_or(0.0) - p2.unwrap_or(0.0)).abs(), w));
            }
        }
        product.extend(histogram(&prods, &product_setting(s)));
        difference.extend(histogram(&diffs, s));
    }
    single.extend(product);
    single.extend(difference);
    single
}

/// Names of the 1785 values: `EN_12` (single), `ENEN_12` (product), `EN-EN_12` (difference), as
/// chemhist names its columns.
pub fn labels() -> Vec<String> {
    let t = ElementTable::get();
    let mut out = Vec::with_capacity(DIM);
    for pattern in ["{p}_{i}", "{p}{p}_{i}", "{p}-{p}_{i}"] {
        for (k, p) in PROPERTIES.iter().enumerate() {
            for i in 0..t.settings[k].bins {
                out.push(pattern.replace("{p}", p).replace("{i}", &i.to_string()));
            }
        }
    }
    out
}

/// Offset of property `k`'s bins inside one histogram type.
pub fn property_offset(k: usize) -> usize {
    ElementTable::get().settings[..k].iter().map(|s| s.bins).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_and_labels() {
        let c = super::super::formula::parse("Li7La3Zr2O12").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(descriptor(&c).len(), DIM);
        assert_eq!(labels().len(), DIM);
        assert_eq!(labels()[BINS_PER_TYPE], "ANAN_0");
    }

    #[test]
    fn edges_match_chemhist() {
        // MN bins of width 144/102: Mendeleev number 72 (B) sits on edge 68 by chemhist's expression.
        let s = ElementTable::get().settings[5];
        let e68 = (s.max - s.min) / s.bins as f64 * 68.0 + s.min;
        let b = bin_of(72.0, &s);
        assert_eq!(b, Some(if 72.0 >= e68 { 68 } else { 67 }));
    }
}
