//! MIMO: the model the paper is about, assembled from the CLIP image encoder, the visual
//! prompt encoder, the aligner, the LLaMA/Vicuna decoder with LoRA, and SAM.
//!
//! ```text
//! CLIP pixels ─ CLIP (frozen) ─ F_img ─┬─ mm_projector ───────────────┐
//! prompts ─ VisualPromptEncoder ─ V ───┤                               │ replaces <image>
//! instruction embeddings ──────────────┴─ Aligner ─ A (N_q tokens) ────┘
//! LLM (+LoRA) ─ final-norm hidden states ─ at the position predicting <SEG>
//!   ─ text_hidden_fcs ─ SAM prompt (sparse) ─ SAM mask decoder on the SAM image embedding
//!   ─ post-processed to the original size ─ one mask per <SEG>
//! loss = ce·CE + bce·BCE + dice·Dice
//! ```
//!
//! The grounding path is LISA's (dvlab-research/LISA `model/LISA.py`): the `<SEG>`
//! embedding is the final-norm hidden state at the position *before* `<SEG>` (lines
//! 187-199, 247-267), projected by `text_hidden_fcs` (lines 89-101) and decoded by SAM's mask
//! decoder with the no-mask dense embedding and `multimask_output = False` (lines 269-294);
//! masks are post-processed to the original size (segment_anything `modeling/sam.py` lines
//! 133-162) and the losses are LISA's (lines 16-59, 305-343). The `<image>` placeholder
//! expands to the projected image tokens followed by the aligner's tokens (or, without the
//! aligner, the projected visual-prompt tokens), located through an explicit input→expanded
//! position map instead of LISA's hard-coded 255.

pub mod answer;
mod assemble;
pub mod config;
pub mod grounded;
pub mod load;
pub mod loss;
mod train;

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::aligner::{Aligner, AlignerConfig};
use crate::clip::{ClipVision, ClipVisionConfig};
use crate::config::ConfigError;
use crate::llm::lora::{LoraConfig, LoraError};
use crate::llm::{Llama, LlamaConfig, causal_lm_loss};
use crate::prompt::{PromptTensors, VisualPromptEncoder, VisualPromptEncoderConfig};
use crate::sam::{Sam, SamConfig};
use crate::tokenizer::IGNORE_INDEX;

use assemble::host_i64;

pub use answer::{AnswerRequest, GroundedAnswer, GroundedSegment, RawAnswer};
pub use assemble::{Assembled, instruction_mask};
pub use config::{MimoBuild, MimoConfig, MimoWeights};
pub use grounded::{ParsedAnswer, ParsedSegment, parse_grounded};
pub use loss::LossWeights;

/// The sizes of a MIMO model with every component resolved (what [`Mimo`] is built from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimoModelConfig {
    /// The CLIP image tower.
    pub clip: ClipVisionConfig,
    /// Segment Anything.
    pub sam: SamConfig,
    /// The language model (its `vocab_size` includes MIMO's added tokens).
    pub llm: LlamaConfig,
    /// The aligner; `None` is the paper's "w/o Aligner" ablation, where the placeholder
    /// expands to the image tokens and the projected visual-prompt tokens.
    pub aligner: Option<AlignerSizes>,
    /// LoRA on the LLM (`None`: no adapter).
    pub lora: Option<LoraConfig>,
    /// Loss weights.
    #[serde(default)]
    pub loss: LossWeights,
    /// Id of `<SEG>` (from the tokenizer's added-token table).
    pub seg_token_id: u32,
}

/// The aligner's own sizes; its input and output widths come from CLIP and the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignerSizes {
    /// Learnable queries.
    pub num_queries: usize,
    /// Width of queries and context.
    pub width: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Blocks.
    pub depth: usize,
    /// MLP hidden width.
    pub mlp_dim: usize,
}

impl MimoModelConfig {
    /// The visual prompt encoder's sizes: SAM's prompt width into CLIP's width.
    pub fn vp_encoder(&self) -> VisualPromptEncoderConfig {
        VisualPromptEncoderConfig {
            embed_dim: self.sam.prompt_encoder.embed_dim,
            image_dim: self.clip.hidden_size,
        }
    }

    /// The aligner's full configuration, if enabled.
    pub fn aligner_config(&self) -> Option<AlignerConfig> {
        self.aligner.as_ref().map(|a| AlignerConfig {
            num_queries: a.num_queries,
            width: a.width,
            num_heads: a.num_heads,
            depth: a.depth,
            mlp_dim: a.mlp_dim,
            image_dim: self.clip.hidden_size,
            llm_dim: self.llm.hidden_size,
            layer_norm_eps: 1e-5,
        })
    }

    /// Checks the sizes of every part; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let prefix = |p: &str, e: ConfigError| match e {
            ConfigError::Invalid {
                field,
                message,
                file,
            } => ConfigError::Invalid {
                field: format!("{p}.{field}"),
                message,
                file,
            },
            other => other,
        };
        self.llm.validate().map_err(|e| prefix("llm", e))?;
        self.vp_encoder()
            .validate()
            .map_err(|e| prefix("vp_encoder", e))?;
        if let Some(a) = self.aligner_config() {
            a.validate().map_err(|e| prefix("aligner", e))?;
        }
        if let Some(l) = &self.lora {
            l.validate().map_err(|e| ConfigError::Invalid {
                field: "lora".into(),
                message: e.to_string(),
                file: None,
            })?;
        }
        if self.seg_token_id as usize >= self.llm.vocab_size {
            return ConfigError::invalid(
                "seg_token_id",
                format!(
                    "{} is outside the vocabulary ({} tokens)",
                    self.seg_token_id, self.llm.vocab_size
                ),
            );
        }
        Ok(())
    }

    /// A randomly initialised model (components as their configs initialise them, new
    /// modules as [`Mimo::from_parts`] says), with the trainable set of
    /// [`Mimo::with_trainable_set`]. Load component checkpoints with [`Mimo::from_parts`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Mimo<B>, MimoError> {
        self.validate()?;
        let mut llm = self.llm.init(device);
        if let Some(l) = &self.lora {
            llm = llm.with_lora(l)?.0;
        }
        Mimo::from_parts(self, self.clip.init(device), self.sam.init(device), llm)
    }
}

/// Why a MIMO model could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum MimoError {
    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// LoRA could not be attached or read.
    #[error(transparent)]
    Lora(#[from] LoraError),
    /// A checkpoint does not fit.
    #[error(transparent)]
    Load(#[from] crate::loader::LoadError),
    /// The batch is not what the model expects.
    #[error("invalid MIMO input: {0}")]
    Input(String),
}

/// `text_hidden_fcs`: `Linear(D, D) → ReLU → Linear(D, C)` (LISA `model/LISA.py` lines
/// 89-101; its keys `text_hidden_fcs.0.0.*`, `text_hidden_fcs.0.2.*`).
#[derive(Module, Debug)]
pub struct SegHead<B: Backend> {
    /// `D -> D`.
    pub fc1: Linear<B>,
    /// `D -> C` (SAM's prompt width).
    pub fc2: Linear<B>,
}

impl<B: Backend> SegHead<B> {
    /// `[.., D] -> [.., C]`.
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> Tensor<B, N> {
        crate::nn::linear_rows(&self.fc2, relu(crate::nn::linear_rows(&self.fc1, x)))
    }
}

/// The MIMO model.
#[derive(Module, Debug)]
pub struct Mimo<B: Backend> {
    /// CLIP image tower (frozen).
    pub clip: ClipVision<B>,
    /// SAM: image and prompt encoders frozen, mask decoder trained.
    pub sam: Sam<B>,
    /// The language model; LoRA adapters and the token embeddings / head are trained.
    pub llm: Llama<B>,
    /// Visual prompt encoder.
    pub vp_encoder: VisualPromptEncoder<B>,
    /// The aligner (`None`: the "w/o Aligner" ablation).
    pub aligner: Option<Aligner<B>>,
    /// CLIP features into the LLM width.
    pub mm_projector: Linear<B>,
    /// `<SEG>` hidden state into SAM's prompt width.
    pub text_hidden_fcs: SegHead<B>,
    /// Id of `<SEG>`.
    pub seg_token_id: usize,
    /// Whether `embed_tokens` and `lm_head` train in full (see [`is_trainable`]).
    pub train_token_embeddings: bool,
    /// Loss weights.
    #[module(skip)]
    pub loss_weights: LossWeights,
}

/// Where CLIP's features come from.
#[derive(Debug, Clone)]
pub enum ClipInput<B: Backend> {
    /// Pre-processed pixels `[N, 3, S, S]`: the tower runs.
    Pixels(Tensor<B, 4>),
    /// Features already computed (e.g. from the feature cache) `[N, P, image_dim]`.
    Features(Tensor<B, 3>),
}

/// A batch for the model: tensors, plus the image sizes that fix output shapes. One
/// conversation row per image.
#[derive(Debug, Clone)]
pub struct MimoInput<B: Backend> {
    /// CLIP pixels or features.
    pub clip: ClipInput<B>,
    /// SAM input `[N, 3, S, S]`: resized (long side S), normalised, zero-padded.
    pub sam_pixels: Tensor<B, 4>,
    /// SAM's image embeddings of `sam_pixels`, `[N, C, h, w]`, when already computed (by
    /// [`Mimo::forward_train`], on the inner backend); `None`: the forward runs the encoder.
    pub sam_embeddings: Option<Tensor<B, 4>>,
    /// `[height, width]` of each image inside the SAM input before padding.
    pub sam_resized: Vec<[usize; 2]>,
    /// Original `[height, width]` of each image (the masks' size).
    pub sizes: Vec<[usize; 2]>,
    /// Visual prompts in original pixels.
    pub prompts: PromptTensors<B>,
    /// Token ids `[N, L]`, right-padded, with one [`crate::tokenizer::IMAGE_TOKEN_INDEX`] per row.
    pub input_ids: Tensor<B, 2, Int>,
    /// Targets `[N, L]` ([`IGNORE_INDEX`] outside the answers); `None` at inference.
    pub labels: Option<Tensor<B, 2, Int>>,
    /// `[N, L]`: true for tokens, false for padding.
    pub attention_mask: Tensor<B, 2, Bool>,
    /// Ground-truth masks per image `[n_i, H_i, W_i]` (0/1), one per `<SEG>` in order;
    /// empty at inference.
    pub masks: Vec<Tensor<B, 3>>,
}

/// What the training forward returns.
#[derive(Debug, Clone)]
pub struct MimoOutput<B: Backend> {
    /// `ce·CE + bce·BCE + dice·Dice`, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Next-token cross-entropy (unweighted).
    pub ce: Tensor<B, 1>,
    /// Mask BCE, weighted by `bce` (LISA's `mask_bce_loss`).
    pub mask_bce: Tensor<B, 1>,
    /// Mask Dice, weighted by `dice` (LISA's `mask_dice_loss`).
    pub mask_dice: Tensor<B, 1>,
    /// Mask logits per image at original size `[n_i, H_i, W_i]`.
    pub pred_masks: Vec<Tensor<B, 3>>,
    /// LLM logits over the expanded sequence `[N, L', vocab]`.
    pub logits: Tensor<B, 3>,
    /// Targets over the expanded sequence `[N, L']`.
    pub labels: Tensor<B, 2, Int>,
    /// Expanded positions whose hidden states became `<SEG>` embeddings, row by row.
    pub seg_positions: Vec<Vec<usize>>,
}

/// RoPE positions of right-padded training rows: `arange(L')` on every row.
fn row_positions<B: Backend>(asm: &Assembled<B>, device: &B::Device) -> Tensor<B, 2, Int> {
    let [n, width] = asm.attention_mask.dims();
    Tensor::<B, 1, Int>::arange(0..width as i64, device)
        .reshape([1, width])
        .expand([n, width])
}

/// Whether the parameter at a module path trains under [`Mimo::with_trainable_set`]
/// (the rule stated by path, so it can be applied to a model too large to materialise).
pub fn is_trainable(path: &str, train_token_embeddings: bool) -> bool {
    if path == "vp_encoder.pe_gaussian" {
        return false;
    }
    if path.starts_with("sam.mask_decoder.iou_prediction_head.") {
        // Its output (the predicted IoU) is not in MIMO's loss: no gradient ever reaches it
        // (LISA lists it as trainable; PyTorch's AdamW skips it since its grad stays None).
        return false;
    }
    if load::is_new_module(path) || path.starts_with("sam.mask_decoder.") {
        return true;
    }
    if path.starts_with("llm.") && (path.contains(".lora_a.") || path.contains(".lora_b.")) {
        return true;
    }
    if path.starts_with("llm.new_token_rows.") {
        // Present only when split off to train (`Mimo::with_new_token_rows_trainable`).
        return true;
    }
    train_token_embeddings
        && (path.starts_with("llm.model.embed_tokens.") || path.starts_with("llm.lm_head."))
}

/// One parameter of a model: module path, checkpoint key, PyTorch-layout shape, trained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// burn module path.
    pub path: String,
    /// Key in MIMO's files (trained parts / new modules naming).
    pub key: String,
    /// Shape in PyTorch layout.
    pub shape: Vec<usize>,
    /// Whether it trains.
    pub trainable: bool,
}

/// Casts parameters that do not train to the dtype, and those that train to f32.
struct CastFrozen(burn::tensor::DType);

impl<B: Backend> ModuleMapper<B> for CastFrozen {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = if param.is_require_grad() {
            burn::tensor::DType::F32
        } else {
            self.0
        };
        crate::nn::cast_param(param, dtype)
    }
}

struct SetRequireGrad(bool);

impl<B: Backend> ModuleMapper<B> for SetRequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(self.0)
    }
}

fn freeze<B: Backend, M: Module<B>>(m: M) -> M {
    m.map(&mut SetRequireGrad(false))
}

fn unfreeze<B: Backend, M: Module<B>>(m: M) -> M {
    m.map(&mut SetRequireGrad(true))
}

impl<B: Backend> Mimo<B> {
    /// Builds MIMO around loaded components: the visual prompt encoder initialised from
    /// SAM's prompt encoder (its Fourier matrix frozen, point and padding embeddings
    /// copied, as SPHINX-V does), the aligner with N(0, 0.02) queries, `mm_projector` and
    /// `text_hidden_fcs` with PyTorch's default Linear init. `llm` must already carry its
    /// adapter (if any) and have the vocabulary of `config.llm`.
    pub fn from_parts(
        config: &MimoModelConfig,
        clip: ClipVision<B>,
        sam: Sam<B>,
        llm: Llama<B>,
    ) -> Result<Self, MimoError> {
        config.validate()?;
        let device = llm.model.embed_tokens.weight.lazy_device();
        let d = config.llm.hidden_size;
        let c = config.sam.prompt_encoder.embed_dim;
        let vp_encoder = config
            .vp_encoder()
            .init(&device)
            .init_from_sam(&sam.prompt_encoder);
        let model = Mimo {
            clip,
            sam,
            llm,
            vp_encoder,
            aligner: config.aligner_config().map(|a| a.init(&device)),
            mm_projector: LinearConfig::new(config.clip.hidden_size, d).init(&device),
            text_hidden_fcs: SegHead {
                fc1: LinearConfig::new(d, d).init(&device),
                fc2: LinearConfig::new(d, c).init(&device),
            },
            seg_token_id: config.seg_token_id as usize,
            train_token_embeddings: true,
            loss_weights: config.loss,
        };
        Ok(model.with_trainable_set(true))
    }

    /// Sets which parameters train (MIMO's split; LISA `train_ds.py` lines 158-228):
    /// frozen are CLIP, SAM's image and prompt encoders, the LLM's base weights and the
    /// prompt encoder's Fourier matrix; trained are the visual prompt encoder's embeddings
    /// and projection, the aligner, `mm_projector`, `text_hidden_fcs`, SAM's mask decoder,
    /// the LoRA adapters and, with `train_token_embeddings`, the whole `embed_tokens` and
    /// `lm_head` (LISA trains them for the added tokens).
    pub fn with_trainable_set(mut self, train_token_embeddings: bool) -> Self {
        self.train_token_embeddings = train_token_embeddings;
        self.clip = freeze(self.clip);
        self.sam.image_encoder = freeze(self.sam.image_encoder);
        self.sam.prompt_encoder = freeze(self.sam.prompt_encoder);
        self.sam.mask_decoder = unfreeze(self.sam.mask_decoder);
        // The IoU head gets no gradient from MIMO's loss: frozen, it holds no optimiser
        // state (PyTorch's AdamW skips it in LISA since its grad stays None).
        self.sam.mask_decoder.iou_prediction_head =
            freeze(self.sam.mask_decoder.iou_prediction_head);
        let mut llm = freeze(self.llm);
        for (_, _, p) in llm.projections_mut() {
            p.lora_a = p.lora_a.take().map(unfreeze);
            p.lora_b = p.lora_b.take().map(unfreeze);
        }
        self.llm = llm;
        self.llm.new_token_rows = self.llm.new_token_rows.take().map(unfreeze);
        if train_token_embeddings {
            self.llm.model.embed_tokens = unfreeze(self.llm.model.embed_tokens);
            self.llm.lm_head = self.llm.lm_head.map(unfreeze);
        }
        self.vp_encoder = unfreeze(self.vp_encoder);
        self.vp_encoder.pe_gaussian = self.vp_encoder.pe_gaussian.set_require_grad(false);
        self.aligner = self.aligner.map(unfreeze);
        self.mm_projector = unfreeze(self.mm_projector);
        self.text_hidden_fcs = unfreeze(self.text_hidden_fcs);
        self
    }

    /// MIMO's trainable set with, instead of the whole `embed_tokens` and `lm_head`, only
    /// the rows of the tokens `first_new..` (MIMO's added tokens) trained: they move into
    /// `llm.new_token_rows` and the base rows stay frozen, so gradients and optimiser state
    /// exist for the added rows only. Outputs are unchanged. [`Mimo::merge_token_rows`]
    /// puts them back.
    pub fn with_new_token_rows_trainable(self, first_new: usize) -> Result<Self, MimoError> {
        let mut m = self.with_trainable_set(false);
        m.llm = m
            .llm
            .split_token_rows(first_new)
            .map_err(MimoError::Input)?;
        Ok(m.with_trainable_set(false))
    }

    /// The model with split token rows (see [`Mimo::with_new_token_rows_trainable`]) put
    /// back into `embed_tokens` and `lm_head`.
    pub fn merge_token_rows(mut self) -> Self {
        self.llm = self.llm.merge_token_rows();
        self
    }

    fn device(&self) -> B::Device {
        self.mm_projector.weight.device()
    }

    /// The dtype SAM's image encoder computes in (its patch embedding's).
    pub(crate) fn sam_encoder_dtype(&self) -> burn::tensor::DType {
        self.sam.image_encoder.patch_embed.proj.weight.val().dtype()
    }

    /// The model with every weight in `dtype` (e.g. `DType::BF16` on a GPU). Inputs are cast
    /// at the seams; RMSNorm statistics, the cross-entropy and the mask losses stay in f32.
    pub fn cast(self, dtype: burn::tensor::DType) -> Self {
        crate::nn::cast_module(self, dtype)
    }

    /// Mixed precision for training (burn 0.21 has no automatic mixed precision): the frozen
    /// towers (CLIP, SAM's image encoder) and every frozen LLM weight in `dtype` (e.g.
    /// `DType::BF16`), everything that trains — LoRA adapters, token rows, the new modules,
    /// SAM's mask decoder — and the small modules around them in f32. Each module computes in
    /// its own weights' dtype and activations are cast where they cross (the adapters' input,
    /// the projector and aligner outputs, the mask decoder's image embedding); the losses are
    /// computed in f32. Call it after setting the trainable set.
    pub fn with_frozen_dtype(mut self, dtype: burn::tensor::DType) -> Self {
        use burn::tensor::DType;
        self.clip = crate::nn::cast_module(self.clip, dtype);
        self.sam.image_encoder = crate::nn::cast_module(self.sam.image_encoder, dtype);
        self.llm = self.llm.map(&mut CastFrozen(dtype));
        self.sam.prompt_encoder = crate::nn::cast_module(self.sam.prompt_encoder, DType::F32);
        self.sam.mask_decoder = crate::nn::cast_module(self.sam.mask_decoder, DType::F32);
        self.vp_encoder = crate::nn::cast_module(self.vp_encoder, DType::F32);
        self.aligner = self.aligner.map(|a| crate::nn::cast_module(a, DType::F32));
        self.mm_projector = crate::nn::cast_module(self.mm_projector, DType::F32);
        self.text_hidden_fcs = crate::nn::cast_module(self.text_hidden_fcs, DType::F32);
        self
    }

    /// The dtype of the model's weights.
    pub fn dtype(&self) -> burn::tensor::DType {
        self.mm_projector.weight.val().dtype()
    }

    /// Every parameter with its shape and whether it trains, without materialising lazily
    /// initialised weights (so a 7B model built without weights can be listed).
    pub fn parameters(&self) -> Vec<ParamInfo> {
        crate::loader::file_params(self, &load::TrainedPartsDialect)
            .into_iter()
            .map(|p| ParamInfo {
                trainable: is_trainable(&p.module_path, self.train_token_embeddings),
                path: p.module_path,
                key: p.key,
                shape: p.shape,
            })
            .collect()
    }

    /// Number of LLM rows the `<image>` placeholder of image `b` becomes.
    pub fn image_rows(&self, patches: usize, valid_prompts: usize) -> usize {
        patches
            + match &self.aligner {
                Some(a) => a.num_queries(),
                None => valid_prompts,
            }
    }

    /// CLIP features `[N, P, image_dim]` (the tower's configured feature selection).
    pub fn image_features(&self, clip: &ClipInput<B>) -> Tensor<B, 3> {
        let dtype = self.clip.vision_model.pre_layrnorm.gamma.val().dtype();
        match clip {
            ClipInput::Pixels(p) => self.clip.features(p.clone().cast(dtype)),
            ClipInput::Features(f) => f.clone().cast(dtype),
        }
    }

    /// `<SEG>` embeddings into masks for one image: `embeddings` `[n, C]` (already through
    /// `text_hidden_fcs`) on SAM's image embedding `[1, C, h, w]` → mask logits at the
    /// original size `[n, H, W]` and predicted IoUs `[n]`.
    pub fn decode_masks(
        &self,
        embeddings: Tensor<B, 2>,
        image_embedding: Tensor<B, 4>,
        resized: [usize; 2],
        size: [usize; 2],
    ) -> (Tensor<B, 3>, Tensor<B, 1>) {
        let [n, c] = embeddings.dims();
        let device = embeddings.device();
        if n == 0 {
            return (
                crate::nn::empty([0, size[0], size[1]], &device),
                crate::nn::empty([0], &device),
            );
        }
        let pe = &self.sam.prompt_encoder;
        let [h, w] = pe.image_embedding_size;
        let sparse = embeddings.reshape([n, 1, c]);
        let dense = pe
            .no_mask_embed
            .weight
            .val()
            .reshape([1, c, 1, 1])
            .expand([n, c, h, w]);
        let (low, iou) =
            self.sam
                .mask_decoder
                .forward(image_embedding, pe.get_dense_pe(), sparse, dense, false);
        let masks = self
            .sam
            .postprocess_masks(low, (resized[0], resized[1]), (size[0], size[1]));
        (masks.reshape([n, size[0], size[1]]), iou.reshape([n]))
    }

    /// The training forward (LISA's `model_forward`): CE over the answer tokens, one mask
    /// per `<SEG>` and the mask losses against `input.masks`.
    pub fn forward(&self, input: MimoInput<B>) -> Result<MimoOutput<B>, MimoError> {
        let device = self.device();
        let asm = self.assemble(&input)?;
        let out = self.llm.forward(
            asm.inputs_embeds.clone(),
            asm.attention_mask.clone(),
            row_positions(&asm, &device),
            None,
            false,
        );
        self.finish_forward(&input, &asm, out)
    }

    /// The training forward past the decoder: CE on `out`'s logits, the `<SEG>` embeddings
    /// from its final-norm hidden states, the masks and the mask losses.
    fn finish_forward(
        &self,
        input: &MimoInput<B>,
        asm: &Assembled<B>,
        out: crate::llm::LlamaOutput<B>,
    ) -> Result<MimoOutput<B>, MimoError> {
        let device = self.device();
        let n = asm.lengths.len();
        let width = asm.attention_mask.dims()[1];
        let labels_host = asm
            .labels
            .clone()
            .unwrap_or_else(|| vec![vec![IGNORE_INDEX; width]; n]);
        let flat: Vec<i64> = labels_host.iter().flatten().copied().collect();
        let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [n, width]), &device);
        let ce = causal_lm_loss(out.logits.clone(), labels.clone());

        // <SEG> at input position p: the hidden state at expanded pos_map[p - 1].
        let ids = host_i64(&input.input_ids);
        let l = input.input_ids.dims()[1];
        let seg = self.seg_token_id as i64;
        let mut seg_positions = Vec::with_capacity(n);
        let mut flat_idx = Vec::new();
        for r in 0..n {
            let row: Vec<usize> = (1..l)
                .filter(|&p| ids[r * l + p] == seg)
                .map(|p| asm.pos_map[r][p - 1])
                .filter(|&e| e < asm.lengths[r])
                .collect();
            flat_idx.extend(row.iter().map(|&e| (r * width + e) as i64));
            seg_positions.push(row);
        }
        let d = out.last_hidden_state.dims()[2];
        let c = self.vp_encoder.embed_dim();
        let seg_embeds = if flat_idx.is_empty() {
            crate::nn::empty([0, c], &device)
        } else {
            let idx = Tensor::<B, 1, Int>::from_ints(flat_idx.as_slice(), &device);
            self.text_hidden_fcs.forward(
                out.last_hidden_state
                    .clone()
                    .reshape([n * width, d])
                    .select(0, idx)
                    .cast(self.dtype()),
            )
        };
        if !input.masks.is_empty() {
            for (r, (m, s)) in input.masks.iter().zip(&seg_positions).enumerate() {
                if m.dims()[0] != s.len() || [m.dims()[1], m.dims()[2]] != input.sizes[r] {
                    return Err(MimoError::Input(format!(
                        "image {r}: {} <SEG> token(s) but ground-truth masks {:?} (image size {:?})",
                        s.len(),
                        m.dims(),
                        input.sizes[r]
                    )));
                }
            }
        }
        // LISA runs SAM's image encoder under `torch.no_grad()`: it never trains.
        let image_embeddings = match &input.sam_embeddings {
            Some(e) => e.clone(),
            None => self
                .sam
                .image_encoder
                .forward(input.sam_pixels.clone().cast(self.sam_encoder_dtype())),
        }
        .detach()
        .cast(self.dtype());
        let [_, ce_dim, gh, gw] = image_embeddings.dims();
        let mut pred_masks = Vec::with_capacity(n);
        let mut start = 0usize;
        for (r, positions) in seg_positions.iter().enumerate() {
            let k = positions.len();
            if k == 0 {
                pred_masks.push(crate::nn::empty(
                    [0, input.sizes[r][0], input.sizes[r][1]],
                    &device,
                ));
                continue;
            }
            let e = seg_embeds.clone().slice([start..start + k, 0..c]);
            start += k;
            let emb = image_embeddings
                .clone()
                .slice([r..r + 1, 0..ce_dim, 0..gh, 0..gw]);
            let (m, _) = self.decode_masks(e, emb, input.sam_resized[r], input.sizes[r]);
            pred_masks.push(m);
        }
        let (bce, dice) = if input.masks.is_empty() {
            (Tensor::zeros([1], &device), Tensor::zeros([1], &device))
        } else {
            loss::mask_losses(&pred_masks, &input.masks, &device)
        };
        let w = self.loss_weights;
        let mask_bce = bce * w.bce;
        let mask_dice = dice * w.dice;
        let loss = ce.clone() * w.ce + mask_bce.clone() + mask_dice.clone();
        Ok(MimoOutput {
            loss,
            ce,
            mask_bce,
            mask_dice,
            pred_masks,
            logits: out.logits,
            labels,
            seg_positions,
        })
    }
}

#[cfg(test)]
mod tests;
