//! Performance benchmarks of model components on any burn backend.
//!
//! Figures are wall-clock medians over repeated runs after a warm-up, with the backend
//! synchronised around each run. They are meant to be read next to the PyTorch figure
//! measured in the same session (see `scripts/bench_sam.sh`), never as absolute limits.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use mimo_core::Image;
use mimo_core::llm::{GenerationConfig, KvCache, Llama, LlamaConfig, positions_from_mask};
use mimo_core::sam::{Prompt, SamConfig};

/// Median and spread of one measured stage, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    /// Median.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Number of timed runs.
    pub runs: usize,
}

/// SAM timings.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SamTimings {
    /// Image encoder on one padded `[1, 3, S, S]` input.
    pub encoder: Timing,
    /// Prompt encoder + mask decoder (one point, single mask) without post-processing.
    pub decoder: Timing,
}

fn time<B: Backend>(device: &B::Device, warmup: usize, runs: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..warmup {
        f();
        let _ = B::sync(device);
    }
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            let _ = B::sync(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Timing {
        median_ms: ms[ms.len() / 2],
        min_ms: ms[0],
        runs: ms.len(),
    }
}

/// Times SAM of `config` with random weights (timing does not depend on the values).
pub fn bench_sam<B: Backend>(config: &SamConfig, runs: usize, device: &B::Device) -> SamTimings {
    let sam = config.init::<B>(device);
    let s = config.image_encoder.img_size;
    let x = Tensor::<B, 4>::random([1, 3, s, s], burn::tensor::Distribution::Default, device);
    let encoder = time::<B>(device, 1, runs, || {
        let _ = sam.image_encoder.forward(x.clone()).into_data();
    });
    let image = Image::new(s, s, vec![128; s * s * 3]).expect("square image");
    let emb = sam.embed_image(&image);
    let prompt = Prompt::default().point(s as f64 / 2.0, s as f64 / 3.0, true);
    let pe = sam.prompt_encoder.get_dense_pe();
    let decoder = time::<B>(device, 2, runs * 5, || {
        let (sparse, dense) = sam.encode_prompt(&emb, &prompt).expect("valid prompt");
        let (m, _) =
            sam.mask_decoder
                .forward(emb.embeddings.clone(), pe.clone(), sparse, dense, false);
        let _ = m.into_data();
    });
    SamTimings { encoder, decoder }
}

/// Times SAM's image encoder alone on one padded `[1, 3, S, S]` input with weights and
/// activations in `dtype` (random weights).
pub fn bench_sam_encoder<B: Backend>(
    config: &SamConfig,
    dtype: DType,
    runs: usize,
    device: &B::Device,
) -> Timing {
    let sam = mimo_core::nn::cast_module(config.init::<B>(device), dtype);
    let s = config.image_encoder.img_size;
    let x = Tensor::<B, 4>::random([1, 3, s, s], burn::tensor::Distribution::Default, device)
        .cast(dtype);
    time::<B>(device, 1, runs, || {
        let _ = sam.image_encoder.forward(x.clone()).into_data();
    })
}

/// Times a full CLIP vision forward (all hidden states, pooled and projected embedding) on
/// one `[1, 3, S, S]` input, random weights.
pub fn bench_clip<B: Backend>(
    config: &mimo_core::clip::ClipVisionConfig,
    runs: usize,
    device: &B::Device,
) -> Timing {
    let tower = config.init::<B>(device);
    let s = config.image_size;
    let x = Tensor::<B, 4>::random([1, 3, s, s], burn::tensor::Distribution::Default, device);
    time::<B>(device, 1, runs, || {
        let out = tower.forward(x.clone());
        let _ = out.pooled.into_data();
    })
}

/// Language-model timings at batch 1.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LlmTimings {
    /// Forward of a `prompt_len`-token prompt (all logits), no gradients.
    pub forward: Timing,
    /// Decoding: milliseconds per new token with the KV cache after the prompt
    /// (`(generate(prompt, n) - generate(prompt, 1)) / (n - 1)`).
    pub decode_ms_per_token: f64,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Tokens generated for the decode figure.
    pub decode_tokens: usize,
}

/// Random token ids (values do not change the timing).
fn prompt_ids(len: usize, vocab: usize) -> Vec<Vec<u32>> {
    vec![
        (0..len)
            .map(|i| (1 + (i * 7919) % (vocab - 1)) as u32)
            .collect(),
    ]
}

/// Times forward and KV-cache decoding of `config` with random weights, optionally cast to
/// `dtype` (e.g. bf16 on a GPU).
pub fn bench_llm<B: Backend>(
    config: &LlamaConfig,
    prompt_len: usize,
    decode_tokens: usize,
    runs: usize,
    dtype: Option<DType>,
    device: &B::Device,
) -> LlmTimings {
    let mut model: Llama<B> = config.init(device);
    if let Some(d) = dtype {
        model = model.cast(d);
    }
    let ids = prompt_ids(prompt_len, config.vocab_size);
    let mask = vec![vec![1u8; prompt_len]];
    let pos = positions_from_mask(&mask);
    let forward = time::<B>(device, 1, runs, || {
        let o = model.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false);
        let _ = o.logits.into_data();
    });
    let generate = |n: usize| {
        let cfg = GenerationConfig {
            max_new_tokens: n,
            eos_token_id: vec![],
            ..Default::default()
        };
        time::<B>(device, 1, runs, || {
            let _ = model.generate(&ids, &mask, &cfg, &mut |_, _| false);
        })
    };
    let n = decode_tokens.max(2);
    let one = generate(1);
    let many = generate(n);
    LlmTimings {
        forward,
        decode_ms_per_token: (many.median_ms - one.median_ms) / (n - 1) as f64,
        prompt_len,
        decode_tokens: n,
    }
}

/// Times one training step's forward + backward (mean squared logits as the loss, every
/// parameter trainable) on a `prompt_len`-token sequence.
pub fn bench_llm_backward<B: AutodiffBackend>(
    config: &LlamaConfig,
    prompt_len: usize,
    runs: usize,
    device: &B::Device,
) -> Timing {
    let model: Llama<B> = config.init(device);
    let ids = prompt_ids(prompt_len, config.vocab_size);
    let mask = vec![vec![1u8; prompt_len]];
    let pos = positions_from_mask(&mask);
    time::<B>(device, 1, runs, || {
        let o = model.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false);
        let grads = o.logits.powi_scalar(2).mean().backward();
        drop(grads);
    })
}

/// Data pipeline timings.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DataTimings {
    /// Records written per second by the dataset builder.
    pub build_records_per_s: f64,
    /// Images (2D slices) read or generated and written per second by the builder.
    pub build_images_per_s: f64,
    /// Records written.
    pub records: usize,
    /// Images written.
    pub images: usize,
    /// One batch from the batcher (decode images and masks, CLIP and SAM pre-processing,
    /// tokenisation), single-threaded.
    pub batch: Timing,
    /// Samples per batch.
    pub batch_size: usize,
}

/// Builds `cfg` into `out` (timed) and times batches of `batch_size` from its records.
pub fn bench_data<B: Backend>(
    cfg: &mimo_data::build::DatasetConfig,
    out: &std::path::Path,
    batcher: &mimo_data::batch::MimoBatcher,
    batch_size: usize,
    runs: usize,
    device: &B::Device,
) -> Result<DataTimings, String> {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let _ = std::fs::remove_dir_all(out);
    let t = Instant::now();
    let summary =
        mimo_data::build::build(cfg, out, &mut |_, _, _| {}).map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let n: usize = summary.records.values().sum();
    let ds = mimo_data::batch::RecordsDataset::open(&out.join("records.jsonl"), None)
        .map_err(|e| e.to_string())?;
    let mut next = 0usize;
    let batch = time::<B>(device, 1, runs, || {
        let items: Vec<_> = (0..batch_size)
            .filter_map(|k| ds.get((next + k) % ds.len().max(1)))
            .collect();
        next += batch_size;
        let b: mimo_data::batch::MimoBatch<B> = batcher.batch(items, device);
        let _ = b.sam_pixels.into_data();
    });
    Ok(DataTimings {
        build_records_per_s: n as f64 / secs,
        build_images_per_s: summary.images as f64 / secs,
        records: n,
        images: summary.images,
        batch,
        batch_size,
    })
}

/// MIMO training-step timings.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct MimoTimings {
    /// Forward only (losses and masks), without autodiff (what validation runs).
    pub forward: Timing,
    /// Forward + backward.
    pub forward_backward: Timing,
    /// Forward + backward + an AdamW update of the trainable parameters.
    pub step: Timing,
    /// LLM sequence length after the `<image>` placeholder was expanded.
    pub seq_len: usize,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Heap memory of the step, when the caller could count it (a CPU backend, where tensors
    /// live on the heap, and a [`HeapMeter`]).
    #[serde(default)]
    pub memory: Option<MimoStepMemory>,
}

/// Counts the bytes a process holds on its heap, for the memory figures of a benchmark on a
/// CPU backend (where tensors are heap buffers). The `mimo` binary implements it with a
/// counting global allocator.
pub trait HeapMeter {
    /// Bytes allocated now.
    fn live(&self) -> u64;
    /// Starts a new peak: from now on [`HeapMeter::peak`] is the most bytes held at once.
    fn reset_peak(&self);
    /// The most bytes held at once since the last [`HeapMeter::reset_peak`].
    fn peak(&self) -> u64;
}

/// Heap memory of a MIMO training step on a CPU backend, in bytes. Every figure but
/// `before_bytes` is counted above `before_bytes`; each peak is the largest over the stage's
/// runs.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct MimoStepMemory {
    /// Held before the first stage: every weight of the model, and the batch.
    pub before_bytes: u64,
    /// Peak of the forward without autodiff (validation).
    pub forward_peak_bytes: u64,
    /// Held when the autodiff forward has returned: what the backward keeps (the activations
    /// saved by the graph, or what activation checkpointing keeps of them) and the outputs.
    pub graph_bytes: u64,
    /// Peak of forward + backward: the graph, the gradients and the transients of both.
    pub forward_backward_peak_bytes: u64,
    /// Peak of forward + backward + AdamW.
    pub step_peak_bytes: u64,
    /// Held after the last step: AdamW's moments of the trainable parameters.
    pub after_step_bytes: u64,
}

/// A synthetic training batch for a model of `cfg`: `images` images of `size`
/// (`[height, width]`) with random pixels, one foreground point and one box each, a
/// conversation of `text_len` tokens whose answer holds two `<SEG>`, and two rectangular
/// ground-truth masks per image.
pub fn synthetic_mimo_input<B: Backend>(
    cfg: &mimo_core::mimo::MimoModelConfig,
    images: usize,
    size: [usize; 2],
    text_len: usize,
    device: &B::Device,
) -> mimo_core::mimo::MimoInput<B> {
    use burn::tensor::{Bool, Distribution, Int, TensorData};
    use mimo_core::mimo::{ClipInput, MimoInput};
    use mimo_core::prompt::{PromptTensors, VisualPrompt};
    use mimo_core::tokenizer::{IGNORE_INDEX, IMAGE_TOKEN_INDEX};
    let [h, w] = size;
    let clip = cfg.clip.image_size;
    let s = cfg.sam.image_encoder.img_size;
    let scale = s as f64 / h.max(w) as f64;
    let resized = [
        (h as f64 * scale + 0.5) as usize,
        (w as f64 * scale + 0.5) as usize,
    ];
    let n = images;
    let text_len = text_len.max(16);
    let vocab = cfg.llm.vocab_size.clamp(8, 32000) as i64;
    let seg = i64::from(cfg.seg_token_id);
    // [BOS, instruction ..., <image>, question ..., answer with two <SEG> ..., EOS]
    let answer_from = text_len * 3 / 4;
    let mut ids = Vec::with_capacity(n * text_len);
    let mut labels = Vec::with_capacity(n * text_len);
    for _ in 0..n {
        for j in 0..text_len {
            let t = match j {
                0 => 1,
                4 => IMAGE_TOKEN_INDEX,
                j if j == text_len - 1 => 2,
                j if j == answer_from + 2 || j == text_len - 3 => seg,
                // Filler tokens, never `<SEG>` (the masks are given for the two above).
                j => match 3 + (j as i64 * 7919) % (vocab - 3) {
                    t if t == seg => 3,
                    t => t,
                },
            };
            ids.push(t);
            labels.push(if j >= answer_from { t } else { IGNORE_INDEX });
        }
    }
    let prompts = vec![
        vec![
            VisualPrompt::Point {
                x: w as f64 / 2.0,
                y: h as f64 / 2.0,
                positive: true,
            },
            VisualPrompt::Box {
                x0: w as f64 / 4.0,
                y0: h as f64 / 4.0,
                x1: w as f64 * 3.0 / 4.0,
                y1: h as f64 * 3.0 / 4.0,
            },
        ];
        n
    ];
    let masks = (0..n)
        .map(|_| {
            let mut m = vec![0f32; 2 * h * w];
            for (k, (y0, y1, x0, x1)) in [
                (h / 4, h / 2, w / 4, w / 2),
                (h / 2, h * 3 / 4, w / 3, w * 2 / 3),
            ]
            .into_iter()
            .enumerate()
            {
                for y in y0..y1 {
                    for x in x0..x1 {
                        m[(k * h + y) * w + x] = 1.0;
                    }
                }
            }
            Tensor::<B, 3>::from_data(TensorData::new(m, [2, h, w]), device)
        })
        .collect();
    MimoInput {
        clip: ClipInput::Pixels(Tensor::random(
            [n, 3, clip, clip],
            Distribution::Default,
            device,
        )),
        sam_pixels: Tensor::random([n, 3, s, s], Distribution::Default, device),
        sam_embeddings: None,
        sam_resized: vec![resized; n],
        sizes: vec![size; n],
        prompts: PromptTensors::from_prompts(&prompts, 0, device),
        input_ids: Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, text_len]), device),
        labels: Some(Tensor::<B, 2, Int>::from_data(
            TensorData::new(labels, [n, text_len]),
            device,
        )),
        attention_mask: Tensor::<B, 2, Bool>::from_data(
            TensorData::new(vec![true; n * text_len], [n, text_len]),
            device,
        ),
        masks,
    }
}

/// Times MIMO's training step on `input`: the forward without autodiff (on `plain`, the same
/// batch on the inner backend), forward + backward, and forward + backward + AdamW (LISA's
/// betas 0.9/0.95, lr 3e-4) over the trainable parameters, with the training forward
/// `mimo-train` runs (`Mimo::forward_train`). With a `meter` (a CPU backend), also the heap
/// memory of each stage ([`MimoStepMemory`]).
pub fn bench_mimo_step<B: AutodiffBackend>(
    model: mimo_core::mimo::Mimo<B>,
    input: mimo_core::mimo::MimoInput<B>,
    plain: mimo_core::mimo::MimoInput<B::InnerBackend>,
    runs: usize,
    recompute: bool,
    meter: Option<&dyn HeapMeter>,
    device: &B::Device,
) -> Result<MimoTimings, String> {
    use burn::module::AutodiffModule;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    let trainable_params = model
        .parameters()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    let probe = model
        .forward_train(input.clone())
        .map_err(|e| e.to_string())?;
    let seq_len = probe.labels.dims()[1];
    // The backward consumes the probe's graph: burn's autodiff keeps a graph that never
    // went backward until a later backward clears it, which the first stage would count as
    // freed memory.
    drop(probe.loss.backward());
    // Heap figures, counted above what is held now (the model and the batch).
    let before = meter.map(|m| m.live()).unwrap_or(0);
    let peak_above = |m: &dyn HeapMeter| m.peak().saturating_sub(before);
    let mut failed = None;
    let inference = model.valid();
    meter.inspect(|m| m.reset_peak());
    let forward = time::<B>(device, 1, runs, || {
        if let Err(e) = inference.forward(plain.clone()) {
            failed = Some(e.to_string());
        }
    });
    drop(inference);
    let forward_peak = meter.map(peak_above);
    meter.inspect(|m| m.reset_peak());
    // Forward and backward (the parameters' gradients), noting what is held when the
    // forward has returned: what the backward keeps.
    let forward_backward_of =
        |m: &mimo_core::mimo::Mimo<B>, graph: &mut u64| -> Result<GradientsParams, String> {
            let mut note = || {
                if let Some(meter) = meter {
                    *graph = (*graph).max(meter.live().saturating_sub(before));
                }
            };
            if recompute {
                m.forward_backward_recompute_observed(input.clone(), &mut note)
                    .map(|(_, g)| g)
                    .map_err(|e| e.to_string())
            } else {
                let o = m.forward_train(input.clone()).map_err(|e| e.to_string())?;
                note();
                Ok(GradientsParams::from_grads(o.loss.backward(), m))
            }
        };
    let mut graph = 0;
    let forward_backward = time::<B>(device, 1, runs, || {
        if let Err(e) = forward_backward_of(&model, &mut graph) {
            failed = Some(e);
        }
    });
    let forward_backward_peak = meter.map(peak_above);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_weight_decay(0.0)
        .init::<B, mimo_core::mimo::Mimo<B>>();
    let mut slot = Some(model);
    meter.inspect(|m| m.reset_peak());
    let step = time::<B>(device, 1, runs, || {
        let Some(m) = slot.take() else { return };
        match forward_backward_of(&m, &mut 0) {
            Ok(grads) => slot = Some(optim.step(3e-4, m, grads)),
            Err(e) => {
                failed = Some(e);
                slot = Some(m);
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let memory = meter.map(|m| MimoStepMemory {
        before_bytes: before,
        forward_peak_bytes: forward_peak.unwrap_or(0),
        graph_bytes: graph,
        forward_backward_peak_bytes: forward_backward_peak.unwrap_or(0),
        step_peak_bytes: peak_above(m),
        after_step_bytes: m.live().saturating_sub(before),
    });
    Ok(MimoTimings {
        forward,
        forward_backward,
        step,
        seq_len,
        trainable_params,
        memory,
    })
}
