//! Weight files: a torchvision-named ResNet-18 state dict, read from safetensors (our format) or a
//! PyTorch `.pth` checkpoint, and the identity checks that say what a file really is.
//!
//! - [`StateDict`]: name → f32 tensor, plus the file's metadata.
//! - [`layout`]: the 102 tensors torchvision's `resnet18` has, with shapes.
//! - [`identity`]: sha256, tensor fingerprint, "is this torchvision's IMAGENET1K_V1?".
//! - [`import`]: `.pth` / safetensors → our safetensors file with provenance metadata.
//! - [`store`]: where weights live on this machine (explicit path, env, data dir, torch cache).
//! - [`fetch`]: download from PyTorch's model store (needs internet).

pub mod fetch;
pub mod identity;
pub mod import;
pub mod layout;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// Errors reading, checking or writing weight files.
#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum WeightsError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: not a readable PyTorch checkpoint (zip format, torch >= 1.6): {reason}")]
    Pth { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` has dtype {dtype}; only f32, f64, f16 and bf16 are supported")]
    Dtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: not a ResNet-18 state dict: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` contains {count} non-finite values")]
    NonFinite { path: PathBuf, name: String, count: usize },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}: not torchvision IMAGENET1K_V1: {origin} ({evidence})")]
    NotImagenet { path: PathBuf, origin: String, evidence: String },
    #[error("download failed: {0}")]
    Fetch(String),
    #[error(
        "no ResNet-18 weights found (looked in: {searched}). Genuine ImageNet weights: run \
         `beamwatch weights fetch` on a machine with internet, or copy torchvision's \
         resnet18-f37072fd.pth and run `beamwatch weights import resnet18-f37072fd.pth`; or pass \
         --weights FILE"
    )]
    NotFound { searched: String },
}

/// One tensor, converted to f32 on load.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A state dict with torchvision key names, all tensors in f32.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    pub tensors: BTreeMap<String, Tensor>,
    /// Free-form metadata (safetensors header `__metadata__`); empty for `.pth`.
    pub metadata: BTreeMap<String, String>,
    /// Where it was read from, for error messages and provenance.
    pub source: PathBuf,
}

impl StateDict {
    /// Reads a safetensors file or a `.pth` checkpoint, chosen by content (zip magic = `.pth`).
    pub fn read(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_owned(), source })?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, WeightsError> {
        if bytes.starts_with(b"PK\x03\x04") { Self::from_pth(path) } else { Self::from_safetensors(path, bytes) }
    }

    pub fn from_safetensors(path: &Path, bytes: &[u8]) -> Result<Self, WeightsError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError::Safetensors { path: path.to_owned(), reason: e.to_string() })?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| WeightsError::Safetensors { path: path.to_owned(), reason: e.to_string() })?;
        let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let data = to_f32(view.dtype(), view.data()).ok_or_else(|| WeightsError::Dtype {
                path: path.to_owned(),
                name: name.to_owned(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            tensors.insert(name.to_owned(), Tensor { shape: view.shape().to_vec(), data });
        }
        Ok(Self { tensors, metadata, source: path.to_owned() })
    }

    /// PyTorch zip checkpoint (`torch.save`, torch >= 1.6). Reading the pickle is candle's job.
    pub fn from_pth(path: &Path) -> Result<Self, WeightsError> {
        let pth_err = |reason: String| WeightsError::Pth { path: path.to_owned(), reason };
        let read = candle_core::pickle::read_all_with_key(path, None)
            .or_else(|_| candle_core::pickle::read_all_with_key(path, Some("state_dict")))
            .map_err(|e| pth_err(e.to_string()))?;
        if read.is_empty() {
            return Err(pth_err("no tensors found".into()));
        }
        let mut tensors = BTreeMap::new();
        for (name, t) in read {
            let shape = t.dims().to_vec();
            let t = t.to_dtype(candle_core::DType::F32).map_err(|e| pth_err(format!("{name}: {e}")))?;
            let data = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| pth_err(format!("{name}: {e}")))?;
            tensors.insert(name, Tensor { shape, data });
        }
        Ok(Self { tensors, metadata: BTreeMap::new(), source: path.to_owned() })
    }

    /// The tensor `name` with exactly `shape`, or a layout error naming what is wrong.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor, WeightsError> {
        let t = self.tensors.get(name).ok_or_else(|| WeightsError::Layout {
            path: self.source.clone(),
            reason: format!("tensor `{name}` is missing"),
        })?;
        if t.shape != shape {
            return Err(WeightsError::Layout {
                path: self.source.clone(),
                reason: format!("tensor `{name}` has shape {:?}, expected {:?}", t.shape, shape),
            });
        }
        Ok(t)
    }

    /// Checks the ResNet-18 trunk is complete with the right shapes and finite values.
    /// `fc.*` is not required (the trunk does not use it).
    pub fn check_trunk(&self) -> Result<(), WeightsError> {
        for (name, shape) in layout::resnet18_tensors() {
            if name.starts_with("fc.") {
                continue;
            }
            let t = self.get(&name, &shape)?;
            let bad = t.data.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(WeightsError::NonFinite { path: self.source.clone(), name, count: bad });
            }
        }
        Ok(())
    }
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Random ResNet-18 weights (fixed seed) for timing runs when no real file is at hand. The
/// metadata says what they are, so nothing made with them passes for a real result.
pub fn random_resnet18(seed: u64) -> StateDict {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal, Uniform};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = BTreeMap::new();
    for (name, shape) in layout::resnet18_tensors() {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("running_var") {
            vec![1.0; n]
        } else if name.ends_with("running_mean") || (name.ends_with(".bias") && !name.starts_with("fc")) {
            vec![0.0; n]
        } else if shape.len() == 4 {
            let fan_out = (shape[0] * shape[2] * shape[3]) as f32;
            let normal = Normal::new(0.0f32, (2.0 / fan_out).sqrt())
                .unwrap_or_else(|_| Normal::new(0.0, 0.01).expect("fixed std"));
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        } else {
            let u = Uniform::new(0.5f32, 1.5).expect("non-empty range");
            (0..n).map(|_| u.sample(&mut rng)).collect()
        };
        tensors.insert(name, Tensor { shape, data });
    }
    let metadata = [("source".to_string(), format!("RANDOM weights, seed {seed}: SYNTHETIC, timing only"))].into();
    StateDict { tensors, metadata, source: PathBuf::from("<random weights>") }
}
