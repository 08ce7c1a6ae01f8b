//! # mimo-bench
//!
//! Measurement for MIMO: [`metrics`], the paper's metrics with the semantics of their
//! reference implementations (mIoU/cIoU/Dice, AP50, grounding F1, BLEU, ROUGE-L, VQA
//! accuracy), and [`perf`], the performance benchmarks of model components (run with
//! `mimo bench`; compare against PyTorch with `scripts/bench_*.sh`).
//!
//! Still to come (tracked in the issues): METEOR, the benchmark readers, the prediction
//! file format and the evaluation runner that writes the paper's tables.

#![warn(missing_docs)]

pub mod eval;
pub mod heldout;
pub mod metrics;
pub mod perf;
pub mod plot;
pub mod report;
