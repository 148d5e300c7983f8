//! The autoencoder materials map (seed paper 001): compounds placed on a 2-D plane by two
//! autoencoders, one compressing compositional descriptors to a single number x_comp, one
//! compressing structural descriptors to x_struct, with a small network predicting the target
//! (here log10 ionic conductivity) from (x_comp, x_struct).
//!
//! Modules, in the order data flows:
//! - [`elements`]: the chemhist element-property table and histogram settings (embedded).
//! - [`formula`]: formula text → element amounts.
//! - [`histograms`]: composition → 1785 chemhist histogram descriptors.
//! - [`cif`]: CIF text → unit cell with symmetry-expanded atoms and occupancies.
//! - [`structure`]: unit cell → RDF/ADF descriptors with periodic images.
//! - [`families`]: named structure families (garnet, NASICON, …) from formula and space group.
//! - [`dataset`]: a table of compounds (+ CIFs in a folder or .tar.gz) → featurised HDF5 dataset.
//! - [`model`]: the candle autoencoder (two encoders, two decoders, target head), save/load.
//! - [`train`]: scaling, training with early stopping, the W sweep, metrics, the map grid.
//! - [`ridge`]: the ridge-regression baseline on the same descriptors.
//! - [`plots`]: the map with its predicted-target background, the trade-off and diagnostics PNGs.
//! - [`results`]: the results HDF5 (sweep, codes, predictions, heat map) and its reader.
//! - [`h5`]: typed HDF5 helpers shared by the dataset and results files.

pub mod cif;
pub mod dataset;
pub mod elements;
pub mod families;
pub mod formula;
pub mod histograms;
pub mod h5;
pub mod model;
pub mod plots;
pub mod results;
pub mod ridge;
pub mod structure;
pub mod train;

use std::path::PathBuf;

pub use cif::CifError;
pub use formula::FormulaError;

/// Everything that can go wrong in the materials-map stage; each names the file, and for tables the
/// row and column.
#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum MapError {
    /// A table row that cannot be used (row = line number in the file, header = line 1).
    #[error("{}: row {row}{}, column '{column}': {why}", file.display(), id.as_ref().map(|i| format!(" (id '{i}')")).unwrap_or_default())]
    Row { file: PathBuf, row: usize, id: Option<String>, column: String, why: String },
    #[error("{}: {why}", file.display())]
    Table { file: PathBuf, why: String },
    #[error("{context}{error}")]
    Cif { context: String, error: CifError },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {what}: {source}", path.display())]
    Hdf5 { path: PathBuf, what: String, source: hdf5::Error },
    #[error("{}: {why}", path.display())]
    Format { path: PathBuf, why: String },
    #[error("model: {0}")]
    Model(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<candle_core::Error> for MapError {
    fn from(e: candle_core::Error) -> Self {
        MapError::Model(e.to_string())
    }
}
