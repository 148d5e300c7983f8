//! What people read and look at: per-patch CSV, summary JSON with provenance, PNG overlays.

pub mod auc_plot;
pub mod canvas;
pub mod csv;
pub mod dose_map;
pub mod dose_plot;
pub mod fading_plot;
pub mod format;
pub mod html;
pub mod overlay;
pub mod provenance;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum ReportError {
    #[error("{}: cannot write: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot encode PNG: {reason}", path.display())]
    Png { path: PathBuf, reason: String },
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// Writes `bytes` to `path` via a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let io = |source| ReportError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension(format!("{}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Creates `dir` (and parents) or says why not.
pub fn ensure_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_owned(), source })
}
