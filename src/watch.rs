//! The exported-files source: image files the microscope PC writes into a folder become a live
//! series through the same [`Pipeline`] as the daemon's frames — analysis, alarms, recording, the
//! live view. Many labs cannot run code on the instrument PC but can export to a share.
//!
//! The folder is polled, not watched with inotify: exports usually land on network shares (SMB,
//! NFS), where file-system events do not arrive. A file is read once its size and modification time
//! have held still for `settle_s`; a file that still cannot be read (a slow writer paused longer
//! than that) is tried again until it is `give_up_s` old, then counted as rejected. Files are taken
//! in order of modification time, then name. A file in another sub-folder than the last one, or
//! after a pause longer than `new_series_after_s`, starts a new series.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::alarms::Rule;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::decode::{DoseHeader, FrameMsg, SeriesInfo, WireFormat};
use crate::pipeline::{ComputeGone, Pipeline, PipelineError, PipelineOptions, PipelineReport, WhenFull};
use crate::record::{OpenOptions, open_source};
use crate::report::provenance::Provenance;
use crate::view::HubMeta;

/// How the folder is watched.
#[derive(Clone, Debug, Serialize)]
pub struct WatchOptions {
    pub folder: PathBuf,
    /// Seconds between looks at the folder.
    pub poll_s: f64,
    /// A file is read once it has not changed for this long (s).
    pub settle_s: f64,
    /// A file that still cannot be read this long after it appeared is rejected (s).
    pub give_up_s: f64,
    /// A pause between files longer than this starts a new series (s).
    pub new_series_after_s: f64,
    /// Stop when no new file has come for this long (s); `None`: until Ctrl-C.
    pub exit_after_idle_s: Option<f64>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            folder: PathBuf::from("."),
            poll_s: 0.5,
            settle_s: 1.0,
            give_up_s: 60.0,
            new_series_after_s: 120.0,
            exit_after_idle_s: None,
        }
    }
}

/// What `watch` did (also `watch_report.json`).
#[derive(Clone, Debug, Serialize)]
pub struct WatchReport {
    pub started: String,
    pub stopped: String,
    pub folder: PathBuf,
    pub files_read: u64,
    pub files_rejected: u64,
    /// (file, why) of the most recent rejected files (at most 64).
    pub rejected: Vec<(PathBuf, String)>,
    pub frames_handed: u64,
    pub view_url: Option<String>,
    #[serde(flatten)]
    pub pipeline: PipelineReport,
}

/// What the watcher knows of one file.
struct Seen {
    size: u64,
    modified: SystemTime,
    first_seen: Instant,
    stable_since: Instant,
}

/// The series files go to now.
struct Open {
    id: String,
    dir: PathBuf,
    last_file: Instant,
    next_index: u64,
}

/// Names of files that are being written or are not data (editor and copy temporaries).
fn skipped_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('~')
        || [".tmp", ".part", ".partial", ".crdownload", ".json", ".txt", ".xml", ".ini"]
            .iter()
            .any(|x| name.to_ascii_lowercase().ends_with(x))
}

/// Files in `folder` and its sub-folders (one level), by modification time then name.
fn scan(folder: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut dirs = vec![(folder.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                if depth == 0 && !name.starts_with('.') {
                    dirs.push((path, depth + 1));
                }
            } else if meta.is_file() && !skipped_name(&name) {
                out.push((path, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    out.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    out
}

fn merged(frame: DoseHeader, file: DoseHeader) -> DoseHeader {
    DoseHeader {
        beam_current_pa: frame.beam_current_pa.or(file.beam_current_pa),
        dwell_time_us: frame.dwell_time_us.or(file.dwell_time_us),
        pixel_size_a: frame.pixel_size_a.or(file.pixel_size_a),
    }
}

/// Watches `opts.folder` until `cancel` fires (or the idle time passes) and analyses what appears.
pub async fn run(
    cfg: Config,
    rules: Vec<Rule>,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<WatchReport, Error> {
    let started = SystemTime::now();
    if !opts.folder.is_dir() {
        return Err(crate::record::ReadError::new(&opts.folder, None, "not a folder").into());
    }
    let internal = cancel.child_token();
    let _stop_on_return = internal.clone().drop_guard();
    let out = cfg.pipeline.out_dir.clone();
    crate::report::ensure_dir(&out)?;
    let setup = crate::damage::setup::prepare(&cfg.analysis)?;
    let source = format!("folder {}", opts.folder.display());
    let provenance = Provenance::new(&setup.settings, setup.weights.as_ref(), setup.choice.clone());
    let meta = HubMeta::of(&provenance, &source, true, &setup.backend_name());
    let view = crate::daemon::start_view(&cfg, meta, internal.clone()).await;
    let mut context = serde_json::Map::new();
    context.insert("config".into(), serde_json::to_value(&cfg).unwrap_or_default());
    context.insert("watch".into(), serde_json::to_value(&opts).unwrap_or_default());
    let hub = view.as_ref().map(|(hub, _)| hub.clone());
    let budget = crate::budget::Budget::from_config(&cfg.limits);
    let mut options =
        PipelineOptions::from_config(&cfg, setup, rules, source.clone(), context, internal.clone(), hub, budget);
    // Files wait on disk: every frame is analysed.
    options.skip_to_newest = false;
    let mut pipeline = Pipeline::start(options).await?;
    tracing::info!("watching {} for image files (every {} s)", opts.folder.display(), opts.poll_s);
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut done: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut open: Option<Open> = None;
    let mut series_n = 0u64;
    let (mut files_read, mut files_rejected, mut frames_handed) = (0u64, 0u64, 0u64);
    let mut rejected: Vec<(PathBuf, String)> = Vec::new();
    let mut last_activity = Instant::now();
    let poll = Duration::from_secs_f64(opts.poll_s.clamp(0.05, 60.0));
    let read_opts = OpenOptions { mask_gaps: cfg.analysis.mask_gaps, ..OpenOptions::default() };
    let mut alive: Result<(), ComputeGone> = Ok(());
    'watch: while alive.is_ok() {
        tokio::select! {
            _ = cancel.cancelled() => break 'watch,
            _ = tokio::time::sleep(poll) => {}
        }
        let now = Instant::now();
        for (path, size, modified) in scan(&opts.folder) {
            if done.contains(&path) {
                continue;
            }
            let s = seen.entry(path.clone()).or_insert(Seen { size, modified, first_seen: now, stable_since: now });
            if s.size != size || s.modified != modified {
                (s.size, s.modified, s.stable_since) = (size, modified, now);
                continue;
            }
            if now.duration_since(s.stable_since).as_secs_f64() < opts.settle_s || size == 0 {
                continue;
            }
            let first_seen = s.first_seen;
            // Read whole before anything is handed on: a file that fails half-way gives nothing.
            let read = open_source(&path, &read_opts).and_then(|mut src| {
                let info = src.info().clone();
                let frames = (0..info.frames).map(|i| src.read(i)).collect::<Result<Vec<_>, _>>()?;
                Ok((info, frames))
            });
            let (info, frames) = match read {
                Ok(r) => r,
                Err(e) if now.duration_since(first_seen).as_secs_f64() < opts.give_up_s => {
                    // Perhaps still being written by a writer that pauses: look again later.
                    tracing::debug!("{}: not readable yet ({e})", path.display());
                    if let Some(s) = seen.get_mut(&path) {
                        s.stable_since = now;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!("{e}: skipped");
                    files_rejected += 1;
                    if rejected.len() == 64 {
                        rejected.remove(0);
                    }
                    rejected.push((path.clone(), e.to_string()));
                    done.insert(path.clone());
                    seen.remove(&path);
                    continue;
                }
            };
            done.insert(path.clone());
            seen.remove(&path);
            files_read += 1;
            last_activity = now;
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let new_series = open.as_ref().is_none_or(|o| {
                o.dir != dir || now.duration_since(o.last_file).as_secs_f64() > opts.new_series_after_s
            });
            if new_series {
                if open.is_some() {
                    alive = pipeline.end_series(false).await;
                }
                series_n += 1;
                let name = dir.file_name().map_or("folder".into(), |n| n.to_string_lossy().into_owned());
                let id = format!("{name}-{series_n}");
                tracing::info!("series {id}: files from {}", dir.display());
                let start = SeriesInfo {
                    series: id.clone(),
                    format: WireFormat::Auto,
                    frames_expected: None,
                    shape: Some((info.height, info.width)),
                    dtype: Some(info.dtype),
                    frame_time_s: None,
                    dose: info.dose,
                    scan_hint: None,
                };
                if alive.is_ok() {
                    alive = pipeline.begin_series(start, false).await;
                }
                open = Some(Open { id, dir: dir.clone(), last_file: now, next_index: 0 });
            }
            let Some(o) = open.as_mut() else { continue };
            o.last_file = now;
            for f in frames {
                if alive.is_err() {
                    break;
                }
                let msg = FrameMsg {
                    series: o.id.clone(),
                    index: o.next_index,
                    frame: f.frame,
                    timestamp_ns: f.timestamp_ns,
                    dose: merged(f.dose, info.dose),
                    format: WireFormat::Auto,
                    scan: None,
                };
                o.next_index += 1;
                frames_handed += 1;
                alive = pipeline.frame(Box::new(msg), None, Instant::now(), WhenFull::Wait).await.map(|_| ());
            }
        }
        if let Some(idle) = opts.exit_after_idle_s
            && last_activity.elapsed().as_secs_f64() > idle
            && seen.is_empty()
        {
            tracing::info!("no new file for {idle} s: stopping as asked");
            break 'watch;
        }
    }
    if alive.is_err() {
        tracing::error!("the compute thread stopped; shutting down");
    }
    let (pipeline_report, died) = match pipeline.finish().await {
        Ok(r) => (r, None),
        Err(PipelineError::AnalysisDied { message, report }) => (*report, Some(message)),
        Err(e) => return Err(e.into()),
    };
    let report = WatchReport {
        started: rfc3339(started),
        stopped: rfc3339(SystemTime::now()),
        folder: opts.folder.clone(),
        files_read,
        files_rejected,
        rejected,
        frames_handed,
        view_url: view.as_ref().map(|(_, s)| s.url.clone()),
        pipeline: pipeline_report,
    };
    if let Some((_, server)) = view {
        server.stop().await;
    }
    let path = out.join("watch_report.json");
    match serde_json::to_vec_pretty(&report) {
        Ok(b) => crate::report::write_atomic(&path, &b)?,
        Err(e) => tracing::error!("watch report not serialised: {e}"),
    }
    match died {
        Some(message) => Err(PipelineError::AnalysisDied { message, report: Box::new(report.pipeline) }.into()),
        None => Ok(report),
    }
}
