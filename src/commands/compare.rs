//! `beamwatch compare <reference> <frame>... --out DIR`: patch-wise similarity of image files to a
//! reference, written as `similarity.csv`, `summary.json` and one overlay PNG per frame.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::damage::setup;
use crate::Error;
use crate::config::{AnalysisConfig, ConfigError};
use crate::damage::{Analyzer, FrameAnalysis, Summary};
use crate::frame::{Frame, PixelType, Scaling};
use crate::imagefile::{self, LoadedFrame};
use crate::patches::PatchGrid;
use crate::register::Shift;
use crate::report::format::sig;
use crate::report::overlay::{self, Overlay};
use crate::report::provenance::Provenance;
use crate::report::{self, csv};

pub struct CompareOptions {
    pub reference: PathBuf,
    pub frames: Vec<PathBuf>,
    pub out: PathBuf,
    pub analysis: AnalysisConfig,
}

/// One compared frame, as written to `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct FrameReport {
    /// 1-based; the reference is frame 0.
    pub index: usize,
    pub source: String,
    pub dtype: PixelType,
    pub invalid_px: usize,
    pub shift: Option<Shift>,
    pub summary: Summary,
    pub overlay_png: String,
    pub analysis_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReferenceReport {
    pub source: String,
    pub width_px: usize,
    pub height_px: usize,
    pub dtype: PixelType,
    pub invalid_px: usize,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CompareSummary {
    pub provenance: Provenance,
    pub reference: ReferenceReport,
    pub grid: PatchGrid,
    pub remainder: String,
    pub scaling: Scaling,
    /// Top of the overlays' shared colour scale.
    pub colour_scale_max: f32,
    /// How the per-patch threshold was set (and, once calibrated, its value).
    pub threshold: String,
    pub noise_floor: Option<crate::damage::NoiseFloor>,
    pub frames: Vec<FrameReport>,
    pub files: Files,
}

#[derive(Clone, Debug, Serialize)]
pub struct Files {
    pub similarity_csv: String,
    pub summary_json: String,
}

pub fn run(opts: &CompareOptions) -> Result<CompareSummary, Error> {
    let cfg = &opts.analysis;
    if let Some((key, value, why)) = cfg.invalid() {
        return Err(ConfigError::Invalid { path: "command line".into(), key, value, why }.into());
    }
    let mut inputs: Vec<LoadedFrame> = imagefile::read_frames(&opts.reference, cfg.mask_gaps)?;
    for f in &opts.frames {
        inputs.extend(imagefile::read_frames(f, cfg.mask_gaps)?);
    }
    let reference = inputs.remove(0);
    if inputs.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to compare: give at least one frame after the reference {} (or a multi-page reference stack)",
            reference.source
        )));
    }
    let setup = setup::prepare(cfg)?;
    let provenance = Provenance::new(&setup.settings, setup.weights.as_ref(), setup.choice.clone());
    let mut analyzer = Analyzer::new(setup.settings.clone(), setup.engine.clone())
        .map_err(|e| Error::analysis(&reference.source, e))?;
    analyzer.set_reference(&reference.frame).map_err(|e| Error::analysis(&reference.source, e))?;
    let (grid, scaling) = match (analyzer.grid(), analyzer.scaling()) {
        (Some(g), Some(s)) => (g, s),
        _ => return Err(Error::Usage("internal: reference not set".into())),
    };
    tracing::info!("{}", grid.remainder_note());

    let bar = crate::progress::items_bar(inputs.len() as u64, "comparing frames");
    let mut results: Vec<(FrameAnalysis, f64)> = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let t = Instant::now();
        let a = analyzer.analyse(&input.frame).map_err(|e| Error::analysis(&input.source, e))?;
        results.push((a, t.elapsed().as_secs_f64() * 1e3));
        bar.inc(1);
    }
    bar.finish_and_clear();

    report::ensure_dir(&opts.out)?;
    // The colour scale's threshold mark: the series' threshold once known.
    let threshold = results
        .iter()
        .rev()
        .find_map(|(a, _)| a.summary.threshold)
        .unwrap_or(setup.settings.metric.typical_threshold());
    let threshold_text = analyzer.noise_floor().map_or(setup.settings.threshold.describe(), |f| f.describe());
    let vmax =
        results.iter().filter_map(|(a, _)| a.summary.max_dissimilarity).fold(2.0 * threshold as f64, f64::max) as f32;
    let warning = provenance.weights.as_ref().and_then(|w| w.origin.picture_warning());
    let mut frames = Vec::with_capacity(results.len());
    for (i, ((a, ms), input)) in results.iter().zip(&inputs).enumerate() {
        let index = i + 1;
        let png = format!("frame_{index:04}.png");
        let shown: &Frame = a.aligned.as_ref().unwrap_or(&input.frame);
        let s = &a.summary;
        let subtitle = format!(
            "mean {}, max {}; {}{}",
            sig(s.mean_dissimilarity.unwrap_or(f64::NAN), 4),
            sig(s.max_dissimilarity.unwrap_or(f64::NAN), 4),
            match (s.fraction_above_threshold, s.damaged_area_fraction) {
                (Some(f), Some(a)) => {
                    format!("{}% of patches significant; damaged area {}%", sig(100.0 * f, 3), sig(100.0 * a, 3))
                }
                _ => "calibration frame (sets the noise floor)".into(),
            },
            a.shift.map(|d| format!("; drift ({:+.2}, {:+.2}) px", d.dx_px, d.dy_px)).unwrap_or_default()
        );
        let canvas = overlay::render(&Overlay {
            frame: shown,
            map: &a.map,
            vmax,
            threshold,
            title: format!("frame {index} vs reference — {}: {}", provenance.metric.name, short(&input.source)),
            subtitle,
            colorbar_label: provenance.metric.dissimilarity.to_string(),
            warning: warning.clone(),
            // Image files carry no pixel size here: no scale bar (the picture says so).
            pixel_size_nm: None,
        })?;
        canvas.save_png(&opts.out.join(&png))?;
        frames.push(FrameReport {
            index,
            source: input.source.clone(),
            dtype: input.frame.dtype(),
            invalid_px: input.frame.n_invalid(),
            shift: a.shift,
            summary: a.summary.clone(),
            overlay_png: png,
            analysis_ms: *ms,
        });
    }
    let csv_path = opts.out.join("similarity.csv");
    let maps: Vec<(usize, &crate::damage::SimilarityMap)> =
        results.iter().enumerate().map(|(i, (a, _))| (i + 1, &a.map)).collect();
    csv::write(&csv_path, &maps)?;
    let json_path = opts.out.join("summary.json");
    let summary = CompareSummary {
        provenance,
        reference: ReferenceReport {
            source: reference.source.clone(),
            width_px: reference.frame.width(),
            height_px: reference.frame.height(),
            dtype: reference.frame.dtype(),
            invalid_px: reference.frame.n_invalid(),
        },
        grid,
        remainder: grid.remainder_note(),
        scaling,
        colour_scale_max: vmax,
        threshold: threshold_text,
        noise_floor: analyzer.noise_floor().cloned(),
        frames,
        files: Files { similarity_csv: csv_path.display().to_string(), summary_json: json_path.display().to_string() },
    };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::Output { path: json_path.clone(), problem: e.to_string() })?;
    report::write_atomic(&json_path, &json)?;
    Ok(summary)
}

fn short(source: &str) -> &str {
    source.rsplit('/').next().unwrap_or(source)
}
