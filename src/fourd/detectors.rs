//! Virtual detectors: each pattern reduced to one number per detector.

use serde::{Deserialize, Serialize};

use super::FourDError;

/// What a virtual detector measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DetectorKind {
    /// Disk around the centre; radius in detector pixels or (with `pixel_mrad`) mrad.
    Disk { radius_px: Option<f64>, radius_mrad: Option<f64> },
    /// Annulus inner ≤ r < outer around the centre.
    Annulus { inner_px: Option<f64>, outer_px: Option<f64>, inner_mrad: Option<f64>, outer_mrad: Option<f64> },
    /// Every valid pixel.
    Sum,
    /// Centre of mass, x (columns) or y (rows), in detector pixels relative to the centre.
    ComX,
    ComY,
}

/// A configured detector: a name (`bf`, `adf`, …) and what it measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: DetectorKind,
}

/// bf (disk), adf (annulus), sum, com_x, com_y with radii relative to the detector size (resolved
/// against the found bright-field disk when radii are not given: see [`VirtualDetectors::new`]).
pub fn default_detectors() -> Vec<DetectorSpec> {
    let d = |name: &str, kind| DetectorSpec { name: name.into(), kind };
    vec![
        d("bf", DetectorKind::Disk { radius_px: None, radius_mrad: None }),
        d("adf", DetectorKind::Annulus { inner_px: None, outer_px: None, inner_mrad: None, outer_mrad: None }),
        d("sum", DetectorKind::Sum),
        d("com_x", DetectorKind::ComX),
        d("com_y", DetectorKind::ComY),
    ]
}

/// The detectors resolved for one pattern size and centre: pixel index lists, ready to apply.
#[derive(Clone, Debug)]
pub struct VirtualDetectors {
    pub names: Vec<String>,
    pub centre_px: (f64, f64),
    /// The bright-field disk radius used for defaults (found or configured), px.
    pub bf_radius_px: f64,
    pub width: usize,
    pub height: usize,
}

impl VirtualDetectors {
    /// Resolves `specs` for `width × height` patterns around `centre_px`. Radii left unset follow
    /// the bright-field disk radius `bf_radius_px`: bf = 1.0×, adf = 1.5× … 4× (clipped to the
    /// detector). mrad radii need `pixel_mrad`.
    pub fn new(
        specs: &[DetectorSpec],
        width: usize,
        height: usize,
        centre_px: (f64, f64),
        bf_radius_px: f64,
        pixel_mrad: Option<f64>,
    ) -> Result<Self, FourDError> {
        todo!("fourd-core {specs:?} {width} {height} {centre_px:?} {bf_radius_px} {pixel_mrad:?}")
    }

    /// One value per detector into `out` (len = names.len()). Pixels marked in `invalid` are left
    /// out. Mask detectors sum in f64, so integer data gives exact integer sums.
    pub fn apply(&self, pixels: &[f32], invalid: Option<&[bool]>, out: &mut [f64]) {
        todo!("fourd-core {} {} {}", pixels.len(), invalid.is_some(), out.len())
    }
}

/// The direct-beam centre (x, y) and bright-field disk radius of a mean pattern.
pub fn find_centre(mean: &[f64], width: usize, height: usize) -> ((f64, f64), f64) {
    todo!("fourd-core {} {width} {height}", mean.len())
}
