//! Alarms that come from the data: the same series analysed with two weight files of different
//! dissimilarity scale alarms on the same frame; the drift lock holds to 0.2 px or flags the frame
//! (replayed through the real binary); sub-pixel drift costs no patch.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use beamwatch::alarms::{Rule, default_rules};
use beamwatch::commands::evaluate::load;
use beamwatch::damage::{AnalysisSettings, Analyzer, Metric};
use beamwatch::engine::{BackendChoice, Engine, Network};
use beamwatch::evaluate::{Setting, SettingResult, evaluate};
use beamwatch::frame::Frame;
use beamwatch::patches::PatchStatus;
use beamwatch::register::Registration;
use beamwatch::simulate::series::{DriftJump, Series, SeriesSpec};
use beamwatch::weights::StateDict;
use common::{beamwatch, stderr, synthetic_weights};

fn write_series(dir: &Path, name: &str, spec: SeriesSpec) -> PathBuf {
    let path = dir.join(name);
    beamwatch::simulate::file::write(&Series::new(spec), &path, |_| {}).expect("series");
    path
}

fn rules() -> Vec<Rule> {
    default_rules().iter().map(|r| r.validate().expect("default rule")).collect()
}

fn engine(weights: &Path) -> Arc<Engine> {
    let sd = StateDict::read(weights).expect("weights");
    let net = Network::from_state_dict(&sd).expect("network");
    Arc::new(Engine::for_backend(&net, 20, 0, BackendChoice::Cpu).expect("engine"))
}

/// The synthetic weights with layer4's last batch-norm bias raised: every layer4 feature gains a
/// common offset, so every cosine moves towards 1 and the dissimilarity scale shrinks.
fn rescaled_weights(dir: &Path) -> PathBuf {
    let mut sd = StateDict::read(&synthetic_weights()).expect("weights");
    let bias = sd.tensors.get_mut("layer4.1.bn2.bias").expect("layer4.1.bn2.bias");
    for b in &mut bias.data {
        *b += 3.0;
    }
    let out = dir.join("rescaled.safetensors");
    beamwatch::weights::import::save(&sd, Default::default(), &out).expect("save");
    out
}

#[test]
fn two_weight_files_of_different_scale_alarm_on_the_same_frame() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut spec = SeriesSpec::new(160, 12, 5, 50.0);
    spec.seed = 4;
    let series = load(&write_series(tmp.path(), "s.h5", spec), None, None).expect("load");
    let setting = Setting { metric: Metric::Resnet18, prefilter_sigma_px: 2.0, registration: Registration::Subpixel };
    let base = AnalysisSettings::new(Metric::Resnet18);
    let run = |w: &Path| -> SettingResult {
        evaluate(&series, setting, &base, Some(engine(w)), &rules(), "damage-onset").expect("evaluate")
    };
    let a = run(&synthetic_weights());
    let b = run(&rescaled_weights(tmp.path()));
    let (ta, tb) = (a.threshold.expect("calibrated"), b.threshold.expect("calibrated"));
    // The rescaled copy really changes the scale...
    assert!(ta / tb > 2.0 || tb / ta > 2.0, "thresholds {ta} and {tb}: the copy did not change the scale");
    // ...and the alarm does not notice.
    assert!(a.alarm_frame.is_some(), "no alarm: {a:?}");
    assert_eq!(a.alarm_frame, b.alarm_frame, "synthetic {:?} vs rescaled {:?}", a.alarm_frame, b.alarm_frame);
    assert_eq!((a.false_alarms, b.false_alarms), (0, 0));
    assert!(a.onset_delay_frames.is_some_and(|d| (0..=2).contains(&d)), "delay {:?}", a.onset_delay_frames);
}

fn truth_drift(path: &Path) -> Vec<(f64, f64)> {
    let f = hdf5::File::open(path).expect("open");
    let d: ndarray::Array2<f64> = f.dataset("truth/drift_px").expect("drift").read().expect("read");
    d.outer_iter().map(|r| (r[0], r[1])).collect()
}

#[test]
fn replay_holds_the_drift_lock_or_flags_the_frame() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Slow drift, a stage jump between frames 7 and 8, and damage that has taken most of the
    // field by the last frames.
    let mut spec = SeriesSpec::new(192, 16, 4, 50.0);
    spec.drift_px_per_frame = (0.17, -0.12);
    spec.drift_jump = Some(DriftJump { at_frame: 8, dx_px: 6.0, dy_px: -4.0 });
    spec.max_radius_fraction = 0.7;
    spec.growth_dose_e_per_a2 = 0.6 * spec.dose_per_frame_e_per_a2();
    let input = write_series(tmp.path(), "jump.h5", spec);
    let out = tmp.path().join("out");
    let o = beamwatch(
        &["replay", input.to_str().expect("p"), "--out", out.to_str().expect("p"), "--metric", "psnr"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary")).expect("json");
    let series = &summary["series"];
    let truth = truth_drift(&input);
    let session = summary["outputs"]["session"].as_str().expect("results session");
    let reader = beamwatch::record::session::SessionReader::open(Path::new(session), false).expect("session");
    let analyses = reader.analyses().expect("analyses");
    let analysed: Vec<u64> = analyses.iter().map(|a| a.index).collect();
    for a in &analyses {
        let s = a.shift.expect("shift");
        let (tx, ty) = truth[a.index as usize];
        assert!(
            (s.dx_px - tx).abs() <= 0.2 && (s.dy_px - ty).abs() <= 0.2,
            "frame {}: measured ({:+.2}, {:+.2}) px, true ({tx:+.2}, {ty:+.2}) px",
            a.index,
            s.dx_px,
            s.dy_px
        );
    }
    // The jump frame is flagged — in the log, the summary and its registration notes — and not
    // compared; the frames after it are registered again.
    assert!(!analysed.contains(&8), "the jump frame was compared: {analysed:?}");
    assert!(analysed.iter().any(|&i| i > 8), "lock never re-acquired: {analysed:?}");
    let not_registered = series["frames_not_registered"].as_u64().expect("count");
    assert!(not_registered >= 1, "{series}");
    assert_eq!(analysed.len() as u64 + not_registered, 15, "every frame analysed or flagged: {series}");
    let notes = series["registration"].as_array().expect("notes");
    assert!(notes.iter().any(|n| n["first_frame"] == 8), "{notes:?}");
    assert!(log.contains("frame 8"), "no warning about frame 8: {log}");
}

#[test]
fn sub_pixel_drift_excludes_no_patch_and_large_drift_only_those_that_left() {
    // Frames enough that the drift stays slow (a few px per frame at most, as a stage drifts).
    for (total_px, frames) in [(0.1, 4), (0.3, 4), (0.5, 4), (0.7, 4), (0.9, 4), (12.3, 8)] {
        let mut spec = SeriesSpec::new(160, frames, 100, 100.0);
        let step = total_px / (frames - 1) as f64;
        spec.drift_px_per_frame = (step, -step / 2.0);
        let series = Series::new(spec);
        let frame = |i: usize| Frame::from_ints(160, 160, &series.frame(i).0, true).expect("frame");
        let mut a = Analyzer::new(AnalysisSettings::new(Metric::Psnr), None).expect("analyzer");
        a.set_reference(&frame(0)).expect("reference");
        for i in 1..frames {
            let r = a.analyse(&frame(i)).expect("analysed");
            let (dx, dy) = series.drift(i);
            let grid = r.map.grid;
            for (p, st) in r.map.status.iter().enumerate() {
                let (x, y) = grid.origin(p);
                // Output pixel x reads source x + dx: inside while that lies within (−1, n).
                let inside = |o: usize, d: f64| o as f64 + d > -1.0 && (o + 19) as f64 + d < 160.0;
                let truly_inside = inside(x, dx) && inside(y, dy);
                let excluded = *st == PatchStatus::OutsideOverlap;
                assert_eq!(
                    excluded, !truly_inside,
                    "drift ({dx:.2}, {dy:.2}) px, frame {i}, patch at ({x}, {y}): status {st:?}"
                );
            }
        }
    }
}
