//! LLaMA/Vicuna decoder matching HF `LlamaForCausalLM`: RMSNorm computed in f32, RoPE in
//! HF's `rotate_half` layout (not burn's interleaved `RotaryEncoding`), SwiGLU, grouped-query
//! attention, tied or untied embeddings, causal plus padding mask, a KV cache for incremental
//! decoding, and forward from token ids or from `inputs_embeds`.
//!
//! Module fields carry HF's names, so `model.safetensors` loads without renames
//! ([`crate::llm::load`]).

pub mod chat;
mod config;
pub mod generate;
pub mod load;
pub mod lora;
mod token_rows;
pub use token_rows::NewTokenRows;

pub use chat::{ChatError, ChatModel, ChatOptions, OpenReport};
pub use config::LlamaConfig;
pub use generate::{FinishReason, Generated, GenerationConfig};
pub use load::load_llama;
pub use lora::{LoraConfig, LoraLinear};

use crate::nn::{attention, silu, swap_dims_contiguous};
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use crate::tokenizer::IGNORE_INDEX;

/// Added to the attention logits of masked pairs: finite, so a fully masked row (a left
/// padding position) gives uniform weights instead of NaN, as HF's `finfo.min` does.
const MASKED: f32 = -1e30;

/// Root-mean-square norm with HF's numerics: statistics in f32, result cast back.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    fn new(d: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            eps,
        }
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let xf = x.cast(DType::F32);
        let var = xf.clone().powi_scalar(2).mean_dim(D - 1);
        let normed = (xf * (var + self.eps).sqrt().recip()).cast(dtype);
        let mut shape = [1usize; D];
        shape[D - 1] = self.weight.dims()[0];
        normed * self.weight.val().reshape(shape)
    }
}

/// Self-attention with grouped key/value heads (`self_attn.{q,k,v,o}_proj`, no biases).
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// Queries.
    pub q_proj: LoraLinear<B>,
    /// Keys.
    pub k_proj: LoraLinear<B>,
    /// Values.
    pub v_proj: LoraLinear<B>,
    /// Output.
    pub o_proj: LoraLinear<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

/// SwiGLU MLP (`mlp.{gate,up,down}_proj`).
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// Gate.
    pub gate_proj: LoraLinear<B>,
    /// Up.
    pub up_proj: LoraLinear<B>,
    /// Down.
    pub down_proj: LoraLinear<B>,
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer<B: Backend> {
    /// Attention.
    pub self_attn: LlamaAttention<B>,
    /// MLP.
    pub mlp: LlamaMlp<B>,
    /// Before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// The decoder stack (`model.*`).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// Token embeddings.
    pub embed_tokens: Embedding<B>,
    /// Layers.
    pub layers: Vec<LlamaDecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
}

/// `LlamaForCausalLM`.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// The decoder.
    pub model: LlamaModel<B>,
    /// Output projection; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// RoPE base.
    pub rope_theta: f64,
    /// The added tokens' rows when they train apart from the base rows (see
    /// [`Llama::split_token_rows`]); `None` otherwise.
    pub new_token_rows: Option<NewTokenRows<B>>,
}

/// Keys and values of past positions, one entry per layer (`[B, kv_heads, T, head_dim]`).
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self { layers: Vec::new() }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The output of a forward pass.
#[derive(Debug, Clone)]
pub struct LlamaOutput<B: Backend> {
    /// `[B, S, vocab]`.
    pub logits: Tensor<B, 3>,
    /// After the final norm, `[B, S, hidden]` (what LISA/MIMO read at `<SEG>`).
    pub last_hidden_state: Tensor<B, 3>,
    /// With `output_hidden_states`: the embeddings, then each layer's output, the last one
    /// replaced by the final-norm output (HF's convention), `num_hidden_layers + 1` entries.
    pub hidden_states: Vec<Tensor<B, 3>>,
}

impl LlamaConfig {
    /// Builds the model with lazily initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Llama<B> {
        let d = self.hidden_size;
        let hd = self.head_width();
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let proj = |i, o| LoraLinear::new(lin(i, o));
        let layers = (0..self.num_hidden_layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: proj(d, h * hd),
                    k_proj: proj(d, kv * hd),
                    v_proj: proj(d, kv * hd),
                    o_proj: proj(h * hd, d),
                    num_heads: h,
                    num_kv_heads: kv,
                    head_dim: hd,
                },
                mlp: LlamaMlp {
                    gate_proj: proj(d, self.intermediate_size),
                    up_proj: proj(d, self.intermediate_size),
                    down_proj: proj(self.intermediate_size, d),
                },
                input_layernorm: RmsNorm::new(d, self.rms_norm_eps, device),
                post_attention_layernorm: RmsNorm::new(d, self.rms_norm_eps, device),
            })
            .collect();
        Llama {
            model: LlamaModel {
                embed_tokens: EmbeddingConfig::new(self.vocab_size, d).init(device),
                layers,
                norm: RmsNorm::new(d, self.rms_norm_eps, device),
            },
            lm_head: (!self.tie_word_embeddings).then(|| lin(d, self.vocab_size)),
            rope_theta: self.rope_theta,
            new_token_rows: None,
        }
    }
}

/// HF's `rotate_half`: `[x1, x2] -> [-x2, x1]` over the last dimension.
fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, s, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
    let x2 = x.slice([0..b, 0..h, 0..s, d / 2..d]);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// cos/sin tables `[B, 1, S, head_dim]` for position ids `[B, S]`.
fn rope_tables<B: Backend>(
    positions: &Tensor<B, 2, Int>,
    head_dim: usize,
    theta: f64,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let device = positions.device();
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::<B, 1>::from_floats(inv.as_slice(), &device).reshape([1, 1, half]);
    let [b, s] = positions.dims();
    let freqs = positions.clone().float().reshape([b, s, 1]) * inv;
    let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
    (emb.clone().cos(), emb.sin())
}

/// The RoPE tables of one forward, repeated over the query heads and over the key heads:
/// `[B, heads, S, head_dim]`, laid out in full.
///
/// Multiplying the heads by `[B, 1, S, head_dim]` tables broadcasts along a middle axis,
/// which the CPU backend walks element by element (burn-flex 0.21.0 `ops/binary.rs`: its SIMD
/// broadcast paths cover a shared last row or a per-row scalar only); with tables of the
/// heads' shape the products are plain element-wise ones. The tables are built once per
/// forward and shared by every layer; the values are unchanged.
#[derive(Debug, Clone)]
struct RopeTables<B: Backend> {
    /// `(cos, sin)` for the queries.
    q: (Tensor<B, 4>, Tensor<B, 4>),
    /// `(cos, sin)` for the keys (grouped-query attention has fewer key heads).
    k: (Tensor<B, 4>, Tensor<B, 4>),
}

impl<B: Backend> RopeTables<B> {
    fn new((cos, sin): (Tensor<B, 4>, Tensor<B, 4>), heads: usize, kv_heads: usize) -> Self {
        let repeat = |t: &Tensor<B, 4>, n: usize| t.clone().repeat_dim(1, n);
        let q = (repeat(&cos, heads), repeat(&sin, heads));
        let k = if kv_heads == heads {
            q.clone()
        } else {
            (repeat(&cos, kv_heads), repeat(&sin, kv_heads))
        };
        Self { q, k }
    }
}

/// `x * cos + rotate_half(x) * sin` (HF `apply_rotary_pos_emb`).
fn apply_rope<B: Backend>(
    x: Tensor<B, 4>,
    (cos, sin): &(Tensor<B, 4>, Tensor<B, 4>),
) -> Tensor<B, 4> {
    x.clone() * cos.clone() + rotate_half(x) * sin.clone()
}

impl<B: Backend> LlamaAttention<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        bias: Tensor<B, 4>,
        cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split =
            |t: Tensor<B, 3>, n: usize| swap_dims_contiguous(t.reshape([b, s, n, hd]), 1, 2);
        let q = split(self.q_proj.forward(x.clone()), h);
        let k = split(self.k_proj.forward(x.clone()), kv);
        let v = split(self.v_proj.forward(x), kv);
        let q = apply_rope(q, &rope.q);
        let k = apply_rope(k, &rope.k);
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let t = k.dims()[2];
        let repeat = |x: Tensor<B, 4>| {
            if h == kv {
                x
            } else {
                x.unsqueeze_dim::<5>(2)
                    .expand([b, kv, h / kv, t, hd])
                    .reshape([b, h, t, hd])
            }
        };
        let out = attention(
            q,
            repeat(k),
            repeat(v),
            None,
            Some(bias.expand([b, h, s, t])),
            AttentionModuleOptions::default(),
        );
        self.o_proj
            .forward(swap_dims_contiguous(out, 1, 2).reshape([b, s, h * hd]))
    }
}

/// What the decoder layers of one forward share (see [`Llama::decoder_context`]).
#[derive(Debug, Clone)]
pub struct DecoderContext<B: Backend> {
    rope: RopeTables<B>,
    bias: Tensor<B, 4>,
}

impl<B: Backend> LlamaDecoderLayer<B> {
    /// One decoder layer (HF `LlamaDecoderLayer.forward`): pre-norm attention and MLP, each
    /// added to the residual. `cache` holds this layer's past keys/values and is extended.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        ctx: &DecoderContext<B>,
        cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let a = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            &ctx.rope,
            ctx.bias.clone(),
            cache,
        );
        let x = x + a;
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

impl<B: Backend> LlamaMlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj
            .forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

/// Position ids as `generate` computes them for a left-padded batch:
/// `cumsum(mask) - 1`, with padding positions set to 1. `mask` is `[B][T]` of 0/1.
pub fn positions_from_mask(mask: &[Vec<u8>]) -> Vec<Vec<i64>> {
    mask.iter()
        .map(|row| {
            let mut c = 0i64;
            row.iter()
                .map(|&m| {
                    c += m as i64;
                    if m == 0 { 1 } else { c - 1 }
                })
                .collect()
        })
        .collect()
}

/// Additive attention bias `[B, 1, S, past + S]`: 0 where query `i` (absolute position
/// `past + i`) may attend key `j` (`j <= past + i` and `mask[b, j]`), `masked` elsewhere.
/// Built on the device from the mask (HF's `_prepare_4d_causal_attention_mask`).
fn attention_bias<B: Backend>(
    mask: Tensor<B, 2, Bool>,
    s: usize,
    past: usize,
    masked: f32,
) -> Tensor<B, 4> {
    let device = mask.device();
    let [b, t] = mask.dims();
    let queries = Tensor::<B, 1, Int>::arange(past as i64..(past + s) as i64, &device)
        .reshape([1, 1, s, 1])
        .expand([1, 1, s, t]);
    let keys = Tensor::<B, 1, Int>::arange(0..t as i64, &device)
        .reshape([1, 1, 1, t])
        .expand([1, 1, s, t]);
    let future = keys.greater(queries).expand([b, 1, s, t]);
    let padding = mask.bool_not().reshape([b, 1, 1, t]).expand([b, 1, s, t]);
    Tensor::<B, 4>::zeros([b, 1, s, t], &device).mask_fill(future.bool_or(padding), masked)
}

/// HF's causal-LM loss: cross-entropy of `logits[:, :-1]` against `labels[:, 1:]`, averaged
/// over the positions whose label is not [`IGNORE_INDEX`] (`CrossEntropyLoss()`'s mean), in
/// f32 whatever the logits' dtype. A batch without any target gives 0 (PyTorch: NaN).
///
/// `logits` `[B, S, vocab]`, `labels` `[B, S]`; returns a one-element tensor.
pub fn causal_lm_loss<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    if s < 2 {
        return Tensor::zeros([1], &logits.device());
    }
    let n = b * (s - 1);
    let logits = logits
        .slice([0..b, 0..s - 1, 0..v])
        .cast(DType::F32)
        .reshape([n, v]);
    let labels = labels.slice([0..b, 1..s]).reshape([n]);
    let valid = labels.clone().not_equal_elem(IGNORE_INDEX);
    let safe = labels
        .mask_fill(valid.clone().bool_not(), 0)
        .reshape([n, 1]);
    let logp = burn::tensor::activation::log_softmax(logits, 1);
    let picked = logp.gather(1, safe).reshape([n]);
    let weight = valid.float();
    let count = weight.clone().sum().clamp_min(1.0);
    (picked * weight).sum().neg() / count
}

/// How rows for added tokens are initialised by [`Llama::resize_token_embeddings`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum NewTokenInit {
    /// `N(0, std²)`: transformers 4.31's `_init_weights` with `initializer_range` 0.02, as
    /// LISA resized Vicuna.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// The mean of the existing rows.
    Mean,
}

/// Casts every float parameter to `dtype`, keeping lazy ones lazy only if already `dtype`.
struct CastTo(DType);

impl<B: Backend> burn::module::ModuleMapper<B> for CastTo {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        if param.dtype() == dtype {
            return param;
        }
        param.map(|t| t.cast(dtype))
    }
}

impl<B: Backend> Llama<B> {
    /// The model with its weights (and so its activations) in `dtype`, e.g. `DType::BF16` on
    /// a GPU; RMSNorm statistics stay in f32 as in transformers.
    pub fn cast(self, dtype: DType) -> Self {
        self.map(&mut CastTo(dtype))
    }

    /// Grows `embed_tokens` (and an untied `lm_head`) to `vocab_size` rows for added tokens
    /// (`<p>`, `</p>`, `<SEG>`, ...); existing rows are kept. Shrinking is not supported:
    /// a smaller size leaves the model unchanged.
    pub fn resize_token_embeddings(mut self, vocab_size: usize, init: NewTokenInit) -> Self {
        let old = self.model.embed_tokens.weight.val();
        let [n, d] = old.dims();
        if vocab_size <= n {
            return self;
        }
        let device = old.device();
        let dtype = old.dtype();
        let extra = vocab_size - n;
        // New rows are computed in f32 and stored in the weights' dtype (transformers takes
        // the mean of half-precision embeddings in f32 too).
        let rows = |w: Tensor<B, 2>| {
            match init {
                NewTokenInit::Normal { std } => Tensor::<B, 2>::random(
                    [extra, d],
                    burn::tensor::Distribution::Normal(0.0, std),
                    &device,
                ),
                NewTokenInit::Mean => w.cast(DType::F32).mean_dim(0).expand([extra, d]),
            }
            .cast(dtype)
        };
        // `detach`: a new leaf even when the old weights are tracked (autodiff).
        let grown = Tensor::cat(vec![old.clone(), rows(old)], 0).detach();
        self.model.embed_tokens.weight = Param::from_tensor(grown);
        if let Some(head) = self.lm_head.as_mut() {
            // burn stores the head as [hidden, vocab]: new tokens are new columns.
            let w = head.weight.val();
            let added = rows(w.clone().transpose()).transpose();
            head.weight = Param::from_tensor(Tensor::cat(vec![w, added], 1).detach());
        }
        self
    }

    fn device(&self) -> B::Device {
        self.model.embed_tokens.weight.device()
    }

    /// The dtype of the weights (that of `embed_tokens`).
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.weight.dtype()
    }

    /// The dtype the decoder computes in: that of its final norm (the frozen base's; trained
    /// adapters and token rows may be kept in f32 beside a bf16 base).
    pub fn compute_dtype(&self) -> DType {
        self.model.norm.weight.dtype()
    }

    /// Embeds token ids `[B, S]`.
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match &self.new_token_rows {
            None => self.model.embed_tokens.forward(input_ids),
            // Each part looked up on its own and the rows picked per token: concatenating
            // the matrices would build (and the graph keep) a whole `[vocab, hidden]` copy
            // every forward (250 MB in bf16 at 7B).
            Some(rows) => {
                let base = self.model.embed_tokens.weight.val();
                let first_new = base.dims()[0] as i64;
                let is_new = input_ids.clone().greater_equal_elem(first_new);
                let from_base = burn::tensor::module::embedding(
                    base.clone(),
                    input_ids.clone().clamp_max(first_new - 1),
                );
                let from_new = burn::tensor::module::embedding(
                    rows.embed.val().cast(base.dtype()),
                    (input_ids - first_new).clamp_min(0),
                );
                from_base.mask_where(is_new.unsqueeze_dim::<3>(2), from_new)
            }
        }
    }

    /// Forward from embeddings `[B, S, hidden]` with host-side mask and positions (see
    /// [`Llama::forward`] for the tensor-level form that training uses).
    ///
    /// `attention_mask` is `[B][past + S]` (1 = attend, 0 = padding) and `position_ids`
    /// `[B][S]`; `cache` holds the past keys/values and is extended.
    pub fn forward_embeds(
        &self,
        inputs_embeds: Tensor<B, 3>,
        attention_mask: &[Vec<u8>],
        position_ids: &[Vec<i64>],
        cache: &mut KvCache<B>,
        output_hidden_states: bool,
    ) -> LlamaOutput<B> {
        self.run(
            inputs_embeds,
            attention_mask,
            position_ids,
            cache,
            output_hidden_states,
            false,
        )
    }

    /// The host-side form of [`Llama::forward`]; with `last_only` the logits are computed
    /// for the last position only (`[B, 1, vocab]`: what a generation step needs).
    pub(crate) fn run(
        &self,
        inputs_embeds: Tensor<B, 3>,
        attention_mask: &[Vec<u8>],
        position_ids: &[Vec<i64>],
        cache: &mut KvCache<B>,
        output_hidden_states: bool,
        last_only: bool,
    ) -> LlamaOutput<B> {
        let device = self.device();
        let [b, s, _] = inputs_embeds.dims();
        let total = cache.len() + s;
        let mask: Vec<bool> = (0..b)
            .flat_map(|bi| {
                (0..total).map(move |j| {
                    attention_mask
                        .get(bi)
                        .and_then(|r| r.get(j))
                        .is_some_and(|&m| m != 0)
                })
            })
            .collect();
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [b, total]), &device);
        let pos: Vec<i64> = position_ids.iter().flatten().copied().collect();
        let pos = Tensor::<B, 1, Int>::from_ints(pos.as_slice(), &device).reshape([b, s]);
        self.forward_inner(
            inputs_embeds,
            mask,
            pos,
            Some(cache),
            output_hidden_states,
            last_only,
        )
    }

    /// The decoder over embeddings `[B, S, hidden]`, as HF's `LlamaForCausalLM.forward` with
    /// `inputs_embeds`: one tensor-level path for training and generation.
    ///
    /// * `attention_mask` `[B, past + S]`: true where a key may be attended (false = padding);
    ///   the causal mask over absolute positions is added here.
    /// * `position_ids` `[B, S]`: RoPE positions (`arange` for right-padded training rows).
    /// * `cache`: past keys/values, extended in place; `None` for a training forward.
    ///
    /// Everything stays on the device: no host round trip, so it runs inside autodiff.
    pub fn forward(
        &self,
        inputs_embeds: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Bool>,
        position_ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        output_hidden_states: bool,
    ) -> LlamaOutput<B> {
        self.forward_inner(
            inputs_embeds,
            attention_mask,
            position_ids,
            cache,
            output_hidden_states,
            false,
        )
    }

    fn forward_inner(
        &self,
        inputs_embeds: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Bool>,
        position_ids: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
        output_hidden_states: bool,
        last_only: bool,
    ) -> LlamaOutput<B> {
        // The decoder computes in its norms' dtype (embeddings and trained rows may be kept
        // in f32 over a bf16 base).
        let inputs_embeds = inputs_embeds.cast(self.compute_dtype());
        let mut scratch = KvCache::new();
        let cache = cache.unwrap_or(&mut scratch);
        let ctx = self.decoder_context(
            attention_mask,
            position_ids,
            inputs_embeds.dims()[1],
            cache.len(),
            inputs_embeds.dtype(),
        );
        if cache.layers.len() != self.model.layers.len() {
            cache.layers = vec![None; self.model.layers.len()];
        }
        let mut x = inputs_embeds;
        let mut hidden_states = Vec::new();
        for (layer, slot) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            if output_hidden_states {
                hidden_states.push(x.clone());
            }
            x = layer.forward(x, &ctx, slot);
        }
        let mut out = self.head(x, last_only);
        if output_hidden_states {
            hidden_states.push(out.last_hidden_state.clone());
        }
        out.hidden_states = hidden_states;
        out
    }

    /// What every decoder layer of one forward shares: the attention bias (causal plus
    /// padding over `past + s` keys) and the RoPE tables of `position_ids`, in `dtype` (the
    /// activations', i.e. [`Llama::compute_dtype`]). See [`Llama::forward`] for the inputs.
    pub fn decoder_context(
        &self,
        attention_mask: Tensor<B, 2, Bool>,
        position_ids: Tensor<B, 2, Int>,
        s: usize,
        past: usize,
        dtype: DType,
    ) -> DecoderContext<B> {
        // Activations run in the embeddings' dtype (f32, or bf16/f16 after a cast); masks and
        // RoPE tables follow it. f16 cannot hold -1e30: its most negative finite value is used.
        let masked = if dtype == DType::F16 { -6.0e4 } else { MASKED };
        let bias = attention_bias(attention_mask, s, past, masked).cast(dtype);
        let (hd, heads, kv_heads) = self
            .model
            .layers
            .first()
            .map(|l| {
                let a = &l.self_attn;
                (a.head_dim, a.num_heads, a.num_kv_heads)
            })
            .unwrap_or((2, 1, 1));
        let (cos, sin) = rope_tables(&position_ids, hd, self.rope_theta);
        let rope = RopeTables::new((cos.cast(dtype), sin.cast(dtype)), heads, kv_heads);
        // Under autodiff, burn-autodiff 0.21.0 computes attention with its materialised
        // fallback (`ops/module.rs`), which adds this `[B, 1, S, T]` bias to the
        // `[B, heads, S, T]` scores with a broadcast over the heads: a middle axis, which
        // burn-flex walks element by element (`ops/binary.rs`). On that combination the
        // bias is laid out over the heads once per forward (at most the size of the scores
        // the fallback materialises anyway); GPU backends broadcast it natively.
        let bias = if B::name(&bias.device()) == "autodiff<flex>" {
            bias.repeat_dim(1, heads)
        } else {
            bias
        };
        DecoderContext { rope, bias }
    }

    /// After the last decoder layer: the final norm and the logits (of the last position
    /// only with `last_only`). `hidden_states` is left empty.
    pub fn head(&self, x: Tensor<B, 3>, last_only: bool) -> LlamaOutput<B> {
        let last = self.model.norm.forward(x);
        let head_in = if last_only {
            let [b, s, d] = last.dims();
            last.clone().slice([0..b, s - 1..s, 0..d])
        } else {
            last.clone()
        };
        let logits = self.lm_logits(head_in);
        LlamaOutput {
            logits,
            last_hidden_state: last,
            hidden_states: Vec::new(),
        }
    }

    /// Logits of final-norm hidden states `[B, S, hidden]`.
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match (&self.lm_head, &self.new_token_rows) {
            (Some(head), None) => crate::nn::linear_rows(head, hidden.cast(head.weight.dtype())),
            (Some(head), Some(rows)) => {
                let base = head.weight.val();
                let dtype = base.dtype();
                let hidden = hidden.cast(dtype);
                // The logits of each part, concatenated: concatenating the weights instead
                // would build (and the graph keep) a whole `[hidden, vocab]` copy.
                match &rows.head {
                    Some(new) => Tensor::cat(
                        vec![
                            hidden.clone().matmul(base.unsqueeze()),
                            hidden.matmul(new.val().cast(dtype).unsqueeze()),
                        ],
                        2,
                    ),
                    None => hidden.matmul(base.unsqueeze()),
                }
            }
            (None, _) => {
                let w = self.token_embeddings();
                hidden.cast(w.dtype()).matmul(w.transpose().unsqueeze())
            }
        }
    }

    /// Forward from token ids `[B][S]` (see [`Llama::forward_embeds`]).
    pub fn forward_ids(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u8>],
        position_ids: &[Vec<i64>],
        cache: &mut KvCache<B>,
        output_hidden_states: bool,
    ) -> LlamaOutput<B> {
        let b = input_ids.len();
        let s = input_ids.first().map(Vec::len).unwrap_or(0);
        let ids: Vec<i64> = input_ids.iter().flatten().map(|&t| t as i64).collect();
        let ids = Tensor::<B, 1, Int>::from_ints(ids.as_slice(), &self.device()).reshape([b, s]);
        self.forward_embeds(
            self.embed(ids),
            attention_mask,
            position_ids,
            cache,
            output_hidden_states,
        )
    }
}

#[cfg(test)]
mod tests;
