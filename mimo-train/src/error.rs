//! The error of a training run.

use crate::experiment::ExperimentError;

/// Why a run could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The experiment file is wrong.
    #[error(transparent)]
    Experiment(#[from] ExperimentError),
    /// Anything else, with what and where.
    #[error("{0}")]
    Other(String),
}

/// A [`TrainError::Other`] from any message.
pub(crate) fn other(e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(e.to_string())
}
