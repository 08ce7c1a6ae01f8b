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

use super::{Llama, LlamaConfig};
use crate::loader::{
    Checkpoint, LoadError, LoadOptions, LoadReport, PatternDialect, load_checkpoint,
};

/// HF LLaMA names; the only remap puts each projection's tensors one level deeper, under the
/// [`crate::llm::LoraLinear`]'s `base` (`model.layers.N.self_attn.q_proj.weight` ->
/// `model.layers.N.self_attn.q_proj.base.weight`); every other key is its module path.
pub const DIALECT: PatternDialect = PatternDialect {
    name: "HF LLaMA",
    rules: &[
        (
            "model.layers.*.self_attn.{q_proj|k_proj|v_proj|o_proj}.*",
            "model.layers.*.self_attn.{q_proj|k_proj|v_proj|o_proj}.base.*",
        ),
        (
            "model.layers.*.mlp.{gate_proj|up_proj|down_proj}.*",
            "model.layers.*.mlp.{gate_proj|up_proj|down_proj}.base.*",
        ),
    ],
    keep_unmatched: true,
};

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
