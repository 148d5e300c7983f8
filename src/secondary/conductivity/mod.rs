//! SEM image → ionic-conductivity CNN (seed paper 000).
