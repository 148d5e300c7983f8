//! Configuration files (TOML), validated once at load: an unknown key or an impossible value is an
//! error that names the key. Command-line flags override what a file sets.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::budget::LimitsConfig;
use crate::alarms::sinks::SinkConfig;
use crate::alarms::{Rule, RuleConfig, When};
pub use crate::damage::AnalysisConfig;
use crate::dose::DoseConfig;
use crate::fourd::{DetectorKind, FourDConfig, ScanShape};
pub use crate::ingest::{IngestConfig, Mode, SocketKind};
use crate::record::recorder::RecordConfig;
pub use crate::view::ViewConfig;

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
    #[serde(default)]
    pub view: ViewConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Absent: [`crate::alarms::default_rules`]; an empty list: no damage alarms.
    #[serde(default)]
    pub alarms: Option<Vec<RuleConfig>>,
    /// `[fourd]`: 4D-STEM (one diffraction pattern per probe position); off unless enabled.
    #[serde(default)]
    pub fourd: FourDConfig,
    /// `--scan-shape ROWSxCOLS`: not a file key (the command line outranks `[fourd] scan_rows/cols`
    /// and is recorded as such).
    #[serde(skip)]
    pub scan_shape_cli: Option<ScanShape>,
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

impl Config {
    /// Checks every section; returns the validated alarm rules.
    pub fn validate(&self, path: &Path) -> Result<Vec<Rule>, ConfigError> {
        let invalid = |key: &'static str, value: String, why: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            why: why.into(),
        };
        if let Some((key, value, why)) = self.analysis.invalid() {
            return Err(invalid(key, value, &why));
        }
        if let Some((key, value, why)) = self.limits.invalid() {
            return Err(invalid(key, value, why));
        }
        if let Some((key, value, why)) = self.record.invalid() {
            return Err(invalid(key, value, why));
        }
        if let Some((key, v)) = self.dose.invalid() {
            return Err(invalid(key, v.to_string(), "must be a positive number"));
        }
        if let Err((key, why)) = self.view.check() {
            let value = match key {
                "view.bind" => format!("{:?}", self.view.bind),
                "view.max_clients" => self.view.max_clients.to_string(),
                "view.event_buffer" => self.view.event_buffer.to_string(),
                _ => "(hidden)".into(),
            };
            return Err(invalid(key, value, &why));
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
        if let Some((key, value, why)) = fourd_invalid(&self.fourd) {
            return Err(invalid(key, value, &why));
        }
        let mut configured = self.alarms.clone().unwrap_or_else(crate::alarms::default_rules);
        // 4D-STEM: the spot rules join whatever rules are listed, unless the list names one itself
        // or is explicitly empty (alarms off).
        let spot_rule = |r: &RuleConfig| matches!(r.when, When::SpotFading | When::SpotForecast);
        if self.fourd.enabled && !configured.iter().any(spot_rule) && self.alarms.as_ref().is_none_or(|a| !a.is_empty())
        {
            configured.extend(crate::alarms::default_fourd_rules());
        }
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

/// What is wrong with `[fourd]`, by key; `None` when nothing is.
fn fourd_invalid(f: &FourDConfig) -> Option<(&'static str, String, String)> {
    match (f.scan_rows, f.scan_cols) {
        (Some(0), _) | (_, Some(0)) => {
            return Some(("fourd.scan_rows", format!("{:?}×{:?}", f.scan_rows, f.scan_cols), "must be positive".into()));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Some((
                "fourd.scan_rows",
                format!("{:?}×{:?}", f.scan_rows, f.scan_cols),
                "give both scan_rows and scan_cols, or neither".into(),
            ));
        }
        _ => {}
    }
    if f.detectors.is_empty() {
        return Some(("fourd.detectors", "[]".into(), "at least one detector is needed".into()));
    }
    for (k, d) in f.detectors.iter().enumerate() {
        if d.name.trim().is_empty() || f.detectors[..k].iter().any(|e| e.name == d.name) {
            return Some(("fourd.detectors", format!("{:?}", d.name), "names must be non-empty and unique".into()));
        }
        let radii: Vec<Option<f64>> = match d.kind {
            DetectorKind::Disk { radius_px, radius_mrad } => vec![radius_px, radius_mrad],
            DetectorKind::Annulus { inner_px, outer_px, inner_mrad, outer_mrad } => {
                if let (Some(i), Some(o)) = (inner_px, outer_px)
                    && i >= o
                {
                    return Some(("fourd.detectors", format!("{:?}", d.name), "inner_px must be below outer_px".into()));
                }
                vec![outer_px, outer_mrad, inner_mrad, inner_px.filter(|v| *v != 0.0)]
            }
            _ => Vec::new(),
        };
        if radii.iter().flatten().any(|r| !(r.is_finite() && *r > 0.0)) {
            return Some(("fourd.detectors", format!("{:?}", d.name), "radii must be positive numbers".into()));
        }
        let mrad = match d.kind {
            DetectorKind::Disk { radius_mrad, .. } => radius_mrad.is_some(),
            DetectorKind::Annulus { inner_mrad, outer_mrad, .. } => inner_mrad.is_some() || outer_mrad.is_some(),
            _ => false,
        };
        if mrad && f.pixel_mrad.is_none() {
            return Some(("fourd.pixel_mrad", "none".into(), format!("detector {:?} has radii in mrad", d.name)));
        }
    }
    if !f.detectors.iter().any(|d| d.name == f.analyse) {
        return Some(("fourd.analyse", format!("{:?}", f.analyse), "names no configured detector".into()));
    }
    if f.centre_patterns == 0 {
        return Some(("fourd.centre_patterns", "0".into(), "must be at least 1".into()));
    }
    if let Some((x, y)) = f.centre_px
        && !(x.is_finite() && y.is_finite())
    {
        return Some(("fourd.centre_px", format!("{:?}", f.centre_px), "must be finite".into()));
    }
    if let Some(p) = f.pixel_mrad
        && !(p.is_finite() && p > 0.0)
    {
        return Some(("fourd.pixel_mrad", p.to_string(), "must be positive".into()));
    }
    if f.regions_rows == 0 || f.regions_cols == 0 {
        return Some((
            "fourd.regions_rows",
            format!("{}×{}", f.regions_rows, f.regions_cols),
            "regions_rows and regions_cols must be at least 1".into(),
        ));
    }
    let s = &f.spots;
    if !(s.min_snr.is_finite() && s.min_snr > 0.0) {
        return Some(("fourd.spots.min_snr", s.min_snr.to_string(), "must be positive".into()));
    }
    if let Some(r) = s.radius_px
        && !(r.is_finite() && r > 0.0)
    {
        return Some(("fourd.spots.radius_px", r.to_string(), "must be positive".into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::Metric;

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
        assert_eq!(c.analysis.settings(Metric::Ssim).threshold, crate::damage::PatchThreshold::default());
        let c = Config::parse(p, "[analysis]\nthreshold = 0.2\n").expect("valid");
        assert_eq!(
            c.analysis.settings(Metric::Ssim).threshold,
            crate::damage::PatchThreshold::Fixed { dissimilarity: 0.2 }
        );
        let e = Config::parse(p, "[analysis]\ncalibration_frames = 1\n").expect_err("one frame shows no noise");
        assert!(e.to_string().contains("analysis.calibration_frames"), "{e}");
    }

    #[test]
    fn the_fourd_section_is_validated_and_documented() {
        let p = Path::new("test.toml");
        // The commented [fourd] block of configs/default.toml, uncommented, is a valid section.
        let text = include_str!("../configs/default.toml");
        let at = text.find("# [fourd]").expect("a [fourd] section in configs/default.toml");
        let block: String = text[at..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mut c = Config::parse(p, &block).expect("the documented [fourd] section parses");
        assert_eq!(c.fourd.scan_rows, Some(256));
        assert_eq!(c.fourd.detectors.len(), 3);
        assert!(!c.fourd.enabled, "documented as off");
        c.fourd.enabled = true;
        let rules = c.validate(p).expect("valid");
        assert!(rules.iter().any(|r| r.name == "spot-fading"), "4D rules join the defaults when enabled");
        let e = Config::parse(p, "[fourd]\nenabled = true\nanalyse = \"haadf\"\n").expect_err("unknown detector");
        assert!(e.to_string().contains("fourd.analyse"), "{e}");
        let e = Config::parse(p, "[fourd]\nscan_rows = 16\n").expect_err("rows without cols");
        assert!(e.to_string().contains("fourd.scan_rows"), "{e}");
        let e = Config::parse(p, "[fourd]\n[[fourd.detectors]]\nname = \"adf\"\nkind = \"annulus\"\ninner_px = 9.0\nouter_px = 4.0\n")
            .expect_err("inner above outer");
        assert!(e.to_string().contains("fourd.detectors"), "{e}");
        let e = Config::parse(p, "[fourd]\n[[fourd.detectors]]\nname = \"bf\"\nkind = \"disk\"\nradius = 4.0\n")
            .expect_err("a misspelt key");
        assert!(e.to_string().contains("radius"), "{e}");
        let off = Config::parse(p, "").expect("defaults");
        assert!(!off.fourd.enabled);
        assert!(!off.validate(p).expect("valid").iter().any(|r| r.name.starts_with("spot-")));
    }
}
