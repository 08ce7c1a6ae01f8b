//! MIMO model files (`configs/mimo/*.ron`): the components by preset name or file, their
//! weights, the new modules' sizes, LoRA, loss weights and the aligner ablation switch.
//! [`MimoConfig::build`] turns one into a model, a tokenizer and a template.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{AlignerSizes, LossWeights, Mimo, MimoError, MimoModelConfig};
use crate::clip::ClipVisionConfig;
use crate::config::{ConfigError, ModelConfig, load_ron};
use crate::llm::lora::LoraConfig;
use crate::llm::{LlamaConfig, NewTokenInit};
use crate::loader::{LoadOptions, LoadReport};
use crate::sam::SamConfig;
use crate::tokenizer::MimoTokenizer;
use crate::tokenizer::conversation::Template;

/// Tokens MIMO adds to the LLaMA vocabulary, in the order the tokenizer adds them.
pub const ADDED_TOKEN_COUNT: usize = 6;
/// Position of `<SEG>` among them (`<p>`, `</p>`, `<SEG>`, `<image>`, `<im_start>`,
/// `<im_end>`).
pub const SEG_OFFSET: usize = 2;

/// Where the weights of each part come from; a part without a file is randomly
/// initialised (and [`MimoBuild::random_parts`] says so).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimoWeights {
    /// CLIP checkpoint (open_clip `.bin`/`.pth`, HF `.safetensors` or index).
    #[serde(default)]
    pub clip: Option<PathBuf>,
    /// SAM checkpoint (`sam_vit_h_4b8939.pth`, `.safetensors`).
    #[serde(default)]
    pub sam: Option<PathBuf>,
    /// LLM weights: an HF model directory or weights file.
    #[serde(default)]
    pub llm: Option<PathBuf>,
    /// A peft adapter directory (otherwise a fresh adapter from `lora`).
    #[serde(default)]
    pub adapter: Option<PathBuf>,
    /// Trained parts (new modules, mask decoder, token rows), as
    /// [`Mimo::save_trained_parts`] writes them.
    #[serde(default)]
    pub trained: Option<PathBuf>,
    /// Further trained parameters by burn path ([`Mimo::save_params`]), loaded last: what an
    /// experiment's `train_also` trained beyond MIMO's set.
    #[serde(default)]
    pub extra: Option<PathBuf>,
}

/// LoRA hyper-parameters of a model file (written to peft's `adapter_config.json` when
/// the adapter is saved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSettings {
    /// Rank.
    pub r: usize,
    /// Scale numerator (`scaling = alpha / r`).
    pub alpha: f64,
    /// Dropout on the adapter input during training.
    pub dropout: f64,
    /// Module names that get adapters (peft's suffix rule).
    pub target_modules: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        }
    }
}

impl LoraSettings {
    /// peft's configuration for these settings.
    pub fn to_peft(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            target_modules: crate::llm::lora::TargetModules::List(self.target_modules.clone()),
            ..LoraConfig::default()
        }
    }
}

/// A MIMO model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimoConfig {
    /// CLIP tower: a preset (`vit_h14`, `vit_l14`, `vit_l14_336`) or a RON file.
    pub clip: String,
    /// SAM: a preset (`vit_h`, `vit_l`, `vit_b`) or a RON file.
    pub sam: String,
    /// LLM: a preset (`vicuna_7b_v1_5`, `vicuna_7b_v1_3`, `llama2_7b`, `tiny`), an HF model
    /// directory or its `config.json`.
    pub llm: String,
    /// Weights of the parts (paths relative to the config file).
    #[serde(default)]
    pub weights: MimoWeights,
    /// `tokenizer.json` (default: the one in the LLM directory). Without one, ids follow
    /// the LISA layout: the six added tokens after the base vocabulary.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// The ablation switch: `true` is MIMO, `false` the paper's "w/o Aligner".
    pub aligner: bool,
    /// The aligner's sizes (used when `aligner` is true).
    pub aligner_sizes: AlignerSizes,
    /// The LoRA adapter created when no adapter file is given (LISA: r 8, alpha 16,
    /// dropout 0.05 on `q_proj`, `v_proj`).
    #[serde(default)]
    pub lora: LoraSettings,
    /// Loss weights (LISA: 1.0, 2.0, 0.5).
    #[serde(default)]
    pub loss: LossWeights,
    /// Conversation template: `vicuna_v1` (MIMO starts from Vicuna) or `llava_v1`.
    #[serde(default = "default_template")]
    pub template: String,
    /// How the whitespace next to `<p>`, `</p>`, `<SEG>`, ... is tokenised: `strip`
    /// (transformers 4.31, LISA's pin; the default) or `keep` (transformers ≥ 4.34).
    #[serde(default)]
    pub added_token_spaces: crate::tokenizer::AddedTokenSpaces,
    /// Rows added to `embed_tokens`/`lm_head` for the new tokens (transformers 4.31's
    /// N(0, 0.02), as LISA).
    #[serde(default = "default_init")]
    pub new_token_init: NewTokenInit,
    /// Train the whole `embed_tokens` and `lm_head` (LISA) besides the other trained parts.
    #[serde(default = "default_true")]
    pub train_token_embeddings: bool,
}

fn default_template() -> String {
    "vicuna_v1".into()
}

fn default_init() -> NewTokenInit {
    NewTokenInit::Normal { std: 0.02 }
}

fn default_true() -> bool {
    true
}

/// A built model with what goes with it.
#[derive(Debug)]
pub struct MimoBuild<B: Backend> {
    /// The model.
    pub model: Mimo<B>,
    /// Its resolved sizes.
    pub config: MimoModelConfig,
    /// The tokenizer, when one was given or found.
    pub tokenizer: Option<MimoTokenizer>,
    /// The conversation template.
    pub template: Template,
    /// Parts without weights (randomly initialised).
    pub random_parts: Vec<&'static str>,
    /// Checkpoint keys that were not used, per part.
    pub unused: Vec<(&'static str, Vec<String>)>,
    /// Rows of the LLM's own vocabulary: MIMO's added tokens are the rows from here on
    /// (see [`super::Mimo::with_new_token_rows_trainable`]).
    pub base_vocab_size: usize,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn component<C: ModelConfig>(field: &str, name: &str, base: &Path) -> Result<C, ConfigError> {
    if let Some(c) = C::preset(name) {
        return Ok(c);
    }
    let path = resolve(base, Path::new(name));
    if !path.exists() {
        return ConfigError::invalid(
            field,
            format!(
                "`{name}` is neither a preset ({}) nor an existing file",
                C::PRESET_NAMES.join(", ")
            ),
        );
    }
    C::load(&path)
}

/// The `mimo_7b` model file (`configs/mimo/mimo-7b.ron`: CLIP ViT-H/14, SAM ViT-H, Vicuna-7B
/// v1.5, all presets, no weights), embedded.
const MIMO_7B: &str = include_str!("../../../configs/mimo/mimo-7b.ron");

impl ModelConfig for MimoConfig {
    const PRESET_NAMES: &'static [&'static str] = &["mimo_7b"];

    fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        MimoConfig::load(path)
    }

    /// `mimo_7b`: the paper's model without weights (point `weights` at checkpoints, or use
    /// [`MimoConfig::with_checkpoint`]).
    fn preset(name: &str) -> Option<Self> {
        match name {
            "mimo_7b" => crate::config::parse_ron(MIMO_7B).ok(),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        MimoConfig::validate(self)
    }
}

impl MimoConfig {
    /// Reads a model file; the error names the file and the field.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let cfg: Self = load_ron(path)?;
        cfg.validate().map_err(|e| e.in_file(path))?;
        Ok(cfg)
    }

    /// Points the adapter and trained parts at a checkpoint directory written by
    /// [`Mimo::save_checkpoint`]; the error names what is missing.
    pub fn with_checkpoint(mut self, dir: &Path) -> Result<Self, ConfigError> {
        // `dir` is relative to the working directory (where it was checked), not to the
        // model file that `build` resolves the other paths against.
        let dir = &std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let adapter = dir.join(super::load::ADAPTER_DIR);
        let trained = dir.join(super::load::TRAINED_FILE);
        for p in [&adapter, &trained] {
            if !p.exists() {
                return ConfigError::invalid(
                    "checkpoint",
                    format!(
                        "{} is not a MIMO checkpoint directory: {} is missing",
                        dir.display(),
                        p.display()
                    ),
                );
            }
        }
        self.weights.adapter = Some(adapter);
        self.weights.trained = Some(trained);
        let extra = dir.join(super::load::EXTRA_FILE);
        self.weights.extra = extra.is_file().then_some(extra);
        Ok(self)
    }

    /// Checks what can be checked without reading the components.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if Template::by_name(&self.template).is_none() {
            return ConfigError::invalid(
                "template",
                format!("`{}`: expected vicuna_v1 or llava_v1", self.template),
            );
        }
        self.lora
            .to_peft()
            .validate()
            .map_err(|e| ConfigError::Invalid {
                field: "lora".into(),
                message: e.to_string(),
                file: None,
            })?;
        Ok(())
    }

    /// The LLM's own vocabulary size (before MIMO's added tokens), `base` resolving relative
    /// paths: the first row [`super::Mimo::with_new_token_rows_trainable`] splits off.
    pub fn base_vocab_size(&self, base: &Path) -> Result<usize, ConfigError> {
        Ok(self.llm_config(base)?.vocab_size)
    }

    /// The LLM's configuration (preset, directory or `config.json`).
    fn llm_config(&self, base: &Path) -> Result<LlamaConfig, ConfigError> {
        if let Some(c) = LlamaConfig::preset(&self.llm) {
            return Ok(c);
        }
        let path = resolve(base, Path::new(&self.llm));
        if !path.exists() {
            return ConfigError::invalid(
                "llm",
                format!(
                    "`{}` is neither a preset ({}) nor an HF model directory or config.json",
                    self.llm,
                    LlamaConfig::PRESETS.join(", ")
                ),
            );
        }
        LlamaConfig::load(path)
    }

    /// The tokenizer file, if any: `tokenizer`, else `tokenizer.json` in the LLM folder.
    pub fn tokenizer_path(&self, base: &Path) -> Option<PathBuf> {
        if let Some(t) = &self.tokenizer {
            return Some(resolve(base, t));
        }
        let llm = resolve(base, Path::new(&self.llm));
        let in_dir = if llm.is_dir() {
            llm.join("tokenizer.json")
        } else {
            llm.with_file_name("tokenizer.json")
        };
        in_dir.is_file().then_some(in_dir)
    }

    /// Resolves the components into sizes. `vocab_and_seg` is the tokenizer's vocabulary
    /// size and `<SEG>` id; without it the LISA layout is assumed (the six added tokens
    /// right after the base vocabulary).
    pub fn model_config(
        &self,
        base: &Path,
        vocab_and_seg: Option<(usize, u32)>,
    ) -> Result<MimoModelConfig, ConfigError> {
        let clip: ClipVisionConfig = component("clip", &self.clip, base)?;
        let sam: SamConfig = component("sam", &self.sam, base)?;
        let mut llm = self.llm_config(base)?;
        let (vocab, seg) = vocab_and_seg.unwrap_or((
            llm.vocab_size + ADDED_TOKEN_COUNT,
            (llm.vocab_size + SEG_OFFSET) as u32,
        ));
        llm.vocab_size = llm.vocab_size.max(vocab);
        let cfg = MimoModelConfig {
            clip,
            sam,
            llm,
            aligner: self.aligner.then(|| self.aligner_sizes.clone()),
            lora: Some(self.lora.to_peft()),
            loss: self.loss,
            seg_token_id: seg,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Builds the model on `device`: components from their checkpoints (or random), the
    /// vocabulary grown for MIMO's tokens, the adapter (loaded or fresh), the new modules
    /// (initialised as [`Mimo::from_parts`] says, or from the trained-parts file) and the
    /// trainable set. Relative paths are relative to `base` (the config file's folder).
    ///
    /// `options` is a `&B::Device` (f32) or [`LoadOptions`]: with bf16 the component
    /// checkpoints are read straight into bf16 (a 7B LLM is never held in f32) and the whole
    /// model ends in that dtype.
    pub fn build<B: Backend>(
        &self,
        base: &Path,
        options: impl Into<LoadOptions<B>>,
    ) -> Result<MimoBuild<B>, MimoError> {
        let options = options.into();
        let device = &options.device;
        self.validate()?;
        let tokenizer = match self.tokenizer_path(base) {
            Some(p) => Some(
                MimoTokenizer::from_file(&p)
                    .map_err(|e| MimoError::Input(e.to_string()))?
                    .with_added_token_spaces(self.added_token_spaces),
            ),
            None => None,
        };
        let vocab = tokenizer.as_ref().map(|t| (t.vocab_size(), t.ids().seg));
        let config = self.model_config(base, vocab)?;
        let mut random_parts = Vec::new();
        let mut unused = Vec::new();
        let mut note = |part: &'static str, r: LoadReport| {
            if !r.unused.is_empty() {
                unused.push((part, r.unused));
            }
        };
        let w = &self.weights;
        let clip = match &w.clip {
            Some(p) => {
                let (m, r) =
                    crate::clip::load::load_clip(&config.clip, resolve(base, p), options.clone())?;
                note("clip", r);
                m
            }
            None => {
                random_parts.push("clip");
                config.clip.init(device)
            }
        };
        let sam = match &w.sam {
            Some(p) => {
                let (m, r) =
                    crate::sam::load::load_sam(&config.sam, resolve(base, p), options.clone())?;
                note("sam", r);
                m
            }
            None => {
                random_parts.push("sam");
                config.sam.init(device)
            }
        };
        let mut llm_file_cfg = config.llm.clone();
        let llm = match &w.llm {
            Some(p) => {
                let path = resolve(base, p);
                // The checkpoint has the base vocabulary; grow it afterwards.
                llm_file_cfg.vocab_size = self.llm_config(base)?.vocab_size;
                let (m, r) = crate::llm::load::load_llama(&llm_file_cfg, path, options.clone())?;
                note("llm", r);
                m.resize_token_embeddings(config.llm.vocab_size, self.new_token_init)
            }
            None => {
                random_parts.push("llm");
                config.llm.init(device)
            }
        };
        let llm = match &w.adapter {
            Some(p) => llm.load_lora(resolve(base, p))?.0,
            None => llm.with_lora(&self.lora.to_peft())?.0,
        };
        let mut model = Mimo::from_parts(&config, clip, sam, llm)?;
        // Random parts are drawn now, from the backend's current seed: lazily, every clone
        // of the model would draw its own.
        crate::params::materialize(&model);
        if options.dtype != burn::tensor::DType::F32 {
            // The new modules and the adapter join the loaded parts' dtype (the trained-parts
            // and extra files below then load in it too).
            model = model.cast(options.dtype);
        }
        match &w.trained {
            Some(p) => {
                let (m, r) = model.load_trained_parts(resolve(base, p))?;
                note("trained", r);
                model = m;
            }
            None => random_parts.push("new modules"),
        }
        if let Some(p) = &w.extra {
            let (m, loaded) = model.load_params(resolve(base, p))?;
            model = m;
            // A part whose weights all came from the extra file is no longer random.
            random_parts.retain(|part| {
                let prefix = format!("{part}.");
                !loaded.iter().any(|l| l.starts_with(&prefix))
            });
        }
        let model = model.with_trainable_set(self.train_token_embeddings);
        let template = Template::by_name(&self.template).unwrap_or_else(Template::vicuna_v1);
        let base_vocab_size = self.llm_config(base)?.vocab_size.min(config.llm.vocab_size);
        Ok(MimoBuild {
            model,
            config,
            tokenizer,
            template,
            random_parts,
            unused,
            base_vocab_size,
        })
    }
}
