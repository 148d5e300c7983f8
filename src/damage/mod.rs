//! Per-patch similarity to the reference frame, the dissimilarity map, and its summary.
//!
//! Every metric yields, per patch, a *similarity* in its native unit and a *dissimilarity* that is
//! 0 for an unchanged patch and grows with damage, so thresholds and summaries work the same way:
//!
//! | metric   | similarity                                   | dissimilarity              |
//! |----------|----------------------------------------------|----------------------------|
//! | resnet18 | cosine of layer4 GAP features (512-d, seed)   | 1 − cos                    |
//! | lpips    | mean over layer1..4 of the GAP-feature cosine | 1 − mean cos               |
//! | ssim     | SSIM (7×7 windows, scikit-image defaults)      | 1 − SSIM                   |
//! | ncc      | normalised cross-correlation                  | 1 − NCC                    |
//! | psnr     | PSNR in dB (data range 1)                      | RMSE of the scaled values  |
//!
//! The lpips row is LPIPS without its learned per-channel weights, on global-average-pooled taps:
//! Σ_l ‖f̂_l(a) − f̂_l(b)‖² = 2 Σ_l (1 − cos_l) = 8 × its dissimilarity.

pub mod analyzer;
pub mod blocks;
pub mod calibrate;
pub mod classical;
pub mod regions;
pub mod setup;

use serde::{Deserialize, Serialize};

use crate::patches::{PatchGrid, PatchStatus};

pub use analyzer::{AnalysisError, AnalysisSettings, Analyzer, DEFAULT_PREFILTER_SIGMA_PX, FrameAnalysis};
pub use calibrate::{NoiseFloor, PatchThreshold};
pub use setup::{AnalysisConfig, MetricSetup, SetupError};

/// How two patches are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Resnet18,
    Lpips,
    Ssim,
    Psnr,
    Ncc,
}

impl Metric {
    pub const ALL: [Metric; 5] = [Self::Resnet18, Self::Lpips, Self::Ssim, Self::Psnr, Self::Ncc];

    pub fn name(self) -> &'static str {
        match self {
            Self::Resnet18 => "resnet18",
            Self::Lpips => "lpips",
            Self::Ssim => "ssim",
            Self::Psnr => "psnr",
            Self::Ncc => "ncc",
        }
    }

    /// Needs ResNet-18 features (and therefore weights).
    pub fn uses_features(self) -> bool {
        matches!(self, Self::Resnet18 | Self::Lpips)
    }

    /// The ResNet-18 layers the metric reads (layer1..layer4); the GPU copies back only these.
    pub fn feature_layers(self) -> crate::engine::Layers {
        match self {
            Self::Resnet18 => [false, false, false, true],
            Self::Lpips => [true; 4],
            Self::Ssim | Self::Psnr | Self::Ncc => [false; 4],
        }
    }

    pub fn similarity_label(self) -> &'static str {
        match self {
            Self::Resnet18 => "cosine similarity of ResNet-18 layer4 features",
            Self::Lpips => "mean cosine similarity of ResNet-18 layer1..4 features",
            Self::Ssim => "SSIM",
            Self::Psnr => "PSNR (dB)",
            Self::Ncc => "normalised cross-correlation",
        }
    }

    pub fn dissimilarity_label(self) -> &'static str {
        match self {
            Self::Resnet18 => "1 − cos (layer4)",
            Self::Lpips => "1 − mean cos (layer1..4)",
            Self::Ssim => "1 − SSIM",
            Self::Psnr => "RMSE (scaled intensity)",
            Self::Ncc => "1 − NCC",
        }
    }

    /// A typical per-patch threshold, for scales and for `bench` where no series calibrates one:
    /// above the noise floor of a drifting, registered, undamaged simulated series at 50 and 200
    /// e⁻ per pixel. Alarms do not use it unless `threshold` is set: the threshold is calibrated
    /// from each series' own noise ([`calibrate`]).
    pub fn typical_threshold(self) -> f32 {
        match self {
            Self::Resnet18 | Self::Lpips => 0.15,
            Self::Ssim => 0.3,
            Self::Psnr => 0.1,
            Self::Ncc => 0.2,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One frame's per-patch result, row-major over the grid. Excluded patches hold NaN.
#[derive(Clone, Debug, PartialEq)]
pub struct SimilarityMap {
    pub grid: PatchGrid,
    pub similarity: Vec<f32>,
    pub dissimilarity: Vec<f32>,
    pub status: Vec<PatchStatus>,
}

/// Summary statistics of one frame's dissimilarity map. `None` where no patch was analysed, and
/// for the threshold-based fields while the series' threshold is still being calibrated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub analysed_patches: usize,
    pub excluded_patches: usize,
    /// The per-patch threshold as one number: the fixed one, or the median of the calibrated ones.
    pub threshold: Option<f32>,
    /// The frame is one of the series' calibration frames: it sets the noise floor, nobody judges it.
    pub calibrating: bool,
    pub mean_dissimilarity: Option<f64>,
    pub max_dissimilarity: Option<f64>,
    /// (row, col) of the most dissimilar patch.
    pub max_at: Option<(usize, usize)>,
    /// Share of analysed patches above their threshold (significant patches).
    pub fraction_above_threshold: Option<f64>,
    /// Share of analysed patches in connected (4-neighbour) regions of significant patches of at
    /// least `min_region_patches` patches: damage that covers an area, not isolated noisy patches.
    pub damaged_area_fraction: Option<f64>,
    pub min_region_patches: usize,
    /// Size of the largest connected region of significant patches, in patches.
    pub largest_region_patches: Option<usize>,
    /// The strongest block of patches per block edge, by summed z-score (empty while calibrating
    /// and with a fixed threshold, which has no noise scale).
    pub blocks: Vec<blocks::Block>,
}

impl Summary {
    /// `thresholds`: per patch (NaN: not judged), or `None` while the threshold is calibrated;
    /// `typical`: the threshold as one number, for people; `z`: per-patch z-scores against the
    /// calibrated noise floor with the correlation of neighbouring patches' noise, when there is one.
    pub fn of(
        map: &SimilarityMap,
        thresholds: Option<&[f32]>,
        typical: Option<f32>,
        z: Option<(&[f32], [f64; 2])>,
        min_region_patches: usize,
    ) -> Self {
        let analysed: Vec<usize> = (0..map.status.len()).filter(|&i| map.status[i].analysed()).collect();
        let n = analysed.len();
        let max = analysed.iter().copied().max_by(|&a, &b| map.dissimilarity[a].total_cmp(&map.dissimilarity[b]));
        let min_region = min_region_patches.max(1);
        let frac = |k: usize| (n > 0).then(|| k as f64 / n as f64);
        let judged = thresholds.map(|t| {
            let damaged: Vec<bool> = (0..map.status.len())
                .map(|i| map.status[i].analysed() && t.get(i).is_some_and(|&t| map.dissimilarity[i] > t))
                .collect();
            let sizes = regions::component_sizes(&damaged, map.grid.rows, map.grid.cols);
            let above = damaged.iter().filter(|&&d| d).count();
            let in_regions: usize = sizes.iter().filter(|&&s| s >= min_region).sum();
            (above, in_regions, sizes.first().copied().unwrap_or(0))
        });
        Self {
            analysed_patches: n,
            excluded_patches: map.status.len() - n,
            threshold: typical,
            calibrating: thresholds.is_none(),
            mean_dissimilarity: (n > 0)
                .then(|| analysed.iter().map(|&i| map.dissimilarity[i] as f64).sum::<f64>() / n as f64),
            max_dissimilarity: max.map(|i| map.dissimilarity[i] as f64),
            max_at: max.map(|i| (i / map.grid.cols, i % map.grid.cols)),
            fraction_above_threshold: judged.and_then(|j| frac(j.0)),
            damaged_area_fraction: judged.and_then(|j| frac(j.1)),
            min_region_patches: min_region,
            largest_region_patches: judged.filter(|_| n > 0).map(|j| j.2),
            blocks: z.map(|(z, c)| blocks::strongest(z, map.grid.rows, map.grid.cols, c)).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_separates_areas_from_isolated_patches() {
        let grid = PatchGrid::new(40, 30, 10).expect("grid"); // 3 rows × 4 cols
        #[rustfmt::skip]
        let d = vec![
            0.9, 0.8, 0.0, 0.0,
            0.0, 0.7, 0.0, 0.6,
            0.0, 0.0, 0.0, f32::NAN,
        ];
        let mut status = vec![PatchStatus::Ok; 12];
        status[11] = PatchStatus::Masked;
        let map = SimilarityMap { grid, similarity: d.iter().map(|v| 1.0 - v).collect(), dissimilarity: d, status };
        let s = Summary::of(&map, Some(&[0.5; 12]), Some(0.5), None, 2);
        assert_eq!((s.analysed_patches, s.excluded_patches), (11, 1));
        assert_eq!(s.max_at, Some((0, 0)));
        assert!((s.fraction_above_threshold.expect("some") - 4.0 / 11.0).abs() < 1e-12);
        assert!((s.damaged_area_fraction.expect("some") - 3.0 / 11.0).abs() < 1e-12);
        assert_eq!(s.largest_region_patches, Some(3));
        let calibrating = Summary::of(&map, None, None, None, 2);
        assert!(calibrating.calibrating && calibrating.damaged_area_fraction.is_none());
        assert_eq!(calibrating.mean_dissimilarity, s.mean_dissimilarity);
        assert!((s.mean_dissimilarity.expect("some") - 3.0 / 11.0).abs() < 1e-6);
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(<Metric as clap::ValueEnum>::from_str(m.name(), false), Ok(m));
        }
        assert!(<Metric as clap::ValueEnum>::from_str("cosine", false).is_err());
    }
}
