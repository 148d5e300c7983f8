//! SEM image → ionic-conductivity CNN (seed paper 000, Murakami et al., Digital Discovery 2026):
//! predicts log10 σ (S/cm, 30 °C) of sintered LiZr₂(PO₄)₃-type pellets from SEM images, alone or
//! with composition / sintering descriptors, and shows which image regions the CNN ties to high and
//! low conductivity. Everything is read from and written to HDF5.
//!
//! ## Layout (modules follow the data)
//! - [`config`]: `configs/conductivity/train.toml` → validated settings.
//! - [`dataset`]: the stage's HDF5 dataset — images of any size, the sample table, image → sample.
//! - [`infobar`]: the SEM's burnt-in annotation band, found and cut before import.
//! - [`import`]: a folder of TIFF/PNG/JPEG images plus a CSV table (or σ in the file names) →
//!   dataset (errors name row and file).
//! - [`imagestats`]: eight whole-image statistics and the ridge baseline on them.
//! - [`synth`]: synthetic pellets with a known truth — Voronoi grains, boundaries, pores, β grains;
//!   conductivity from [`laplace`], a pixel-level Laplace solve of the microstructure.
//! - [`descriptors`]: the paper's 33 descriptors and their training-set standardisation.
//! - [`folds`]: leave-one-sample-out and k-fold splits over *samples*, with inner folds.
//! - [`ops`]: the 3×3 convolution as an im2col candle op with its gradient (col2im).
//! - [`model`]: the architectures (Baseline, + descriptors, + attention, descriptors only, the
//!   ResNet-18 head) as candle tensors; crops and flips.
//! - [`features`]: frozen ResNet-18 trunk features of a crop (the transfer-model substitute).
//! - [`train`]: one model trained with Adam on MSE, early stopping, a progress bar with the loss.
//! - [`protocol`]: the evaluation — outer folds × inner ensembles, image- and sample-level
//!   predictions, RMSE and R².
//! - [`interpret`]: GAP-channel correlation with log σ and the positive/negative group masks.
//! - [`plots`]: diagnostic plot (Fig. 3), correlation histogram (Fig. 4b), overlays (Fig. 5).
//! - [`results`]: the evaluation's HDF5 output.
//! - [`saved`]: a trained ensemble as safetensors + JSON config, and prediction with it.

pub mod config;
pub mod dataset;
pub mod descriptors;
pub mod features;
pub mod folds;
pub mod imagestats;
pub mod import;
pub mod infobar;
pub mod interpret;
pub mod laplace;
pub mod model;
pub mod ops;
pub mod plots;
pub mod protocol;
pub mod results;
pub mod saved;
pub mod synth;
pub mod train;

use std::path::PathBuf;

/// Everything that can go wrong in the conductivity stage, each naming the file, row or setting.
#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum ConductivityError {
    /// A problem with the sample table: `line` is the file's line number as an editor shows it (the
    /// header is line 1, the first sample line 2).
    #[error("{}{}{}: {problem}", path.display(), line.map_or(String::new(), |r| format!(" line {r}")), column.as_ref().map_or(String::new(), |c| format!(", column {c}")))]
    Table { path: PathBuf, line: Option<u64>, column: Option<String>, problem: String },
    /// An image file that cannot be used.
    #[error("{}: {problem}", path.display())]
    Image { path: PathBuf, problem: String },
    /// A dataset, results or model file whose content is wrong.
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("{}: {what}: {source}", path.display())]
    Hdf5 { path: PathBuf, what: String, source: hdf5::Error },
    /// A tensor operation failed (shapes, or candle itself).
    #[error("{what}: {source}")]
    Tensor { what: String, source: candle_core::Error },
    /// Settings that cannot work together (crop larger than an image, too few samples for the folds).
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

impl ConductivityError {
    pub fn table(path: impl Into<PathBuf>, line: Option<u64>, column: Option<&str>, problem: impl Into<String>) -> Self {
        Self::Table { path: path.into(), line, column: column.map(str::to_owned), problem: problem.into() }
    }

    pub fn file(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self::File { path: path.into(), problem: problem.into() }
    }
}

/// `map_err` helper for HDF5 calls: names the file and the object.
pub(crate) fn h5err(path: &std::path::Path, what: impl Into<String>) -> impl FnOnce(hdf5::Error) -> ConductivityError {
    let (path, what) = (path.to_path_buf(), what.into());
    move |source| ConductivityError::Hdf5 { path, what, source }
}

/// `map_err` helper for candle calls.
pub(crate) fn terr(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ConductivityError {
    let what = what.into();
    move |source| ConductivityError::Tensor { what, source }
}

pub type Result<T, E = ConductivityError> = std::result::Result<T, E>;
