//! HF LLaMA checkpoints (`model.safetensors`, sharded `model.safetensors.index.json`, or
//! `pytorch_model.bin`). Our modules carry HF's names, except that each projection is a
//! [`crate::llm::LoraLinear`] whose base layer sits one level deeper; the rotary `inv_freq`
//! buffers of old checkpoints are not parameters and are reported unused.
//!
//! Memory: safetensors files are memory-mapped and each tensor is read when it is written
//! into its (lazily allocated) parameter, shard after shard, so loading never holds a second
//! copy of the weights.

use std::path::Path;

use burn::tensor::backend::Backend;

use burn_store::TensorSnapshot;

use super::lora::PROJECTIONS;
use super::{Llama, LlamaConfig};
use crate::loader::{Checkpoint, Dialect, LoadError, LoadOptions, LoadReport, load_checkpoint};

/// HF LLaMA names; the only remap:
///
/// | file key | module path |
/// |---|---|
/// | `model.layers.N.self_attn.{q,k,v,o}_proj.weight` | `model.layers.N.self_attn.{q,k,v,o}_proj.base.weight` |
/// | `model.layers.N.mlp.{gate,up,down}_proj.weight` | `model.layers.N.mlp.{gate,up,down}_proj.base.weight` |
#[derive(Debug, Clone, Copy)]
pub struct LlamaDialect;

/// The dialect of HF LLaMA checkpoints.
pub const DIALECT: LlamaDialect = LlamaDialect;

/// `(module prefix, leaf)` of a projection parameter path, e.g.
/// `("model.layers.0.self_attn.q_proj", "weight")`.
fn projection(path: &str) -> Option<(&str, &str)> {
    let (module, leaf) = path.rsplit_once('.')?;
    PROJECTIONS
        .iter()
        .any(|p| module.ends_with(p) && module.starts_with("model.layers."))
        .then_some((module, leaf))
}

impl Dialect for LlamaDialect {
    fn name(&self) -> &str {
        "HF LLaMA"
    }

    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)> {
        let path = match projection(key) {
            Some((module, leaf)) => format!("{module}.base.{leaf}"),
            None => key.to_string(),
        };
        vec![(path, tensor.clone())]
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        let key = match torch_path.rsplit_once('.') {
            Some((module, leaf)) => match module.strip_suffix(".base") {
                Some(m) if projection(&format!("{m}.{leaf}")).is_some() => format!("{m}.{leaf}"),
                _ => torch_path.to_string(),
            },
            None => torch_path.to_string(),
        };
        (key, torch_shape.to_vec())
    }
}

/// The weights file of a model directory: the shard index if there is one, else
/// `model.safetensors`, else `pytorch_model.bin`; a file path is used as it is.
pub fn weights_file(path: &Path) -> std::path::PathBuf {
    if !path.is_dir() {
        return path.to_path_buf();
    }
    [
        "model.safetensors.index.json",
        "model.safetensors",
        "pytorch_model.bin",
    ]
    .iter()
    .map(|f| path.join(f))
    .find(|p| p.is_file())
    .unwrap_or_else(|| path.join("model.safetensors"))
}

/// Loads a model directory's weights (see [`weights_file`]) or a weights file into a model
/// of `config`, on the device and in the dtype of `options` (a `&B::Device` gives f32; with
/// `DType::BF16` a bf16 checkpoint is never widened to f32).
pub fn load_llama<B: Backend>(
    config: &LlamaConfig,
    path: impl AsRef<Path>,
    options: impl Into<LoadOptions<B>>,
) -> Result<(Llama<B>, LoadReport), LoadError> {
    let options = options.into();
    let checkpoint = Checkpoint::open(weights_file(path.as_ref()))?;
    load_checkpoint(
        config.init(&options.device),
        &checkpoint,
        &DIALECT,
        options.dtype,
    )
}
