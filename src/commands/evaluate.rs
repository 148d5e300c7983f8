//! `beamwatch evaluate`: scores comparison settings on series whose damage is known.
//!
//! Input: a series file with a `/truth` group (what `beamwatch simulate --out` writes), or any
//! recorded series plus `--truth` (an HDF5 file with `/truth/damage`, or a mask image applied from
//! `--truth-onset` on); or `--suite`, which simulates the three damage models at two doses per frame
//! and scores them all. Output: a table on stdout, `results.csv`, `frames.csv`, `table.md`,
//! `summary.json` and one AUC-versus-frame/dose PNG per series and metric.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::Error;
use crate::alarms::Rule;
use crate::config::Config;
use crate::damage::{AnalysisSettings, Metric};
use crate::engine::{Engine, Network, Precision};
use crate::evaluate::{self, Setting, SettingResult, TruthSeries};
use crate::frame::Frame;
use crate::record::{OpenOptions, ReadError, open_source};
use crate::register::Registration;
use crate::report::{self, auc_plot};
use crate::simulate::DamageModel;
use crate::simulate::image::{ImageSeries, ImageSeriesSpec};
use crate::simulate::series::{Series, SeriesSpec};
use crate::weights::identity::Identity;

pub struct EvaluateOptions {
    /// Series files to score (ignored with `suite`).
    pub inputs: Vec<PathBuf>,
    pub truth: Option<PathBuf>,
    pub truth_onset: Option<usize>,
    pub suite: Option<SuiteSpec>,
    pub metrics: Vec<Metric>,
    pub sigmas_px: Vec<f32>,
    pub registrations: Vec<Registration>,
    /// Analysis base settings and alarm rules.
    pub config: Config,
    /// The rule whose first alarm counts as the detection.
    pub rule: String,
    /// The config's precision without the speed probe (`Engine::with_precision_unmeasured`).
    pub force_precision: bool,
    pub out: PathBuf,
}

/// The built-in benchmark: every damage model at every dose.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteSpec {
    pub size_px: usize,
    pub frames: usize,
    pub onset_frame: usize,
    pub electrons_per_px: Vec<f64>,
    pub models: Vec<DamageModel>,
    /// One series per seed (specimen, damage sites and noise) for every model and dose.
    pub seeds: Vec<u64>,
    /// Real images (any format `replay` reads; the first frame) to build series from as well:
    /// amorphous and contrast-loss damage at every dose and seed, frames of `image_size_px`.
    pub images: Vec<PathBuf>,
    pub image_size_px: usize,
    /// Undamaged series as well (one per dose and seed, from the simulator and from every image):
    /// every alarm on them is false.
    pub undamaged: bool,
}

impl Default for SuiteSpec {
    fn default() -> Self {
        Self {
            size_px: 320,
            frames: 16,
            onset_frame: 5,
            electrons_per_px: vec![10.0, 100.0],
            models: vec![DamageModel::Amorphous, DamageModel::ContrastLoss, DamageModel::Vacancies],
            seeds: vec![1, 2, 3],
            images: Vec::new(),
            image_size_px: 512,
            undamaged: true,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EvaluateReport {
    pub weights: Option<String>,
    /// The number format the CPU trunk computed resnet18/lpips features in (none without them).
    pub precision: Option<Precision>,
    pub rule: String,
    pub series: Vec<String>,
    pub results: Vec<SettingResult>,
    /// Settings ranked by mean early-damage AUC over the series (best first).
    pub ranking: Vec<Ranked>,
    pub outputs: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Ranked {
    pub setting: Setting,
    pub label: String,
    pub mean_auc_early: Option<f64>,
    pub mean_auc_late: Option<f64>,
    pub mean_onset_delay_frames: Option<f64>,
    /// Damaged series on which the watched rule never fired.
    pub missed: usize,
    pub false_alarms: usize,
}

fn usage(s: String) -> Error {
    Error::Usage(s)
}

/// Frames, doses and truth of a series file.
pub fn load(path: &Path, truth: Option<&Path>, truth_onset: Option<usize>) -> Result<TruthSeries, Error> {
    let mut src = open_source(path, &OpenOptions::default())?;
    let n = src.info().frames;
    let mut frames: Vec<Frame> = Vec::with_capacity(n);
    let mut doses = Vec::with_capacity(n);
    for i in 0..n {
        frames.push(src.read(i)?.frame);
        doses.push(src.recorded_dose(i).map(|d| d.1));
    }
    let (damage, onset) = match truth {
        Some(t) if !is_hdf5(t) => mask_truth(t, &frames, truth_onset)?,
        Some(t) => hdf5_truth(t)?,
        None => hdf5_truth(path)?,
    };
    if damage.len() != frames.len() {
        let why = format!("{} frames of truth for a series of {}", damage.len(), frames.len());
        return Err(ReadError::new(truth.unwrap_or(path), Some("/truth/damage"), why).into());
    }
    let name = path.file_stem().map_or("series".into(), |s| s.to_string_lossy().into_owned());
    Ok(TruthSeries { name, frames, damage, cumulative_e_per_a2: doses, onset_frame: onset })
}

fn is_hdf5(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| crate::record::readers::is_hdf5(p, m.len()).unwrap_or(false))
}

fn hdf5_truth(path: &Path) -> Result<(Vec<Vec<f32>>, Option<usize>), Error> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: hdf5::Error| Error::from(ReadError::new(path, Some("/truth/damage"), format!("{what}: {err}")))
    };
    let f = hdf5::File::open(path).map_err(e("cannot open"))?;
    let ds = f.dataset("truth/damage").map_err(e("no truth in this file (give one with --truth)"))?;
    let cube: ndarray::Array3<f32> = ds.read().map_err(e("cannot read as f32 (frames × height × width)"))?;
    let onset =
        f.group("truth").ok().and_then(|g| g.attr("onset_frame").ok()).and_then(|a| a.read_scalar::<i64>().ok());
    let maps = cube.outer_iter().map(|m| m.iter().copied().collect()).collect();
    Ok((maps, onset.and_then(|o| usize::try_from(o).ok())))
}

fn mask_truth(path: &Path, frames: &[Frame], onset: Option<usize>) -> Result<(Vec<Vec<f32>>, Option<usize>), Error> {
    let onset = onset.ok_or_else(|| usage(format!("{}: a mask image needs --truth-onset FRAME", path.display())))?;
    let img = image::open(path).map_err(|e| ReadError::new(path, None, e.to_string()))?.to_luma32f();
    let (w, h) = (frames[0].width(), frames[0].height());
    if (img.width() as usize, img.height() as usize) != (w, h) {
        let why = format!("mask is {}×{} px, the frames {w}×{h}", img.width(), img.height());
        return Err(ReadError::new(path, None, why).into());
    }
    let mask: Vec<f32> = img.pixels().map(|p| if p.0[0] > 0.0 { 1.0 } else { 0.0 }).collect();
    let maps = (0..frames.len()).map(|i| if i >= onset { mask.clone() } else { vec![0.0; w * h] }).collect();
    Ok((maps, Some(onset)))
}

/// Writes the suite's series (with truth) into `dir`; returns their paths.
pub fn simulate_suite(spec: &SuiteSpec, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    report::ensure_dir(dir)?;
    let mut paths = Vec::new();
    let image_models = [DamageModel::Amorphous, DamageModel::ContrastLoss];
    let undamaged = usize::from(spec.undamaged);
    let n = (spec.models.len() + undamaged + (image_models.len() + undamaged) * spec.images.len())
        * spec.electrons_per_px.len()
        * spec.seeds.len()
        * spec.frames;
    let bar = crate::progress::items_bar(n as u64, "simulating");
    // An undamaged series: its damage would start far beyond its last frame.
    let never = spec.frames * 1000;
    let mut sim_models: Vec<Option<DamageModel>> = spec.models.iter().copied().map(Some).collect();
    let mut img_models: Vec<Option<DamageModel>> = image_models.iter().copied().map(Some).collect();
    if spec.undamaged {
        sim_models.push(None);
        img_models.push(None);
    }
    let name = |m: Option<DamageModel>| m.map_or("undamaged", DamageModel::name);
    for &model in &sim_models {
        for &e in &spec.electrons_per_px {
            for &seed in &spec.seeds {
                let onset = if model.is_some() { spec.onset_frame } else { never };
                let mut s = SeriesSpec::new(spec.size_px, spec.frames, onset, e);
                s.model = model.unwrap_or_default();
                s.seed = seed;
                let path = dir.join(format!("{}_{}epx_seed{seed}.h5", name(model), e));
                let _ = std::fs::remove_file(&path);
                crate::simulate::file::write(&Series::new(s), &path, |_| bar.inc(1))
                    .map_err(|err| Error::Output { path: path.clone(), problem: err.to_string() })?;
                paths.push(path);
            }
        }
    }
    for image_path in &spec.images {
        let mut frames = crate::imagefile::read_frames(image_path, false)?;
        if frames.is_empty() {
            return Err(ReadError::new(image_path, None, "no image in the file").into());
        }
        let image = frames.swap_remove(0).frame;
        let stem = image_path.file_stem().map_or("image".into(), |s| s.to_string_lossy().replace('.', "_"));
        for &model in &img_models {
            for &e in &spec.electrons_per_px {
                for &seed in &spec.seeds {
                    let onset = if model.is_some() { spec.onset_frame } else { never };
                    let mut s = ImageSeriesSpec::new(
                        &image_path.display().to_string(),
                        spec.image_size_px,
                        spec.frames,
                        onset,
                        e,
                    );
                    s.model = model.unwrap_or_default();
                    s.seed = seed;
                    let series =
                        ImageSeries::new(&image, s).map_err(|err| ReadError::new(image_path, None, err.to_string()))?;
                    let path = dir.join(format!("{stem}_{}_{}epx_seed{seed}.h5", name(model), e));
                    let _ = std::fs::remove_file(&path);
                    crate::simulate::file::write(&series, &path, |_| bar.inc(1))
                        .map_err(|err| Error::Output { path: path.clone(), problem: err.to_string() })?;
                    paths.push(path);
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(paths)
}

/// The feature engine the metrics need, with the weights' identity.
fn engine_for(
    cfg: &Config,
    metrics: &[Metric],
    force_precision: bool,
) -> Result<(Option<Arc<Engine>>, Option<Identity>), Error> {
    if !metrics.iter().any(|m| m.uses_features()) {
        return Ok((None, None));
    }
    let Some((id, sd)) = crate::weights::store::find(cfg.analysis.weights.as_deref())? else {
        return Err(usage(
            "resnet18/lpips need ResNet-18 weights: give --weights, or leave them out of --metrics".into(),
        ));
    };
    let net = Network::from_state_dict(&sd)?;
    let engine = Engine::for_backend(&net, cfg.analysis.patch_px, cfg.analysis.threads, cfg.analysis.backend)?;
    let engine = match force_precision {
        true => engine.with_precision_unmeasured(cfg.analysis.precision),
        false => engine.with_precision(cfg.analysis.precision),
    };
    Ok((Some(Arc::new(engine)), Some(id)))
}

pub fn run(opts: &EvaluateOptions) -> Result<EvaluateReport, Error> {
    let rules: Vec<Rule> = opts.config.validate(Path::new("evaluate settings"))?;
    if !rules.iter().any(|r| r.name == opts.rule) {
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        return Err(usage(format!("no alarm rule named '{}' (rules: {})", opts.rule, names.join(", "))));
    }
    report::ensure_dir(&opts.out)?;
    let inputs = match &opts.suite {
        Some(spec) => simulate_suite(spec, &opts.out.join("series"))?,
        None if opts.inputs.is_empty() => return Err(usage("no series given (a file, or --suite)".into())),
        None => opts.inputs.clone(),
    };
    let (engine, identity) = engine_for(&opts.config, &opts.metrics, opts.force_precision)?;
    let weights =
        identity.as_ref().map(|id| format!("{} ({}, sha256 {})", id.path, id.provenance.label(), id.file_sha256));
    let base: AnalysisSettings = opts.config.analysis.settings(opts.metrics[0]);
    let settings: Vec<Setting> = opts
        .metrics
        .iter()
        .flat_map(|&metric| {
            opts.sigmas_px.iter().flat_map(move |&s| {
                opts.registrations.iter().map(move |&registration| Setting {
                    metric,
                    prefilter_sigma_px: s,
                    registration,
                })
            })
        })
        .collect();
    let mut results = Vec::new();
    let mut names = Vec::new();
    let mut outputs = Vec::new();
    let bar = crate::progress::items_bar((inputs.len() * settings.len()) as u64, "scoring settings");
    for path in &inputs {
        let series = load(path, opts.truth.as_deref(), opts.truth_onset)?;
        names.push(series.name.clone());
        let mut mine = Vec::new();
        for &setting in &settings {
            bar.set_message(format!("{} · {}", series.name, setting.label()));
            let r = evaluate::evaluate(&series, setting, &base, engine.clone(), &rules, &opts.rule)
                .map_err(|error| Error::Evaluate { path: path.clone(), error })?;
            mine.push(r);
            bar.inc(1);
        }
        for &metric in &opts.metrics {
            let lines: Vec<auc_plot::AucLine> = mine
                .iter()
                .filter(|r| r.setting.metric == metric)
                .map(|r| auc_plot::AucLine {
                    label: r.setting.label(),
                    points: r
                        .frames
                        .iter()
                        .filter_map(|f| f.auc.map(|a| (f.frame as f64, f.cumulative_e_per_a2, a)))
                        .collect(),
                })
                .collect();
            let png = opts.out.join(format!("auc_{}_{metric}.png", series.name));
            let warning =
                identity.as_ref().filter(|_| metric.uses_features()).and_then(|id| id.provenance.picture_warning());
            auc_plot::render(&auc_plot::AucPlot {
                title: format!("detection of known damage — {}", series.name),
                subtitle: format!("{metric}: AUC of the per-patch dissimilarity against the true damaged patches"),
                lines: &lines,
                onset_frame: series.onset_frame,
                warning,
            })?
            .save_png(&png)?;
            outputs.push(png);
        }
        results.extend(mine);
    }
    bar.finish_and_clear();
    let ranking = rank(&settings, &results);
    let precision = engine.as_ref().map(|e| e.precision());
    let mut report =
        EvaluateReport { weights, precision, rule: opts.rule.clone(), series: names, results, ranking, outputs };
    write_outputs(&mut report, &opts.out)?;
    Ok(report)
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn rank(settings: &[Setting], results: &[SettingResult]) -> Vec<Ranked> {
    let mut out: Vec<Ranked> = settings
        .iter()
        .map(|s| {
            let mine: Vec<&SettingResult> = results.iter().filter(|r| r.setting == *s).collect();
            Ranked {
                setting: *s,
                label: s.label(),
                mean_auc_early: mean(mine.iter().filter_map(|r| r.auc_early)),
                mean_auc_late: mean(mine.iter().filter_map(|r| r.auc_late)),
                mean_onset_delay_frames: mean(mine.iter().filter_map(|r| r.onset_delay_frames.map(|d| d as f64))),
                missed: mine.iter().filter(|r| r.onset_frame.is_some() && r.alarm_frame.is_none()).count(),
                false_alarms: mine.iter().map(|r| r.false_alarms).sum(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.mean_auc_early.unwrap_or(-1.0).total_cmp(&a.mean_auc_early.unwrap_or(-1.0)));
    out
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.decimals$}"))
}

/// The per-series table as Markdown (also printed).
pub fn markdown(r: &EvaluateReport) -> String {
    let mut s = String::new();
    for name in &r.series {
        s.push_str(&format!(
            "\n#### {name}\n\n| metric | σ (px) | registration | patch threshold | AUC early (frame) | AUC late | mean AUC | onset delay (frames) | false alarms |\n|---|---|---|---|---|---|---|---|---|\n"
        ));
        for x in r.results.iter().filter(|x| &x.series == name) {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
                x.setting.metric,
                x.setting.prefilter_sigma_px,
                if x.setting.registration == Registration::Off { "off" } else { "on" },
                x.threshold.map_or("–".into(), |t| format!("{t:.4}")),
                cell(x.auc_early, 3),
                x.first_damaged_frame.map_or("–".into(), |f| f.to_string()),
                cell(x.auc_late, 3),
                cell(x.auc_mean, 3),
                x.onset_delay_frames
                    .map_or(if x.onset_frame.is_some() { "no alarm".into() } else { "–".into() }, |d| format!(
                        "{d:+}"
                    )),
                x.false_alarms
            ));
        }
    }
    s.push_str("\n#### Ranking by early-damage AUC (mean over the series)\n\n| setting | mean AUC early | mean AUC late | mean onset delay (frames) | damaged series missed | false alarms (total) |\n|---|---|---|---|---|---|\n");
    for k in &r.ranking {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            k.label,
            cell(k.mean_auc_early, 3),
            cell(k.mean_auc_late, 3),
            cell(k.mean_onset_delay_frames, 2),
            k.missed,
            k.false_alarms
        ));
    }
    s
}

fn write_outputs(r: &mut EvaluateReport, out: &Path) -> Result<(), Error> {
    let werr = |path: &Path, e: &dyn std::fmt::Display| Error::Output { path: path.to_owned(), problem: e.to_string() };
    let mut results = String::from(
        "series,metric,prefilter_sigma_px,registration,threshold,first_damaged_frame,auc_early,auc_late,auc_mean,onset_frame,alarm_frame,onset_delay_frames,false_alarms\n",
    );
    let mut frames = String::from(
        "series,metric,prefilter_sigma_px,registration,frame,cumulative_e_per_a2,damaged_patches,intact_patches,auc,mean_dissimilarity\n",
    );
    let o = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    let u = |v: Option<usize>| v.map_or(String::new(), |x| x.to_string());
    for x in &r.results {
        let reg = if x.setting.registration == Registration::Off { "off" } else { "on" };
        results.push_str(&format!(
            "{},{},{},{reg},{},{},{},{},{},{},{},{},{}\n",
            x.series,
            x.setting.metric,
            x.setting.prefilter_sigma_px,
            x.threshold.map_or(String::new(), |t| t.to_string()),
            u(x.first_damaged_frame),
            o(x.auc_early),
            o(x.auc_late),
            o(x.auc_mean),
            u(x.onset_frame),
            u(x.alarm_frame),
            x.onset_delay_frames.map_or(String::new(), |d| d.to_string()),
            x.false_alarms
        ));
        for f in &x.frames {
            frames.push_str(&format!(
                "{},{},{},{reg},{},{},{},{},{},{}\n",
                x.series,
                x.setting.metric,
                x.setting.prefilter_sigma_px,
                f.frame,
                o(f.cumulative_e_per_a2),
                f.damaged_patches,
                f.intact_patches,
                o(f.auc),
                o(f.mean_dissimilarity)
            ));
        }
    }
    for (name, text) in [("results.csv", results), ("frames.csv", frames), ("table.md", markdown(r))] {
        let p = out.join(name);
        report::write_atomic(&p, text.as_bytes())?;
        r.outputs.push(p);
    }
    let p = out.join("summary.json");
    let json = serde_json::to_vec_pretty(&*r).map_err(|e| werr(&p, &e))?;
    report::write_atomic(&p, &json)?;
    Ok(())
}
