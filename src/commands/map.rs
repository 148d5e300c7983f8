//! `beamwatch map …`: featurise a compound table, train the W sweep, evaluate on OBELiX, decode a
//! point of the plane, list compounds near a point, time the hot paths.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array2, Axis};

use crate::Error;
use crate::progress;
use crate::secondary::map::dataset::{self, Censored, Dataset, FeaturizeReport};
use crate::secondary::map::plots::{self, Diagnostics, MapPlot, MapPoint, TradeoffRow};
use crate::secondary::map::results::{self, ModelFile, RidgeSummary, RunGrid};
use crate::secondary::map::structure::StructureSettings;
use crate::secondary::map::train::{self, Role, RunOutput, RunSummary, TrainConfig};
use crate::secondary::map::{MapError, elements, h5, histograms, model, ridge};

pub const MODEL_WEIGHTS: &str = "model.safetensors";
pub const MODEL_JSON: &str = "model.json";
pub const RESULTS: &str = "results.h5";

pub struct FeaturizeOptions {
    pub table: PathBuf,
    pub cifs: Option<PathBuf>,
    pub train_ids: Option<PathBuf>,
    pub test_ids: Option<PathBuf>,
    pub censored: Censored,
    pub out: PathBuf,
}

pub fn featurize(o: &FeaturizeOptions) -> Result<FeaturizeReport, Error> {
    let rows = dataset::read_table(&o.table, o.censored).map(|t| t.rows.len() as u64).unwrap_or(0);
    let bar = progress::items_bar(rows, "featurizing");
    let input = dataset::FeaturizeInput {
        table: &o.table,
        cifs: o.cifs.as_deref(),
        train_ids: o.train_ids.as_deref(),
        test_ids: o.test_ids.as_deref(),
        censored: o.censored,
        settings: StructureSettings::default(),
    };
    let (ds, report) = dataset::featurize(&input, &|| bar.inc(1))?;
    bar.finish_and_clear();
    dataset::write(&ds, &o.out)?;
    Ok(report)
}

/// A training run's outcome, for printing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub dataset: String,
    pub out: String,
    pub rows: usize,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub test_with_structure: usize,
    pub parameters: usize,
    pub runs: Vec<RunSummary>,
    pub ridge: RidgeSummary,
    pub picked_w: f64,
    pub wall_s: f64,
    pub files: Vec<String>,
    pub markdown: String,
}

pub struct TrainOptions {
    pub dataset: PathBuf,
    pub out: PathBuf,
    pub config: TrainConfig,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error {
    let p = path.to_path_buf();
    move |source| Error::from(MapError::Io { path: p.clone(), source })
}

pub fn train(o: &TrainOptions) -> Result<TrainReport, Error> {
    let ds = dataset::read(&o.dataset)?;
    train_dataset(&ds, &o.dataset.display().to_string(), &o.out, &o.config)
}

/// Trains the W sweep on `ds`, fits the ridge baseline, writes every output into `out`.
pub fn train_dataset(ds: &Dataset, dataset_name: &str, out: &Path, cfg: &TrainConfig) -> Result<TrainReport, Error> {
    let t0 = Instant::now();
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    if cfg.w_values.is_empty() {
        return Err(Error::Usage("the W sweep needs at least one W".into()));
    }
    let pick = cfg.w_values.iter().copied().find(|w| (w - cfg.pick_w).abs() < 1e-12).unwrap_or(cfg.w_values[cfg.w_values.len() / 2]);
    let prep = train::prepare(ds, cfg)?;
    let mut runs: Vec<RunOutput> = Vec::new();
    let mut grids = Vec::new();
    for &w in &cfg.w_values {
        let bar = progress::items_bar(cfg.max_epochs as u64, &format!("training W={w}"));
        let run = train::train_one(&prep, cfg, w, &mut |ep, msg| {
            bar.set_position(ep as u64);
            bar.set_message(msg.to_string());
            // Logs (no terminal, no bar) still show the run moving.
            if ep % 100 == 0 {
                tracing::debug!("epoch {ep}: {msg}");
            }
        })?;
        bar.finish_and_clear();
        let s = &run.summary;
        tracing::info!(
            "W = {w}: {} epochs (best {}), {:.1} s; test R² composition {:.3}, structure {:.3}, target {:.3}",
            s.epochs,
            s.best_epoch,
            s.wall_s,
            s.test.r2_comp,
            s.test.r2_struct,
            s.test.r2_target
        );
        grids.push(train::target_grid(&run.model, &prep.scaling, &run.codes, cfg.grid)?);
        runs.push(run);
    }
    let ridge_summary = ridge_baseline(ds, &prep, cfg.seed)?;
    let roles: Vec<u8> = prep.roles.iter().map(|r| *r as u8).collect();
    let mut files = Vec::new();
    let res_path = out.join(RESULTS);
    let rg: Vec<RunGrid<'_>> = runs.iter().zip(&grids).map(|(run, (xs, ys, g))| RunGrid { run, xs, ys, grid: g }).collect();
    results::write(&res_path, ds, dataset_name, &roles, &rg, pick, &ridge_summary)?;
    files.push(res_path.display().to_string());

    // The picked model: weights and everything needed to use them.
    let k = cfg.w_values.iter().position(|w| *w == pick).unwrap_or(0);
    let picked = &runs[k];
    let weights = out.join(MODEL_WEIGHTS);
    picked.model.save(&weights)?;
    let mf = ModelFile {
        model: picked.model.config.clone(),
        scaling: prep.scaling.clone(),
        w: pick,
        train: cfg.clone(),
        structure_settings: ds.structure_settings,
        target_name: ds.target_name.clone(),
        target_units: ds.target_units.clone(),
        dataset: dataset_name.to_string(),
        best_epoch: picked.summary.best_epoch,
    };
    let json = out.join(MODEL_JSON);
    std::fs::write(&json, serde_json::to_string_pretty(&mf).unwrap_or_default()).map_err(io_err(&json))?;
    files.push(weights.display().to_string());
    files.push(json.display().to_string());

    // Pictures.
    let label = target_label(ds);
    for (run, (xs, ys, g)) in runs.iter().zip(&grids) {
        let points: Vec<MapPoint<'_>> = (0..ds.len())
            .filter(|&i| prep.roles[i] != Role::Unused)
            .map(|i| MapPoint { x_comp: run.codes[[i, 0]], x_struct: run.codes[[i, 1]], target: ds.target[i], family: &ds.families[i], test: prep.roles[i] == Role::Test })
            .collect();
        let n_s = points.iter().filter(|p| p.x_struct.is_finite()).count();
        let plot = MapPlot {
            title: format!("Materials map, W = {}: background = predicted {label}, points = measured", run.summary.w),
            subtitle: format!(
                "{} compounds with a structure on the plane, {} without a CIF on the strip below; test R² of the target {:.3} ({} test compounds with a structure)",
                n_s,
                points.len() - n_s,
                run.summary.test.r2_target,
                run.summary.test.n_with_structure
            ),
            points: &points,
            grid_x: xs,
            grid_y: ys,
            grid: g,
            target_label: label.clone(),
        };
        let name = if run.summary.w == pick { "map.png".to_string() } else { format!("map_W_{}.png", run.summary.w) };
        let p = out.join(&name);
        plots::render_map(&plot)?.save_png(&p)?;
        files.push(p.display().to_string());
    }
    let rows: Vec<TradeoffRow> = runs.iter().map(|r| TradeoffRow { w: r.summary.w, r2_comp: r.summary.test.r2_comp, r2_struct: r.summary.test.r2_struct, r2_target: r.summary.test.r2_target }).collect();
    let p = out.join("tradeoff.png");
    plots::render_tradeoff(&rows, Some(ridge_summary.r2_test_comp_struct), "Trade-off over W (test set): reconstruction vs target prediction").and_then(|c| c.save_png(&p))?;
    files.push(p.display().to_string());
    let p = out.join("diagnostics.png");
    diagnostics_png(&prep, picked, &p, &label)?;
    files.push(p.display().to_string());

    let test_rows = prep.rows(Role::Test);
    let mut report = TrainReport {
        dataset: dataset_name.to_string(),
        out: out.display().to_string(),
        rows: ds.len(),
        train: prep.rows(Role::Train).len(),
        val: prep.rows(Role::Val).len(),
        test: test_rows.len(),
        test_with_structure: test_rows.iter().filter(|&&i| ds.has_structure[i]).count(),
        parameters: picked.model.parameter_count(),
        runs: runs.iter().map(|r| r.summary.clone()).collect(),
        ridge: ridge_summary,
        picked_w: pick,
        wall_s: 0.0,
        files: Vec::new(),
        markdown: String::new(),
    };
    report.wall_s = t0.elapsed().as_secs_f64();
    report.markdown = markdown(&report);
    let csv = out.join("tradeoff.csv");
    std::fs::write(&csv, tradeoff_csv(&report)).map_err(io_err(&csv))?;
    let md = out.join("tradeoff.md");
    std::fs::write(&md, &report.markdown).map_err(io_err(&md))?;
    files.push(csv.display().to_string());
    files.push(md.display().to_string());
    report.files = files;
    let summary = out.join("summary.json");
    std::fs::write(&summary, serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(io_err(&summary))?;
    report.files.push(summary.display().to_string());
    Ok(report)
}

fn target_label(ds: &Dataset) -> String {
    if ds.target_units == "log10(S/cm)" { "log10 σ (S/cm)".to_string() } else { format!("{} ({})", ds.target_name, ds.target_units) }
}

fn diagnostics_png(prep: &train::Prepared, run: &RunOutput, path: &Path, label: &str) -> Result<(), Error> {
    let test = prep.rows(Role::Test);
    let (dc, dsd) = (prep.comp_dim, prep.struct_dim);
    let mut ci = Vec::new();
    let mut co = Vec::new();
    let mut si = Vec::new();
    let mut so = Vec::new();
    let mut ti = Vec::new();
    let mut to = Vec::new();
    for &r in &test {
        ci.extend(prep.comp[r * dc..(r + 1) * dc].iter().map(|&v| v as f64));
        co.extend(run.decoded_comp[r * dc..(r + 1) * dc].iter().map(|&v| v as f64));
        if prep.mask[r] > 0.0 {
            si.extend(prep.structure[r * dsd..(r + 1) * dsd].iter().map(|&v| v as f64));
            so.extend(run.decoded_struct[r * dsd..(r + 1) * dsd].iter().map(|&v| v as f64));
            ti.push(prep.scaling.unscale_target(prep.target[r] as f64));
            to.push(run.predicted[r]);
        }
    }
    let t = &run.summary.test;
    let d = Diagnostics {
        title: format!("Test set at W = {}: decoded vs input descriptors, predicted vs measured {label}", run.summary.w),
        comp: (&ci, &co),
        structure: (&si, &so),
        target: (&ti, &to),
        r2: (t.r2_comp, t.r2_struct, t.r2_target),
        target_label: label.to_string(),
    };
    plots::render_diagnostics(&d)?.save_png(path)?;
    Ok(())
}

/// Ridge on the same scaled descriptors: composition + structure on the rows with a structure (the
/// rows the map's target head is scored on), composition only on the same rows and on all rows.
fn ridge_baseline(ds: &Dataset, prep: &train::Prepared, seed: u64) -> Result<RidgeSummary, Error> {
    let t0 = Instant::now();
    let fit_rows: Vec<usize> = (0..ds.len()).filter(|&i| matches!(prep.roles[i], Role::Train | Role::Val)).collect();
    let test_rows = prep.rows(Role::Test);
    let with_s = |rows: &[usize]| rows.iter().copied().filter(|&i| ds.has_structure[i]).collect::<Vec<_>>();
    let (fs, ts) = (with_s(&fit_rows), with_s(&test_rows));
    let features = |rows: &[usize], with_structure: bool| {
        let w = prep.comp_dim + if with_structure { prep.struct_dim } else { 0 };
        Array2::from_shape_fn((rows.len(), w), |(r, c)| {
            let i = rows[r];
            if c < prep.comp_dim { prep.comp[i * prep.comp_dim + c] as f64 } else { prep.structure[i * prep.struct_dim + c - prep.comp_dim] as f64 }
        })
    };
    let y = |rows: &[usize]| rows.iter().map(|&i| ds.target[i]).collect::<Vec<f64>>();
    let lambdas = ridge::default_lambdas();
    let score = |fit: &[usize], test: &[usize], with_structure: bool| -> Result<(f64, f64), Error> {
        if fit.len() < 10 || test.len() < 2 {
            return Ok((f64::NAN, f64::NAN));
        }
        let m = ridge::fit_cv(&features(fit, with_structure), &y(fit), &lambdas, 5, seed)?;
        Ok((train::r2(&m.predict(&features(test, with_structure)), &y(test)), m.lambda))
    };
    let (r_cs, l_cs) = score(&fs, &ts, true)?;
    let (r_c, l_c) = score(&fs, &ts, false)?;
    let (r_all, l_all) = score(&fit_rows, &test_rows, false)?;
    Ok(RidgeSummary {
        r2_test_comp_struct: r_cs,
        lambda_comp_struct: l_cs,
        r2_test_comp_only: r_c,
        lambda_comp_only: l_c,
        r2_test_comp_only_all_rows: r_all,
        lambda_comp_only_all_rows: l_all,
        n_train_structure: fs.len(),
        n_test_structure: ts.len(),
        n_train_all: fit_rows.len(),
        n_test_all: test_rows.len(),
        fit_s: t0.elapsed().as_secs_f64(),
    })
}

fn tradeoff_csv(r: &TrainReport) -> String {
    let mut s = String::from("w,epochs,best_epoch,wall_s,r2_comp_test,r2_struct_test,r2_target_test,rmse_target_test,loss_comp_test,loss_struct_test,loss_target_test\n");
    for x in &r.runs {
        let t = &x.test;
        let _ = writeln!(
            s,
            "{},{},{},{:.2},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.5}",
            x.w, x.epochs, x.best_epoch, x.wall_s, t.r2_comp, t.r2_struct, t.r2_target, t.rmse_target, t.loss_comp, t.loss_struct, t.loss_target
        );
    }
    s
}

pub fn markdown(r: &TrainReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Materials map: W sweep on {}\n", r.dataset);
    let _ = writeln!(
        s,
        "{} compounds: {} train, {} validation (early stopping), {} test ({} with a structure). {} parameters per model.\n",
        r.rows, r.train, r.val, r.test, r.test_with_structure, r.parameters
    );
    let _ = writeln!(s, "Test set. Reconstruction R² over all descriptor values flattened (scaled units); target R² on log10 σ, test compounds with a structure.\n");
    let _ = writeln!(s, "| W | epochs (best) | R² composition | R² structure | R² target | RMSE target (log10 S/cm) | train time (s) |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for x in &r.runs {
        let t = &x.test;
        let note = if x.w == 0.0 { " ¹" } else { "" };
        let _ = writeln!(
            s,
            "| {}{} | {} ({}) | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |",
            x.w, note, x.epochs, x.best_epoch, t.r2_comp, t.r2_struct, t.r2_target, t.rmse_target, x.wall_s
        );
    }
    let rd = &r.ridge;
    let _ = writeln!(s, "\n¹ At W = 0 the target head receives no gradient: its R² is that of an untrained head.\n");
    let _ = writeln!(s, "Baseline: ridge regression (λ by 5-fold CV on the training rows) on the same scaled descriptors:\n");
    let _ = writeln!(s, "| features | rows (train / test) | λ | test R² |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(s, "| composition + structure | {} / {} (with a structure) | {:.3e} | {:.3} |", rd.n_train_structure, rd.n_test_structure, rd.lambda_comp_struct, rd.r2_test_comp_struct);
    let _ = writeln!(s, "| composition only | {} / {} (with a structure) | {:.3e} | {:.3} |", rd.n_train_structure, rd.n_test_structure, rd.lambda_comp_only, rd.r2_test_comp_only);
    let _ = writeln!(s, "| composition only | {} / {} (all) | {:.3e} | {:.3} |", rd.n_train_all, rd.n_test_all, rd.lambda_comp_only_all_rows, rd.r2_test_comp_only_all_rows);
    let _ = writeln!(s, "\nPicked W = {} (saved model, map.png). Wall time {:.1} s.", r.picked_w, r.wall_s);
    s
}

/// The one command behind the "Must show": featurise OBELiX with its official split, train
/// the sweep, fit the baseline.
pub struct EvaluateOptions {
    pub obelix: PathBuf,
    pub out: PathBuf,
    pub config: TrainConfig,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvaluateReport {
    pub featurize: FeaturizeReport,
    pub train: TrainReport,
    pub wall_s: f64,
}

pub fn evaluate(o: &EvaluateOptions) -> Result<EvaluateReport, Error> {
    let t0 = Instant::now();
    let d = &o.obelix;
    let dataset_path = o.out.join("dataset.h5");
    std::fs::create_dir_all(&o.out).map_err(io_err(&o.out))?;
    let f = featurize(&FeaturizeOptions {
        table: d.join("all.csv"),
        cifs: Some(d.join("all_cifs.tar.gz")),
        train_ids: Some(d.join("train.csv")),
        test_ids: Some(d.join("test.csv")),
        censored: Censored::Bound,
        out: dataset_path.clone(),
    })?;
    let ds = dataset::read(&dataset_path)?;
    let t = train_dataset(&ds, &dataset_path.display().to_string(), &o.out, &o.config)?;
    let r = EvaluateReport { featurize: f, train: t, wall_s: t0.elapsed().as_secs_f64() };
    let mut md = r.train.markdown.clone();
    let fr = &r.featurize;
    let _ = writeln!(
        md,
        "\nFeaturisation: {} compounds ({} with a CIF, {} censored at their bound) in {:.1} s; composition {:.2} ms per compound, structure {:.1} ms per CIF (CPU time per item). Families by our rules agree with OBELiX's label for {}.\n\nTotal wall time {:.1} s.",
        fr.compounds,
        fr.with_structure,
        fr.censored,
        fr.wall_s,
        fr.composition_ms_per_compound,
        fr.structure_ms_per_cif,
        fr.family_agreement.map_or("-".into(), |(a, n)| format!("{a} of {n}")),
        r.wall_s
    );
    let p = o.out.join("report.md");
    std::fs::write(&p, md).map_err(io_err(&p))?;
    Ok(r)
}

/// A saved model with its scaling and the results of its run.
pub struct Loaded {
    pub file: ModelFile,
    pub model: model::MapModel,
    pub results: results::MapResults,
}

pub fn load(dir: &Path) -> Result<Loaded, Error> {
    let json = dir.join(MODEL_JSON);
    let text = std::fs::read_to_string(&json).map_err(io_err(&json))?;
    let file: ModelFile = serde_json::from_str(&text).map_err(|e| MapError::Format { path: json.clone(), why: e.to_string() })?;
    let model = model::MapModel::load(&file.model, &dir.join(MODEL_WEIGHTS))?;
    let results = results::read(&dir.join(RESULTS), Some(file.w))?;
    Ok(Loaded { file, model, results })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NearRow {
    pub id: String,
    pub formula: String,
    pub family: String,
    pub x_comp: f64,
    pub x_struct: f64,
    pub distance: f64,
    pub measured: f64,
    pub predicted: f64,
    pub role: String,
}

pub fn near_rows(l: &Loaded, x: f64, y: f64, k: usize) -> Vec<NearRow> {
    let r = &l.results;
    let mut idx: Vec<(usize, f64)> = (0..r.ids.len())
        .filter(|&i| r.codes[[i, 1]].is_finite() && r.roles[i] != Role::Unused as u8)
        .map(|i| (i, ((r.codes[[i, 0]] - x).powi(2) + (r.codes[[i, 1]] - y).powi(2)).sqrt()))
        .collect();
    idx.sort_by(|a, b| a.1.total_cmp(&b.1));
    idx.into_iter()
        .take(k)
        .map(|(i, d)| NearRow {
            id: r.ids[i].clone(),
            formula: r.formulas[i].clone(),
            family: r.families[i].clone(),
            x_comp: r.codes[[i, 0]],
            x_struct: r.codes[[i, 1]],
            distance: d,
            measured: r.target[i],
            predicted: r.predicted[i],
            role: ["train", "validation", "test", "unused"][r.roles[i].min(3) as usize].to_string(),
        })
        .collect()
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NearReport {
    pub x_comp: f64,
    pub x_struct: f64,
    pub predicted_here: f64,
    pub target_units: String,
    pub rows: Vec<NearRow>,
    /// Compounds without a structure are not on the plane and not ranked.
    pub without_structure: usize,
}

pub fn near(dir: &Path, x: f64, y: f64, k: usize) -> Result<NearReport, Error> {
    let l = load(dir)?;
    let (_, _, here) = train::decode_point(&l.model, &l.file.scaling, x, y)?;
    Ok(NearReport {
        x_comp: x,
        x_struct: y,
        predicted_here: here,
        target_units: l.results.target_units.clone(),
        rows: near_rows(&l, x, y, k),
        without_structure: l.results.has_structure.iter().filter(|h| !**h).count(),
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeReport {
    pub x_comp: f64,
    pub x_struct: f64,
    pub predicted_target: f64,
    pub target_units: String,
    /// Elements read off the decoded atomic-number histogram (AN bins are one element wide and
    /// not smoothed): (symbol, fraction), largest first, fractions ≥ 0.01.
    pub elements: Vec<(String, f64)>,
    /// Σ of the decoded AN histogram (1 for a real compound).
    pub an_histogram_sum: f64,
    /// First peak (Å, searched from 1 Å on) of each decoded RDF (None when the block is flat).
    pub rdf_first_peak_a: Vec<(String, Option<f64>)>,
    pub nearest: Vec<NearRow>,
    pub files: Vec<String>,
}

pub struct DecodeOptions {
    pub model_dir: PathBuf,
    pub x_comp: f64,
    pub x_struct: f64,
    pub out: Option<PathBuf>,
    pub csv: Option<PathBuf>,
}

pub fn decode(o: &DecodeOptions) -> Result<DecodeReport, Error> {
    let l = load(&o.model_dir)?;
    let (comp, st, pred) = train::decode_point(&l.model, &l.file.scaling, o.x_comp, o.x_struct)?;
    let t = elements::ElementTable::get();
    let an = &comp[histograms::property_offset(0)..histograms::property_offset(0) + t.settings[0].bins];
    let mut els: Vec<(String, f64)> = an.iter().enumerate().filter(|(_, v)| **v >= 0.01).map(|(i, &v)| (t.symbol(i + 1).to_string(), v)).collect();
    els.sort_by(|a, b| b.1.total_cmp(&a.1));
    let s = &l.file.structure_settings;
    let dr = s.rdf_cutoff_a / s.rdf_bins as f64;
    let peaks = s
        .blocks()
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("RDF"))
        .map(|(name, start, len)| {
            let b = &st[start..start + len];
            let m = b.iter().copied().fold(0.0, f64::max);
            // Below 1 Å a decoded density is decoder noise over a tiny shell volume, not a bond.
            let from = ((1.0 / dr) as usize).max(1);
            let first = (from..len - 1).find(|&i| b[i] > 0.1 * m && b[i] >= b[i - 1] && b[i] >= b[i + 1]).map(|i| (i as f64 + 0.5) * dr);
            (name, if m > 0.0 { first } else { None })
        })
        .collect();
    let mut files = Vec::new();
    let comp_labels = histograms::labels();
    let struct_labels = s.labels();
    if let Some(p) = &o.out {
        let f = h5::create(p)?;
        h5::attr_str(&f, p, "kind", "beamwatch-map-decoded")?;
        h5::attr_f64(&f, p, "x_comp", o.x_comp)?;
        h5::attr_f64(&f, p, "x_struct", o.x_struct)?;
        h5::attr_f64(&f, p, "predicted_target", pred)?;
        h5::attr_str(&f, p, "target_units", &l.file.target_units)?;
        h5::f64_1d(&f, p, "composition", &comp)?;
        h5::f64_1d(&f, p, "structure", &st)?;
        h5::strings(&f, p, "composition_labels", &comp_labels)?;
        h5::strings(&f, p, "structure_labels", &struct_labels)?;
        files.push(p.display().to_string());
    }
    if let Some(p) = &o.csv {
        let mut text = String::from("block,label,value\n");
        for (lab, v) in comp_labels.iter().zip(&comp) {
            let _ = writeln!(text, "composition,{lab},{v:.6e}");
        }
        for (lab, v) in struct_labels.iter().zip(&st) {
            let _ = writeln!(text, "structure,{lab},{v:.6e}");
        }
        std::fs::write(p, text).map_err(io_err(p))?;
        files.push(p.display().to_string());
    }
    Ok(DecodeReport {
        x_comp: o.x_comp,
        x_struct: o.x_struct,
        predicted_target: pred,
        target_units: l.file.target_units.clone(),
        an_histogram_sum: an.iter().sum(),
        elements: els,
        rdf_first_peak_a: peaks,
        nearest: near_rows(&l, o.x_comp, o.x_struct, 3),
        files,
    })
}

/// Timings of the hot paths, one JSON object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub composition_descriptor_us: f64,
    pub structure_descriptor_ms: f64,
    pub structure_atoms: usize,
    pub train_epoch_ms: f64,
    pub train_rows: usize,
    pub parameters: usize,
    pub inference_us_per_compound: f64,
    pub threads: usize,
}

pub fn bench(cif_path: Option<&Path>) -> Result<BenchReport, Error> {
    use crate::secondary::map::{cif, formula, structure};
    let c = formula::parse("Li6.4La3Zr1.4Ta0.6O12").map_err(|e| Error::Usage(e.to_string()))?;
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(histograms::descriptor(&c));
    }
    let comp_us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    let cell = match cif_path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(io_err(p))?;
            cif::parse(&text, &p.display().to_string()).map_err(|error| MapError::Cif { context: String::new(), error })?
        }
        None => synthetic_cell(),
    };
    let s = StructureSettings::default();
    let t = Instant::now();
    std::hint::black_box(structure::descriptor(&cell, &s));
    let struct_ms = t.elapsed().as_secs_f64() * 1e3;
    // Training epochs on random data of the real widths.
    let n = 400;
    let ds = synthetic_dataset(n, s);
    let cfg = TrainConfig { max_epochs: 3, patience: 100, w_values: vec![0.1], ..TrainConfig::default() };
    let prep = train::prepare(&ds, &cfg)?;
    let run = train::train_one(&prep, &cfg, 0.1, &mut |_, _| {})?;
    let t = Instant::now();
    std::hint::black_box(train::infer(&run.model, &prep)?);
    let inf_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    Ok(BenchReport {
        composition_descriptor_us: comp_us,
        structure_descriptor_ms: struct_ms,
        structure_atoms: cell.atoms.len(),
        train_epoch_ms: run.summary.ms_per_epoch,
        train_rows: prep.rows(Role::Train).len(),
        parameters: run.model.parameter_count(),
        inference_us_per_compound: inf_us,
        threads: rayon::current_num_threads(),
    })
}

/// A garnet-sized cubic cell (12.9 Å, 192 atoms on a jittered grid) for timing.
fn synthetic_cell() -> crate::secondary::map::cif::UnitCell {
    use crate::secondary::map::cif::{Atom, SymOp, UnitCell, lattice};
    let a = 12.9;
    let lat = lattice([a, a, a], [90.0, 90.0, 90.0]).unwrap_or([[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]]);
    let species = [3usize, 3, 8, 8, 8, 57, 40, 8];
    let mut atoms = Vec::new();
    let m = 6;
    let mut k = 0usize;
    for i in 0..m {
        for j in 0..m {
            for l in 0..m {
                if (i + j + l) % 9 > 7 {
                    continue;
                }
                let jit = ((k * 7919) % 97) as f64 / 97.0 * 0.02;
                atoms.push(Atom { z: species[k % species.len()], frac: [(i as f64 + 0.5 + jit) / m as f64, (j as f64 + 0.5) / m as f64, (l as f64 + 0.5 - jit) / m as f64], occupancy: if k.is_multiple_of(5) { 0.5 } else { 1.0 }, site: format!("s{k}") });
                k += 1;
            }
        }
    }
    UnitCell {
        lengths_a: [a; 3],
        angles_deg: [90.0; 3],
        lattice_a: lat,
        space_group: Some("P 1".into()),
        ops: vec![SymOp { rot: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], trans: [0.0; 3] }],
        atoms,
        multiplicity_mismatches: Vec::new(),
    }
}

fn synthetic_dataset(n: usize, s: StructureSettings) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let comp = Array2::from_shape_fn((n, histograms::DIM), |_| if rng.random::<f32>() < 0.1 { rng.random::<f32>() } else { 0.0 });
    let st = Array2::from_shape_fn((n, s.dim()), |_| rng.random::<f32>());
    let target: Vec<f64> = comp.sum_axis(Axis(1)).iter().map(|&v| v as f64).collect();
    Dataset {
        ids: (0..n).map(|i| format!("s{i}")).collect(),
        formulas: vec!["Li".into(); n],
        families: vec!["other".into(); n],
        family_labels: vec![String::new(); n],
        space_groups: vec![String::new(); n],
        cif_files: vec![String::new(); n],
        target,
        target_name: "synthetic".into(),
        target_units: "a.u.".into(),
        censored: vec![false; n],
        has_structure: vec![true; n],
        split: vec![dataset::Split::Train; n],
        composition: comp,
        structure: st,
        structure_settings: s,
        source: "bench".into(),
    }
}
