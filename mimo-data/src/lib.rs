//! # mimo-data
//!
//! The MIMOSeg data pipeline:
//!
//! - [`record`]: the JSONL record schema; [`rle`]: COCO run-length masks;
//! - [`build`]: datasets from a RON description (phantom, 2D folder and NIfTI sources,
//!   [`nifti_source`]; DICOM and DICOM-SEG, [`dicom_source`]), volume-wise splits and nested
//!   data-ratio subsets;
//! - [`templates`] (Appendix E.1, P-I/P-II), [`knowledge`] and [`qa`] (P-III/P-IV offline,
//!   answer validation), [`qa_endpoint`] and [`chat`] (P-III/P-IV written by a chat model
//!   behind an OpenAI-compatible endpoint: Appendix E.2 prompts, cache, retries, rejections),
//!   [`prompts`] (boxes and points from masks);
//! - [`phantom`]: synthetic scans with exact masks;
//! - [`batch`]: burn `Dataset`/`Batcher` for training; [`mix`]: weighted mixtures and the
//!   LLaVA-Med instruction reader.
//!
#![warn(missing_docs)]

pub mod batch;
pub mod build;
pub mod chat;
pub mod dicom_source;
pub mod knowledge;
pub mod mix;
pub mod nifti_source;
pub mod phantom;
pub mod prompts;
pub mod qa;
pub mod qa_endpoint;
pub mod record;
pub mod rle;
pub mod templates;
