//! The evaluation: for every architecture and outer fold, train the inner ensemble on the fold's
//! training samples, predict each held-out image as the mean of the members, and each held-out
//! sample as the mean over its images; score RMSE and R² over samples (and over images). The ridge
//! baseline ([`super::imagestats`]) is fitted on the same outer folds' training samples.

use serde::Serialize;

use super::dataset::Dataset;
use super::folds::{self, OuterFold, Protocol};
use super::imagestats;
use super::model::Arch;
use super::train::{self, EpochLog, MemberInput, Progress, TrainSettings};
use super::{ConductivityError, Result};

#[derive(Clone, Debug, Serialize)]
pub struct EvalSettings {
    pub archs: Vec<Arch>,
    pub protocol: Protocol,
    pub inner_folds: usize,
    /// Ensemble members per outer fold (≤ inner folds; the paper: 4 of 4).
    pub members: usize,
    pub seed: u64,
    pub train: TrainSettings,
}

/// Which member is training, for progress display.
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    pub arch: Arch,
    pub outer: usize,
    pub n_outer: usize,
    pub member: usize,
    pub n_members: usize,
}

pub enum Event<'a> {
    Step(Tag, &'a Progress),
    MemberDone(Tag),
}

/// One trained member, as the evaluation used it: the no-leakage test reads `seen` against
/// `test_samples`.
#[derive(Clone, Debug, Serialize)]
pub struct MemberRecord {
    pub arch: Arch,
    pub outer: usize,
    pub member: usize,
    pub test_samples: Vec<usize>,
    pub train_samples: Vec<usize>,
    pub val_samples: Vec<usize>,
    /// Image indices that went into training batches (sample indices for descriptors-only).
    pub seen: Vec<usize>,
    /// Image (or sample) indices used for early stopping.
    pub validated: Vec<usize>,
    pub best_epoch: usize,
    pub best_val_mse: f64,
    pub epochs: Vec<EpochLog>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Over samples (each the mean over its images), log10 S/cm.
    pub r2: f64,
    pub rmse_log10: f64,
    /// Over images.
    pub image_r2: f64,
    pub image_rmse_log10: f64,
    pub n_samples: usize,
    pub n_images: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ArchResult {
    pub arch: Arch,
    /// Held-out prediction of every image, log10 S/cm.
    pub image_prediction: Vec<f64>,
    /// Held-out prediction of every sample (mean over its images), log10 S/cm.
    pub sample_prediction: Vec<f64>,
    pub metrics: Metrics,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub settings: EvalSettings,
    pub folds: Vec<OuterFold>,
    /// Outer fold in which each sample was tested.
    pub sample_test_fold: Vec<usize>,
    pub results: Vec<ArchResult>,
    pub members: Vec<MemberRecord>,
}

pub use crate::secondary::metrics::{r2, rmse};

/// Mean over each sample's images.
pub fn sample_means(ds: &Dataset, image_values: &[f64]) -> Vec<f64> {
    let mut sum = vec![0.0; ds.samples.len()];
    let mut n = vec![0usize; ds.samples.len()];
    for (im, v) in ds.images.iter().zip(image_values) {
        sum[im.sample] += v;
        n[im.sample] += 1;
    }
    sum.iter().zip(&n).map(|(s, &k)| if k > 0 { s / k as f64 } else { f64::NAN }).collect()
}

/// A seed for each (architecture, outer fold, member), so members differ and a run repeats.
pub fn member_seed(seed: u64, arch: Arch, outer: usize, member: usize) -> u64 {
    let a = Arch::ALL.iter().position(|&x| x == arch).unwrap_or(0) as u64;
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (a << 48)
        ^ ((outer as u64) << 16)
        ^ member as u64
}

/// Runs the protocol. `features` (trunk features per image) is needed only for resnet18.
pub fn evaluate(
    ds: &Dataset,
    targets: &[f64],
    features: Option<&[Vec<f32>]>,
    settings: &EvalSettings,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Evaluation> {
    let crop = settings.train.crop_px;
    check_crop(ds, crop)?;
    let plan = folds::plan(targets, settings.protocol, settings.inner_folds, settings.members, settings.seed)?;
    let mut sample_test_fold = vec![usize::MAX; ds.samples.len()];
    for (k, f) in plan.iter().enumerate() {
        for &s in &f.test_samples {
            sample_test_fold[s] = k;
        }
    }
    let image_truth: Vec<f64> = ds.images.iter().map(|im| targets[im.sample]).collect();
    let stats: Vec<[f64; imagestats::N_FEATURES]> =
        if settings.archs.contains(&Arch::Ridge) { ds.images.iter().map(imagestats::features).collect() } else { Vec::new() };
    let mut results = Vec::new();
    let mut records = Vec::new();
    for &arch in &settings.archs {
        if arch == Arch::Resnet18 && features.is_none() {
            return Err(ConductivityError::Settings("resnet18 needs ResNet-18 weights (none loaded)".into()));
        }
        let t0 = std::time::Instant::now();
        let mut image_prediction = vec![f64::NAN; ds.images.len()];
        for (o, fold) in plan.iter().enumerate() {
            let test_images = folds::images_of(ds, &fold.test_samples);
            if arch == Arch::Ridge {
                let train_samples: Vec<usize> =
                    (0..ds.samples.len()).filter(|s| !fold.test_samples.contains(s)).collect();
                let x = imagestats::sample_rows(ds, &stats, &train_samples);
                let y: Vec<f64> = train_samples.iter().map(|&s| targets[s]).collect();
                let fit = imagestats::fit_cv(&x, &y, member_seed(settings.seed, arch, o, 0));
                for &i in &test_images {
                    image_prediction[i] = fit.predict(&stats[i]);
                }
                let tag = Tag { arch, outer: o, n_outer: plan.len(), member: 0, n_members: 1 };
                records.push(MemberRecord {
                    arch,
                    outer: o,
                    member: 0,
                    test_samples: fold.test_samples.clone(),
                    train_samples: train_samples.clone(),
                    val_samples: Vec::new(),
                    seen: folds::images_of(ds, &train_samples),
                    validated: Vec::new(),
                    best_epoch: 0,
                    best_val_mse: fit.cv_mse,
                    epochs: Vec::new(),
                });
                on_event(Event::MemberDone(tag));
                continue;
            }
            let test_items = train::items(ds, arch, &fold.test_samples);
            let mut sum = vec![0.0; test_items.len()];
            for (m, member) in fold.members.iter().enumerate() {
                let tag = Tag { arch, outer: o, n_outer: plan.len(), member: m, n_members: fold.members.len() };
                let input = MemberInput {
                    ds,
                    targets,
                    train_samples: &member.train_samples,
                    val_samples: &member.val_samples,
                    features,
                };
                let trained = train::train_member(arch, &input, &settings.train, member_seed(settings.seed, arch, o, m), |p| {
                    on_event(Event::Step(tag, p))
                })?;
                let pred = train::predict(&trained.net, &trained.scales, ds, crop, features, &test_items)?;
                for (s, p) in sum.iter_mut().zip(&pred) {
                    *s += p;
                }
                records.push(MemberRecord {
                    arch,
                    outer: o,
                    member: m,
                    test_samples: fold.test_samples.clone(),
                    train_samples: member.train_samples.clone(),
                    val_samples: member.val_samples.clone(),
                    seen: trained.seen.into_iter().collect(),
                    validated: trained.validated.into_iter().collect(),
                    best_epoch: trained.best_epoch,
                    best_val_mse: trained.best_val_mse,
                    epochs: trained.epochs,
                });
                on_event(Event::MemberDone(tag));
            }
            let n_members = fold.members.len() as f64;
            if arch.uses_images() {
                for (&i, s) in test_images.iter().zip(&sum) {
                    image_prediction[i] = s / n_members;
                }
            } else {
                for (&sample, s) in fold.test_samples.iter().zip(&sum) {
                    for i in ds.images_of(sample) {
                        image_prediction[i] = s / n_members;
                    }
                }
            }
        }
        let sample_prediction = sample_means(ds, &image_prediction);
        let metrics = Metrics {
            r2: r2(&sample_prediction, targets),
            rmse_log10: rmse(&sample_prediction, targets),
            image_r2: r2(&image_prediction, &image_truth),
            image_rmse_log10: rmse(&image_prediction, &image_truth),
            n_samples: targets.len(),
            n_images: ds.images.len(),
        };
        tracing::info!(
            "{arch}: R² = {:.3}, RMSE = {:.3} log10 S/cm over {} samples ({:.0} s)",
            metrics.r2,
            metrics.rmse_log10,
            metrics.n_samples,
            t0.elapsed().as_secs_f64()
        );
        results.push(ArchResult { arch, image_prediction, sample_prediction, metrics, seconds: t0.elapsed().as_secs_f64() });
    }
    Ok(Evaluation { settings: settings.clone(), folds: plan, sample_test_fold, results, members: records })
}

/// Crops must fit every image and pool twice to whole pixels.
pub fn check_crop(ds: &Dataset, crop: usize) -> Result<()> {
    if crop < 8 || !crop.is_multiple_of(4) {
        return Err(ConductivityError::Settings(format!(
            "crop {crop} px: must be a multiple of 4 and ≥ 8 (two 2×2 max-pools)"
        )));
    }
    if let Some((i, im)) = ds.images.iter().enumerate().find(|(_, im)| im.width < crop || im.height < crop) {
        return Err(ConductivityError::Settings(format!(
            "crop {crop} px does not fit image {i} ({}, {}×{} px); use --crop ≤ {}",
            im.source,
            im.width,
            im.height,
            ds.min_edge_px()
        )));
    }
    Ok(())
}
