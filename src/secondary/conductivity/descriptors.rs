//! The paper's 33 descriptors (its Table 3) of a sample and their standardisation.
//!
//! Base seven: [Ca] = x, [Si] = y, [Li] = 1 + 2x + y, [Zr] = 2 − x, [P] = 3 − y (moles per formula
//! unit of Li(1+2x+y) Ca(x) Zr(2−x) Si(y) P(3−y) O12), T1 and T2 (first and second heating, °C);
//! their seven squares; and the 19 pairwise products the table lists. Of the 21 possible pairs the
//! table leaves out [P]×T1 and [P]×T2; we follow the printed table exactly, row by row.

use serde::{Deserialize, Serialize};

use super::dataset::Sample;

pub const N_DESCRIPTORS: usize = 33;

/// Names in the order of [`descriptors`], as the paper's Table 3 prints them row by row.
pub const NAMES: [&str; N_DESCRIPTORS] = [
    "[Ca]", "[Si]", "[Li]", "[Zr]", "[P]", "T1", "T2", //
    "[Ca]^2", "[Si]^2", "[Li]^2", "[Zr]^2", "[P]^2", "T1^2", "T2^2", //
    "[Ca]x[Si]", "[Ca]x[Li]", "[Ca]x[Zr]", "[Ca]x[P]", "[Li]x[Zr]", "[Ca]xT1", "[Ca]xT2", //
    "[Si]x[Li]", "[Si]x[Zr]", "[Si]x[P]", "[Li]x[P]", "[Zr]x[P]", "[Si]xT1", "[Si]xT2", //
    "[Li]xT1", "[Li]xT2", "[Zr]xT1", "[Zr]xT2", "T1xT2",
];

/// The 33 raw (unstandardised) descriptors of a sample.
pub fn descriptors(s: &Sample) -> [f64; N_DESCRIPTORS] {
    let (ca, si) = (s.x, s.y);
    let li = 1.0 + 2.0 * s.x + s.y;
    let zr = 2.0 - s.x;
    let p = 3.0 - s.y;
    let (t1, t2) = (s.t1_c, s.t2_c);
    [
        ca, si, li, zr, p, t1, t2, //
        ca * ca, si * si, li * li, zr * zr, p * p, t1 * t1, t2 * t2, //
        ca * si, ca * li, ca * zr, ca * p, li * zr, ca * t1, ca * t2, //
        si * li, si * zr, si * p, li * p, zr * p, si * t1, si * t2, //
        li * t1, li * t2, zr * t1, zr * t2, t1 * t2,
    ]
}

/// Per-column mean and standard deviation of a training set; applied unchanged to held-out data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Statistics over `rows` (population std). A constant column (every training sample fired at
    /// the same T1, say) gets std 1: it then standardises to 0 and carries no weight.
    pub fn fit(rows: &[Vec<f64>]) -> Self {
        let d = rows.first().map_or(0, Vec::len);
        let n = rows.len().max(1) as f64;
        let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let std = (0..d)
            .map(|j| {
                let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
                let s = v.sqrt();
                if s > 1e-12 * (1.0 + mean[j].abs()) { s } else { 1.0 }
            })
            .collect();
        Self { mean, std }
    }

    pub fn apply(&self, row: &[f64]) -> Vec<f32> {
        row.iter().zip(self.mean.iter().zip(&self.std)).map(|(v, (m, s))| ((v - m) / s) as f32).collect()
    }
}

/// The raw descriptor rows of `samples`.
pub fn rows<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<Vec<f64>> {
    samples.into_iter().map(|s| descriptors(s).to_vec()).collect()
}
