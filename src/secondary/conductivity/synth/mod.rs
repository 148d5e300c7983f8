//! Synthetic pellets whose conductivity follows physics, so the models have a truth to learn.
//!
//! Each sample draws a composition x ∈ [0.05, 0.40], y ∈ [0.05, 0.15] and heating temperatures
//! T1 ∈ [900, 1300] °C, T2 ∈ [1100, 1350] °C (the paper's ranges), plus a hidden pellet factor
//! h ~ N(0, 1) (powder batch, pressing) that nothing but the images reveals. With the descriptors
//! scaled to u ∈ [−1, 1] ([`Scaled`]):
//!
//! - porosity p = 0.17 − 0.03·u2 − 0.02·u1 + 0.10·h (clamped to 0.01..0.42): hotter = denser;
//! - grain diameter d = 8 px · exp(0.12·u2 + 0.06·ux − 0.25·h): hotter = larger grains;
//! - β fraction = 0.14 / (1 + e^(4(u1 + 0.2))) + 0.04·(uy + 1): low T1 and Si make columnar β;
//! - grain-boundary / bulk conductivity ratio r = 0.08 · 10^(0.35·ux) (Ca changes the boundary
//!   chemistry; invisible in the image);
//! - bulk log10 σ_bulk = −4.35 + 0.30·uy + 0.10·ux − 0.25·ux² − 0.30·u2² + 0.10·u1·u2 (S/cm): Si adds
//!   Li carriers, too much Ca or too hot a second firing (Li loss) lowers it.
//!
//! Each field of view is rendered by [`microstructure::render`]; its pixel conductivities (α = 1,
//! β = 0.02, boundary = r, pore ≈ 0, all × σ_bulk) go through the Laplace solve in x and in y; the
//! pellet's microstructure factor M is the geometric mean over its imaged fields and both
//! directions. The "measured" σ = σ_bulk · M · 10^ε with ε ~ N(0, 0.03) (impedance measurement
//! scatter, decades).

pub mod microstructure;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

pub use microstructure::{MicroParams, Phase};

use super::dataset::{Dataset, Sample, SemImage, Truth};
use super::laplace::{self, Direction};
use super::{ConductivityError, Result};

/// β-phase conductivity relative to α.
pub const BETA_RATIO: f64 = 0.02;
/// Grain-boundary thickness δ, px.
pub const BOUNDARY_PX: f64 = 1.2;
/// Impedance-measurement scatter, decades (1σ).
pub const MEASUREMENT_SCATTER_DECADES: f64 = 0.03;

#[derive(Clone, Debug, serde::Serialize)]
pub struct SynthSpec {
    pub samples: usize,
    /// Images per sample drawn uniformly from this inclusive range (the paper: 1–3).
    pub images_min: usize,
    pub images_max: usize,
    /// Edge of every image, px.
    pub size_px: usize,
    pub seed: u64,
}

/// The four descriptors mapped onto [−1, 1] over the paper's ranges.
#[derive(Clone, Copy, Debug)]
pub struct Scaled {
    pub ux: f64,
    pub uy: f64,
    pub u1: f64,
    pub u2: f64,
}

impl Scaled {
    pub fn of(s: &Sample) -> Self {
        Self { ux: (s.x - 0.225) / 0.175, uy: (s.y - 0.10) / 0.05, u1: (s.t1_c - 1100.0) / 200.0, u2: (s.t2_c - 1225.0) / 125.0 }
    }
}

/// Microstructure of a pellet from its descriptors and hidden factor.
pub fn micro_params(u: Scaled, hidden: f64) -> MicroParams {
    MicroParams {
        grain_px: 8.0 * (0.10 * u.u2 + 0.05 * u.ux - 0.20 * hidden).exp(),
        porosity: (0.20 - 0.03 * u.u2 - 0.02 * u.u1 + 0.11 * hidden).clamp(0.02, 0.45),
        beta_fraction: (0.10 / (1.0 + (4.0 * (u.u1 + 0.2)).exp()) + 0.03 * (u.uy + 1.0)).clamp(0.0, 0.4),
        boundary_px: BOUNDARY_PX,
    }
}

pub fn boundary_ratio(u: Scaled) -> f64 {
    0.08 * 10f64.powf(0.15 * u.ux)
}

pub fn log10_bulk_s_per_cm(u: Scaled) -> f64 {
    -4.30 + 0.40 * u.uy + 0.15 * u.ux - 0.30 * u.ux * u.ux - 0.40 * u.u2 * u.u2 + 0.15 * u.u1 * u.u2
}

struct Generated {
    sample: Sample,
    fovs: Vec<microstructure::FieldOfView>,
    hidden: f64,
    params: MicroParams,
    ratio: f64,
    log_bulk: f64,
    log_micro: f64,
}

fn generate_sample(spec: &SynthSpec, i: usize) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(i as u64 + 1);
    let sample_draw = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| lo + (hi - lo) * rng.random::<f64>();
    // Rounded as the CSV writes them, so importing the PNGs + CSV gives back this very dataset.
    let round4 = |v: f64| (v * 1e4).round() / 1e4;
    let x = round4(sample_draw(&mut rng, 0.05, 0.40));
    let y = round4(sample_draw(&mut rng, 0.05, 0.15));
    let t1 = sample_draw(&mut rng, 900.0, 1300.0).round();
    let t2 = sample_draw(&mut rng, 1100.0, 1350.0).round();
    let std_normal = Normal::new(0.0f64, 1.0).unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
    let hidden = std_normal.sample(&mut rng).clamp(-2.5, 2.5);
    let n_img = rng.random_range(spec.images_min..=spec.images_max.max(spec.images_min));
    let mut sample =
        Sample { id: format!("S{:03}", i + 1), x, y, t1_c: t1, t2_c: t2, conductivity_s_per_cm: None };
    let u = Scaled::of(&sample);
    let params = micro_params(u, hidden);
    let ratio = boundary_ratio(u);
    let log_bulk = log10_bulk_s_per_cm(u);
    let fovs: Vec<_> = (0..n_img).map(|_| microstructure::render(&params, spec.size_px, &mut rng)).collect();
    let mut ln_m = 0.0;
    for f in &fovs {
        let map = microstructure::conductivity_map(&f.phase, BETA_RATIO, ratio);
        for dir in [Direction::X, Direction::Y] {
            ln_m += laplace::effective_conductivity(&map, f.width, f.height, dir).sigma_eff.max(1e-12).ln();
        }
    }
    let log_micro = ln_m / (2 * fovs.len()) as f64 / std::f64::consts::LN_10;
    let eps = MEASUREMENT_SCATTER_DECADES * std_normal.sample(&mut rng);
    let sigma = 10f64.powf(log_bulk + log_micro + eps);
    sample.conductivity_s_per_cm = Some(format!("{sigma:.6e}").parse().unwrap_or(sigma));
    Generated { sample, fovs, hidden, params, ratio, log_bulk, log_micro }
}

/// Generates the dataset; `on_sample` is told each finished sample (progress bar).
pub fn generate(spec: &SynthSpec, on_sample: impl Fn() + Sync) -> Result<Dataset> {
    if spec.samples == 0 || spec.images_min == 0 || spec.images_max < spec.images_min {
        return Err(ConductivityError::Settings(format!(
            "synth needs ≥ 1 sample and 1 ≤ images-min ≤ images-max (got {} samples, {}–{} images)",
            spec.samples, spec.images_min, spec.images_max
        )));
    }
    if spec.size_px < super::import::MIN_EDGE_PX {
        return Err(ConductivityError::Settings(format!(
            "image size {} px is below the {} px minimum",
            spec.size_px,
            super::import::MIN_EDGE_PX
        )));
    }
    let gens: Vec<Generated> = (0..spec.samples)
        .into_par_iter()
        .map(|i| {
            let g = generate_sample(spec, i);
            on_sample();
            g
        })
        .collect();
    let mut ds = Dataset {
        source: format!(
            "beamwatch conductivity synth: {} samples, {}–{} images of {} px, seed {}",
            spec.samples, spec.images_min, spec.images_max, spec.size_px, spec.seed
        ),
        ..Dataset::default()
    };
    let mut truth = Truth::default();
    for (s, g) in gens.into_iter().enumerate() {
        for (k, f) in g.fovs.into_iter().enumerate() {
            ds.images.push(SemImage {
                sample: s,
                width: f.width,
                height: f.height,
                pixels: f.gray,
                source: format!("{}_{}.png", g.sample.id, k + 1),
            });
            truth.phase.push(f.phase.iter().map(|&p| p as u8).collect());
        }
        truth.hidden_factor.push(g.hidden);
        truth.porosity.push(g.params.porosity);
        truth.grain_px.push(g.params.grain_px);
        truth.beta_fraction.push(g.params.beta_fraction);
        truth.boundary_ratio.push(g.ratio);
        truth.log10_bulk_s_per_cm.push(g.log_bulk);
        truth.log10_microstructure_factor.push(g.log_micro);
        ds.samples.push(g.sample);
    }
    ds.truth = Some(truth);
    Ok(ds)
}

/// What [`write_files`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SynthFiles {
    pub dataset: PathBuf,
    pub images_dir: PathBuf,
    pub table: PathBuf,
    pub truth_table: PathBuf,
}

/// The dataset as HDF5, and the same data as a user would bring it: 8-bit PNGs and a CSV table
/// (`images` column listing each sample's files), plus the hidden truth as a second CSV.
pub fn write_files(ds: &Dataset, out: &Path) -> Result<SynthFiles> {
    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir)
        .map_err(|e| ConductivityError::file(&images_dir, format!("cannot create: {e}")))?;
    for im in &ds.images {
        let path = images_dir.join(&im.source);
        let bytes: Vec<u8> = im.pixels.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(im.width as u32, im.height as u32, bytes)
            .ok_or_else(|| ConductivityError::file(&path, "pixel buffer does not fill the image"))?
            .save(&path)
            .map_err(|e| ConductivityError::file(&path, format!("cannot write PNG: {e}")))?;
    }
    let table = out.join("samples.csv");
    let mut csv_out = String::from("sample_id,x,y,T1_c,T2_c,conductivity_s_per_cm,images\n");
    for (s, sm) in ds.samples.iter().enumerate() {
        let files: Vec<&str> = ds.images.iter().filter(|im| im.sample == s).map(|im| im.source.as_str()).collect();
        csv_out.push_str(&format!(
            "{},{:.4},{:.4},{},{},{:.6e},{}\n",
            sm.id,
            sm.x,
            sm.y,
            sm.t1_c,
            sm.t2_c,
            sm.conductivity_s_per_cm.unwrap_or(f64::NAN),
            files.join(";")
        ));
    }
    std::fs::write(&table, csv_out).map_err(|e| ConductivityError::file(&table, format!("cannot write: {e}")))?;
    let truth_table = out.join("truth.csv");
    if let Some(t) = &ds.truth {
        let mut s = String::from(
            "sample_id,hidden_factor,porosity,grain_px,beta_fraction,boundary_ratio,log10_bulk_s_per_cm,log10_microstructure_factor,log10_conductivity_s_per_cm\n",
        );
        for (i, sm) in ds.samples.iter().enumerate() {
            s.push_str(&format!(
                "{},{:.4},{:.4},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                sm.id,
                t.hidden_factor[i],
                t.porosity[i],
                t.grain_px[i],
                t.beta_fraction[i],
                t.boundary_ratio[i],
                t.log10_bulk_s_per_cm[i],
                t.log10_microstructure_factor[i],
                sm.log10_conductivity().unwrap_or(f64::NAN)
            ));
        }
        std::fs::write(&truth_table, s).map_err(|e| ConductivityError::file(&truth_table, format!("cannot write: {e}")))?;
    }
    let dataset = ds.write(&out.join("dataset.h5"))?;
    Ok(SynthFiles { dataset, images_dir, table, truth_table })
}
