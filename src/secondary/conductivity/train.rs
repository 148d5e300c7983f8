//! One ensemble member trained: MSE on (standardised) log10 σ, Adam, random flipped crops of the
//! training images (`crops_per_image` of each per epoch), early stopping on the validation loss with
//! the best epoch's weights kept. Validation and prediction look at the whole image: the mean over
//! a grid of crops that covers it ([`model::grid_crops`]), with the spread over the grid reported as
//! the prediction's uncertainty.
//!
//! Each member standardises its inputs with statistics of *its own* training samples only: pixels,
//! the 33 descriptors, trunk features, and the target (predictions are mapped back). Minimising MSE
//! of the standardised target is minimising MSE of log10 σ scaled by a constant.
//!
//! Determinism: every random choice (initial weights, batch order, crops and flips) comes from a
//! ChaCha8 stream seeded per member; candle's CPU kernels and our im2col ops give the same result on
//! any number of threads, so a run repeats bit for bit.

use std::collections::BTreeSet;
use std::time::Instant;

use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::descriptors::{self, Standardizer};
use super::model::{self, Arch, Batch, Mode, Net, PixelScale};
use super::{ConductivityError, Result, terr};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Edge of the square crops fed to the CNN, px (the paper: 512; a multiple of 4).
    pub crop_px: usize,
    pub max_epochs: usize,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// The same for the models without convolutions (descriptors-only, the resnet18 head): an epoch
    /// costs microseconds, so they train until the validation loss stops improving rather than for
    /// as many epochs as a CNN can afford — their comparison with the CNNs is not limited by budget.
    pub linear_max_epochs: usize,
    pub linear_patience: usize,
    /// Random crops of every training image per epoch (an epoch then sees `crops_per_image` × the
    /// image count crops; early stopping still checks once per epoch).
    pub crops_per_image: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            crop_px: 64,
            max_epochs: 40,
            patience: 8,
            batch: 16,
            learning_rate: 3e-3,
            linear_max_epochs: 2000,
            linear_patience: 100,
            crops_per_image: 1,
        }
    }
}

impl TrainSettings {
    /// (max epochs, patience) for `arch`.
    pub fn epochs_for(&self, arch: Arch) -> (usize, usize) {
        if arch.is_cnn() { (self.max_epochs, self.patience) } else { (self.linear_max_epochs, self.linear_patience) }
    }
}

/// Everything a member needs to turn raw data into network inputs and outputs back into log10 σ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scales {
    pub pixels: PixelScale,
    pub descriptors: Standardizer,
    /// Trunk-feature standardisation (resnet18 only).
    pub features: Option<Standardizer>,
    pub target_mean: f64,
    pub target_std: f64,
}

/// What a member is trained on. Image models learn from images (every image of a training sample is
/// one example); the descriptors-only model from samples.
pub struct MemberInput<'a> {
    pub ds: &'a Dataset,
    /// log10 σ per sample.
    pub targets: &'a [f64],
    pub train_samples: &'a [usize],
    pub val_samples: &'a [usize],
    /// Trunk features per image (resnet18 only).
    pub features: Option<&'a [Vec<f32>]>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EpochLog {
    /// Mean training loss, (log10 S/cm)².
    pub train_mse: f64,
    pub val_mse: f64,
    pub seconds: f64,
}

pub struct Trained {
    pub net: Net,
    pub scales: Scales,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
    pub best_val_mse: f64,
    pub epochs: Vec<EpochLog>,
    /// Every image (or, for descriptors-only, sample) index that went into a training batch.
    pub seen: BTreeSet<usize>,
    /// The validation items the early stopping looked at.
    pub validated: BTreeSet<usize>,
}

/// Progress of one member, for the caller's bar.
pub struct Progress {
    pub epoch: usize,
    pub max_epochs: usize,
    pub batches_done: usize,
    pub batches_per_epoch: usize,
    pub train_mse: f64,
    pub val_mse: Option<f64>,
}

/// The examples of `samples` for `arch`: image indices, or the samples themselves.
pub fn items(ds: &Dataset, arch: Arch, samples: &[usize]) -> Vec<usize> {
    if arch.uses_images() { super::folds::images_of(ds, samples) } else { samples.to_vec() }
}

/// The member's standardisation statistics, from its training samples only.
pub fn fit_scales(arch: Arch, input: &MemberInput<'_>) -> Scales {
    let ds = input.ds;
    let train_images = super::folds::images_of(ds, input.train_samples);
    let pixels = PixelScale::fit(train_images.iter().map(|&i| &ds.images[i]));
    // Only models that read descriptors keep their statistics (image-only data has none: NaN).
    let descriptors = if arch.uses_descriptors() {
        Standardizer::fit(&descriptors::rows(input.train_samples.iter().map(|&s| &ds.samples[s])))
    } else {
        Standardizer::fit(&[])
    };
    let features = input.features.filter(|_| arch == Arch::Resnet18).map(|f| {
        let rows: Vec<Vec<f64>> = train_images.iter().map(|&i| f[i].iter().map(|&v| v as f64).collect()).collect();
        Standardizer::fit(&rows)
    });
    let t: Vec<f64> = input.train_samples.iter().map(|&s| input.targets[s]).collect();
    let n = t.len().max(1) as f64;
    let target_mean = t.iter().sum::<f64>() / n;
    let sd = (t.iter().map(|v| (v - target_mean).powi(2)).sum::<f64>() / n).sqrt();
    Scales { pixels, descriptors, features, target_mean, target_std: if sd > 1e-9 { sd } else { 1.0 } }
}

/// The network inputs for `items` (image or sample indices). `rng` = training (random flipped
/// crops); `None` = one centre crop per item (GAP calibration; prediction uses [`predict_spread`]'s grid).
pub fn batch(
    arch: Arch,
    ds: &Dataset,
    scales: &Scales,
    crop: usize,
    features: Option<&[Vec<f32>]>,
    items: &[usize],
    rng: Option<&mut ChaCha8Rng>,
) -> Result<Batch> {
    let crops: Option<Vec<Vec<f32>>> = arch.is_cnn().then(|| match rng {
        Some(rng) => items.iter().map(|&i| model::random_crop(&ds.images[i], crop, rng)).collect(),
        None => items.iter().map(|&i| model::centre_crop(&ds.images[i], crop)).collect(),
    });
    batch_of(arch, ds, scales, crop, features, items, crops)
}

/// The network inputs for `items`, with `crops` (one per item, CNNs) already cut.
fn batch_of(
    arch: Arch,
    ds: &Dataset,
    scales: &Scales,
    crop: usize,
    features: Option<&[Vec<f32>]>,
    items: &[usize],
    crops: Option<Vec<Vec<f32>>>,
) -> Result<Batch> {
    let mut b = Batch::default();
    let sample_of = |i: usize| if arch.uses_images() { ds.images[i].sample } else { i };
    if let Some(crops) = crops {
        b.images = Some(model::image_tensor(&crops, crop, scales.pixels)?);
    }
    if arch.uses_descriptors() {
        let rows: Vec<Vec<f32>> =
            items.iter().map(|&i| scales.descriptors.apply(&descriptors::descriptors(&ds.samples[sample_of(i)]))).collect();
        b.descriptors = Some(model::matrix(&rows)?);
    }
    if arch == Arch::Resnet18 {
        let (f, st) = features.zip(scales.features.as_ref()).ok_or_else(|| {
            ConductivityError::Settings("the resnet18 model needs trunk features".into())
        })?;
        let rows: Vec<Vec<f32>> = items
            .iter()
            .map(|&i| st.apply(&f[i].iter().map(|&v| v as f64).collect::<Vec<_>>()))
            .collect();
        b.features = Some(model::matrix(&rows)?);
    }
    Ok(b)
}

/// Predictions in log10 S/cm for `items`, in batches: for the CNNs the mean over the grid of crops
/// covering each image.
pub fn predict(
    net: &Net,
    scales: &Scales,
    ds: &Dataset,
    crop: usize,
    features: Option<&[Vec<f32>]>,
    items: &[usize],
) -> Result<Vec<f64>> {
    Ok(predict_spread(net, scales, ds, crop, features, items)?.into_iter().map(|(m, _)| m).collect())
}

/// Per item (mean, standard deviation over the image's grid of crops) in log10 S/cm; the spread is
/// 0 for models that see one input per item.
pub fn predict_spread(
    net: &Net,
    scales: &Scales,
    ds: &Dataset,
    crop: usize,
    features: Option<&[Vec<f32>]>,
    items: &[usize],
) -> Result<Vec<(f64, f64)>> {
    let back = |v: f32| v as f64 * scales.target_std + scales.target_mean;
    if !net.arch.is_cnn() {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(32) {
            let b = batch(net.arch, ds, scales, crop, features, chunk, None)?;
            let p = model::to_vec(&net.forward(&b, Mode::Eval)?.prediction)?;
            out.extend(p.iter().map(|&v| (back(v), 0.0)));
        }
        return Ok(out);
    }
    // Every crop of every item, with its owner, forwarded in batches of 32 crops.
    let mut owners = Vec::new();
    let mut crops = Vec::new();
    for (k, &i) in items.iter().enumerate() {
        for c in model::grid_crops(&ds.images[i], crop) {
            owners.push((k, i));
            crops.push(c);
        }
    }
    let mut per_item: Vec<Vec<f64>> = vec![Vec::new(); items.len()];
    for (o, c) in owners.chunks(32).zip(crops.chunks(32)) {
        let its: Vec<usize> = o.iter().map(|&(_, i)| i).collect();
        let b = batch_of(net.arch, ds, scales, crop, features, &its, Some(c.to_vec()))?;
        let p = model::to_vec(&net.forward(&b, Mode::Eval)?.prediction)?;
        for (&(k, _), &v) in o.iter().zip(&p) {
            per_item[k].push(back(v));
        }
    }
    Ok(per_item
        .iter()
        .map(|v| {
            let n = v.len().max(1) as f64;
            let m = v.iter().sum::<f64>() / n;
            (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt())
        })
        .collect())
}

/// Exact GAP statistics over the centre crops of the training images (see [`Net::calibrate`]).
pub fn calibrate(net: &Net, scales: &Scales, ds: &Dataset, crop: usize, train_images: &[usize]) -> Result<()> {
    let mut gaps = Vec::with_capacity(train_images.len());
    for chunk in train_images.chunks(32) {
        let b = batch(net.arch, ds, scales, crop, None, chunk, None)?;
        if let Some(g) = net.forward(&b, Mode::Eval)?.gap {
            let v = model::to_vec(&g)?;
            gaps.extend(v.chunks(model::GAP_CHANNELS).map(<[f32]>::to_vec));
        }
    }
    net.calibrate(&gaps);
    Ok(())
}

fn mse(pred: &[f64], truth: &[f64]) -> f64 {
    pred.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / pred.len().max(1) as f64
}

/// Trains one member of `arch` from `seed`; `on_progress` is told after every batch.
pub fn train_member(
    arch: Arch,
    input: &MemberInput<'_>,
    settings: &TrainSettings,
    seed: u64,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Trained> {
    let ds = input.ds;
    let crop = settings.crop_px;
    let train = items(ds, arch, input.train_samples);
    let val = items(ds, arch, input.val_samples);
    if train.is_empty() || val.is_empty() {
        return Err(ConductivityError::Settings(format!(
            "{arch}: {} training and {} validation examples; both must be non-empty",
            train.len(),
            val.len()
        )));
    }
    let scales = fit_scales(arch, input);
    let target_of = |i: usize| input.targets[if arch.uses_images() { ds.images[i].sample } else { i }];
    let val_truth: Vec<f64> = val.iter().map(|&i| target_of(i)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let net = Net::init(arch, &mut rng)?;
    let params = ParamsAdamW { lr: settings.learning_rate, weight_decay: 0.0, ..ParamsAdamW::default() };
    let mut opt = AdamW::new(net.vars(), params).map_err(terr("optimiser"))?;
    let batch_size = settings.batch.max(1);
    // CNNs see several random crops of each image per epoch; the other models one row per item.
    let repeats = if arch.is_cnn() { settings.crops_per_image.max(1) } else { 1 };
    let mut order: Vec<usize> = train.iter().copied().cycle().take(train.len() * repeats).collect();
    let batches_per_epoch = order.len().div_ceil(batch_size);
    let (mut best, mut best_epoch, mut best_snap, mut since_best) = (f64::INFINITY, 0, net.snapshot()?, 0);
    let mut epochs = Vec::new();
    let mut seen = BTreeSet::new();
    let var_scale = scales.target_std * scales.target_std;
    let (max_epochs, patience) = settings.epochs_for(arch);
    for epoch in 1..=max_epochs.max(1) {
        let t0 = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut n_sum) = (0.0, 0usize);
        for (k, chunk) in order.chunks(batch_size).enumerate() {
            let b = batch(arch, ds, &scales, crop, input.features, chunk, Some(&mut rng))?;
            let y: Vec<f32> =
                chunk.iter().map(|&i| ((target_of(i) - scales.target_mean) / scales.target_std) as f32).collect();
            let y = Tensor::from_vec(y, chunk.len(), &candle_core::Device::Cpu).map_err(terr("targets"))?;
            let out = net.forward(&b, Mode::Train)?;
            let loss = candle_nn::loss::mse(&out.prediction, &y).map_err(terr("loss"))?;
            opt.backward_step(&loss).map_err(terr(format!("{arch} backward pass")))?;
            let l = loss.to_scalar::<f32>().map_err(terr("loss value"))? as f64;
            if !l.is_finite() {
                return Err(ConductivityError::Settings(format!(
                    "{arch}: training diverged (loss {l}) in epoch {epoch}; lower the learning rate"
                )));
            }
            loss_sum += l * chunk.len() as f64;
            n_sum += chunk.len();
            seen.extend(chunk.iter().copied());
            on_progress(&Progress {
                epoch,
                max_epochs,
                batches_done: k + 1,
                batches_per_epoch,
                train_mse: loss_sum / n_sum as f64 * var_scale,
                val_mse: epochs.last().map(|e: &EpochLog| e.val_mse),
            });
        }
        if arch.is_cnn() {
            calibrate(&net, &scales, ds, crop, &train)?;
        }
        let val_pred = predict(&net, &scales, ds, crop, input.features, &val)?;
        let val_mse = mse(&val_pred, &val_truth);
        epochs.push(EpochLog { train_mse: loss_sum / n_sum.max(1) as f64 * var_scale, val_mse, seconds: t0.elapsed().as_secs_f64() });
        if val_mse < best {
            best = val_mse;
            best_epoch = epoch;
            best_snap = net.snapshot()?;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= patience.max(1) {
                break;
            }
        }
    }
    net.restore(&best_snap)?;
    Ok(Trained { net, scales, best_epoch, best_val_mse: best, epochs, seen, validated: val.into_iter().collect() })
}
