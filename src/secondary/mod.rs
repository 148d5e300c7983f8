//! The secondary stages from the same research line, run on the daemon host beside monitoring but
//! never imported by the live pipeline; both read and write HDF5.
//!
//! - [`conductivity`]: SEM image → ionic conductivity CNN (seed paper 000).
//! - [`map`]: the autoencoder materials map from compositional and structural descriptors (seed 001).
//! - [`metrics`]: R² and RMSE, the scores both report.

pub mod conductivity;
pub mod map;
pub mod metrics;
