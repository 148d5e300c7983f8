//! A simulated acquisition: a crystal imaged frame after frame while the beam's cumulative dose
//! turns it amorphous. Damage nucleates at random seeds once the cumulative dose passes each seed's
//! onset dose and spreads with further dose; the whole field loses intensity slowly (mass loss);
//! every frame has Poisson shot noise for its electrons per pixel and drifts by a fixed step.
//! The truth — onset frame, damaged fraction, drift — is known for every frame.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Damage, DamageModel, Specimen};
use crate::dose::ELEMENTARY_CHARGE_C;

/// Parameters of a simulated series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesSpec {
    pub size_px: usize,
    pub frames: usize,
    pub lattice_spacing_px: f64,
    pub pixel_size_a: f64,
    pub dwell_time_us: f64,
    /// Electrons landing on one scan pixel per frame; sets the shot noise and the dose.
    pub electrons_per_px: f64,
    /// Cumulative dose at which the first damage seed nucleates.
    pub onset_dose_e_per_a2: f64,
    /// Later seeds nucleate within this much further dose.
    pub onset_spread_e_per_a2: f64,
    pub seeds: usize,
    /// Final radius of a damaged region, as a share of the frame side.
    pub max_radius_fraction: f64,
    /// Dose over which a region reaches ≈ 63 % of its final radius (its critical dose).
    pub growth_dose_e_per_a2: f64,
    /// Intensity lost over the whole field per e⁻/Å² (mass loss), as a fraction.
    pub intensity_loss_per_e_per_a2: f64,
    pub drift_px_per_frame: (f64, f64),
    /// A sudden stage jump on top of the steady drift (tests of the registration's lock).
    pub drift_jump: Option<DriftJump>,
    pub seed: u64,
    pub model: DamageModel,
}

/// From frame `at_frame` on, the specimen sits `(dx_px, dy_px)` further along than the steady drift.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DriftJump {
    pub at_frame: usize,
    pub dx_px: f64,
    pub dy_px: f64,
}

impl SeriesSpec {
    /// A series whose damage starts at frame `onset_frame`, for `frames` frames of `size_px`², at
    /// 50 electrons per pixel per frame.
    pub fn with_onset(size_px: usize, frames: usize, onset_frame: usize) -> Self {
        Self::new(size_px, frames, onset_frame, 50.0)
    }

    /// As [`Self::with_onset`], with `electrons_per_px` per frame (shot noise and dose).
    pub fn new(size_px: usize, frames: usize, onset_frame: usize, electrons_per_px: f64) -> Self {
        let mut s = Self {
            size_px,
            frames,
            lattice_spacing_px: 10.0,
            pixel_size_a: 0.5,
            dwell_time_us: 2.0,
            electrons_per_px,
            onset_dose_e_per_a2: 0.0,
            onset_spread_e_per_a2: 0.0,
            seeds: 3,
            max_radius_fraction: 0.22,
            growth_dose_e_per_a2: 0.0,
            intensity_loss_per_e_per_a2: 1e-6,
            drift_px_per_frame: (0.15, -0.1),
            drift_jump: None,
            seed: 1,
            model: DamageModel::Amorphous,
        };
        let d = s.dose_per_frame_e_per_a2();
        // Frame i carries cumulative dose (i + 1)·d; nucleate just before frame `onset_frame`.
        s.onset_dose_e_per_a2 = (onset_frame as f64 + 0.5) * d;
        s.onset_spread_e_per_a2 = 2.0 * d;
        s.growth_dose_e_per_a2 = 4.0 * d;
        s
    }

    /// e⁻/Å² per frame.
    pub fn dose_per_frame_e_per_a2(&self) -> f64 {
        self.electrons_per_px / (self.pixel_size_a * self.pixel_size_a)
    }

    /// The beam current that gives `electrons_per_px` in `dwell_time_us` (pA).
    pub fn beam_current_pa(&self) -> f64 {
        self.electrons_per_px * ELEMENTARY_CHARGE_C / (self.dwell_time_us * 1e-6) * 1e12
    }

    /// Frame time: one dwell per pixel.
    pub fn frame_time_s(&self) -> f64 {
        self.dwell_time_us * 1e-6 * (self.size_px * self.size_px) as f64
    }
}


/// The truth of one frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameTruth {
    pub index: usize,
    pub cumulative_dose_e_per_a2: f64,
    /// Share of pixels with any damage.
    pub damaged_fraction: f64,
    pub drift_px: (f64, f64),
}

pub struct Series {
    pub spec: SeriesSpec,
    specimen: Specimen,
    nucleation: Nucleation,
}

impl Series {
    pub fn new(spec: SeriesSpec) -> Self {
        let nucleation = Nucleation::new(
            spec.size_px,
            spec.size_px,
            NucleationSpec {
                seeds: spec.seeds,
                onset_dose_e_per_a2: spec.onset_dose_e_per_a2,
                onset_spread_e_per_a2: spec.onset_spread_e_per_a2,
                max_radius_px: spec.max_radius_fraction * spec.size_px as f64,
                growth_dose_e_per_a2: spec.growth_dose_e_per_a2,
                model: spec.model,
            },
            spec.seed,
        );
        let specimen = Specimen::new(spec.size_px, spec.size_px, spec.lattice_spacing_px, spec.seed);
        Self { spec, specimen, nucleation }
    }

    pub fn cumulative_dose(&self, frame: usize) -> f64 {
        (frame + 1) as f64 * self.spec.dose_per_frame_e_per_a2()
    }

    pub fn drift(&self, frame: usize) -> (f64, f64) {
        drift_at(self.spec.drift_px_per_frame, self.spec.drift_jump, frame)
    }

    /// The damage state at a cumulative dose.
    pub fn damage_at(&self, dose: f64) -> Damage {
        self.nucleation.damage_at(dose)
    }

    /// First frame with any damage.
    pub fn onset_frame(&self) -> Option<usize> {
        (0..self.spec.frames).find(|&i| !self.damage_at(self.cumulative_dose(i)).discs.is_empty())
    }

    /// Per-pixel true damage (0..1) of frame `i` in reference-frame coordinates.
    pub fn truth_map(&self, i: usize) -> Vec<f32> {
        self.specimen.truth_map(&self.damage_at(self.cumulative_dose(i)))
    }

    /// Detector counts of frame `i` (u16, Poisson noise) and its truth.
    pub fn frame(&self, i: usize) -> (Vec<u16>, FrameTruth) {
        let dose = self.cumulative_dose(i);
        let damage = self.damage_at(dose);
        let drift = self.drift(i);
        let loss = (1.0 - self.spec.intensity_loss_per_e_per_a2 * dose).clamp(0.0, 1.0);
        let counts = self.specimen.render_counts(
            &damage,
            drift,
            Some(self.spec.electrons_per_px * loss),
            self.spec.seed.wrapping_mul(1_000_003) + i as u64,
        );
        let px: Vec<u16> = counts.iter().map(|&c| c.clamp(0.0, 65534.0) as u16).collect();
        let map = self.specimen.damage_map(&damage, drift);
        let damaged = map.iter().filter(|&&v| v > 0.0).count() as f64 / map.len() as f64;
        (px, FrameTruth { index: i, cumulative_dose_e_per_a2: dose, damaged_fraction: damaged, drift_px: drift })
    }
}

/// The drift of frame `frame`: the steady step times the frame, plus the jump once it happened.
pub fn drift_at(step: (f64, f64), jump: Option<DriftJump>, frame: usize) -> (f64, f64) {
    let (mut x, mut y) = (step.0 * frame as f64, step.1 * frame as f64);
    if let Some(j) = jump.filter(|j| frame >= j.at_frame) {
        x += j.dx_px;
        y += j.dy_px;
    }
    (x, y)
}

/// How damage nucleates and grows with dose.
#[derive(Clone, Debug, PartialEq)]
pub struct NucleationSpec {
    pub seeds: usize,
    /// Cumulative dose at which the first seed nucleates.
    pub onset_dose_e_per_a2: f64,
    /// Later seeds nucleate within this much further dose.
    pub onset_spread_e_per_a2: f64,
    /// Final radius of a damaged region.
    pub max_radius_px: f64,
    /// Dose over which a region reaches ≈ 63 % of its final radius (its critical dose).
    pub growth_dose_e_per_a2: f64,
    pub model: DamageModel,
}

#[derive(Clone, Debug)]
struct Seed {
    x: f64,
    y: f64,
    onset_dose: f64,
}

/// Damage seeds at random places in the central 60 % of a field, each nucleating at its own
/// onset dose and growing with further dose.
#[derive(Clone, Debug)]
pub struct Nucleation {
    spec: NucleationSpec,
    seeds: Vec<Seed>,
}

impl Nucleation {
    pub fn new(width: usize, height: usize, spec: NucleationSpec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let (w, h) = (width as f64, height as f64);
        let seeds = (0..spec.seeds)
            .map(|k| Seed {
                x: rng.random_range(0.2 * w..0.8 * w),
                y: rng.random_range(0.2 * h..0.8 * h),
                onset_dose: spec.onset_dose_e_per_a2
                    + if k == 0 { 0.0 } else { rng.random_range(0.0..=spec.onset_spread_e_per_a2.max(0.0)) },
            })
            .collect();
        Self { spec, seeds }
    }

    /// The damage state at a cumulative dose.
    pub fn damage_at(&self, dose: f64) -> Damage {
        let s = &self.spec;
        let g = s.growth_dose_e_per_a2.max(1e-9);
        Damage {
            discs: self
                .seeds
                .iter()
                .filter(|seed| dose > seed.onset_dose)
                .map(|seed| {
                    let t = (dose - seed.onset_dose) / g;
                    super::Disc {
                        cx: seed.x,
                        cy: seed.y,
                        radius_px: s.max_radius_px * (1.0 - (-t).exp()),
                        edge_px: 4.0,
                        amount: match s.model {
                            DamageModel::Amorphous => (0.5 + t).min(1.0),
                            // Gradual: barely visible at nucleation.
                            DamageModel::ContrastLoss | DamageModel::Vacancies => 1.0 - (-(t + 0.1)).exp(),
                        },
                    }
                })
                .collect(),
            model: s.model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onset_and_growth_follow_dose() {
        let s = Series::new(SeriesSpec::with_onset(96, 12, 5));
        assert_eq!(s.onset_frame(), Some(5));
        let (_, before) = s.frame(4);
        let (_, at) = s.frame(5);
        let (_, late) = s.frame(11);
        assert_eq!(before.damaged_fraction, 0.0);
        assert!(at.damaged_fraction > 0.0 && late.damaged_fraction > at.damaged_fraction, "{at:?} {late:?}");
        // 50 e⁻ per 0.25 Å² pixel = 200 e⁻/Å² per frame; the current that delivers it in 2 µs.
        assert!((s.spec.dose_per_frame_e_per_a2() - 200.0).abs() < 1e-9);
        let d =
            crate::dose::dose_per_frame_e_per_a2(s.spec.beam_current_pa(), s.spec.dwell_time_us, s.spec.pixel_size_a);
        assert!((d - 200.0).abs() < 1e-6);
    }
}
