//! SAM's mask decoder (`segment_anything/modeling/mask_decoder.py` and `transformer.py`):
//! a two-way transformer between prompt tokens and the image embedding, an upscaling
//! network, hypernetwork MLPs that turn mask tokens into mask weights, and an IoU head.

use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::Backend;

use super::config::{MaskDecoderConfig, TwoWayTransformerConfig};
use crate::nn::{LayerNorm2d, Mlp, gelu, swap_dims_contiguous};

/// Multi-head attention with an optional down-projection of q/k/v (`q_proj`, `k_proj`,
/// `v_proj`, `out_proj`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `C -> C / downsample_rate`.
    pub q_proj: Linear<B>,
    /// `C -> C / downsample_rate`.
    pub k_proj: Linear<B>,
    /// `C -> C / downsample_rate`.
    pub v_proj: Linear<B>,
    /// `C / downsample_rate -> C`.
    pub out_proj: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    fn new(dim: usize, heads: usize, rate: usize, device: &B::Device) -> Self {
        let internal = dim / rate;
        Self {
            q_proj: LinearConfig::new(dim, internal).init(device),
            k_proj: LinearConfig::new(dim, internal).init(device),
            v_proj: LinearConfig::new(dim, internal).init(device),
            out_proj: LinearConfig::new(internal, dim).init(device),
            num_heads: heads,
        }
    }

    fn heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, c] = x.dims();
        swap_dims_contiguous(x.reshape([b, n, self.num_heads, c / self.num_heads]), 1, 2)
    }

    /// `softmax(q kᵀ / sqrt(head_dim)) v` over `[B, N, C]` inputs.
    pub fn forward(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = self.heads(crate::nn::linear_rows(&self.q_proj, q));
        let k = self.heads(crate::nn::linear_rows(&self.k_proj, k));
        let v = self.heads(crate::nn::linear_rows(&self.v_proj, v));
        let [b, h, n, hd] = q.dims();
        let attn = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt();
        let out = softmax(attn, 3).matmul(v);
        let out = swap_dims_contiguous(out, 1, 2).reshape([b, n, h * hd]);
        crate::nn::linear_rows(&self.out_proj, out)
    }
}

/// The ReLU MLP of a two-way block (`mlp.lin1`, `mlp.lin2`).
#[derive(Module, Debug)]
pub struct MlpBlock<B: Backend> {
    /// `C -> mlp_dim`.
    pub lin1: Linear<B>,
    /// `mlp_dim -> C`.
    pub lin2: Linear<B>,
}

/// One block of the two-way transformer: token self-attention, token-to-image
/// cross-attention, MLP, image-to-token cross-attention.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock<B: Backend> {
    /// Token self-attention.
    pub self_attn: Attention<B>,
    /// After self-attention.
    pub norm1: LayerNorm<B>,
    /// Tokens attend to the image.
    pub cross_attn_token_to_image: Attention<B>,
    /// After token-to-image attention.
    pub norm2: LayerNorm<B>,
    /// Token MLP.
    pub mlp: MlpBlock<B>,
    /// After the MLP.
    pub norm3: LayerNorm<B>,
    /// After image-to-token attention.
    pub norm4: LayerNorm<B>,
    /// The image attends to the tokens.
    pub cross_attn_image_to_token: Attention<B>,
    /// Layer 0 replaces the queries by the self-attention output (no residual, no PE).
    pub skip_first_layer_pe: bool,
}

impl<B: Backend> TwoWayAttentionBlock<B> {
    /// Returns the updated `(queries, keys)`.
    pub fn forward(
        &self,
        queries: Tensor<B, 3>,
        keys: Tensor<B, 3>,
        query_pe: Tensor<B, 3>,
        key_pe: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = self
            .norm2
            .forward(queries + self.cross_attn_token_to_image.forward(q, k, keys.clone()));

        let mlp = crate::nn::linear_rows(
            &self.mlp.lin2,
            relu(crate::nn::linear_rows(&self.mlp.lin1, queries.clone())),
        );
        let queries = self.norm3.forward(queries + mlp);

        let q = queries.clone() + query_pe;
        let k = keys.clone() + key_pe;
        let keys = self.norm4.forward(
            keys + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone()),
        );
        (queries, keys)
    }
}

/// The two-way transformer.
#[derive(Module, Debug)]
pub struct TwoWayTransformer<B: Backend> {
    /// Blocks.
    pub layers: Vec<TwoWayAttentionBlock<B>>,
    /// Final token-to-image attention.
    pub final_attn_token_to_image: Attention<B>,
    /// Final LayerNorm.
    pub norm_final_attn: LayerNorm<B>,
}

impl TwoWayTransformerConfig {
    /// Builds the transformer (LayerNorm eps 1e-5, PyTorch's default, as in SAM).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TwoWayTransformer<B> {
        let c = self.embedding_dim;
        let rate = self.attention_downsample_rate;
        let ln = || LayerNormConfig::new(c).with_epsilon(1e-5).init(device);
        let layers = (0..self.depth)
            .map(|i| TwoWayAttentionBlock {
                self_attn: Attention::new(c, self.num_heads, 1, device),
                norm1: ln(),
                cross_attn_token_to_image: Attention::new(c, self.num_heads, rate, device),
                norm2: ln(),
                mlp: MlpBlock {
                    lin1: LinearConfig::new(c, self.mlp_dim).init(device),
                    lin2: LinearConfig::new(self.mlp_dim, c).init(device),
                },
                norm3: ln(),
                norm4: ln(),
                cross_attn_image_to_token: Attention::new(c, self.num_heads, rate, device),
                skip_first_layer_pe: i == 0,
            })
            .collect();
        TwoWayTransformer {
            layers,
            final_attn_token_to_image: Attention::new(c, self.num_heads, rate, device),
            norm_final_attn: ln(),
        }
    }
}

impl<B: Backend> TwoWayTransformer<B> {
    /// `image_embedding`, `image_pe`: `[B, C, h, w]`; `point_embedding`: `[B, N, C]`.
    /// Returns the processed tokens `[B, N, C]` and image keys `[B, h*w, C]`.
    pub fn forward(
        &self,
        image_embedding: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        point_embedding: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        // [B, C, h, w] -> [B, h*w, C] (materialised: every later op reads the keys row-wise)
        let [b, c, h, w] = image_embedding.dims();
        let keys = image_embedding.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        let key_pe = image_pe.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        let mut queries = point_embedding.clone();
        let mut keys = keys;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, point_embedding.clone(), key_pe.clone());
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + key_pe;
        let attn = self.final_attn_token_to_image.forward(q, k, keys.clone());
        (self.norm_final_attn.forward(queries + attn), keys)
    }
}

/// The upscaling network (`output_upscaling.{0,1,3}` in PyTorch): two stride-2 transposed
/// convolutions with a LayerNorm2d and GELUs, 4x in total.
#[derive(Module, Debug)]
pub struct OutputUpscaling<B: Backend> {
    /// `.0`: ConvTranspose2d(C, C/4, k2, s2).
    pub conv1: ConvTranspose2d<B>,
    /// `.1`.
    pub ln: LayerNorm2d<B>,
    /// `.3`: ConvTranspose2d(C/4, C/8, k2, s2).
    pub conv2: ConvTranspose2d<B>,
}

/// The mask decoder.
#[derive(Module, Debug)]
pub struct MaskDecoder<B: Backend> {
    /// Two-way transformer.
    pub transformer: TwoWayTransformer<B>,
    /// The IoU prediction token, `[1, C]`.
    pub iou_token: Embedding<B>,
    /// Mask tokens, `[num_multimask_outputs + 1, C]`.
    pub mask_tokens: Embedding<B>,
    /// Upscaling of the image embedding.
    pub output_upscaling: OutputUpscaling<B>,
    /// One hypernetwork MLP per mask token, `C -> C -> C -> C/8`.
    pub output_hypernetworks_mlps: Vec<Mlp<B>>,
    /// IoU head, `C -> hidden -> ... -> num_mask_tokens`.
    pub iou_prediction_head: Mlp<B>,
}

impl MaskDecoderConfig {
    /// Builds the decoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MaskDecoder<B> {
        let c = self.transformer_dim;
        let n = self.num_multimask_outputs + 1;
        MaskDecoder {
            transformer: self.transformer.init(device),
            iou_token: EmbeddingConfig::new(1, c).init(device),
            mask_tokens: EmbeddingConfig::new(n, c).init(device),
            output_upscaling: OutputUpscaling {
                conv1: ConvTranspose2dConfig::new([c, c / 4], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
                ln: LayerNorm2d::new(c / 4, 1e-6, device),
                conv2: ConvTranspose2dConfig::new([c / 4, c / 8], [2, 2])
                    .with_stride([2, 2])
                    .init(device),
            },
            output_hypernetworks_mlps: (0..n).map(|_| Mlp::new(c, c, c / 8, 3, device)).collect(),
            iou_prediction_head: Mlp::new(
                c,
                self.iou_head_hidden_dim,
                n,
                self.iou_head_depth,
                device,
            ),
        }
    }
}

impl<B: Backend> MaskDecoder<B> {
    /// Number of mask tokens (multimask outputs + the single-mask token).
    pub fn num_mask_tokens(&self) -> usize {
        self.output_hypernetworks_mlps.len()
    }

    /// Predicts all mask tokens' masks `[B, T, 4h, 4w]` and IoUs `[B, T]`.
    ///
    /// `image_embeddings` and `image_pe` are one image (`[1, C, h, w]`), shared by the `B`
    /// prompts of `sparse` (`[B, N, C]`) and `dense` (`[B, C, h, w]`).
    pub fn predict_masks(
        &self,
        image_embeddings: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        sparse: Tensor<B, 3>,
        dense: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 2>) {
        let [b, _, c] = sparse.dims();
        let t = self.num_mask_tokens();
        let output_tokens = Tensor::cat(
            vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()],
            0,
        )
        .unsqueeze::<3>()
        .expand([b, t + 1, c]);
        let tokens = if sparse.dims()[1] == 0 {
            output_tokens
        } else {
            Tensor::cat(vec![output_tokens, sparse], 1)
        };
        let [_, _, h, w] = dense.dims();
        let src = image_embeddings.expand([b, c, h, w]) + dense;
        let pos = image_pe.expand([b, c, h, w]);
        let (hs, src) = self.transformer.forward(src, pos, tokens);
        let iou_token_out = hs.clone().slice([0..b, 0..1]).reshape([b, c]);
        let mask_tokens_out = hs.slice([0..b, 1..1 + t]);

        let src = src.swap_dims(1, 2).reshape([b, c, h, w]);
        let up = &self.output_upscaling;
        let x = gelu(up.ln.forward(up.conv1.forward(src)));
        let upscaled = gelu(up.conv2.forward(x));
        let [_, cu, hu, wu] = upscaled.dims();

        let hyper: Vec<Tensor<B, 2>> = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| {
                mlp.forward(
                    mask_tokens_out
                        .clone()
                        .slice([0..b, i..i + 1])
                        .reshape([b, c]),
                )
            })
            .collect();
        let hyper_in = Tensor::stack::<3>(hyper, 1); // [b, t, cu]
        let masks = hyper_in
            .matmul(upscaled.reshape([b, cu, hu * wu]))
            .reshape([b, t, hu, wu]);
        let iou = self.iou_prediction_head.forward(iou_token_out);
        (masks, iou)
    }

    /// segment_anything's `MaskDecoder.forward`: with `multimask_output` the masks of tokens
    /// 1.. (`[B, 3, 4h, 4w]`), otherwise the single-mask token 0 (`[B, 1, 4h, 4w]`), with
    /// their predicted IoUs.
    pub fn forward(
        &self,
        image_embeddings: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        sparse: Tensor<B, 3>,
        dense: Tensor<B, 4>,
        multimask_output: bool,
    ) -> (Tensor<B, 4>, Tensor<B, 2>) {
        let (masks, iou) = self.predict_masks(image_embeddings, image_pe, sparse, dense);
        let [b, t, hu, wu] = masks.dims();
        let range = if multimask_output { 1..t } else { 0..1 };
        (
            masks.slice([0..b, range.clone(), 0..hu, 0..wu]),
            iou.slice([0..b, range]),
        )
    }
}
