//! The crate-wide error: every module's error, plus the file or setting it concerns.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::damage::AnalysisError;
use crate::engine::EngineError;
use crate::imagefile::ReadError;
use crate::report::ReportError;
use crate::secondary::conductivity::ConductivityError;
use crate::secondary::map::MapError;
use crate::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Conductivity(#[from] ConductivityError),
    #[error(transparent)]
    Map(#[from] MapError),
    /// An analysis error about a particular input (file, page or frame).
    #[error("{source_name}: {error}")]
    Analysis { source_name: String, error: AnalysisError },
    #[error("{}: {problem}", path.display())]
    Output { path: PathBuf, problem: String },
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn analysis(source_name: impl Into<String>, error: AnalysisError) -> Self {
        Self::Analysis { source_name: source_name.into(), error }
    }
}
