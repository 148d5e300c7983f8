//! `beamwatch replay <file> --out DIR`: a recorded series through the daemon's own analysis (the
//! compute thread, alarm rules and recorder), as fast as the engine allows, then the reports:
//! the results session (HDF5), `summary.json`, per-frame overlays, the damage-versus-dose plot, the
//! critical-dose map and `report.html`.
//!
//! `--publish tcp://…` instead streams the file over ZeroMQ in a chosen wire format at a chosen
//! rate, so a recorded session can drive a live daemon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::alarms::sinks::SinkConfig;
use crate::config::Config;
use crate::decode::{FrameMsg, SeriesInfo, WireFormat, dectris_v1, dectris_v2, own};
use crate::dose::FrameDose;
use crate::frame::{Frame, PixelType};
use crate::ingest::Mode;
use crate::patches::PatchGrid;
use crate::decode::Message;
use crate::fourd::{ScanShape, ShapeSource};
use crate::pipeline::scans::ScanStage;
use crate::pipeline::{Handed, Pipeline, PipelineError, PipelineOptions, RecordedDose, WhenFull, runtime};
use crate::record::session::{SessionReader, StoredAnalysis};
use crate::record::{FrameSource, OpenOptions, ReadError, SourceInfo, open_source};
use crate::damage::PatchThreshold;
use crate::register::{self, Registration, Shift};
use crate::report::dose_plot::XAxis;
use crate::report::format::{dose as fmt_dose, sig};
use crate::report::provenance::Provenance;
use crate::report::{self, dose_map, dose_plot, html, overlay};
use crate::simulate::publish::{self as pubsock, PublishOptions, SendSocket};
use crate::telemetry::Percentiles;

pub struct ReplayOptions {
    pub input: PathBuf,
    pub dataset: Option<String>,
    pub frame_axis: Option<usize>,
    pub config: Config,
    pub out: PathBuf,
    /// Store the frames in the results session too (they are in the input already).
    pub record_frames: bool,
    /// Per-frame overlay pictures at most (evenly spread, plus alarm frames).
    pub overlays: usize,
    /// Serve the live view (`[view]`) while the replay runs, and after it until Ctrl-C.
    pub view: bool,
}

/// `summary.json` of a replay.
#[derive(Debug, Serialize)]
pub struct ReplaySummary {
    pub input: SourceInfo,
    pub provenance: Provenance,
    /// Where each dose input of the first frame came from.
    pub dose_inputs: Option<FrameDose>,
    pub series: Option<serde_json::Value>,
    pub frames: usize,
    pub frames_analysed: u64,
    pub analysis_errors: u64,
    pub seconds: f64,
    pub frames_per_s: f64,
    pub analysis_ms: Option<Percentiles>,
    /// Why the analysis died, when it did (the counts stop there).
    pub analysis_died: Option<String>,
    pub outputs: Outputs,
}

#[derive(Debug, Default, Serialize)]
pub struct Outputs {
    pub session: Option<PathBuf>,
    pub summary_json: PathBuf,
    pub report_html: PathBuf,
    pub damage_vs_dose_png: Option<PathBuf>,
    pub critical_dose_map_png: Option<PathBuf>,
    pub overlays: Vec<PathBuf>,
    pub alarm_log: PathBuf,
}

pub fn run(opts: &ReplayOptions) -> Result<ReplaySummary, Error> {
    let cfg = &opts.config;
    let rules = cfg.validate(Path::new("replay settings"))?;
    let open =
        OpenOptions { dataset: opts.dataset.clone(), frame_axis: opts.frame_axis, mask_gaps: cfg.analysis.mask_gaps };
    let mut source = open_source(&opts.input, &open)?;
    let mut info = source.info().clone();
    settle_dose_notes(&mut info.notes, &cfg.dose);
    if info.frames == 0 {
        return Err(ReadError::new(&opts.input, Some(&info.dataset), "no frames to replay").into());
    }
    for note in &info.notes {
        tracing::info!("{}: {note}", opts.input.display());
    }
    let setup = crate::damage::setup::prepare(&cfg.analysis)?;
    let patch = setup.settings.patch_px;
    // 4D-STEM: the frames are diffraction patterns; the analysed images are the scans, whose size
    // the scan stage knows.
    let fourd = cfg.fourd.enabled;
    if !fourd && (info.width < patch || info.height < patch) {
        let why = format!(
            "frames of {}×{} px are smaller than one {patch}×{patch} px patch: nothing to compare",
            info.width, info.height
        );
        return Err(ReadError::new(&opts.input, Some(&info.dataset), why).into());
    }
    report::ensure_dir(&opts.out)?;
    let settings = setup.settings.clone();
    let alarm_log = cfg.sinks.log.clone().unwrap_or_else(|| opts.out.join("alarms.jsonl"));
    let mut rec_cfg = cfg.record.clone();
    rec_cfg.frames_every = u32::from(opts.record_frames);
    let mut context = serde_json::Map::new();
    context.insert("config".into(), serde_json::to_value(cfg).unwrap_or_default());
    context.insert("input".into(), serde_json::to_value(&info).unwrap_or_default());
    let series = if info.series.is_empty() { "replay".to_string() } else { info.series.clone() };
    let start = SeriesInfo {
        series: series.clone(),
        format: WireFormat::Auto,
        frames_expected: Some(info.frames as u64),
        shape: Some((info.height, info.width)),
        dtype: Some(info.dtype),
        frame_time_s: None,
        dose: info.dose,
        scan_hint: info.scan_shape.map(|(rows, cols)| (ScanShape { rows, cols }, ShapeSource::FileMetadata)),
    };
    let rt = runtime()?;
    let source_text = format!("replay of {}", opts.input.display());
    let view = if opts.view {
        let provenance = Provenance::new(&setup.settings, setup.weights.as_ref(), setup.choice.clone());
        let meta = crate::view::HubMeta::of(&provenance, &source_text, true, &setup.backend_name());
        let mut cfg = cfg.clone();
        cfg.view.enabled = true;
        rt.block_on(crate::daemon::start_view(&cfg, meta, CancellationToken::new()))
    } else {
        None
    };
    let pipeline_opts = PipelineOptions {
        setup,
        rules,
        dose: cfg.dose.clone(),
        // A replay publishes nothing: its alarms go to the log, the session and the report.
        sinks: SinkConfig { pub_endpoint: None, ..cfg.sinks.clone() },
        alarm_log: alarm_log.clone(),
        record: Some((rec_cfg, opts.out.clone())),
        summaries_dir: opts.out.clone(),
        queue_frames: 4,
        // A replay can wait: every frame is analysed.
        skip_to_newest: false,
        source: source_text,
        context,
        cancel: CancellationToken::new(),
        view: view.as_ref().map(|(hub, _)| hub.clone()),
        // A replay waits for room in the budget rather than skipping.
        budget: crate::budget::Budget::from_config(&cfg.limits),
    };
    let bar = crate::progress::items_bar(info.frames as u64, "replaying frames");
    let t0 = Instant::now();
    let mut first_dose = None;
    let mut read_error = None;
    // (frame number, position in the file) of every frame read: the overlays look frames up by number.
    let mut positions: Vec<(u64, usize)> = Vec::with_capacity(info.frames.min(1 << 16));
    let finished = rt.block_on(async {
        let mut pipeline = Pipeline::start(pipeline_opts).await?;
        let provenance = pipeline.provenance().clone();
        // Patterns → scans in 4D-STEM mode; every message unchanged otherwise.
        let mut scans = ScanStage::from_config(cfg);
        let mut fed = Ok(());
        for m in scans.process(Message::SeriesStart(start), pipeline.stats()) {
            if fed.is_ok() {
                fed = pipeline.hand(m, None, Instant::now(), WhenFull::Wait).await.map(|_| ());
            }
        }
        for i in 0..info.frames {
            if fed.is_err() {
                break;
            }
            let f = match source.read(i) {
                Ok(f) => f,
                Err(e) => {
                    // A damaged frame is reported and the replay goes on with the next.
                    tracing::error!("{e}");
                    read_error.get_or_insert(e);
                    continue;
                }
            };
            positions.push((f.index, i));
            // A recorded dose belongs to a recorded frame, not to a pattern of a scan.
            let recorded = source.recorded_dose(i).filter(|_| !fourd).map(|(per_frame, cumulative)| RecordedDose {
                per_frame_e_per_a2: per_frame,
                cumulative_e_per_a2: cumulative,
                inputs: source.recorded_inputs(i),
            });
            let msg = FrameMsg {
                series: series.clone(),
                index: f.index,
                frame: f.frame,
                timestamp_ns: f.timestamp_ns,
                dose: f.dose,
                format: WireFormat::Auto,
                scan: None,
            };
            for m in scans.process(Message::Frame(Box::new(msg)), pipeline.stats()) {
                if fed.is_err() {
                    break;
                }
                fed = pipeline.hand(m, recorded, Instant::now(), WhenFull::Wait).await.map(|h| {
                    if let Handed::Frame(dose) = h {
                        first_dose.get_or_insert(dose);
                    }
                });
            }
            bar.inc(1);
        }
        if fed.is_ok() {
            for m in scans.process(Message::SeriesEnd { series: series.clone() }, pipeline.stats()) {
                if pipeline.hand(m, None, Instant::now(), WhenFull::Wait).await.is_err() {
                    break;
                }
            }
            let _ = pipeline.end_series(false).await;
        }
        Ok::<_, Error>((pipeline.finish().await, provenance))
    });
    let (finished, provenance) = finished?;
    let seconds = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // A dead analysis still leaves its reports: what was analysed, then the error.
    let (done, died) = match finished {
        Ok(r) => (r, None),
        Err(PipelineError::AnalysisDied { message, report }) => (*report, Some(message)),
        Err(e) => return Err(e.into()),
    };
    let session = done.recording.as_ref().and_then(|r| r.files.last().cloned());
    if done.recording.as_ref().is_some_and(|r| r.failed) {
        tracing::error!("the results session could not be written completely");
    }
    let mut outputs = Outputs {
        session: session.clone(),
        summary_json: opts.out.join("summary.json"),
        report_html: opts.out.join("report.html"),
        alarm_log,
        ..Outputs::default()
    };
    let series_json = session
        .as_deref()
        .and_then(|p| SessionReader::open(p, false).ok())
        .and_then(|r| r.summary_json())
        .and_then(|s| serde_json::from_str(&s).ok());
    let summary = ReplaySummary {
        input: info.clone(),
        provenance: provenance.clone(),
        dose_inputs: first_dose,
        series: series_json,
        frames: info.frames,
        frames_analysed: done.frames_analysed,
        analysis_errors: done.analysis_errors,
        seconds,
        frames_per_s: done.frames_analysed as f64 / seconds.max(1e-9),
        analysis_ms: done.analysis_ms,
        analysis_died: died.clone(),
        outputs: Outputs::default(),
    };
    if fourd {
        // The pictures are drawn over the file's frames, which here are diffraction patterns.
        tracing::info!("4D-STEM replay: the results session and summary.json hold the virtual images, spots and fits; no pictures");
    } else if let Some(path) = &session {
        write_reports(opts, source.as_mut(), &positions, path, &settings, &provenance, &summary, &mut outputs)?;
    }
    let summary = ReplaySummary { outputs, ..summary };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::Output { path: summary.outputs.summary_json.clone(), problem: e.to_string() })?;
    report::write_atomic(&summary.outputs.summary_json, &json)?;
    if let Some(e) = read_error {
        tracing::warn!("some frames could not be read; the first: {e}");
    }
    if let Some((_, server)) = view {
        rt.block_on(async {
            tracing::info!("replay done; the live view stays at {} until Ctrl-C", server.url);
            let stop = CancellationToken::new();
            tokio::spawn(crate::daemon::stop_on_signal(stop.clone()));
            server.wait(stop).await;
        });
    }
    if let Some(message) = died {
        return Err(PipelineError::AnalysisDied { message, report: Box::new(done) }.into());
    }
    Ok(summary)
}

/// Frames to draw overlays for: evenly spread, plus the first frame of every alarm.
fn overlay_frames(analyses: &[StoredAnalysis], alarm_frames: &[u64], n: usize) -> Vec<usize> {
    let mut pick: Vec<usize> = if analyses.len() <= n {
        (0..analyses.len()).collect()
    } else {
        (0..n).map(|k| k * (analyses.len() - 1) / (n - 1).max(1)).collect()
    };
    for f in alarm_frames {
        if let Some(k) = analyses.iter().position(|a| a.index == *f) {
            pick.push(k);
        }
    }
    pick.sort_unstable();
    pick.dedup();
    pick
}

#[allow(clippy::too_many_arguments)]
fn write_reports(
    opts: &ReplayOptions,
    source: &mut dyn FrameSource,
    positions: &[(u64, usize)],
    session: &Path,
    settings: &crate::damage::AnalysisSettings,
    provenance: &Provenance,
    summary: &ReplaySummary,
    outputs: &mut Outputs,
) -> Result<(), Error> {
    let results = SessionReader::open(session, false)?;
    let analyses = results.analyses()?;
    let alarms: Vec<serde_json::Value> =
        results.alarms()?.iter().filter_map(|s| serde_json::from_str(s).ok()).collect();
    let info = source.info().clone();
    let grid = PatchGrid::new(info.width, info.height, settings.patch_px)
        .map_err(|e| ReadError::new(&info.path, Some(&info.dataset), e.to_string()))?;
    let warning = provenance.weights.as_ref().and_then(|w| w.origin.picture_warning());
    let fit: Option<crate::alarms::forecast::Fit> = summary
        .series
        .as_ref()
        .and_then(|s| s.get("critical_dose_fit"))
        .and_then(|f| serde_json::from_value(f.clone()).ok());
    // The series' own per-patch thresholds (as the alarms used them), or the fixed one.
    let floor: Option<crate::damage::NoiseFloor> =
        summary.series.as_ref().and_then(|s| s.get("noise_floor")).and_then(|f| serde_json::from_value(f.clone()).ok());
    let (thresholds, typical, threshold_text) = match (&floor, settings.threshold) {
        (_, PatchThreshold::Fixed { dissimilarity }) => {
            (vec![dissimilarity; grid.len()], dissimilarity, format!("{dissimilarity} (fixed)"))
        }
        (Some(f), _) => (f.thresholds(), f.median_threshold as f32, f.describe()),
        (None, t) => (
            vec![f32::NAN; grid.len()],
            settings.metric.typical_threshold(),
            format!("not calibrated: too few compared frames ({})", t.describe()),
        ),
    };
    let calibration: Vec<u64> = floor.as_ref().map(|f| f.frames.clone()).unwrap_or_default();
    // Against the cumulative dose when every analysed frame's dose is known, else the frame number.
    let axis = if analyses.is_empty() {
        if summary.dose_inputs.as_ref().is_some_and(|d| d.cumulative_e_per_a2.is_some()) {
            XAxis::Dose
        } else {
            XAxis::Frame
        }
    } else {
        XAxis::of(analyses.iter().map(|a| a.cumulative_e_per_a2))
    };
    let alarm_marks: Vec<(f64, String)> = alarms
        .iter()
        .filter_map(|a| {
            let x = match axis {
                XAxis::Dose => a.get("cumulative_dose_e_per_a2")?.as_f64()?,
                XAxis::Frame => a.get("frame")?.as_u64()? as f64,
            };
            Some((x, a.get("rule")?.as_str()?.to_string()))
        })
        .collect();
    // The scan pixel size for the scale bars: the frames' dose inputs (for a replayed session, the
    // ones it recorded), the file's metadata, or `[dose] pixel_size_a`.
    let known = |a: Option<f64>| a.filter(|a| a.is_finite() && *a > 0.0);
    let pixel_size: Option<(f64, &str)> = known(summary.dose_inputs.as_ref().and_then(|d| d.pixel_size_a.value))
        .map(|a| (a, "dose inputs"))
        .or_else(|| known(info.dose.pixel_size_a).map(|a| (a, "file metadata")))
        .or_else(|| known(opts.config.dose.pixel_size_a).map(|a| (a, "[dose] pixel_size_a")));
    let pixel_size_nm = pixel_size.map(|(a, _)| a / 10.0);
    let pixel_note = match pixel_size_nm {
        Some(nm) => format!("scale bar in nm (pixel size {} nm)", sig(nm, 4)),
        None => "pixel size unknown: no scale bar".to_string(),
    };

    // Damage (mean, and damaged area beside it) versus cumulative dose or frame.
    let points: Vec<(f64, f64)> = analyses
        .iter()
        .map(|a| (axis.x(a.index, a.cumulative_e_per_a2), a.mean))
        .filter(|(x, m)| x.is_finite() && m.is_finite())
        .collect();
    let area: Vec<(f64, f64)> = damaged_area(session)
        .iter()
        .zip(&analyses)
        .map(|(&f, a)| (axis.x(a.index, a.cumulative_e_per_a2), f))
        .filter(|(x, f)| x.is_finite() && f.is_finite())
        .collect();
    let versus = match axis {
        XAxis::Dose => "dose",
        XAxis::Frame => "frame",
    };
    let plot = dose_plot::render(&dose_plot::DosePlot {
        title: format!("damage versus {versus} — {}", info.series),
        subtitle: format!("{} · {}", provenance.metric.name, provenance.metric.dissimilarity),
        x_axis: axis,
        points: &points,
        area: &area,
        y_label: format!("mean {}", provenance.metric.dissimilarity),
        fit,
        threshold: None,
        alarms: &alarm_marks,
        warning: warning.clone(),
    })?;
    let plot_path = opts.out.join("damage_vs_dose.png");
    plot.save_png(&plot_path)?;
    outputs.damage_vs_dose_png = Some(plot_path);

    // Critical-dose map over the reference frame.
    let reference = source.read(0)?.frame;
    let frames: Vec<(u64, f64, &[f32])> =
        analyses.iter().map(|a| (a.index, a.cumulative_e_per_a2, a.dissimilarity.as_slice())).collect();
    let crossings = dose_map::series_crossings(&frames, &calibration, &thresholds, axis);
    let map = dose_map::render(&dose_map::DoseMap {
        reference: &reference,
        grid,
        first_crossing_dose: &crossings,
        axis,
        pixel_size_nm,
        title: format!("critical-dose map — {}", info.series),
        subtitle: format!(
            "{} at which each patch first exceeded its threshold on {}: {threshold_text}",
            match axis {
                XAxis::Dose => "dose",
                XAxis::Frame => "frame",
            },
            provenance.metric.dissimilarity
        ),
        warning: warning.clone(),
    })?;
    let map_path = opts.out.join("critical_dose_map.png");
    map.save_png(&map_path)?;
    outputs.critical_dose_map_png = Some(map_path);

    // Overlays of selected frames, on the drift-corrected frame.
    let alarm_frames: Vec<u64> = alarms.iter().filter_map(|a| a.get("frame")?.as_u64()).collect();
    let vmax = analyses
        .iter()
        .flat_map(|a| a.dissimilarity.iter().copied().filter(|v| v.is_finite()))
        .fold(2.0 * typical, f32::max);
    for k in overlay_frames(&analyses, &alarm_frames, opts.overlays.max(2)) {
        let a = &analyses[k];
        let pos = positions.iter().find(|(index, _)| *index == a.index).map(|&(_, i)| i);
        let Some(f) = pos.and_then(|i| source.read(i).ok()) else { continue };
        let shown: Frame = match a.shift {
            Some(s) if settings.registration != Registration::Off => {
                register::apply(&f.frame, Shift { peak: 1.0, ..s }, settings.registration).0
            }
            _ => f.frame,
        };
        let map = crate::damage::SimilarityMap {
            grid,
            similarity: a.similarity.clone(),
            dissimilarity: a.dissimilarity.clone(),
            status: a
                .status
                .iter()
                .map(|&s| match s {
                    0 => crate::patches::PatchStatus::Ok,
                    1 => crate::patches::PatchStatus::Filled(0),
                    2 => crate::patches::PatchStatus::Masked,
                    _ => crate::patches::PatchStatus::OutsideOverlap,
                })
                .collect(),
        };
        let canvas = overlay::render(&overlay::Overlay {
            frame: &shown,
            map: &map,
            vmax,
            threshold: typical,
            title: format!(
                "frame {} — {} — {}",
                a.index,
                if a.cumulative_e_per_a2.is_finite() {
                    format!("{} e⁻/Å²", fmt_dose(a.cumulative_e_per_a2))
                } else {
                    "dose unknown".to_string()
                },
                provenance.metric.name
            ),
            subtitle: format!(
                "mean {}{}",
                sig(a.mean, 4),
                a.shift.map(|s| format!("; drift ({:+.2}, {:+.2}) px", s.dx_px, s.dy_px)).unwrap_or_default()
            ),
            colorbar_label: provenance.metric.dissimilarity.to_string(),
            warning: warning.clone(),
            pixel_size_nm,
        })?;
        let p = opts.out.join(format!("frame_{:04}.png", a.index));
        canvas.save_png(&p)?;
        outputs.overlays.push(p);
    }

    // The report page.
    let mut rows = vec![
        vec!["input".to_string(), format!("{} ({:?}, {})", info.path.display(), info.layout, info.dataset)],
        vec!["frames".into(), format!("{} of {}×{} px ({})", info.frames, info.width, info.height, info.dtype.name())],
        vec![
            "analysed".into(),
            format!(
                "{} frames in {:.1} s ({:.2} frames/s)",
                summary.frames_analysed, summary.seconds, summary.frames_per_s
            ),
        ],
        vec!["metric".into(), provenance.metric_choice.clone()],
        vec![
            "weights".into(),
            provenance.weights.as_ref().map_or("none".into(), |w| format!("{} (sha256 {})", w.origin_label, w.sha256)),
        ],
        vec!["patch threshold".into(), format!("{threshold_text} on {}", provenance.metric.dissimilarity)],
    ];
    if let Some(d) = &summary.dose_inputs {
        rows.push(vec![
            "dose per frame".into(),
            d.per_frame_e_per_a2.map_or("unknown".into(), |v| format!("{} e⁻/Å²", fmt_dose(v))),
        ]);
        for (name, input) in
            [("beam current", &d.beam_current_pa), ("dwell time", &d.dwell_time_us), ("pixel size", &d.pixel_size_a)]
        {
            rows.push(vec![
                name.into(),
                format!("{} ({:?})", input.value.map_or("—".into(), |v| sig(v, 4)), input.source),
            ]);
        }
    }
    if let Some((a, from)) = pixel_size {
        rows.push(vec!["scale bars".into(), format!("pixel size {} Å ({from})", sig(a, 4))]);
    }
    let note = summary.series.as_ref().and_then(|s| s.get("critical_dose_note")).and_then(|n| n.as_str());
    rows.push(vec![
        "critical dose".into(),
        match fit {
            Some(f) => format!(
                "{} ± {} e⁻/Å² after an incubation dose of {} e⁻/Å²",
                fmt_dose(f.critical_dose_e_per_a2),
                fmt_dose(f.critical_dose_sigma_e_per_a2.unwrap_or(f64::NAN)),
                fmt_dose(f.onset_dose_e_per_a2)
            ),
            None => note.unwrap_or("not determined by this series").to_string(),
        },
    ]);
    let alarm_rows: Vec<Vec<String>> = alarms
        .iter()
        .map(|a| {
            let g = |k: &str| {
                a.get(k).map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).unwrap_or_default()
            };
            let dose = a.get("cumulative_dose_e_per_a2").and_then(|v| v.as_f64()).map_or("unknown".into(), fmt_dose);
            vec![g("frame"), g("level"), g("rule"), dose, g("message")]
        })
        .collect();
    let mut sections = vec![
        html::Section::Table { heading: "Summary".into(), header: vec!["".into(), "".into()], rows },
        html::Section::Paragraphs { heading: "Input notes".into(), paragraphs: info.notes.clone() },
    ];
    if let Some(p) = &outputs.damage_vs_dose_png {
        sections.push(html::Section::Image {
            heading: format!("Damage versus {versus}"),
            caption: match axis {
                XAxis::Dose => "mean dissimilarity of every analysed frame and the damaged area (right axis, %) \
                                against cumulative dose, with the fitted damage curve"
                    .into(),
                XAxis::Frame => "mean dissimilarity of every analysed frame and the damaged area (right axis, %) \
                                 against the frame number: the dose is unknown"
                    .into(),
            },
            png: p,
        });
    }
    if let Some(p) = &outputs.critical_dose_map_png {
        sections.push(html::Section::Image {
            heading: "Critical-dose map".into(),
            caption: format!(
                "{} at which each patch first crossed the patch threshold; {pixel_note}",
                match axis {
                    XAxis::Dose => "cumulative dose",
                    XAxis::Frame => "frame (dose unknown)",
                }
            ),
            png: p,
        });
    }
    sections.push(html::Section::Table {
        heading: "Alarms".into(),
        header: ["frame", "level", "rule", "cumulative dose (e⁻/Å²)", "message"].map(String::from).to_vec(),
        rows: alarm_rows,
    });
    sections.push(html::Section::Paragraphs {
        heading: "Dissimilarity maps".into(),
        paragraphs: vec![format!(
            "selected frames, drift-corrected, each patch tinted by its dissimilarity; {pixel_note}"
        )],
    });
    sections.push(html::Section::Gallery {
        heading: String::new(),
        images: outputs
            .overlays
            .iter()
            .map(|p| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), p.as_path()))
            .collect(),
    });
    let prov = serde_json::to_value(provenance).unwrap_or_default();
    sections.push(html::Section::Json { heading: "Provenance".into(), value: &prov });
    let warn_note = warning.map(|w| format!(" — {w}")).unwrap_or_default();
    html::write(
        &html::Report {
            title: format!("beamwatch replay — {}", info.series),
            subtitle: format!("{}{warn_note}", info.path.display()),
            sections,
        },
        &outputs.report_html,
    )?;
    Ok(())
}

/// The damaged-area share of every analysed frame, in the order of [`SessionReader::analyses`]
/// (NaN where not judged); empty if the session has no such column.
fn damaged_area(session: &Path) -> Vec<f64> {
    crate::record::session::open_file(session)
        .ok()
        .and_then(|f| f.dataset("analysis/damaged_area").ok()?.read_raw::<f64>().ok())
        .unwrap_or_default()
}

// ---- Publishing a file over ZeroMQ ----

pub struct PublishFileOptions {
    pub input: PathBuf,
    pub dataset: Option<String>,
    pub frame_axis: Option<usize>,
    pub publish: PublishOptions,
}

/// Streams the file's frames as one series; returns the frames sent.
pub fn publish_file(opts: &PublishFileOptions) -> Result<u64, Error> {
    let open = OpenOptions { dataset: opts.dataset.clone(), frame_axis: opts.frame_axis, mask_gaps: false };
    let mut source = open_source(&opts.input, &open)?;
    let info = source.info().clone();
    let p = &opts.publish;
    if p.format != WireFormat::Beamwatch && info.dtype == PixelType::F32 {
        return Err(Error::Usage(format!(
            "{}: float pixels: the DECTRIS formats carry integers; use --format beamwatch",
            opts.input.display()
        )));
    }
    runtime()?.block_on(async {
        let (mut out, ep) = pubsock::open(p).await?;
        if p.socket == SendSocket::Pub {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::info!("publishing {} ({} frames) on {ep} as {}", opts.input.display(), info.frames, p.format.name());
        let deadline = Instant::now() + Duration::from_secs_f64(p.wait_for_peer_s);
        let id = p.first_series_id;
        let (rows, cols, dtype) = (info.height, info.width, info.dtype);
        let start = match p.format {
            WireFormat::DectrisV1 => dectris_v1::encode_header(id, rows, cols, dtype, info.frames as u64, 0.0),
            WireFormat::DectrisV2 => {
                dectris_v2::encode_start(id, rows, cols, dtype, info.frames as u64, 0.0, &["threshold_1"])
            }
            _ => own::encode_start(&SeriesInfo {
                series: id.to_string(),
                format: WireFormat::Beamwatch,
                frames_expected: Some(info.frames as u64),
                shape: Some((rows, cols)),
                dtype: Some(dtype),
                frame_time_s: None,
                dose: info.dose,
                scan_hint: None,
            }),
        };
        pubsock::send(&mut out, start, deadline, &ep).await?;
        let period = Duration::from_secs_f64(1.0 / p.fps.max(1e-3));
        let mut next = Instant::now();
        let mut sent = 0;
        for i in 0..info.frames {
            let f = source.read(i)?;
            let bytes = le_bytes(&f.frame);
            let parts = match p.format {
                WireFormat::DectrisV1 => {
                    let enc = if p.encoding.is_empty() {
                        format!("bs{}-lz4<", dtype.bytes() * 8)
                    } else {
                        p.encoding.clone()
                    };
                    dectris_v1::encode_image(id, f.index, rows, cols, dtype, &bytes, &enc, 0)
                        .map_err(|e| crate::simulate::publish::PublishError::Encode(e.to_string()))?
                }
                WireFormat::DectrisV2 => {
                    let comp = if p.encoding.is_empty() { "bslz4" } else { p.encoding.as_str() };
                    dectris_v2::encode_image(id, f.index, rows, cols, dtype, &[("threshold_1", &bytes)], comp, 0)
                }
                _ => {
                    own::encode_frame(&id.to_string(), f.index, rows, cols, dtype, bytes, f.timestamp_ns, Some(f.dose))
                }
            };
            next += period;
            tokio::time::sleep_until(next.into()).await;
            pubsock::send(&mut out, parts, deadline, &ep).await?;
            sent += 1;
        }
        let end = match p.format {
            WireFormat::DectrisV1 => dectris_v1::encode_end(id),
            WireFormat::DectrisV2 => dectris_v2::encode_end(id),
            _ => own::encode_end(&id.to_string()),
        };
        pubsock::send(&mut out, end, deadline, &ep).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        out.close().await;
        Ok::<_, Error>(sent)
    })
}

/// Little-endian raw bytes of a frame in its own pixel type.
fn le_bytes(f: &Frame) -> Vec<u8> {
    match crate::record::session::Pixels::from_frame(f) {
        crate::record::session::Pixels::U8(v) => v,
        crate::record::session::Pixels::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        crate::record::session::Pixels::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        crate::record::session::Pixels::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Default publish options for `replay --publish`.
pub fn publish_options(endpoint: String, format: WireFormat, fps: f64) -> PublishOptions {
    PublishOptions { endpoint, mode: Mode::Bind, format, fps, ..PublishOptions::default() }
}


/// A note that a dose input is missing from the file is replaced by where it came from when the
/// command line or the configuration gives it.
fn settle_dose_notes(notes: &mut [String], dose: &crate::dose::DoseConfig) {
    use crate::record::readers::missing_dose_note;
    for (what, key, value, unit) in [
        ("beam current", "beam_current_pa", dose.beam_current_pa, "pA"),
        ("dwell time", "dwell_time_us", dose.dwell_time_us, "µs"),
        ("pixel size", "pixel_size_a", dose.pixel_size_a, "Å"),
    ] {
        let Some(v) = value else { continue };
        let missing = missing_dose_note(what, key);
        for n in notes.iter_mut().filter(|n| **n == missing) {
            *n = format!("{what} not in file: {v} {unit} from --{} / [dose] {key}", key.replace('_', "-"));
        }
    }
}
