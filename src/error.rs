//! The crate-wide error of the commands layer: every module's own error, by fault, with its source
//! kept. Modules below the commands return their own error types; this one only gathers them.
//!
//! | fault | variants |
//! |---|---|
//! | configuration | [`Error::Config`], [`Error::Usage`] (a command line that cannot work) |
//! | an input file | [`Error::Read`], [`Error::Analysis`] (a frame that cannot be analysed), [`Error::Evaluate`] |
//! | analysis set-up | [`Error::Weights`], [`Error::Setup`], [`Error::Engine`] (GPU and CPU engine) |
//! | sockets | [`Error::Ingest`], [`Error::Publish`], [`Error::Sinks`] |
//! | the running pipeline | [`Error::Pipeline`] (threads that would not start, an analysis that died) |
//! | outputs | [`Error::Report`], [`Error::Output`], [`Error::View`] (the live view's server) |
//! | secondary stages | `Error::Conductivity`, `Error::Map` |

use std::path::PathBuf;

use crate::alarms::sinks::SinkError;
use crate::config::ConfigError;
use crate::damage::{AnalysisError, SetupError};
use crate::engine::EngineError;
use crate::evaluate::EvaluateError;
use crate::imagefile::ReadError;
use crate::ingest::IngestError;
use crate::pipeline::PipelineError;
use crate::report::ReportError;
use crate::simulate::publish::PublishError;
use crate::view::ViewError;
use crate::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
#[must_use]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command line that cannot work (missing or contradictory options).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An analysis error about a particular input (file, page or frame).
    #[error("{source_name}: {error}")]
    Analysis { source_name: String, error: AnalysisError },
    /// A series with known damage that cannot be scored.
    #[error("{}: {error}", path.display())]
    Evaluate { path: PathBuf, error: EvaluateError },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Sinks(#[from] SinkError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{}: {problem}", path.display())]
    Output { path: PathBuf, problem: String },
    #[error(transparent)]
    View(#[from] ViewError),
    #[cfg(feature = "secondary")]
    #[error(transparent)]
    Conductivity(#[from] crate::secondary::conductivity::ConductivityError),
    #[cfg(feature = "secondary")]
    #[error(transparent)]
    Map(#[from] crate::secondary::map::MapError),
}

impl Error {
    pub fn analysis(source_name: impl Into<String>, error: AnalysisError) -> Self {
        Self::Analysis { source_name: source_name.into(), error }
    }

    /// Whether the analysis died (a panic on the compute thread) rather than failing to start.
    pub fn is_analysis_death(&self) -> bool {
        matches!(self, Self::Pipeline(PipelineError::AnalysisDied { .. }))
    }
}

/// `e` and its sources as one line, each cause printed once: a source whose text the line already
/// holds (many errors repeat their source in their own message) is not added again.
pub fn chain_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_line_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading {0}: {1}")]
        struct Repeats(&'static str, #[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("reading {0}")]
        struct Adds(&'static str, #[source] std::io::Error);
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let a = super::chain_line(&Repeats("a.h5", io()));
        assert_eq!(a, "reading a.h5: No such file or directory (os error 2)");
        let b = super::chain_line(&Adds("b.h5", io()));
        assert_eq!(b, "reading b.h5: No such file or directory (os error 2)");
    }
}
