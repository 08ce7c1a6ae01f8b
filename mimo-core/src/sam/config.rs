//! RON-serialisable SAM configuration. Field names mirror segment_anything's constructor
//! arguments so a variant can be written down by reading `build_sam.py`.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ModelConfig};

/// `ImageEncoderViT` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoderViTConfig {
    /// Input side length after resizing and padding (1024 for the released models).
    pub img_size: usize,
    /// Patch side length (16).
    pub patch_size: usize,
    /// Input channels (3).
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Transformer width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `embed_dim`.
    pub mlp_ratio: f64,
    /// Channels of the image embedding produced by the neck (256).
    pub out_chans: usize,
    /// Whether the fused qkv projection has a bias.
    pub qkv_bias: bool,
    /// Whether decomposed relative positions are added to the attention logits.
    pub use_rel_pos: bool,
    /// Whether a learned absolute position embedding is added after the patch embedding.
    #[serde(default = "default_true")]
    pub use_abs_pos: bool,
    /// Window side for windowed attention blocks (0 = every block global).
    pub window_size: usize,
    /// Indexes of the blocks that use global attention.
    pub global_attn_indexes: Vec<usize>,
    /// LayerNorm epsilon of the blocks and neck (segment_anything: 1e-6).
    #[serde(default = "default_encoder_eps")]
    pub layer_norm_eps: f64,
}

/// `PromptEncoder` arguments (`image_embedding_size` and `input_image_size` follow from the
/// image encoder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptEncoderConfig {
    /// Prompt embedding width (256).
    pub embed_dim: usize,
    /// Hidden channels of the mask down-scaling network (16).
    pub mask_in_chans: usize,
}

/// `TwoWayTransformer` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoWayTransformerConfig {
    /// Number of two-way attention blocks (2).
    pub depth: usize,
    /// Token width (256).
    pub embedding_dim: usize,
    /// MLP hidden width (2048).
    pub mlp_dim: usize,
    /// Attention heads (8).
    pub num_heads: usize,
    /// Internal width divisor of the cross-attention layers (2).
    #[serde(default = "default_downsample")]
    pub attention_downsample_rate: usize,
}

/// `MaskDecoder` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskDecoderConfig {
    /// Token width (256).
    pub transformer_dim: usize,
    /// Masks predicted in multimask mode (3); one more mask token is used for single-mask mode.
    pub num_multimask_outputs: usize,
    /// Layers of the IoU prediction MLP (3).
    pub iou_head_depth: usize,
    /// Hidden width of the IoU prediction MLP (256).
    pub iou_head_hidden_dim: usize,
    /// The transformer between prompt tokens and image embedding.
    pub transformer: TwoWayTransformerConfig,
}

/// A complete Segment Anything model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamConfig {
    /// Image encoder.
    pub image_encoder: ImageEncoderViTConfig,
    /// Prompt encoder.
    pub prompt_encoder: PromptEncoderConfig,
    /// Mask decoder.
    pub mask_decoder: MaskDecoderConfig,
    /// Per-channel mean subtracted from RGB pixels in 0..255.
    #[serde(default = "default_pixel_mean")]
    pub pixel_mean: [f32; 3],
    /// Per-channel standard deviation the pixels are divided by.
    #[serde(default = "default_pixel_std")]
    pub pixel_std: [f32; 3],
    /// Mask logits above this threshold are foreground (0.0).
    #[serde(default)]
    pub mask_threshold: f32,
}

fn default_in_chans() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_encoder_eps() -> f64 {
    1e-6
}
fn default_downsample() -> usize {
    2
}
fn default_pixel_mean() -> [f32; 3] {
    [123.675, 116.28, 103.53]
}
fn default_pixel_std() -> [f32; 3] {
    [58.395, 57.12, 57.375]
}

impl SamConfig {
    /// The shared SAM layout of `build_sam.py` with the encoder-specific values.
    fn released(embed_dim: usize, depth: usize, num_heads: usize, global: [usize; 4]) -> Self {
        Self {
            image_encoder: ImageEncoderViTConfig {
                img_size: 1024,
                patch_size: 16,
                in_chans: 3,
                embed_dim,
                depth,
                num_heads,
                mlp_ratio: 4.0,
                out_chans: 256,
                qkv_bias: true,
                use_rel_pos: true,
                use_abs_pos: true,
                window_size: 14,
                global_attn_indexes: global.to_vec(),
                layer_norm_eps: 1e-6,
            },
            prompt_encoder: PromptEncoderConfig {
                embed_dim: 256,
                mask_in_chans: 16,
            },
            mask_decoder: MaskDecoderConfig {
                transformer_dim: 256,
                num_multimask_outputs: 3,
                iou_head_depth: 3,
                iou_head_hidden_dim: 256,
                transformer: TwoWayTransformerConfig {
                    depth: 2,
                    embedding_dim: 256,
                    mlp_dim: 2048,
                    num_heads: 8,
                    attention_downsample_rate: 2,
                },
            },
            pixel_mean: default_pixel_mean(),
            pixel_std: default_pixel_std(),
            mask_threshold: 0.0,
        }
    }

    /// SAM ViT-B (`sam_vit_b_01ec64.pth`).
    pub fn vit_b() -> Self {
        Self::released(768, 12, 12, [2, 5, 8, 11])
    }

    /// SAM ViT-L (`sam_vit_l_0b3195.pth`).
    pub fn vit_l() -> Self {
        Self::released(1024, 24, 16, [5, 11, 17, 23])
    }

    /// SAM ViT-H (`sam_vit_h_4b8939.pth`), the encoder MIMO uses.
    pub fn vit_h() -> Self {
        Self::released(1280, 32, 16, [7, 15, 23, 31])
    }

    /// A preset by name (`vit_b`, `vit_l`, `vit_h`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "vit_b" => Some(Self::vit_b()),
            "vit_l" => Some(Self::vit_l()),
            "vit_h" => Some(Self::vit_h()),
            _ => None,
        }
    }

    /// Names accepted by [`SamConfig::preset`].
    pub const PRESETS: [&'static str; 3] = ["vit_b", "vit_l", "vit_h"];

    /// Side of the image-embedding grid (`img_size / patch_size`, 64 for the released models).
    pub fn embedding_size(&self) -> usize {
        self.image_encoder.img_size / self.image_encoder.patch_size
    }

    /// Side of the low-resolution mask logits and of a mask prompt (4x the embedding grid).
    pub fn low_res_size(&self) -> usize {
        4 * self.embedding_size()
    }

    /// Checks the relations between fields that the layers rely on; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.image_encoder;
        let bad = ConfigError::invalid::<()>;
        if e.patch_size == 0 || !e.img_size.is_multiple_of(e.patch_size) {
            return bad(
                "image_encoder.patch_size",
                format!("must divide img_size {} (got {})", e.img_size, e.patch_size),
            );
        }
        if e.num_heads == 0 || !e.embed_dim.is_multiple_of(e.num_heads) {
            return bad(
                "image_encoder.num_heads",
                format!(
                    "must divide embed_dim {} (got {})",
                    e.embed_dim, e.num_heads
                ),
            );
        }
        if let Some(&i) = e.global_attn_indexes.iter().find(|&&i| i >= e.depth) {
            return bad(
                "image_encoder.global_attn_indexes",
                format!("index {i} is not a block (depth {})", e.depth),
            );
        }
        if e.mlp_ratio <= 0.0 {
            return bad("image_encoder.mlp_ratio", "must be positive".into());
        }
        let p = &self.prompt_encoder;
        if !p.embed_dim.is_multiple_of(2) {
            return bad(
                "prompt_encoder.embed_dim",
                format!("must be even (got {})", p.embed_dim),
            );
        }
        if p.mask_in_chans < 4 || !p.mask_in_chans.is_multiple_of(4) {
            return bad(
                "prompt_encoder.mask_in_chans",
                format!("must be a multiple of 4 (got {})", p.mask_in_chans),
            );
        }
        if e.out_chans != p.embed_dim {
            return bad(
                "prompt_encoder.embed_dim",
                format!(
                    "must equal image_encoder.out_chans {} (got {})",
                    e.out_chans, p.embed_dim
                ),
            );
        }
        let d = &self.mask_decoder;
        if d.transformer_dim != p.embed_dim || d.transformer.embedding_dim != d.transformer_dim {
            return bad(
                "mask_decoder.transformer_dim",
                format!(
                    "transformer_dim ({}), transformer.embedding_dim ({}) and prompt_encoder.embed_dim ({}) must be equal",
                    d.transformer_dim, d.transformer.embedding_dim, p.embed_dim
                ),
            );
        }
        if !d.transformer_dim.is_multiple_of(8) {
            return bad(
                "mask_decoder.transformer_dim",
                format!("must be a multiple of 8 (got {})", d.transformer_dim),
            );
        }
        let t = &d.transformer;
        let rate = t.attention_downsample_rate.max(1);
        if t.num_heads == 0 || !(t.embedding_dim / rate).is_multiple_of(t.num_heads) {
            return bad(
                "mask_decoder.transformer.num_heads",
                format!(
                    "must divide embedding_dim / attention_downsample_rate = {} (got {})",
                    t.embedding_dim / rate,
                    t.num_heads
                ),
            );
        }
        if d.iou_head_depth == 0 {
            return bad("mask_decoder.iou_head_depth", "must be at least 1".into());
        }
        if self.pixel_std.iter().any(|&s| s <= 0.0) {
            return bad("pixel_std", "must be positive".into());
        }
        Ok(())
    }
}

impl ModelConfig for SamConfig {
    const PRESET_NAMES: &'static [&'static str] = &Self::PRESETS;

    fn preset(name: &str) -> Option<Self> {
        SamConfig::preset(name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        SamConfig::validate(self)
    }
}
