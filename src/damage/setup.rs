//! Setting an analysis up: the `[analysis]` section of a configuration, the choice of metric, and
//! loading what that metric needs (weights, the feature engine). Every command that analyses
//! frames — the daemon, replay, compare, evaluate — starts here.
//!
//! The default metric is the seed's ResNet-18 cosine when weights are found, else PSNR with a
//! warning (the best classical metric of the known-truth evaluation); asking for resnet18 or lpips
//! explicitly without weights is an error that says how to get them.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::calibrate::{DEFAULT_CALIBRATION_FRAMES, DEFAULT_FALSE_PATCH_EVERY_FRAMES, PatchThreshold};
use super::{AnalysisSettings, DEFAULT_PREFILTER_SIGMA_PX, Metric};
use crate::engine::plan::{PATCH_MAX, PATCH_MIN};
use crate::engine::{BackendChoice, Engine, EngineError, Network, Precision};
use crate::frame::ScaleMode;
use crate::register::Registration;
use crate::weights::identity::{Identity, Provenance};
use crate::weights::{WeightsError, store};

/// `[analysis]`: how frames are compared.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// `None`: resnet18 when weights are found, else psnr with a warning.
    pub metric: Option<Metric>,
    /// `None`: search ($BEAMWATCH_WEIGHTS, data directory, torchvision cache).
    pub weights: Option<PathBuf>,
    pub patch_px: usize,
    /// A fixed per-patch threshold on the dissimilarity; `None`: calibrated per series.
    pub threshold: Option<f32>,
    /// Calibration: compared frames after the reference that set the noise floor (≥ 2).
    pub calibration_frames: usize,
    /// Calibration: the false-alarm rate, as one falsely significant patch per this many frames.
    pub false_patch_every_frames: f64,
    pub min_region_patches: usize,
    pub scale: ScaleMode,
    pub registration: Registration,
    pub mask_gaps: bool,
    pub max_invalid_fraction: f32,
    /// CPU threads for the feature engine; 0 = all cores.
    pub threads: usize,
    /// Hardware for the feature engine: auto (GPU when usable, else CPU), cpu or cuda.
    pub backend: BackendChoice,
    /// Number format: fp32 (default, exact) or bf16 (AVX512-BF16 CPUs, bf16 tensor cores on GPUs).
    pub precision: Precision,
    /// Gaussian pre-filter σ (px) applied to both frames before patching; 0 = off.
    pub prefilter_sigma_px: f32,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            metric: None,
            weights: None,
            patch_px: 20,
            threshold: None,
            calibration_frames: DEFAULT_CALIBRATION_FRAMES,
            false_patch_every_frames: DEFAULT_FALSE_PATCH_EVERY_FRAMES,
            min_region_patches: 2,
            scale: ScaleMode::Reference,
            registration: Registration::Subpixel,
            mask_gaps: true,
            max_invalid_fraction: 0.25,
            threads: 0,
            backend: BackendChoice::Auto,
            precision: Precision::Fp32,
            prefilter_sigma_px: DEFAULT_PREFILTER_SIGMA_PX,
        }
    }
}

impl AnalysisConfig {
    /// The first impossible value, if any: (key, value, why).
    pub fn invalid(&self) -> Option<(&'static str, String, String)> {
        if !(PATCH_MIN..=PATCH_MAX).contains(&self.patch_px) {
            return Some((
                "analysis.patch_px",
                self.patch_px.to_string(),
                format!("must be {PATCH_MIN}..={PATCH_MAX} px"),
            ));
        }
        if let Some(t) = self.threshold
            && !(t.is_finite() && t >= 0.0)
        {
            return Some(("analysis.threshold", t.to_string(), "must be a finite number ≥ 0".into()));
        }
        if !(2..=1000).contains(&self.calibration_frames) {
            return Some((
                "analysis.calibration_frames",
                self.calibration_frames.to_string(),
                "must be 2..=1000 (two frames at least, to see the noise)".into(),
            ));
        }
        if !(self.false_patch_every_frames.is_finite() && self.false_patch_every_frames >= 1.0) {
            return Some((
                "analysis.false_patch_every_frames",
                self.false_patch_every_frames.to_string(),
                "must be a number ≥ 1 (frames per false patch)".into(),
            ));
        }
        if !(0.0..=10.0).contains(&self.prefilter_sigma_px) {
            return Some((
                "analysis.prefilter_sigma_px",
                self.prefilter_sigma_px.to_string(),
                "must be within 0..=10 px (0 = off)".into(),
            ));
        }
        if self.min_region_patches == 0 {
            return Some(("analysis.min_region_patches", "0".into(), "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.max_invalid_fraction) {
            return Some((
                "analysis.max_invalid_fraction",
                self.max_invalid_fraction.to_string(),
                "must be within 0..=1".into(),
            ));
        }
        if self.weights.as_ref().is_some_and(|w| w.as_os_str().is_empty()) {
            return Some(("analysis.weights", "\"\"".into(), "empty path (omit the key to search)".into()));
        }
        None
    }

    /// Analysis settings for `metric`.
    pub fn settings(&self, metric: Metric) -> AnalysisSettings {
        AnalysisSettings {
            metric,
            patch_px: self.patch_px,
            threshold: match self.threshold {
                Some(dissimilarity) => PatchThreshold::Fixed { dissimilarity },
                None => PatchThreshold::Calibrated {
                    frames: self.calibration_frames,
                    false_patch_every_frames: self.false_patch_every_frames,
                },
            },
            min_region_patches: self.min_region_patches,
            scale: self.scale,
            registration: self.registration,
            max_invalid_fraction: self.max_invalid_fraction,
            prefilter_sigma_px: self.prefilter_sigma_px,
        }
    }
}

/// Why an analysis could not be set up.
#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum SetupError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Everything an [`super::Analyzer`] needs, and how it was chosen.
pub struct MetricSetup {
    pub settings: AnalysisSettings,
    pub engine: Option<Arc<Engine>>,
    pub weights: Option<Identity>,
    /// One sentence for outputs: why this metric.
    pub choice: String,
}

impl MetricSetup {
    /// Which hardware computes the features, in words ("CPU (2 threads)", "CUDA on …"); classical
    /// metrics run on the CPU.
    pub fn backend_name(&self) -> String {
        self.engine.as_ref().map_or("CPU (classical metric)".into(), |e| e.backend().to_string())
    }
}

/// Chooses the metric, finds and checks the weights it needs, and builds the feature engine.
pub fn prepare(cfg: &AnalysisConfig) -> Result<MetricSetup, SetupError> {
    let needs_weights = cfg.metric.is_none_or(Metric::uses_features);
    let found = if needs_weights { store::find(cfg.weights.as_deref())? } else { None };
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
            let engine =
                Engine::for_backend(&net, settings.patch_px, cfg.threads, cfg.backend)?.with_precision(cfg.precision);
            (Some(Arc::new(engine)), Some(id))
        }
        _ => (None, None),
    };
    Ok(MetricSetup { settings, engine, weights, choice })
}
