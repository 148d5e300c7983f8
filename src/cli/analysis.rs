//! The analysis flags every analysing command shares, and the one path by which flags override a
//! configuration file: load the file (or the defaults), apply the flags, and let the command
//! validate the result.

use std::path::PathBuf;

use clap::Args;

use crate::Error;
use crate::config::Config;
use crate::damage::{AnalysisConfig, Metric};
use crate::engine::BackendChoice;
use crate::frame::ScaleMode;
use crate::register::Registration;

/// Analysis options shared by commands (override the config file).
#[derive(Args)]
pub struct AnalysisArgs {
    /// TOML configuration file (see configs/); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// ResNet-18 weights (safetensors or torchvision .pth).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// resnet18 (the seed paper's layer4 cosine), lpips (layer1..4), ssim, psnr or ncc.
    /// Default: resnet18, or psnr with a warning when no weights are found.
    #[arg(long, value_enum, ignore_case = true)]
    pub metric: Option<Metric>,
    /// Patch edge in pixels.
    #[arg(long)]
    pub patch: Option<usize>,
    /// A fixed per-patch dissimilarity above which a patch counts as damaged, instead of the
    /// threshold calibrated from each series' own noise (an override: it does not adapt).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Compared frames after the reference that calibrate the noise floor (default 2; they must be
    /// undamaged, and no damage alarm fires in them).
    #[arg(long)]
    pub calibration_frames: Option<usize>,
    /// Calibrated false-alarm rate: one falsely significant patch per this many frames (default 10).
    #[arg(long, value_name = "FRAMES")]
    pub false_patch_every: Option<f64>,
    /// Drift correction before comparing: off, integer or subpixel (the default; bare flag: subpixel).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "subpixel")]
    pub register: Option<Registration>,
    /// Intensity scaling: reference (min–max of the reference frame), dtype, none.
    #[arg(long, value_enum)]
    pub scale: Option<ScaleMode>,
    /// Treat pixels at the dtype maximum as ordinary signal instead of detector gaps.
    #[arg(long)]
    pub no_gap_mask: bool,
    /// CPU threads (0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Feature engine hardware: auto (GPU when usable, else CPU), cpu, or cuda (GPU or error).
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Gaussian pre-filter σ in pixels on both frames before patching (0 = off; default 2).
    #[arg(long)]
    pub prefilter_sigma: Option<f32>,
}

impl AnalysisArgs {
    /// The configuration file (or the defaults) with these flags applied to its [analysis].
    pub fn config(&self) -> Result<Config, Error> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        self.apply(&mut cfg.analysis);
        Ok(cfg)
    }

    fn apply(&self, cfg: &mut AnalysisConfig) {
        if self.weights.is_some() {
            cfg.weights = self.weights.clone();
        }
        if self.metric.is_some() {
            cfg.metric = self.metric;
        }
        if let Some(p) = self.patch {
            cfg.patch_px = p;
        }
        if self.threshold.is_some() {
            cfg.threshold = self.threshold;
        }
        if let Some(c) = self.calibration_frames {
            cfg.calibration_frames = c;
        }
        if let Some(f) = self.false_patch_every {
            cfg.false_patch_every_frames = f;
        }
        if let Some(r) = self.register {
            cfg.registration = r;
        }
        if let Some(s) = self.scale {
            cfg.scale = s;
        }
        if self.no_gap_mask {
            cfg.mask_gaps = false;
        }
        if let Some(t) = self.threads {
            cfg.threads = t;
        }
        if let Some(b) = self.backend {
            cfg.backend = b;
        }
        if let Some(s) = self.prefilter_sigma {
            cfg.prefilter_sigma_px = s;
        }
    }
}

/// The dose inputs a file may not hold, given on the command line (override `[dose]`).
#[derive(Args, Clone, Debug, Default)]
pub struct DoseFlags {
    /// Beam current (pA), when the file does not say.
    #[arg(long)]
    pub beam_current_pa: Option<f64>,
    /// Dwell time per pixel (µs), when the file does not say.
    #[arg(long)]
    pub dwell_time_us: Option<f64>,
    /// Scan pixel size (Å), when the file does not say.
    #[arg(long)]
    pub pixel_size_a: Option<f64>,
}

impl DoseFlags {
    pub fn apply(&self, cfg: &mut crate::dose::DoseConfig) {
        for (dst, src) in [
            (&mut cfg.beam_current_pa, self.beam_current_pa),
            (&mut cfg.dwell_time_us, self.dwell_time_us),
            (&mut cfg.pixel_size_a, self.pixel_size_a),
        ] {
            if src.is_some() {
                *dst = src;
            }
        }
    }
}

/// 4D-STEM input: diffraction patterns, one per probe position (override `[fourd]`).
#[derive(Args, Clone, Debug, Default)]
pub struct FourDFlags {
    /// Treat every frame as a diffraction pattern of a 4D-STEM scan (turns `[fourd]` on): the
    /// virtual images of each scan are analysed, and the Bragg spots' fading against dose.
    #[arg(long)]
    pub fourd: bool,
    /// The scan shape, e.g. 256x256 (implies --fourd; outranks `[fourd] scan_rows/cols`, the
    /// stream's and the file's own).
    #[arg(long, value_name = "ROWSxCOLS", value_parser = parse_scan_shape)]
    pub scan_shape: Option<crate::fourd::ScanShape>,
}

impl FourDFlags {
    pub fn apply(&self, cfg: &mut Config) {
        if self.fourd || self.scan_shape.is_some() {
            cfg.fourd.enabled = true;
        }
        if self.scan_shape.is_some() {
            cfg.scan_shape_cli = self.scan_shape;
        }
    }
}

/// `ROWSxCOLS` (or `ROWS×COLS`, `ROWS,COLS`), both positive.
pub fn parse_scan_shape(s: &str) -> Result<crate::fourd::ScanShape, String> {
    let bad = || format!("{s:?}: give the scan shape as ROWSxCOLS, e.g. 256x256");
    let (r, c) = s.split_once(['x', 'X', '×', ',']).ok_or_else(bad)?;
    let rows: usize = r.trim().parse().map_err(|_| bad())?;
    let cols: usize = c.trim().parse().map_err(|_| bad())?;
    if rows == 0 || cols == 0 {
        return Err(format!("{s:?}: the scan shape must be positive"));
    }
    Ok(crate::fourd::ScanShape { rows, cols })
}
