//! `beamwatch conductivity …`: the SEM image → ionic-conductivity stage — import a dataset, make a
//! synthetic one, evaluate the models and fit the final one (`train`), predict new images, time the
//! hot paths (`bench`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::Error;
use crate::progress;
use crate::secondary::conductivity::config::ConductivityConfig;
use crate::secondary::conductivity::dataset::Dataset;
use crate::secondary::conductivity::features::Trunk;
use crate::secondary::conductivity::model::{self, Arch};
use crate::secondary::conductivity::protocol::{self, EvalSettings, Event};
use crate::secondary::conductivity::saved::{self, Ensemble, FitOptions, TrunkConfig};
use crate::secondary::conductivity::synth::{self, SynthFiles, SynthSpec};
use crate::secondary::conductivity::{
    ConductivityError, descriptors, import as importer, interpret, plots, results, train,
};

// ---------------------------------------------------------------------------------------------
// import

pub struct ImportOptions {
    pub images: PathBuf,
    /// `None`: the file names start with the conductivity (S/cm).
    pub table: Option<PathBuf>,
    pub out: PathBuf,
    /// Let samples without a measured conductivity through (data to predict).
    pub allow_missing_target: bool,
    /// Bottom rows to cut from every image (`None`: find the annotation band; 0: cut nothing).
    pub crop_rows: Option<usize>,
    pub skip_unmatched: bool,
}

#[derive(Debug, Serialize)]
pub struct DatasetSummary {
    pub path: PathBuf,
    pub samples: usize,
    pub images: usize,
    pub min_edge_px: usize,
    pub max_edge_px: usize,
    pub with_conductivity: usize,
    /// Range of log10 σ (S/cm) over the samples that have one.
    pub log10_range: Option<(f64, f64)>,
    /// Samples with x, y, T1 and T2 (models with descriptors need every sample to have them).
    pub with_descriptors: usize,
    /// What the import cut, left out and read from metadata (imports only).
    pub import_notes: Option<importer::ImportNotes>,
}

pub fn summarise(ds: &Dataset, path: &Path) -> DatasetSummary {
    let logs: Vec<f64> = ds.samples.iter().filter_map(|s| s.log10_conductivity()).collect();
    DatasetSummary {
        path: path.to_owned(),
        samples: ds.samples.len(),
        images: ds.images.len(),
        min_edge_px: ds.min_edge_px(),
        max_edge_px: ds.images.iter().map(|im| im.width.max(im.height)).max().unwrap_or(0),
        with_conductivity: logs.len(),
        log10_range: (!logs.is_empty()).then(|| {
            logs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)))
        }),
        with_descriptors: ds.samples.iter().filter(|s| s.has_descriptors()).count(),
        import_notes: None,
    }
}

pub fn import(opts: &ImportOptions) -> Result<DatasetSummary, Error> {
    let (ds, notes) = importer::import(&importer::ImportOptions {
        images_dir: opts.images.clone(),
        table: opts.table.clone(),
        require_target: !opts.allow_missing_target,
        crop_rows: opts.crop_rows,
        skip_unmatched: opts.skip_unmatched,
    })?;
    ds.write(&opts.out)?;
    let mut s = summarise(&ds, &opts.out);
    s.import_notes = Some(notes);
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// synth

pub fn synth(spec: &SynthSpec, out: &Path) -> Result<(SynthFiles, DatasetSummary), Error> {
    let bar = progress::items_bar(spec.samples as u64, "synthesising pellets");
    let ds = synth::generate(spec, || bar.inc(1))?;
    bar.finish_and_clear();
    let files = synth::write_files(&ds, out)?;
    let summary = summarise(&ds, &files.dataset);
    Ok((files, summary))
}

// ---------------------------------------------------------------------------------------------
// train

pub struct TrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub config: ConductivityConfig,
    /// ResNet-18 weights for the resnet18 model (default: the usual places).
    pub weights: Option<PathBuf>,
    /// CPU threads (0 = all cores).
    pub threads: usize,
}

#[derive(Debug, Serialize)]
pub struct ModelLine {
    pub model: Arch,
    pub label: String,
    pub r2: f64,
    pub rmse_log10: f64,
    pub image_r2: f64,
    pub image_rmse_log10: f64,
    pub members_trained: usize,
    pub mean_best_epoch: f64,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct TrainFiles {
    pub results_h5: PathBuf,
    pub metrics_json: PathBuf,
    pub diagnostic_png: PathBuf,
    pub correlation_png: Option<PathBuf>,
    pub overlays: Vec<PathBuf>,
    pub model_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub dataset: DatasetSummary,
    pub protocol: String,
    pub members_per_fold: usize,
    pub outer_folds: usize,
    pub crop_px: usize,
    pub models: Vec<ModelLine>,
    /// Models that were asked for and could not run, with why.
    pub skipped: Vec<(Arch, String)>,
    /// What the resnet18 model stood on.
    pub trunk: Option<String>,
    pub trunk_features_seconds: Option<f64>,
    pub final_model: Option<Arch>,
    pub final_fit_seconds: Option<f64>,
    pub interpretation: Option<interpret::DefectOverlap>,
    pub channels_positive: Option<usize>,
    pub channels_negative: Option<usize>,
    pub files: TrainFiles,
    pub wall_seconds: f64,
}

/// Training allocates and frees tensors of a few MB hundreds of times a second; glibc returns
/// each such block to the kernel (mmap/munmap) and the next one faults in zeroed pages again. Keeping
/// freed memory in the process made a training step ~25 % faster on the 2-core development machine
/// (0.30 → 0.23 s per batch of 16 crops of 64 px).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before the tensors it affects
    // are allocated and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn set_threads(threads: usize) {
    tune_allocator();
    if threads > 0
        && let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()
    {
        tracing::warn!("cannot set {threads} CPU threads ({e}); using the existing pool");
    }
}

/// The bar's message: which member, where in its training, and the loss.
fn progress_message(ev: &Event<'_>) -> Option<String> {
    let Event::Step(t, p) = ev else { return None };
    Some(format!(
        "{} fold {}/{} member {}/{} · epoch {}/{} batch {}/{} · loss {:.4}{} (log10 S/cm)²",
        t.arch,
        t.outer + 1,
        t.n_outer,
        t.member + 1,
        t.n_members,
        p.epoch,
        p.max_epochs,
        p.batches_done,
        p.batches_per_epoch,
        p.train_mse,
        p.val_mse.map_or(String::new(), |v| format!(", val {v:.4}"))
    ))
}

fn trunk_features(trunk: &Trunk, ds: &Dataset, crop: usize) -> Vec<Vec<f32>> {
    let crops: Vec<Vec<f32>> = ds.images.iter().map(|im| model::centre_crop(im, crop)).collect();
    let bar = progress::items_bar(crops.len() as u64, "ResNet-18 features");
    let mut out = Vec::with_capacity(crops.len());
    for chunk in crops.chunks(16) {
        out.extend(trunk.features(chunk, crop));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out
}

fn trunk_config(t: &Trunk) -> TrunkConfig {
    TrunkConfig {
        weights_path: t.identity.path.clone(),
        weights_sha256: t.identity.file_sha256.clone(),
        provenance: t.identity.provenance.label().into(),
        imagenet: t.is_imagenet(),
    }
}

const SYNTHETIC_TRUNK_NOTE: &str =
    "resnet18 ran on weights that are NOT torchvision ImageNet weights: a fixed-feature model, not a transfer from ImageNet";

pub fn train(opts: &TrainOptions) -> Result<TrainReport, Error> {
    let t_start = Instant::now();
    set_threads(opts.threads);
    let cfg = &opts.config;
    cfg.validate()?;
    let ds = Dataset::read(&opts.data)?;
    let targets = ds.log10_targets(&opts.data)?;
    let crop = cfg.train.crop_px;
    protocol::check_crop(&ds, crop)?;
    crate::report::ensure_dir(&opts.out)?;

    let mut archs: Vec<Arch> = Vec::new();
    for &a in &cfg.run.models {
        if !archs.contains(&a) {
            archs.push(a);
        }
    }
    // The simple baseline stands beside every image model, in the same folds.
    if archs.iter().any(|a| a.is_cnn() || *a == Arch::Resnet18) && !archs.contains(&Arch::Ridge) {
        archs.push(Arch::Ridge);
    }
    let mut final_arch = cfg.final_model()?;
    let mut skipped = Vec::new();
    let lacking = ds.samples_without_descriptors();
    if !lacking.is_empty() {
        let shown = if lacking.len() > 5 { format!("{}, …", lacking[..5].join(", ")) } else { lacking.join(", ") };
        let why = format!(
            "needs x, y, T1_c, T2_c for every sample; {} of {} samples lack them ({shown})",
            lacking.len(),
            ds.samples.len()
        );
        for a in archs.iter().copied().filter(|a| a.uses_descriptors()) {
            tracing::warn!("{a} skipped: {why}");
            skipped.push((a, why.clone()));
        }
        archs.retain(|a| !a.uses_descriptors());
        if let Some(f) = final_arch.filter(|a| a.uses_descriptors()) {
            tracing::warn!("final model {f} → baseline: {why}");
            skipped.push((f, format!("as the final model too; the final model is baseline instead ({why})")));
            final_arch = Some(Arch::Baseline);
        }
    }
    if archs.is_empty() {
        return Err(ConductivityError::Settings("no model left to evaluate (see the skipped lines above)".into()).into());
    }
    let needs_trunk = archs.contains(&Arch::Resnet18) || final_arch == Some(Arch::Resnet18);
    let trunk = if needs_trunk { Trunk::load(opts.weights.as_deref(), crop, opts.threads)? } else { None };
    if needs_trunk && trunk.is_none() {
        let why = format!(
            "no ResNet-18 weights found ({}); pass --weights FILE or run `beamwatch weights import`",
            crate::weights::store::searched_list()
        );
        tracing::warn!("resnet18 skipped: {why}");
        archs.retain(|&a| a != Arch::Resnet18);
        skipped.push((Arch::Resnet18, why));
        if final_arch == Some(Arch::Resnet18) {
            return Err(ConductivityError::Settings("final_model resnet18 needs ResNet-18 weights".into()).into());
        }
    }
    let t_feat = Instant::now();
    let features = trunk.as_ref().map(|t| trunk_features(t, &ds, crop));
    let trunk_features_seconds = trunk.as_ref().map(|_| t_feat.elapsed().as_secs_f64());

    let settings = EvalSettings {
        archs: archs.clone(),
        protocol: cfg.protocol()?,
        inner_folds: cfg.protocol.inner_folds,
        members: cfg.members(),
        seed: cfg.protocol.seed,
        train: cfg.train.clone(),
    };
    let n_outer = match settings.protocol {
        crate::secondary::conductivity::folds::Protocol::Loso => ds.samples.len(),
        crate::secondary::conductivity::folds::Protocol::Kfold { folds } => folds,
    };
    let total = (archs.len() * n_outer * settings.members + final_arch.map_or(0, |_| settings.members)) as u64;
    let bar = progress::items_bar(total, "training");
    let on_event = |ev: Event<'_>| {
        if let Some(m) = progress_message(&ev) {
            bar.set_message(m);
        }
        if let Event::MemberDone(_) = ev {
            bar.inc(1);
        }
    };
    let ev = protocol::evaluate(&ds, &targets, features.as_deref(), &settings, on_event)?;

    // The final ensemble on every sample, saved for `predict`, and the interpretation with it.
    let (mut model_dir, mut final_fit_seconds, mut interp_data) = (None, None, None);
    if let Some(arch) = final_arch {
        let t_fit = Instant::now();
        let (ens, _) = saved::fit(
            &ds,
            &targets,
            features.as_deref(),
            &FitOptions {
                arch,
                train: &cfg.train,
                inner_folds: cfg.protocol.inner_folds,
                members: settings.members,
                seed: cfg.protocol.seed,
                dataset_path: &opts.data,
                trunk: trunk.as_ref().map(trunk_config),
            },
            on_event,
        )?;
        let dir = opts.out.join("model");
        ens.save(&dir)?;
        model_dir = Some(dir);
        final_fit_seconds = Some(t_fit.elapsed().as_secs_f64());
        if arch.is_cnn() {
            interp_data = Some(interpretation(&ds, &targets, &ens, crop, cfg.run.overlays, &opts.out)?);
        }
    }
    bar.finish_and_clear();

    // Pictures and files.
    let trunk_note = trunk.as_ref().filter(|t| !t.is_imagenet()).map(|_| SYNTHETIC_TRUNK_NOTE.to_string());
    let points: Vec<Vec<(f64, f64)>> = ev
        .results
        .iter()
        .map(|r| targets.iter().copied().zip(r.sample_prediction.iter().copied()).collect())
        .collect();
    let panels: Vec<plots::Diagnostic<'_>> = ev
        .results
        .iter()
        .zip(&points)
        .map(|(r, p)| plots::Diagnostic {
            title: r.arch.label().to_string(),
            points: p,
            r2: r.metrics.r2,
            rmse_log10: r.metrics.rmse_log10,
            note: (r.arch == Arch::Resnet18).then(|| trunk_note.clone()).flatten(),
        })
        .collect();
    let heading = format!(
        "Measured vs predicted log10 σ (30 °C), held-out samples — {}, {} member(s) per fold, {crop} px crops",
        settings.protocol.describe(),
        settings.members
    );
    let diagnostic_png = opts.out.join("diagnostic.png");
    plots::diagnostic(&panels, &heading, None, &diagnostic_png)?;

    let interp_h5 = interp_data.as_ref().map(|d: &InterpData| results::Interpretation {
        arch: d.arch.name(),
        channel_correlation: &d.correlation,
        overlap: d.overlap,
    });
    let results_h5 = results::write(&opts.out.join("results.h5"), &ds, &opts.data, &targets, &ev, interp_h5.as_ref())?;

    let models: Vec<ModelLine> = ev
        .results
        .iter()
        .map(|r| {
            let recs: Vec<_> = ev.members.iter().filter(|m| m.arch == r.arch).collect();
            ModelLine {
                model: r.arch,
                label: r.arch.label().into(),
                r2: r.metrics.r2,
                rmse_log10: r.metrics.rmse_log10,
                image_r2: r.metrics.image_r2,
                image_rmse_log10: r.metrics.image_rmse_log10,
                members_trained: recs.len(),
                mean_best_epoch: recs.iter().map(|m| m.best_epoch as f64).sum::<f64>() / recs.len().max(1) as f64,
                seconds: r.seconds,
            }
        })
        .collect();
    let report = TrainReport {
        dataset: summarise(&ds, &opts.data),
        protocol: settings.protocol.describe(),
        members_per_fold: settings.members,
        outer_folds: ev.folds.len(),
        crop_px: crop,
        models,
        skipped,
        trunk: trunk.as_ref().map(|t| format!("{} — {}", t.identity.path, t.identity.provenance.label())),
        trunk_features_seconds,
        final_model: final_arch,
        final_fit_seconds,
        interpretation: interp_data.as_ref().and_then(|d| d.overlap),
        channels_positive: interp_data.as_ref().map(|d| d.correlation.iter().filter(|&&r| r > 0.0).count()),
        channels_negative: interp_data.as_ref().map(|d| d.correlation.iter().filter(|&&r| r < 0.0).count()),
        files: TrainFiles {
            results_h5,
            metrics_json: opts.out.join("metrics.json"),
            diagnostic_png,
            correlation_png: interp_data.as_ref().map(|d| d.histogram.clone()),
            overlays: interp_data.map(|d| d.overlays).unwrap_or_default(),
            model_dir,
        },
        wall_seconds: t_start.elapsed().as_secs_f64(),
    };
    let json = serde_json::json!({ "report": report, "settings": settings, "config": cfg });
    let bytes = serde_json::to_vec_pretty(&json)
        .map_err(|e| Error::Output { path: report.files.metrics_json.clone(), problem: e.to_string() })?;
    crate::report::write_atomic(&report.files.metrics_json, &bytes)?;
    Ok(report)
}

struct InterpData {
    arch: Arch,
    correlation: Vec<f64>,
    overlap: Option<interpret::DefectOverlap>,
    histogram: PathBuf,
    overlays: Vec<PathBuf>,
}

/// Channel correlations over member 0's training images, masks of every image, overlays of the
/// highest- and lowest-conductivity samples.
fn interpretation(
    ds: &Dataset,
    targets: &[f64],
    ens: &Ensemble,
    crop: usize,
    n_overlays: usize,
    out: &Path,
) -> Result<InterpData, Error> {
    let net = &ens.nets[0];
    let mc = &ens.config.members[0];
    let train_ids: std::collections::HashSet<&str> = mc.train_samples.iter().map(String::as_str).collect();
    let train_images: Vec<usize> =
        (0..ds.images.len()).filter(|&i| train_ids.contains(ds.samples[ds.images[i].sample].id.as_str())).collect();
    let m_train = interpret::maps(net, &mc.scales, ds, crop, &train_images)?;
    let t_train: Vec<f64> = train_images.iter().map(|&i| targets[ds.images[i].sample]).collect();
    let correlation = interpret::channel_correlation(&m_train.gap, &t_train);
    let histogram = out.join("channel_correlation.png");
    plots::correlation_histogram(
        &correlation,
        &format!("GAP channels of the final {} model (member 1) vs log10 σ", ens.config.arch.label()),
        &histogram,
    )?;
    let all: Vec<usize> = (0..ds.images.len()).collect();
    let m_all = interpret::maps(net, &mc.scales, ds, crop, &all)?;
    let masks: Vec<_> = all.iter().enumerate().map(|(k, &i)| interpret::masks(ds, &m_all, k, i, crop, &correlation)).collect();
    let overlap = interpret::defect_overlap(ds, &masks, crop);

    // Overlays: alternately the highest and the lowest remaining sample, first image of each.
    let mut order: Vec<usize> = (0..ds.samples.len()).collect();
    order.sort_by(|&a, &b| targets[b].total_cmp(&targets[a]));
    let mut picks = Vec::new();
    let (mut lo, mut hi) = (0usize, order.len());
    while picks.len() < n_overlays.min(order.len()) {
        if picks.len() % 2 == 0 {
            picks.push(order[lo]);
            lo += 1;
        } else {
            hi -= 1;
            picks.push(order[hi]);
        }
    }
    let dir = out.join("segmentation");
    crate::report::ensure_dir(&dir)?;
    let pred = ens.predict_images(ds, None)?;
    let mut overlays = Vec::new();
    for s in picks {
        let Some(&i) = ds.images_of(s).first() else { continue };
        let sm = &ds.samples[s];
        // Descriptors only when the table gave them: no made-up zeros in a title.
        let known = if sm.has_descriptors() {
            format!("  x={:.2} y={:.2} T1={:.0} °C T2={:.0} °C", sm.x, sm.y, sm.t1_c, sm.t2_c)
        } else {
            String::new()
        };
        let caption =
            format!("{}{known} — measured log10 σ = {:.2}, fitted {:.2} (S/cm)", sm.id, targets[s], pred[i]);
        let path = dir.join(format!("{}.png", sm.id));
        plots::overlay(&masks[i], crop, &caption, &path)?;
        overlays.push(path);
    }
    Ok(InterpData { arch: ens.config.arch, correlation, overlap, histogram, overlays })
}

// ---------------------------------------------------------------------------------------------
// predict

pub struct PredictOptions {
    pub model: PathBuf,
    /// A dataset file, or `images` (+ `table`) to import on the fly.
    pub data: Option<PathBuf>,
    pub images: Option<PathBuf>,
    pub table: Option<PathBuf>,
    pub out: PathBuf,
    pub weights: Option<PathBuf>,
    /// As for import: `None` finds the annotation band, `Some(n)` cuts n bottom rows.
    pub crop_rows: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct SamplePrediction {
    pub sample_id: String,
    pub images: usize,
    pub predicted_log10_s_per_cm: f64,
    pub predicted_s_per_cm: f64,
    /// Standard deviation of the crop predictions over each image's grid, averaged over the
    /// sample's images (log10 S/cm): how much the prediction depends on where one looks.
    pub crop_spread_log10: f64,
    pub measured_log10_s_per_cm: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct PredictReport {
    pub model: String,
    pub samples: Vec<SamplePrediction>,
    /// Per image: (source, sample id, predicted log10 σ).
    pub images: Vec<(String, String, f64)>,
    /// When every sample has a measured value.
    pub r2: Option<f64>,
    pub rmse_log10: Option<f64>,
    pub csv: PathBuf,
    pub h5: PathBuf,
}

/// Images without a table: every image its own sample (descriptor models need the table).
fn images_only(dir: &Path, crop_rows: Option<usize>) -> Result<Dataset, Error> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConductivityError::Image { path: dir.to_owned(), problem: format!("cannot list: {e}") })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| importer::is_image_file(p))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(ConductivityError::Image { path: dir.to_owned(), problem: "no PNG, TIFF or JPEG images".into() }.into());
    }
    let mut ds = Dataset { source: format!("images of {}", dir.display()), ..Dataset::default() };
    for (s, p) in names.iter().enumerate() {
        let mut im = importer::read_image(p, s)?;
        importer::cut_band(&mut im, crop_rows)?;
        ds.images.push(im);
        let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or("image").to_owned();
        // No descriptors known: NaN makes any use of them fail loudly instead of predicting from zeros.
        ds.samples.push(crate::secondary::conductivity::dataset::Sample::image_only(id, None));
    }
    Ok(ds)
}

pub fn predict(opts: &PredictOptions) -> Result<PredictReport, Error> {
    tune_allocator();
    let ens = Ensemble::load(&opts.model)?;
    let arch = ens.config.arch;
    let (ds, source) = match (&opts.data, &opts.images, &opts.table) {
        (Some(d), None, None) => (Dataset::read(d)?, d.clone()),
        (None, Some(dir), Some(table)) => (
            importer::import(&importer::ImportOptions {
                images_dir: dir.clone(),
                table: Some(table.clone()),
                require_target: false,
                crop_rows: opts.crop_rows,
                skip_unmatched: false,
            })?
            .0,
            table.clone(),
        ),
        (None, Some(dir), None) => {
            if arch.uses_descriptors() {
                return Err(Error::Usage(format!(
                    "model {arch} needs each sample's x, y, T1, T2: pass --table samples.csv with --images"
                )));
            }
            (images_only(dir, opts.crop_rows)?, dir.clone())
        }
        _ => return Err(Error::Usage("give --data FILE.h5, or --images DIR (with --table CSV for descriptor models)".into())),
    };
    let lacking = ds.samples_without_descriptors();
    if arch.uses_descriptors() && !lacking.is_empty() {
        return Err(Error::Usage(format!(
            "model {arch} needs x, y, T1_c, T2_c for every sample; {} of {} lack them ({})",
            lacking.len(),
            ds.samples.len(),
            lacking.iter().take(5).copied().collect::<Vec<_>>().join(", ")
        )));
    }
    let features = if arch == Arch::Resnet18 {
        let trunk = Trunk::load(opts.weights.as_deref().or(ens.config.trunk.as_ref().map(|t| Path::new(&t.weights_path))), ens.config.crop_px, 0)?
            .ok_or_else(|| Error::Usage("the resnet18 model needs the ResNet-18 weights it was trained on: pass --weights".into()))?;
        if let Some(tc) = &ens.config.trunk
            && tc.weights_sha256 != trunk.identity.file_sha256
        {
            return Err(Error::Usage(format!(
                "--weights {} (sha256 {}) are not the weights the model was trained on (sha256 {})",
                trunk.identity.path, trunk.identity.file_sha256, tc.weights_sha256
            )));
        }
        Some(trunk_features(&trunk, &ds, ens.config.crop_px))
    } else {
        None
    };
    let with_spread = ens.predict_images_spread(&ds, features.as_deref())?;
    let image_pred: Vec<f64> = with_spread.iter().map(|p| p.0).collect();
    let image_spread: Vec<f64> = with_spread.iter().map(|p| p.1).collect();
    let sample_pred = protocol::sample_means(&ds, &image_pred);
    let sample_spread = protocol::sample_means(&ds, &image_spread);
    let samples: Vec<SamplePrediction> = ds
        .samples
        .iter()
        .enumerate()
        .map(|(s, sm)| SamplePrediction {
            sample_id: sm.id.clone(),
            images: ds.images_of(s).len(),
            predicted_log10_s_per_cm: sample_pred[s],
            predicted_s_per_cm: 10f64.powf(sample_pred[s]),
            crop_spread_log10: sample_spread[s],
            measured_log10_s_per_cm: sm.log10_conductivity(),
        })
        .collect();
    let measured: Option<Vec<f64>> = samples.iter().map(|s| s.measured_log10_s_per_cm).collect();
    let (r2, rmse_log10) = match &measured {
        Some(m) if m.len() >= 2 => (Some(protocol::r2(&sample_pred, m)), Some(protocol::rmse(&sample_pred, m))),
        _ => (None, None),
    };
    crate::report::ensure_dir(&opts.out)?;
    let csv = opts.out.join("predictions.csv");
    let mut text = String::from(
        "sample_id,images,predicted_log10_s_per_cm,predicted_s_per_cm,crop_spread_log10,measured_log10_s_per_cm\n",
    );
    for s in &samples {
        text.push_str(&format!(
            "{},{},{:.4},{:.4e},{:.4},{}\n",
            s.sample_id,
            s.images,
            s.predicted_log10_s_per_cm,
            s.predicted_s_per_cm,
            s.crop_spread_log10,
            s.measured_log10_s_per_cm.map_or(String::new(), |m| format!("{m:.4}"))
        ));
    }
    crate::report::write_atomic(&csv, text.as_bytes())?;
    let h5 = opts.out.join("predictions.h5");
    write_predictions_h5(&h5, &ds, &image_pred, &image_spread, &sample_pred, &source, &ens)?;
    Ok(PredictReport {
        model: format!("{} ({} members, {} px crops)", arch.label(), ens.nets.len(), ens.config.crop_px),
        images: ds
            .images
            .iter()
            .zip(&image_pred)
            .map(|(im, &p)| (im.source.clone(), ds.samples[im.sample].id.clone(), p))
            .collect(),
        samples,
        r2,
        rmse_log10,
        csv,
        h5,
    })
}

fn write_predictions_h5(
    path: &Path,
    ds: &Dataset,
    image_pred: &[f64],
    image_spread: &[f64],
    sample_pred: &[f64],
    source: &Path,
    ens: &Ensemble,
) -> Result<(), Error> {
    use crate::secondary::conductivity::dataset::str_attr;
    use hdf5::types::VarLenUnicode;
    use ndarray::Array1;
    let e = |what: &str| {
        let (p, w) = (path.to_owned(), what.to_owned());
        move |source: hdf5::Error| Error::from(ConductivityError::Hdf5 { path: p, what: w, source })
    };
    let f = hdf5::File::create(path).map_err(e("create"))?;
    str_attr(&f, "format", "beamwatch-conductivity-predictions/1").map_err(e("format"))?;
    str_attr(&f, "input", &source.display().to_string()).map_err(e("input"))?;
    str_attr(&f, "model", &serde_json::to_string(&ens.config).unwrap_or_default()).map_err(e("model"))?;
    let ids: Array1<VarLenUnicode> = ds.samples.iter().map(|s| s.id.parse().unwrap_or_default()).collect();
    f.new_dataset_builder().with_data(&ids).create("sample_id").map_err(e("/sample_id"))?;
    f.new_dataset_builder()
        .with_data(&Array1::from(sample_pred.to_vec()))
        .create("sample_prediction_log10_s_per_cm")
        .map_err(e("/sample_prediction_log10_s_per_cm"))?;
    f.new_dataset_builder()
        .with_data(&Array1::from(image_pred.to_vec()))
        .create("image_prediction_log10_s_per_cm")
        .map_err(e("/image_prediction_log10_s_per_cm"))?;
    f.new_dataset_builder()
        .with_data(&Array1::from(image_spread.to_vec()))
        .create("image_crop_spread_log10")
        .map_err(e("/image_crop_spread_log10"))?;
    let owner: Array1<u64> = ds.images.iter().map(|im| im.sample as u64).collect();
    f.new_dataset_builder().with_data(&owner).create("image_sample").map_err(e("/image_sample"))?;
    let src: Array1<VarLenUnicode> = ds.images.iter().map(|im| im.source.parse().unwrap_or_default()).collect();
    f.new_dataset_builder().with_data(&src).create("image_source").map_err(e("/image_source"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bench

pub struct BenchOptions {
    pub crop_px: usize,
    pub batch: usize,
    pub image_px: usize,
    pub weights: Option<PathBuf>,
    pub threads: usize,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub crop_px: usize,
    pub batch: usize,
    pub threads: usize,
    /// The 33 descriptors + standardisation of one sample.
    pub descriptors_us_per_sample: f64,
    /// One Adam step (forward, backward, update) of the Baseline with descriptors on a batch.
    pub train_step_ms_per_batch: f64,
    pub train_ms_per_image: f64,
    /// Inference (centre crop, forward) per image.
    pub inference_ms_per_image: f64,
    /// One synthetic field of view: render + two Laplace solves.
    pub synth_ms_per_image: f64,
    pub laplace_iterations: usize,
    /// ResNet-18 trunk features of one crop (when weights are found).
    pub resnet_features_ms_per_crop: Option<f64>,
}

pub fn bench(opts: &BenchOptions) -> Result<BenchReport, Error> {
    use candle_core::Tensor;
    use candle_nn::Optimizer;
    use rand::SeedableRng;
    set_threads(opts.threads);
    let crop = opts.crop_px;
    let spec = SynthSpec { samples: 4, images_min: 2, images_max: 2, size_px: opts.image_px.max(crop), seed: 3 };
    let t = Instant::now();
    let ds = synth::generate(&spec, || {})?;
    let synth_ms_per_image = t.elapsed().as_secs_f64() * 1e3 / ds.images.len() as f64;
    let laplace_iterations = {
        let tr = ds.truth.as_ref().map(|t| t.phase[0].clone()).unwrap_or_default();
        let phases: Vec<synth::Phase> = tr
            .iter()
            .map(|&p| match p {
                0 => synth::Phase::Alpha,
                1 => synth::Phase::Beta,
                2 => synth::Phase::Boundary,
                _ => synth::Phase::Pore,
            })
            .collect();
        let map = synth::microstructure::conductivity_map(&phases, synth::BETA_RATIO, 0.08);
        crate::secondary::conductivity::laplace::effective_conductivity(
            &map,
            ds.images[0].width,
            ds.images[0].height,
            crate::secondary::conductivity::laplace::Direction::X,
        )
        .iterations
    };

    let n_desc = 10_000;
    let t = Instant::now();
    let st = descriptors::Standardizer::fit(&descriptors::rows(ds.samples.iter()));
    let mut acc = 0f32;
    for k in 0..n_desc {
        let row = st.apply(&descriptors::descriptors(&ds.samples[k % ds.samples.len()]));
        acc += row[k % row.len()];
    }
    let descriptors_us_per_sample = t.elapsed().as_secs_f64() * 1e6 / n_desc as f64;
    std::hint::black_box(acc);

    let arch = Arch::Descriptors;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let net = model::Net::init(arch, &mut rng)?;
    let targets = ds.log10_targets(Path::new("<bench>"))?;
    let all: Vec<usize> = (0..ds.samples.len()).collect();
    let input = train::MemberInput { ds: &ds, targets: &targets, train_samples: &all, val_samples: &all, features: None };
    let scales = train::fit_scales(arch, &input);
    let mut opt = candle_nn::AdamW::new(
        net.vars(),
        candle_nn::ParamsAdamW { lr: 1e-3, weight_decay: 0.0, ..Default::default() },
    )
    .map_err(|e| ConductivityError::Tensor { what: "optimiser".into(), source: e })?;
    let items: Vec<usize> = (0..opts.batch).map(|k| k % ds.images.len()).collect();
    let y = Tensor::zeros(opts.batch, candle_core::DType::F32, &candle_core::Device::Cpu)
        .map_err(|e| ConductivityError::Tensor { what: "targets".into(), source: e })?;
    let steps = 5;
    let mut step_s = Vec::new();
    for k in 0..=steps {
        let t = Instant::now();
        let b = train::batch(arch, &ds, &scales, crop, None, &items, Some(&mut rng))?;
        let out = net.forward(&b, model::Mode::Train)?;
        let loss = candle_nn::loss::mse(&out.prediction, &y)
            .and_then(|l| opt.backward_step(&l))
            .map_err(|e| ConductivityError::Tensor { what: "train step".into(), source: e });
        loss?;
        if k > 0 {
            step_s.push(t.elapsed().as_secs_f64());
        }
    }
    let train_step_ms_per_batch = step_s.iter().sum::<f64>() / step_s.len() as f64 * 1e3;
    let t = Instant::now();
    let reps = 3;
    let test_items: Vec<usize> = (0..ds.images.len()).collect();
    for _ in 0..reps {
        train::predict(&net, &scales, &ds, crop, None, &test_items)?;
    }
    let inference_ms_per_image = t.elapsed().as_secs_f64() * 1e3 / (reps * test_items.len()) as f64;
    let resnet_features_ms_per_crop = match Trunk::load(opts.weights.as_deref(), crop, opts.threads)? {
        Some(trunk) => {
            let crops: Vec<Vec<f32>> = ds.images.iter().map(|im| model::centre_crop(im, crop)).collect();
            trunk.features(&crops[..1], crop);
            let t = Instant::now();
            trunk.features(&crops, crop);
            Some(t.elapsed().as_secs_f64() * 1e3 / crops.len() as f64)
        }
        None => None,
    };
    Ok(BenchReport {
        crop_px: crop,
        batch: opts.batch,
        threads: rayon::current_num_threads(),
        descriptors_us_per_sample,
        train_step_ms_per_batch,
        train_ms_per_image: train_step_ms_per_batch / opts.batch as f64,
        inference_ms_per_image,
        synth_ms_per_image,
        laplace_iterations,
        resnet_features_ms_per_crop,
    })
}
