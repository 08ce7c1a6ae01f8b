//! Performance benchmarks of model components on any burn backend.
//!
//! Figures are wall-clock medians over repeated runs after a warm-up, with the backend
//! synchronised around each run. They are meant to be read next to the PyTorch figure
//! measured in the same session (see `scripts/bench_sam.sh`), never as absolute limits.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use mimo_core::llm::{GenerationConfig, KvCache, Llama, LlamaConfig, positions_from_mask};
use mimo_core::sam::{Prompt, Sam, SamConfig, SamImage};

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
    let sam = Sam::<B>::new(config, device);
    let s = config.image_encoder.img_size;
    let x = Tensor::<B, 4>::random([1, 3, s, s], burn::tensor::Distribution::Default, device);
    let encoder = time::<B>(device, 1, runs, || {
        let _ = sam.image_encoder.forward(x.clone()).into_data();
    });
    let image = SamImage::new(s, s, vec![128; s * s * 3]).expect("square image");
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
