//! Splits over *samples*, never over images: all 1–3 images of a pellet are on the same side of every
//! split, so no field of view of a held-out pellet is ever seen in training.
//!
//! - Leave-one-sample-out (the paper): each sample is the test set once; the rest is cut into
//!   `inner_folds` folds, and member k of the ensemble trains on all inner folds but k and stops
//!   early on fold k.
//! - k-fold (quick runs): `folds` outer folds; inside each, the same inner split.
//!
//! Folds are stratified by the target so that each holds the whole conductivity range: samples sorted
//! by log10 σ are dealt to folds in blocks of k with a random order inside each block.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::{ConductivityError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Protocol {
    /// Leave one sample out (the paper's protocol).
    Loso,
    /// k folds over samples.
    Kfold { folds: usize },
}

impl Protocol {
    pub fn describe(&self) -> String {
        match self {
            Self::Loso => "leave-one-sample-out".into(),
            Self::Kfold { folds } => format!("{folds}-fold over samples"),
        }
    }
}

/// One model of an ensemble: what it trains on and what it stops on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub train_samples: Vec<usize>,
    pub val_samples: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OuterFold {
    pub test_samples: Vec<usize>,
    pub members: Vec<Member>,
}

/// Sample indices → the indices of all their images.
pub fn images_of(ds: &Dataset, samples: &[usize]) -> Vec<usize> {
    let mut keep = vec![false; ds.samples.len()];
    for &s in samples {
        keep[s] = true;
    }
    ds.images.iter().enumerate().filter(|(_, im)| keep[im.sample]).map(|(i, _)| i).collect()
}

/// `samples` dealt into `k` folds stratified by `targets`.
pub fn stratified(samples: &[usize], targets: &[f64], k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|&a, &b| targets[a].total_cmp(&targets[b]).then(a.cmp(&b)));
    let mut folds = vec![Vec::new(); k];
    for block in sorted.chunks(k) {
        let mut labels: Vec<usize> = (0..k).collect();
        labels.shuffle(rng);
        for (s, &f) in block.iter().zip(&labels) {
            folds[f].push(*s);
        }
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    folds
}

/// The ensemble members over `samples`: `inner_folds` stratified folds, the first `members` of them
/// used as validation folds in turn.
pub fn members(samples: &[usize], targets: &[f64], inner_folds: usize, members: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Member>> {
    if inner_folds < 2 {
        return Err(ConductivityError::Settings(format!("inner folds must be ≥ 2 (got {inner_folds})")));
    }
    if members == 0 || members > inner_folds {
        return Err(ConductivityError::Settings(format!(
            "ensemble members must be 1..={inner_folds} (one per inner fold), got {members}"
        )));
    }
    if samples.len() < inner_folds {
        return Err(ConductivityError::Settings(format!(
            "{} training samples cannot fill {inner_folds} inner folds",
            samples.len()
        )));
    }
    let folds = stratified(samples, targets, inner_folds, rng);
    Ok((0..members)
        .map(|k| Member {
            val_samples: folds[k].clone(),
            train_samples: folds.iter().enumerate().filter(|(j, _)| *j != k).flat_map(|(_, f)| f.iter().copied()).collect(),
        })
        .map(|mut m| {
            m.train_samples.sort_unstable();
            m
        })
        .collect())
}

/// The whole evaluation's splits for `n` samples with log10 σ `targets`.
pub fn plan(targets: &[f64], protocol: Protocol, inner_folds: usize, n_members: usize, seed: u64) -> Result<Vec<OuterFold>> {
    let n = targets.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all: Vec<usize> = (0..n).collect();
    let tests: Vec<Vec<usize>> = match protocol {
        Protocol::Loso => all.iter().map(|&s| vec![s]).collect(),
        Protocol::Kfold { folds } => {
            if folds < 2 || folds > n {
                return Err(ConductivityError::Settings(format!("{folds} outer folds need 2 ≤ folds ≤ {n} samples")));
            }
            stratified(&all, targets, folds, &mut rng)
        }
    };
    tests
        .into_iter()
        .map(|test| {
            let rest: Vec<usize> = all.iter().copied().filter(|s| !test.contains(s)).collect();
            Ok(OuterFold { members: members(&rest, targets, inner_folds, n_members, &mut rng)?, test_samples: test })
        })
        .collect()
}
