//! A chat model opened in one call: an HF LLaMA/Vicuna model directory (`config.json`,
//! weights, `tokenizer.json`), MIMO's added tokens, and an optional peft LoRA adapter.
//!
//! [`ChatModel::open`] does the five steps a caller would otherwise repeat: read the
//! config, load the weights (on the device and in the dtype of the options), open the
//! tokenizer (adding `<p>`, `</p>`, `<SEG>`, `<image>`, `<im_start>`, `<im_end>` when missing),
//! grow the embeddings to the tokenizer's size, and attach (optionally merge) the adapter.
//! Nothing is printed: what happened is in the [`OpenReport`].

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::generate::{GeneratedText, generate_text};
use super::lora::{LoraConfig, LoraError};
use super::{GenerationConfig, Llama, LlamaConfig, NewTokenInit};
use crate::config::ConfigError;
use crate::llm::load::{load_llama, weights_file};
use crate::loader::{LoadError, LoadOptions, LoadReport};
use crate::tokenizer::conversation::Template;
use crate::tokenizer::{MimoTokenizer, TokenizerError};

/// How [`ChatModel::open`] builds the model.
#[derive(Debug, Clone)]
pub struct ChatOptions<B: Backend> {
    /// Device and weight dtype.
    pub load: LoadOptions<B>,
    /// A `tokenizer.json` (or a directory holding one) instead of the model directory's.
    pub tokenizer: Option<PathBuf>,
    /// Merge the adapter into the base weights (same outputs, faster decoding).
    pub merge_adapter: bool,
    /// How embedding rows for tokens the model lacks are initialised.
    pub new_token_init: NewTokenInit,
}

impl<B: Backend> ChatOptions<B> {
    /// f32 weights on `device`, the model directory's tokenizer, the adapter kept apart, new
    /// token rows as the mean of the existing ones (transformers' default).
    pub fn new(device: &B::Device) -> Self {
        Self {
            load: LoadOptions::new(device),
            tokenizer: None,
            merge_adapter: false,
            new_token_init: NewTokenInit::Mean,
        }
    }
}

impl<B: Backend> From<&B::Device> for ChatOptions<B> {
    fn from(device: &B::Device) -> Self {
        Self::new(device)
    }
}

impl<B: Backend> From<LoadOptions<B>> for ChatOptions<B> {
    fn from(load: LoadOptions<B>) -> Self {
        Self {
            load,
            ..Self::new(&Default::default())
        }
    }
}

/// Why a chat model could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The model path is not a directory.
    #[error("{0}: not a model directory (expected config.json, the weights and tokenizer.json)")]
    NotADirectory(PathBuf),
    /// `config.json` is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The weights could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The tokenizer could not be read.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The adapter could not be attached.
    #[error(transparent)]
    Lora(#[from] LoraError),
}

/// What [`ChatModel::open`] did.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The weights file read (a shard index for sharded checkpoints).
    pub weights: PathBuf,
    /// The base weights' load.
    pub base: LoadReport,
    /// `(model rows, tokenizer size)` when embedding rows were added for the tokenizer's
    /// extra tokens.
    pub added_rows: Option<(usize, usize)>,
    /// The adapter's config and load, when one was attached.
    pub adapter: Option<(LoraConfig, LoadReport)>,
}

/// A LLaMA model with its tokenizer, ready to generate.
#[derive(Debug)]
pub struct ChatModel<B: Backend> {
    /// The model (with the adapter attached or merged).
    pub model: Llama<B>,
    /// Its tokenizer, with MIMO's tokens.
    pub tokenizer: MimoTokenizer,
    /// The model's config as read from `config.json` (before rows were added).
    pub config: LlamaConfig,
}

impl<B: Backend> ChatModel<B> {
    /// Opens the model directory `dir` with an optional peft adapter directory
    /// (`adapter_config.json` + `adapter_model.safetensors`/`.bin`); `options` may be a
    /// `&B::Device` (f32), [`LoadOptions`] or [`ChatOptions`].
    pub fn open(
        dir: impl AsRef<Path>,
        adapter: Option<&Path>,
        options: impl Into<ChatOptions<B>>,
    ) -> Result<(Self, OpenReport), ChatError> {
        let dir = dir.as_ref();
        let options = options.into();
        if !dir.is_dir() {
            return Err(ChatError::NotADirectory(dir.to_path_buf()));
        }
        let config = LlamaConfig::load(dir)?;
        let tokenizer = MimoTokenizer::from_file(options.tokenizer.as_deref().unwrap_or(dir))?;
        let (mut model, base) = load_llama(&config, dir, options.load.clone())?;
        let mut added_rows = None;
        if tokenizer.vocab_size() > config.vocab_size {
            added_rows = Some((config.vocab_size, tokenizer.vocab_size()));
            model = model.resize_token_embeddings(tokenizer.vocab_size(), options.new_token_init);
        }
        let mut adapter_report = None;
        if let Some(adapter) = adapter {
            let (m, lora, report) = model.load_lora(adapter)?;
            model = if options.merge_adapter {
                m.merge_lora()
            } else {
                m
            };
            adapter_report = Some((lora, report));
        }
        let report = OpenReport {
            weights: weights_file(dir),
            base,
            added_rows,
            adapter: adapter_report,
        };
        Ok((
            Self {
                model,
                tokenizer,
                config,
            },
            report,
        ))
    }

    /// Answers each prompt (wrapped in `template`, or raw text without one) as one
    /// left-padded batch; `on_text(row, piece)` receives the text as it is decoded.
    pub fn generate(
        &self,
        template: Option<&Template>,
        prompts: &[String],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<GeneratedText>, TokenizerError> {
        generate_text(
            &self.model,
            &self.tokenizer,
            template,
            prompts,
            config,
            on_text,
        )
    }

    /// A generation config for this tokenizer: greedy, `max_new_tokens`, stopping at its
    /// EOS and padding with its pad token.
    pub fn greedy(&self, max_new_tokens: usize) -> GenerationConfig {
        let ids = self.tokenizer.ids();
        GenerationConfig {
            max_new_tokens,
            eos_token_id: vec![ids.eos],
            pad_token_id: ids.pad(),
            ..GenerationConfig::default()
        }
    }
}
