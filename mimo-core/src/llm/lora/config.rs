//! peft's `adapter_config.json`: the LoRA hyper-parameters, their checks, and which of a
//! model's projections they target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::loader::LoadError;

/// Which modules get adapters: peft's `target_modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names; a module matches when its path equals a name or ends with `.name`.
    List(Vec<String>),
    /// A regular expression that must match the whole module path.
    Regex(String),
}

/// LoRA hyper-parameters, read from and written to peft's `adapter_config.json` (fields
/// peft writes that do not change the computation are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator.
    pub lora_alpha: f64,
    /// Dropout on the adapter input during training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Modules that get adapters (default `q_proj`, `v_proj` as LISA).
    #[serde(default = "default_targets")]
    pub target_modules: TargetModules,
    /// Only `"none"` is supported (LISA's setting).
    #[serde(default = "default_bias")]
    pub bias: String,
    /// rsLoRA scaling `alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA (not supported; rejected).
    #[serde(default)]
    pub use_dora: bool,
    /// Conv1D-style transposed weights (not used by LLaMA; rejected when set).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Restrict to these layer indices (`null`: all).
    #[serde(default)]
    pub layers_to_transform: Option<LayerSelection>,
    /// Per-module ranks (not supported; must be empty).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    /// Per-module alphas (not supported; must be empty).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    /// Fully trained modules saved in the adapter file beside the adapters: `embed_tokens`
    /// and/or `lm_head` (LISA trains both with its added tokens).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Where the base model came from (informational).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Every other field peft writes; those that would change the computation must be
    /// unset (see [`LoraConfig::validate`]).
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The modules `modules_to_save` may name.
pub const MODULES_TO_SAVE: [&str; 2] = ["embed_tokens", "lm_head"];

/// peft fields that change what an adapter computes and are not implemented here: they
/// must be absent, `null`, `false`, or empty.
const UNSUPPORTED: [&str; 9] = [
    "exclude_modules",
    "layer_replication",
    "target_parameters",
    "trainable_token_indices",
    "lora_bias",
    "use_qalora",
    "alora_invocation_tokens",
    "use_bdlora",
    "layers_pattern",
];

/// peft's `layers_to_transform`: one index or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerSelection {
    /// One layer.
    One(usize),
    /// Several layers.
    Many(Vec<usize>),
}

fn default_targets() -> TargetModules {
    TargetModules::List(vec!["q_proj".into(), "v_proj".into()])
}

fn default_bias() -> String {
    "none".into()
}

impl Default for LoraConfig {
    /// LISA's adapter: r 8, alpha 16, dropout 0.05 on `q_proj` and `v_proj`.
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            target_modules: default_targets(),
            bias: default_bias(),
            use_rslora: false,
            use_dora: false,
            fan_in_fan_out: false,
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            modules_to_save: None,
            base_model_name_or_path: None,
            other: BTreeMap::new(),
        }
    }
}

/// Why an adapter could not be created, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A configuration value is out of range or unsupported.
    #[error("LoRA config: `{field}`: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `target_modules` matched none of the model's projections.
    #[error("LoRA target_modules {targets} match none of the model's projections (e.g. {example})")]
    NoTarget {
        /// The targets, as written.
        targets: String,
        /// A module path that could be targeted.
        example: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
    /// The adapter weights do not fit the configuration or the model.
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl LoraConfig {
    /// Checks the values and rejects peft features this implementation does not have.
    pub fn validate(&self) -> Result<(), LoraError> {
        let bad = |field, message: &str| {
            Err(LoraError::Config {
                field,
                message: message.to_string(),
            })
        };
        if self.r == 0 {
            return bad("r", "must be at least 1");
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return bad("lora_alpha", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad("lora_dropout", "must be in [0, 1)");
        }
        if self.bias != "none" {
            return bad("bias", "only \"none\" is supported");
        }
        if self.use_dora {
            return bad("use_dora", "DoRA is not supported");
        }
        if self.fan_in_fan_out {
            return bad(
                "fan_in_fan_out",
                "LLaMA has no Conv1D layers; must be false",
            );
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return bad("rank_pattern", "per-module ranks/alphas are not supported");
        }
        if let Some(m) = self
            .modules_to_save
            .iter()
            .flatten()
            .find(|m| !MODULES_TO_SAVE.contains(&m.as_str()))
        {
            return bad(
                "modules_to_save",
                &format!("`{m}` is not supported: use embed_tokens and/or lm_head"),
            );
        }
        for field in UNSUPPORTED {
            let set = match self.other.get(field) {
                None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {
                    false
                }
                Some(serde_json::Value::Array(a)) => !a.is_empty(),
                Some(serde_json::Value::Object(o)) => !o.is_empty(),
                Some(_) => true,
            };
            if set {
                return bad(field, "this peft option is not supported; it must be unset");
            }
        }
        if matches!(self.target_modules, TargetModules::Regex(_))
            && self.layers_to_transform.is_some()
        {
            return bad(
                "layers_to_transform",
                "cannot be combined with a regular-expression target_modules (as in peft)",
            );
        }
        if let TargetModules::Regex(r) = &self.target_modules
            && let Err(e) = regex::Regex::new(&format!("^(?:{r})$"))
        {
            return bad(
                "target_modules",
                &format!("invalid regular expression: {e}"),
            );
        }
        Ok(())
    }

    /// Whether `modules_to_save` names `module` (`embed_tokens` or `lm_head`).
    pub fn saves(&self, module: &str) -> bool {
        self.modules_to_save.iter().flatten().any(|m| m == module)
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Whether the module at `path` (e.g. `model.layers.3.self_attn.q_proj`) gets an
    /// adapter, with peft's matching rules.
    pub fn targets(&self, path: &str, layer: usize) -> bool {
        let name_ok = match &self.target_modules {
            TargetModules::List(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            TargetModules::Regex(r) => regex::Regex::new(&format!("^(?:{r})$"))
                .map(|re| re.is_match(path))
                .unwrap_or(false),
        };
        name_ok
            && match &self.layers_to_transform {
                None => true,
                Some(LayerSelection::One(i)) => *i == layer,
                Some(LayerSelection::Many(v)) => v.contains(&layer),
            }
    }

    /// Reads `adapter_config.json` (or the one in a directory).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoraError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("adapter_config.json");
        }
        let io = |message: String| LoraError::Io {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| io(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| io(e.to_string()))?;
        if let Some(t) = value.get("peft_type").and_then(|v| v.as_str())
            && t != "LORA"
        {
            return Err(io(format!(
                "peft_type is {t}, only LORA adapters are supported"
            )));
        }
        let cfg: Self = serde_json::from_value(value).map_err(|e| io(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `adapter_config.json` text: the fields every peft version reads, so old (0.4,
    /// LISA's) and current peft both load it.
    pub fn to_peft_json(&self) -> String {
        let mut v = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.base_model_name_or_path,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules,
            "bias": self.bias,
            "fan_in_fan_out": false,
            "inference_mode": true,
            "modules_to_save": self.modules_to_save,
            "init_lora_weights": true,
            "revision": null,
        });
        if self.use_rslora {
            v["use_rslora"] = true.into();
        }
        if let Some(l) = &self.layers_to_transform {
            v["layers_to_transform"] = serde_json::to_value(l).unwrap_or_default();
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}
