//! A trained ensemble on disk — `model.safetensors` (every member's tensors, prefixed `memberK.`)
//! and `model.json` (architecture, crop, each member's standardisation statistics, training
//! settings, seed, the dataset's sha256) — fitting it on a whole dataset, and predicting with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::descriptors::NAMES;
use super::folds;
use super::model::{Arch, CONV_CHANNELS, Net};
use super::protocol::{Event, Tag, member_seed};
use super::train::{self, EpochLog, MemberInput, Scales, TrainSettings};
use super::{ConductivityError, Result, terr};

pub const FORMAT: &str = "beamwatch-conductivity-model/1";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "model.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberConfig {
    /// Tensor name prefix in the safetensors file.
    pub prefix: String,
    pub scales: Scales,
    pub best_epoch: usize,
    /// Validation MSE at that epoch, (log10 S/cm)².
    pub best_val_mse: f64,
    pub train_samples: Vec<String>,
    pub val_samples: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrunkConfig {
    pub weights_path: String,
    pub weights_sha256: String,
    pub provenance: String,
    pub imagenet: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub format: String,
    pub arch: Arch,
    pub arch_label: String,
    pub crop_px: usize,
    /// Convolution channels (cin, cout) of the Baseline part, for readers of the file.
    pub conv_channels: Vec<(usize, usize)>,
    pub descriptor_names: Vec<String>,
    pub target: String,
    pub train: TrainSettings,
    pub seed: u64,
    pub inner_folds: usize,
    pub members: Vec<MemberConfig>,
    pub dataset: String,
    pub dataset_sha256: Option<String>,
    /// The ResNet-18 trunk a resnet18 model was trained on (it must be given again to predict).
    pub trunk: Option<TrunkConfig>,
    pub beamwatch_version: String,
}

pub struct Ensemble {
    pub config: ModelConfig,
    pub nets: Vec<Net>,
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Option<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).ok()?;
    Some(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

pub struct FitOptions<'a> {
    pub arch: Arch,
    pub train: &'a TrainSettings,
    pub inner_folds: usize,
    pub members: usize,
    pub seed: u64,
    pub dataset_path: &'a Path,
    pub trunk: Option<TrunkConfig>,
}

/// Trains the final ensemble on every sample (member k stops early on inner fold k), as the
/// protocol trains each outer fold's ensemble.
pub fn fit(
    ds: &Dataset,
    targets: &[f64],
    features: Option<&[Vec<f32>]>,
    opts: &FitOptions<'_>,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<(Ensemble, Vec<Vec<EpochLog>>)> {
    super::protocol::check_crop(ds, opts.train.crop_px)?;
    let all: Vec<usize> = (0..ds.samples.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xF1A1);
    let members = folds::members(&all, targets, opts.inner_folds, opts.members, &mut rng)?;
    let mut trained = Vec::new();
    let mut configs = Vec::new();
    for (m, member) in members.iter().enumerate() {
        let tag = Tag { arch: opts.arch, outer: 0, n_outer: 1, member: m, n_members: members.len() };
        let input = MemberInput { ds, targets, train_samples: &member.train_samples, val_samples: &member.val_samples, features };
        // Outer index usize::MAX keeps the final fit's seeds apart from every evaluation fold's.
        let t = train::train_member(opts.arch, &input, opts.train, member_seed(opts.seed, opts.arch, usize::MAX, m), |p| {
            on_event(Event::Step(tag, p))
        })?;
        on_event(Event::MemberDone(tag));
        let ids = |v: &[usize]| v.iter().map(|&s| ds.samples[s].id.clone()).collect();
        configs.push(MemberConfig {
            prefix: format!("member{m}"),
            scales: t.scales.clone(),
            best_epoch: t.best_epoch,
            best_val_mse: t.best_val_mse,
            train_samples: ids(&member.train_samples),
            val_samples: ids(&member.val_samples),
        });
        trained.push(t);
    }
    let config = ModelConfig {
        format: FORMAT.into(),
        arch: opts.arch,
        arch_label: opts.arch.label().into(),
        crop_px: opts.train.crop_px,
        conv_channels: CONV_CHANNELS.to_vec(),
        descriptor_names: NAMES.iter().map(|s| s.to_string()).collect(),
        target: "log10 ionic conductivity, S/cm".into(),
        train: opts.train.clone(),
        seed: opts.seed,
        inner_folds: opts.inner_folds,
        members: configs,
        dataset: opts.dataset_path.display().to_string(),
        dataset_sha256: file_sha256(opts.dataset_path),
        trunk: opts.trunk.clone(),
        beamwatch_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut nets = Vec::new();
    let mut logs = Vec::new();
    for t in trained {
        nets.push(t.net);
        logs.push(t.epochs);
    }
    Ok((Ensemble { config, nets }, logs))
}

impl Ensemble {
    pub fn save(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|e| ConductivityError::file(dir, format!("cannot create: {e}")))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (net, mc) in self.nets.iter().zip(&self.config.members) {
            for (name, t) in net.snapshot()? {
                tensors.insert(format!("{}.{name}", mc.prefix), t);
            }
        }
        let wpath = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &wpath).map_err(terr(format!("write {}", wpath.display())))?;
        let cpath = dir.join(CONFIG_FILE);
        let json = serde_json::to_string_pretty(&self.config)
            .map_err(|e| ConductivityError::file(&cpath, format!("cannot encode: {e}")))?;
        std::fs::write(&cpath, json).map_err(|e| ConductivityError::file(&cpath, format!("cannot write: {e}")))?;
        Ok((wpath, cpath))
    }

    /// Reads `dir/model.json` and `dir/model.safetensors` (or a path to either file).
    pub fn load(path: &Path) -> Result<Self> {
        let dir = if path.is_dir() { path.to_owned() } else { path.parent().map(Path::to_owned).unwrap_or_default() };
        let cpath = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cpath)
            .map_err(|e| ConductivityError::file(&cpath, format!("cannot read the model config: {e}")))?;
        let config: ModelConfig =
            serde_json::from_str(&text).map_err(|e| ConductivityError::file(&cpath, format!("not a model config: {e}")))?;
        if config.format != FORMAT {
            return Err(ConductivityError::file(&cpath, format!("format {:?}, expected {FORMAT:?}", config.format)));
        }
        let wpath = dir.join(WEIGHTS_FILE);
        let all = candle_core::safetensors::load(&wpath, &Device::Cpu)
            .map_err(|e| ConductivityError::file(&wpath, format!("cannot read: {e}")))?;
        let mut nets = Vec::new();
        for mc in &config.members {
            let prefix = format!("{}.", mc.prefix);
            let mut tensors: Vec<(String, Tensor)> = all
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_owned(), t.clone())))
                .collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let net = Net::from_tensors(config.arch, &tensors, &mut ChaCha8Rng::seed_from_u64(0))
                .map_err(|e| ConductivityError::file(&wpath, format!("{}: {e}", mc.prefix)))?;
            nets.push(net);
        }
        if nets.is_empty() {
            return Err(ConductivityError::file(&cpath, "the model has no members"));
        }
        Ok(Self { config, nets })
    }

    /// log10 σ of every image of `ds` (mean over members).
    pub fn predict_images(&self, ds: &Dataset, features: Option<&[Vec<f32>]>) -> Result<Vec<f64>> {
        Ok(self.predict_images_spread(ds, features)?.into_iter().map(|(m, _)| m).collect())
    }

    /// Per image (log10 σ, spread): the mean over members of each member's mean over the image's
    /// grid of crops, and the members' mean standard deviation over that grid (0 for models that see
    /// no crops).
    pub fn predict_images_spread(&self, ds: &Dataset, features: Option<&[Vec<f32>]>) -> Result<Vec<(f64, f64)>> {
        let crop = self.config.crop_px;
        super::protocol::check_crop(ds, crop)?;
        let arch = self.config.arch;
        let items: Vec<usize> = if arch.uses_images() { (0..ds.images.len()).collect() } else { (0..ds.samples.len()).collect() };
        let mut sum = vec![(0.0, 0.0); items.len()];
        for (net, mc) in self.nets.iter().zip(&self.config.members) {
            let p = train::predict_spread(net, &mc.scales, ds, crop, features, &items)?;
            for (s, (m, sd)) in sum.iter_mut().zip(p) {
                s.0 += m;
                s.1 += sd;
            }
        }
        let n = self.nets.len() as f64;
        let avg = |s: &(f64, f64)| (s.0 / n, s.1 / n);
        Ok(if arch.uses_images() {
            sum.iter().map(avg).collect()
        } else {
            ds.images.iter().map(|im| avg(&sum[im.sample])).collect()
        })
    }
}
