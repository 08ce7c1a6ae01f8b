//! # mimo-train
//!
//! Training MIMO with burn-train: learner steps, training metrics, RON experiment files,
//! checkpoints and resume, multi-device runs. Nothing lives here yet; the work is tracked
//! in the project's issues.
