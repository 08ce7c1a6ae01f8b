//! segment_anything checkpoints (`sam_vit_{b,l,h}_*.pth`, or the same state dict saved as
//! `.safetensors`).
//!
//! Our SAM modules carry the PyTorch field names, so only the `nn.Sequential` children
//! (numbered in PyTorch, named here) need renaming. Linear weights are transposed and
//! LayerNorm `weight`/`bias` become `gamma`/`beta` by burn's PyTorch adapter.
//! `pixel_mean`/`pixel_std` are non-persistent buffers and are not in the files.

use std::path::Path;

use burn::tensor::backend::Backend;

use super::{Sam, SamConfig};
use crate::loader::{
    FileParam, LoadError, LoadOptions, LoadReport, PrefixDialect, file_params, load_into,
    max_layer_index,
};

/// File prefix -> module prefix.
pub const RENAMES: &[(&str, &str)] = &[
    // ImageEncoderViT.neck = Sequential(Conv2d 1x1, LayerNorm2d, Conv2d 3x3, LayerNorm2d)
    ("image_encoder.neck.0.", "image_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "image_encoder.neck.ln1."),
    ("image_encoder.neck.2.", "image_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "image_encoder.neck.ln2."),
    // PromptEncoder.mask_downscaling = Sequential(Conv, LN2d, GELU, Conv, LN2d, GELU, Conv)
    (
        "prompt_encoder.mask_downscaling.0.",
        "prompt_encoder.mask_downscaling.conv1.",
    ),
    (
        "prompt_encoder.mask_downscaling.1.",
        "prompt_encoder.mask_downscaling.ln1.",
    ),
    (
        "prompt_encoder.mask_downscaling.3.",
        "prompt_encoder.mask_downscaling.conv2.",
    ),
    (
        "prompt_encoder.mask_downscaling.4.",
        "prompt_encoder.mask_downscaling.ln2.",
    ),
    (
        "prompt_encoder.mask_downscaling.6.",
        "prompt_encoder.mask_downscaling.conv3.",
    ),
    // MaskDecoder.output_upscaling = Sequential(ConvT, LN2d, GELU, ConvT, GELU)
    (
        "mask_decoder.output_upscaling.0.",
        "mask_decoder.output_upscaling.conv1.",
    ),
    (
        "mask_decoder.output_upscaling.1.",
        "mask_decoder.output_upscaling.ln.",
    ),
    (
        "mask_decoder.output_upscaling.3.",
        "mask_decoder.output_upscaling.conv2.",
    ),
];

/// The segment_anything dialect.
pub const DIALECT: PrefixDialect = PrefixDialect {
    name: "segment_anything",
    renames: RENAMES,
};

/// Builds a model of `config` and loads a segment_anything state dict (`.pth` or
/// `.safetensors`) into it, on the device and in the dtype of `options` (a `&B::Device`
/// gives f32).
pub fn load_sam<B: Backend>(
    config: &SamConfig,
    path: impl AsRef<Path>,
    options: impl Into<LoadOptions<B>>,
) -> Result<(Sam<B>, LoadReport), LoadError> {
    let options = options.into();
    let model = config.init::<B>(&options.device);
    let depth = model.image_encoder.blocks.len();
    let (model, report) = load_into(model, path.as_ref(), &DIALECT, options.dtype)?;
    // A tensor of SAM's own parts left over means the config describes a smaller model than
    // the file; other keys (another model's, in a combined file) stay a note.
    let own: Vec<String> = report
        .unused
        .iter()
        .filter(|k| {
            ["image_encoder.", "prompt_encoder.", "mask_decoder."]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .cloned()
        .collect();
    if !own.is_empty() {
        let hint = match max_layer_index(own.iter(), "image_encoder.blocks.") {
            Some(max) => format!(
                " (the checkpoint has {} encoder blocks, the config's `image_encoder.depth` is {depth})",
                max + 1
            ),
            None => String::new(),
        };
        return Err(LoadError::Unused {
            path: path.as_ref().to_path_buf(),
            keys: own,
            hint,
        });
    }
    Ok((model, report))
}

/// The state-dict keys and shapes a model of `config` expects, as segment_anything names
/// them (`sam_model_registry[...]().state_dict()`).
pub fn expected_keys<B: Backend>(config: &SamConfig, device: &B::Device) -> Vec<FileParam> {
    file_params(&config.init::<B>(device), &DIALECT)
}
