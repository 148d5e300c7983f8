//! Synthetic HAADF-STEM frames of a crystal that the beam damages, with the truth known.
//!
//! A [`Specimen`] is a two-sublattice crystal (Gaussian atom columns with position and brightness
//! jitter). [`Damage`] turns regions amorphous: atom columns fade and a smooth random texture with
//! the same mean takes their place. Frames get Poisson shot noise for a chosen number of electrons
//! per pixel and an optional drift. Everything is seeded: the same inputs give the same frames.

pub mod file;
pub mod fourd;
pub mod image;
pub mod publish;
pub mod series;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};

#[derive(Clone, Copy, Debug)]
struct Atom {
    x: f64,
    y: f64,
    amp: f64,
    sigma: f64,
    /// Uniform in [0, 1): the column vanishes once the local vacancy share exceeds it.
    u: f64,
}

/// Dose inputs of a simulated series (all known).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimulatedDose {
    pub per_frame_e_per_a2: f64,
    pub beam_current_pa: f64,
    pub dwell_time_us: f64,
    pub pixel_size_a: f64,
}

/// A simulated series with known damage: what the HDF5 writer and the evaluation suite need.
pub trait Simulation {
    /// The series id (written into its session file).
    fn name(&self) -> String;
    /// What was simulated, in one line.
    fn describe(&self) -> String;
    /// (width, height) of every frame.
    fn size_px(&self) -> (usize, usize);
    fn frames(&self) -> usize;
    /// Detector counts of frame `i` (u16, Poisson noise) and its truth.
    fn frame(&self, i: usize) -> (Vec<u16>, series::FrameTruth);
    /// Per-pixel true damage (0..1) of frame `i` in reference-frame coordinates.
    fn truth_map(&self, i: usize) -> Vec<f32>;
    /// First frame with any damage.
    fn onset_frame(&self) -> Option<usize>;
    fn model(&self) -> DamageModel;
    fn electrons_per_px(&self) -> f64;
    fn dose(&self) -> SimulatedDose;
    /// Every parameter, for the file's provenance.
    fn provenance(&self) -> serde_json::Value;
}

impl Simulation for series::Series {
    fn name(&self) -> String {
        format!("simulated-{}", self.spec.model.name())
    }
    fn describe(&self) -> String {
        format!("beamwatch simulate ({} damage, {} e⁻/px per frame)", self.spec.model.name(), self.spec.electrons_per_px)
    }
    fn size_px(&self) -> (usize, usize) {
        (self.spec.size_px, self.spec.size_px)
    }
    fn frames(&self) -> usize {
        self.spec.frames
    }
    fn frame(&self, i: usize) -> (Vec<u16>, series::FrameTruth) {
        series::Series::frame(self, i)
    }
    fn truth_map(&self, i: usize) -> Vec<f32> {
        series::Series::truth_map(self, i)
    }
    fn onset_frame(&self) -> Option<usize> {
        series::Series::onset_frame(self)
    }
    fn model(&self) -> DamageModel {
        self.spec.model
    }
    fn electrons_per_px(&self) -> f64 {
        self.spec.electrons_per_px
    }
    fn dose(&self) -> SimulatedDose {
        SimulatedDose {
            per_frame_e_per_a2: self.spec.dose_per_frame_e_per_a2(),
            beam_current_pa: self.spec.beam_current_pa(),
            dwell_time_us: self.spec.dwell_time_us,
            pixel_size_a: self.spec.pixel_size_a,
        }
    }
    fn provenance(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

/// A damaged disc: inside `radius_px` the crystal is amorphous with weight `amount` (0..1),
/// falling off over `edge_px`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Disc {
    pub cx: f64,
    pub cy: f64,
    pub radius_px: f64,
    pub edge_px: f64,
    pub amount: f64,
}

impl Disc {
    /// Damage fraction at (x, y).
    pub fn at(&self, x: f64, y: f64) -> f64 {
        let d = ((x - self.cx).powi(2) + (y - self.cy).powi(2)).sqrt();
        let edge = self.edge_px.max(1e-9);
        self.amount * ((self.radius_px - d) / edge + 0.5).clamp(0.0, 1.0)
    }
}

/// The damage state of a frame.
/// How damage shows in the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DamageModel {
    /// Regions turn amorphous: columns fade into a disordered texture (knock-on, radiolysis).
    #[default]
    Amorphous,
    /// Columns keep their place but lose up to 70 % of their contrast (e.g. Li loss, partial
    /// occupancy); no texture appears. The subtle case.
    ContrastLoss,
    /// Isolated columns vanish at random within the damaged regions, up to 35 % of them.
    Vacancies,
}

impl DamageModel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Amorphous => "amorphous",
            Self::ContrastLoss => "contrast-loss",
            Self::Vacancies => "vacancies",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Damage {
    pub discs: Vec<Disc>,
    pub model: DamageModel,
}

/// Share of columns removed where the damage amount is 1 (vacancy model).
const MAX_VACANCY_FRACTION: f64 = 0.35;
/// Contrast lost where the damage amount is 1 (contrast-loss model).
const MAX_CONTRAST_LOSS: f64 = 0.7;

impl Damage {
    /// Damage fraction at (x, y) in specimen coordinates (strongest disc wins).
    pub fn at(&self, x: f64, y: f64) -> f64 {
        self.discs.iter().map(|d| d.at(x, y)).fold(0.0, f64::max)
    }
}

pub struct Specimen {
    pub width: usize,
    pub height: usize,
    atoms: Vec<Atom>,
    background: f64,
    /// Smooth zero-mean unit-variance texture that replaces the lattice where it is amorphous.
    amorphous: Vec<f64>,
    lattice_mean: f64,
    lattice_std: f64,
}

impl Specimen {
    /// A crystal filling `width × height` px with lattice spacing `spacing_px` (≥ 4).
    pub fn new(width: usize, height: usize, spacing_px: f64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = spacing_px.max(4.0);
        let jitter = Normal::new(0.0, 0.04 * a).expect("finite std");
        let mut atoms = Vec::new();
        let (nx, ny) = ((width as f64 / a).ceil() as i64 + 1, (height as f64 / a).ceil() as i64 + 1);
        for j in -1..ny {
            for i in -1..nx {
                for (ox, oy, amp, sigma) in [(0.5, 0.5, 1.0, 0.17 * a), (0.0, 0.0, 0.45, 0.14 * a)] {
                    atoms.push(Atom {
                        x: (i as f64 + ox) * a + jitter.sample(&mut rng),
                        y: (j as f64 + oy) * a + jitter.sample(&mut rng),
                        amp: amp * rng.random_range(0.9..1.1),
                        sigma,
                        u: 0.0,
                    });
                }
            }
        }
        // From their own stream, so adding them left every other draw (and older series) as it was.
        let mut vac = ChaCha8Rng::seed_from_u64(seed ^ 0x7ac4_11c7);
        for a in &mut atoms {
            a.u = vac.random_range(0.0..1.0);
        }
        let mut s = Self {
            width,
            height,
            atoms,
            background: 0.08,
            amorphous: smooth_noise(width, height, 0.2 * a, &mut rng),
            lattice_mean: 0.0,
            lattice_std: 1.0,
        };
        let clean = s.render_clean(&Damage::default(), (0.0, 0.0));
        let n = clean.len() as f64;
        s.lattice_mean = clean.iter().sum::<f64>() / n;
        s.lattice_std = (clean.iter().map(|v| (v - s.lattice_mean).powi(2)).sum::<f64>() / n).sqrt();
        s
    }

    /// Noise-free intensity (≈ 0..1) with `damage`, the specimen shifted by `drift_px` = (dx, dy).
    pub fn render_clean(&self, damage: &Damage, drift_px: (f64, f64)) -> Vec<f64> {
        let (w, h) = (self.width, self.height);
        let mut img = vec![self.background; w * h];
        let (dx, dy) = drift_px;
        for atom in &self.atoms {
            let (ax, ay) = (atom.x + dx, atom.y + dy);
            let fade = self.fade(damage, atom);
            if fade <= 0.0 {
                continue;
            }
            let r = 4.0 * atom.sigma;
            let (x0, x1) = ((ax - r).floor().max(0.0) as usize, ((ax + r).ceil().max(0.0) as usize).min(w));
            let (y0, y1) = ((ay - r).floor().max(0.0) as usize, ((ay + r).ceil().max(0.0) as usize).min(h));
            let k = -0.5 / (atom.sigma * atom.sigma);
            for y in y0..y1 {
                let ddy = (y as f64 - ay).powi(2);
                for x in x0..x1 {
                    img[y * w + x] += fade * atom.amp * (k * ((x as f64 - ax).powi(2) + ddy)).exp();
                }
            }
        }
        if !damage.discs.is_empty() && damage.model == DamageModel::Amorphous {
            for y in 0..h {
                for x in 0..w {
                    // Damage and texture are fixed to the specimen, so they drift with it.
                    let (sx, sy) = (x as f64 - dx, y as f64 - dy);
                    let d = damage.at(sx, sy);
                    if d > 0.0 {
                        // Sampled between pixels (bilinear): a texture snapped to whole pixels
                        // would drift in whole-pixel jumps, unlike the specimen.
                        let texture = self.lattice_mean + 0.6 * self.lattice_std * bilinear(&self.amorphous, w, h, sx, sy);
                        img[y * w + x] +=
                            d * (texture - self.lattice_mean) + d * (self.lattice_mean - self.background) * 0.5;
                    }
                }
            }
        }
        img
    }

    /// A detector frame: clean intensity scaled to `electrons_per_px` at intensity 1, with Poisson
    /// shot noise, as counts (`None` = noise-free, scaled to 0..65535/2).
    pub fn render_counts(
        &self,
        damage: &Damage,
        drift_px: (f64, f64),
        electrons_per_px: Option<f64>,
        seed: u64,
    ) -> Vec<f32> {
        let clean = self.render_clean(damage, drift_px);
        match electrons_per_px {
            Some(e) if e > 0.0 => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                clean
                    .iter()
                    .map(|&v| {
                        let mean = (v.max(0.0) * e).max(1e-9);
                        Poisson::new(mean).map(|p| p.sample(&mut rng) as f32).unwrap_or(mean as f32)
                    })
                    .collect()
            }
            _ => clean.iter().map(|&v| (v * 30000.0) as f32).collect(),
        }
    }

    /// Per-pixel true damage fraction of a frame (in frame coordinates, drift included).
    /// What is left of a column's intensity (1 intact, 0 gone).
    fn fade(&self, damage: &Damage, atom: &Atom) -> f64 {
        let d = damage.at(atom.x, atom.y);
        match damage.model {
            DamageModel::Amorphous => 1.0 - d,
            DamageModel::ContrastLoss => 1.0 - MAX_CONTRAST_LOSS * d,
            DamageModel::Vacancies => {
                if atom.u < MAX_VACANCY_FRACTION * d {
                    0.0
                } else {
                    1.0
                }
            }
        }
    }

    /// Per-pixel truth in specimen (= reference-frame) coordinates, 0..1: the local damage amount
    /// for regional models; for vacancies, 1 within two column widths of a vanished column.
    pub fn truth_map(&self, damage: &Damage) -> Vec<f32> {
        let (w, h) = (self.width, self.height);
        match damage.model {
            DamageModel::Amorphous | DamageModel::ContrastLoss => self.damage_map(damage, (0.0, 0.0)),
            DamageModel::Vacancies => {
                let mut map = vec![0f32; w * h];
                for a in self.atoms.iter().filter(|a| self.fade(damage, a) == 0.0) {
                    let r = 2.0 * a.sigma;
                    let (x0, x1) = ((a.x - r).floor().max(0.0) as usize, ((a.x + r).ceil().max(0.0) as usize).min(w));
                    let (y0, y1) = ((a.y - r).floor().max(0.0) as usize, ((a.y + r).ceil().max(0.0) as usize).min(h));
                    for y in y0..y1 {
                        for x in x0..x1 {
                            if (x as f64 - a.x).powi(2) + (y as f64 - a.y).powi(2) <= r * r {
                                map[y * w + x] = 1.0;
                            }
                        }
                    }
                }
                map
            }
        }
    }

    pub fn damage_map(&self, damage: &Damage, drift_px: (f64, f64)) -> Vec<f32> {
        let (w, h) = (self.width, self.height);
        (0..w * h).map(|i| damage.at((i % w) as f64 - drift_px.0, (i / w) as f64 - drift_px.1) as f32).collect()
    }
}

/// Zero-mean, unit-variance Gaussian noise smoothed with a Gaussian of `sigma_px`.
pub(crate) fn smooth_noise(w: usize, h: usize, sigma_px: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let normal = Normal::new(0.0, 1.0).expect("unit normal");
    let raw: Vec<f64> = (0..w * h).map(|_| normal.sample(rng)).collect();
    let mut out = gaussian_blur(&raw, w, h, sigma_px);
    let n = out.len() as f64;
    let mean = out.iter().sum::<f64>() / n;
    let std = (out.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-12);
    out.iter_mut().for_each(|v| *v = (*v - mean) / std);
    out
}

/// `img` (w × h) at (x, y) by bilinear interpolation, clamped to the edge pixels.
fn bilinear(img: &[f64], w: usize, h: usize, x: f64, y: f64) -> f64 {
    let (x, y) = (x.clamp(0.0, (w - 1) as f64), y.clamp(0.0, (h - 1) as f64));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    (1.0 - fy) * ((1.0 - fx) * img[y0 * w + x0] + fx * img[y0 * w + x1])
        + fy * ((1.0 - fx) * img[y1 * w + x0] + fx * img[y1 * w + x1])
}

/// Separable Gaussian blur with edge clamping.
pub fn gaussian_blur(img: &[f64], w: usize, h: usize, sigma: f64) -> Vec<f64> {
    if sigma <= 0.0 {
        return img.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let ks: f64 = k.iter().sum();
    let pass = |src: &[f64], horizontal: bool| -> Vec<f64> {
        let mut dst = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let o = j as isize - r;
                    let (sx, sy) = if horizontal {
                        ((x as isize + o).clamp(0, w as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + o).clamp(0, h as isize - 1) as usize)
                    };
                    acc += kv * src[sy * w + sx];
                }
                dst[y * w + x] = acc / ks;
            }
        }
        dst
    };
    pass(&pass(img, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_frame_and_damage_changes_it_only_where_damaged() {
        let s = Specimen::new(80, 60, 10.0, 7);
        let clean = s.render_clean(&Damage::default(), (0.0, 0.0));
        assert_eq!(clean, Specimen::new(80, 60, 10.0, 7).render_clean(&Damage::default(), (0.0, 0.0)));
        let d = Damage {
            discs: vec![Disc { cx: 20.0, cy: 20.0, radius_px: 8.0, edge_px: 2.0, amount: 1.0 }],
            ..Damage::default()
        };
        let dmg = s.render_clean(&d, (0.0, 0.0));
        // Far from the disc (beyond an atom's reach) nothing changes; at its centre a lot does.
        assert!((dmg[50 * 80 + 70] - clean[50 * 80 + 70]).abs() < 1e-12);
        let centre: f64 =
            (15..25).flat_map(|y| (15..25).map(move |x| y * 80 + x)).map(|i| (dmg[i] - clean[i]).abs()).sum();
        assert!(centre > 1.0, "{centre}");
        let truth = s.damage_map(&d, (0.0, 0.0));
        assert_eq!(truth[20 * 80 + 20], 1.0);
        assert_eq!(truth[50 * 80 + 70], 0.0);
    }

    #[test]
    fn every_damage_model_changes_the_image_only_where_its_truth_says() {
        let s = Specimen::new(120, 120, 10.0, 3);
        let clean = s.render_clean(&Damage::default(), (0.0, 0.0));
        for model in [DamageModel::Amorphous, DamageModel::ContrastLoss, DamageModel::Vacancies] {
            let d =
                Damage { discs: vec![Disc { cx: 60.0, cy: 60.0, radius_px: 30.0, edge_px: 3.0, amount: 1.0 }], model };
            let img = s.render_clean(&d, (0.0, 0.0));
            let truth = s.truth_map(&d);
            let near = |i: usize| {
                let (x, y) = ((i % 120) as i64, (i / 120) as i64);
                (-6..=6).any(|dy| {
                    (-6..=6).any(|dx| {
                        truth
                            .get(((y + dy).clamp(0, 119) * 120 + (x + dx).clamp(0, 119)) as usize)
                            .is_some_and(|&t| t > 0.0)
                    })
                })
            };
            let changed: Vec<usize> = (0..img.len()).filter(|&i| (img[i] - clean[i]).abs() > 1e-9).collect();
            assert!(!changed.is_empty(), "{model:?} changes something");
            // Changes stay within an atom's reach of the true damage.
            assert!(changed.iter().all(|&i| near(i)), "{model:?}: change outside the truth");
            let damaged = truth.iter().filter(|&&t| t > 0.0).count();
            match model {
                // Vacancies: a minority of columns, so truth covers much less than the disc.
                DamageModel::Vacancies => assert!(damaged > 0 && damaged < 1500, "{damaged} px"),
                _ => assert!(damaged > 2500, "{model:?}: {damaged} px"),
            }
        }
    }
}
