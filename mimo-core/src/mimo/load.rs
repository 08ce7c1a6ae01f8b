//! MIMO's own checkpoint dialect: the modules MIMO adds to its components, under the keys a
//! PyTorch statement of the model uses (`vp_encoder.*`, `aligner.*`, `mm_projector.*`, and
//! LISA's `text_hidden_fcs.0.0.*` / `text_hidden_fcs.0.2.*`), and the trained parts file
//! (those modules plus SAM's mask decoder under segment_anything's `mask_decoder.*` keys and
//! the LLM's `model.embed_tokens.weight` / `lm_head.weight`), which sits next to a peft
//! adapter so a frozen 7B base is never copied per experiment.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_store::TensorSnapshot;

use super::Mimo;
use crate::loader::{
    Checkpoint, Dialect, LoadError, LoadReport, PrefixDialect, file_params, load_checkpoint_partial,
};

/// The new modules' file keys → module paths (only `text_hidden_fcs` is renamed: LISA's
/// `nn.Sequential` indices 0 and 2 are our `fc1`/`fc2`).
pub const NEW_MODULES: PrefixDialect = PrefixDialect {
    name: "MIMO new modules",
    renames: &[
        ("text_hidden_fcs.0.0.", "text_hidden_fcs.fc1."),
        ("text_hidden_fcs.0.2.", "text_hidden_fcs.fc2."),
    ],
};

/// Whether a module path belongs to a module MIMO adds (not to CLIP, SAM or the LLM).
pub fn is_new_module(path: &str) -> bool {
    [
        "vp_encoder.",
        "aligner.",
        "mm_projector.",
        "text_hidden_fcs.",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// The trained-parts file: new modules, SAM's mask decoder and the token rows.
#[derive(Debug, Clone, Copy)]
pub struct TrainedPartsDialect;

impl TrainedPartsDialect {
    fn to_module(key: &str) -> Option<String> {
        if let Some(rest) = key.strip_prefix("mask_decoder.") {
            return Some(format!(
                "sam.{}",
                crate::sam::load::DIALECT.to_module(&format!("mask_decoder.{rest}"))
            ));
        }
        if key == "model.embed_tokens.weight" || key == "lm_head.weight" {
            return Some(format!("llm.{key}"));
        }
        let path = NEW_MODULES.to_module(key);
        is_new_module(&path).then_some(path)
    }
}

impl Dialect for TrainedPartsDialect {
    fn name(&self) -> &str {
        "MIMO trained parts"
    }

    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)> {
        Self::to_module(key)
            .map(|p| vec![(p, tensor.clone())])
            .unwrap_or_default()
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        let key = if let Some(rest) = torch_path.strip_prefix("sam.") {
            crate::sam::load::DIALECT.to_file(rest)
        } else if let Some(rest) = torch_path.strip_prefix("llm.") {
            rest.to_string()
        } else {
            NEW_MODULES.to_file(torch_path)
        };
        (key, torch_shape.to_vec())
    }
}

/// Whether a module path is saved in the trained-parts file.
pub fn is_trained_part(path: &str) -> bool {
    is_new_module(path)
        || path.starts_with("sam.mask_decoder.")
        || path == "llm.model.embed_tokens.weight"
        || path.starts_with("llm.lm_head.")
}

/// The peft adapter's folder inside a MIMO checkpoint directory.
pub const ADAPTER_DIR: &str = "adapter";
/// The trained-parts file inside a MIMO checkpoint directory.
pub const TRAINED_FILE: &str = "trained.safetensors";

impl<B: Backend> Mimo<B> {
    /// Writes what training changed as a checkpoint directory: `adapter/` (peft format,
    /// readable by peft) and `trained.safetensors` ([`Mimo::save_trained_parts`]). The frozen
    /// components are not copied; a model file's `weights` point at them.
    pub fn save_checkpoint(
        &self,
        dir: impl AsRef<Path>,
        lora: &crate::llm::LoraConfig,
    ) -> Result<(), super::MimoError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            super::MimoError::Input(format!("cannot create {}: {e}", dir.display()))
        })?;
        self.llm.save_lora(lora, dir.join(ADAPTER_DIR))?;
        let file = dir.join(TRAINED_FILE);
        self.save_trained_parts(&file)
            .map_err(|e| super::MimoError::Input(format!("cannot write {}: {e}", file.display())))
    }

    /// Writes the whole model (every component, burn's parameter names and layouts) as one
    /// safetensors file, atomically (a temporary file renamed into place).
    pub fn save_full(&self, path: impl AsRef<Path>) -> Result<(), super::MimoError> {
        use burn_store::{ModuleSnapshot, SafetensorsStore};
        let path = path.as_ref();
        let err =
            |m: String| super::MimoError::Input(format!("cannot write {}: {m}", path.display()));
        let tmp = path.with_extension("safetensors.partial");
        let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
        self.save_into(&mut store).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Reads a file written by [`Mimo::save_full`] into this model (built from the same
    /// model file); a missing tensor or one of another shape is an error naming it. The
    /// trainable set is kept.
    pub fn load_full(mut self, path: impl AsRef<Path>) -> Result<Self, super::MimoError> {
        use burn_store::{ModuleSnapshot, SafetensorsStore};
        let path = path.as_ref();
        let err = |m: String| super::MimoError::Input(format!("{}: {m}", path.display()));
        if !path.is_file() {
            return Err(err("no such file".into()));
        }
        let mut store = SafetensorsStore::from_file(path);
        let result = self.load_from(&mut store).map_err(|e| {
            err(format!(
                "does not fit this model (saved from another model file?): {e}"
            ))
        })?;
        if let Some(e) = result.errors.first() {
            return Err(err(format!(
                "does not fit this model (saved from another model file?): {}",
                apply_error(e)
            )));
        }
        if !result.missing.is_empty() {
            let keys: Vec<&str> = result
                .missing
                .iter()
                .map(|(p, _)| p.as_str())
                .take(8)
                .collect();
            return Err(err(format!(
                "{} tensor(s) missing: {}",
                result.missing.len(),
                keys.join(", ")
            )));
        }
        Ok(self)
    }

    /// Loads the new modules (`vp_encoder`, `aligner`, `mm_projector`, `text_hidden_fcs`)
    /// from a file with [`NEW_MODULES`] keys; each must be present with its shape, other
    /// keys are reported unused. The trainable set is kept.
    pub fn load_new_modules(self, path: impl AsRef<Path>) -> Result<(Self, LoadReport), LoadError> {
        let checkpoint = Checkpoint::open(path)?;
        let dtype = self.dtype();
        load_checkpoint_partial(self, &checkpoint, &NEW_MODULES, &is_new_module, dtype)
    }

    /// Loads a trained-parts file written by [`Mimo::save_trained_parts`].
    pub fn load_trained_parts(
        self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, LoadReport), LoadError> {
        let checkpoint = Checkpoint::open(path)?;
        let dtype = self.dtype();
        load_checkpoint_partial(
            self,
            &checkpoint,
            &TrainedPartsDialect,
            &is_trained_part,
            dtype,
        )
    }

    /// Writes what training changes besides the LoRA adapter (new modules, SAM's mask
    /// decoder, `embed_tokens`, `lm_head`) as one safetensors file in PyTorch layouts,
    /// atomically.
    pub fn save_trained_parts(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let path = path.as_ref();
        let params = file_params(self, &TrainedPartsDialect);
        let mut values = Collect::<B>::default();
        self.visit(&mut values);
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for p in params.iter().filter(|p| is_trained_part(&p.module_path)) {
            let Some((shape, data)) = values.take(&p.module_path) else {
                continue;
            };
            let data = if p.transposed && shape.len() == 2 {
                let (r, c) = (shape[0], shape[1]);
                let mut t = vec![0f32; data.len()];
                for i in 0..r {
                    for j in 0..c {
                        t[j * r + i] = data[i * c + j];
                    }
                }
                t
            } else {
                data
            };
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((p.key.clone(), p.shape.clone(), bytes));
        }
        let views = tensors
            .iter()
            .map(|(k, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let bytes = safetensors::serialize(views, None).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(path, &bytes)
    }
}

/// A tensor burn-store could not apply, in words (a shape mismatch names both shapes).
fn apply_error(e: &burn_store::ApplyError) -> String {
    match e {
        burn_store::ApplyError::ShapeMismatch {
            path,
            expected,
            found,
        } => format!("`{path}` has shape {found:?} in the file but the model expects {expected:?}"),
        other => other.to_string(),
    }
}

/// The file of extra trained parameters inside a MIMO checkpoint directory (present when
/// an experiment trained more than MIMO's trainable set, e.g. a whole tiny LLM).
pub const EXTRA_FILE: &str = "extra.safetensors";

impl<B: Backend> Mimo<B> {
    /// Writes the parameters at the given burn module paths (e.g. `llm.model.layers.0.mlp.
    /// up_proj.weight`) under those names, in burn's layouts, atomically.
    pub fn save_params(
        &self,
        path: impl AsRef<Path>,
        paths: &[String],
    ) -> Result<(), super::MimoError> {
        use burn_store::{ModuleSnapshot, SafetensorsStore};
        let path = path.as_ref();
        let err =
            |m: String| super::MimoError::Input(format!("cannot write {}: {m}", path.display()));
        let tmp = path.with_extension("safetensors.partial");
        let mut store = SafetensorsStore::from_file(&tmp)
            .with_full_paths(paths.iter().cloned())
            .overwrite(true);
        self.save_into(&mut store).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Reads a file written by [`Mimo::save_params`]: every tensor in it must name a
    /// parameter of this model with the same shape. Returns the paths loaded.
    pub fn load_params(
        mut self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, Vec<String>), super::MimoError> {
        use burn_store::{ModuleSnapshot, ModuleStore, SafetensorsStore};
        let path = path.as_ref();
        let err = |m: String| super::MimoError::Input(format!("{}: {m}", path.display()));
        if !path.is_file() {
            return Err(err("no such file".into()));
        }
        let mut store = SafetensorsStore::from_file(path);
        let keys = store.keys().map_err(|e| err(e.to_string()))?;
        // Added-token rows trained apart (`with_new_token_rows_trainable`) load into a model
        // with whole matrices by splitting it the same way, loading, and merging back.
        let split_here = self.llm.new_token_rows.is_none()
            && keys.iter().any(|k| k.starts_with("llm.new_token_rows."));
        if split_here {
            let rows = tensor_shape(path, "llm.new_token_rows.embed")
                .map_err(err)?
                .first()
                .copied()
                .unwrap_or(0);
            let vocab = self.llm.vocab_size();
            if rows == 0 || rows >= vocab {
                return Err(err(format!(
                    "llm.new_token_rows.embed has {rows} rows but the model's vocabulary has \
                     {vocab} tokens"
                )));
            }
            let train_whole = self.train_token_embeddings;
            self.llm = self
                .llm
                .split_token_rows(vocab - rows)
                .map_err(|e| err(e.to_string()))?;
            let (m, applied) = self.load_params(path)?;
            let m = m.merge_token_rows().with_trainable_set(train_whole);
            return Ok((m, applied));
        }
        let mut store = SafetensorsStore::from_file(path)
            .with_full_paths(keys.iter().cloned())
            .allow_partial(true);
        // Tensors arrive in the file's dtype; each parameter keeps its own (a mixed-precision
        // training model has bf16 and f32 ones).
        let dtypes = crate::params::dtypes(&self);
        let result = self.load_from(&mut store).map_err(|e| err(e.to_string()))?;
        if let Some(e) = result.errors.first() {
            return Err(err(apply_error(e)));
        }
        if let Some(k) = result.unused.first() {
            return Err(err(format!(
                "{} tensor(s) name no parameter of this model, e.g. `{k}`",
                result.unused.len()
            )));
        }
        Ok((crate::params::cast_to_dtypes(self, &dtypes), result.applied))
    }
}

/// Float parameter values by burn path, as f32 in burn's layout.
struct Collect<B: Backend> {
    path: Vec<String>,
    values: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> Default for Collect<B> {
    fn default() -> Self {
        Self {
            path: Vec::new(),
            values: Default::default(),
            _b: std::marker::PhantomData,
        }
    }
}

impl<B: Backend> Collect<B> {
    fn take(&mut self, path: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        self.values.remove(path)
    }
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        if !is_trained_part(&path) {
            return;
        }
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        self.values.insert(path, (shape, data));
    }
}

/// The shape of tensor `key` in a safetensors file, from its header alone.
fn tensor_shape(path: &Path, key: &str) -> Result<Vec<usize>, String> {
    let (v, _) = crate::fsutil::safetensors_header(path)?;
    v.get(key)
        .and_then(|t| t.get("shape"))
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64())
                .map(|d| d as usize)
                .collect()
        })
        .ok_or_else(|| format!("no tensor `{key}` in the file"))
}
