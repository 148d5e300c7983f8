//! Converts a `.pth` or safetensors ResNet-18 into beamwatch's weight file: safetensors with
//! torchvision key names (the 102 trunk + fc tensors, f32) and provenance metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::identity::{self, Identity, Provenance, meta};
use super::{WeightsError, layout};

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    pub out: PathBuf,
    pub identity: Identity,
}

/// Reads `src`, checks it is a complete ResNet-18, and writes `out` (atomically: temp + rename).
pub fn import(src: &Path, out: &Path) -> Result<Imported, WeightsError> {
    let (id, sd) = identity::identify(src)?;
    if let Err(reason) = &id.layout {
        return Err(WeightsError::Layout { path: src.to_owned(), reason: reason.clone() });
    }
    let mut metadata: HashMap<String, String> = sd.metadata.clone().into_iter().collect();
    metadata.insert(meta::FORMAT.into(), meta::FORMAT_VALUE.into());
    // A re-import of our own file keeps the original source record.
    if !sd.metadata.contains_key(meta::SOURCE_SHA256) {
        metadata.insert(meta::SOURCE_SHA256.into(), id.file_sha256.clone());
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        metadata.insert(meta::SOURCE_FILE.into(), name);
    }
    if let Some(fp) = &id.tensor_fingerprint {
        metadata.insert(meta::FINGERPRINT.into(), fp.clone());
    }
    let identity_tag = match id.provenance {
        Provenance::TorchvisionImagenet1kV1 => "torchvision-imagenet1k-v1",
        Provenance::Synthetic => "synthetic",
        Provenance::Modified => "modified",
        Provenance::Unknown => "unknown",
    };
    metadata.insert(meta::IDENTITY.into(), identity_tag.into());

    save(&sd, metadata, out)?;
    let (identity, _) = identity::identify(out)?;
    Ok(Imported { out: out.to_owned(), identity })
}

/// Writes the ResNet-18 tensors of `sd` as f32 safetensors with `metadata` (temp file + rename).
pub fn save(sd: &super::StateDict, metadata: HashMap<String, String>, out: &Path) -> Result<(), WeightsError> {
    let names = layout::resnet18_tensors();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .filter_map(|(name, _)| sd.tensors.get(name).map(|t| (name, t)))
        .map(|(name, t)| (name.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let write_err = |reason: String| WeightsError::Write { path: out.to_owned(), reason };
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| write_err(e.to_string()))?;
        views.push((name.clone(), view));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
    }
    let tmp = out.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| write_err(e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(|e| write_err(e.to_string()))
}
