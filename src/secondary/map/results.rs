//! The results file of a training run (`results.h5`) and the saved model's description
//! (`model.json` beside `model.safetensors`).
//!
//! `results.h5`: root attributes `kind` = `beamwatch-map-results`, `dataset`, `target_name`,
//! `target_units`, `picked_w`; per compound `ids`, `formulas`, `families`, `has_structure`,
//! `roles` (0 train, 1 validation, 2 test, 3 unused), `target`; `/sweep/*` one value per W (`w`,
//! `r2_comp`, `r2_struct`, `r2_target`, `loss_comp`, `loss_struct`, `loss_target`, `rmse_target`,
//! `epochs`, `best_epoch`, `wall_s`; test set); `/ridge` attributes (test R² of the baseline, λ);
//! `/runs/W_<w>/`: `codes` (n × 2, x_struct NaN without a structure), `predicted` (n, NaN without a
//! structure), `heatmap` (predicted target, y × x), `heatmap_x`, `heatmap_y`, `history` (epochs × 2:
//! train and validation Loss_all).

use std::path::Path;

use ndarray::Array2;

use super::dataset::Dataset;
use super::model::ModelConfig;
use super::structure::StructureSettings;
use super::train::{RunOutput, Scaling, TrainConfig};
use super::{MapError, h5};

pub const KIND: &str = "beamwatch-map-results";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModelFile {
    pub model: ModelConfig,
    pub scaling: Scaling,
    pub w: f64,
    pub train: TrainConfig,
    pub structure_settings: StructureSettings,
    pub target_name: String,
    pub target_units: String,
    pub dataset: String,
    pub best_epoch: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RidgeSummary {
    /// Composition + structure descriptors, test rows with a structure (the map's target rows).
    pub r2_test_comp_struct: f64,
    pub lambda_comp_struct: f64,
    /// Composition descriptors only, the same test rows.
    pub r2_test_comp_only: f64,
    pub lambda_comp_only: f64,
    /// Composition descriptors only, trained and tested on every row (with or without a CIF).
    pub r2_test_comp_only_all_rows: f64,
    pub lambda_comp_only_all_rows: f64,
    pub n_train_structure: usize,
    pub n_test_structure: usize,
    pub n_train_all: usize,
    pub n_test_all: usize,
    pub fit_s: f64,
}

pub fn grid_name(w: f64) -> String {
    format!("W_{w}")
}

pub struct RunGrid<'a> {
    pub run: &'a RunOutput,
    pub xs: &'a [f64],
    pub ys: &'a [f64],
    pub grid: &'a Array2<f64>,
}

pub fn write(path: &Path, ds: &Dataset, dataset_path: &str, roles: &[u8], runs: &[RunGrid<'_>], picked_w: f64, ridge: &RidgeSummary) -> Result<(), MapError> {
    let f = h5::create(path)?;
    h5::attr_str(&f, path, "kind", KIND)?;
    h5::attr_str(&f, path, "dataset", dataset_path)?;
    h5::attr_str(&f, path, "target_name", &ds.target_name)?;
    h5::attr_str(&f, path, "target_units", &ds.target_units)?;
    h5::attr_f64(&f, path, "picked_w", picked_w)?;
    h5::strings(&f, path, "ids", &ds.ids)?;
    h5::strings(&f, path, "formulas", &ds.formulas)?;
    h5::strings(&f, path, "families", &ds.families)?;
    h5::u8_1d(&f, path, "has_structure", &ds.has_structure.iter().map(|&b| u8::from(b)).collect::<Vec<_>>())?;
    h5::u8_1d(&f, path, "roles", roles)?;
    h5::f64_1d(&f, path, "target", &ds.target)?;
    let sweep = f.create_group("sweep").map_err(h5::err(path, "/sweep"))?;
    let col = |g: fn(&RunOutput) -> f64| runs.iter().map(|r| g(r.run)).collect::<Vec<f64>>();
    type Get = fn(&RunOutput) -> f64;
    let cols: [(&str, Get); 11] = [
        ("w", |r| r.summary.w),
        ("r2_comp", |r| r.summary.test.r2_comp),
        ("r2_struct", |r| r.summary.test.r2_struct),
        ("r2_target", |r| r.summary.test.r2_target),
        ("loss_comp", |r| r.summary.test.loss_comp),
        ("loss_struct", |r| r.summary.test.loss_struct),
        ("loss_target", |r| r.summary.test.loss_target),
        ("rmse_target", |r| r.summary.test.rmse_target),
        ("epochs", |r| r.summary.epochs as f64),
        ("best_epoch", |r| r.summary.best_epoch as f64),
        ("wall_s", |r| r.summary.wall_s),
    ];
    for (name, g) in cols {
        h5::f64_1d(&sweep, path, name, &col(g))?;
    }
    let rg = f.create_group("ridge").map_err(h5::err(path, "/ridge"))?;
    for (k, v) in [
        ("r2_test_comp_struct", ridge.r2_test_comp_struct),
        ("lambda_comp_struct", ridge.lambda_comp_struct),
        ("r2_test_comp_only", ridge.r2_test_comp_only),
        ("r2_test_comp_only_all_rows", ridge.r2_test_comp_only_all_rows),
    ] {
        h5::attr_f64(&rg, path, k, v)?;
    }
    let runs_g = f.create_group("runs").map_err(h5::err(path, "/runs"))?;
    for r in runs {
        let name = grid_name(r.run.summary.w);
        let g = runs_g.create_group(&name).map_err(h5::err(path, &name))?;
        h5::f64_2d(&g, path, "codes", &r.run.codes)?;
        h5::f64_1d(&g, path, "predicted", &r.run.predicted)?;
        h5::f64_2d(&g, path, "heatmap", r.grid)?;
        h5::f64_1d(&g, path, "heatmap_x", r.xs)?;
        h5::f64_1d(&g, path, "heatmap_y", r.ys)?;
        let h = Array2::from_shape_fn((r.run.history.len(), 2), |(i, j)| if j == 0 { r.run.history[i].0 } else { r.run.history[i].1 });
        h5::f64_2d(&g, path, "history", &h)?;
        h5::attr_f64(&g, path, "w", r.run.summary.w)?;
    }
    Ok(())
}

/// What `near` and `decode` need from a results file (the picked W's run).
pub struct MapResults {
    pub ids: Vec<String>,
    pub formulas: Vec<String>,
    pub families: Vec<String>,
    pub has_structure: Vec<bool>,
    pub roles: Vec<u8>,
    pub target: Vec<f64>,
    pub codes: Array2<f64>,
    pub predicted: Vec<f64>,
    pub target_units: String,
    pub w: f64,
}

pub fn read(path: &Path, w: Option<f64>) -> Result<MapResults, MapError> {
    let f = h5::open(path)?;
    let kind = h5::read_attr_str(&f, path, "kind").unwrap_or_default();
    if kind != KIND {
        return Err(MapError::Format { path: path.to_path_buf(), why: format!("not a map results file (kind '{kind}')") });
    }
    let picked = f.attr("picked_w").and_then(|a| a.read_scalar::<f64>()).map_err(h5::err(path, "picked_w"))?;
    let w = w.unwrap_or(picked);
    let name = format!("runs/{}", grid_name(w));
    let g = f.group(&name).map_err(|_| MapError::Format { path: path.to_path_buf(), why: format!("no run for W = {w}") })?;
    Ok(MapResults {
        ids: h5::read_strings(&f, path, "ids")?,
        formulas: h5::read_strings(&f, path, "formulas")?,
        families: h5::read_strings(&f, path, "families")?,
        has_structure: h5::read_u8_1d(&f, path, "has_structure")?.into_iter().map(|v| v != 0).collect(),
        roles: h5::read_u8_1d(&f, path, "roles")?,
        target: h5::read_f64_1d(&f, path, "target")?,
        codes: h5::read_f64_2d(&g, path, "codes")?,
        predicted: h5::read_f64_1d(&g, path, "predicted")?,
        target_units: h5::read_attr_str(&f, path, "target_units").unwrap_or_default(),
        w,
    })
}
