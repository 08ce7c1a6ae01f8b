//! LLaMA configuration with the field names of HF's `config.json`, which it reads directly.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ModelConfig};

/// A LLaMA/Vicuna decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU hidden width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `None` = `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; `None` = `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Longest sequence the rotary cache covers.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base. transformers v5 writes it under `rope_parameters`; both are read.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// `lm_head` shares `embed_tokens`' weight.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_theta() -> f64 {
    10000.0
}

/// Rejects HF config settings whose math is not implemented (see
/// [`LlamaConfig::from_hf_json`]).
fn unsupported_hf_fields(v: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    let not_impl = |field: &str, got: &Value, what: &str| {
        Err(format!(
            "`{field}` = {got} is not supported ({what}); the model would compute other logits \
             than transformers"
        ))
    };
    if let Some(s) = v.get("rope_scaling").filter(|s| !s.is_null()) {
        return not_impl("rope_scaling", s, "only unscaled RoPE is implemented");
    }
    if let Some(t) = v
        .get("rope_parameters")
        .and_then(|p| p.get("rope_type"))
        .filter(|t| t.as_str() != Some("default"))
    {
        return not_impl(
            "rope_parameters.rope_type",
            t,
            "only unscaled (\"default\") RoPE is implemented",
        );
    }
    for field in ["attention_bias", "mlp_bias"] {
        if let Some(b) = v.get(field).filter(|b| b.as_bool() == Some(true)) {
            return not_impl(field, b, "LLaMA projections here have no bias");
        }
    }
    if let Some(a) = v
        .get("hidden_act")
        .filter(|a| !matches!(a.as_str(), Some("silu" | "swish")))
    {
        return not_impl("hidden_act", a, "the MLP uses SiLU");
    }
    Ok(())
}

impl LlamaConfig {
    fn llama_7b(rms_norm_eps: f64, max_pos: usize) -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(32),
            head_dim: None,
            max_position_embeddings: max_pos,
            rms_norm_eps,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: Some(0),
        }
    }

    /// `lmsys/vicuna-7b-v1.5` (LLaMA-2 base, RMSNorm eps 1e-5, 4096 positions).
    pub fn vicuna_7b_v1_5() -> Self {
        Self::llama_7b(1e-5, 4096)
    }

    /// `lmsys/vicuna-7b-v1.3` (LLaMA-1 base, eps 1e-6, 2048 positions).
    pub fn vicuna_7b_v1_3() -> Self {
        Self::llama_7b(1e-6, 2048)
    }

    /// `meta-llama/Llama-2-7b-hf`.
    pub fn llama2_7b() -> Self {
        Self::llama_7b(1e-5, 4096)
    }

    /// A tiny model for tests and the quickstart.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 512,
            hidden_size: 64,
            intermediate_size: 172,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            max_position_embeddings: 512,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: Some(0),
        }
    }

    /// Preset names.
    pub const PRESETS: [&'static str; 4] =
        ["vicuna_7b_v1_5", "vicuna_7b_v1_3", "llama2_7b", "tiny"];

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "vicuna_7b_v1_5" => Some(Self::vicuna_7b_v1_5()),
            "vicuna_7b_v1_3" => Some(Self::vicuna_7b_v1_3()),
            "llama2_7b" => Some(Self::llama2_7b()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_width(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Parses HF `config.json` text (v4: top-level `rope_theta`; v5: `rope_parameters`).
    ///
    /// Settings that change the computation and are not implemented here are errors naming
    /// the field, never silently dropped: RoPE scaling (`rope_scaling`, or a `rope_type`
    /// other than `default`), `attention_bias`, `mlp_bias`, and a `hidden_act` other than
    /// SiLU.
    pub fn from_hf_json(text: &str) -> Result<Self, String> {
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        unsupported_hf_fields(&value)?;
        if let Some(obj) = value.as_object_mut()
            && !obj.contains_key("rope_theta")
            && let Some(theta) = obj
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .cloned()
        {
            obj.insert("rope_theta".into(), theta);
        }
        let cfg: Self = serde_json::from_value(value).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// Reads `config.json` (a file, or the file inside a model directory).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io {
            path: file.clone(),
            source,
        })?;
        Self::from_hf_json(&text).map_err(|message| ConfigError::Parse {
            path: file,
            message,
        })
    }

    /// Checks the relations between fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = ConfigError::invalid::<()>;
        if self.num_attention_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.kv_heads().max(1))
        {
            return bad(
                "num_key_value_heads",
                format!(
                    "must divide num_attention_heads {} (got {})",
                    self.num_attention_heads,
                    self.kv_heads()
                ),
            );
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!("must divide hidden_size {}", self.hidden_size),
            );
        }
        if !self.head_width().is_multiple_of(2) {
            return bad("head_dim", "must be even (RoPE rotates pairs)".into());
        }
        Ok(())
    }
}

impl ModelConfig for LlamaConfig {
    const PRESET_NAMES: &'static [&'static str] = &Self::PRESETS;

    /// An HF `config.json`, or a model directory holding one (LLaMA configs come from HF
    /// exports, not RON files).
    fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        LlamaConfig::load(path)
    }

    fn preset(name: &str) -> Option<Self> {
        LlamaConfig::preset(name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        LlamaConfig::validate(self)
    }
}
