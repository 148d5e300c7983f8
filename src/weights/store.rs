//! Where ResNet-18 weights are found on this machine, in order of preference.

use std::path::{Path, PathBuf};

use super::identity::IMAGENET1K_V1_FILE;

/// Environment variable naming a weight file.
pub const ENV_WEIGHTS: &str = "BEAMWATCH_WEIGHTS";
/// File name of imported weights in the data directory.
pub const STORE_FILE: &str = "resnet18.safetensors";

/// Why a candidate path is on the list (shown to users).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub path: PathBuf,
    pub origin: &'static str,
}

/// beamwatch's own weights directory (`$XDG_DATA_HOME/beamwatch/weights` or the platform equivalent).
pub fn data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("beamwatch").join("weights"))
}

/// The default destination of `weights import` / `weights fetch`.
pub fn default_store_path() -> Option<PathBuf> {
    data_dir().map(|d| d.join(STORE_FILE))
}

/// torchvision's hub cache: `$TORCH_HOME/hub/checkpoints` or `~/.cache/torch/hub/checkpoints`.
pub fn torch_cache_file() -> Option<PathBuf> {
    let torch_home = std::env::var_os("TORCH_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("torch")))
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache").join("torch")))?;
    Some(torch_home.join("hub").join("checkpoints").join(IMAGENET1K_V1_FILE))
}

/// Every place looked at when no file is named, in order.
pub fn candidates() -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os(ENV_WEIGHTS) {
        out.push(Candidate { path: PathBuf::from(p), origin: "$BEAMWATCH_WEIGHTS" });
    }
    if let Some(p) = default_store_path() {
        out.push(Candidate { path: p, origin: "beamwatch data directory" });
    }
    if let Some(p) = torch_cache_file() {
        out.push(Candidate { path: p, origin: "torchvision hub cache" });
    }
    out
}

/// The first existing candidate.
pub fn locate() -> Option<Candidate> {
    candidates().into_iter().find(|c| c.path.is_file())
}

/// Human list of the searched places, for "not found" messages.
pub fn searched_list() -> String {
    let c = candidates();
    if c.is_empty() {
        return "no candidate locations (no home or data directory)".into();
    }
    c.iter().map(|c| format!("{} ({})", c.path.display(), c.origin)).collect::<Vec<_>>().join(", ")
}

/// True if `p` names the torchvision file by name (used only to word log lines).
pub fn is_torchvision_file(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == IMAGENET1K_V1_FILE)
}

/// Finds weights: the named file, else the standard places. `Ok(None)`: none anywhere.
pub fn find(explicit: Option<&Path>) -> Result<Option<(super::identity::Identity, super::StateDict)>, super::WeightsError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => match locate() {
            Some(c) => {
                tracing::info!("using ResNet-18 weights from the {}: {}", c.origin, c.path.display());
                c.path
            }
            None => return Ok(None),
        },
    };
    let (id, sd) = super::identity::identify(&path)?;
    if let Err(reason) = &id.layout {
        return Err(super::WeightsError::Layout { path, reason: reason.clone() });
    }
    Ok(Some((id, sd)))
}
