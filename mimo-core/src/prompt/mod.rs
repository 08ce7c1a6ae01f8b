//! The visual prompt encoder: points and boxes the user marks on a scan become tokens in the
//! CLIP image-feature space, so the aligner (or, without it, the image projector) can read
//! them beside the image tokens.
//!
//! MIMO's paper describes it as "similar to the prompt encoder of SAM: positional encodings
//! summed with learned embeddings for each prompt type", projected into the image-feature
//! space. The design follows SAM's `PromptEncoder._embed_points`
//! (facebookresearch/segment-anything `segment_anything/modeling/prompt_encoder.py`, lines
//! 76-95) and SPHINX-V's visual prompt encoder (AFeng-x/Draw-and-Understand
//! `accessory/model/LLM/visual_prompt_encoder/prompt_encoder.py`), which copies SAM's random
//! Fourier matrix (frozen) and its point embeddings:
//!
//! * coordinates arrive in original pixels and follow the CLIP pre-processing: LLaVA's
//!   `expand2square` pastes the image at `((S - W) / 2, 0)` or `(0, (S - H) / 2)` in an
//!   `S = max(H, W)` square; a point becomes `c = (x + pad_x + 0.5) / S` (SAM's pixel-centre
//!   shift, before normalising);
//! * `pe(c) = [sin(2π (2c - 1) G), cos(2π (2c - 1) G)]` with `G` SAM's
//!   `pe_layer.positional_encoding_gaussian_matrix`;
//! * a prompt is SAM-style points with labels: 1 foreground point, 0 background point, 2 and 3
//!   the top-left and bottom-right corners of a box, -1 padding; token = `pe(c) +
//!   point_embeddings[label]`, padding = `not_a_point_embed` (its key is masked downstream);
//! * `proj: Linear(C, image_dim)` maps the tokens into the image-feature space.

use std::f32::consts::PI;

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Label of a padding slot.
pub const LABEL_PAD: i64 = -1;
/// Label of a background point.
pub const LABEL_BACKGROUND: i64 = 0;
/// Label of a foreground point.
pub const LABEL_FOREGROUND: i64 = 1;
/// Label of a box's top-left corner.
pub const LABEL_BOX_TOP_LEFT: i64 = 2;
/// Label of a box's bottom-right corner.
pub const LABEL_BOX_BOTTOM_RIGHT: i64 = 3;

/// Sizes of the visual prompt encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisualPromptEncoderConfig {
    /// Token width before the projection: SAM's prompt embedding width (256 for every
    /// released SAM), so `G` and the point embeddings can be copied from SAM.
    pub embed_dim: usize,
    /// Width of the image features the tokens are projected to (CLIP's hidden size: 1280
    /// for ViT-H/14).
    pub image_dim: usize,
}

impl VisualPromptEncoderConfig {
    /// Checks the sizes; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.embed_dim == 0 || !self.embed_dim.is_multiple_of(2) {
            return ConfigError::invalid(
                "embed_dim",
                format!("must be a positive even number, got {}", self.embed_dim),
            );
        }
        if self.image_dim == 0 {
            return ConfigError::invalid("image_dim", "must be positive".into());
        }
        Ok(())
    }

    /// A randomly initialised encoder (`G` ~ N(0, 1) frozen, embeddings N(0, 1) as
    /// `nn.Embedding`, PyTorch's default Linear init); [`VisualPromptEncoder::init_from_sam`]
    /// then copies SAM's values.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisualPromptEncoder<B> {
        let c = self.embed_dim;
        let g = Tensor::<B, 2>::random([2, c / 2], Distribution::Normal(0.0, 1.0), device);
        VisualPromptEncoder {
            pe_gaussian: Param::from_tensor(g).set_require_grad(false),
            point_embeddings: (0..4)
                .map(|_| EmbeddingConfig::new(1, c).init(device))
                .collect(),
            not_a_point_embed: EmbeddingConfig::new(1, c).init(device),
            proj: LinearConfig::new(c, self.image_dim).init(device),
        }
    }
}

/// The visual prompt encoder (`vp_encoder.*` in MIMO checkpoints).
#[derive(Module, Debug)]
pub struct VisualPromptEncoder<B: Backend> {
    /// SAM's random Fourier matrix `[2, C/2]`, frozen.
    pub pe_gaussian: Param<Tensor<B, 2>>,
    /// Background point, foreground point, box top-left, box bottom-right: `[1, C]` each.
    pub point_embeddings: Vec<Embedding<B>>,
    /// Padding slot `[1, C]`.
    pub not_a_point_embed: Embedding<B>,
    /// Into the image-feature space.
    pub proj: Linear<B>,
}

/// Visual prompts of a batch as tensors: SAM-style points with labels, padded per image.
#[derive(Debug, Clone)]
pub struct PromptTensors<B: Backend> {
    /// `[N, P, 2]` (x, y) in original pixels.
    pub coords: Tensor<B, 3>,
    /// `[N, P]`: 1 foreground, 0 background, 2/3 box corners, -1 padding.
    pub labels: Tensor<B, 2, Int>,
}

/// One visual prompt in original pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum VisualPrompt {
    /// A point and whether it marks the object (foreground) or not.
    Point {
        /// Column.
        x: f64,
        /// Row.
        y: f64,
        /// Foreground (true) or background.
        positive: bool,
    },
    /// A box `(x0, y0, x1, y1)`.
    Box {
        /// Left.
        x0: f64,
        /// Top.
        y0: f64,
        /// Right.
        x1: f64,
        /// Bottom.
        y1: f64,
    },
}

impl VisualPrompt {
    /// The SAM-style points of the prompt: one for a point, two corners for a box.
    pub fn points(&self) -> Vec<([f32; 2], i64)> {
        match *self {
            VisualPrompt::Point { x, y, positive } => vec![(
                [x as f32, y as f32],
                if positive {
                    LABEL_FOREGROUND
                } else {
                    LABEL_BACKGROUND
                },
            )],
            VisualPrompt::Box { x0, y0, x1, y1 } => vec![
                ([x0 as f32, y0 as f32], LABEL_BOX_TOP_LEFT),
                ([x1 as f32, y1 as f32], LABEL_BOX_BOTTOM_RIGHT),
            ],
        }
    }

    /// Whether every coordinate lies inside a `width` x `height` image (pixel edges
    /// included: `0 <= x <= width`).
    pub fn inside(&self, width: usize, height: usize) -> bool {
        self.points().iter().all(|([x, y], _)| {
            x.is_finite()
                && y.is_finite()
                && *x >= 0.0
                && *y >= 0.0
                && *x <= width as f32
                && *y <= height as f32
        })
    }
}

impl<B: Backend> PromptTensors<B> {
    /// Pads each image's prompts to the longest (at least `min_slots`, and at least one) with
    /// label -1. A padding slot is masked everywhere it is used, so one slot for images
    /// without prompts changes no value, and it keeps the tensors non-empty (see
    /// [`crate::nn::empty`]).
    pub fn from_prompts(
        prompts: &[Vec<VisualPrompt>],
        min_slots: usize,
        device: &B::Device,
    ) -> Self {
        let rows: Vec<Vec<([f32; 2], i64)>> = prompts
            .iter()
            .map(|p| p.iter().flat_map(VisualPrompt::points).collect())
            .collect();
        let p = rows
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(min_slots)
            .max(1);
        let n = rows.len();
        let mut coords = vec![0f32; n * p * 2];
        let mut labels = vec![LABEL_PAD; n * p];
        for (i, row) in rows.iter().enumerate() {
            for (j, ([x, y], l)) in row.iter().enumerate() {
                coords[(i * p + j) * 2] = *x;
                coords[(i * p + j) * 2 + 1] = *y;
                labels[i * p + j] = *l;
            }
        }
        Self {
            coords: Tensor::from_data(TensorData::new(coords, [n, p, 2]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n, p]), device),
        }
    }

    /// Number of prompt slots per image.
    pub fn slots(&self) -> usize {
        self.labels.dims()[1]
    }
}

/// `expand2square`'s paste offset and square side for an image of `[height, width]`.
pub fn square_frame([h, w]: [usize; 2]) -> (f32, f32, f32) {
    let s = h.max(w);
    let pad_x = if w < s { (s - w) / 2 } else { 0 };
    let pad_y = if h < s { (s - h) / 2 } else { 0 };
    (pad_x as f32, pad_y as f32, s as f32)
}

impl<B: Backend> VisualPromptEncoder<B> {
    /// Token width `C`.
    pub fn embed_dim(&self) -> usize {
        self.not_a_point_embed.weight.val().dims()[1]
    }

    /// Copies SAM's Fourier matrix (kept frozen), point embeddings and padding embedding, as
    /// SPHINX-V initialises its visual prompt encoder from `sam_vit_h`.
    pub fn init_from_sam(mut self, sam: &crate::sam::PromptEncoder<B>) -> Self {
        let g = sam.pe_layer.positional_encoding_gaussian_matrix.val();
        self.pe_gaussian = Param::from_tensor(g).set_require_grad(false);
        for (mine, theirs) in self.point_embeddings.iter_mut().zip(&sam.point_embeddings) {
            mine.weight = Param::from_tensor(theirs.weight.val());
        }
        self.not_a_point_embed.weight = Param::from_tensor(sam.not_a_point_embed.weight.val());
        self
    }

    /// `pe(c)` of normalised coordinates `[N, P, 2]` -> `[N, P, C]`.
    fn pe(&self, coords: Tensor<B, 3>) -> Tensor<B, 3> {
        let g = self.pe_gaussian.val().unsqueeze::<3>();
        let proj = (coords * 2.0 - 1.0).matmul(g) * (2.0 * PI);
        Tensor::cat(vec![proj.clone().sin(), proj.cos()], 2)
    }

    /// Encodes the prompts of images of `sizes` (`[height, width]` each, original pixels):
    /// tokens `[N, P, image_dim]` and the padding mask `[N, P]` (true = padding slot).
    pub fn forward(
        &self,
        prompts: &PromptTensors<B>,
        sizes: &[[usize; 2]],
    ) -> (Tensor<B, 3>, Tensor<B, 2, Bool>) {
        let device = prompts.coords.device();
        let n = prompts.coords.dims()[0];
        let mut shift = Vec::with_capacity(n * 2);
        let mut scale = Vec::with_capacity(n * 2);
        for &size in sizes.iter().take(n) {
            let (px, py, s) = square_frame(size);
            shift.extend([px + 0.5, py + 0.5]);
            scale.extend([1.0 / s, 1.0 / s]);
        }
        let shift = Tensor::<B, 3>::from_data(TensorData::new(shift, [n, 1, 2]), &device);
        let scale = Tensor::<B, 3>::from_data(TensorData::new(scale, [n, 1, 2]), &device);
        let dtype = self.pe_gaussian.val().dtype();
        let coords = ((prompts.coords.clone() + shift) * scale).cast(dtype);
        let pe = self.pe(coords);
        let labels = prompts.labels.clone();
        let is = |l: i64| {
            labels
                .clone()
                .equal_elem(l)
                .float()
                .cast(dtype)
                .unsqueeze_dim::<3>(2)
        };
        let row = |e: &Embedding<B>| e.weight.val().unsqueeze::<3>();
        let pad = is(LABEL_PAD);
        let mut tokens = pe * (pad.clone().neg() + 1.0) + pad * row(&self.not_a_point_embed);
        for (label, emb) in self.point_embeddings.iter().enumerate() {
            tokens = tokens + is(label as i64) * row(emb);
        }
        (
            crate::nn::linear_rows(&self.proj, tokens),
            prompts.labels.clone().equal_elem(LABEL_PAD),
        )
    }
}

#[cfg(test)]
mod tests;
