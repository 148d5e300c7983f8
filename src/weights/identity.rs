//! What a weight file is: its sha256, a tensor fingerprint that survives format conversion, and
//! whether it is torchvision's ImageNet ResNet-18 (IMAGENET1K_V1).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{StateDict, WeightsError, layout};

/// sha256 of torchvision's `resnet18-f37072fd.pth` (IMAGENET1K_V1), as PyTorch publishes it.
pub const IMAGENET1K_V1_SHA256: &str = "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec";
/// File name in PyTorch's model store and in torchvision's hub cache.
pub const IMAGENET1K_V1_FILE: &str = "resnet18-f37072fd.pth";
/// Download address in PyTorch's model store.
pub const IMAGENET1K_V1_URL: &str = "https://download.pytorch.org/models/resnet18-f37072fd.pth";

/// Metadata keys beamwatch writes into its own safetensors files.
pub mod meta {
    pub const FORMAT: &str = "format";
    pub const FORMAT_VALUE: &str = "beamwatch-resnet18/1";
    pub const SOURCE_FILE: &str = "source_file";
    pub const SOURCE_SHA256: &str = "source_sha256";
    pub const FINGERPRINT: &str = "tensor_fingerprint";
    pub const IDENTITY: &str = "identity";
}

/// Where a set of weights came from, as far as we can prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// torchvision IMAGENET1K_V1: the paper's weights.
    TorchvisionImagenet1kV1,
    /// Declares itself synthetic (not ImageNet-trained): for testing numerics only.
    Synthetic,
    /// Claims to be converted from IMAGENET1K_V1 but the tensors no longer match that record.
    Modified,
    /// Anything else (fine-tuned, other training, unknown origin).
    Unknown,
}

impl Provenance {
    pub fn label(&self) -> &'static str {
        match self {
            Self::TorchvisionImagenet1kV1 => "torchvision IMAGENET1K_V1 (ImageNet-trained)",
            Self::Synthetic => "SYNTHETIC (not ImageNet-trained; numerics tests only, not the paper's metric)",
            Self::Modified => "MODIFIED (claims IMAGENET1K_V1 origin but tensors differ from the import record)",
            Self::Unknown => "unknown origin (not torchvision IMAGENET1K_V1)",
        }
    }

    /// The warning printed on every picture made with weights that are not the paper's.
    pub fn picture_warning(&self) -> Option<String> {
        (*self != Self::TorchvisionImagenet1kV1).then(|| format!("weights: {}", self.label()))
    }
}

/// Everything `weights verify` reports about a file.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    pub path: String,
    pub file_sha256: String,
    /// `None` when the trunk layout is incomplete.
    pub tensor_fingerprint: Option<String>,
    /// `Ok` or the reason the file is not a usable ResNet-18 trunk.
    pub layout: Result<(), String>,
    pub provenance: Provenance,
    /// One sentence saying how the provenance was decided.
    pub evidence: String,
    pub n_tensors: usize,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// sha256 over the ResNet-18 tensors in layout order: name, shape, little-endian f32 values.
/// It depends only on the numbers, so a `.pth` and its safetensors conversion share it.
pub fn tensor_fingerprint(sd: &StateDict) -> Option<String> {
    let mut h = Sha256::new();
    for (name, shape) in layout::resnet18_tensors() {
        let t = sd.tensors.get(&name)?;
        if t.shape != shape {
            return None;
        }
        h.update(name.as_bytes());
        h.update([0u8]);
        for d in &shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in &t.data {
            h.update(v.to_le_bytes());
        }
    }
    Some(format!("bwfp1:{}", hex(&h.finalize())))
}

/// Reads `path` and decides what it is.
pub fn identify(path: &Path) -> Result<(Identity, StateDict), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_owned(), source })?;
    let file_sha256 = sha256_hex(&bytes);
    let sd = StateDict::from_bytes(path, &bytes)?;
    let id = identify_loaded(path, &file_sha256, &sd);
    Ok((id, sd))
}

pub fn identify_loaded(path: &Path, file_sha256: &str, sd: &StateDict) -> Identity {
    let fingerprint = tensor_fingerprint(sd);
    let layout = sd.check_trunk().map_err(|e| e.to_string());
    let (provenance, evidence) = classify(file_sha256, fingerprint.as_deref(), sd);
    Identity {
        path: path.display().to_string(),
        file_sha256: file_sha256.to_owned(),
        tensor_fingerprint: fingerprint,
        layout,
        provenance,
        evidence,
        n_tensors: sd.tensors.len(),
    }
}

fn classify(file_sha256: &str, fingerprint: Option<&str>, sd: &StateDict) -> (Provenance, String) {
    if file_sha256 == IMAGENET1K_V1_SHA256 {
        return (
            Provenance::TorchvisionImagenet1kV1,
            format!("file sha256 equals PyTorch's published {IMAGENET1K_V1_FILE}"),
        );
    }
    let m = &sd.metadata;
    if m.get(meta::SOURCE_SHA256).map(String::as_str) == Some(IMAGENET1K_V1_SHA256) {
        let recorded = m.get(meta::FINGERPRINT).map(String::as_str);
        return if recorded.is_some() && recorded == fingerprint {
            (
                Provenance::TorchvisionImagenet1kV1,
                format!(
                    "imported by beamwatch from a file whose sha256 matched {IMAGENET1K_V1_FILE}; tensor \
                     fingerprint unchanged since import"
                ),
            )
        } else {
            (
                Provenance::Modified,
                "metadata names IMAGENET1K_V1 as the source, but the tensor fingerprint differs from the \
                 one recorded at import"
                    .into(),
            )
        };
    }
    // Only declarations count: the `source` note (shared synthetic file, random timing weights) or
    // our own identity tag — never a file name that happens to contain the word.
    let declared = m.get("source").is_some_and(|v| v.contains("SYNTHETIC"))
        || m.get(meta::IDENTITY).is_some_and(|v| v == "synthetic");
    if declared {
        return (Provenance::Synthetic, "file metadata declares the weights synthetic".into());
    }
    (Provenance::Unknown, "sha256 differs from torchvision's file and there is no verified import record".into())
}
