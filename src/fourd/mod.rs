//! 4D-STEM: one diffraction pattern per probe position → virtual STEM images per scan, and the
//! fading of the Bragg spots against cumulative dose.
//!
//! A pixelated detector in STEM (DECTRIS ARINA, QUADRO, …) sends one pattern per probe position and
//! no scan shape. This module turns that stream back into scans:
//! - [`geometry`]: the navigation shape (rows × columns) and where it came from; frame index →
//!   (scan, row, column). `k × positions` images are k consecutive scans of the same area.
//! - [`kernels`]: the integer one-pass reduction of u16 patterns (moments, masked sums, region
//!   sums), exact, with AVX2 / AVX-512 copies chosen at run time.
//! - [`detectors`]: virtual detectors (bright-field disk, annulus, total sum, centre of mass) and
//!   the pattern centre found from the first patterns' mean.
//! - [`spots`]: Bragg spots found in the reference scan's mean pattern; background-subtracted
//!   integrated intensity per spot from a summed pattern.
//! - [`fading`]: I(D) = I₀·exp(−D/Dc) + c fitted to a spot's history → Dc ± σ.
//! - [`assemble`]: patterns in arrival order → completed scans (virtual images with their mask of
//!   missing / duplicate positions, summed patterns per region, spot intensities).
//! - [`bands`]: a scan's rows split into bands, one assembler each (one thread each), and the
//!   bands' parts merged back into the scan's result.
//!
//! Nothing here holds the 4-D cube: a bounded buffer of the first patterns (to find the centre),
//! one summed pattern per region and the virtual images of the scan being filled.

pub mod assemble;
pub mod bands;
pub mod kernels;
pub mod detectors;
pub mod fading;
pub mod geometry;
pub mod spots;

pub use assemble::{ScanAssembler, ScanEvent, ScanResult};
pub use bands::{BandAssembler, band_rows, plan_bands};
pub use detectors::{DetectorKind, DetectorSpec, VirtualDetectors};
pub use fading::{FadingFit, fit_fading};
pub use geometry::{ScanPos, ScanShape, ShapeSource};
pub use spots::{Spot, SpotOptions, find_spots, integrate_spots};

use serde::{Deserialize, Serialize};

/// `[fourd]`: how patterns become scans. Absent or `enabled = false`: every message is an image,
/// as before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FourDConfig {
    pub enabled: bool,
    /// Navigation shape; `None`: from the stream, or the square root of the image count.
    pub scan_rows: Option<usize>,
    pub scan_cols: Option<usize>,
    /// The virtual detectors computed for every pattern (names must be unique).
    pub detectors: Vec<DetectorSpec>,
    /// Which virtual image goes through the patch analysis (a detector name).
    pub analyse: String,
    /// Pattern centre in detector pixels (x, y); `None`: found from the first patterns' mean.
    pub centre_px: Option<(f64, f64)>,
    /// How many of the first patterns are held to find the centre (bounded buffer).
    pub centre_patterns: usize,
    /// Detector pixel size in mrad (scattering angle per pixel); needed for radii in mrad.
    pub pixel_mrad: Option<f64>,
    pub spots: SpotOptions,
    /// The scan is split into regions_rows × regions_cols regions, each with its own spot fading fit.
    pub regions_rows: usize,
    pub regions_cols: usize,
    /// Threads that decode and reduce patterns in the live daemon (each owns bands of scan rows);
    /// `None`: the available cores less one (at least one).
    pub decode_threads: Option<usize>,
}

impl Default for FourDConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            scan_rows: None,
            scan_cols: None,
            detectors: detectors::default_detectors(),
            analyse: "adf".into(),
            centre_px: None,
            centre_patterns: 128,
            pixel_mrad: None,
            spots: SpotOptions::default(),
            regions_rows: 2,
            regions_cols: 2,
            decode_threads: None,
        }
    }
}

/// What is wrong with a 4D series, by fault.
#[derive(Debug, thiserror::Error, PartialEq)]
#[must_use]
pub enum FourDError {
    #[error("no scan shape: set [fourd] scan_rows and scan_cols (or --scan-shape ROWSxCOLS); {why}")]
    NoShape { why: String },
    #[error("scan shape {rows}×{cols} ({positions} positions) does not divide the {images} images announced")]
    ShapeDoesNotDivide { rows: usize, cols: usize, positions: u64, images: u64 },
    #[error("pattern of {got_w}×{got_h} px where the series has {want_w}×{want_h} px")]
    PatternSize { got_w: usize, got_h: usize, want_w: usize, want_h: usize },
    #[error("detector `{name}`: {why}")]
    Detector { name: String, why: String },
    #[error("`analyse` = {0:?} names no configured detector")]
    UnknownAnalyse(String),
}
