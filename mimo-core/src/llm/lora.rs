//! LoRA adapters compatible with peft: `y = W x + (B(A(dropout(x)))) · alpha / r`, A
//! kaiming-uniform and B zero at creation, base weights frozen, merge into and unmerge from
//! the base, and the peft file format (`adapter_config.json` + `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_{A,B}.weight`, PyTorch `[out, in]` layout), so
//! an adapter trained here loads in peft and the other way round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::Llama;
use crate::loader::{Checkpoint, LoadError, LoadReport, load_checkpoint_partial};

/// A linear layer that can carry a LoRA adapter. The base layer is a plain burn `Linear`
/// (`<name>.base.*`); the checkpoint dialect maps HF's `<name>.weight` onto it.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The (frozen) base projection.
    pub base: Linear<B>,
    /// `A`: `in -> r`, no bias.
    pub lora_a: Option<Linear<B>>,
    /// `B`: `r -> out`, no bias.
    pub lora_b: Option<Linear<B>>,
    /// Dropout on the adapter's input (active only on an autodiff backend).
    pub dropout: Dropout,
    /// `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub scaling: f64,
    /// Whether `B A · scaling` has been added to the base weight.
    pub merged: bool,
}

impl<B: Backend> LoraLinear<B> {
    /// A layer without adapter.
    pub fn new(base: Linear<B>) -> Self {
        Self {
            base,
            lora_a: None,
            lora_b: None,
            dropout: DropoutConfig::new(0.0).init(),
            scaling: 1.0,
            merged: false,
        }
    }

    /// Applies the layer to `[..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match (&self.lora_a, &self.lora_b) {
            (Some(a), Some(b)) if !self.merged => {
                let y = self.base.forward(x.clone());
                y + b
                    .forward(a.forward(self.dropout.forward(x)))
                    .mul_scalar(self.scaling)
            }
            _ => self.base.forward(x),
        }
    }

    /// Whether an adapter is attached.
    pub fn has_adapter(&self) -> bool {
        self.lora_a.is_some() && self.lora_b.is_some()
    }

    /// `B A · scaling` in burn's `[in, out]` layout.
    fn delta(&self) -> Option<Tensor<B, 2>> {
        let (a, b) = (self.lora_a.as_ref()?, self.lora_b.as_ref()?);
        Some(
            a.weight
                .val()
                .matmul(b.weight.val())
                .mul_scalar(self.scaling),
        )
    }

    /// Adds the adapter into the base weight (faster inference; the adapter stays).
    pub fn merge(&mut self) {
        if !self.merged
            && let Some(d) = self.delta()
        {
            self.base.weight = self.base.weight.clone().map(|w| w + d);
            self.merged = true;
        }
    }

    /// Subtracts a merged adapter from the base weight again.
    pub fn unmerge(&mut self) {
        if self.merged
            && let Some(d) = self.delta()
        {
            self.base.weight = self.base.weight.clone().map(|w| w - d);
            self.merged = false;
        }
    }
}

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
    /// Fully trained extra modules (not supported in adapter files; must be empty).
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

/// Marks every parameter as not requiring gradients, keeping lazy ones lazy (burn's
/// `Module::no_grad` would materialise a 7B model's weights).
struct Freeze;

impl<B: Backend> burn::module::ModuleMapper<B> for Freeze {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        param.set_require_grad(false)
    }
}

/// Projection names of a LLaMA layer that can take adapters.
pub const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

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
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad(
                "modules_to_save",
                "fully trained extra modules are not supported in adapters",
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
            "modules_to_save": null,
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

/// Maps one adapter file key to our module path (`...q_proj.lora_a.weight`), accepting the
/// saved form and the in-memory form with an adapter name (`lora_A.default.weight`).
fn adapter_module_path(key: &str) -> Option<String> {
    let key = key.strip_prefix("base_model.model.").unwrap_or(key);
    for (file, ours) in [("lora_A", "lora_a"), ("lora_B", "lora_b")] {
        if let Some(i) = key.find(&format!(".{file}.")) {
            let (module, rest) = (&key[..i], &key[i + file.len() + 2..]);
            if rest == "weight" || rest.ends_with(".weight") {
                return Some(format!("{module}.{ours}.weight"));
            }
        }
    }
    None
}

/// peft's file keys: `base_model.model.<module>.lora_{A,B}.weight` ->
/// `<module>.lora_{a,b}.weight`.
struct AdapterDialect;

impl crate::loader::Dialect for AdapterDialect {
    fn name(&self) -> &str {
        "peft LoRA adapter"
    }

    fn module_tensors(
        &self,
        key: &str,
        tensor: &burn_store::TensorSnapshot,
    ) -> Vec<(String, burn_store::TensorSnapshot)> {
        adapter_module_path(key)
            .map(|p| vec![(p, tensor.clone())])
            .unwrap_or_default()
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        let key = torch_path
            .replace(".lora_a.", ".lora_A.")
            .replace(".lora_b.", ".lora_B.");
        (format!("base_model.model.{key}"), torch_shape.to_vec())
    }
}

impl<B: Backend> Llama<B> {
    /// Every projection with its module path (`model.layers.3.self_attn.q_proj`) and layer.
    pub fn projections_mut(&mut self) -> Vec<(String, usize, &mut LoraLinear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.model.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            let m = &mut l.mlp;
            for (name, p) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), i, p));
            }
        }
        out
    }

    /// Freezes every existing parameter (as peft's `get_peft_model`) and attaches fresh
    /// adapters (A kaiming-uniform, B zero: the output is unchanged) to the targeted
    /// projections. Returns the number of adapted modules.
    pub fn with_lora(self, config: &LoraConfig) -> Result<(Self, usize), LoraError> {
        config.validate()?;
        let mut model = self.map(&mut Freeze);
        let device = model.model.embed_tokens.weight.lazy_device();
        let mut count = 0;
        let mut example = String::new();
        for (path, layer, proj) in model.projections_mut() {
            if example.is_empty() {
                example = path.clone();
            }
            if !config.targets(&path, layer) {
                continue;
            }
            // lazy_shape: dims() would materialise a lazily initialised base weight.
            let shape = proj.base.weight.lazy_shape();
            let (d_in, d_out) = (shape.as_slice()[0], shape.as_slice()[1]);
            proj.lora_a = Some(
                LinearConfig::new(d_in, config.r)
                    .with_bias(false)
                    .init(&device),
            );
            proj.lora_b = Some(
                LinearConfig::new(config.r, d_out)
                    .with_bias(false)
                    .with_initializer(Initializer::Zeros)
                    .init(&device),
            );
            proj.dropout = DropoutConfig::new(config.lora_dropout).init();
            proj.scaling = config.scaling();
            proj.merged = false;
            count += 1;
        }
        if count == 0 {
            return Err(LoraError::NoTarget {
                targets: serde_json::to_string(&config.target_modules).unwrap_or_default(),
                example,
            });
        }
        Ok((model, count))
    }

    /// Adds every adapter into its base weight.
    pub fn merge_lora(mut self) -> Self {
        for (_, _, p) in self.projections_mut() {
            p.merge();
        }
        self
    }

    /// Undoes [`Llama::merge_lora`].
    pub fn unmerge_lora(mut self) -> Self {
        for (_, _, p) in self.projections_mut() {
            p.unmerge();
        }
        self
    }

    /// Attaches the adapter of a peft directory (`adapter_config.json` +
    /// `adapter_model.safetensors` or `adapter_model.bin`): every adapter tensor the config
    /// implies must be in the file with its shape.
    pub fn load_lora(
        self,
        dir: impl AsRef<Path>,
    ) -> Result<(Self, LoraConfig, LoadReport), LoraError> {
        let dir = dir.as_ref();
        let config = LoraConfig::load(dir)?;
        let (model, _) = self.with_lora(&config)?;
        let file = ["adapter_model.safetensors", "adapter_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join("adapter_model.safetensors"));
        let checkpoint = Checkpoint::open(&file)?;
        // The adapter takes the base model's dtype.
        let dtype = model.dtype();
        let (model, report) = load_checkpoint_partial(
            model,
            &checkpoint,
            &AdapterDialect,
            &|p| p.contains(".lora_a.") || p.contains(".lora_b."),
            dtype,
        )?;
        Ok((model, config, report))
    }

    /// Writes the adapters as a peft directory (`adapter_config.json` and
    /// `adapter_model.safetensors`, keys and layouts as peft saves them), atomically.
    pub fn save_lora(&self, config: &LoraConfig, dir: impl AsRef<Path>) -> Result<(), LoraError> {
        let dir = dir.as_ref();
        let io = |path: &Path, e: std::io::Error| LoraError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, l) in self.model.layers.iter().enumerate() {
            for (name, p) in [
                ("self_attn.q_proj", &l.self_attn.q_proj),
                ("self_attn.k_proj", &l.self_attn.k_proj),
                ("self_attn.v_proj", &l.self_attn.v_proj),
                ("self_attn.o_proj", &l.self_attn.o_proj),
                ("mlp.gate_proj", &l.mlp.gate_proj),
                ("mlp.up_proj", &l.mlp.up_proj),
                ("mlp.down_proj", &l.mlp.down_proj),
            ] {
                let (Some(a), Some(b)) = (&p.lora_a, &p.lora_b) else {
                    continue;
                };
                for (tag, w) in [("lora_A", &a.weight), ("lora_B", &b.weight)] {
                    // burn [in, out] -> PyTorch [out, in]
                    let t = w.val().transpose();
                    let shape = t.dims().to_vec();
                    let data: TensorData = t.into_data().convert::<f32>();
                    let bytes = data.as_bytes().to_vec();
                    tensors.push((
                        format!("base_model.model.model.layers.{i}.{name}.{tag}.weight"),
                        shape,
                        bytes,
                    ));
                }
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(k, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| LoraError::Io {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let weights = dir.join("adapter_model.safetensors");
        crate::fsutil::write_atomic(&weights, &bytes).map_err(|e| io(&weights, e))?;
        let cfg = dir.join("adapter_config.json");
        crate::fsutil::write_atomic(&cfg, config.to_peft_json().as_bytes())
            .map_err(|e| io(&cfg, e))?;
        Ok(())
    }

    /// Number of trainable LoRA parameters.
    pub fn lora_param_count(&self) -> usize {
        self.model
            .layers
            .iter()
            .flat_map(|l| {
                [
                    &l.self_attn.q_proj,
                    &l.self_attn.k_proj,
                    &l.self_attn.v_proj,
                    &l.self_attn.o_proj,
                    &l.mlp.gate_proj,
                    &l.mlp.up_proj,
                    &l.mlp.down_proj,
                ]
            })
            .map(|p| {
                p.lora_a
                    .as_ref()
                    .map_or(0, |a| a.weight.shape().num_elements())
                    + p.lora_b
                        .as_ref()
                        .map_or(0, |b| b.weight.shape().num_elements())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests;
