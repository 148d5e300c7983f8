//! Configuration files (TOML), validated once at load: an unknown key or an impossible value is an
//! error that names the key. Command-line flags override what a file sets.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::damage::{AnalysisSettings, Metric};
use crate::engine::plan::{PATCH_MAX, PATCH_MIN};
use crate::frame::ScaleMode;
use crate::register::Registration;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: `{key}` = {value}: {why}", path.display())]
    Invalid { path: PathBuf, key: &'static str, value: String, why: String },
}

/// A whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub analysis: AnalysisConfig,
}

/// `[analysis]`: how frames are compared.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// `None`: resnet18 when weights are found, else ssim with a warning.
    pub metric: Option<Metric>,
    /// `None`: search ($BEAMWATCH_WEIGHTS, data directory, torchvision cache).
    pub weights: Option<PathBuf>,
    pub patch_px: usize,
    /// `None`: the metric's default.
    pub threshold: Option<f32>,
    pub min_region_patches: usize,
    pub scale: ScaleMode,
    pub registration: Registration,
    pub mask_gaps: bool,
    pub max_invalid_fraction: f32,
    /// CPU threads for the feature engine; 0 = all cores.
    pub threads: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            metric: None,
            weights: None,
            patch_px: 20,
            threshold: None,
            min_region_patches: 2,
            scale: ScaleMode::Reference,
            registration: Registration::Off,
            mask_gaps: true,
            max_invalid_fraction: 0.25,
            threads: 0,
        }
    }
}

impl AnalysisConfig {
    /// Checks every value; `path` names the file in the error (or "command line").
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key, value: String, why: &str| ConfigError::Invalid { path: path.to_owned(), key, value, why: why.into() };
        if !(PATCH_MIN..=PATCH_MAX).contains(&self.patch_px) {
            return Err(invalid(
                "analysis.patch_px",
                self.patch_px.to_string(),
                &format!("must be {PATCH_MIN}..={PATCH_MAX} px"),
            ));
        }
        if let Some(t) = self.threshold
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(invalid("analysis.threshold", t.to_string(), "must be a finite number ≥ 0"));
        }
        if self.min_region_patches == 0 {
            return Err(invalid("analysis.min_region_patches", "0".into(), "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_invalid_fraction) {
            return Err(invalid(
                "analysis.max_invalid_fraction",
                self.max_invalid_fraction.to_string(),
                "must be within 0..=1",
            ));
        }
        if self.weights.as_ref().is_some_and(|w| w.as_os_str().is_empty()) {
            return Err(invalid("analysis.weights", "\"\"".into(), "empty path (omit the key to search)"));
        }
        Ok(())
    }

    /// Analysis settings for `metric` (the threshold defaults to the metric's own).
    pub fn settings(&self, metric: Metric) -> AnalysisSettings {
        AnalysisSettings {
            metric,
            patch_px: self.patch_px,
            threshold: self.threshold.unwrap_or(metric.default_threshold()),
            min_region_patches: self.min_region_patches,
            scale: self.scale,
            registration: self.registration,
            max_invalid_fraction: self.max_invalid_fraction,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.analysis.validate(path)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let p = Path::new("test.toml");
        let e = Config::parse(p, "[analysis]\npatch = 20\n").expect_err("unknown key");
        assert!(e.to_string().contains("patch"), "{e}");
        let e = Config::parse(p, "[analysis]\npatch_px = 0\n").expect_err("zero patch");
        assert!(e.to_string().contains("analysis.patch_px"), "{e}");
        let e = Config::parse(p, "[analysis]\nmetric = \"cosine\"\n").expect_err("bad metric");
        assert!(e.to_string().contains("cosine"), "{e}");
        let c = Config::parse(p, "[analysis]\nmetric = \"ssim\"\nregistration = \"subpixel\"\n").expect("valid");
        assert_eq!(c.analysis.metric, Some(Metric::Ssim));
        assert_eq!(c.analysis.settings(Metric::Ssim).threshold, Metric::Ssim.default_threshold());
    }
}
