//! A hub filled from recorded session files, for `beamwatch view`: each file (or each session file
//! of a folder, in name order) becomes one series of the page, told to the hub through the same
//! calls the live analysis makes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::hub::{FrameUpdate, Hub, HubMeta, Status};
use crate::patches::PatchGrid;
use crate::record::session::{SessionReader, is_session};
use crate::record::{FrameSource, ReadError};

/// The session files `path` names: itself, or the session files of a folder (name order).
pub fn session_files(path: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| ReadError::new(path, None, format!("cannot open: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| ReadError::new(path, None, format!("cannot list: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "h5") && is_session(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ReadError::new(path, None, "no beamwatch session files (*.h5) in this folder"));
    }
    Ok(files)
}

/// The page's heading for a recorded session: its provenance, from the first file.
pub fn meta(files: &[PathBuf]) -> HubMeta {
    let source = match files {
        [one] => format!("recorded session {}", one.display()),
        many => format!("{} recorded sessions in {}", many.len(), many[0].parent().unwrap_or(Path::new(".")).display()),
    };
    let provenance = files
        .first()
        .and_then(|f| SessionReader::open(f, true).ok())
        .and_then(|r| r.provenance_json())
        .and_then(|j| serde_json::from_str::<Value>(&j).ok())
        .map(|v| v.get("provenance").cloned().unwrap_or(v))
        .unwrap_or_default();
    HubMeta::of_json(&provenance, &source)
}

/// Tells `hub` everything `file` recorded: analyses, alarms, the summary, the last stored frame.
pub fn load(hub: &Hub, file: &Path) -> Result<(), ReadError> {
    let mut reader = SessionReader::open(file, true)?;
    let info = reader.info().clone();
    let parse = |j: Option<String>| j.and_then(|j| serde_json::from_str::<Value>(&j).ok());
    let summary = parse(reader.summary_json());
    let provenance = parse(reader.provenance_json()).unwrap_or_default();
    let settings = &provenance["provenance"]["settings"];
    let patch_px = settings["patch_px"].as_u64().map_or(20, |p| p as usize);
    let grid =
        PatchGrid::new(info.width, info.height, patch_px).map_err(|e| ReadError::new(file, None, e.to_string()))?;
    let analyses = reader.analyses()?;
    let image = match info.frames {
        0 => None,
        n => reader.read(n - 1).ok().map(|f| f.frame),
    };
    let s = summary.as_ref();
    let noise_floor = s.map(|s| &s["noise_floor"]).filter(|v| v.is_object());
    let calibration_frames: Vec<u64> = noise_floor
        .and_then(|n| n["frames"].as_array())
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let thresholds: Option<Vec<f32>> = match noise_floor {
        Some(n) => n["patch_threshold"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32)).collect()),
        None => s.and_then(|s| s["patch_threshold"]["dissimilarity"].as_f64()).map(|t| vec![t as f32; grid.len()]),
    };
    let timeline: Vec<&Value> =
        s.and_then(|s| s["timeline"].as_array()).map(|a| a.iter().collect()).unwrap_or_default();
    let pixel_size_a = s.and_then(|s| s["last_dose"]["pixel_size_a"]["value"].as_f64());
    let last = analyses.len().saturating_sub(1);
    let finite = |v: f64| v.is_finite().then_some(v);
    for (k, a) in analyses.iter().enumerate() {
        let point = timeline.iter().find(|p| p["frame"].as_u64() == Some(a.index));
        let calibrating =
            calibration_frames.contains(&a.index) || a.index <= calibration_frames.iter().copied().max().unwrap_or(0);
        hub.frame(FrameUpdate {
            series: &info.series,
            frame: a.index,
            dose: None,
            cumulative_e_per_a2: finite(a.cumulative_e_per_a2),
            summary: None,
            mean: finite(a.mean),
            area: point.and_then(|p| p["damaged_area_fraction"].as_f64()),
            above: point.and_then(|p| p["fraction_above_threshold"].as_f64()),
            shift: a.shift,
            grid,
            dissimilarity: &a.dissimilarity,
            status: &a.status,
            thresholds: if calibrating { None } else { thresholds.clone() },
            image: if k == last { image.as_ref() } else { None },
            pixel_size_a,
        });
    }
    for alarm in reader.alarms()? {
        if let Ok(v) = serde_json::from_str::<Value>(&alarm) {
            hub.alarm(&v);
        }
    }
    if let Some(s) = &summary {
        hub.series_ended(s);
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        hub.set_status(Status {
            frames_received: n("frames_received"),
            frames_analysed: n("frames_analysed"),
            frames_skipped: n("frames_skipped"),
            frames_rejected: n("analysis_errors"),
            frames_not_registered: n("frames_not_registered"),
            frames_without_patches: n("frames_without_patches"),
            alarms: s["alarms"].as_array().map_or(0, |a| a.len() as u64),
            recorder: Some(format!("recorded in {}", file.display())),
            cumulative_dose_e_per_a2: s["last_dose"]["cumulative_e_per_a2"].as_f64(),
            ..Status::default()
        });
    }
    Ok(())
}
