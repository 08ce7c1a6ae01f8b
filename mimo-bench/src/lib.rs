//! # mimo-bench
//!
//! Measurement for MIMO: [`metrics`], the paper's metrics with the semantics of their
//! reference implementations (mIoU/cIoU/Dice, AP50, grounding F1, BLEU, ROUGE-L, VQA
//! accuracy), and [`perf`], the performance benchmarks of model components (run with
//! `mimo bench`; compare against PyTorch with `scripts/bench_*.sh`).
//!
//! Scoring lives in [`eval`] (prediction files, the paper's tables), [`heldout`] (benchmark
//! readers) and [`report`] (run comparisons and the data-ratio plot, drawn by [`plot`]).

#![warn(missing_docs)]

pub mod check;
pub mod eval;
pub mod heldout;
pub mod metrics;
pub mod perf;
pub mod plot;
pub mod predict;
pub mod report;
