//! Sequence assembly: the `<image>` placeholder of each conversation row becomes the
//! projected image tokens followed by the aligner's tokens (or, without the aligner, the
//! projected visual-prompt tokens), with the labels, attention mask and input→expanded
//! position map that `<SEG>` grounding reads.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::{Mimo, MimoError, MimoInput};
use crate::aligner::AlignerContext;
use crate::prompt::LABEL_PAD;
use crate::tokenizer::{IGNORE_INDEX, IMAGE_TOKEN_INDEX};

/// The LLM input after the `<image>` placeholder was expanded.
#[derive(Debug, Clone)]
pub struct Assembled<B: Backend> {
    /// `[N, L', D]`.
    pub inputs_embeds: Tensor<B, 3>,
    /// `[N, L']`.
    pub attention_mask: Tensor<B, 2, Bool>,
    /// `[N, L']`, when labels were given.
    pub labels: Option<Vec<Vec<i64>>>,
    /// Per row: input index → expanded index.
    pub pos_map: Vec<Vec<usize>>,
    /// Per row: number of rows the placeholder became.
    pub image_rows: Vec<usize>,
    /// Per row: unpadded expanded length.
    pub lengths: Vec<usize>,
}

pub(super) fn host_i64<B: Backend, const D: usize>(t: &Tensor<B, D, Int>) -> Vec<i64> {
    t.clone()
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap_or_default()
}

pub(super) fn host_bool<B: Backend, const D: usize>(t: &Tensor<B, D, Bool>) -> Vec<bool> {
    // Bool storage differs per backend: go through integers.
    host_i64(&t.clone().int())
        .into_iter()
        .map(|v| v != 0)
        .collect()
}

/// The instruction tokens the aligner reads: positions after the `<image>` placeholder
/// that are not padding and come before the first supervised token (all positions after
/// the placeholder when there are no labels). `[N][L]`.
pub fn instruction_mask(
    ids: &[Vec<i64>],
    labels: Option<&[Vec<i64>]>,
    mask: &[Vec<bool>],
) -> Vec<Vec<bool>> {
    ids.iter()
        .enumerate()
        .map(|(r, row)| {
            let i0 = row.iter().position(|&t| t == IMAGE_TOKEN_INDEX);
            let first_target = labels
                .and_then(|l| l.get(r))
                .and_then(|l| l.iter().position(|&t| t != IGNORE_INDEX))
                .unwrap_or(row.len());
            (0..row.len())
                .map(|j| {
                    i0.is_some_and(|i0| j > i0)
                        && j < first_target
                        && mask.get(r).and_then(|m| m.get(j)).copied().unwrap_or(false)
                })
                .collect()
        })
        .collect()
}

impl<B: Backend> Mimo<B> {
    /// Expands the `<image>` placeholder of every row (see the module documentation) and
    /// right-pads the rows to the longest: embeddings, mask, labels and the position map.
    pub fn assemble(&self, input: &MimoInput<B>) -> Result<Assembled<B>, MimoError> {
        let device = self.device();
        let ids = host_i64(&input.input_ids);
        let [n, l] = input.input_ids.dims();
        let ids: Vec<Vec<i64>> = ids.chunks(l.max(1)).map(<[i64]>::to_vec).take(n).collect();
        let mask: Vec<Vec<bool>> = host_bool(&input.attention_mask)
            .chunks(l.max(1))
            .map(<[bool]>::to_vec)
            .take(n)
            .collect();
        let labels: Option<Vec<Vec<i64>>> = input.labels.as_ref().map(|t| {
            host_i64(t)
                .chunks(l.max(1))
                .map(<[i64]>::to_vec)
                .take(n)
                .collect()
        });
        let bad = |m: String| Err(MimoError::Input(m));
        if input.sizes.len() != n || input.sam_resized.len() != n {
            return bad(format!(
                "{n} conversation rows but {} image sizes and {} SAM sizes",
                input.sizes.len(),
                input.sam_resized.len()
            ));
        }
        let prompt_labels = host_i64(&input.prompts.labels);
        let slots = input.prompts.slots();
        if input.prompts.labels.dims()[0] != n {
            return bad(format!(
                "prompts for {} images, {n} rows",
                input.prompts.labels.dims()[0]
            ));
        }

        let features = self.image_features(&input.clip);
        let [_, p, _] = features.dims();
        let (vp, vp_pad) = self.vp_encoder.forward(&input.prompts, &input.sizes);
        let safe_ids = input
            .input_ids
            .clone()
            .mask_fill(input.input_ids.clone().lower_elem(0), 0);
        // Each module computes in its own weights' dtype (a bf16 frozen base beside f32
        // trained modules in training); the LLM's inputs are in its compute dtype.
        let llm_dtype = self.llm.compute_dtype();
        let new_dtype = self.dtype();
        let embeds = self.llm.embed(safe_ids).cast(llm_dtype);
        let d = embeds.dims()[2];
        let features = features.cast(new_dtype);
        let image_tokens =
            crate::nn::linear_rows(&self.mm_projector, features.clone()).cast(llm_dtype);
        // `None`: nothing after the image tokens (no prompts, no aligner).
        let extra: Vec<Option<Tensor<B, 2>>> = match &self.aligner {
            Some(aligner) => {
                let keep = instruction_mask(&ids, labels.as_deref(), &mask);
                let keep: Vec<bool> = keep.into_iter().flatten().collect();
                let ctx = AlignerContext {
                    image: features,
                    prompts: vp.cast(new_dtype),
                    prompt_padding: vp_pad,
                    text: embeds.clone().detach().cast(new_dtype),
                    text_keep: Tensor::from_data(TensorData::new(keep, [n, l]), &device),
                };
                let a = aligner.forward(ctx).cast(llm_dtype);
                let q = a.dims()[1];
                (0..n)
                    .map(|r| Some(a.clone().slice([r..r + 1, 0..q, 0..d]).reshape([q, d])))
                    .collect()
            }
            None => {
                let projected =
                    crate::nn::linear_rows(&self.mm_projector, vp.cast(new_dtype)).cast(llm_dtype);
                (0..n)
                    .map(|r| {
                        let valid: Vec<i64> = (0..slots)
                            .filter(|&j| prompt_labels[r * slots + j] != LABEL_PAD)
                            .map(|j| j as i64)
                            .collect();
                        if valid.is_empty() {
                            return None;
                        }
                        let row = projected
                            .clone()
                            .slice([r..r + 1, 0..slots, 0..d])
                            .reshape([slots, d]);
                        let idx = Tensor::<B, 1, Int>::from_ints(valid.as_slice(), &device);
                        Some(row.select(0, idx))
                    })
                    .collect()
            }
        };

        let mut rows = Vec::with_capacity(n);
        let mut out_labels: Option<Vec<Vec<i64>>> = labels.as_ref().map(|_| Vec::new());
        let mut pos_map = Vec::with_capacity(n);
        let mut image_rows = Vec::with_capacity(n);
        let mut lengths = Vec::with_capacity(n);
        for r in 0..n {
            let len = mask[r].iter().rposition(|&m| m).map_or(0, |i| i + 1);
            let places: Vec<usize> = (0..len)
                .filter(|&j| ids[r][j] == IMAGE_TOKEN_INDEX)
                .collect();
            let [i0] = places.as_slice() else {
                return bad(format!(
                    "row {r} has {} <image> placeholders (id {IMAGE_TOKEN_INDEX}); MIMO needs exactly one",
                    places.len()
                ));
            };
            let i0 = *i0;
            let tokens = image_tokens
                .clone()
                .slice([r..r + 1, 0..p, 0..d])
                .reshape([p, d]);
            let img = match &extra[r] {
                Some(e) => Tensor::cat(vec![tokens, e.clone()], 0),
                None => tokens,
            };
            let k = img.dims()[0];
            let row_embeds = embeds.clone().slice([r..r + 1, 0..l, 0..d]).reshape([l, d]);
            let mut parts = Vec::new();
            if i0 > 0 {
                parts.push(row_embeds.clone().slice([0..i0, 0..d]));
            }
            parts.push(img);
            if len > i0 + 1 {
                parts.push(row_embeds.slice([i0 + 1..len, 0..d]));
            }
            rows.push(Tensor::cat(parts, 0));
            pos_map.push((0..l).map(|j| if j < i0 { j } else { j + k - 1 }).collect());
            image_rows.push(k);
            lengths.push(len + k - 1);
            if let (Some(dst), Some(src)) = (out_labels.as_mut(), labels.as_ref()) {
                let mut v: Vec<i64> = src[r][..i0].to_vec();
                v.extend(std::iter::repeat_n(IGNORE_INDEX, k));
                v.extend_from_slice(&src[r][i0 + 1..len]);
                dst.push(v);
            }
        }
        let width = lengths.iter().copied().max().unwrap_or(0);
        let padded: Vec<Tensor<B, 3>> = rows
            .into_iter()
            .map(|t| {
                let rl = t.dims()[0];
                let t = if rl < width {
                    let pad = Tensor::<B, 2>::zeros([width - rl, d], &device).cast(t.dtype());
                    Tensor::cat(vec![t, pad], 0)
                } else {
                    t
                };
                t.unsqueeze::<3>()
            })
            .collect();
        let m: Vec<bool> = lengths
            .iter()
            .flat_map(|&len| (0..width).map(move |j| j < len))
            .collect();
        if let Some(ls) = out_labels.as_mut() {
            ls.iter_mut().for_each(|v| v.resize(width, IGNORE_INDEX));
        }
        Ok(Assembled {
            inputs_embeds: Tensor::cat(padded, 0),
            attention_mask: Tensor::from_data(TensorData::new(m, [n, width]), &device),
            labels: out_labels,
            pos_map,
            image_rows,
            lengths,
        })
    }
}
