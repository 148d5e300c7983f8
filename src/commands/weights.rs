//! `beamwatch weights import | verify | fetch | where`.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::weights::identity::{self, IMAGENET1K_V1_FILE, Identity};
use crate::weights::import::{self, Imported};
use crate::weights::{WeightsError, fetch, store};

fn default_out() -> Result<PathBuf, Error> {
    store::default_store_path().ok_or_else(|| Error::Usage("no data directory on this machine: give --out FILE".into()))
}

/// Converts `src` (`.pth` or safetensors) into beamwatch's file at `out` (default: the data dir,
/// where every command finds it).
pub fn import(src: &Path, out: Option<&Path>) -> Result<Imported, Error> {
    let out = match out {
        Some(p) => p.to_owned(),
        None => default_out()?,
    };
    Ok(import::import(src, &out)?)
}

pub fn verify(path: &Path) -> Result<Identity, Error> {
    Ok(identity::identify(path)?.0)
}

/// Downloads torchvision's file (checked by sha256) next to the store, then imports it.
pub fn fetch(url: Option<&str>, out: Option<&Path>) -> Result<Imported, Error> {
    let out = match out {
        Some(p) => p.to_owned(),
        None => default_out()?,
    };
    let pth = out.with_file_name(IMAGENET1K_V1_FILE);
    if !pth.is_file() {
        fetch::download_imagenet(&pth, url)?;
    }
    import(&pth, Some(&out))
}

/// Every place searched, whether something is there, and what the first found file is.
pub fn locate() -> Vec<(store::Candidate, bool)> {
    store::candidates()
        .into_iter()
        .map(|c| {
            let exists = c.path.is_file();
            (c, exists)
        })
        .collect()
}

/// The error for "asked for genuine weights, got something else".
pub fn not_imagenet(id: &Identity) -> Error {
    Error::Weights(WeightsError::NotImagenet {
        path: PathBuf::from(&id.path),
        origin: id.provenance.label().to_string(),
        evidence: id.evidence.clone(),
    })
}
