//! Structural descriptors from a unit cell: radial and angular distribution functions with
//! periodic images, after the paper group's `rdfadf` package.
//!
//! - RDF, per centre/neighbour set: distances from every centre atom to every neighbour atom and
//!   periodic image within 10 Å, 200 bins (0.05 Å), counted per centre atom, Gaussian-smoothed with
//!   σ = 2 bins (scipy's `gaussian_filter1d`: reflected edges, kernel to 4σ), then divided by the
//!   shell volume 4πr²Δr: the density of neighbours at distance r (Å⁻³), which tends to the
//!   neighbour species' number density far out and whose integral ∫4πr²ρ dr is the coordination
//!   number.
//! - ADF, per centre/neighbour set: the angle j–i–k at each centre i for every unordered pair of
//!   neighbours j, k within 6 Å, 180 bins over 0..π, counted per centre atom, smoothed with σ = 2
//!   bins (rdfadf leaves smoothing optional; crystal ADFs are spiky, so we smooth as for the RDF).
//! - Partial occupancy: every atom carries its site occupancy; a pair counts o_i·o_j, a triple
//!   o_i·o_j·o_k, and "per centre" divides by Σ o over centres — the expected histogram if sites are
//!   occupied independently. Two atoms closer than 0.5 Å are alternatives for one site (mixed sites,
//!   split positions), never neighbours, so such pairs (and triples containing one) are skipped.
//!
//! Sets (`RDF_SETS`, `ADF_SETS`): Li–Li, Li–anion, Li–all, all–all RDFs; anion–Li–anion and
//! all–all–all ADFs. Anions: N, O, F, S, Cl, Se, Br, Te, I. A structure without Li has all-zero Li
//! blocks. 4 × 200 + 2 × 180 = 1160 values.

use super::cif::{UnitCell, cross, dot};
use super::elements::ElementTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Species {
    Li,
    Anion,
    All,
}

impl Species {
    pub fn name(self) -> &'static str {
        match self {
            Species::Li => "Li",
            Species::Anion => "anion",
            Species::All => "all",
        }
    }

    pub fn matches(self, z: usize) -> bool {
        match self {
            Species::Li => z == 3,
            Species::Anion => ANIONS.contains(&z),
            Species::All => true,
        }
    }
}

/// N, O, F, S, Cl, Se, Br, Te, I.
pub const ANIONS: [usize; 9] = [7, 8, 9, 16, 17, 34, 35, 52, 53];

/// (centre, neighbour) sets of the RDF blocks.
pub const RDF_SETS: [(Species, Species); 4] =
    [(Species::Li, Species::Li), (Species::Li, Species::Anion), (Species::Li, Species::All), (Species::All, Species::All)];
/// (centre, neighbour) sets of the ADF blocks (both neighbours from the neighbour set).
pub const ADF_SETS: [(Species, Species); 2] = [(Species::Li, Species::Anion), (Species::All, Species::All)];

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StructureSettings {
    pub rdf_cutoff_a: f64,
    pub rdf_bins: usize,
    pub rdf_sigma_bins: f64,
    pub adf_cutoff_a: f64,
    pub adf_bins: usize,
    pub adf_sigma_bins: f64,
    /// Atoms closer than this are alternative occupants of one site, not neighbours (Å).
    pub same_site_a: f64,
}

impl Default for StructureSettings {
    fn default() -> Self {
        Self {
            rdf_cutoff_a: 10.0,
            rdf_bins: 200,
            rdf_sigma_bins: 2.0,
            adf_cutoff_a: 6.0,
            adf_bins: 180,
            adf_sigma_bins: 2.0,
            same_site_a: 0.5,
        }
    }
}

impl StructureSettings {
    pub fn dim(&self) -> usize {
        RDF_SETS.len() * self.rdf_bins + ADF_SETS.len() * self.adf_bins
    }

    /// (name, start, length) of each sub-block, in descriptor order.
    pub fn blocks(&self) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (c, n) in RDF_SETS {
            out.push((format!("RDF {}-{}", c.name(), n.name()), start, self.rdf_bins));
            start += self.rdf_bins;
        }
        for (c, n) in ADF_SETS {
            out.push((format!("ADF {n}-{c}-{n}", c = c.name(), n = n.name()), start, self.adf_bins));
            start += self.adf_bins;
        }
        out
    }

    pub fn labels(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.dim());
        for (name, _, len) in self.blocks() {
            let (step, unit) = if name.starts_with("RDF") {
                (self.rdf_cutoff_a / self.rdf_bins as f64, "A")
            } else {
                (180.0 / self.adf_bins as f64, "deg")
            };
            for i in 0..len {
                out.push(format!("{}_{:.3}{unit}", name.replace(' ', "_"), (i as f64 + 0.5) * step));
            }
        }
        out
    }
}

/// A neighbour of a centre: displacement (Å), distance, atom index and weight.
struct Neighbour {
    d: [f64; 3],
    r: f64,
    j: usize,
}

/// Every atom and periodic image within `cutoff_a` of atom `i` (itself at zero offset excluded).
fn neighbours(cell: &UnitCell, cart: &[[f64; 3]], i: usize, cutoff_a: f64) -> Vec<Neighbour> {
    let l = &cell.lattice_a;
    let v = cell.volume_a3();
    // Interplanar spacings: how many cells fit in the cutoff along each axis.
    let h = [v / norm(cross(l[1], l[2])), v / norm(cross(l[2], l[0])), v / norm(cross(l[0], l[1]))];
    let fi = cell.atoms[i].frac;
    let mut out = Vec::new();
    for (j, aj) in cell.atoms.iter().enumerate() {
        let df = [0, 1, 2].map(|k| aj.frac[k] - fi[k]);
        let lo = [0, 1, 2].map(|k| (-cutoff_a / h[k] - df[k]).ceil() as i64);
        let hi = [0, 1, 2].map(|k| (cutoff_a / h[k] - df[k]).floor() as i64);
        for n0 in lo[0]..=hi[0] {
            for n1 in lo[1]..=hi[1] {
                for n2 in lo[2]..=hi[2] {
                    if j == i && n0 == 0 && n1 == 0 && n2 == 0 {
                        continue;
                    }
                    let t = [n0 as f64, n1 as f64, n2 as f64];
                    let d = [0, 1, 2].map(|k| cart[j][k] - cart[i][k] + t[0] * l[0][k] + t[1] * l[1][k] + t[2] * l[2][k]);
                    let r = norm(d);
                    if r < cutoff_a {
                        out.push(Neighbour { d, r, j });
                    }
                }
            }
        }
    }
    out
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Per-centre weighted pair counts in `bins` bins over [0, cutoff) (not smoothed) and Σ centre
/// occupancy.
pub fn rdf_counts(cell: &UnitCell, centre: Species, neighbour: Species, cutoff_a: f64, bins: usize, same_site_a: f64) -> (Vec<f64>, f64) {
    let cart: Vec<[f64; 3]> = cell.atoms.iter().map(|a| cell.cartesian(a.frac)).collect();
    let mut counts = vec![0.0; bins];
    let mut n_centre = 0.0;
    let width = cutoff_a / bins as f64;
    for (i, a) in cell.atoms.iter().enumerate() {
        if !centre.matches(a.z) {
            continue;
        }
        n_centre += a.occupancy;
        for nb in neighbours(cell, &cart, i, cutoff_a) {
            let b = &cell.atoms[nb.j];
            if nb.r < same_site_a || !neighbour.matches(b.z) {
                continue;
            }
            let k = ((nb.r / width) as usize).min(bins - 1);
            counts[k] += a.occupancy * b.occupancy;
        }
    }
    if n_centre > 0.0 {
        counts.iter_mut().for_each(|c| *c /= n_centre);
    }
    (counts, n_centre)
}

/// Per-centre weighted angle counts j–i–k in `bins` bins over [0, π] (not smoothed).
pub fn adf_counts(cell: &UnitCell, centre: Species, neighbour: Species, cutoff_a: f64, bins: usize, same_site_a: f64) -> (Vec<f64>, f64) {
    let cart: Vec<[f64; 3]> = cell.atoms.iter().map(|a| cell.cartesian(a.frac)).collect();
    let mut counts = vec![0.0; bins];
    let mut n_centre = 0.0;
    for (i, a) in cell.atoms.iter().enumerate() {
        if !centre.matches(a.z) {
            continue;
        }
        n_centre += a.occupancy;
        let nbs: Vec<Neighbour> = neighbours(cell, &cart, i, cutoff_a)
            .into_iter()
            .filter(|nb| nb.r >= same_site_a && neighbour.matches(cell.atoms[nb.j].z))
            .collect();
        for (p, n1) in nbs.iter().enumerate() {
            let w1 = a.occupancy * cell.atoms[n1.j].occupancy;
            for n2 in &nbs[p + 1..] {
                let jk = [0, 1, 2].map(|k| n1.d[k] - n2.d[k]);
                if norm(jk) < same_site_a {
                    continue;
                }
                let cos = (dot(n1.d, n2.d) / (n1.r * n2.r)).clamp(-1.0, 1.0);
                let theta = cos.acos();
                let k = ((theta / std::f64::consts::PI * bins as f64) as usize).min(bins - 1);
                counts[k] += w1 * cell.atoms[n2.j].occupancy;
            }
        }
    }
    if n_centre > 0.0 {
        counts.iter_mut().for_each(|c| *c /= n_centre);
    }
    (counts, n_centre)
}

/// scipy.ndimage.gaussian_filter1d(h, sigma) with its defaults (mode 'reflect', truncate 4.0).
pub fn gaussian_filter1d(h: &[f64], sigma: f64) -> Vec<f64> {
    if sigma <= 0.0 || h.is_empty() {
        return h.to_vec();
    }
    let radius = (4.0 * sigma + 0.5) as isize;
    let mut kernel: Vec<f64> = (-radius..=radius).map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp()).collect();
    let s: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= s);
    let n = h.len() as isize;
    // 'reflect': (d c b a | a b c d | d c b a)
    let at = |i: isize| -> f64 {
        let period = 2 * n;
        let mut m = i.rem_euclid(period);
        if m >= n {
            m = period - 1 - m;
        }
        h[m as usize]
    };
    (0..n).map(|i| (-radius..=radius).zip(&kernel).map(|(o, k)| k * at(i + o)).sum()).collect()
}

/// The 1160 structural descriptors (with the default settings) of `cell`.
pub fn descriptor(cell: &UnitCell, s: &StructureSettings) -> Vec<f64> {
    let mut out = Vec::with_capacity(s.dim());
    let dr = s.rdf_cutoff_a / s.rdf_bins as f64;
    for (c, n) in RDF_SETS {
        let (counts, _) = rdf_counts(cell, c, n, s.rdf_cutoff_a, s.rdf_bins, s.same_site_a);
        let smooth = gaussian_filter1d(&counts, s.rdf_sigma_bins);
        out.extend(smooth.iter().enumerate().map(|(k, v)| {
            let r = (k as f64 + 0.5) * dr;
            v / (4.0 * std::f64::consts::PI * r * r * dr)
        }));
    }
    for (c, n) in ADF_SETS {
        let (counts, _) = adf_counts(cell, c, n, s.adf_cutoff_a, s.adf_bins, s.same_site_a);
        out.extend(gaussian_filter1d(&counts, s.adf_sigma_bins));
    }
    out
}

/// Cell composition as a formula, for cross-checks against the table's formula.
pub fn cell_formula(cell: &UnitCell) -> String {
    let t = ElementTable::get();
    cell.composition().iter().map(|&(z, n)| format!("{}{:.3}", t.symbol(z), n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_filter_conserves_interior_mass() {
        let mut h = vec![0.0; 50];
        h[25] = 1.0;
        let f = gaussian_filter1d(&h, 2.0);
        assert!((f.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(f[25] > f[24] && (f[24] - f[26]).abs() < 1e-15);
    }
}
