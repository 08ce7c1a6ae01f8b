//! The multi-modal input aligner: learnable queries that cross-attend over the image tokens,
//! the visual-prompt tokens and the instruction's text embeddings, then a linear projection
//! into the LLM's width. Its output is spliced into the LLM sequence after the image tokens.
//!
//! MIMO's paper states the queries, the cross-attention over the concatenated (image, text,
//! visual-prompt) embeddings and the linear projection into the LLM; depth, width, heads and
//! norm placement are not given. Our choices, each a config field, follow BLIP-2's Q-Former
//! (salesforce/LAVIS `lavis/models/blip2_models/blip2.py` lines 47-61: 32 queries
//! initialised N(0, 0.02)) with pre-LN transformer blocks:
//!
//! ```text
//! C  = cat[img_ctx(ln_img(F_img)) + type[0], img_ctx(ln_img(V)) + type[1], txt_ctx(T) + type[2]]
//! Q  = query                                    (N_q x d, shared by the batch)
//! per block:  Q += SelfAttn(ln1(Q));  Q += CrossAttn(ln2(Q), ln_kv(C), key padding);  Q += MLP(ln3(Q))
//! A  = llm_proj(ln_f(Q))                         (N_q x llm width)
//! ```
//!
//! Visual-prompt tokens share the image's norm and projection (they live in the same
//! feature space); padding prompt slots and non-instruction text positions are masked keys.

use crate::nn::{attention, gelu, swap_dims_contiguous};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Added to the attention logits of masked keys (finite, as the LLM's mask).
const MASKED: f32 = -1e30;

/// Sizes of the aligner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignerConfig {
    /// Learnable queries `N_q` (BLIP-2: 32).
    pub num_queries: usize,
    /// Width `d` of the queries and the context.
    pub width: usize,
    /// Attention heads (`width` must divide by it).
    pub num_heads: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Hidden width of each block's MLP (exact GELU).
    pub mlp_dim: usize,
    /// Width of the image features and visual-prompt tokens (CLIP hidden size).
    pub image_dim: usize,
    /// Width of the text embeddings and of the output (the LLM's hidden size).
    pub llm_dim: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-5
}

impl AlignerConfig {
    /// Checks the sizes; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("num_queries", self.num_queries),
            ("width", self.width),
            ("num_heads", self.num_heads),
            ("depth", self.depth),
            ("mlp_dim", self.mlp_dim),
            ("image_dim", self.image_dim),
            ("llm_dim", self.llm_dim),
        ] {
            if v == 0 {
                return ConfigError::invalid(field, "must be positive".into());
            }
        }
        if !self.width.is_multiple_of(self.num_heads) {
            return ConfigError::invalid(
                "num_heads",
                format!("must divide width {}, got {}", self.width, self.num_heads),
            );
        }
        Ok(())
    }

    /// Randomly initialised aligner: queries and type embeddings N(0, 0.02), PyTorch's
    /// default Linear init, LayerNorms (1, 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Aligner<B> {
        let d = self.width;
        let ln = |n: usize| {
            LayerNormConfig::new(n)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let mha = || MultiHeadAttention {
            q_proj: lin(d, d),
            k_proj: lin(d, d),
            v_proj: lin(d, d),
            out_proj: lin(d, d),
            num_heads: self.num_heads,
        };
        let normal = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        Aligner {
            query: normal([self.num_queries, d]),
            type_embed: normal([3, d]),
            ln_img: ln(self.image_dim),
            img_ctx: lin(self.image_dim, d),
            txt_ctx: lin(self.llm_dim, d),
            blocks: (0..self.depth)
                .map(|_| AlignerBlock {
                    ln1: ln(d),
                    self_attn: mha(),
                    ln2: ln(d),
                    ln_kv: ln(d),
                    cross_attn: mha(),
                    ln3: ln(d),
                    mlp: AlignerMlp {
                        fc1: lin(d, self.mlp_dim),
                        fc2: lin(self.mlp_dim, d),
                    },
                })
                .collect(),
            ln_f: ln(d),
            llm_proj: lin(d, self.llm_dim),
        }
    }
}

/// Multi-head attention with separate projections (biases on), scaled dot product.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    /// Queries.
    pub q_proj: Linear<B>,
    /// Keys.
    pub k_proj: Linear<B>,
    /// Values.
    pub v_proj: Linear<B>,
    /// Output.
    pub out_proj: Linear<B>,
    /// Heads.
    pub num_heads: usize,
}

impl<B: Backend> MultiHeadAttention<B> {
    /// `q` `[B, Nq, d]` attends `kv` `[B, T, d]`; `key_padding` `[B, T]` (true = ignore).
    pub fn forward(
        &self,
        q: Tensor<B, 3>,
        kv: Tensor<B, 3>,
        key_padding: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [b, nq, d] = q.dims();
        let t = kv.dims()[1];
        let h = self.num_heads;
        let split =
            |x: Tensor<B, 3>, n: usize| swap_dims_contiguous(x.reshape([b, n, h, d / h]), 1, 2);
        let q = split(crate::nn::linear_rows(&self.q_proj, q), nq);
        let k = split(crate::nn::linear_rows(&self.k_proj, kv.clone()), t);
        let v = split(crate::nn::linear_rows(&self.v_proj, kv), t);
        let dtype = q.dtype();
        let bias = key_padding.map(|m| {
            Tensor::<B, 4>::zeros([b, 1, 1, t], &m.device())
                .mask_fill(m.reshape([b, 1, 1, t]), MASKED)
                .cast(dtype)
                .expand([b, h, nq, t])
        });
        let out = attention(q, k, v, None, bias, AttentionModuleOptions::default());
        let out = swap_dims_contiguous(out, 1, 2).reshape([b, nq, d]);
        crate::nn::linear_rows(&self.out_proj, out)
    }
}

/// The MLP of a block.
#[derive(Module, Debug)]
pub struct AlignerMlp<B: Backend> {
    /// `d -> mlp_dim`.
    pub fc1: Linear<B>,
    /// `mlp_dim -> d`.
    pub fc2: Linear<B>,
}

/// One pre-LN block: self-attention over the queries, cross-attention to the context, MLP.
#[derive(Module, Debug)]
pub struct AlignerBlock<B: Backend> {
    /// Before self-attention.
    pub ln1: LayerNorm<B>,
    /// Over the queries.
    pub self_attn: MultiHeadAttention<B>,
    /// Before cross-attention (queries).
    pub ln2: LayerNorm<B>,
    /// Before cross-attention (context).
    pub ln_kv: LayerNorm<B>,
    /// Queries to context.
    pub cross_attn: MultiHeadAttention<B>,
    /// Before the MLP.
    pub ln3: LayerNorm<B>,
    /// The MLP.
    pub mlp: AlignerMlp<B>,
}

/// The aligner (`aligner.*` in MIMO checkpoints).
#[derive(Module, Debug)]
pub struct Aligner<B: Backend> {
    /// Learnable queries `[N_q, d]`.
    pub query: Param<Tensor<B, 2>>,
    /// Type embeddings of image, visual-prompt and text context tokens `[3, d]`.
    pub type_embed: Param<Tensor<B, 2>>,
    /// Norm of image features and visual-prompt tokens.
    pub ln_img: LayerNorm<B>,
    /// Image features and visual-prompt tokens to `d`.
    pub img_ctx: Linear<B>,
    /// Text embeddings to `d`.
    pub txt_ctx: Linear<B>,
    /// The blocks.
    pub blocks: Vec<AlignerBlock<B>>,
    /// Final norm.
    pub ln_f: LayerNorm<B>,
    /// Into the LLM width.
    pub llm_proj: Linear<B>,
}

/// What the aligner reads for a batch of `N` images.
#[derive(Debug, Clone)]
pub struct AlignerContext<B: Backend> {
    /// Image features `[N, P, image_dim]`.
    pub image: Tensor<B, 3>,
    /// Visual-prompt tokens `[N, Nv, image_dim]` (`Nv` may be 0).
    pub prompts: Tensor<B, 3>,
    /// `[N, Nv]`, true for padding slots.
    pub prompt_padding: Tensor<B, 2, Bool>,
    /// Text embeddings `[N, L, llm_dim]`.
    pub text: Tensor<B, 3>,
    /// `[N, L]`, true for the instruction tokens the queries may read.
    pub text_keep: Tensor<B, 2, Bool>,
}

impl<B: Backend> Aligner<B> {
    /// Number of queries (tokens the aligner adds to the LLM sequence).
    pub fn num_queries(&self) -> usize {
        self.query.val().dims()[0]
    }

    fn type_row(&self, i: usize) -> Tensor<B, 3> {
        let d = self.query.val().dims()[1];
        self.type_embed
            .val()
            .slice([i..i + 1, 0..d])
            .unsqueeze::<3>()
    }

    /// Aligned tokens `[N, N_q, llm_dim]`.
    pub fn forward(&self, ctx: AlignerContext<B>) -> Tensor<B, 3> {
        let [n, p, _] = ctx.image.dims();
        let device = ctx.image.device();
        let mut parts = vec![
            crate::nn::linear_rows(&self.img_ctx, self.ln_img.forward(ctx.image))
                + self.type_row(0),
        ];
        let mut pads = vec![Tensor::<B, 2, Bool>::from_data(
            burn::tensor::TensorData::new(vec![false; n * p], [n, p]),
            &device,
        )];
        if ctx.prompts.dims()[1] > 0 {
            parts.push(
                crate::nn::linear_rows(&self.img_ctx, self.ln_img.forward(ctx.prompts))
                    + self.type_row(1),
            );
            pads.push(ctx.prompt_padding);
        }
        if ctx.text.dims()[1] > 0 {
            parts.push(crate::nn::linear_rows(&self.txt_ctx, ctx.text) + self.type_row(2));
            pads.push(ctx.text_keep.bool_not());
        }
        let context = Tensor::cat(parts, 1);
        let padding = Tensor::cat(pads, 1);
        let [nq, d] = self.query.val().dims();
        let mut q = self.query.val().unsqueeze::<3>().expand([n, nq, d]);
        for blk in &self.blocks {
            let x = blk.ln1.forward(q.clone());
            q = q + blk.self_attn.forward(x.clone(), x, None);
            let kv = blk.ln_kv.forward(context.clone());
            q = q.clone()
                + blk
                    .cross_attn
                    .forward(blk.ln2.forward(q), kv, Some(padding.clone()));
            let x = blk.ln3.forward(q.clone());
            q = q + crate::nn::linear_rows(
                &blk.mlp.fc2,
                gelu(crate::nn::linear_rows(&blk.mlp.fc1, x)),
            );
        }
        crate::nn::linear_rows(&self.llm_proj, self.ln_f.forward(q))
    }
}
