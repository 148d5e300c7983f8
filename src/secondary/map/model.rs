//! The map network (the paper's Fig. 1), in candle on the CPU:
//!
//! - composition encoder: 1785 → hidden… → 1 (x_comp); decoder: 1 → …hidden reversed → 1785;
//! - structure encoder: 1160 → hidden… → 1 (x_struct); decoder likewise;
//! - target head: (x_comp, x_struct) → head_hidden… → 1.
//!
//! Hidden layers use ReLU; the codes and the head's output are linear; decoders end in a sigmoid
//! because every scaled descriptor lies in [0, 1]. Weights start as PyTorch's `nn.Linear` does
//! (uniform ±1/√fan_in for weights and biases) from a seeded ChaCha8 stream, so a run repeats.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::MapError;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub comp_dim: usize,
    pub struct_dim: usize,
    /// Encoder hidden widths (decoders mirror them).
    pub hidden: Vec<usize>,
    pub head_hidden: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OutAct {
    Linear,
    Sigmoid,
}

/// Fully connected layers, ReLU between them.
pub struct Mlp {
    layers: Vec<(Var, Var)>,
    out: OutAct,
}

impl Mlp {
    fn new(dims: &[usize], out: OutAct, rng: &mut ChaCha8Rng, dev: &Device) -> Result<Self, MapError> {
        let mut layers = Vec::new();
        for w in dims.windows(2) {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut draw = |n: usize| (0..n).map(|_| rng.random_range(-bound..bound)).collect::<Vec<f32>>();
            let wt = Tensor::from_vec(draw(fan_out * fan_in), (fan_out, fan_in), dev)?;
            let b = Tensor::from_vec(draw(fan_out), fan_out, dev)?;
            layers.push((Var::from_tensor(&wt)?, Var::from_tensor(&b)?));
        }
        Ok(Self { layers, out })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i < last {
                h = h.relu()?;
            }
        }
        match self.out {
            OutAct::Linear => Ok(h),
            OutAct::Sigmoid => candle_nn::ops::sigmoid(&h),
        }
    }
}

pub struct MapModel {
    pub config: ModelConfig,
    pub comp_enc: Mlp,
    pub comp_dec: Mlp,
    pub struct_enc: Mlp,
    pub struct_dec: Mlp,
    pub head: Mlp,
    pub device: Device,
}

fn chain(first: usize, mid: &[usize], last: usize) -> Vec<usize> {
    std::iter::once(first).chain(mid.iter().copied()).chain(std::iter::once(last)).collect()
}

impl MapModel {
    pub fn new(config: &ModelConfig, seed: u64) -> Result<Self, MapError> {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rev: Vec<usize> = config.hidden.iter().rev().copied().collect();
        Ok(Self {
            comp_enc: Mlp::new(&chain(config.comp_dim, &config.hidden, 1), OutAct::Linear, &mut rng, &dev)?,
            comp_dec: Mlp::new(&chain(1, &rev, config.comp_dim), OutAct::Sigmoid, &mut rng, &dev)?,
            struct_enc: Mlp::new(&chain(config.struct_dim, &config.hidden, 1), OutAct::Linear, &mut rng, &dev)?,
            struct_dec: Mlp::new(&chain(1, &rev, config.struct_dim), OutAct::Sigmoid, &mut rng, &dev)?,
            head: Mlp::new(&chain(2, &config.head_hidden, 1), OutAct::Linear, &mut rng, &dev)?,
            config: config.clone(),
            device: dev,
        })
    }

    fn named(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::new();
        for (name, m) in [("comp_enc", &self.comp_enc), ("comp_dec", &self.comp_dec), ("struct_enc", &self.struct_enc), ("struct_dec", &self.struct_dec), ("head", &self.head)] {
            for (i, (w, b)) in m.layers.iter().enumerate() {
                out.push((format!("{name}.{i}.weight"), w));
                out.push((format!("{name}.{i}.bias"), b));
            }
        }
        out
    }

    pub fn vars(&self) -> Vec<Var> {
        self.named().into_iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn parameter_count(&self) -> usize {
        self.named().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A copy of every parameter (for keeping the best epoch).
    pub fn snapshot(&self) -> Result<Vec<Tensor>, MapError> {
        Ok(self.vars().iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?)
    }

    pub fn restore(&self, snap: &[Tensor]) -> Result<(), MapError> {
        for (v, t) in self.vars().iter().zip(snap) {
            v.set(t)?;
        }
        Ok(())
    }

    /// Codes (n × 2: x_comp, x_struct) of scaled descriptor rows.
    pub fn encode(&self, comp: &Tensor, structure: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((self.comp_enc.forward(comp)?, self.struct_enc.forward(structure)?))
    }

    pub fn predict(&self, x_comp: &Tensor, x_struct: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(&Tensor::cat(&[x_comp, x_struct], 1)?)
    }

    pub fn tensor(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor, MapError> {
        Ok(Tensor::from_vec(data, (rows, cols), &self.device)?)
    }

    pub fn save(&self, path: &Path) -> Result<(), MapError> {
        let map: HashMap<String, Tensor> = self.named().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        candle_core::safetensors::save(&map, path).map_err(|e| MapError::Format { path: path.to_path_buf(), why: format!("cannot write weights: {e}") })
    }

    pub fn load(config: &ModelConfig, path: &Path) -> Result<Self, MapError> {
        let model = Self::new(config, 0)?;
        let tensors = candle_core::safetensors::load(path, &model.device).map_err(|e| MapError::Format { path: path.to_path_buf(), why: format!("cannot read weights: {e}") })?;
        for (name, var) in model.named() {
            let t = tensors.get(&name).ok_or_else(|| MapError::Format { path: path.to_path_buf(), why: format!("missing tensor {name}") })?;
            if t.dims() != var.dims() || t.dtype() != DType::F32 {
                return Err(MapError::Format { path: path.to_path_buf(), why: format!("{name}: shape {:?}, expected {:?} f32", t.dims(), var.dims()) });
            }
            var.set(t)?;
        }
        Ok(model)
    }
}
