//! # mimo-data
//!
//! The MIMOSeg data pipeline. Today it holds [`rle`], COCO run-length encoding of masks
//! (pycocotools-compatible), and [`record`], the JSONL record schema that the builder
//! writes and training and evaluation read.
//!
//! Still to come (tracked in the issues): sources (2D images, NIfTI volumes, DICOM), the
//! four perspectives, templates, knowledge base and Q&A generation, JSONL records, splits,
//! burn `Dataset`/`Batcher`, VQA benchmark readers and synthetic phantoms.

#![warn(missing_docs)]

pub mod batch;
pub mod build;
pub mod knowledge;
pub mod mix;
pub mod nifti_source;
pub mod phantom;
pub mod prompts;
pub mod qa;
pub mod record;
pub mod rle;
pub mod templates;
