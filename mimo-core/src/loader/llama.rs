//! HF LLaMA checkpoints (`model.safetensors`, sharded `model.safetensors.index.json`, or
//! `pytorch_model.bin`). Our modules carry HF's names; the rotary `inv_freq` buffers of old
//! checkpoints are not parameters and are reported unused.

use std::path::Path;

use burn::tensor::backend::Backend;

use super::{Checkpoint, LoadError, LoadReport, PrefixDialect, load_checkpoint};
use crate::llm::{Llama, LlamaConfig};

/// HF names are ours.
pub const DIALECT: PrefixDialect = PrefixDialect {
    name: "HF LLaMA",
    renames: &[],
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

/// Loads a model directory (its `config.json` and weights) or a weights file with `config`.
pub fn load_llama<B: Backend>(
    config: &LlamaConfig,
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Llama<B>, LoadReport), LoadError> {
    let checkpoint = Checkpoint::open(weights_file(path.as_ref()))?;
    load_checkpoint(config.init(device), &checkpoint, &DIALECT)
}
