//! Bragg spots: found in the reference scan's mean pattern, integrated per scan.

use serde::{Deserialize, Serialize};

/// `[fourd.spots]`: how spots are found and integrated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpotOptions {
    /// At most this many spots (strongest first).
    pub max_spots: usize,
    /// Integration disk radius, px (`None`: from the spot's own width).
    pub radius_px: Option<f64>,
    /// A spot must stand this many noise σ above its local background.
    pub min_snr: f64,
}

impl Default for SpotOptions {
    fn default() -> Self {
        Self { max_spots: 24, radius_px: None, min_snr: 5.0 }
    }
}

/// One Bragg spot: position, integration disk and background annulus (px).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spot {
    pub x_px: f64,
    pub y_px: f64,
    pub radius_px: f64,
    pub background_inner_px: f64,
    pub background_outer_px: f64,
}

/// Spots in `mean` (the direct beam at `centre_px` with radius `bf_radius_px` excluded).
pub fn find_spots(
    mean: &[f64],
    width: usize,
    height: usize,
    centre_px: (f64, f64),
    bf_radius_px: f64,
    opts: &SpotOptions,
) -> Vec<Spot> {
    todo!("fourd-core {} {width} {height} {centre_px:?} {bf_radius_px} {opts:?}", mean.len())
}

/// Background-subtracted integrated intensity of each spot in `summed` (a sum of patterns; the
/// operation is linear, so the sum of per-pattern intensities equals the intensity of the sum).
pub fn integrate_spots(summed: &[f64], width: usize, spots: &[Spot]) -> Vec<f64> {
    todo!("fourd-core {} {width} {}", summed.len(), spots.len())
}
