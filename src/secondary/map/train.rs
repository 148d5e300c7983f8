//! Training the map: scaling, the loss of the paper's Eqs. 1–4, Adam with an L2 penalty, early
//! stopping, the metrics and the predicted-target grid.
//!
//! - Scaling (fitted on the training rows, test rows never seen): the composition block divided by
//!   its maximum; each structural sub-block (4 RDFs, 2 ADFs) by its own maximum over training rows
//!   with a structure — the paper scales "each type" by its maximum; per sub-block keeps Li–Li from
//!   vanishing beside all–all; the target min–max scaled to [0, 1] (the paper's max-scaling assumes
//!   a positive target; log10 σ is negative).
//! - Loss = Loss_comp + Loss_struct + W·Loss_target, each as the paper writes it: squared errors
//!   summed over descriptor values, averaged over compounds. Loss_struct and Loss_target average
//!   over the compounds with a structure only (masked): a compound without a CIF trains the
//!   composition autoencoder only and is never given an invented structure.
//! - Adam (β 0.9/0.999, ε 1e-8, lr 1e-3) with the L2 penalty added to the gradient as PyTorch's
//!   `Adam(weight_decay=1e-6)` does; batch 16; the validation rows (a seeded 20 % of the training
//!   rows) decide early stopping: stop after 80 epochs without a lower validation Loss_all, keep the
//!   best epoch's weights.
//! - Determinism: every random draw (initial weights, validation split, batch order) comes from
//!   seeded ChaCha8 streams; candle's CPU kernels give the same result on every run on one machine
//!   (checked by the test that trains twice).

use std::time::Instant;

use candle_core::{D, Tensor, Var};
use ndarray::Array2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::dataset::{Dataset, Split};
use super::model::{MapModel, ModelConfig};
use super::MapError;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The W values of the sweep (the paper's Fig. 2).
    pub w_values: Vec<f64>,
    /// The W whose model is saved and drawn as the map (the paper picks 0.1).
    pub pick_w: f64,
    pub batch: usize,
    pub learning_rate: f64,
    pub l2: f64,
    pub patience: usize,
    pub max_epochs: usize,
    /// Share of the training rows held out for early stopping.
    pub val_fraction: f64,
    /// Share of all rows used as test set when the dataset has no test split (the paper: 20 %).
    pub test_fraction: f64,
    pub seed: u64,
    pub hidden: Vec<usize>,
    pub head_hidden: Vec<usize>,
    /// Cells per axis of the predicted-target map.
    pub grid: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            w_values: vec![0.0, 0.01, 0.1, 1.0],
            pick_w: 0.1,
            batch: 16,
            learning_rate: 1e-3,
            l2: 1e-6,
            patience: 80,
            max_epochs: 3000,
            val_fraction: 0.2,
            test_fraction: 0.2,
            seed: 0,
            hidden: vec![128, 32],
            head_hidden: vec![32, 32],
            grid: 160,
        }
    }
}

/// How raw descriptors and targets map to the network's [0, 1] inputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scaling {
    pub comp_max: f64,
    /// (name, start, length, maximum) of each structural sub-block.
    pub struct_blocks: Vec<(String, usize, usize, f64)>,
    pub target_min: f64,
    pub target_max: f64,
}

impl Scaling {
    pub fn fit(ds: &Dataset, rows: &[usize]) -> Scaling {
        let comp_max = rows.iter().flat_map(|&i| ds.composition.row(i).to_vec()).fold(0.0f32, f32::max) as f64;
        let blocks = ds
            .structure_settings
            .blocks()
            .into_iter()
            .map(|(name, start, len)| {
                let m = rows
                    .iter()
                    .filter(|&&i| ds.has_structure[i])
                    .flat_map(|&i| ds.structure.row(i).to_vec()[start..start + len].to_vec())
                    .fold(0.0f32, f32::max) as f64;
                (name, start, len, m)
            })
            .collect();
        let t: Vec<f64> = rows.iter().map(|&i| ds.target[i]).collect();
        let (lo, hi) = t.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        Scaling { comp_max: positive(comp_max), struct_blocks: blocks, target_min: lo, target_max: if hi > lo { hi } else { lo + 1.0 } }
    }

    pub fn comp(&self, v: f32) -> f32 {
        (v as f64 / self.comp_max) as f32
    }

    pub fn structure_row(&self, row: &[f32]) -> Vec<f32> {
        let mut out = row.to_vec();
        for (_, start, len, m) in &self.struct_blocks {
            for v in &mut out[*start..start + len] {
                *v = (*v as f64 / positive(*m)) as f32;
            }
        }
        out
    }

    pub fn unscale_structure(&self, row: &mut [f64]) {
        for (_, start, len, m) in &self.struct_blocks {
            for v in &mut row[*start..start + len] {
                *v *= positive(*m);
            }
        }
    }

    pub fn target(&self, v: f64) -> f64 {
        (v - self.target_min) / (self.target_max - self.target_min)
    }

    pub fn unscale_target(&self, s: f64) -> f64 {
        self.target_min + s * (self.target_max - self.target_min)
    }
}

fn positive(m: f64) -> f64 {
    if m > 0.0 { m } else { 1.0 }
}

/// Which role a row plays in one training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Train = 0,
    Val = 1,
    Test = 2,
    Unused = 3,
}

/// Scaled tensors of the whole dataset plus the row roles.
pub struct Prepared {
    pub scaling: Scaling,
    pub comp: Vec<f32>,
    pub structure: Vec<f32>,
    pub mask: Vec<f32>,
    pub target: Vec<f32>,
    pub roles: Vec<Role>,
    pub comp_dim: usize,
    pub struct_dim: usize,
}

impl Prepared {
    pub fn rows(&self, role: Role) -> Vec<usize> {
        self.roles.iter().enumerate().filter(|(_, r)| **r == role).map(|(i, _)| i).collect()
    }

    pub fn n(&self) -> usize {
        self.roles.len()
    }
}

/// Splits rows (dataset test split, else a seeded `test_fraction`), carves the validation rows from
/// the training rows, fits the scaling on train + validation rows.
pub fn prepare(ds: &Dataset, cfg: &TrainConfig) -> Result<Prepared, MapError> {
    let n = ds.len();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_0001);
    let mut roles: Vec<Role> = ds.split.iter().map(|s| match s {
        Split::Train => Role::Train,
        Split::Test => Role::Test,
        Split::Neither => Role::Unused,
    }).collect();
    if !roles.contains(&Role::Test) {
        let mut idx: Vec<usize> = (0..n).filter(|&i| roles[i] == Role::Train).collect();
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f64) * cfg.test_fraction).round() as usize;
        for &i in &idx[..k] {
            roles[i] = Role::Test;
        }
    }
    let mut train: Vec<usize> = (0..n).filter(|&i| roles[i] == Role::Train).collect();
    train.shuffle(&mut rng);
    let k = ((train.len() as f64) * cfg.val_fraction).round() as usize;
    for &i in &train[..k] {
        roles[i] = Role::Val;
    }
    let fit_rows: Vec<usize> = (0..n).filter(|&i| matches!(roles[i], Role::Train | Role::Val)).collect();
    if fit_rows.len() < 4 || k == 0 {
        return Err(MapError::Invalid(format!("{} training rows: too few to train and validate", fit_rows.len())));
    }
    if !fit_rows.iter().any(|&i| ds.has_structure[i]) {
        return Err(MapError::Invalid("no training row has a structure (CIF); the structural autoencoder cannot train".into()));
    }
    let scaling = Scaling::fit(ds, &fit_rows);
    let (dc, dsd) = (ds.composition.ncols(), ds.structure.ncols());
    let mut comp = Vec::with_capacity(n * dc);
    let mut structure = Vec::with_capacity(n * dsd);
    for i in 0..n {
        comp.extend(ds.composition.row(i).iter().map(|&v| scaling.comp(v)));
        structure.extend(scaling.structure_row(&ds.structure.row(i).to_vec()));
    }
    Ok(Prepared {
        comp,
        structure,
        mask: ds.has_structure.iter().map(|&h| if h { 1.0 } else { 0.0 }).collect(),
        target: ds.target.iter().map(|&t| scaling.target(t) as f32).collect(),
        roles,
        comp_dim: dc,
        struct_dim: dsd,
        scaling,
    })
}

/// Adam with PyTorch's coupled L2 (g ← g + λθ), updating each parameter in place: candle's
/// tensor-op optimisers allocate a dozen parameter-sized tensors per step, which on a 1.5 M
/// parameter model costs more than the forward and backward passes together.
struct Adam {
    vars: Vec<Var>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
    lr: f64,
    l2: f64,
}

struct AdamUpdate<'a> {
    g: &'a [f32],
    m: std::cell::RefCell<&'a mut Vec<f32>>,
    v: std::cell::RefCell<&'a mut Vec<f32>>,
    lr: f32,
    l2: f32,
    c1: f32,
    c2: f32,
}

impl candle_core::InplaceOp1 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "adam-l2"
    }

    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<()> {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        let candle_core::CpuStorage::F32(data) = storage else {
            return Err(candle_core::Error::Msg("adam: parameters must be f32".into()));
        };
        let (a, b) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("adam: parameter not contiguous".into()))?;
        let theta = &mut data[a..b];
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if theta.len() != self.g.len() || m.len() != theta.len() {
            return Err(candle_core::Error::Msg("adam: gradient shape".into()));
        }
        for (((t, &g), m), v) in theta.iter_mut().zip(self.g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g + self.l2 * *t;
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *t -= self.lr * (*m * self.c1) / ((*v * self.c2).sqrt() + EPS);
        }
        Ok(())
    }
}

impl Adam {
    fn new(vars: Vec<Var>, lr: f64, l2: f64) -> candle_core::Result<Self> {
        let m: Vec<Vec<f32>> = vars.iter().map(|v| vec![0.0; v.elem_count()]).collect();
        let vv = m.clone();
        Ok(Self { vars, m, v: vv, t: 0, lr, l2 })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.t += 1;
        let c1 = (1.0 / (1.0 - 0.9f64.powi(self.t))) as f32;
        let c2 = (1.0 / (1.0 - 0.999f64.powi(self.t))) as f32;
        for (k, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let op = AdamUpdate {
                g: &g,
                m: std::cell::RefCell::new(&mut self.m[k]),
                v: std::cell::RefCell::new(&mut self.v[k]),
                lr: self.lr as f32,
                l2: self.l2 as f32,
                c1,
                c2,
            };
            var.as_tensor().inplace_op1(&op)?;
        }
        Ok(())
    }
}

/// The three loss terms of a batch, as tensors (for backprop) — Eqs. 1–3 with the structure mask.
fn losses(model: &MapModel, comp: &Tensor, structure: &Tensor, mask: &Tensor, y: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let b = comp.dim(0)? as f64;
    let (zc, zs) = model.encode(comp, structure)?;
    let lc = (model.comp_dec.forward(&zc)? - comp)?.sqr()?.sum_all()?.affine(1.0 / b, 0.0)?;
    let n_s = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let ls = (model.struct_dec.forward(&zs)? - structure)?.sqr()?.sum_keepdim(D::Minus1)?.mul(mask)?.sum_all()?.affine(1.0 / n_s, 0.0)?;
    let lt = (model.predict(&zc, &zs)? - y)?.sqr()?.mul(mask)?.sum_all()?.affine(1.0 / n_s, 0.0)?;
    Ok((lc, ls, lt))
}

fn gather(src: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        out.extend_from_slice(&src[r * dim..(r + 1) * dim]);
    }
    out
}

struct Batch {
    comp: Tensor,
    structure: Tensor,
    mask: Tensor,
    y: Tensor,
}

fn batch(model: &MapModel, p: &Prepared, rows: &[usize]) -> Result<Batch, MapError> {
    let n = rows.len();
    Ok(Batch {
        comp: model.tensor(gather(&p.comp, p.comp_dim, rows), n, p.comp_dim)?,
        structure: model.tensor(gather(&p.structure, p.struct_dim, rows), n, p.struct_dim)?,
        mask: model.tensor(rows.iter().map(|&r| p.mask[r]).collect(), n, 1)?,
        y: model.tensor(rows.iter().map(|&r| p.target[r]).collect(), n, 1)?,
    })
}

/// Test-set figures of one run (scaled units for reconstruction, R² of the target in its own units).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Flattened R² of decoded vs input composition descriptors (all rows × 1785 values).
    pub r2_comp: f64,
    /// Flattened R² of decoded vs input structural descriptors (rows with a structure).
    pub r2_struct: f64,
    /// R² of predicted vs measured target (rows with a structure).
    pub r2_target: f64,
    pub loss_comp: f64,
    pub loss_struct: f64,
    /// Mean squared error of the scaled target.
    pub loss_target: f64,
    pub rmse_target: f64,
    pub n_rows: usize,
    pub n_with_structure: usize,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub w: f64,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub wall_s: f64,
    pub ms_per_epoch: f64,
    pub test: Metrics,
    pub val: Metrics,
    pub train: Metrics,
}

/// Everything a run produced for every row.
pub struct RunOutput {
    pub summary: RunSummary,
    /// n × 2: x_comp, x_struct (NaN for rows without a structure).
    pub codes: Array2<f64>,
    /// Predicted target in its own units (NaN without a structure).
    pub predicted: Vec<f64>,
    /// Decoded descriptors (scaled) of every row: composition n × dc, structure n × ds.
    pub decoded_comp: Vec<f32>,
    pub decoded_struct: Vec<f32>,
    /// (train, validation) Loss_all per epoch.
    pub history: Vec<(f64, f64)>,
    pub model: MapModel,
}

pub use crate::secondary::metrics::r2;

/// A forward pass over all rows (scaled units, row-major).
pub struct Inferred {
    pub x_comp: Vec<f32>,
    pub x_struct: Vec<f32>,
    pub predicted: Vec<f32>,
    pub decoded_comp: Vec<f32>,
    pub decoded_struct: Vec<f32>,
}

/// Forward pass over all rows: codes, predictions, decoded blocks (scaled).
pub fn infer(model: &MapModel, p: &Prepared) -> Result<Inferred, MapError> {
    let n = p.n();
    let comp = model.tensor(p.comp.clone(), n, p.comp_dim)?;
    let structure = model.tensor(p.structure.clone(), n, p.struct_dim)?;
    let (zc, zs) = model.encode(&comp, &structure)?;
    let pred = model.predict(&zc, &zs)?;
    let dc = model.comp_dec.forward(&zc)?;
    let dsd = model.struct_dec.forward(&zs)?;
    let flat = |t: &Tensor| -> Result<Vec<f32>, MapError> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    Ok(Inferred { x_comp: flat(&zc)?, x_struct: flat(&zs)?, predicted: flat(&pred)?, decoded_comp: flat(&dc)?, decoded_struct: flat(&dsd)? })
}

fn metrics(p: &Prepared, rows: &[usize], pred: &[f32], dc: &[f32], dsd: &[f32]) -> Metrics {
    let (dcw, dsw) = (p.comp_dim, p.struct_dim);
    let mut ci = Vec::new();
    let mut co = Vec::new();
    for &r in rows {
        ci.extend(p.comp[r * dcw..(r + 1) * dcw].iter().map(|&v| v as f64));
        co.extend(dc[r * dcw..(r + 1) * dcw].iter().map(|&v| v as f64));
    }
    let srows: Vec<usize> = rows.iter().copied().filter(|&r| p.mask[r] > 0.0).collect();
    let mut si = Vec::new();
    let mut so = Vec::new();
    for &r in &srows {
        si.extend(p.structure[r * dsw..(r + 1) * dsw].iter().map(|&v| v as f64));
        so.extend(dsd[r * dsw..(r + 1) * dsw].iter().map(|&v| v as f64));
    }
    let ty: Vec<f64> = srows.iter().map(|&r| p.unscale(p.target[r] as f64)).collect();
    let py: Vec<f64> = srows.iter().map(|&r| p.unscale(pred[r] as f64)).collect();
    let sq = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let nr = rows.len().max(1) as f64;
    let ns = srows.len().max(1) as f64;
    let lt = srows.iter().map(|&r| (pred[r] as f64 - p.target[r] as f64).powi(2)).sum::<f64>() / ns;
    Metrics {
        r2_comp: r2(&co, &ci),
        r2_struct: r2(&so, &si),
        r2_target: r2(&py, &ty),
        loss_comp: sq(&co, &ci) / nr,
        loss_struct: sq(&so, &si) / ns,
        loss_target: lt,
        rmse_target: (sq(&py, &ty) / ns).sqrt(),
        n_rows: rows.len(),
        n_with_structure: srows.len(),
    }
}

impl Prepared {
    fn unscale(&self, s: f64) -> f64 {
        self.scaling.unscale_target(s)
    }
}

/// Trains one model at weight `w`; `progress(epoch, message)` after each epoch.
pub fn train_one(p: &Prepared, cfg: &TrainConfig, w: f64, progress: &mut dyn FnMut(usize, &str)) -> Result<RunOutput, MapError> {
    let t0 = Instant::now();
    let mc = ModelConfig { comp_dim: p.comp_dim, struct_dim: p.struct_dim, hidden: cfg.hidden.clone(), head_hidden: cfg.head_hidden.clone() };
    let model = MapModel::new(&mc, cfg.seed)?;
    let mut opt = Adam::new(model.vars(), cfg.learning_rate, cfg.l2)?;
    let train = p.rows(Role::Train);
    let val = p.rows(Role::Val);
    let vb = batch(&model, p, &val)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xba7c_0002);
    let mut best = (f64::INFINITY, 0usize, model.snapshot()?);
    let mut history = Vec::new();
    let mut epoch = 0;
    while epoch < cfg.max_epochs {
        epoch += 1;
        let mut order = train.clone();
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for chunk in order.chunks(cfg.batch.max(1)) {
            let b = batch(&model, p, chunk)?;
            let (lc, ls, lt) = losses(&model, &b.comp, &b.structure, &b.mask, &b.y)?;
            let loss = ((lc + ls)? + lt.affine(w, 0.0)?)?;
            sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            let grads = loss.backward()?;
            opt.step(&grads)?;
        }
        let train_loss = sum / train.len().max(1) as f64;
        let (lc, ls, lt) = losses(&model, &vb.comp, &vb.structure, &vb.mask, &vb.y)?;
        let val_loss = (lc.to_scalar::<f32>()? + ls.to_scalar::<f32>()?) as f64 + w * lt.to_scalar::<f32>()? as f64;
        history.push((train_loss, val_loss));
        if val_loss < best.0 {
            best = (val_loss, epoch, model.snapshot()?);
        }
        progress(epoch, &format!("W={w}: loss {train_loss:.4} train, {val_loss:.4} val (best {:.4} @ {})", best.0, best.1));
        if epoch - best.1 >= cfg.patience {
            break;
        }
    }
    model.restore(&best.2)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let Inferred { x_comp: zc, x_struct: zs, predicted: pred, decoded_comp: dc, decoded_struct: dsd } = infer(&model, p)?;
    let n = p.n();
    let mut codes = Array2::<f64>::zeros((n, 2));
    let mut predicted = vec![f64::NAN; n];
    for i in 0..n {
        codes[[i, 0]] = zc[i] as f64;
        codes[[i, 1]] = if p.mask[i] > 0.0 { zs[i] as f64 } else { f64::NAN };
        if p.mask[i] > 0.0 {
            predicted[i] = p.unscale(pred[i] as f64);
        }
    }
    let summary = RunSummary {
        w,
        epochs: epoch,
        best_epoch: best.1,
        best_val_loss: best.0,
        wall_s,
        ms_per_epoch: wall_s * 1e3 / epoch.max(1) as f64,
        test: metrics(p, &p.rows(Role::Test), &pred, &dc, &dsd),
        val: metrics(p, &val, &pred, &dc, &dsd),
        train: metrics(p, &train, &pred, &dc, &dsd),
    };
    Ok(RunOutput { summary, codes, predicted, decoded_comp: dc, decoded_struct: dsd, history, model })
}

/// x centres, y centres, values[y][x].
pub type TargetGrid = (Vec<f64>, Vec<f64>, Array2<f64>);

/// The predicted target over a `cells × cells` grid spanning the codes of the rows with a structure
/// (10 % margin): (x centres, y centres, values[y][x]) in target units.
pub fn target_grid(model: &MapModel, scaling: &Scaling, codes: &Array2<f64>, cells: usize) -> Result<TargetGrid, MapError> {
    let range = |col: usize| {
        let (lo, hi) = codes.column(col).iter().filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (-1.0, 1.0) };
        let pad = 0.1 * (hi - lo).max(1e-3);
        (lo - pad, hi + pad)
    };
    let (xr, yr) = (range(0), range(1));
    let cells = cells.max(2);
    let axis = |(lo, hi): (f64, f64)| (0..cells).map(|i| lo + (hi - lo) * (i as f64 + 0.5) / cells as f64).collect::<Vec<f64>>();
    let (xs, ys) = (axis(xr), axis(yr));
    let mut cx = Vec::with_capacity(cells * cells);
    let mut cy = Vec::with_capacity(cells * cells);
    for &y in &ys {
        for &x in &xs {
            cx.push(x as f32);
            cy.push(y as f32);
        }
    }
    let tx = model.tensor(cx, cells * cells, 1)?;
    let ty = model.tensor(cy, cells * cells, 1)?;
    let pred = model.predict(&tx, &ty)?.flatten_all()?.to_vec1::<f32>()?;
    let grid = Array2::from_shape_fn((cells, cells), |(r, c)| scaling.unscale_target(pred[r * cells + c] as f64));
    Ok((xs, ys, grid))
}

/// Decodes one point of the plane: (composition, structure) descriptors in raw units and the
/// predicted target.
pub fn decode_point(model: &MapModel, scaling: &Scaling, x_comp: f64, x_struct: f64) -> Result<(Vec<f64>, Vec<f64>, f64), MapError> {
    let zc = model.tensor(vec![x_comp as f32], 1, 1)?;
    let zs = model.tensor(vec![x_struct as f32], 1, 1)?;
    let comp: Vec<f64> = model.comp_dec.forward(&zc)?.flatten_all()?.to_vec1::<f32>()?.iter().map(|&v| v as f64 * scaling.comp_max).collect();
    let mut st: Vec<f64> = model.struct_dec.forward(&zs)?.flatten_all()?.to_vec1::<f32>()?.iter().map(|&v| v as f64).collect();
    scaling.unscale_structure(&mut st);
    let t = scaling.unscale_target(model.predict(&zc, &zs)?.flatten_all()?.to_vec1::<f32>()?[0] as f64);
    Ok((comp, st, t))
}
