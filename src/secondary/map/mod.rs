//! The autoencoder materials map (seed paper 001).
