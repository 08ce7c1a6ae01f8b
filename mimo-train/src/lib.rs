//! # mimo-train
//!
//! Training MIMO on burn-train's learner: the train and validation steps
//! ([`step::MimoTrainer`]), the dashboard metrics ([`metrics`]), RON experiment files with
//! base/override inheritance ([`experiment`]), the optimiser and DeepSpeed-style schedule
//! ([`optim`]), step checkpoints of the trained parts with exact resume ([`checkpoint`]),
//! and the run itself ([`train::train`]).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cluster;
pub mod collective;
mod error;
pub mod experiment;
pub mod metrics;
pub mod optim;
pub mod params;
mod prefetch;
pub mod renderer;
pub mod step;
mod strategy;
pub mod train;

pub use cluster::ClusterNode;
pub use experiment::{Experiment, ExperimentError};
pub use renderer::Display;
pub use train::{RunInfo, RunOutcome, TrainError, TrainOptions, train, train_with_all_reduce};

#[cfg(test)]
mod tests;
