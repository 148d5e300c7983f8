//! The transfer model's frozen part: the project's ResNet-18 trunk ([`crate::engine`]) applied to a
//! crop, layer4 global-average-pooled (512-d), averaged over the crop's tiles.
//!
//! The paper fine-tuned an ImageNet EfficientNet-B3; we have neither EfficientNet nor a way to
//! fine-tune the folded trunk, so this is a *substitute*: frozen features + a trained fully
//! connected head. It is a transfer from ImageNet only when the weights are torchvision's
//! IMAGENET1K_V1 (`beamwatch weights verify` says which); with the repository's synthetic test
//! weights it is a fixed random-feature model and must be reported as such.

use std::path::Path;

use crate::engine::{Engine, Network};
use crate::weights::identity::{Identity, Provenance};

use super::{ConductivityError, Result};

/// The engine's largest patch; bigger crops are cut into tiles.
pub const MAX_TILE_PX: usize = crate::engine::plan::PATCH_MAX;

pub struct Trunk {
    engine: Engine,
    tiles_per_edge: usize,
    tile: usize,
    pub identity: Identity,
}

impl Trunk {
    /// The trunk for `crop`-pixel inputs, with the weights at `explicit` or found in the usual
    /// places; `Ok(None)` when there are none anywhere.
    pub fn load(explicit: Option<&Path>, crop: usize, threads: usize) -> Result<Option<Self>> {
        let Some((identity, sd)) = crate::weights::store::find(explicit)
            .map_err(|e| ConductivityError::Settings(e.to_string()))?
        else {
            return Ok(None);
        };
        if identity.provenance != Provenance::TorchvisionImagenet1kV1 {
            tracing::warn!(
                "ResNet-18 weights {} are {}: the resnet18 model is NOT an ImageNet transfer model",
                identity.path,
                identity.provenance.label()
            );
        }
        let net = Network::from_state_dict(&sd).map_err(|e| ConductivityError::Settings(e.to_string()))?;
        let tiles_per_edge = crop.div_ceil(MAX_TILE_PX).max(1);
        let tile = crop / tiles_per_edge;
        let engine = Engine::new(&net, tile, threads).map_err(|e| ConductivityError::Settings(e.to_string()))?;
        Ok(Some(Self { engine, tiles_per_edge, tile, identity }))
    }

    pub fn is_imagenet(&self) -> bool {
        self.identity.provenance == Provenance::TorchvisionImagenet1kV1
    }

    /// 512-d features of each `crop × crop` input (gray 0..1), mean over its tiles.
    pub fn features(&self, crops: &[Vec<f32>], crop: usize) -> Vec<Vec<f32>> {
        let (m, t) = (self.tiles_per_edge, self.tile);
        let mut pixels = Vec::with_capacity(crops.len() * m * m * t * t);
        for c in crops {
            for ty in 0..m {
                for tx in 0..m {
                    for y in ty * t..(ty + 1) * t {
                        pixels.extend_from_slice(&c[y * crop + tx * t..y * crop + (tx + 1) * t]);
                    }
                }
            }
        }
        let f = self.engine.features(&pixels);
        (0..crops.len())
            .map(|i| {
                let mut acc = vec![0f32; 512];
                for k in 0..m * m {
                    for (a, v) in acc.iter_mut().zip(f.row(3, i * m * m + k)) {
                        *a += v / (m * m) as f32;
                    }
                }
                acc
            })
            .collect()
    }
}
