//! What produced a result: recorded in every output so a number can be traced to its method.

use serde::Serialize;

use crate::damage::{AnalysisSettings, Metric};
use crate::weights::identity::{Identity, Provenance as WeightsOrigin};

/// The weights behind a feature metric.
#[derive(Clone, Debug, Serialize)]
pub struct WeightsInfo {
    pub path: String,
    pub sha256: String,
    pub tensor_fingerprint: Option<String>,
    pub origin: WeightsOrigin,
    pub origin_label: String,
}

impl From<&Identity> for WeightsInfo {
    fn from(id: &Identity) -> Self {
        Self {
            path: id.path.clone(),
            sha256: id.file_sha256.clone(),
            tensor_fingerprint: id.tensor_fingerprint.clone(),
            origin: id.provenance.clone(),
            origin_label: id.provenance.label().to_string(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricInfo {
    pub name: Metric,
    pub similarity: &'static str,
    pub dissimilarity: &'static str,
}

impl From<Metric> for MetricInfo {
    fn from(m: Metric) -> Self {
        Self { name: m, similarity: m.similarity_label(), dissimilarity: m.dissimilarity_label() }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    pub beamwatch_version: &'static str,
    pub metric: MetricInfo,
    /// `None` for metrics that use no network.
    pub weights: Option<WeightsInfo>,
    pub settings: AnalysisSettings,
    /// Why this metric (e.g. "default metric resnet18 fell back to ssim: no weights found").
    pub metric_choice: String,
}

impl Provenance {
    pub fn new(settings: &AnalysisSettings, weights: Option<&Identity>, metric_choice: String) -> Self {
        Self {
            beamwatch_version: env!("CARGO_PKG_VERSION"),
            metric: settings.metric.into(),
            weights: weights.map(WeightsInfo::from),
            settings: settings.clone(),
            metric_choice,
        }
    }

    /// A short caption for pictures: metric, and a warning when the weights are not the paper's.
    pub fn caption(&self) -> String {
        match &self.weights {
            Some(w) if w.origin != WeightsOrigin::TorchvisionImagenet1kV1 => {
                format!("{} — weights: {}", self.metric.name, w.origin_label)
            }
            Some(_) => format!("{} — ImageNet ResNet-18 (torchvision IMAGENET1K_V1)", self.metric.name),
            None => self.metric.name.to_string(),
        }
    }
}
