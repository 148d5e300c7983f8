//! Which image regions the CNN ties to high and low conductivity (Kondo et al. 2017, as the paper
//! applies it):
//! 1. correlate each GAP channel with log10 σ over the training images → a positive and a negative
//!    channel group (by the sign of the correlation);
//! 2. average the last convolution's feature maps over each group → one map per group;
//! 3. upsample it (bilinear) to the crop;
//! 4. pixels above the map's median are the group's "important" region; the SEM crop is masked to
//!    show them.
//!
//! With synthetic data the true phase of every pixel is known, so we also report how much of each
//! group's region is pore or grain boundary ("defects") against the crop's overall defect fraction.

use serde::Serialize;

use super::dataset::Dataset;
use super::model::{self, GAP_CHANNELS, Net};
use super::synth::Phase;
use super::train::{self, Scales};
use super::{ConductivityError, Result};

/// One image's group maps and masks, all `crop × crop`.
#[derive(Clone, Debug)]
pub struct GroupMasks {
    pub image: usize,
    /// The centre crop, gray 0..1.
    pub crop: Vec<f32>,
    pub positive_map: Vec<f32>,
    pub negative_map: Vec<f32>,
    pub positive: Vec<bool>,
    pub negative: Vec<bool>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DefectOverlap {
    /// Fraction of all crop pixels that are pore or boundary.
    pub defect_fraction: f64,
    /// Fraction of the negative group's region that is pore or boundary.
    pub negative_region_defects: f64,
    pub positive_region_defects: f64,
    pub images: usize,
}

pub struct Maps {
    /// `[n][64]` GAP vectors.
    pub gap: Vec<Vec<f32>>,
    /// `[n][h·w·64]` last-convolution maps (channels last) and their edge.
    pub maps: Vec<Vec<f32>>,
    pub edge: usize,
}

/// GAP vectors and last maps of the centre crops of `images`.
pub fn maps(net: &Net, scales: &Scales, ds: &Dataset, crop: usize, images: &[usize]) -> Result<Maps> {
    if !net.arch.is_cnn() {
        return Err(ConductivityError::Settings(format!("{} has no GAP layer to interpret", net.arch)));
    }
    let (mut gap, mut maps) = (Vec::new(), Vec::new());
    let edge = crop / 4;
    for chunk in images.chunks(32) {
        let b = train::batch(net.arch, ds, scales, crop, None, chunk, None)?;
        let out = net.forward(&b, model::Mode::Eval)?;
        let (Some(g), Some(m)) = (out.gap, out.last_maps) else {
            return Err(ConductivityError::Settings(format!("{} returned no feature maps", net.arch)));
        };
        let g = model::to_vec(&g)?;
        let m = model::to_vec(&m)?;
        let per = edge * edge * GAP_CHANNELS;
        for k in 0..chunk.len() {
            gap.push(g[k * GAP_CHANNELS..(k + 1) * GAP_CHANNELS].to_vec());
            maps.push(m[k * per..(k + 1) * per].to_vec());
        }
    }
    Ok(Maps { gap, maps, edge })
}

/// Pearson correlation of each GAP channel with `targets` (one per image). A channel that is
/// constant over the images (a dead ReLU) gets 0.
pub fn channel_correlation(gap: &[Vec<f32>], targets: &[f64]) -> Vec<f64> {
    let n = targets.len().max(1) as f64;
    let ty = targets.iter().sum::<f64>() / n;
    let sy = targets.iter().map(|t| (t - ty).powi(2)).sum::<f64>().sqrt();
    (0..GAP_CHANNELS)
        .map(|c| {
            let xs: Vec<f64> = gap.iter().map(|g| g[c] as f64).collect();
            let tx = xs.iter().sum::<f64>() / n;
            let sx = xs.iter().map(|x| (x - tx).powi(2)).sum::<f64>().sqrt();
            if sx <= 1e-12 || sy <= 1e-12 {
                return 0.0;
            }
            xs.iter().zip(targets).map(|(x, t)| (x - tx) * (t - ty)).sum::<f64>() / (sx * sy)
        })
        .collect()
}

/// Bilinear upsampling of an `e × e` map to `n × n` (pixel centres aligned, edges clamped).
pub fn upsample(map: &[f32], e: usize, n: usize) -> Vec<f32> {
    let scale = e as f32 / n as f32;
    let mut out = Vec::with_capacity(n * n);
    for y in 0..n {
        let fy = ((y as f32 + 0.5) * scale - 0.5).clamp(0.0, (e - 1) as f32);
        let (y0, wy) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(e - 1);
        for x in 0..n {
            let fx = ((x as f32 + 0.5) * scale - 0.5).clamp(0.0, (e - 1) as f32);
            let (x0, wx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(e - 1);
            let v = map[y0 * e + x0] * (1.0 - wx) * (1.0 - wy)
                + map[y0 * e + x1] * wx * (1.0 - wy)
                + map[y1 * e + x0] * (1.0 - wx) * wy
                + map[y1 * e + x1] * wx * wy;
            out.push(v);
        }
    }
    out
}

fn median(v: &[f32]) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}

/// The group map: mean over `channels` of a channels-last `e × e × 64` map.
fn group_map(maps: &[f32], e: usize, channels: &[usize]) -> Vec<f32> {
    (0..e * e)
        .map(|p| {
            if channels.is_empty() {
                return 0.0;
            }
            channels.iter().map(|&c| maps[p * GAP_CHANNELS + c]).sum::<f32>() / channels.len() as f32
        })
        .collect()
}

/// The masks of image `image` (index into `images` of [`maps`]) given the channel correlations.
pub fn masks(ds: &Dataset, m: &Maps, k: usize, image: usize, crop: usize, corr: &[f64]) -> GroupMasks {
    let pos: Vec<usize> = (0..GAP_CHANNELS).filter(|&c| corr[c] > 0.0).collect();
    let neg: Vec<usize> = (0..GAP_CHANNELS).filter(|&c| corr[c] < 0.0).collect();
    let positive_map = upsample(&group_map(&m.maps[k], m.edge, &pos), m.edge, crop);
    let negative_map = upsample(&group_map(&m.maps[k], m.edge, &neg), m.edge, crop);
    let (mp, mn) = (median(&positive_map), median(&negative_map));
    GroupMasks {
        image,
        crop: model::centre_crop(&ds.images[image], crop),
        positive: positive_map.iter().map(|&v| v > mp).collect(),
        negative: negative_map.iter().map(|&v| v > mn).collect(),
        positive_map,
        negative_map,
    }
}

/// How much of each group's region is pore or grain boundary, over `masks` (synthetic data only).
pub fn defect_overlap(ds: &Dataset, masks: &[GroupMasks], crop: usize) -> Option<DefectOverlap> {
    let truth = ds.truth.as_ref()?;
    let (mut all, mut n_all, mut neg, mut n_neg, mut pos, mut n_pos) = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for gm in masks {
        let im = &ds.images[gm.image];
        let phase = truth.phase.get(gm.image)?;
        let (x0, y0) = ((im.width - crop) / 2, (im.height - crop) / 2);
        for y in 0..crop {
            for x in 0..crop {
                let p = phase[(y0 + y) * im.width + x0 + x];
                let defect = p == Phase::Pore as u8 || p == Phase::Boundary as u8;
                let k = y * crop + x;
                all += usize::from(defect);
                n_all += 1;
                if gm.negative[k] {
                    neg += usize::from(defect);
                    n_neg += 1;
                }
                if gm.positive[k] {
                    pos += usize::from(defect);
                    n_pos += 1;
                }
            }
        }
    }
    let frac = |a: usize, n: usize| if n > 0 { a as f64 / n as f64 } else { f64::NAN };
    Some(DefectOverlap {
        defect_fraction: frac(all, n_all),
        negative_region_defects: frac(neg, n_neg),
        positive_region_defects: frac(pos, n_pos),
        images: masks.len(),
    })
}
