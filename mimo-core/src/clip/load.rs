//! CLIP vision checkpoints: HF (`CLIPVisionModel`, `CLIPModel`; with or without the
//! `vision_model.` prefix, which transformers v5 drops for `CLIPVisionModel`) and open_clip
//! (`visual.*`, as in `open_clip_pytorch_model.bin`). Text-tower keys are reported unused.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::TensorSnapshot;

use super::{ClipVision, ClipVisionConfig};
use crate::loader::{
    Checkpoint, Dialect, FileParam, LoadError, LoadOptions, LoadReport, PatternDialect,
    derived_tensor, file_params, load_checkpoint, rename,
};

const VM: &str = "vision_model.";

/// HF layout. Our modules carry HF's names, so only the prefix may need adding.
#[derive(Debug, Clone, Copy)]
pub struct HfDialect {
    /// Whether the file's keys start with `vision_model.` (transformers v4 and `CLIPModel`).
    pub prefixed: bool,
}

/// HF keys with the `vision_model.` prefix: every key is its module path. The
/// `position_ids` buffer of older checkpoints is not a parameter.
const HF_PREFIXED: PatternDialect = PatternDialect {
    name: "HF CLIP",
    rules: &[
        ("vision_model.embeddings.position_ids", ""),
        ("visual_projection.weight", "visual_projection.weight"),
        ("vision_model.**", "vision_model.**"),
    ],
    keep_unmatched: false,
};

/// HF keys of a bare `CLIPVisionTransformer` (no `vision_model.` prefix).
const HF_UNPREFIXED: PatternDialect = PatternDialect {
    name: "HF CLIP",
    rules: &[
        ("embeddings.position_ids", ""),
        ("visual_projection.weight", "visual_projection.weight"),
        ("embeddings.**", "vision_model.embeddings.**"),
        ("pre_layrnorm.**", "vision_model.pre_layrnorm.**"),
        ("encoder.**", "vision_model.encoder.**"),
        ("post_layernorm.**", "vision_model.post_layernorm.**"),
    ],
    keep_unmatched: false,
};

impl HfDialect {
    fn table(&self) -> &'static PatternDialect {
        if self.prefixed {
            &HF_PREFIXED
        } else {
            &HF_UNPREFIXED
        }
    }
}

impl Dialect for HfDialect {
    fn name(&self) -> &str {
        "HF CLIP"
    }

    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)> {
        self.table().module_tensors(key, tensor)
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        self.table().file_param(torch_path, torch_shape)
    }
}

/// open_clip layout: `visual.transformer.resblocks.{i}.*` with a fused `in_proj`, and the
/// projection stored as `x @ proj`.
#[derive(Debug, Clone, Copy)]
pub struct OpenClipDialect;

/// Global keys, file suffix after `visual.` -> module path.
const OPEN_CLIP_GLOBAL: &[(&str, &str)] = &[
    ("class_embedding", "vision_model.embeddings.class_embedding"),
    (
        "positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
    ),
    ("conv1.", "vision_model.embeddings.patch_embedding."),
    ("ln_pre.", "vision_model.pre_layrnorm."),
    ("ln_post.", "vision_model.post_layernorm."),
];

/// Per-block keys, suffix after `resblocks.{i}.` -> suffix after `layers.{i}.`.
const OPEN_CLIP_BLOCK: &[(&str, &str)] = &[
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
];

const BLOCKS: &str = "transformer.resblocks.";
const LAYERS: &str = "vision_model.encoder.layers.";

impl Dialect for OpenClipDialect {
    fn name(&self) -> &str {
        "open_clip"
    }

    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)> {
        let Some(rest) = key.strip_prefix("visual.") else {
            return vec![];
        };
        if rest == "proj" {
            // x @ proj with proj [hidden, out] is a linear layer with weight proj^T.
            return vec![(
                "visual_projection.weight".into(),
                derived_tensor(tensor, None, true),
            )];
        }
        if let Some(block) = rest.strip_prefix(BLOCKS) {
            let Some((i, tail)) = block.split_once('.') else {
                return vec![];
            };
            let layer = format!("{LAYERS}{i}.");
            if let Some(kind) = tail.strip_prefix("attn.in_proj_") {
                // in_proj rows are [q; k; v].
                let leaf = match kind {
                    "weight" => "weight",
                    "bias" => "bias",
                    _ => return vec![],
                };
                let d = tensor.shape.as_slice()[0] / 3;
                return ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .enumerate()
                    .map(|(j, p)| {
                        (
                            format!("{layer}self_attn.{p}.{leaf}"),
                            derived_tensor(tensor, Some((j * d, d)), false),
                        )
                    })
                    .collect();
            }
            return match OPEN_CLIP_BLOCK.iter().find(|(f, _)| tail.starts_with(f)) {
                Some((f, m)) => vec![(format!("{layer}{m}{}", &tail[f.len()..]), tensor.clone())],
                None => vec![],
            };
        }
        match OPEN_CLIP_GLOBAL.iter().find(|(f, _)| rest.starts_with(f)) {
            Some((f, m)) => vec![(format!("{m}{}", &rest[f.len()..]), tensor.clone())],
            None => vec![],
        }
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        if torch_path == "visual_projection.weight" {
            let mut s = torch_shape.to_vec();
            s.reverse();
            return ("visual.proj".into(), s);
        }
        if let Some(rest) = torch_path.strip_prefix(LAYERS)
            && let Some((i, tail)) = rest.split_once('.')
        {
            let block = format!("visual.{BLOCKS}{i}.");
            for p in ["q_proj.", "k_proj.", "v_proj."] {
                if let Some(leaf) = tail
                    .strip_prefix("self_attn.")
                    .and_then(|t| t.strip_prefix(p))
                {
                    let mut s = torch_shape.to_vec();
                    s[0] *= 3;
                    return (format!("{block}attn.in_proj_{leaf}"), s);
                }
            }
            let key = rename(tail, OPEN_CLIP_BLOCK.iter().map(|&(f, m)| (m, f)));
            return (format!("{block}{key}"), torch_shape.to_vec());
        }
        let key = rename(torch_path, OPEN_CLIP_GLOBAL.iter().map(|&(f, m)| (m, f)));
        let key = if key == torch_path {
            key
        } else {
            format!("visual.{key}")
        };
        (key, torch_shape.to_vec())
    }
}

/// The layout of an opened checkpoint.
#[derive(Debug, Clone, Copy)]
pub enum ClipDialect {
    /// HF transformers.
    Hf(HfDialect),
    /// open_clip.
    OpenClip(OpenClipDialect),
}

impl ClipDialect {
    /// Recognises the layout from the keys.
    pub fn detect(checkpoint: &Checkpoint) -> Result<Self, LoadError> {
        let has = |p: &str| checkpoint.keys().any(|k| k.starts_with(p));
        if has("visual.") {
            Ok(Self::OpenClip(OpenClipDialect))
        } else if has(VM) {
            Ok(Self::Hf(HfDialect { prefixed: true }))
        } else if has("encoder.layers.") || has("embeddings.patch_embedding") {
            Ok(Self::Hf(HfDialect { prefixed: false }))
        } else {
            Err(LoadError::Read {
                path: checkpoint.path().to_path_buf(),
                message: "not a CLIP vision checkpoint: no `visual.*` (open_clip) or \
                          `vision_model.*` / `encoder.layers.*` (HF) keys"
                    .into(),
            })
        }
    }

    /// As a [`Dialect`].
    pub fn as_dialect(&self) -> &dyn Dialect {
        match self {
            Self::Hf(d) => d,
            Self::OpenClip(d) => d,
        }
    }
}

/// The weights of a model directory (HF `model.safetensors` / `pytorch_model.bin`, open_clip
/// `open_clip_model.safetensors` / `open_clip_pytorch_model.bin`); a file path as it is.
pub fn weights_file(path: &Path) -> std::path::PathBuf {
    if !path.is_dir() {
        return path.to_path_buf();
    }
    [
        "model.safetensors",
        "pytorch_model.bin",
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
    ]
    .iter()
    .map(|f| path.join(f))
    .find(|p| p.is_file())
    .unwrap_or_else(|| path.join("model.safetensors"))
}

/// Builds a tower of `config` on `device` and loads an HF or open_clip checkpoint
/// (`.safetensors`, sharded `index.json`, `.pth`/`.bin`, or a model directory: see
/// [`weights_file`]) into it, on the device and in the dtype of `options` (a `&B::Device`
/// gives f32).
pub fn load_clip<B: Backend>(
    config: &ClipVisionConfig,
    path: impl AsRef<Path>,
    options: impl Into<LoadOptions<B>>,
) -> Result<(ClipVision<B>, LoadReport), LoadError> {
    let options = options.into();
    let checkpoint = Checkpoint::open(weights_file(path.as_ref()))?;
    let dialect = ClipDialect::detect(&checkpoint)?;
    let (model, report) = load_checkpoint(
        config.init(&options.device),
        &checkpoint,
        dialect.as_dialect(),
        options.dtype,
    )?;
    // Keys of the vision tower itself must all be used (fewer layers in the config would run
    // a cut-down tower); the text tower's keys stay a note.
    let own: Vec<String> = report
        .unused
        .iter()
        .filter(|k| {
            k.starts_with("vision_model.")
                || k.starts_with("visual.")
                || *k == "visual_projection.weight"
        })
        .cloned()
        .collect();
    if !own.is_empty() {
        let layers = crate::loader::max_layer_index(own.iter(), "vision_model.encoder.layers.")
            .or_else(|| {
                crate::loader::max_layer_index(own.iter(), "visual.transformer.resblocks.")
            });
        let hint = match layers {
            Some(max) => format!(
                " (the checkpoint has {} layers, the config's `num_hidden_layers` is {})",
                max + 1,
                config.num_hidden_layers
            ),
            None => String::new(),
        };
        return Err(LoadError::Unused {
            path: checkpoint.path().to_path_buf(),
            keys: own,
            hint,
        });
    }
    Ok((model, report))
}

/// The keys and shapes a tower of `config` has in `dialect`'s files (fused tensors once).
pub fn expected_keys<B: Backend>(
    config: &ClipVisionConfig,
    dialect: &dyn Dialect,
    device: &B::Device,
) -> Vec<FileParam> {
    let mut params = file_params(&config.init::<B>(device), dialect);
    let mut seen = std::collections::BTreeSet::new();
    params.retain(|p| seen.insert(p.key.clone()));
    params
}
