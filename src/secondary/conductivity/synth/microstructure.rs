//! One synthetic SEM field of view of a sintered pellet: Voronoi grains of the high-conductivity α
//! phase separated by grain boundaries of thickness δ, elongated (columnar) low-conductivity β
//! grains, and pores; rendered as an SEM-like gray image with the phase of every pixel.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// The phase of a pixel (stored as u8 in `/truth/phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Alpha = 0,
    Beta = 1,
    Boundary = 2,
    Pore = 3,
}

/// What a field of view looks like; the same for every field of view of one pellet.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MicroParams {
    /// Mean grain diameter (equivalent circle), px.
    pub grain_px: f64,
    /// Pore area fraction.
    pub porosity: f64,
    /// β-phase area fraction.
    pub beta_fraction: f64,
    /// Grain-boundary thickness δ, px.
    pub boundary_px: f64,
}

pub struct FieldOfView {
    pub width: usize,
    pub height: usize,
    /// Gray 0..1, quantised to 8 bits (what the PNG holds, so an import reads back the same values).
    pub gray: Vec<f32>,
    pub phase: Vec<Phase>,
}

const GRAY_BOUNDARY: f32 = 0.30;
const GRAY_PORE: f32 = 0.06;
const GRAY_PORE_RIM: f32 = 0.85;
const GRAY_BETA: f32 = 0.80;
const NOISE_SIGMA: f32 = 0.035;

/// Renders a `size × size` field of view.
pub fn render(p: &MicroParams, size: usize, rng: &mut ChaCha8Rng) -> FieldOfView {
    let (w, h) = (size, size);
    let d = p.grain_px.max(2.0);
    let mut phase = vec![Phase::Alpha; w * h];
    let mut gray = vec![0f32; w * h];

    // Voronoi seeds over the image plus a margin of one grain, so edge grains are whole cells.
    let margin = d;
    let span = size as f64 + 2.0 * margin;
    let density = 4.0 / (std::f64::consts::PI * d * d);
    let n_seeds = ((span * span * density).round() as usize).max(2);
    let seeds: Vec<(f64, f64)> =
        (0..n_seeds).map(|_| (rng.random::<f64>() * span - margin, rng.random::<f64>() * span - margin)).collect();
    let tone: Vec<f32> = (0..n_seeds).map(|_| 0.50 + 0.16 * rng.random::<f32>()).collect();
    let grid = SeedGrid::new(&seeds, d, margin, span);
    for y in 0..h {
        for x in 0..w {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let (i1, d1, d2) = grid.nearest_two(&seeds, px, py);
            let k = y * w + x;
            // d2 − d1 is about twice the distance to the bisector: a band of width δ around it.
            if d2 - d1 < p.boundary_px {
                phase[k] = Phase::Boundary;
                gray[k] = GRAY_BOUNDARY;
            } else {
                gray[k] = tone[i1];
            }
        }
    }

    // Columnar β grains: rectangles 2–4 grains long and 0.6 grains wide, any orientation, with a
    // boundary of their own, added until the β area fraction is reached.
    let target_beta = (p.beta_fraction * (w * h) as f64) as usize;
    let mut n_beta = 0usize;
    let mut tries = 0;
    while n_beta < target_beta && tries < 10_000 {
        tries += 1;
        let (cx, cy) = (rng.random::<f64>() * w as f64, rng.random::<f64>() * h as f64);
        let len = d * (2.0 + 2.0 * rng.random::<f64>());
        let wid = d * 0.6;
        let th = rng.random::<f64>() * std::f64::consts::PI;
        let (c, s) = (th.cos(), th.sin());
        let r = (len / 2.0 + wid).ceil() as isize;
        let tone = GRAY_BETA + 0.06 * (rng.random::<f32>() - 0.5);
        for yy in (cy as isize - r).max(0)..(cy as isize + r).min(h as isize) {
            for xx in (cx as isize - r).max(0)..(cx as isize + r).min(w as isize) {
                let (dx, dy) = (xx as f64 + 0.5 - cx, yy as f64 + 0.5 - cy);
                let (u, v) = ((dx * c + dy * s).abs(), (-dx * s + dy * c).abs());
                if u > len / 2.0 || v > wid / 2.0 {
                    continue;
                }
                let k = yy as usize * w + xx as usize;
                let edge = (len / 2.0 - u).min(wid / 2.0 - v) < p.boundary_px / 2.0;
                if edge {
                    // A β grain's own boundary, but never cut into a β grain placed before.
                    if phase[k] != Phase::Beta {
                        phase[k] = Phase::Boundary;
                        gray[k] = GRAY_BOUNDARY;
                    }
                } else {
                    if phase[k] != Phase::Beta {
                        n_beta += 1;
                    }
                    phase[k] = Phase::Beta;
                    gray[k] = tone;
                }
            }
        }
    }

    // Pores: disks of 0.25–0.6 grain diameters radius until the porosity is reached; a bright rim
    // just outside each (edge contrast, as SEM shows pore edges).
    let target_pore = (p.porosity * (w * h) as f64) as usize;
    let mut n_pore = 0usize;
    let mut tries = 0;
    let mut rim = vec![false; w * h];
    while n_pore < target_pore && tries < 10_000 {
        tries += 1;
        let (cx, cy) = (rng.random::<f64>() * w as f64, rng.random::<f64>() * h as f64);
        let rad = d * (0.25 + 0.35 * rng.random::<f64>());
        let r = (rad + 1.5).ceil() as isize;
        for yy in (cy as isize - r).max(0)..(cy as isize + r).min(h as isize) {
            for xx in (cx as isize - r).max(0)..(cx as isize + r).min(w as isize) {
                let dist = ((xx as f64 + 0.5 - cx).powi(2) + (yy as f64 + 0.5 - cy).powi(2)).sqrt();
                let k = yy as usize * w + xx as usize;
                if dist <= rad {
                    if phase[k] != Phase::Pore {
                        n_pore += 1;
                    }
                    phase[k] = Phase::Pore;
                    gray[k] = GRAY_PORE;
                    rim[k] = false;
                } else if dist <= rad + 1.2 && phase[k] != Phase::Pore {
                    rim[k] = true;
                }
            }
        }
    }
    for k in 0..w * h {
        if rim[k] && phase[k] != Phase::Pore {
            gray[k] = 0.5 * (gray[k] + GRAY_PORE_RIM);
        }
    }

    // Detector blur (3×3, centre-weighted) and shot-like noise, then 8-bit quantisation.
    let blurred = blur3(&gray, w, h);
    let noise = Normal::new(0.0f32, NOISE_SIGMA).unwrap_or_else(|_| Normal::new(0.0, 0.03).expect("fixed σ"));
    let gray = blurred.iter().map(|&v| quantise(v + noise.sample(rng))).collect();
    FieldOfView { width: w, height: h, gray, phase }
}

pub fn quantise(v: f32) -> f32 {
    (v.clamp(0.0, 1.0) * 255.0).round() / 255.0
}

fn blur3(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    let k = [0.25f32, 0.5, 0.25];
    let at = |x: isize, y: isize| src[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize];
    let mut out = vec![0f32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let mut s = 0.0;
            for (j, ky) in k.iter().enumerate() {
                for (i, kx) in k.iter().enumerate() {
                    s += ky * kx * at(x + i as isize - 1, y + j as isize - 1);
                }
            }
            out[y as usize * w + x as usize] = s;
        }
    }
    out
}

/// Seeds bucketed on a grid of one grain diameter, so a pixel searches only nearby cells.
struct SeedGrid {
    cell: f64,
    origin: f64,
    n: usize,
    buckets: Vec<Vec<usize>>,
}

impl SeedGrid {
    fn new(seeds: &[(f64, f64)], cell: f64, margin: f64, span: f64) -> Self {
        let n = ((span / cell).ceil() as usize).max(1);
        let mut buckets = vec![Vec::new(); n * n];
        for (i, &(x, y)) in seeds.iter().enumerate() {
            let (cx, cy) = (((x + margin) / cell) as usize, ((y + margin) / cell) as usize);
            buckets[cy.min(n - 1) * n + cx.min(n - 1)].push(i);
        }
        Self { cell, origin: -margin, n, buckets }
    }

    /// (index of the nearest seed, its distance, the second-nearest distance).
    fn nearest_two(&self, seeds: &[(f64, f64)], x: f64, y: f64) -> (usize, f64, f64) {
        let cx = ((x - self.origin) / self.cell) as isize;
        let cy = ((y - self.origin) / self.cell) as isize;
        let (mut b1, mut d1, mut d2) = (0usize, f64::INFINITY, f64::INFINITY);
        // Rings of cells until the second-nearest seed is certainly found.
        for ring in 0..self.n as isize {
            for gy in cy - ring..=cy + ring {
                for gx in cx - ring..=cx + ring {
                    if (gy - cy).abs() != ring && (gx - cx).abs() != ring {
                        continue;
                    }
                    if gx < 0 || gy < 0 || gx >= self.n as isize || gy >= self.n as isize {
                        continue;
                    }
                    for &i in &self.buckets[gy as usize * self.n + gx as usize] {
                        let d = ((seeds[i].0 - x).powi(2) + (seeds[i].1 - y).powi(2)).sqrt();
                        if d < d1 {
                            d2 = d1;
                            d1 = d;
                            b1 = i;
                        } else if d < d2 {
                            d2 = d;
                        }
                    }
                }
            }
            // Every seed outside ring `ring` is at least `ring · cell` away.
            if d2 <= ring as f64 * self.cell {
                break;
            }
        }
        (b1, d1, d2)
    }
}

/// Relative conductivity of each phase (α grain interior = 1). Pores get a tiny value instead of
/// zero so the Laplace system stays non-singular; 1e-4 is far below anything that carries current.
pub fn conductivity_map(phase: &[Phase], beta: f64, boundary: f64) -> Vec<f64> {
    phase
        .iter()
        .map(|p| match p {
            Phase::Alpha => 1.0,
            Phase::Beta => beta,
            Phase::Boundary => boundary,
            Phase::Pore => 1e-4,
        })
        .collect()
}
