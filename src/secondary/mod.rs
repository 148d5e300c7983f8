//! The secondary stages from the same research line, run on the daemon host beside monitoring but
//! never imported by the live pipeline; both read and write HDF5.
//!
//! - [`conductivity`]: SEM image → ionic conductivity CNN (seed paper 000).
//! - [`map`]: the autoencoder materials map from compositional and structural descriptors (seed 001).

pub mod conductivity;
pub mod map;
