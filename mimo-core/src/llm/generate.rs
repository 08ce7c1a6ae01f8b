//! Text generation with the KV cache: greedy or sampled (temperature, top-k, top-p) after a
//! repetition penalty, with transformers' semantics and order (`RepetitionPenaltyLogitsProcessor`,
//! then `Temperature`, `TopK`, `TopP` warpers), EOS and stop strings, `max_new_tokens`, a
//! per-token callback for streaming, and batched prompts with left padding.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::{KvCache, Llama, positions_from_mask};
pub use crate::rng::Rng;
use crate::tokenizer::conversation::Template;
use crate::tokenizer::{MimoTokenizer, TokenizerError};

/// Generation settings, named as in transformers' `GenerationConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Most tokens generated per prompt.
    pub max_new_tokens: usize,
    /// Sample (true) or take the most likely token (false).
    pub do_sample: bool,
    /// Divides the logits before sampling (> 0).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens when sampling (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` when sampling (1: off).
    pub top_p: f32,
    /// Penalise tokens already in the sequence (prompt included); 1: off.
    pub repetition_penalty: f32,
    /// Tokens that end a sequence (LLaMA: `</s>` = 2).
    pub eos_token_id: Vec<u32>,
    /// Fed to finished rows while others continue (LLaMA/LISA: `<unk>` = 0).
    pub pad_token_id: u32,
    /// Texts that end a sequence; the returned text stops before them.
    pub stop_strings: Vec<String>,
    /// Seed of the sampler (same seed, same tokens).
    pub seed: u64,
}

impl Default for GenerationConfig {
    /// Greedy, 256 tokens, EOS `</s>`, with transformers' sampling defaults (temperature 1,
    /// top-k 50, top-p 1) for when `do_sample` is switched on.
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            eos_token_id: vec![2],
            pad_token_id: 0,
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let bad = |f: &str, m: &str| crate::config::ConfigError::invalid(f, m.to_string());
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature", "must be a positive number");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "must be in (0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", "must be a positive number");
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("stop_strings", "must not contain an empty string");
        }
        Ok(())
    }
}

/// A hook on each decoding step's scores, `(row, tokens_so_far, scores)`, run after the
/// built-in processors (like a transformers `LogitsProcessor`).
pub type LogitsProcessor<'a> = dyn FnMut(usize, &[u32], &mut [f32]) + 'a;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// An EOS token was generated (not included in the tokens).
    Eos,
    /// The caller (a stop string) ended it.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

/// Generated tokens per prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// New tokens of each row (without EOS).
    pub tokens: Vec<Vec<u32>>,
    /// Why each row ended.
    pub finish: Vec<FinishReason>,
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: for every id in `seen`, a negative
/// score is multiplied by `penalty`, a positive one divided.
pub fn repetition_penalty(scores: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut hit = vec![false; scores.len()];
    for &t in seen {
        if let Some(h) = hit.get_mut(t as usize) {
            *h = true;
        }
    }
    for (s, h) in scores.iter_mut().zip(hit) {
        if h {
            *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
        }
    }
}

/// `TemperatureLogitsWarper`.
pub fn temperature(scores: &mut [f32], t: f32) {
    if t != 1.0 {
        scores.iter_mut().for_each(|s| *s /= t);
    }
}

/// `TopKLogitsWarper`: scores below the k-th largest become `-inf` (ties with it stay).
pub fn top_k(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    scores
        .iter_mut()
        .filter(|s| **s < kth)
        .for_each(|s| *s = f32::NEG_INFINITY);
}

/// `TopPLogitsWarper`: sorted ascending, tokens whose cumulative probability is `<= 1 - p`
/// become `-inf`; the most likely token always stays.
pub fn top_p(scores: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable ascending sort, like torch.sort on distinct values.
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let max = scores[*order.last().unwrap_or(&0)];
    let exps: Vec<f32> = order.iter().map(|&i| (scores[i] - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    let mut cum = 0f32;
    let n = order.len();
    let mut remove = Vec::new();
    for (rank, (&i, e)) in order.iter().zip(&exps).enumerate() {
        cum += e / total;
        if cum <= 1.0 - p && rank < n - 1 {
            remove.push(i);
        }
    }
    for i in remove {
        scores[i] = f32::NEG_INFINITY;
    }
}

/// The processors of one step in generate's order: repetition penalty, then (sampling
/// only) temperature, top-k, top-p.
pub fn process_logits(cfg: &GenerationConfig, scores: &mut [f32], seen: &[u32]) {
    repetition_penalty(scores, seen, cfg.repetition_penalty);
    if cfg.do_sample {
        temperature(scores, cfg.temperature);
        top_k(scores, cfg.top_k);
        top_p(scores, cfg.top_p);
    }
}

/// The token for processed `scores`: the first maximum (greedy) or a draw from their softmax.
pub fn choose(scores: &[f32], sample: bool, rng: &mut Rng) -> u32 {
    let (best, max) =
        scores
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            });
    if !sample || !max.is_finite() {
        return best as u32;
    }
    let weights: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if u < *w {
                return i as u32;
            }
            u -= w;
        }
    }
    best as u32
}

impl<B: Backend> Llama<B> {
    /// Generates for a left-padded batch of token ids (`attention_mask` 1 = token,
    /// 0 = padding). `on_token(row, tokens_so_far)` is called after each new token of an
    /// unfinished row (not for EOS); returning `true` stops that row ([`FinishReason::Stop`]).
    pub fn generate(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: &[Vec<u8>],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
    ) -> Generated {
        let b = input_ids.len();
        let s = input_ids.first().map(Vec::len).unwrap_or(0);
        let ids: Vec<i64> = input_ids.iter().flatten().map(|&t| i64::from(t)).collect();
        let device = self.model.embed_tokens.weight.device();
        let ids = Tensor::<B, 1, Int>::from_ints(ids.as_slice(), &device).reshape([b, s]);
        self.generate_embeds(self.embed(ids), input_ids, attention_mask, cfg, on_token)
    }

    /// Generates from prompt embeddings `[B, S, hidden]` (MIMO splices image features into
    /// them). `seen` holds the token ids the repetition penalty counts (the prompt's text
    /// tokens; may be empty).
    pub fn generate_embeds(
        &self,
        inputs_embeds: Tensor<B, 3>,
        seen: &[Vec<u32>],
        attention_mask: &[Vec<u8>],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
    ) -> Generated {
        self.generate_core(
            inputs_embeds,
            seen,
            attention_mask,
            cfg,
            on_token,
            &mut |_, _, _| {},
            false,
        )
        .0
    }

    /// [`Llama::generate_embeds`] that also hands out, for every new token of every row (EOS
    /// excluded), the final-norm hidden state `[hidden]` of the decoding step that produced
    /// it: the state whose logits chose the token. MIMO reads its `<SEG>` embeddings here
    /// (LISA recomputes the whole sequence and reads the same vectors).
    ///
    /// `processor(row, tokens_so_far, scores)` runs after the built-in processors of each
    /// step, like a transformers `LogitsProcessor` passed to `generate` (e.g. to ban or
    /// force tokens); scores set to `-inf` are never chosen.
    pub fn generate_embeds_with_hidden(
        &self,
        inputs_embeds: Tensor<B, 3>,
        seen: &[Vec<u32>],
        attention_mask: &[Vec<u8>],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
        processor: &mut LogitsProcessor<'_>,
    ) -> (Generated, Vec<Vec<Tensor<B, 1>>>) {
        self.generate_core(
            inputs_embeds,
            seen,
            attention_mask,
            cfg,
            on_token,
            processor,
            true,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn generate_core(
        &self,
        inputs_embeds: Tensor<B, 3>,
        seen: &[Vec<u32>],
        attention_mask: &[Vec<u8>],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, &[u32]) -> bool,
        processor: &mut LogitsProcessor<'_>,
        keep_hidden: bool,
    ) -> (Generated, Vec<Vec<Tensor<B, 1>>>) {
        let b = inputs_embeds.dims()[0];
        let mut hidden: Vec<Vec<Tensor<B, 1>>> = vec![Vec::new(); b];
        let device = self.model.embed_tokens.weight.device();
        let mut rng = Rng::new(cfg.seed);
        let mut cache = KvCache::new();
        let mut mask: Vec<Vec<u8>> = attention_mask.to_vec();
        let positions = positions_from_mask(&mask);
        let mut next_pos: Vec<i64> = positions
            .iter()
            .map(|r| r.last().copied().unwrap_or(-1) + 1)
            .collect();
        let mut seen: Vec<Vec<u32>> = (0..b)
            .map(|r| seen.get(r).cloned().unwrap_or_default())
            .collect();
        let mut out = Generated {
            tokens: vec![Vec::new(); b],
            finish: vec![FinishReason::Length; b],
        };
        let mut done = vec![false; b];
        let mut embeds = inputs_embeds;
        let mut pos = positions;
        for _ in 0..cfg.max_new_tokens {
            let o = self.run(embeds, &mask, &pos, &mut cache, false, true);
            let step_hidden = keep_hidden.then(|| {
                let [_, s, d] = o.last_hidden_state.dims();
                o.last_hidden_state
                    .clone()
                    .slice([0..b, s - 1..s, 0..d])
                    .reshape([b, d])
            });
            let v = o.logits.dims()[2];
            let logits = o
                .logits
                .reshape([b, v])
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default();
            let mut next = vec![cfg.pad_token_id; b];
            for row in 0..b {
                if done[row] {
                    continue;
                }
                let mut scores = logits[row * v..(row + 1) * v].to_vec();
                process_logits(cfg, &mut scores, &seen[row]);
                processor(row, &out.tokens[row], &mut scores);
                let t = choose(&scores, cfg.do_sample, &mut rng);
                next[row] = t;
                seen[row].push(t);
                if cfg.eos_token_id.contains(&t) {
                    done[row] = true;
                    out.finish[row] = FinishReason::Eos;
                    continue;
                }
                out.tokens[row].push(t);
                if let Some(h) = &step_hidden {
                    let d = h.dims()[1];
                    hidden[row].push(h.clone().slice([row..row + 1, 0..d]).reshape([d]));
                }
                if on_token(row, &out.tokens[row]) {
                    done[row] = true;
                    out.finish[row] = FinishReason::Stop;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            mask.iter_mut().for_each(|m| m.push(1));
            pos = next_pos.iter().map(|&p| vec![p]).collect();
            next_pos.iter_mut().for_each(|p| *p += 1);
            let ids: Vec<i64> = next.iter().map(|&t| i64::from(t)).collect();
            let ids = Tensor::<B, 1, Int>::from_ints(ids.as_slice(), &device).reshape([b, 1]);
            embeds = self.embed(ids);
        }
        (out, hidden)
    }
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedText {
    /// The answer, cut before a stop string.
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Earliest byte offset of any stop string in `text`.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Length of the longest suffix of `text` that begins some stop string (held back while
/// streaming, since the next token may complete the stop string).
fn pending_stop(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                best = best.max(i);
            }
        }
    }
    best
}

/// Generates answers for text prompts: each is put in `template` (or used as it is),
/// tokenised with BOS, the batch left-padded with the pad id, and decoded. `on_text(row,
/// delta)` streams each row's new text as it is generated (stop strings never appear).
pub fn generate_text<B: Backend>(
    model: &Llama<B>,
    tok: &MimoTokenizer,
    template: Option<&Template>,
    prompts: &[String],
    cfg: &GenerationConfig,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<GeneratedText>, TokenizerError> {
    let ids = tok.ids();
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let text = match template {
                Some(t) => t.generation_prompt(p),
                None => p.clone(),
            };
            tok.encode(&text, true)
        })
        .collect::<Result<_, _>>()?;
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let input: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![ids.pad(); width - r.len()];
            v.extend(r);
            v
        })
        .collect();
    let mask: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![0u8; width - r.len()];
            v.extend(std::iter::repeat_n(1u8, r.len()));
            v
        })
        .collect();
    let mut emitted = vec![0usize; prompts.len()];
    let mut texts = vec![String::new(); prompts.len()];
    let mut error = None;
    let generated = model.generate(&input, &mask, cfg, &mut |row, tokens| {
        let text = match tok.decode(tokens, true) {
            Ok(t) => t,
            Err(e) => {
                error = Some(e);
                return true;
            }
        };
        // Wait for the rest of an incomplete UTF-8 character.
        if text.ends_with('\u{FFFD}') {
            return false;
        }
        let (end, stop) = match find_stop(&text, &cfg.stop_strings) {
            Some(i) => (i, true),
            None => (text.len() - pending_stop(&text, &cfg.stop_strings), false),
        };
        if end > emitted[row] && text.is_char_boundary(emitted[row]) {
            on_text(row, &text[emitted[row]..end]);
            emitted[row] = end;
        }
        texts[row] = text[..if stop { end } else { text.len() }].to_string();
        stop
    });
    if let Some(e) = error {
        return Err(e);
    }
    let mut out = Vec::with_capacity(prompts.len());
    for (row, (tokens, finish)) in generated
        .tokens
        .into_iter()
        .zip(generated.finish)
        .enumerate()
    {
        let full = tok.decode(&tokens, true)?;
        let text = if finish == FinishReason::Stop {
            texts[row].clone()
        } else {
            full
        };
        if text.len() > emitted[row] && text.is_char_boundary(emitted[row]) {
            on_text(row, &text[emitted[row]..]);
        }
        out.push(GeneratedText {
            text,
            tokens,
            finish,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
