//! Choosing the metric and loading what it needs: shared by every command that analyses frames.
//!
//! The default metric is the seed's ResNet-18 cosine when weights are found, else SSIM with a
//! warning; asking for resnet18 or lpips explicitly without weights is an error that says how to
//! get them.

use std::path::Path;
use std::sync::Arc;

use crate::Error;
use crate::config::AnalysisConfig;
use crate::damage::{AnalysisSettings, Metric};
use crate::engine::{Engine, Network};
use crate::weights::identity::{self, Identity, Provenance};
use crate::weights::{StateDict, WeightsError, store};

/// Everything an [`crate::damage::Analyzer`] needs, and how it was chosen.
pub struct MetricSetup {
    pub settings: AnalysisSettings,
    pub engine: Option<Arc<Engine>>,
    pub weights: Option<Identity>,
    /// One sentence for outputs: why this metric.
    pub choice: String,
}

/// Finds weights: the named file, else the standard places. `Ok(None)`: none anywhere.
pub fn find_weights(explicit: Option<&Path>) -> Result<Option<(Identity, StateDict)>, WeightsError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => match store::locate() {
            Some(c) => {
                tracing::info!("using ResNet-18 weights from the {}: {}", c.origin, c.path.display());
                c.path
            }
            None => return Ok(None),
        },
    };
    let (id, sd) = identity::identify(&path)?;
    if let Err(reason) = &id.layout {
        return Err(WeightsError::Layout { path, reason: reason.clone() });
    }
    Ok(Some((id, sd)))
}

pub fn prepare(cfg: &AnalysisConfig) -> Result<MetricSetup, Error> {
    let needs_weights = cfg.metric.is_none_or(Metric::uses_features);
    let found = if needs_weights { find_weights(cfg.weights.as_deref())? } else { None };
    let (metric, choice) = match (cfg.metric, &found) {
        (Some(m), _) if !m.uses_features() => (m, format!("{m} (requested)")),
        (Some(m), Some(_)) => (m, format!("{m} (requested)")),
        (Some(_), None) => return Err(WeightsError::NotFound { searched: store::searched_list() }.into()),
        (None, Some(_)) => (Metric::Resnet18, "resnet18 (default)".to_string()),
        (None, None) => {
            tracing::warn!(
                "no ResNet-18 weights found ({}); the default metric falls back to PSNR (per-patch RMSE), the best classical metric in the known-truth evaluation. Get the \
                 paper's weights with `beamwatch weights fetch` (needs internet) or `beamwatch weights \
                 import resnet18-f37072fd.pth`",
                store::searched_list()
            );
            (Metric::Psnr, "psnr (fallback: the default resnet18 metric needs weights and none were found)".to_string())
        }
    };
    let settings = cfg.settings(metric);
    let (engine, weights) = match found {
        Some((id, sd)) if metric.uses_features() => {
            match id.provenance {
                Provenance::TorchvisionImagenet1kV1 => {
                    tracing::info!("weights: torchvision IMAGENET1K_V1 ({})", id.evidence)
                }
                _ => tracing::warn!(
                    "weights {} are {}: results are not the paper's ImageNet metric",
                    id.path,
                    id.provenance.label()
                ),
            }
            let net = Network::from_state_dict(&sd)?;
            let engine = Engine::for_backend(&net, settings.patch_px, cfg.threads, cfg.backend)?;
            (Some(Arc::new(engine)), Some(id))
        }
        _ => (None, None),
    };
    Ok(MetricSetup { settings, engine, weights, choice })
}
