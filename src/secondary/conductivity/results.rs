//! The evaluation's HDF5 output (`results.h5`):
//! - `/` attributes `format` = [`FORMAT`], `dataset`, `protocol`, `settings` (JSON).
//! - `/samples/{sample_id, measured_log10_s_per_cm, test_fold}`; `/images/{sample_index, test_fold}`.
//! - `/models/<arch>/{image_prediction_log10_s_per_cm, sample_prediction_log10_s_per_cm}` with
//!   attributes `r2`, `rmse_log10`, `image_r2`, `image_rmse_log10`, `seconds`, `label`.
//! - `/members/<arch>/{outer_fold, member, best_epoch, best_val_mse}` (one row per trained member),
//!   `train_mse` and `val_mse` (members × epochs, (log10 S/cm)², NaN after early stopping) and `seen`
//!   (members × items, 1 = the item was in a training batch; items are images, samples for
//!   descriptors-only) — the record the no-leakage check reads.
//! - `/interpretation/channel_correlation` (64) and the defect-overlap attributes, when computed.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2};

use super::dataset::{Dataset, str_attr};
use super::interpret::DefectOverlap;
use super::protocol::Evaluation;
use super::{ConductivityError, Result, h5err};

pub const FORMAT: &str = "beamwatch-conductivity-results/1";

pub struct Interpretation<'a> {
    pub arch: &'a str,
    pub channel_correlation: &'a [f64],
    pub overlap: Option<DefectOverlap>,
}

fn f64_attr(loc: &hdf5::Location, name: &str, v: f64) -> hdf5::Result<()> {
    loc.new_attr::<f64>().create(name)?.write_scalar(&v)
}

pub fn write(
    path: &Path,
    ds: &Dataset,
    dataset_path: &Path,
    targets: &[f64],
    ev: &Evaluation,
    interp: Option<&Interpretation<'_>>,
) -> Result<PathBuf> {
    let f = hdf5::File::create(path).map_err(h5err(path, "create"))?;
    str_attr(&f, "format", FORMAT).map_err(h5err(path, "format"))?;
    str_attr(&f, "dataset", &dataset_path.display().to_string()).map_err(h5err(path, "dataset"))?;
    str_attr(&f, "protocol", &ev.settings.protocol.describe()).map_err(h5err(path, "protocol"))?;
    let settings = serde_json::to_string(&ev.settings).map_err(|e| ConductivityError::file(path, e.to_string()))?;
    str_attr(&f, "settings", &settings).map_err(h5err(path, "settings"))?;

    let g = f.create_group("samples").map_err(h5err(path, "/samples"))?;
    let ids: Array1<VarLenUnicode> = ds.samples.iter().map(|s| s.id.parse().unwrap_or_default()).collect();
    g.new_dataset_builder().with_data(&ids).create("sample_id").map_err(h5err(path, "/samples/sample_id"))?;
    g.new_dataset_builder()
        .with_data(&Array1::from(targets.to_vec()))
        .create("measured_log10_s_per_cm")
        .map_err(h5err(path, "/samples/measured_log10_s_per_cm"))?;
    let folds: Array1<u64> = ev.sample_test_fold.iter().map(|&k| k as u64).collect();
    g.new_dataset_builder().with_data(&folds).create("test_fold").map_err(h5err(path, "/samples/test_fold"))?;

    let ig = f.create_group("images").map_err(h5err(path, "/images"))?;
    let owner: Array1<u64> = ds.images.iter().map(|im| im.sample as u64).collect();
    ig.new_dataset_builder().with_data(&owner).create("sample_index").map_err(h5err(path, "/images/sample_index"))?;
    let ifold: Array1<u64> = ds.images.iter().map(|im| ev.sample_test_fold[im.sample] as u64).collect();
    ig.new_dataset_builder().with_data(&ifold).create("test_fold").map_err(h5err(path, "/images/test_fold"))?;

    let mg = f.create_group("models").map_err(h5err(path, "/models"))?;
    let rg = f.create_group("members").map_err(h5err(path, "/members"))?;
    for r in &ev.results {
        let name = r.arch.name();
        let a = mg.create_group(name).map_err(h5err(path, format!("/models/{name}")))?;
        a.new_dataset_builder()
            .with_data(&Array1::from(r.image_prediction.clone()))
            .create("image_prediction_log10_s_per_cm")
            .map_err(h5err(path, format!("/models/{name}/image_prediction_log10_s_per_cm")))?;
        a.new_dataset_builder()
            .with_data(&Array1::from(r.sample_prediction.clone()))
            .create("sample_prediction_log10_s_per_cm")
            .map_err(h5err(path, format!("/models/{name}/sample_prediction_log10_s_per_cm")))?;
        let m = &r.metrics;
        for (k, v) in [
            ("r2", m.r2),
            ("rmse_log10", m.rmse_log10),
            ("image_r2", m.image_r2),
            ("image_rmse_log10", m.image_rmse_log10),
            ("seconds", r.seconds),
        ] {
            f64_attr(&a, k, v).map_err(h5err(path, format!("/models/{name} {k}")))?;
        }
        str_attr(&a, "label", r.arch.label()).map_err(h5err(path, format!("/models/{name} label")))?;

        let recs: Vec<_> = ev.members.iter().filter(|m| m.arch == r.arch).collect();
        let b = rg.create_group(name).map_err(h5err(path, format!("/members/{name}")))?;
        let col_u = |n: &str, v: Vec<u64>| -> Result<()> {
            b.new_dataset_builder().with_data(&Array1::from(v)).create(n).map_err(h5err(path, format!("/members/{name}/{n}")))?;
            Ok(())
        };
        col_u("outer_fold", recs.iter().map(|m| m.outer as u64).collect())?;
        col_u("member", recs.iter().map(|m| m.member as u64).collect())?;
        col_u("best_epoch", recs.iter().map(|m| m.best_epoch as u64).collect())?;
        b.new_dataset_builder()
            .with_data(&Array1::from(recs.iter().map(|m| m.best_val_mse).collect::<Vec<_>>()))
            .create("best_val_mse")
            .map_err(h5err(path, format!("/members/{name}/best_val_mse")))?;
        let n_items = if r.arch.uses_images() { ds.images.len() } else { ds.samples.len() };
        let mut seen = Array2::<u8>::zeros((recs.len(), n_items));
        for (k, m) in recs.iter().enumerate() {
            for &i in &m.seen {
                seen[[k, i]] = 1;
            }
        }
        b.new_dataset_builder().deflate(1).with_data(&seen).create("seen").map_err(h5err(path, format!("/members/{name}/seen")))?;
        // Learning curves, members × epochs, NaN after a member stopped.
        let n_epochs = recs.iter().map(|m| m.epochs.len()).max().unwrap_or(0).max(1);
        for (dname, get) in [("train_mse", 0usize), ("val_mse", 1)] {
            let mut a = Array2::<f64>::from_elem((recs.len(), n_epochs), f64::NAN);
            for (k, m) in recs.iter().enumerate() {
                for (e, log) in m.epochs.iter().enumerate() {
                    a[[k, e]] = if get == 0 { log.train_mse } else { log.val_mse };
                }
            }
            b.new_dataset_builder().with_data(&a).create(dname).map_err(h5err(path, format!("/members/{name}/{dname}")))?;
        }
    }
    if let Some(it) = interp {
        let g = f.create_group("interpretation").map_err(h5err(path, "/interpretation"))?;
        g.new_dataset_builder()
            .with_data(&Array1::from(it.channel_correlation.to_vec()))
            .create("channel_correlation")
            .map_err(h5err(path, "/interpretation/channel_correlation"))?;
        str_attr(&g, "model", it.arch).map_err(h5err(path, "/interpretation model"))?;
        if let Some(o) = it.overlap {
            for (k, v) in [
                ("defect_fraction", o.defect_fraction),
                ("negative_region_defects", o.negative_region_defects),
                ("positive_region_defects", o.positive_region_defects),
            ] {
                f64_attr(&g, k, v).map_err(h5err(path, format!("/interpretation {k}")))?;
            }
        }
    }
    f.flush().map_err(h5err(path, "flush"))?;
    Ok(path.to_owned())
}

/// The `seen` record of `arch` read back: one row per member, the item indices it trained on.
pub fn read_seen(path: &Path, arch: &str) -> Result<Vec<(usize, Vec<usize>)>> {
    let f = hdf5::File::open(path).map_err(h5err(path, "open"))?;
    let b = f.group(&format!("members/{arch}")).map_err(h5err(path, format!("/members/{arch}")))?;
    let outer = b.dataset("outer_fold").and_then(|d| d.read_1d::<u64>()).map_err(h5err(path, "outer_fold"))?;
    let seen = b.dataset("seen").and_then(|d| d.read_2d::<u8>()).map_err(h5err(path, "seen"))?;
    Ok(outer
        .iter()
        .enumerate()
        .map(|(k, &o)| (o as usize, seen.row(k).iter().enumerate().filter(|(_, v)| **v == 1).map(|(i, _)| i).collect()))
        .collect())
}
