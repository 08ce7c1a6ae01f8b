//! CLIP vision transformer (HF `CLIPVisionModel` / open_clip `VisionTransformer`): patch
//! embedding without bias, class token, learned positions, `pre_layrnorm`, pre-LN encoder
//! layers with exact GELU or QuickGELU, and `post_layernorm` + projection for the pooled
//! embedding. Every layer's hidden state is available; MIMO reads one selected layer's
//! patch tokens ([`ClipVision::features`]).
//!
//! Fields carry HF's names, so HF checkpoints load as they are; open_clip checkpoints are
//! mapped by [`crate::clip::load`] (fused `in_proj` split into q, k, v).

pub mod cache;
mod config;
pub mod load;
pub mod preprocess;

pub use config::{ClipVisionConfig, FeatureSelect, HiddenAct, SelectFeature};
pub use load::load_clip;
pub use preprocess::ClipPreprocessConfig;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;

use crate::imageops::Image;
use crate::nn::{attention, gelu, quick_gelu, swap_dims_contiguous};

/// Class token, patch embedding and learned positions (`embeddings.*`).
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// `[hidden]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// Conv2d, kernel = stride = patch, no bias.
    pub patch_embedding: Conv2d<B>,
    /// `[grid² + 1, hidden]`.
    pub position_embedding: Embedding<B>,
}

/// Multi-head self-attention (`self_attn.{q,k,v,out}_proj`).
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    /// Heads.
    pub num_heads: usize,
}

/// The MLP (`mlp.fc1`, `mlp.fc2`).
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// `hidden -> intermediate`.
    pub fc1: Linear<B>,
    /// `intermediate -> hidden`.
    pub fc2: Linear<B>,
    /// Activation between them.
    #[module(skip)]
    pub act: HiddenAct,
}

/// One pre-LN encoder layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// Attention.
    pub self_attn: ClipAttention<B>,
    /// Before attention.
    pub layer_norm1: LayerNorm<B>,
    /// MLP.
    pub mlp: ClipMlp<B>,
    /// Before the MLP.
    pub layer_norm2: LayerNorm<B>,
}

/// The encoder layers (`encoder.layers.{i}`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// Layers.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

/// The vision transformer (`vision_model.*`).
#[derive(Module, Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    /// Embeddings.
    pub embeddings: ClipVisionEmbeddings<B>,
    /// LayerNorm after the embeddings (HF's spelling).
    pub pre_layrnorm: LayerNorm<B>,
    /// Encoder.
    pub encoder: ClipEncoder<B>,
    /// LayerNorm of the pooled class token.
    pub post_layernorm: LayerNorm<B>,
}

/// A CLIP vision tower with its optional projection (`visual_projection`).
#[derive(Module, Debug)]
pub struct ClipVision<B: Backend> {
    /// The transformer.
    pub vision_model: ClipVisionTransformer<B>,
    /// Pooled-embedding projection, no bias.
    pub visual_projection: Option<Linear<B>>,
    /// Which hidden state [`ClipVision::features`] returns.
    #[module(skip)]
    pub select: FeatureSelect,
    /// Input side in pixels.
    pub image_size: usize,
    /// How images become pixel values.
    #[module(skip)]
    pub preprocess: ClipPreprocessConfig,
}

/// Everything the tower computes.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput<B: Backend> {
    /// `num_hidden_layers + 1` states `[B, grid² + 1, hidden]`: after `pre_layrnorm`, then
    /// after each layer (HF's `hidden_states`).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// `post_layernorm` of the class token, `[B, hidden]`.
    pub pooled: Tensor<B, 2>,
    /// `visual_projection(pooled)`, `[B, projection_dim]`, when the tower has a projection.
    pub image_embeds: Option<Tensor<B, 2>>,
}

impl ClipVisionConfig {
    /// Builds the tower with lazily initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipVision<B> {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(d, d),
                    k_proj: linear(d, d),
                    v_proj: linear(d, d),
                    out_proj: linear(d, d),
                    num_heads: self.num_attention_heads,
                },
                layer_norm1: ln(),
                mlp: ClipMlp {
                    fc1: linear(d, self.intermediate_size),
                    fc2: linear(self.intermediate_size, d),
                    act: self.hidden_act,
                },
                layer_norm2: ln(),
            })
            .collect();
        ClipVision {
            vision_model: ClipVisionTransformer {
                embeddings: ClipVisionEmbeddings {
                    class_embedding: Param::from_tensor(Tensor::zeros([d], device)),
                    patch_embedding: Conv2dConfig::new(
                        [self.num_channels, d],
                        [self.patch_size, self.patch_size],
                    )
                    .with_stride([self.patch_size, self.patch_size])
                    .with_bias(false)
                    .init(device),
                    position_embedding: EmbeddingConfig::new(self.num_positions(), d).init(device),
                },
                pre_layrnorm: ln(),
                encoder: ClipEncoder { layers },
                post_layernorm: ln(),
            },
            visual_projection: self
                .projection_dim
                .map(|p| LinearConfig::new(d, p).with_bias(false).init(device)),
            select: self.select,
            image_size: self.image_size,
            preprocess: self.preprocess.clone(),
        }
    }
}

impl<B: Backend> ClipAttention<B> {
    /// `x: [B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let split = |t: Tensor<B, 3>| swap_dims_contiguous(t.reshape([b, n, h, d / h]), 1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        // Default scale: 1 / sqrt(head_dim), as in CLIP.
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out_proj
            .forward(swap_dims_contiguous(out, 1, 2).reshape([b, n, d]))
    }
}

impl<B: Backend> ClipMlp<B> {
    /// `fc2(act(fc1(x)))`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.fc1.forward(x);
        let x = match self.act {
            HiddenAct::Gelu => gelu(x),
            HiddenAct::QuickGelu => quick_gelu(x),
        };
        self.fc2.forward(x)
    }
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

impl<B: Backend> ClipVisionTransformer<B> {
    /// Patch embedding, class token and positions, `pre_layrnorm`: hidden state 0.
    pub fn embed(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let e = &self.embeddings;
        let x = e.patch_embedding.forward(pixel_values); // [B, D, g, g]
        let [b, d, gh, gw] = x.dims();
        let patches = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let cls = e.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let x = Tensor::cat(vec![cls, patches], 1) + e.position_embedding.weight.val().unsqueeze();
        self.pre_layrnorm.forward(x)
    }
}

impl<B: Backend> ClipVision<B> {
    /// Pre-processes images into a `[N, 3, S, S]` batch (see [`preprocess`]).
    pub fn pixel_values(&self, images: &[&Image]) -> Tensor<B, 4> {
        let s = self.preprocess.crop_size.unwrap_or(self.image_size);
        let device = self.vision_model.embeddings.class_embedding.device();
        let mut data = Vec::with_capacity(images.len() * 3 * s * s);
        for img in images {
            data.extend(self.preprocess.pixel_values(
                img.rgb(),
                (img.height(), img.width()),
                self.image_size,
                false,
            ));
        }
        Tensor::<B, 1>::from_floats(data.as_slice(), &device).reshape([images.len(), 3, s, s])
    }

    /// The configured features of images: pre-processing plus [`ClipVision::features`].
    pub fn image_features(&self, images: &[&Image]) -> Tensor<B, 3> {
        self.features(self.pixel_values(images))
    }

    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.vision_model.encoder.layers.len()
    }

    /// Runs the whole tower on normalised pixels `[B, C, S, S]`.
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> ClipVisionOutput<B> {
        let vm = &self.vision_model;
        let mut x = vm.embed(pixel_values);
        let mut hidden_states = vec![x.clone()];
        for layer in &vm.encoder.layers {
            x = layer.forward(x);
            hidden_states.push(x.clone());
        }
        let [b, _, d] = x.dims();
        let pooled = vm.post_layernorm.forward(x.narrow(1, 0, 1).reshape([b, d]));
        let image_embeds = self
            .visual_projection
            .as_ref()
            .map(|p| p.forward(pooled.clone()));
        ClipVisionOutput {
            hidden_states,
            pooled,
            image_embeds,
        }
    }

    /// The hidden state with index `layer` (`0` = after `pre_layrnorm`, negative from the
    /// end), running only the layers it needs.
    pub fn hidden_state(&self, pixel_values: Tensor<B, 4>, layer: usize) -> Tensor<B, 3> {
        let vm = &self.vision_model;
        let mut x = vm.embed(pixel_values);
        for l in vm.encoder.layers.iter().take(layer) {
            x = l.forward(x);
        }
        x
    }

    /// The configured feature (LLaVA's `feature_select`): the selected layer's patch
    /// tokens `[B, grid², D]`, or class + patch tokens `[B, grid² + 1, D]`.
    pub fn features(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let n = self.num_layers() as i64 + 1;
        let l = self.select.layer;
        let layer = (if l < 0 { n + l } else { l }).clamp(0, n - 1) as usize;
        let x = self.hidden_state(pixel_values, layer);
        match self.select.feature {
            SelectFeature::ClsPatch => x,
            SelectFeature::Patch => {
                let [b, t, d] = x.dims();
                x.slice([0..b, 1..t, 0..d])
            }
        }
    }
}

#[cfg(test)]
mod tests;
