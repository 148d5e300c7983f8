//! A simulated series written to HDF5 with its ground truth: a beamwatch session file (so `replay`
//! reads it like any recording) plus a `/truth` group that `beamwatch evaluate` scores against.
//!
//! `/truth/damage` (N, H, W) f32 per-pixel damage 0..1 in reference-frame coordinates;
//! `/truth/drift_px` (N, 2) f64 true drift (x, y) of each frame; attributes `model`,
//! `onset_frame` (−1: none) and `electrons_per_px`.

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView3};

use super::Simulation;
use crate::decode::WireFormat;
use crate::dose::{FrameDose, Input, Source};
use crate::frame::PixelType;
use crate::record::session::{Pixels, ReceivedRow, RecordError, SessionMeta, SessionWriter};

fn err(path: &Path, what: &str) -> impl Fn(hdf5::Error) -> RecordError {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |source| RecordError { path: path.clone(), what: what.clone(), source }
}

/// Writes every frame of `series` and its truth to `path`; `on_frame` is told each frame written.
pub fn write(series: &dyn Simulation, path: &Path, mut on_frame: impl FnMut(usize)) -> Result<PathBuf, RecordError> {
    let (w, h) = series.size_px();
    let frames = series.frames();
    let dose = series.dose();
    let meta = SessionMeta {
        series: series.name(),
        source: series.describe(),
        format: WireFormat::Auto,
        width: w,
        height: h,
        dtype: PixelType::U16,
        patch_px: 20,
        grid_rows: h / 20,
        grid_cols: w / 20,
        frames_every: 1,
        deflate: 1,
        provenance_json: serde_json::json!({ "simulation": series.provenance() }).to_string(),
        fourd: None,
    };
    let mut writer = SessionWriter::create(path, meta)?;
    let known = |v| Input { value: Some(v), source: Source::SeriesHeader };
    let mut truth = Vec::with_capacity(frames * w * h);
    let mut drift = Array2::<f64>::zeros((frames, 2));
    for i in 0..frames {
        let (px, t) = series.frame(i);
        let dose = FrameDose {
            per_frame_e_per_a2: Some(dose.per_frame_e_per_a2),
            cumulative_e_per_a2: Some(t.cumulative_dose_e_per_a2),
            beam_current_pa: known(dose.beam_current_pa),
            dwell_time_us: known(dose.dwell_time_us),
            pixel_size_a: known(dose.pixel_size_a),
            per_frame_from_config: false,
            upper_estimate: false,
        };
        writer.received(&ReceivedRow { index: i as u64, received_unix_ns: 0, timestamp_ns: None, dose })?;
        writer.frame(i as u64, &Pixels::U16(px))?;
        truth.extend(series.truth_map(i));
        drift[[i, 0]] = t.drift_px.0;
        drift[[i, 1]] = t.drift_px.1;
        on_frame(i);
    }
    let path = writer.finish(None)?;
    let f = hdf5::File::open_rw(&path).map_err(err(&path, "reopen for the truth"))?;
    let g = f.create_group("truth").map_err(err(&path, "/truth"))?;
    let cube = ArrayView3::from_shape((frames, h, w), &truth[..]).map_err(|e| RecordError {
        path: path.clone(),
        what: format!("truth shape: {e}"),
        source: "shape".into(),
    })?;
    g.new_dataset::<f32>()
        .chunk((1, h, w))
        .deflate(1)
        .shape((frames, h, w))
        .create("damage")
        .and_then(|d| d.write(cube))
        .map_err(err(&path, "/truth/damage"))?;
    g.new_dataset_builder().with_data(&drift).create("drift_px").map_err(err(&path, "/truth/drift_px"))?;
    let onset = series.onset_frame().map_or(-1, |o| o as i64);
    g.new_attr::<i64>().create("onset_frame").and_then(|a| a.write_scalar(&onset)).map_err(err(&path, "onset"))?;
    g.new_attr::<f64>()
        .create("electrons_per_px")
        .and_then(|a| a.write_scalar(&series.electrons_per_px()))
        .map_err(err(&path, "electrons_per_px"))?;
    let model: hdf5::types::VarLenUnicode = series.model().name().parse().map_err(|_| RecordError {
        path: path.clone(),
        what: "model".into(),
        source: "utf8".into(),
    })?;
    g.new_attr::<hdf5::types::VarLenUnicode>()
        .create("model")
        .and_then(|a| a.write_scalar(&model))
        .map_err(err(&path, "model"))?;
    Ok(path)
}
