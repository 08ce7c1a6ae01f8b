//! # mimo-core
//!
//! The MIMO model, generic over the burn backend (`Module<B>` for any `B: Backend`):
//!
//! - [`clip`]: the CLIP ViT image encoder (HF and open_clip checkpoints);
//! - [`llm`]: the LLaMA/Vicuna decoder with KV cache, generation and LoRA (peft format);
//! - [`sam`]: Segment Anything (image encoder, prompt encoder, mask decoder) with the
//!   predictor's exact pre- and post-processing;
//! - [`tokenizer`]: the LLaMA tokenizer with MIMO's added tokens, conversation templates and
//!   LISA's label masking;
//! - [`loader`]: checkpoint dialects (remap tables, typed [`loader::LoadError`]);
//! - [`config`]: RON configuration files;
//! - [`nn`]: small shared layers;
//! - [`imageops`]: Pillow-exact resampling;
//! - [`fsutil`]: atomic file writes;
//! - [`rng`]: a seedable random generator.
//!
//! - [`prompt`]: the visual prompt encoder (points and boxes into the image-feature space);
//! - [`aligner`]: the multi-modal input aligner (learnable queries over image, prompt and
//!   instruction tokens);
//! - [`mimo`]: the MIMO model (sequence assembly, `<SEG>` grounding, LISA's losses, grounded
//!   answers).

#![warn(missing_docs)]

pub mod aligner;
pub mod clip;
pub mod config;
pub mod fsutil;
pub mod imageops;
pub mod llm;
pub mod loader;
pub mod mimo;
pub mod nn;
pub mod params;
pub mod prompt;
pub mod rng;
pub mod sam;
pub mod tokenizer;

pub use imageops::{Image, ImageError};

#[cfg(test)]
pub(crate) mod test_util;
