//! A series built from a real image: the image (a HAADF-STEM frame a microscope recorded) is the
//! specimen, and the beam damages it as in [`super::series`] — damage nucleates at seeds once the
//! cumulative dose passes their onset and spreads with dose — while it drifts and every frame gets
//! Poisson shot noise for its electrons per pixel. Real lattices are not the simulator's ideal
//! crystal (scan noise, distortions, thickness and contrast variations), so this is the
//! independent test of whatever was tuned on the simulator.
//!
//! Damage models on an image: `amorphous` blends the lattice into the local mean intensity plus a
//! fine random texture; `contrast-loss` shrinks the lattice's contrast around the local mean by up
//! to 70 %. Drift is a Fourier (band-limited, exact) shift of the whole image; frames are cut from
//! its centre, so the wrapped edges never show.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use super::series::{DriftJump, FrameTruth, Nucleation, NucleationSpec, drift_at};
use super::{Damage, DamageModel, SimulatedDose, Simulation, gaussian_blur, smooth_noise};
use crate::dose::ELEMENTARY_CHARGE_C;
use crate::frame::Frame;

/// Parameters of a series built from an image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageSeriesSpec {
    /// Where the image came from (provenance only).
    pub source: String,
    /// Frame edge (px), cut from the image's centre.
    pub size_px: usize,
    pub frames: usize,
    /// Electrons on one scan pixel per frame at the image's brightest (99th percentile) level.
    pub electrons_per_px: f64,
    pub pixel_size_a: f64,
    pub dwell_time_us: f64,
    /// First frame with damage.
    pub onset_frame: usize,
    pub seeds: usize,
    /// Final radius of a damaged region, as a share of the frame side.
    pub max_radius_fraction: f64,
    pub drift_px_per_frame: (f64, f64),
    pub drift_jump: Option<DriftJump>,
    pub model: DamageModel,
    pub seed: u64,
}

impl ImageSeriesSpec {
    /// Damage from frame `onset_frame` on, at `electrons_per_px` per frame, drifting like the
    /// simulator's series.
    pub fn new(source: &str, size_px: usize, frames: usize, onset_frame: usize, electrons_per_px: f64) -> Self {
        Self {
            source: source.to_string(),
            size_px,
            frames,
            electrons_per_px,
            pixel_size_a: 0.5,
            dwell_time_us: 2.0,
            onset_frame,
            seeds: 3,
            max_radius_fraction: 0.22,
            drift_px_per_frame: (0.15, -0.1),
            drift_jump: None,
            model: DamageModel::Amorphous,
            seed: 1,
        }
    }

    pub fn dose_per_frame_e_per_a2(&self) -> f64 {
        self.electrons_per_px / (self.pixel_size_a * self.pixel_size_a)
    }
}

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum ImageSeriesError {
    #[error("a {w}×{h} px image is too small to cut {size} px frames with room for {margin} px of drift")]
    TooSmall { w: usize, h: usize, size: usize, margin: usize },
    #[error("the {0} damage model needs atom columns; an image series supports amorphous and contrast-loss")]
    Model(&'static str),
    #[error("the image has no contrast (its 1st and 99th percentiles are equal)")]
    Flat,
}

pub struct ImageSeries {
    pub spec: ImageSeriesSpec,
    /// The specimen: the image, lightly denoised and scaled so its 1st–99th percentiles span 0.1–1.
    base: Vec<f64>,
    /// Its local mean (the lattice averaged out) and the amorphous texture's amplitude × texture.
    local_mean: Vec<f64>,
    texture: Vec<f64>,
    w: usize,
    h: usize,
    /// Top-left of the frames in the image.
    x0: usize,
    y0: usize,
    nucleation: Nucleation,
}

/// Shot noise stays independent of the specimen's own noise: the specimen is the image smoothed
/// this much (px), below a lattice spacing.
const DENOISE_PX: f64 = 1.0;
/// The local mean that damaged regions tend to: averages over about a unit cell (px).
const LOCAL_MEAN_PX: f64 = 16.0;

impl ImageSeries {
    pub fn new(image: &Frame, spec: ImageSeriesSpec) -> Result<Self, ImageSeriesError> {
        if spec.model == DamageModel::Vacancies {
            return Err(ImageSeriesError::Model("vacancies"));
        }
        let (w, h) = (image.width(), image.height());
        let jump = spec.drift_jump.map_or(0.0, |j| j.dx_px.abs().max(j.dy_px.abs()));
        let travel = spec.drift_px_per_frame.0.abs().max(spec.drift_px_per_frame.1.abs()) * spec.frames as f64;
        let margin = (travel + jump).ceil() as usize + 16;
        if w < spec.size_px + 2 * margin || h < spec.size_px + 2 * margin {
            return Err(ImageSeriesError::TooSmall { w, h, size: spec.size_px, margin });
        }
        let raw: Vec<f64> = image.pixels().iter().map(|&v| v as f64).collect();
        let smooth = gaussian_blur(&raw, w, h, DENOISE_PX);
        let mut sorted = smooth.clone();
        sorted.sort_by(f64::total_cmp);
        let (p1, p99) = (sorted[sorted.len() / 100], sorted[sorted.len() * 99 / 100]);
        if p99 <= p1 {
            return Err(ImageSeriesError::Flat);
        }
        let base: Vec<f64> = smooth.iter().map(|&v| 0.1 + 0.9 * ((v - p1) / (p99 - p1)).clamp(-0.1, 1.2)).collect();
        let local_mean = gaussian_blur(&base, w, h, LOCAL_MEAN_PX);
        let n = base.len() as f64;
        let lattice_std = (base.iter().zip(&local_mean).map(|(b, m)| (b - m).powi(2)).sum::<f64>() / n).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x1a6e);
        let texture = smooth_noise(w, h, 2.0, &mut rng).into_iter().map(|t| 0.6 * lattice_std * t).collect();
        let d = spec.dose_per_frame_e_per_a2();
        let nucleation = Nucleation::new(
            spec.size_px,
            spec.size_px,
            NucleationSpec {
                seeds: spec.seeds,
                // As the simulator: frame i carries (i + 1)·d; nucleate just before `onset_frame`.
                onset_dose_e_per_a2: (spec.onset_frame as f64 + 0.5) * d,
                onset_spread_e_per_a2: 2.0 * d,
                max_radius_px: spec.max_radius_fraction * spec.size_px as f64,
                growth_dose_e_per_a2: 4.0 * d,
                model: spec.model,
            },
            spec.seed,
        );
        let (x0, y0) = ((w - spec.size_px) / 2, (h - spec.size_px) / 2);
        Ok(Self { spec, base, local_mean, texture, w, h, x0, y0, nucleation })
    }

    pub fn cumulative_dose(&self, frame: usize) -> f64 {
        (frame + 1) as f64 * self.spec.dose_per_frame_e_per_a2()
    }

    pub fn drift(&self, frame: usize) -> (f64, f64) {
        drift_at(self.spec.drift_px_per_frame, self.spec.drift_jump, frame)
    }

    fn damage(&self, frame: usize) -> Damage {
        self.nucleation.damage_at(self.cumulative_dose(frame))
    }

    /// The whole damaged specimen (image coordinates, no drift).
    fn damaged(&self, damage: &Damage) -> Vec<f64> {
        let mut out = self.base.clone();
        if damage.discs.is_empty() {
            return out;
        }
        for y in 0..self.h {
            for x in 0..self.w {
                // Damage is placed in frame coordinates of the reference.
                let d = damage.at(x as f64 - self.x0 as f64, y as f64 - self.y0 as f64);
                if d <= 0.0 {
                    continue;
                }
                let i = y * self.w + x;
                let (b, m) = (self.base[i], self.local_mean[i]);
                out[i] = match damage.model {
                    DamageModel::Amorphous => (1.0 - d) * b + d * (m + self.texture[i]),
                    _ => m + (1.0 - 0.7 * d) * (b - m),
                };
            }
        }
        out
    }

    /// `img` with its content moved by (dx, dy) px: a phase ramp in Fourier space.
    fn shifted(&self, img: &[f64], dx: f64, dy: f64) -> Vec<f64> {
        let (w, h) = (self.w, self.h);
        if dx == 0.0 && dy == 0.0 {
            return img.to_vec();
        }
        let mut planner = FftPlanner::<f64>::new();
        let (fr, fc) = (planner.plan_fft_forward(w), planner.plan_fft_forward(h));
        let (ir, ic) = (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h));
        let mut buf: Vec<Complex64> = img.iter().map(|&v| Complex64::new(v, 0.0)).collect();
        let columns = |buf: &mut Vec<Complex64>, f: &dyn rustfft::Fft<f64>| {
            let mut col = vec![Complex64::new(0.0, 0.0); h];
            for x in 0..w {
                for y in 0..h {
                    col[y] = buf[y * w + x];
                }
                f.process(&mut col);
                for y in 0..h {
                    buf[y * w + x] = col[y];
                }
            }
        };
        buf.chunks_exact_mut(w).for_each(|r| fr.process(r));
        columns(&mut buf, &*fc);
        let freq = |k: usize, n: usize| if k <= n / 2 { k as f64 / n as f64 } else { k as f64 / n as f64 - 1.0 };
        for y in 0..h {
            let fy = freq(y, h);
            for x in 0..w {
                let phase = -2.0 * std::f64::consts::PI * (freq(x, w) * dx + fy * dy);
                buf[y * w + x] *= Complex64::from_polar(1.0, phase);
            }
        }
        buf.chunks_exact_mut(w).for_each(|r| ir.process(r));
        columns(&mut buf, &*ic);
        let n = (w * h) as f64;
        buf.iter().map(|c| c.re / n).collect()
    }
}

impl Simulation for ImageSeries {
    fn name(&self) -> String {
        format!("image-{}", self.spec.model.name())
    }

    fn describe(&self) -> String {
        format!(
            "beamwatch simulate from {} ({} damage, {} e⁻/px per frame)",
            self.spec.source,
            self.spec.model.name(),
            self.spec.electrons_per_px
        )
    }

    fn size_px(&self) -> (usize, usize) {
        (self.spec.size_px, self.spec.size_px)
    }

    fn frames(&self) -> usize {
        self.spec.frames
    }

    fn frame(&self, i: usize) -> (Vec<u16>, FrameTruth) {
        let damage = self.damage(i);
        let (dx, dy) = self.drift(i);
        let dose = self.cumulative_dose(i);
        let moved = self.shifted(&self.damaged(&damage), dx, dy);
        let loss = (1.0 - 1e-6 * dose).clamp(0.0, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(self.spec.seed.wrapping_mul(1_000_003) + i as u64);
        let s = self.spec.size_px;
        let mut px = Vec::with_capacity(s * s);
        let mut damaged = 0usize;
        for y in 0..s {
            for x in 0..s {
                let v = moved[(y + self.y0) * self.w + x + self.x0];
                let mean = (v.max(0.0) * self.spec.electrons_per_px * loss).max(1e-9);
                let c = Poisson::new(mean).map(|p| p.sample(&mut rng)).unwrap_or(mean);
                px.push(c.clamp(0.0, 65534.0) as u16);
                damaged += usize::from(damage.at(x as f64 - dx, y as f64 - dy) > 0.0);
            }
        }
        let truth = FrameTruth {
            index: i,
            cumulative_dose_e_per_a2: dose,
            damaged_fraction: damaged as f64 / (s * s) as f64,
            drift_px: (dx, dy),
        };
        (px, truth)
    }

    fn truth_map(&self, i: usize) -> Vec<f32> {
        let damage = self.damage(i);
        let s = self.spec.size_px;
        (0..s * s).map(|k| damage.at((k % s) as f64, (k / s) as f64) as f32).collect()
    }

    fn onset_frame(&self) -> Option<usize> {
        (0..self.spec.frames).find(|&i| !self.damage(i).discs.is_empty())
    }

    fn model(&self) -> DamageModel {
        self.spec.model
    }

    fn electrons_per_px(&self) -> f64 {
        self.spec.electrons_per_px
    }

    fn dose(&self) -> SimulatedDose {
        let s = &self.spec;
        SimulatedDose {
            per_frame_e_per_a2: s.dose_per_frame_e_per_a2(),
            beam_current_pa: s.electrons_per_px * ELEMENTARY_CHARGE_C / (s.dwell_time_us * 1e-6) * 1e12,
            dwell_time_us: s.dwell_time_us,
            pixel_size_a: s.pixel_size_a,
        }
    }

    fn provenance(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lattice(w: usize, h: usize) -> Frame {
        let px = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                1000.0 + 300.0 * (x * 0.3).cos() * (y * 0.3).cos()
            })
            .collect();
        Frame::from_f32(w, h, px).expect("frame")
    }

    #[test]
    fn drift_moves_the_content_and_damage_starts_at_the_onset() {
        let mut spec = ImageSeriesSpec::new("test", 96, 8, 3, 40_000.0);
        spec.drift_px_per_frame = (0.5, -0.25);
        let s = ImageSeries::new(&lattice(192, 192), spec).expect("series");
        assert_eq!(s.onset_frame(), Some(3));
        assert!(s.truth_map(2).iter().all(|&t| t == 0.0) && s.truth_map(3).iter().any(|&t| t > 0.0));
        // Nearly noise-free at 40,000 e⁻/px: frame 2 (drift (1, −0.5)) is frame 0 moved by that much.
        let (a, _) = s.frame(0);
        let (b, t) = s.frame(2);
        assert_eq!(t.drift_px, (1.0, -0.5));
        let reg = crate::register::Registrar::new(&Frame::from_ints(96, 96, &a, false).expect("f"), 0);
        let m = reg.measure(&Frame::from_ints(96, 96, &b, false).expect("f"));
        assert!((m.dx_px - 1.0).abs() < 0.05 && (m.dy_px + 0.5).abs() < 0.05, "{m:?}");
        assert!(ImageSeries::new(&lattice(100, 100), ImageSeriesSpec::new("t", 96, 8, 3, 10.0)).is_err());
    }
}
