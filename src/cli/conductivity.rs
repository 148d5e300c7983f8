//! `beamwatch conductivity`: the SEM image → ionic conductivity stage (secondary).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::Error;
use crate::secondary::conductivity::config::ConductivityConfig;
use crate::secondary::conductivity::model::Arch;
use crate::secondary::conductivity::synth::SynthSpec;

#[derive(Subcommand)]
pub enum ConductivityCommand {
    /// Build the stage's HDF5 dataset from a folder of SEM images (TIFF incl. palette, PNG, JPEG)
    /// and a CSV sample table (columns sample_id, conductivity_s_per_cm; optional x, y, T1_c, T2_c
    /// for descriptor models; optional images = a;b;c), or without --table from file names that
    /// start with the conductivity in S/cm. Burnt-in info bars are found and cut.
    Import {
        #[arg(long)]
        images: PathBuf,
        /// The sample table; without it each file name starts with its conductivity (S/cm).
        #[arg(long)]
        table: Option<PathBuf>,
        #[arg(long, default_value = "conductivity-dataset.h5")]
        out: PathBuf,
        /// Accept samples without a measured conductivity (a set to predict, not to train on).
        #[arg(long)]
        allow_missing_target: bool,
        /// Cut this many rows from the bottom of every image instead of finding the info bar
        /// (0: cut nothing).
        #[arg(long)]
        crop_rows: Option<usize>,
        /// Leave out image files that belong to no sample (listed) instead of failing.
        #[arg(long)]
        skip_unmatched: bool,
    },
    /// Synthetic pellets (Voronoi grains, boundaries, pores, β grains) with conductivity from a
    /// pixel-level Laplace solve: dataset.h5, PNG images, samples.csv and truth.csv in --out.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        set: SynthSetArgs,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Evaluate the models (leave-one-sample-out or k-fold over samples, inner ensembles), write
    /// results.h5, metrics.json and the plots, and fit the final model on all samples for `predict`.
    Train(ConductivityTrainArgs),
    /// The documented run in one command: synthesise pellets (default 50 × 3 images of 96 px), then
    /// train and evaluate every model with the quick protocol (5-fold over samples, 64 px crops).
    Demo {
        #[arg(long, default_value = "conductivity-demo")]
        out: PathBuf,
        #[command(flatten)]
        set: SynthSetArgs,
        /// Seed of the synthetic pellets (the training seed is --seed).
        #[arg(long, default_value_t = 1)]
        data_seed: u64,
        #[command(flatten)]
        settings: ConductivitySettingsArgs,
    },
    /// Predict log10 σ of new images with a trained model (`train --out DIR` → DIR/model).
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// A dataset file (`import` / `synth`).
        #[arg(long, conflicts_with_all = ["images", "table"])]
        data: Option<PathBuf>,
        /// A folder of images (with --table for models that use descriptors).
        #[arg(long)]
        images: Option<PathBuf>,
        #[arg(long, requires = "images")]
        table: Option<PathBuf>,
        #[arg(long, default_value = "conductivity-predictions")]
        out: PathBuf,
        /// ResNet-18 weights (resnet18 models; default: the file the model was trained with).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// As for import: bottom rows to cut (default: find the info bar; 0: cut nothing).
        #[arg(long)]
        crop_rows: Option<usize>,
    },
    /// Time descriptor construction, a training step, inference, synthesis and trunk features;
    /// prints one JSON line.
    Bench {
        #[arg(long, default_value_t = 64)]
        crop: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Synthetic image edge, px.
        #[arg(long, default_value_t = 96)]
        size: usize,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// CPU threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

/// The size of a synthetic pellet set (`conductivity synth` and `demo`).
#[derive(Args)]
pub struct SynthSetArgs {
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Images per sample: N, or MIN-MAX drawn per sample (the paper: 1-3).
    #[arg(long, default_value = "3")]
    images_per_sample: String,
    /// Image edge, px.
    #[arg(long, default_value_t = 96)]
    size: usize,
}

#[derive(Args)]
pub struct ConductivityTrainArgs {
    /// The dataset (HDF5 from `import` or `synth`).
    #[arg(long)]
    data: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    settings: ConductivitySettingsArgs,
}

/// Training and protocol settings shared by `train` and `demo` (override the config file).
#[derive(Args)]
pub struct ConductivitySettingsArgs {
    /// Settings file (configs/conductivity/train.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Models to evaluate: baseline, descriptors, attention, descriptors-only, resnet18.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<Arch>>,
    /// loso (leave one sample out, the paper) or kfold.
    #[arg(long)]
    protocol: Option<String>,
    /// Outer folds of --protocol kfold.
    #[arg(long)]
    folds: Option<usize>,
    #[arg(long)]
    inner_folds: Option<usize>,
    /// Ensemble members per outer fold (default: all inner folds for loso, 1 for kfold).
    #[arg(long)]
    members: Option<usize>,
    /// Crop edge, px (the paper: 512).
    #[arg(long)]
    crop: Option<usize>,
    /// Random training crops of every image per epoch.
    #[arg(long)]
    crops_per_image: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Model fitted on all samples and saved for `predict` (or "none").
    #[arg(long = "final")]
    final_model: Option<String>,
    /// Segmentation overlays to draw.
    #[arg(long)]
    overlays: Option<usize>,
    /// ResNet-18 weights for resnet18.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// The config file (or `base`) with the flags applied.
fn conductivity_config(a: &ConductivitySettingsArgs, base: ConductivityConfig) -> Result<ConductivityConfig, Error> {
    use ConductivityConfig;
    let mut c = match &a.config {
        Some(p) => ConductivityConfig::load(p)?,
        None => base,
    };
    if let Some(m) = &a.models {
        c.run.models = m.clone();
    }
    if let Some(p) = &a.protocol {
        c.protocol.kind = p.clone();
    }
    for (dst, src) in [(&mut c.protocol.folds, a.folds), (&mut c.protocol.inner_folds, a.inner_folds)] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    if a.members.is_some() {
        c.protocol.members = a.members;
    }
    for (dst, src) in [
        (&mut c.train.crop_px, a.crop),
        (&mut c.train.crops_per_image, a.crops_per_image),
        (&mut c.train.max_epochs, a.epochs),
        (&mut c.train.patience, a.patience),
        (&mut c.train.batch, a.batch),
        (&mut c.run.overlays, a.overlays),
    ] {
        if let Some(v) = src {
            *dst = v;
        }
    }
    if let Some(v) = a.lr {
        c.train.learning_rate = v;
    }
    if let Some(v) = a.seed {
        c.protocol.seed = v;
    }
    if let Some(v) = &a.final_model {
        c.run.final_model = v.clone();
    }
    c.validate()?;
    Ok(c)
}

pub fn run(cmd: ConductivityCommand) -> Result<(), Error> {
    use crate::commands::conductivity as cond;
    match cmd {
        ConductivityCommand::Import { images, table, out, allow_missing_target, crop_rows, skip_unmatched } => {
            let s = cond::import(&cond::ImportOptions { images, table, out, allow_missing_target, crop_rows, skip_unmatched })?;
            print_conductivity_summary(&s);
        }
        ConductivityCommand::Synth { out, set, seed } => {
            let spec = synth_spec(&set, seed)?;
            let (files, s) = cond::synth(&spec, &out)?;
            print_conductivity_summary(&s);
            println!(
                "images: {}  table: {}  truth: {}",
                files.images_dir.display(),
                files.table.display(),
                files.truth_table.display()
            );
        }
        ConductivityCommand::Demo { out, set, data_seed, settings } => {
            let t0 = std::time::Instant::now();
            let spec = synth_spec(&set, data_seed)?;
            let config = conductivity_config(&settings, ConductivityConfig::quick())?;
            let (files, s) = cond::synth(&spec, &out)?;
            print_conductivity_summary(&s);
            println!("synthesised in {:.1} s; training …", t0.elapsed().as_secs_f64());
            let r = cond::train(&cond::TrainOptions {
                data: files.dataset,
                out: out.join("run"),
                config,
                weights: settings.weights,
                threads: settings.threads,
            })?;
            print_train(&r);
            println!("demo wall time (synthesis + training) {:.1} s", t0.elapsed().as_secs_f64());
        }
        ConductivityCommand::Train(a) => {
            let config = conductivity_config(&a.settings, Default::default())?;
            let r = cond::train(&cond::TrainOptions {
                data: a.data,
                out: a.out,
                config,
                weights: a.settings.weights,
                threads: a.settings.threads,
            })?;
            print_train(&r);
        }

        ConductivityCommand::Predict { model, data, images, table, out, weights, crop_rows } => {
            let r = cond::predict(&cond::PredictOptions { model, data, images, table, out, weights, crop_rows })?;
            println!("model: {}", r.model);
            println!(
                "{:<16} {:>6} {:>14} {:>14} {:>12} {:>14}",
                "sample", "images", "log10 σ (S/cm)", "σ (S/cm)", "crop spread", "measured log10"
            );
            for s in &r.samples {
                println!(
                    "{:<16} {:>6} {:>14.3} {:>14.3e} {:>12.3} {:>14}",
                    s.sample_id,
                    s.images,
                    s.predicted_log10_s_per_cm,
                    s.predicted_s_per_cm,
                    s.crop_spread_log10,
                    s.measured_log10_s_per_cm.map_or("-".into(), |m| format!("{m:.3}"))
                );
            }
            if let (Some(r2), Some(e)) = (r.r2, r.rmse_log10) {
                println!("R² = {r2:.3}, RMSE = {e:.3} log10 S/cm");
            }
            println!("wrote {} and {}", r.csv.display(), r.h5.display());
        }
        ConductivityCommand::Bench { crop, batch, size, weights, threads } => {
            let r = cond::bench(&cond::BenchOptions { crop_px: crop, batch, image_px: size, weights, threads })?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
    }
    Ok(())
}

fn print_conductivity_summary(s: &crate::commands::conductivity::DatasetSummary) {
    println!(
        "{}: {} samples, {} images ({}–{} px edge), {} with a measured conductivity{}",
        s.path.display(),
        s.samples,
        s.images,
        s.min_edge_px,
        s.max_edge_px,
        s.with_conductivity,
        s.log10_range.map_or(String::new(), |(a, b)| format!(", log10 σ {a:.2} … {b:.2} (S/cm)"))
    );
    if s.with_descriptors < s.samples {
        println!(
            "descriptors (x, y, T1_c, T2_c): {} of {} samples have them; models with descriptors need all",
            s.with_descriptors, s.samples
        );
    }
    if let Some(n) = &s.import_notes {
        if !n.cropped.is_empty() {
            let rows: std::collections::BTreeSet<String> =
                n.cropped.iter().map(|(_, b)| format!("{} {} rows", b.edge, b.rows)).collect();
            println!(
                "info bar cut from {} of {} images ({}); --crop-rows N sets it, --crop-rows 0 keeps every row",
                n.cropped.len(),
                s.images,
                rows.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        if !n.unmatched.is_empty() {
            println!("left out {} image file(s) that belong to no sample: {}", n.unmatched.len(), n.unmatched.join(", "));
        }
        if !n.pixel_size_nm.is_empty() {
            let (lo, hi) = n.pixel_size_nm.iter().fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.1), b.max(p.1)));
            println!(
                "pixel size from metadata for {} of {} images: {lo:.3}–{hi:.3} nm ({})",
                n.pixel_size_nm.len(),
                s.images,
                n.pixel_size_nm[0].2
            );
        }
    }
}

fn synth_spec(set: &SynthSetArgs, seed: u64) -> Result<SynthSpec, Error> {
    let per_sample = set.images_per_sample.as_str();
    let (lo, hi) = match per_sample.split_once('-') {
        Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
        None => (per_sample.trim().parse(), per_sample.trim().parse()),
    };
    let (Ok(images_min), Ok(images_max)) = (lo, hi) else {
        return Err(Error::Usage(format!("--images-per-sample: expected N or MIN-MAX, got {per_sample:?}")));
    };
    Ok(SynthSpec { samples: set.samples, images_min, images_max, size_px: set.size, seed })
}

fn print_train(r: &crate::commands::conductivity::TrainReport) {
    print_conductivity_summary(&r.dataset);
    println!(
        "protocol: {}, {} outer folds × {} member(s), {} px crops",
        r.protocol, r.outer_folds, r.members_per_fold, r.crop_px
    );
    if let Some(t) = &r.trunk {
        println!("resnet18 trunk: {t}");
    }
    println!(
        "{:<52} {:>7} {:>13} {:>9} {:>8} {:>9}",
        "model (held-out samples)", "R²", "RMSE log10", "image R²", "epochs", "time s"
    );
    for m in &r.models {
        println!(
            "{:<52} {:>7.3} {:>13.3} {:>9.3} {:>8.1} {:>9.1}",
            m.label, m.r2, m.rmse_log10, m.image_r2, m.mean_best_epoch, m.seconds
        );
    }
    for (arch, why) in &r.skipped {
        println!("{arch}: skipped — {why}");
    }
    if let Some(o) = &r.interpretation {
        println!(
            "segmentation ({} positive / {} negative GAP channels): pores + boundaries are {:.0} % of the negative group's region and {:.0} % of the positive group's, against {:.0} % of all pixels",
            r.channels_positive.unwrap_or(0),
            r.channels_negative.unwrap_or(0),
            100.0 * o.negative_region_defects,
            100.0 * o.positive_region_defects,
            100.0 * o.defect_fraction
        );
    }
    if let (Some(arch), Some(dir)) = (r.final_model, &r.files.model_dir) {
        println!("final {arch} model (all samples, {:.0} s): {}", r.final_fit_seconds.unwrap_or(0.0), dir.display());
    }
    println!(
        "results: {}  metrics: {}  plot: {}",
        r.files.results_h5.display(),
        r.files.metrics_json.display(),
        r.files.diagnostic_png.display()
    );
    println!("wall time {:.1} s", r.wall_seconds);
}

// ---- beamwatch map ----------------------------------------------------------------------------
