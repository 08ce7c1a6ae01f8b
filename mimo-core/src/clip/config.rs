//! RON-serialisable CLIP vision configuration with the field names of HF's
//! `CLIPVisionConfig`, plus which hidden state the rest of MIMO reads.

use serde::{Deserialize, Serialize};

use super::ClipPreprocessConfig;
use crate::config::{ConfigError, ModelConfig};

/// The MLP activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact (erf) GELU: open_clip ViT-H/14 and most LAION models.
    Gelu,
    /// `x * sigmoid(1.702 x)`: OpenAI's CLIP (ViT-L/14, ViT-L/14-336).
    QuickGelu,
}

/// Which tokens of the selected hidden state are returned (LLaVA's `mm_vision_select_feature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectFeature {
    /// Patch tokens only (the class token dropped): LLaVA, LISA and MIMO.
    Patch,
    /// Class token followed by the patch tokens.
    ClsPatch,
}

/// The feature the rest of MIMO reads from the tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSelect {
    /// Index into the hidden states (`0` = after `pre_layrnorm`, `i` = after layer `i`);
    /// negative counts from the end, so `-2` is the penultimate layer (LLaVA's default).
    pub layer: i64,
    /// Tokens to keep.
    pub feature: SelectFeature,
}

impl Default for FeatureSelect {
    fn default() -> Self {
        Self {
            layer: -2,
            feature: SelectFeature::Patch,
        }
    }
}

/// A CLIP vision tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipVisionConfig {
    /// Transformer width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels (the patch embedding has no bias).
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Width of the pooled-embedding projection (`visual_projection`, no bias); `None` for
    /// a tower without it (HF `CLIPVisionModel`).
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// The feature [`crate::clip::ClipVision::features`] returns.
    #[serde(default)]
    pub select: FeatureSelect,
    /// How images become pixel values.
    #[serde(default)]
    pub preprocess: ClipPreprocessConfig,
}

fn default_channels() -> usize {
    3
}

impl ClipVisionConfig {
    #[allow(clippy::too_many_arguments)]
    fn preset(
        hidden: usize,
        inter: usize,
        layers: usize,
        heads: usize,
        image: usize,
        act: HiddenAct,
        proj: usize,
    ) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_channels: 3,
            image_size: image,
            patch_size: 14,
            hidden_act: act,
            layer_norm_eps: 1e-5,
            projection_dim: Some(proj),
            select: FeatureSelect::default(),
            preprocess: ClipPreprocessConfig::default(),
        }
    }

    /// OpenAI CLIP ViT-L/14 at 224 px (`openai/clip-vit-large-patch14`).
    pub fn vit_l14() -> Self {
        Self::preset(1024, 4096, 24, 16, 224, HiddenAct::QuickGelu, 768)
    }

    /// OpenAI CLIP ViT-L/14 at 336 px (`openai/clip-vit-large-patch14-336`, LLaVA-1.5's).
    pub fn vit_l14_336() -> Self {
        Self::preset(1024, 4096, 24, 16, 336, HiddenAct::QuickGelu, 768)
    }

    /// open_clip ViT-H/14 (`laion2b_s32b_b79k`), MIMO's image encoder.
    pub fn vit_h14() -> Self {
        Self::preset(1280, 5120, 32, 16, 224, HiddenAct::Gelu, 1024)
    }

    /// Names accepted by [`ClipVisionConfig::preset_named`].
    pub const PRESETS: [&'static str; 3] = ["vit_l14", "vit_l14_336", "vit_h14"];

    /// A preset by name.
    pub fn preset_named(name: &str) -> Option<Self> {
        match name {
            "vit_l14" => Some(Self::vit_l14()),
            "vit_l14_336" => Some(Self::vit_l14_336()),
            "vit_h14" => Some(Self::vit_h14()),
            _ => None,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions including the class token.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// The hidden-state index `select.layer` refers to, in `0..=num_hidden_layers`.
    pub fn selected_layer(&self) -> usize {
        let n = self.num_hidden_layers as i64 + 1;
        let l = self.select.layer;
        (if l < 0 { n + l } else { l }) as usize
    }

    /// Checks the relations between fields; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = ConfigError::invalid::<()>;
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(
                "patch_size",
                format!(
                    "must divide image_size {} (got {})",
                    self.image_size, self.patch_size
                ),
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(
                "num_attention_heads",
                format!(
                    "must divide hidden_size {} (got {})",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        let n = self.num_hidden_layers as i64;
        if self.select.layer > n || self.select.layer < -(n + 1) {
            return bad(
                "select.layer",
                format!("must be in -{} ..= {n} (got {})", n + 1, self.select.layer),
            );
        }
        Ok(())
    }
}

impl ModelConfig for ClipVisionConfig {
    const PRESET_NAMES: &'static [&'static str] = &Self::PRESETS;

    fn preset(name: &str) -> Option<Self> {
        Self::preset_named(name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ClipVisionConfig::validate(self)
    }
}
