//! The architectures, as candle tensors in channels-last layout, and the crops they are fed.
//!
//! Baseline (the paper's Table 2): conv3×3 1→16, 16→16, max-pool 2, 32, 32, max-pool 2, 64, 64, global
//! average pooling (GAP) → 64, fully connected → 1; stride 1, padding 1, ReLU after every convolution
//! (the paper does not name the activation; ReLU is the usual reading).
//! - One addition to Table 2: the GAP vector is batch-normalised (per channel, no learned scale or
//!   shift; running statistics at test time) before the fully connected layer. Without it the
//!   Baseline stayed at predicting the mean within a CPU budget of a few hundred Adam steps: each
//!   image's GAP vector differs from the next by ~10 % of its value, so the output layer needed
//!   weights ~10× larger than Adam reaches in that many steps (measured on a 24-sample set:
//!   held-out R² ≈ 0.0 without, see docs/conductivity.md). Normalised, the 64 image features also
//!   enter on the same scale as the 33 standardised descriptors, as the paper wants for the
//!   descriptors ("input with equal weighting").
//! - `descriptors`: the 33 standardised descriptors concatenated to the 64-d GAP vector before the
//!   fully connected layer.
//! - `attention`: after each of the three convolution blocks a 1×1 convolution turns the block's
//!   feature maps into one map, a sigmoid makes it a mask, and every feature map is multiplied by it
//!   before the next layer (the paper says "intermediate convolutional layers" without naming
//!   them; after every block is our reading).
//! - `descriptors-only`: the 33 standardised descriptors → fully connected → 1 (no image): the
//!   descriptors model with its image branch removed, i.e. a linear model in the 33 descriptors
//!   (which already hold every square and product the paper chose).
//! - `resnet18`: frozen ResNet-18 trunk features (512-d, [`super::features`]) → fully connected → 1:
//!   our substitute for the paper's ImageNet EfficientNet-B3 transfer model.
//! - `ridge`: not a network — ridge regression on eight whole-image statistics
//!   ([`super::imagestats`]), the honest baseline every CNN is reported beside.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::dataset::SemImage;
use super::descriptors::N_DESCRIPTORS;
use super::ops::{conv3x3, max_pool2};
use super::{Result, terr};

/// Channels of the Baseline's six convolutions.
pub const CONV_CHANNELS: [(usize, usize); 6] = [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)];
/// Width of the GAP vector.
pub const GAP_CHANNELS: usize = 64;
/// ResNet-18 layer4 feature width.
pub const RESNET_FEATURES: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Baseline,
    Descriptors,
    Attention,
    DescriptorsOnly,
    Resnet18,
    Ridge,
}

impl Arch {
    pub const ALL: [Arch; 6] =
        [Arch::Baseline, Arch::Descriptors, Arch::Attention, Arch::DescriptorsOnly, Arch::Resnet18, Arch::Ridge];

    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Descriptors => "descriptors",
            Self::Attention => "attention",
            Self::DescriptorsOnly => "descriptors-only",
            Self::Resnet18 => "resnet18",
            Self::Ridge => "ridge",
        }
    }

    /// As the paper's figures name them.
    pub fn label(self) -> &'static str {
        match self {
            Self::Baseline => "Baseline (image only)",
            Self::Descriptors => "Baseline with descriptors",
            Self::Attention => "Baseline with attention",
            Self::DescriptorsOnly => "Descriptors only",
            Self::Resnet18 => "ResNet-18 trunk + head (EfficientNet-B3 substitute)",
            Self::Ridge => "Ridge on 8 image statistics (simple baseline)",
        }
    }

    /// Trained on image crops through the Baseline convolutions.
    pub fn is_cnn(self) -> bool {
        matches!(self, Self::Baseline | Self::Descriptors | Self::Attention)
    }

    pub fn uses_descriptors(self) -> bool {
        matches!(self, Self::Descriptors | Self::DescriptorsOnly)
    }

    /// A candle network (everything but the ridge baseline).
    pub fn is_net(self) -> bool {
        !matches!(self, Self::Ridge)
    }

    pub fn uses_images(self) -> bool {
        !matches!(self, Self::DescriptorsOnly)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// For `final_model = "…"` in the stage's settings (the CLI parses through `ValueEnum`).
impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            format!("unknown model '{s}' ({})", Self::ALL.map(Arch::name).join(", "))
        })
    }
}

/// One network's inputs for a batch; which are present depends on the architecture.
#[derive(Default)]
pub struct Batch {
    /// `[B, H, W, 1]`, standardised gray values.
    pub images: Option<Tensor>,
    /// `[B, 33]`, standardised descriptors.
    pub descriptors: Option<Tensor>,
    /// `[B, 512]`, standardised trunk features.
    pub features: Option<Tensor>,
}

pub struct Output {
    /// `[B]`, standardised log10 σ.
    pub prediction: Tensor,
    /// `[B, 64]` GAP vector (CNN architectures).
    pub gap: Option<Tensor>,
    /// `[B, h, w, 64]` maps after the last convolution (CNN architectures), for the group masks.
    pub last_maps: Option<Tensor>,
}

/// Trainable parameters with the names they are saved under, and the GAP normalisation's running
/// statistics (not trained; saved as `gap_norm.running_mean` / `gap_norm.running_var`).
pub struct Net {
    pub arch: Arch,
    pub params: Vec<(String, Var)>,
    gap_stats: Mutex<GapStats>,
}

#[derive(Clone, Debug)]
struct GapStats {
    mean: Vec<f32>,
    var: Vec<f32>,
}

/// Training (batch statistics, running statistics updated) or evaluation (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Running-statistics update weight per batch (PyTorch's BatchNorm default).
pub const GAP_NORM_MOMENTUM: f32 = 0.1;
pub const GAP_NORM_EPS: f64 = 1e-5;
const RUNNING_MEAN: &str = "gap_norm.running_mean";
const RUNNING_VAR: &str = "gap_norm.running_var";

fn var(shape: &[usize], values: Vec<f32>) -> Result<Var> {
    let t = Tensor::from_vec(values, shape, &Device::Cpu).map_err(terr("parameter"))?;
    Var::from_tensor(&t).map_err(terr("parameter"))
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    let d = Normal::new(0.0f32, std.max(1e-8)).unwrap_or_else(|_| Normal::new(0.0, 0.01).expect("fixed σ"));
    (0..n).map(|_| d.sample(rng)).collect()
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound).collect()
}

impl Net {
    /// Fresh parameters from `rng`: He-normal convolutions (ReLU follows), zero biases, the CNNs'
    /// fully connected layer uniform in ±1/√fan-in like PyTorch (zero for the linear models), attention 1×1 convolutions near zero
    /// (every mask starts at 0.5, i.e. a plain Baseline at half gain).
    pub fn init(arch: Arch, rng: &mut ChaCha8Rng) -> Result<Self> {
        let mut params = Vec::new();
        if arch.is_cnn() {
            for (i, &(cin, cout)) in CONV_CHANNELS.iter().enumerate() {
                let fan_in = 9 * cin;
                params.push((format!("conv{}.weight", i + 1), var(&[cout, fan_in], normal(rng, cout * fan_in, (2.0 / fan_in as f32).sqrt()))?));
                params.push((format!("conv{}.bias", i + 1), var(&[cout], vec![0.0; cout])?));
            }
            if arch == Arch::Attention {
                for (k, c) in [16usize, 32, 64].into_iter().enumerate() {
                    params.push((format!("attention{}.weight", k + 1), var(&[c, 1], normal(rng, c, 0.01))?));
                    params.push((format!("attention{}.bias", k + 1), var(&[1], vec![0.0])?));
                }
            }
        }
        let head_in = Self::head_inputs(arch);
        let b = 1.0 / (head_in as f32).sqrt();
        // Linear models on fixed inputs start from zero, i.e. from predicting the training mean:
        // with far more inputs than samples (512 trunk features, ~40 samples) a random start is a
        // random prediction that early stopping may keep.
        let head = if arch.is_cnn() { uniform(rng, head_in, b) } else { vec![0.0; head_in] };
        params.push(("head.weight".into(), var(&[head_in, 1], head)?));
        params.push(("head.bias".into(), var(&[1], vec![0.0])?));
        let stats = GapStats { mean: vec![0.0; GAP_CHANNELS], var: vec![1.0; GAP_CHANNELS] };
        Ok(Self { arch, params, gap_stats: Mutex::new(stats) })
    }

    fn stats(&self) -> GapStats {
        self.gap_stats.lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_stats(&self, s: GapStats) {
        match self.gap_stats.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    pub fn head_inputs(arch: Arch) -> usize {
        match arch {
            Arch::Baseline | Arch::Attention => GAP_CHANNELS,
            Arch::Descriptors => GAP_CHANNELS + N_DESCRIPTORS,
            Arch::DescriptorsOnly => N_DESCRIPTORS,
            Arch::Resnet18 => RESNET_FEATURES,
            // Not a network; a head of one input keeps `init` total.
            Arch::Ridge => 1,
        }
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_tensor()).ok_or_else(|| {
            super::ConductivityError::Settings(format!("model {} has no parameter {name}", self.arch))
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Current values, detached (for keeping the best epoch and for saving); CNNs include the GAP
    /// normalisation's running statistics.
    pub fn snapshot(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy().map_err(terr("snapshot"))?)))
            .collect::<Result<_>>()?;
        if self.arch.is_cnn() {
            let s = self.stats();
            let dev = Device::Cpu;
            out.push((RUNNING_MEAN.into(), Tensor::from_vec(s.mean, GAP_CHANNELS, &dev).map_err(terr("snapshot"))?));
            out.push((RUNNING_VAR.into(), Tensor::from_vec(s.var, GAP_CHANNELS, &dev).map_err(terr("snapshot"))?));
        }
        Ok(out)
    }

    pub fn restore(&self, snap: &[(String, Tensor)]) -> Result<()> {
        let mut stats = self.stats();
        for (name, t) in snap {
            if name == RUNNING_MEAN || name == RUNNING_VAR {
                let v: Vec<f32> = t.to_dtype(DType::F32).and_then(|t| t.to_vec1()).map_err(terr(format!("restore {name}")))?;
                if v.len() != GAP_CHANNELS {
                    return Err(super::ConductivityError::Settings(format!("{name} has {} values, expected {GAP_CHANNELS}", v.len())));
                }
                if name == RUNNING_MEAN { stats.mean = v } else { stats.var = v }
                continue;
            }
            let v = self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or_else(|| {
                super::ConductivityError::Settings(format!("model {} has no parameter {name}", self.arch))
            })?;
            v.set(t).map_err(terr(format!("restore {name}")))?;
        }
        self.set_stats(stats);
        Ok(())
    }

    /// Sets the GAP normalisation to the exact statistics of `gaps` (raw GAP vectors of the
    /// training images with the current weights; "precise batch norm"), so that validation and test
    /// see the network as it is rather than a running average lagging behind it.
    pub fn calibrate(&self, gaps: &[Vec<f32>]) {
        if gaps.len() < 2 {
            return;
        }
        let n = gaps.len() as f64;
        let mut s = self.stats();
        for c in 0..GAP_CHANNELS {
            let m = gaps.iter().map(|g| g[c] as f64).sum::<f64>() / n;
            let v = gaps.iter().map(|g| (g[c] as f64 - m).powi(2)).sum::<f64>() / (n - 1.0);
            s.mean[c] = m as f32;
            s.var[c] = v as f32;
        }
        self.set_stats(s);
    }

    /// Names and count of what [`snapshot`](Self::snapshot) saves.
    fn saved_len(&self) -> usize {
        self.params.len() + if self.arch.is_cnn() { 2 } else { 0 }
    }

    /// A network with the given values (a loaded model); shapes must match a fresh one.
    pub fn from_tensors(arch: Arch, tensors: &[(String, Tensor)], rng: &mut ChaCha8Rng) -> Result<Self> {
        let net = Self::init(arch, rng)?;
        if tensors.len() != net.saved_len() {
            return Err(super::ConductivityError::Settings(format!(
                "model {arch}: {} tensors given, the architecture has {}",
                tensors.len(),
                net.saved_len()
            )));
        }
        for (name, t) in tensors {
            let want = if name == RUNNING_MEAN || name == RUNNING_VAR { vec![GAP_CHANNELS] } else { net.p(name)?.dims().to_vec() };
            if t.dims() != want.as_slice() {
                return Err(super::ConductivityError::Settings(format!(
                    "model {arch}: tensor {name} has shape {:?}, expected {want:?}",
                    t.dims()
                )));
            }
        }
        net.restore(tensors)?;
        Ok(net)
    }

    pub fn forward(&self, batch: &Batch, mode: Mode) -> Result<Output> {
        self.forward_inner(batch, mode).map_err(terr(format!("{} forward pass", self.arch)))
    }

    /// Batch normalisation of the GAP vector `[B, 64]` (no affine part: the linear head follows).
    fn normalise_gap(&self, g: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let (b, c) = g.dims2()?;
        if mode == Mode::Train && b >= 2 {
            let mean = g.mean(0)?;
            let centred = g.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean(0)?;
            let m: Vec<f32> = mean.to_vec1()?;
            // Running variance unbiased, as PyTorch keeps it.
            let v: Vec<f32> = (&var * (b as f64 / (b - 1) as f64))?.to_vec1()?;
            let mut s = self.stats();
            for k in 0..c {
                s.mean[k] = (1.0 - GAP_NORM_MOMENTUM) * s.mean[k] + GAP_NORM_MOMENTUM * m[k];
                s.var[k] = (1.0 - GAP_NORM_MOMENTUM) * s.var[k] + GAP_NORM_MOMENTUM * v[k];
            }
            self.set_stats(s);
            centred.broadcast_div(&(var + GAP_NORM_EPS)?.sqrt()?)
        } else {
            let s = self.stats();
            let dev = g.device();
            let mean = Tensor::from_vec(s.mean, c, dev)?;
            let std: Vec<f32> = s.var.iter().map(|v| ((*v as f64 + GAP_NORM_EPS).sqrt()) as f32).collect();
            g.broadcast_sub(&mean)?.broadcast_div(&Tensor::from_vec(std, c, dev)?)
        }
    }

    fn forward_inner(&self, batch: &Batch, mode: Mode) -> candle_core::Result<Output> {
        let missing = |what: &str| candle_core::Error::Msg(format!("{} needs {what} in the batch", self.arch));
        let p = |n: &str| self.p(n).map_err(|e| candle_core::Error::Msg(e.to_string()));
        let (mut gap, mut last_maps) = (None, None);
        let head_in = match self.arch {
            Arch::Baseline | Arch::Descriptors | Arch::Attention => {
                let mut h = batch.images.clone().ok_or_else(|| missing("images"))?;
                for i in 0..6 {
                    h = conv3x3(&h, p(&format!("conv{}.weight", i + 1))?, p(&format!("conv{}.bias", i + 1))?)?.relu()?;
                    if i % 2 == 1 {
                        if self.arch == Arch::Attention {
                            h = attention(&h, p(&format!("attention{}.weight", i / 2 + 1))?, p(&format!("attention{}.bias", i / 2 + 1))?)?;
                        }
                        if i < 5 {
                            h = max_pool2(&h)?;
                        }
                    }
                }
                let raw = h.mean((1, 2))?;
                last_maps = Some(h);
                gap = Some(raw.clone());
                let g = self.normalise_gap(&raw, mode)?;
                if self.arch == Arch::Descriptors {
                    let d = batch.descriptors.as_ref().ok_or_else(|| missing("descriptors"))?;
                    Tensor::cat(&[&g, d], 1)?
                } else {
                    g
                }
            }
            Arch::DescriptorsOnly => batch.descriptors.clone().ok_or_else(|| missing("descriptors"))?,
            Arch::Resnet18 => batch.features.clone().ok_or_else(|| missing("features"))?,
            Arch::Ridge => return Err(candle_core::Error::Msg("ridge is not a network".into())),
        };
        let prediction = head_in.matmul(p("head.weight")?)?.broadcast_add(p("head.bias")?)?.squeeze(1)?;
        Ok(Output { prediction, gap, last_maps })
    }
}

/// x · σ(1×1 conv(x)): one mask per position, shared by every channel.
fn attention(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (n, h, wd, c) = x.dims4()?;
    let z = x.reshape((n * h * wd, c))?.matmul(w)?.broadcast_add(b)?;
    // σ(z) = 1 / (1 + e^(−z)), written with differentiable primitives.
    let mask = (z.neg()?.exp()? + 1.0)?.recip()?.reshape((n, h, wd, 1))?;
    x.broadcast_mul(&mask)
}

/// Pixel standardisation of a training set: images enter the CNN as (v − mean) / std.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelScale {
    pub mean: f32,
    pub std: f32,
}

impl PixelScale {
    pub fn fit<'a>(images: impl IntoIterator<Item = &'a SemImage>) -> Self {
        let (mut s, mut s2, mut n) = (0f64, 0f64, 0f64);
        for im in images {
            for &v in &im.pixels {
                s += v as f64;
                s2 += (v as f64).powi(2);
                n += 1.0;
            }
        }
        let mean = if n > 0.0 { s / n } else { 0.5 };
        let var = if n > 0.0 { (s2 / n - mean * mean).max(0.0) } else { 0.0 };
        let std = if var.sqrt() > 1e-6 { var.sqrt() } else { 1.0 };
        Self { mean: mean as f32, std: std as f32 }
    }
}

/// The centre `crop × crop` pixels (test and validation input).
pub fn centre_crop(im: &SemImage, crop: usize) -> Vec<f32> {
    let (x0, y0) = ((im.width - crop) / 2, (im.height - crop) / 2);
    crop_at(im, crop, x0, y0, false, false)
}

/// Crops that cover the whole image: along each axis ⌈edge / crop⌉ windows spread evenly from one
/// edge to the other (neighbours overlap when the edge is not a multiple of the crop), row by row.
pub fn grid_crops(im: &SemImage, crop: usize) -> Vec<Vec<f32>> {
    let starts = |edge: usize| -> Vec<usize> {
        let n = edge.div_ceil(crop).max(1);
        if n == 1 {
            return vec![(edge - crop) / 2];
        }
        (0..n).map(|k| (k * (edge - crop) + (n - 1) / 2) / (n - 1)).collect()
    };
    let (xs, ys) = (starts(im.width), starts(im.height));
    ys.iter().flat_map(|&y0| xs.iter().map(move |&x0| crop_at(im, crop, x0, y0, false, false))).collect()
}

/// A training crop: each of a horizontal and a vertical flip with probability ½, then a uniformly
/// placed `crop × crop` window (the paper's order: flip, then random crop).
pub fn random_crop(im: &SemImage, crop: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let flip_x = rng.random::<bool>();
    let flip_y = rng.random::<bool>();
    let x0 = rng.random_range(0..=im.width - crop);
    let y0 = rng.random_range(0..=im.height - crop);
    crop_at(im, crop, x0, y0, flip_x, flip_y)
}

/// The window at (x0, y0) of the image flipped as asked (flipping first, then cropping at (x0, y0)
/// of the flipped image).
fn crop_at(im: &SemImage, crop: usize, x0: usize, y0: usize, flip_x: bool, flip_y: bool) -> Vec<f32> {
    let mut out = Vec::with_capacity(crop * crop);
    for y in y0..y0 + crop {
        let sy = if flip_y { im.height - 1 - y } else { y };
        for x in x0..x0 + crop {
            let sx = if flip_x { im.width - 1 - x } else { x };
            out.push(im.pixels[sy * im.width + sx]);
        }
    }
    out
}

/// Crops (each `crop²` values) → `[B, crop, crop, 1]`, standardised.
pub fn image_tensor(crops: &[Vec<f32>], crop: usize, scale: PixelScale) -> Result<Tensor> {
    let data: Vec<f32> = crops.iter().flatten().map(|v| (v - scale.mean) / scale.std).collect();
    Tensor::from_vec(data, (crops.len(), crop, crop, 1), &Device::Cpu).map_err(terr("image batch"))
}

/// Rows of equal length → `[B, D]`.
pub fn matrix(rows: &[Vec<f32>]) -> Result<Tensor> {
    let d = rows.first().map_or(0, Vec::len);
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(data, (rows.len(), d), &Device::Cpu).map_err(terr("feature batch"))
}

pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(terr("read tensor"))
}
