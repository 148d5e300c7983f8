//! Configuration files (TOML), validated once at load: an unknown key or an impossible value is an
//! error that names the key. Command-line flags override what a file sets.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alarms::sinks::SinkConfig;
use crate::alarms::{Rule, RuleConfig};
use crate::damage::{AnalysisSettings, Metric};
use crate::decode::WireFormat;
use crate::dose::DoseConfig;
use crate::engine::plan::{PATCH_MAX, PATCH_MIN};
use crate::frame::ScaleMode;
use crate::record::recorder::RecordConfig;
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
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub dose: DoseConfig,
    #[serde(default)]
    pub sinks: SinkConfig,
    #[serde(default)]
    pub record: RecordConfig,
    /// Absent: [`crate::alarms::default_rules`]; an empty list: no damage alarms.
    #[serde(default)]
    pub alarms: Option<Vec<RuleConfig>>,
}

/// Connect to a peer that binds (DECTRIS detectors bind PUSH), or bind and let peers connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Connect,
    Bind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    #[default]
    Pull,
    Sub,
}

/// `[ingest]`: where frames come from.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub endpoint: String,
    pub mode: Mode,
    pub socket: SocketKind,
    pub format: WireFormat,
    /// Stream-v2 channel to analyse (default: the first one the start message announces).
    pub channel: Option<String>,
    /// SUB topic prefix.
    pub subscribe: String,
    /// Largest frame part and whole multipart message a peer may send (MiB).
    pub max_frame_mib: f64,
    pub max_message_mib: f64,
    /// Check every incoming ZMTP frame before it reaches the socket (strongly recommended).
    pub guard: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            endpoint: "tcp://127.0.0.1:9999".into(),
            mode: Mode::Connect,
            socket: SocketKind::Pull,
            format: WireFormat::Auto,
            channel: None,
            subscribe: String::new(),
            max_frame_mib: 512.0,
            max_message_mib: 1024.0,
            guard: true,
        }
    }
}

/// `[pipeline]`: how received frames reach the analysis.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Frames that may wait for analysis. When the analysis falls behind it jumps to the newest
    /// waiting frame (every frame passed over is counted); when this many are already waiting, a new
    /// frame is passed over at once.
    pub queue_frames: usize,
    /// true: analyse only the newest waiting frame; false: analyse every waiting frame in turn.
    pub skip_to_newest: bool,
    /// Re-publish every received message unchanged on this PUB endpoint (empty: off).
    pub republish: Option<String>,
    /// Per subscriber of the re-publish socket; beyond it whole messages are dropped and counted.
    pub republish_buffer_mib: f64,
    /// Output directory: alarm log, series summaries, daemon report.
    pub out_dir: PathBuf,
    /// A status line every this many seconds (0: off).
    pub status_interval_s: f64,
    /// Stop after this many series have ended (0: run until stopped).
    pub max_series: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_frames: 4,
            skip_to_newest: true,
            republish: None,
            republish_buffer_mib: 256.0,
            out_dir: PathBuf::from("beamwatch-out"),
            status_interval_s: 10.0,
            max_series: 0,
        }
    }
}

/// `[analysis]`: how frames are compared.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// `None`: resnet18 when weights are found, else psnr with a warning.
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
    /// Hardware for the feature engine: auto (GPU when usable, else CPU), cpu or cuda.
    pub backend: crate::engine::BackendChoice,
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
            min_region_patches: 2,
            scale: ScaleMode::Reference,
            registration: Registration::Subpixel,
            mask_gaps: true,
            max_invalid_fraction: 0.25,
            threads: 0,
            backend: crate::engine::BackendChoice::Auto,
            prefilter_sigma_px: crate::damage::DEFAULT_PREFILTER_SIGMA_PX,
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
        if !(0.0..=10.0).contains(&self.prefilter_sigma_px) {
            return Err(invalid(
                "analysis.prefilter_sigma_px",
                self.prefilter_sigma_px.to_string(),
                "must be within 0..=10 px (0 = off)",
            ));
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
            prefilter_sigma_px: self.prefilter_sigma_px,
        }
    }
}

impl Config {
    /// Checks every section; returns the validated alarm rules.
    pub fn validate(&self, path: &Path) -> Result<Vec<Rule>, ConfigError> {
        let invalid = |key: &'static str, value: String, why: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            why: why.into(),
        };
        self.analysis.validate(path)?;
        if let Some((key, value, why)) = self.record.invalid() {
            return Err(invalid(key, value, why));
        }
        if let Some((key, v)) = self.dose.invalid() {
            return Err(invalid(key, v.to_string(), "must be a positive number"));
        }
        let i = &self.ingest;
        crate::ingest::guard::tcp_addr(&i.endpoint)
            .map_err(|why| invalid("ingest.endpoint", format!("{:?}", i.endpoint), &why))?;
        for (key, v) in [("ingest.max_frame_mib", i.max_frame_mib), ("ingest.max_message_mib", i.max_message_mib)] {
            if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                return Err(invalid(key, v.to_string(), "must be a positive number of MiB"));
            }
        }
        let p = &self.pipeline;
        if p.queue_frames == 0 {
            return Err(invalid("pipeline.queue_frames", "0".into(), "must be at least 1"));
        }
        if let Some(r) = p.republish.as_deref().filter(|r| !r.is_empty()) {
            crate::ingest::guard::tcp_addr(r).map_err(|why| invalid("pipeline.republish", format!("{r:?}"), &why))?;
        }
        if !(p.republish_buffer_mib.is_finite() && p.republish_buffer_mib > 0.0) {
            return Err(invalid(
                "pipeline.republish_buffer_mib",
                p.republish_buffer_mib.to_string(),
                "must be positive",
            ));
        }
        if !(p.status_interval_s.is_finite() && p.status_interval_s >= 0.0) {
            return Err(invalid("pipeline.status_interval_s", p.status_interval_s.to_string(), "must be ≥ 0"));
        }
        if !(self.sinks.command_timeout_s.is_finite() && self.sinks.command_timeout_s > 0.0) {
            return Err(invalid(
                "sinks.command_timeout_s",
                self.sinks.command_timeout_s.to_string(),
                "must be positive",
            ));
        }
        if let Some(ep) = self.sinks.pub_endpoint.as_deref().filter(|e| !e.is_empty()) {
            crate::ingest::guard::tcp_addr(ep).map_err(|why| invalid("sinks.pub_endpoint", format!("{ep:?}"), &why))?;
        }
        if self.sinks.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid("sinks.command", "[]".into(), "give the program and its arguments, or omit the key"));
        }
        let configured = self.alarms.clone().unwrap_or_else(crate::alarms::default_rules);
        let mut rules = Vec::with_capacity(configured.len());
        for (k, a) in configured.iter().enumerate() {
            let rule = a.validate().map_err(|why| ConfigError::Invalid {
                path: path.to_owned(),
                key: "alarms",
                value: format!("[{k}] ({})", a.name),
                why,
            })?;
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: "alarms",
                    value: format!("[{k}] ({})", a.name),
                    why: "duplicate name".into(),
                });
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.validate(path)?;
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
        let e = Config::parse(p, "[dose]\nbeam_current_pa = -3.0\n").expect_err("negative current");
        assert!(e.to_string().contains("dose.beam_current_pa"), "{e}");
        let e = Config::parse(p, "[ingest]\nendpoint = \"udp://x\"\n").expect_err("endpoint");
        assert!(e.to_string().contains("ingest.endpoint"), "{e}");
        let e = Config::parse(p, "[[alarms]]\nname = \"a\"\nlevel = \"warning\"\nwhen = \"mean_dissimilarity\"\n")
            .expect_err("no above");
        assert!(e.to_string().contains("above"), "{e}");
        let c = Config::parse(p, "[analysis]\nmetric = \"ssim\"\nregistration = \"subpixel\"\n").expect("valid");
        assert_eq!(c.analysis.metric, Some(Metric::Ssim));
        assert_eq!(c.analysis.settings(Metric::Ssim).threshold, Metric::Ssim.default_threshold());
    }
}
