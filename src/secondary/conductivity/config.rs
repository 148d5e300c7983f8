//! `configs/conductivity/train.toml` → validated run settings. Every key is optional; flags on the command
//! line override the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::folds::Protocol;
use super::model::Arch;
use super::train::TrainSettings;
use super::{ConductivityError, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// "loso" (the paper) or "kfold".
    pub kind: String,
    /// Outer folds for "kfold".
    pub folds: usize,
    pub inner_folds: usize,
    /// Ensemble members per outer fold; default 4 for loso (the paper), 1 for kfold.
    pub members: Option<usize>,
    pub seed: u64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self { kind: "loso".into(), folds: 5, inner_folds: 4, members: None, seed: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub models: Vec<Arch>,
    /// Architecture fitted on all samples and saved for `predict` ("none": skip).
    pub final_model: String,
    /// Segmentation overlays to draw (highest and lowest conductivity samples).
    pub overlays: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { models: Arch::ALL.to_vec(), final_model: "descriptors".into(), overlays: 6 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConductivityConfig {
    pub train: TrainSettings,
    pub protocol: ProtocolConfig,
    pub run: RunConfig,
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl ConductivityConfig {
    /// The quick protocol (what configs/conductivity/train.toml holds): 5-fold over samples, one member
    /// per fold, 64 px crops, every model.
    pub fn quick() -> Self {
        Self {
            protocol: ProtocolConfig { kind: "kfold".into(), folds: 5, members: Some(1), ..ProtocolConfig::default() },
            ..Self::default()
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConductivityError::file(path, format!("cannot read: {e}")))?;
        let mut cfg: Self = toml::from_str(&text)
            .map_err(|e| ConductivityError::file(path, e.to_string().trim().replace('\n', " ")))?;
        cfg.source = Some(path.to_owned());
        cfg.validate()?;
        Ok(cfg)
    }

    fn where_(&self) -> String {
        self.source.as_ref().map_or("settings".into(), |p| p.display().to_string())
    }

    pub fn protocol(&self) -> Result<Protocol> {
        match self.protocol.kind.as_str() {
            "loso" => Ok(Protocol::Loso),
            "kfold" => Ok(Protocol::Kfold { folds: self.protocol.folds }),
            other => Err(ConductivityError::Settings(format!(
                "{}: protocol kind {other:?}: use \"loso\" or \"kfold\"",
                self.where_()
            ))),
        }
    }

    pub fn members(&self) -> usize {
        self.protocol.members.unwrap_or(if self.protocol.kind == "loso" { self.protocol.inner_folds } else { 1 })
    }

    pub fn final_model(&self) -> Result<Option<Arch>> {
        match self.run.final_model.as_str() {
            "none" => Ok(None),
            s => s.parse().map(Some).map_err(|e| ConductivityError::Settings(format!("{}: final_model: {e}", self.where_()))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let w = self.where_();
        let bad = |key: &str, why: String| Err(ConductivityError::Settings(format!("{w}: {key}: {why}")));
        let t = &self.train;
        if t.crop_px < 8 || !t.crop_px.is_multiple_of(4) {
            return bad("crop_px", format!("{} is not a multiple of 4 that is ≥ 8", t.crop_px));
        }
        if t.max_epochs == 0 || t.batch == 0 || t.patience == 0 || t.crops_per_image == 0 {
            return bad("max_epochs / batch / patience / crops_per_image", "must be ≥ 1".into());
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return bad("learning_rate", format!("{} is not a positive number", t.learning_rate));
        }
        self.protocol()?;
        if self.protocol.inner_folds < 2 {
            return bad("inner_folds", format!("{} < 2", self.protocol.inner_folds));
        }
        let m = self.members();
        if m == 0 || m > self.protocol.inner_folds {
            return bad("members", format!("{m} is not in 1..={}", self.protocol.inner_folds));
        }
        if self.run.models.is_empty() {
            return bad("models", "name at least one model".into());
        }
        if self.final_model()? == Some(Arch::Ridge) {
            return bad("final_model", "ridge is the evaluation's baseline, not a model `predict` can load; name a network".into());
        }
        Ok(())
    }
}
