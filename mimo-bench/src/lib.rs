//! # mimo-bench
//!
//! Measurement for MIMO. Today it holds [`perf`], the performance benchmarks of model
//! components (run with `mimo bench`; compare against PyTorch with
//! `scripts/bench_sam.sh`).
//!
//! Still to come (tracked in the issues): the paper's metrics (mIoU, cIoU, AP50, grounding
//! F1, BLEU-4, ROUGE-L, METEOR, VQA accuracy) and the evaluation runner that writes the
//! paper's tables.

#![warn(missing_docs)]

pub mod perf;
