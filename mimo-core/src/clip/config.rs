//! RON-serialisable CLIP vision configuration with the field names of HF's
//! `CLIPVisionConfig`, plus which hidden state the rest of MIMO reads.

use std::path::Path;

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
    fn sized(
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
        Self::sized(1024, 4096, 24, 16, 224, HiddenAct::QuickGelu, 768)
    }

    /// OpenAI CLIP ViT-L/14 at 336 px (`openai/clip-vit-large-patch14-336`, LLaVA-1.5's).
    pub fn vit_l14_336() -> Self {
        Self::sized(1024, 4096, 24, 16, 336, HiddenAct::QuickGelu, 768)
    }

    /// open_clip ViT-H/14 (`laion2b_s32b_b79k`), MIMO's image encoder.
    pub fn vit_h14() -> Self {
        Self::sized(1280, 5120, 32, 16, 224, HiddenAct::Gelu, 1024)
    }

    /// Names accepted by [`ClipVisionConfig::preset`].
    pub const PRESETS: [&'static str; 3] = ["vit_l14", "vit_l14_336", "vit_h14"];

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
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

impl ClipVisionConfig {
    /// Parses HF `config.json` text: a `CLIPConfig` (the tower in `vision_config`, the
    /// projection width at the top level) or a `CLIPVisionConfig` (with a projection only when
    /// `architectures` names `CLIPVisionModelWithProjection`). Fields left out take
    /// transformers' defaults (`models/clip/configuration_clip.py`, `CLIPVisionConfig`:
    /// width 768, MLP 3072, 12 layers, 12 heads, 224 px, patch 32, quick_gelu, eps 1e-5,
    /// projection 512). An activation other than `quick_gelu` / `gelu` is an error naming
    /// `hidden_act`.
    pub fn from_hf_json(text: &str) -> Result<Self, String> {
        let top: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let full = top.get("vision_config").is_some();
        let v = if full { &top["vision_config"] } else { &top };
        if !v.is_object() {
            return Err("expected a JSON object (an HF CLIP config.json)".into());
        }
        let int = |obj: &serde_json::Value, key: &str, default: usize| -> Result<usize, String> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("`{key}` must be a non-negative integer, not {x}")),
            }
        };
        let hidden_act = match v.get("hidden_act").and_then(|a| a.as_str()) {
            None | Some("quick_gelu") => HiddenAct::QuickGelu,
            Some("gelu") => HiddenAct::Gelu,
            Some(other) => {
                return Err(format!(
                    "`hidden_act` is `{other}`: this CLIP tower implements quick_gelu and gelu"
                ));
            }
        };
        let layer_norm_eps = match v.get("layer_norm_eps") {
            None | Some(serde_json::Value::Null) => 1e-5,
            Some(x) => x
                .as_f64()
                .ok_or_else(|| format!("`layer_norm_eps` must be a number, not {x}"))?,
        };
        let with_projection = full
            || top
                .get("architectures")
                .and_then(|a| a.as_array())
                .is_some_and(|a| {
                    a.iter()
                        .any(|x| x.as_str() == Some("CLIPVisionModelWithProjection"))
                });
        let cfg = Self {
            hidden_size: int(v, "hidden_size", 768)?,
            intermediate_size: int(v, "intermediate_size", 3072)?,
            num_hidden_layers: int(v, "num_hidden_layers", 12)?,
            num_attention_heads: int(v, "num_attention_heads", 12)?,
            num_channels: int(v, "num_channels", 3)?,
            image_size: int(v, "image_size", 224)?,
            patch_size: int(v, "patch_size", 32)?,
            hidden_act,
            layer_norm_eps,
            projection_dim: if with_projection {
                Some(int(&top, "projection_dim", 512)?)
            } else {
                None
            },
            select: FeatureSelect::default(),
            preprocess: ClipPreprocessConfig::default(),
        };
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// Takes the mean, standard deviation, shortest edge and crop size of an HF
    /// `preprocessor_config.json` (`CLIPImageProcessor`); MIMO's padding to a square stays.
    pub fn apply_hf_preprocessor(&mut self, text: &str) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let triple = |key: &str| -> Result<Option<[f32; 3]>, String> {
            match v.get(key) {
                None => Ok(None),
                Some(x) => {
                    let a: Vec<f32> = x
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|n| n.as_f64())
                                .map(|n| n as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    <[f32; 3]>::try_from(a)
                        .map(Some)
                        .map_err(|_| format!("`{key}` must be three numbers, not {x}"))
                }
            }
        };
        // `size` / `crop_size`: an integer, or {"shortest_edge"} / {"height", "width"}.
        let side = |key: &str, inner: &str| -> Option<usize> {
            let x = v.get(key)?;
            x.as_u64()
                .or_else(|| x.get(inner).and_then(|n| n.as_u64()))
                .map(|n| n as usize)
        };
        if let Some(m) = triple("image_mean")? {
            self.preprocess.image_mean = m;
        }
        if let Some(s) = triple("image_std")? {
            self.preprocess.image_std = s;
        }
        if let Some(e) = side("size", "shortest_edge") {
            self.preprocess.shortest_edge = Some(e);
        }
        if let Some(c) = side("crop_size", "height") {
            self.preprocess.crop_size = Some(c);
        }
        Ok(())
    }

    /// Reads an HF model directory (`config.json`, and `preprocessor_config.json` when it is
    /// there) or a `config.json` file.
    pub fn load_hf(path: &Path) -> Result<Self, ConfigError> {
        let (file, dir) = if path.is_dir() {
            (path.join("config.json"), Some(path))
        } else {
            (path.to_path_buf(), None)
        };
        let read = |f: &Path| {
            std::fs::read_to_string(f).map_err(|source| ConfigError::Io {
                path: f.to_path_buf(),
                source,
            })
        };
        let parse = |f: &Path, message: String| ConfigError::Parse {
            path: f.to_path_buf(),
            message,
        };
        let mut cfg = Self::from_hf_json(&read(&file)?).map_err(|m| parse(&file, m))?;
        if let Some(pre) = dir.map(|d| d.join("preprocessor_config.json"))
            && pre.is_file()
        {
            cfg.apply_hf_preprocessor(&read(&pre)?)
                .map_err(|m| parse(&pre, m))?;
        }
        Ok(cfg)
    }
}

impl ModelConfig for ClipVisionConfig {
    const PRESET_NAMES: &'static [&'static str] = &Self::PRESETS;

    /// A RON file, or an HF model directory or `config.json` (see [`Self::load_hf`]).
    fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        if path.is_dir() || path.extension().is_some_and(|e| e == "json") {
            return Self::load_hf(path);
        }
        let cfg: Self = crate::config::load_ron(path)?;
        cfg.validate().map_err(|e| e.in_file(path))?;
        Ok(cfg)
    }

    fn preset(name: &str) -> Option<Self> {
        ClipVisionConfig::preset(name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ClipVisionConfig::validate(self)
    }
}
