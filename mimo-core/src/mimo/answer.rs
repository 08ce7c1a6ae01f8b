//! Inference: a question about a scan, with optional points and boxes, answered with
//! KV-cache generation; every `<SEG>` the model emits becomes a mask at the original image
//! size, paired with the `<p>…</p>` phrase before it.
//!
//! The `<SEG>` embedding is the final-norm hidden state of the decoding step that emitted
//! `<SEG>`, the same vector LISA's `evaluate` reads by recomputing the whole sequence
//! (dvlab-research/LISA `model/LISA.py` lines 345-395).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::grounded::parse_grounded;
use super::{ClipInput, Mimo, MimoError, MimoInput};
use crate::Image;
use crate::llm::generate::{FinishReason, GenerationConfig, LogitsProcessor};
use crate::prompt::{PromptTensors, VisualPrompt};
use crate::tokenizer::conversation::{Template, tokenize_image_prompt};
use crate::tokenizer::{IMAGE_TOKEN_INDEX, MimoTokenizer};

/// One question about one image.
#[derive(Debug, Clone)]
pub struct AnswerRequest<'a> {
    /// The image in original pixels.
    pub image: &'a Image,
    /// The question; `<image>\n` is put in front unless it already holds `<image>`.
    pub question: &'a str,
    /// Points and boxes in original pixels.
    pub prompts: &'a [VisualPrompt],
}

/// One grounded phrase of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundedSegment {
    /// The phrase (`None` when the model emitted `<SEG>` without a phrase before it).
    pub phrase: Option<String>,
    /// `[start, end)` of the phrase in [`GroundedAnswer::text`], in characters.
    pub char_span: Option<(usize, usize)>,
    /// Binary mask (logit > 0), row-major `height x width` at the original size.
    #[serde(skip)]
    pub mask: Vec<bool>,
    /// SAM's predicted IoU for the mask.
    pub score: f32,
}

/// An answer with its grounded phrases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundedAnswer {
    /// The answer without markup.
    pub text: String,
    /// The decoded answer with its `<p>`, `</p>`, `<SEG>` markup.
    pub raw: String,
    /// Generated token ids (EOS excluded).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish: FinishReason,
    /// `[height, width]` of the masks.
    pub size: [usize; 2],
    /// One entry per `<SEG>`, in order.
    pub segments: Vec<GroundedSegment>,
}

/// What generation gave for one row before decoding to text.
#[derive(Debug, Clone)]
pub struct RawAnswer<B: Backend> {
    /// New tokens (EOS excluded).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Final-norm hidden states of the steps that emitted `<SEG>`, `[n, D]`.
    pub seg_hidden: Tensor<B, 2>,
    /// Mask logits at the original size `[n, H, W]`.
    pub masks: Tensor<B, 3>,
    /// Predicted IoUs `[n]`.
    pub scores: Tensor<B, 1>,
}

/// A tensor's values on the host (none for a zero-size tensor, which is not read: see
/// [`crate::nn::empty`]).
fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    if t.dims().contains(&0) {
        return Vec::new();
    }
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

impl<B: Backend> Mimo<B> {
    /// Prompt token ids of a question (template, `<image>` expansion, LLaVA's
    /// `tokenizer_image_token`).
    pub fn prompt_ids(
        tok: &MimoTokenizer,
        template: &Template,
        question: &str,
    ) -> Result<Vec<i64>, MimoError> {
        let q = if question.contains("<image>") {
            question.to_string()
        } else {
            format!("<image>\n{question}")
        };
        let text = template.expand_image(&template.generation_prompt(&q));
        tokenize_image_prompt(tok, &text).map_err(|e| MimoError::Input(e.to_string()))
    }

    /// Generates for a batch of images with their prompt ids (one `<image>` placeholder
    /// each): the placeholder is expanded, the rows left-padded, and generation runs with the
    /// KV cache. `processor(row, tokens_so_far, scores)` may change each step's scores
    /// (see [`crate::llm::Llama::generate_embeds_with_hidden`]); `on_token(row, tokens)`
    /// streams.
    pub fn generate_raw(
        &self,
        images: &[&Image],
        prompt_ids: &[Vec<i64>],
        prompts: &[Vec<VisualPrompt>],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
        processor: &mut LogitsProcessor<'_>,
    ) -> Result<Vec<RawAnswer<B>>, MimoError> {
        let device = self.mm_projector.weight.device();
        let n = images.len();
        if prompt_ids.len() != n || prompts.len() != n {
            return Err(MimoError::Input(format!(
                "{n} images, {} prompts ids, {} prompt lists",
                prompt_ids.len(),
                prompts.len()
            )));
        }
        for (i, (img, ps)) in images.iter().zip(prompts).enumerate() {
            if let Some(p) = ps.iter().find(|p| !p.inside(img.width(), img.height())) {
                return Err(MimoError::Input(format!(
                    "image {i}: prompt {p:?} lies outside the {}x{} image",
                    img.width(),
                    img.height()
                )));
            }
        }
        let clip = self.clip.pixel_values(images);
        let mut sam = Vec::with_capacity(n);
        let mut sam_resized = Vec::with_capacity(n);
        for img in images {
            let (x, (h, w)) = self.sam.preprocess(img);
            sam.push(x);
            sam_resized.push([h, w]);
        }
        let sam_pixels = Tensor::cat(sam, 0);
        let sizes: Vec<[usize; 2]> = images.iter().map(|i| [i.height(), i.width()]).collect();
        let width = prompt_ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(n * width);
        let mut mask = Vec::with_capacity(n * width);
        for row in prompt_ids {
            ids.extend(row.iter().copied());
            ids.extend(std::iter::repeat_n(0, width - row.len()));
            mask.extend((0..width).map(|j| j < row.len()));
        }
        let input = MimoInput {
            clip: ClipInput::Pixels(clip),
            sam_pixels: sam_pixels.clone(),
            sam_embeddings: None,
            sam_resized: sam_resized.clone(),
            sizes: sizes.clone(),
            prompts: PromptTensors::from_prompts(prompts, 0, &device),
            input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, width]), &device),
            labels: None,
            attention_mask: Tensor::<B, 2, Bool>::from_data(
                TensorData::new(mask, [n, width]),
                &device,
            ),
            masks: Vec::new(),
        };
        self.generate_input(input, cfg, on_token, processor)
    }

    /// [`Mimo::generate_raw`] on a prepared batch (labels and masks unused): the
    /// tensor-level entry point, e.g. for features from the CLIP cache.
    pub fn generate_input(
        &self,
        input: MimoInput<B>,
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
        processor: &mut LogitsProcessor<'_>,
    ) -> Result<Vec<RawAnswer<B>>, MimoError> {
        let device = self.mm_projector.weight.device();
        let [n, l] = input.input_ids.dims();
        let ids_host: Vec<i64> = input
            .input_ids
            .clone()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap_or_default();
        let prompt_ids: Vec<Vec<i64>> = ids_host.chunks(l.max(1)).map(<[i64]>::to_vec).collect();
        let sam_resized = input.sam_resized.clone();
        let sizes = input.sizes.clone();
        let sam_pixels = input.sam_pixels.clone();
        let asm = self.assemble(&input)?;
        // Right-padded rows -> left-padded, as generation needs.
        let total = asm.lengths.iter().copied().max().unwrap_or(0);
        let d = asm.inputs_embeds.dims()[2];
        let mut rows = Vec::with_capacity(n);
        let mut attn = Vec::with_capacity(n);
        let mut seen = Vec::with_capacity(n);
        for (r, &len) in asm.lengths.iter().enumerate() {
            let row = asm
                .inputs_embeds
                .clone()
                .slice([r..r + 1, 0..len, 0..d])
                .reshape([len, d]);
            let row = if len < total {
                let pad = Tensor::<B, 2>::zeros([total - len, d], &device).cast(row.dtype());
                Tensor::cat(vec![pad, row], 0)
            } else {
                row
            };
            rows.push(row.unsqueeze::<3>());
            let mut m = vec![0u8; total - len];
            m.extend(std::iter::repeat_n(1u8, len));
            attn.push(m);
            seen.push(
                prompt_ids[r]
                    .iter()
                    .filter(|&&t| t > 0 && t != IMAGE_TOKEN_INDEX)
                    .map(|&t| t as u32)
                    .collect::<Vec<u32>>(),
            );
        }
        let embeds = Tensor::cat(rows, 0);
        let (generated, hidden) = self
            .llm
            .generate_embeds_with_hidden(embeds, &seen, &attn, cfg, on_token, processor);
        let image_embeddings = self
            .sam
            .image_encoder
            .forward(sam_pixels.cast(self.sam_encoder_dtype()))
            .cast(self.dtype());
        let [_, c, gh, gw] = image_embeddings.dims();
        let seg = self.seg_token_id as u32;
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            let tokens = generated.tokens[r].clone();
            let seg_rows: Vec<Tensor<B, 1>> = tokens
                .iter()
                .zip(&hidden[r])
                .filter(|(t, _)| **t == seg)
                .map(|(_, h)| h.clone())
                .collect();
            let dh = self.llm.model.embed_tokens.weight.dims()[1];
            // No `<SEG>`: nothing to decode (and no kernel on an empty tensor).
            let (seg_hidden, masks, scores) = if seg_rows.is_empty() {
                (
                    crate::nn::empty([0, dh], &device),
                    crate::nn::empty([0, sizes[r][0], sizes[r][1]], &device),
                    crate::nn::empty([0], &device),
                )
            } else {
                let seg_hidden = Tensor::stack(seg_rows, 0);
                let emb = self
                    .text_hidden_fcs
                    .forward(seg_hidden.clone().cast(self.dtype()));
                let img = image_embeddings
                    .clone()
                    .slice([r..r + 1, 0..c, 0..gh, 0..gw]);
                let (masks, scores) = self.decode_masks(emb, img, sam_resized[r], sizes[r]);
                (seg_hidden, masks, scores)
            };
            out.push(RawAnswer {
                tokens,
                finish: generated.finish[r],
                seg_hidden,
                masks,
                scores,
            });
        }
        Ok(out)
    }

    /// Answers questions about images, each with its visual prompts: text, grounded
    /// phrases, and one mask per `<SEG>` at the image's size. `on_text(row, delta)` streams
    /// the decoded text (with markup) as it is generated.
    pub fn answer_batch(
        &self,
        tok: &MimoTokenizer,
        template: &Template,
        requests: &[AnswerRequest<'_>],
        cfg: &GenerationConfig,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<GroundedAnswer>, MimoError> {
        self.answer_batch_until(tok, template, requests, cfg, on_text, &|| false)
    }

    /// [`Mimo::answer_batch`] that ends generation early (finish reason `Stop`) once `stop()`
    /// says so, asked after every generated token: a deadline, a client that has gone. The
    /// answer so far is still grounded.
    pub fn answer_batch_until(
        &self,
        tok: &MimoTokenizer,
        template: &Template,
        requests: &[AnswerRequest<'_>],
        cfg: &GenerationConfig,
        on_text: &mut dyn FnMut(usize, &str),
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<GroundedAnswer>, MimoError> {
        cfg.validate()?;
        let ids = requests
            .iter()
            .map(|r| Self::prompt_ids(tok, template, r.question))
            .collect::<Result<Vec<_>, _>>()?;
        let images: Vec<&Image> = requests.iter().map(|r| r.image).collect();
        let prompts: Vec<Vec<VisualPrompt>> = requests.iter().map(|r| r.prompts.to_vec()).collect();
        let mut emitted = vec![0usize; requests.len()];
        let raw = self.generate_raw(
            &images,
            &ids,
            &prompts,
            cfg,
            &mut |row, tokens| {
                if let Ok(text) = tok.decode(tokens, true)
                    && !text.ends_with('\u{FFFD}')
                    && text.len() > emitted[row]
                    && text.is_char_boundary(emitted[row])
                {
                    on_text(row, &text[emitted[row]..]);
                    emitted[row] = text.len();
                }
                stop()
            },
            &mut |_, _, _| {},
        )?;
        raw.into_iter()
            .zip(requests)
            .enumerate()
            .map(|(row, (r, req))| {
                let raw_text = tok
                    .decode(&r.tokens, true)
                    .map_err(|e| MimoError::Input(e.to_string()))?;
                // What streaming held back (an unfinished character at the end).
                if raw_text.len() > emitted[row] && raw_text.is_char_boundary(emitted[row]) {
                    on_text(row, &raw_text[emitted[row]..]);
                }
                let parsed = parse_grounded(&raw_text);
                let size = [req.image.height(), req.image.width()];
                let masks = host_f32(r.masks);
                let scores = host_f32(r.scores);
                let px = size[0] * size[1];
                let segments = parsed
                    .segments
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| GroundedSegment {
                        phrase: s.phrase,
                        char_span: s.char_span,
                        mask: masks
                            .get(i * px..(i + 1) * px)
                            .map(|m| m.iter().map(|&v| v > 0.0).collect())
                            .unwrap_or_else(|| vec![false; px]),
                        score: scores.get(i).copied().unwrap_or(0.0),
                    })
                    .collect();
                Ok(GroundedAnswer {
                    text: parsed.text,
                    raw: raw_text,
                    tokens: r.tokens,
                    finish: r.finish,
                    size,
                    segments,
                })
            })
            .collect()
    }

    /// [`Mimo::answer_batch`] for one image.
    pub fn answer(
        &self,
        tok: &MimoTokenizer,
        template: &Template,
        request: AnswerRequest<'_>,
        cfg: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GroundedAnswer, MimoError> {
        let mut out = self.answer_batch(tok, template, &[request], cfg, &mut |_, t| on_text(t))?;
        Ok(out.remove(0))
    }
}
