//! ResNet-18 trunk with batch-norm folded into the convolutions, and the RGB stem turned into a
//! grayscale one.
//!
//! Grayscale input replicated to RGB and normalised per channel, x_c = (v − m_c)/s_c, gives
//!   conv1(x) = Σ_taps (Σ_c W_c/s_c)·v − Σ_valid taps Σ_c W_c·m_c/s_c.
//! The second term is not a constant: torchvision pads the *normalised* input with zeros, so only the
//! taps that land inside the patch contribute. We keep it per tap ([`GrayStem::shift`]) and the plan
//! sums it per output position — exact, with a third of the stem's multiply-adds.

use crate::weights::{StateDict, WeightsError, layout::LAYER_CHANNELS};

/// torchvision's BatchNorm2d epsilon.
pub const BN_EPS: f64 = 1e-5;
/// ImageNet normalisation, as float32 like torchvision and the golden reference use it.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A convolution with its batch norm folded in: y = W * x + b.
#[derive(Clone, Debug)]
pub struct FoldedConv {
    pub cout: usize,
    pub cin: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// `[cout][cin][k][k]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl FoldedConv {
    pub fn w(&self, co: usize, ci: usize, ky: usize, kx: usize) -> f32 {
        self.weight[((co * self.cin + ci) * self.k + ky) * self.k + kx]
    }
}

/// conv1 + bn1 for a single gray input channel.
#[derive(Clone, Debug)]
pub struct GrayStem {
    /// Single-input-channel folded conv (7×7, stride 2, pad 3).
    pub conv: FoldedConv,
    /// `[cout][k*k]`: what each tap subtracts when it lands inside the patch.
    pub shift: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub conv1: FoldedConv,
    pub conv2: FoldedConv,
    pub downsample: Option<FoldedConv>,
}

/// The folded trunk: stem, max-pool (implicit), layer1..layer4 of two blocks each.
#[derive(Clone, Debug)]
pub struct Network {
    pub stem: GrayStem,
    pub layers: [[Block; 2]; 4],
}

impl Network {
    pub fn from_state_dict(sd: &StateDict) -> Result<Self, WeightsError> {
        sd.check_trunk()?;
        let stem = gray_stem(sd)?;
        let mut cin = 64;
        let mut layers = Vec::with_capacity(4);
        for (li, &c) in LAYER_CHANNELS.iter().enumerate() {
            let mut blocks = Vec::with_capacity(2);
            for b in 0..2 {
                let p = format!("layer{}.{}", li + 1, b);
                let (block_in, stride) = if b == 0 && li > 0 { (cin, 2) } else { (c, 1) };
                let conv1 = fold(sd, &format!("{p}.conv1"), &format!("{p}.bn1"), c, block_in, 3, stride, 1)?;
                let conv2 = fold(sd, &format!("{p}.conv2"), &format!("{p}.bn2"), c, c, 3, 1, 1)?;
                let downsample = if b == 0 && li > 0 {
                    Some(fold(sd, &format!("{p}.downsample.0"), &format!("{p}.downsample.1"), c, cin, 1, 2, 0)?)
                } else {
                    None
                };
                blocks.push(Block { conv1, conv2, downsample });
            }
            let [b0, b1]: [Block; 2] = blocks.try_into().map_err(|_| unreachable_layout(sd))?;
            layers.push([b0, b1]);
            cin = c;
        }
        let layers: [[Block; 2]; 4] = layers.try_into().map_err(|_| unreachable_layout(sd))?;
        Ok(Self { stem, layers })
    }
}

fn unreachable_layout(sd: &StateDict) -> WeightsError {
    WeightsError::Layout { path: sd.source.clone(), reason: "internal: block count".into() }
}

/// Per-channel BN scale and shift in f64: y = scale·x + shift.
fn bn_affine(sd: &StateDict, bn: &str, c: usize) -> Result<(Vec<f64>, Vec<f64>), WeightsError> {
    let g = &sd.get(&format!("{bn}.weight"), &[c])?.data;
    let b = &sd.get(&format!("{bn}.bias"), &[c])?.data;
    let m = &sd.get(&format!("{bn}.running_mean"), &[c])?.data;
    let v = &sd.get(&format!("{bn}.running_var"), &[c])?.data;
    let scale: Vec<f64> = (0..c).map(|i| g[i] as f64 / (v[i] as f64 + BN_EPS).sqrt()).collect();
    let shift = (0..c).map(|i| b[i] as f64 - m[i] as f64 * scale[i]).collect();
    Ok((scale, shift))
}

#[allow(clippy::too_many_arguments)]
fn fold(
    sd: &StateDict,
    conv: &str,
    bn: &str,
    cout: usize,
    cin: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<FoldedConv, WeightsError> {
    let w = &sd.get(&format!("{conv}.weight"), &[cout, cin, k, k])?.data;
    let (scale, shift) = bn_affine(sd, bn, cout)?;
    let per_out = cin * k * k;
    let weight = (0..cout * per_out).map(|i| (w[i] as f64 * scale[i / per_out]) as f32).collect();
    Ok(FoldedConv { cout, cin, k, stride, pad, weight, bias: shift.iter().map(|&s| s as f32).collect() })
}

fn gray_stem(sd: &StateDict) -> Result<GrayStem, WeightsError> {
    let (cout, k) = (64, 7);
    let w = &sd.get("conv1.weight", &[cout, 3, k, k])?.data;
    let (scale, shift) = bn_affine(sd, "bn1", cout)?;
    let taps = k * k;
    let mut weight = vec![0f32; cout * taps];
    let mut tap_shift = vec![0f32; cout * taps];
    for co in 0..cout {
        for t in 0..taps {
            let (mut a, mut b) = (0f64, 0f64);
            for c in 0..3 {
                let wc = w[(co * 3 + c) * taps + t] as f64;
                a += wc / IMAGENET_STD[c] as f64;
                b += wc * IMAGENET_MEAN[c] as f64 / IMAGENET_STD[c] as f64;
            }
            weight[co * taps + t] = (a * scale[co]) as f32;
            tap_shift[co * taps + t] = (b * scale[co]) as f32;
        }
    }
    let conv =
        FoldedConv { cout, cin: 1, k, stride: 2, pad: 3, weight, bias: shift.iter().map(|&s| s as f32).collect() };
    Ok(GrayStem { conv, shift: tap_shift })
}
