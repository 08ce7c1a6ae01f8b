//! `mimo bench`: component timings on this machine, optionally next to PyTorch's.

use std::path::PathBuf;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::tensor::DType;
use clap::{Args, ValueEnum};
use mimo_bench::perf::{SamTimings, bench_clip, bench_llm, bench_llm_backward, bench_sam};
use mimo_core::clip::ClipVisionConfig;
use mimo_core::config::ModelConfig;
use mimo_core::llm::LlamaConfig;
use mimo_core::sam::SamConfig;

use crate::backend::{self, Backend};

mod load;

/// What to benchmark.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Component {
    /// Segment Anything: image encoder and prompt decoding.
    Sam,
    /// CLIP vision tower: one full forward.
    Clip,
    /// LLaMA language model: prompt forward, forward + backward, KV-cache decoding.
    Llm,
    /// Data pipeline: dataset build (records/s) and batcher (batches/s).
    Data,
    /// MIMO: one training step (forward, backward, AdamW) of a model file — its time and, on
    /// the CPU backend, the memory of each stage (counted by the allocator: weights, what the
    /// forward keeps for the backward, peaks) — or the parity of the tiny fixture on this
    /// backend (`--check-fixture`).
    Mimo,
    /// Checkpoint loading: peak memory and time of loading a bf16 LLaMA checkpoint (written
    /// first), or a SAM/CLIP file given with `--checkpoint`, as f32 and as bf16 (each in a
    /// fresh process).
    Load,
}

/// Arguments of `mimo bench`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Weights are random (timing does not depend on them). To compare with PyTorch in the same
session, run scripts/bench_sam.sh, which measures segment_anything first and passes its
figures here with --reference.")]
pub struct BenchArgs {
    /// Component to time.
    #[arg(value_enum)]
    component: Component,
    /// Model: a preset (SAM: vit_b, vit_l, vit_h; CLIP: vit_l14, vit_l14_336, vit_h14; LLM:
    /// tiny, vicuna_7b_v1_5, ...) or a config file (RON; for the LLM an HF config.json, e.g.
    /// configs/llm/mid_512x4.json). Default: the tiny test model of the component.
    #[arg(long)]
    model: Option<String>,
    /// Timed runs of the image encoder (the SAM decoder runs 5x as many).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// JSON with PyTorch's figures for this model (`{"encoder_ms": .., "decoder_ms": ..}` for
    /// SAM, `{"forward_ms": ..}` for CLIP), as written by scripts/reference/*_bench.py;
    /// prints the ratio.
    #[arg(long, value_name = "FILE.json")]
    reference: Option<PathBuf>,
    /// LLM: prompt length in tokens (forward and backward figures).
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    /// LLM: tokens to decode for the tokens/s figure.
    #[arg(long, default_value_t = 16)]
    decode_tokens: usize,
    /// Weight and activation dtype (f32, bf16, f16) of the LLM, of MIMO, and of SAM's image
    /// encoder (SAM in bf16/f16: encoder only); bf16 is how the 7B models run on a GPU.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// MIMO: mixed precision as training runs it with `frozen_dtype` — only the frozen
    /// towers and LLM base in --dtype, what trains in f32.
    #[arg(long)]
    mixed: bool,
    /// MIMO: which rows of `embed_tokens`/`lm_head` train: `whole` (LISA: the whole
    /// matrices; the default), `new` (only MIMO's added tokens, as `new_token_rows_only`
    /// trains) or `none`.
    #[arg(long, value_name = "whole|new|none")]
    token_rows: Option<String>,
    /// MIMO: activation checkpointing as training runs it (`activation_checkpointing`):
    /// `balanced` (burn's BalancedCheckpointing; the default when no value is given) or
    /// `decoder_layers` (each LLM decoder layer recomputed in the backward pass).
    #[arg(long, value_name = "balanced|decoder_layers", num_args = 0..=1, default_missing_value = "balanced")]
    checkpointing: Option<String>,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE.json")]
    json: Option<PathBuf>,
    /// MIMO: images per batch of the synthetic training batch.
    #[arg(long, default_value_t = 1)]
    images: usize,
    /// MIMO: side of the synthetic images (original pixels).
    #[arg(long, default_value_t = 512)]
    image_size: usize,
    /// MIMO: text tokens per conversation before the image placeholder is expanded.
    #[arg(long, default_value_t = 128)]
    text_len: usize,
    /// MIMO: time the tiny fixture's batch (mimo-core/fixtures/mimo, the same batch
    /// scripts/reference/mimo_bench.py times in PyTorch) instead of a synthetic one.
    #[arg(long)]
    fixture_batch: bool,
    /// MIMO: run the tiny fixture on this backend and compare its losses and masks with
    /// PyTorch's (exit status 1 when a value is off).
    #[arg(long)]
    check_fixture: bool,
    /// LLM: skip the forward + backward figure.
    #[arg(long)]
    no_backward: bool,
    /// Data: dataset description to build (default: the quickstart phantoms).
    #[arg(long, default_value = "configs/data/quickstart.ron")]
    dataset: PathBuf,
    /// Data: instead of --dataset, write this many synthetic CT volumes as NIfTI (not timed)
    /// and time building all four perspectives from them (the NIfTI path at paper sizes).
    #[arg(long)]
    synthetic_nifti: Option<usize>,
    /// Data: side of the synthetic volumes' slices (512 is typical for CT).
    #[arg(long, default_value_t = 512)]
    nifti_size: usize,
    /// Data: slices per synthetic volume.
    #[arg(long, default_value_t = 64)]
    nifti_depth: usize,
    /// Data: tokenizer.json folder or file.
    #[arg(long, default_value = "mimo-core/fixtures/tokenizer")]
    tokenizer: PathBuf,
    /// Data: samples per batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Data: CLIP input side (224 for ViT-L/14, 336 for ViT-L/14-336, 224 for ViT-H/14).
    #[arg(long, default_value_t = 224)]
    clip_size: usize,
    /// Data: SAM input side (1024 for the released SAMs).
    #[arg(long, default_value_t = 1024)]
    sam_size: usize,
    /// Load: a SAM (`segment_anything` `.pth`/`.safetensors`) or CLIP (HF or open_clip
    /// `.bin`/`.pth`/`.safetensors`) checkpoint to load instead of the LLaMA one `bench load`
    /// writes; `--model` names its config (a SAM or CLIP preset or config file, e.g. vit_h,
    /// vit_h14).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Load: measure one load of this LLaMA model directory or `--checkpoint` file (the
    /// child process of `bench load`).
    #[arg(long, hide = true, value_name = "PATH")]
    measure_load: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct LlmReference {
    forward_ms: f64,
    backward_ms: Option<f64>,
    decode_ms_per_token: f64,
}

#[derive(serde::Deserialize)]
struct SamReference {
    encoder_ms: f64,
    decoder_ms: f64,
}

#[derive(serde::Deserialize)]
struct ClipReference {
    forward_ms: f64,
}

fn reference<T: serde::de::DeserializeOwned>(path: &Option<PathBuf>) -> Result<Option<T>, String> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(Some(
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?,
            ))
        }
        None => Ok(None),
    }
}

fn parse_dtype(s: &str) -> Result<Option<DType>, String> {
    Ok(Some(crate::backend::parse_dtype(s)?).filter(|d| *d != DType::F32))
}

fn write_json<T: serde::Serialize>(path: &Option<PathBuf>, value: &T) -> Result<(), String> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        mimo_core::fsutil::write_atomic(p, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct MimoReference {
    forward_ms: f64,
    forward_backward_ms: f64,
    /// Forward + backward + AdamW (older reference files lack it).
    #[serde(default)]
    step_ms: Option<f64>,
}

fn run_mimo(args: &BenchArgs) -> Result<(), String> {
    if let Some(r) = args.token_rows.as_deref()
        && !["whole", "new", "none"].contains(&r)
    {
        return Err(format!(
            "unknown --token-rows `{r}`: use whole, new or none"
        ));
    }
    if args.token_rows.as_deref() == Some("new") && (args.fixture_batch || args.check_fixture) {
        return Err(
            "--token-rows new needs a model file (not --fixture-batch or --check-fixture)".into(),
        );
    }
    let device = backend::device();
    if args.check_fixture {
        let fixtures = std::path::Path::new("mimo-core/fixtures");
        let mut all = Vec::new();
        let mut bad = 0;
        // f32 matmuls run in TF32 on GPUs (see `check_mimo_fixture`): measured on an H200,
        // up to 7e-4 on the losses and 1.9e-3 on mask logits, against 1e-4 / 2e-4 on the CPU.
        let scale = if backend::NAME.starts_with("flex") {
            1.0
        } else {
            20.0
        };
        for aligner in [true, false] {
            let rows = mimo_bench::check::check_mimo_fixture::<Backend>(
                fixtures, aligner, scale, &device,
            )?;
            for r in &rows {
                let ok = r.max_abs_err <= r.tolerance;
                bad += usize::from(!ok);
                println!(
                    "{:<22} max abs err {:.3e} (tol {:.0e}) {}",
                    r.name,
                    r.max_abs_err,
                    r.tolerance,
                    if ok { "ok" } else { "OFF" }
                );
            }
            all.extend(rows);
        }
        write_json(&args.json, &all)?;
        return if bad == 0 {
            println!(
                "tiny MIMO on {}: every value within tolerance of PyTorch",
                backend::NAME
            );
            Ok(())
        } else {
            Err(format!(
                "{bad} value(s) off the PyTorch reference on {}",
                backend::NAME
            ))
        };
    }
    match args.checkpointing.as_deref() {
        Some("balanced") => {
            time_mimo::<burn::backend::Autodiff<Backend, BalancedCheckpointing>>(args)
        }
        None | Some("decoder_layers") => time_mimo::<burn::backend::Autodiff<Backend>>(args),
        Some(other) => Err(format!(
            "--checkpointing {other}: use `balanced` or `decoder_layers`"
        )),
    }
}

/// `mimo bench mimo` (timings) on the autodiff backend `Ad`.
fn time_mimo<Ad>(args: &BenchArgs) -> Result<(), String>
where
    Ad: burn::tensor::backend::AutodiffBackend<
            InnerBackend = Backend,
            Device = burn::tensor::Device<Backend>,
        >,
{
    let device = backend::device();
    let dtype = parse_dtype(&args.dtype)?;
    let reference: Option<MimoReference> = reference(&args.reference)?;
    let mut base_vocab = None;
    let (model, input, plain, what) = if args.fixture_batch {
        let fixtures = std::path::Path::new("mimo-core/fixtures");
        let (model, input) =
            mimo_bench::check::fixture_model_and_input::<Ad>(fixtures, true, &device)?;
        let (_, plain) =
            mimo_bench::check::fixture_model_and_input::<Backend>(fixtures, true, &device)?;
        (
            model,
            input,
            plain,
            "the tiny fixture's batch (2 images, 2 rows)".to_string(),
        )
    } else {
        let path = PathBuf::from(
            args.model
                .clone()
                .unwrap_or_else(|| "configs/mimo/mimo-tiny.ron".into()),
        );
        let cfg = mimo_core::mimo::MimoConfig::load(&path).map_err(|e| e.to_string())?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let model_cfg = cfg.model_config(base, None).map_err(|e| e.to_string())?;
        base_vocab = Some(cfg.base_vocab_size(base).map_err(|e| e.to_string())?);
        eprintln!(
            "building `{}` (random weights) on {} ...",
            path.display(),
            backend::NAME
        );
        let model = model_cfg.init::<Ad>(&device).map_err(|e| e.to_string())?;
        let s = args.image_size;
        let input = mimo_bench::perf::synthetic_mimo_input::<Ad>(
            &model_cfg,
            args.images,
            [s, s],
            args.text_len,
            &device,
        );
        let plain = mimo_bench::perf::synthetic_mimo_input::<Backend>(
            &model_cfg,
            args.images,
            [s, s],
            args.text_len,
            &device,
        );
        let what = format!(
            "`{}`: {} image(s) of {s}x{s}, {} text tokens",
            path.display(),
            args.images,
            args.text_len
        );
        (model, input, plain, what)
    };
    // The trainable set as `mimo train` sets it: token rows first, then the dtypes.
    let model = match args.token_rows.as_deref() {
        None => model,
        Some("whole") => model.with_trainable_set(true),
        Some("new") => {
            let first =
                base_vocab.ok_or("--token-rows new needs a model file (not --fixture-batch)")?;
            model
                .with_new_token_rows_trainable(first)
                .map_err(|e| format!("--token-rows new: {e}"))?
        }
        Some(_) => model.with_trainable_set(false),
    };
    let model = match dtype {
        Some(d) if args.mixed => model.with_frozen_dtype(d),
        Some(d) => model.cast(d),
        None => model,
    };
    eprintln!(
        "timing a MIMO training step on {} in {}{}{}{}: {what} ...",
        backend::NAME,
        args.dtype,
        if args.mixed {
            " (frozen parts; trained parts in f32)"
        } else {
            ""
        },
        match args.token_rows.as_deref() {
            Some(r) => format!(", token rows trained: {r}"),
            None => String::new(),
        },
        match args.checkpointing.as_deref() {
            Some("decoder_layers") => ", decoder layers recomputed in the backward",
            Some(_) => ", activation checkpointing (burn's balanced)",
            None => "",
        }
    );
    // On the CPU backend tensors are heap buffers: count them.
    let meter = crate::malloc::HeapCounter;
    let meter = backend::NAME
        .starts_with("flex")
        .then_some(&meter as &dyn mimo_bench::perf::HeapMeter);
    let recompute = args.checkpointing.as_deref() == Some("decoder_layers");
    let t = mimo_bench::perf::bench_mimo_step(
        model, input, plain, args.runs, recompute, meter, &device,
    )?;
    println!(
        "MIMO training step: LLM sequence {} tokens, {} trainable parameters",
        t.seq_len, t.trainable_params
    );
    println!("stage              mimo median (min)        runs");
    for (name, x) in [
        ("forward", t.forward),
        ("forward+backward", t.forward_backward),
        ("step (+AdamW)", t.step),
    ] {
        println!(
            "{name:<17} {:>9.1} ms ({:>8.1})  {:>4}",
            x.median_ms, x.min_ms, x.runs
        );
    }
    if let Some(m) = t.memory {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        println!("heap memory (tensors on the CPU backend), MiB:");
        println!("  model and batch          {:>10.1}", mib(m.before_bytes));
        for (name, b) in [
            ("forward, peak", m.forward_peak_bytes),
            ("kept for the backward", m.graph_bytes),
            ("forward+backward, peak", m.forward_backward_peak_bytes),
            ("step (+AdamW), peak", m.step_peak_bytes),
            ("after the step (AdamW)", m.after_step_bytes),
        ] {
            println!("  {name:<24} +{:>9.1}", mib(b));
        }
    }
    if let Some(r) = reference {
        println!(
            "PyTorch: forward {:.1} ms, forward+backward {:.1} ms; ratio mimo/PyTorch: forward {:.2}x, forward+backward {:.2}x",
            r.forward_ms,
            r.forward_backward_ms,
            t.forward.median_ms / r.forward_ms,
            t.forward_backward.median_ms / r.forward_backward_ms
        );
        if let Some(step) = r.step_ms {
            println!(
                "PyTorch training step (+AdamW) {step:.1} ms: {:.2} steps/s, mimo {:.2} steps/s; ratio mimo/PyTorch time {:.2}x",
                1e3 / step,
                1e3 / t.step.median_ms,
                t.step.median_ms / step
            );
        }
    }
    write_json(&args.json, &t)
}

/// Runs `mimo bench`.
pub fn run(args: BenchArgs) -> Result<(), String> {
    match args.component {
        Component::Sam => run_sam(&args),
        Component::Clip => run_clip(&args),
        Component::Llm => run_llm(&args),
        Component::Data => run_data(&args),
        Component::Mimo => run_mimo(&args),
        Component::Load => load::run_load(&args),
    }
}

fn run_data(args: &BenchArgs) -> Result<(), String> {
    use mimo_core::tokenizer::MimoTokenizer;
    use mimo_core::tokenizer::conversation::Template;
    use mimo_data::batch::MimoBatcher;
    use mimo_data::build::DatasetConfig;
    let scratch = std::env::temp_dir().join(format!("mimo-bench-nifti-{}", std::process::id()));
    let (cfg, what) = match args.synthetic_nifti {
        Some(n) => {
            use mimo_data::build::{Source, Splits};
            use mimo_data::nifti_source::{Intensity, SliceAxis};
            use mimo_data::record::Perspective;
            eprintln!(
                "writing {n} synthetic CT volume(s) of {0}x{0}x{1} as NIfTI (not timed) ...",
                args.nifti_size, args.nifti_depth
            );
            let labels = mimo_data::phantom::write_ct_volumes(
                &scratch,
                n,
                args.nifti_size,
                args.nifti_depth,
                1,
            )?;
            let cfg = DatasetConfig {
                name: "synthetic-nifti".into(),
                seed: 1,
                sources: vec![Source::Nifti {
                    name: "ct".into(),
                    images: scratch.join("images"),
                    masks: scratch.join("masks"),
                    modality: "CT".into(),
                    labels,
                    threshold: None,
                    axis: SliceAxis::Axial,
                    intensity: Intensity::CtAbdomen,
                    empty_share: 0.0,
                }],
                perspectives: vec![
                    Perspective::P1,
                    Perspective::P2,
                    Perspective::P3,
                    Perspective::P4,
                ],
                splits: Splits::default(),
                box_jitter: 0.1,
                point_share: 0.5,
                point_mode: mimo_data::prompts::PointMode::Interior,
                knowledge: None,
                qa_endpoint: None,
                workers: None,
            };
            let what = format!(
                "{n} NIfTI volume(s) of {0}x{0}x{1}",
                args.nifti_size, args.nifti_depth
            );
            (cfg, what)
        }
        None => (
            DatasetConfig::load(&args.dataset).map_err(|e| e.to_string())?,
            format!("`{}`", args.dataset.display()),
        ),
    };
    // MIMO's towers (CLIP ViT-L/14-336, SAM ViT-H) at the sizes asked for.
    let batcher = MimoBatcher {
        clip_size: args.clip_size,
        sam_size: args.sam_size,
        ..MimoBatcher::for_model(
            MimoTokenizer::from_file(&args.tokenizer).map_err(|e| e.to_string())?,
            Template::vicuna_v1(),
            &ClipVisionConfig::vit_l14_336(),
            &SamConfig::vit_h(),
            257,
        )
    };
    let out = std::env::temp_dir().join(format!("mimo-bench-data-{}", std::process::id()));
    eprintln!(
        "timing the data pipeline on {what}: build, then batches of {} at CLIP {} px / SAM {} px ...",
        args.batch_size, args.clip_size, args.sam_size
    );
    let t = mimo_bench::perf::bench_data::<Backend>(
        &cfg,
        &out,
        &batcher,
        args.batch_size,
        args.runs,
        &backend::device(),
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&scratch);
    let t = t?;
    println!(
        "dataset build   {:>9.1} records/s, {:.1} images/s ({} records from {} images)",
        t.build_records_per_s, t.build_images_per_s, t.records, t.images
    );
    println!(
        "batch of {:>3}    {:>9.1} ms median ({:.1} min) = {:.1} samples/s on one thread",
        t.batch_size,
        t.batch.median_ms,
        t.batch.min_ms,
        t.batch_size as f64 / (t.batch.median_ms / 1e3)
    );
    Ok(())
}

fn run_llm(args: &BenchArgs) -> Result<(), String> {
    let model = args.model.clone().unwrap_or_else(|| "tiny".into());
    let config = match LlamaConfig::preset(&model) {
        Some(c) => c,
        None => LlamaConfig::load(&model).map_err(|e| {
            format!(
                "{e} (--model takes a preset: {} or an HF config.json / model directory)",
                LlamaConfig::PRESETS.join(", ")
            )
        })?,
    };
    let dtype = parse_dtype(&args.dtype)?;
    if args.prompt_len == 0 || args.prompt_len > config.max_position_embeddings {
        return Err(format!(
            "--prompt-len must be in 1..={} (max_position_embeddings)",
            config.max_position_embeddings
        ));
    }
    let reference: Option<LlmReference> = reference(&args.reference)?;
    eprintln!(
        "timing LLaMA `{model}` ({} layers, hidden {}) on {} in {}, prompt {} tokens ...",
        config.num_hidden_layers,
        config.hidden_size,
        backend::NAME,
        args.dtype,
        args.prompt_len
    );
    let device = backend::device();
    let t = bench_llm::<Backend>(
        &config,
        args.prompt_len,
        args.decode_tokens,
        args.runs,
        dtype,
        &device,
    );
    let backward = if args.no_backward || dtype.is_some() {
        None
    } else {
        Some(bench_llm_backward::<burn::backend::Autodiff<Backend>>(
            &config,
            args.prompt_len,
            args.runs,
            &device,
        ))
    };
    let tps = |ms: f64, tokens: usize| tokens as f64 / (ms / 1e3);
    println!("stage              mimo median (min)         tokens/s   runs");
    println!(
        "forward  {:>4} tok  {:>9.2} ms ({:>8.2})  {:>9.1}  {:>4}",
        t.prompt_len,
        t.forward.median_ms,
        t.forward.min_ms,
        tps(t.forward.median_ms, t.prompt_len),
        t.forward.runs
    );
    if let Some(b) = backward {
        println!(
            "fwd+bwd  {:>4} tok  {:>9.2} ms ({:>8.2})  {:>9.1}  {:>4}",
            t.prompt_len,
            b.median_ms,
            b.min_ms,
            tps(b.median_ms, t.prompt_len),
            b.runs
        );
    }
    println!(
        "decode   {:>4} tok  {:>9.2} ms/token          {:>9.1}",
        t.decode_tokens,
        t.decode_ms_per_token,
        tps(t.decode_ms_per_token, 1)
    );
    if let Some(r) = reference {
        let mut line = format!(
            "PyTorch: forward {:.2} ms, decode {:.2} ms/token",
            r.forward_ms, r.decode_ms_per_token
        );
        if let Some(b) = r.backward_ms {
            line.push_str(&format!(", fwd+bwd {b:.2} ms"));
        }
        line.push_str(&format!(
            "; ratio mimo/PyTorch: forward {:.2}x, decode {:.2}x",
            t.forward.median_ms / r.forward_ms,
            t.decode_ms_per_token / r.decode_ms_per_token
        ));
        if let (Some(b), Some(rb)) = (backward, r.backward_ms) {
            line.push_str(&format!(", fwd+bwd {:.2}x", b.median_ms / rb));
        }
        println!("{line}");
    }
    write_json(
        &args.json,
        &serde_json::json!({"llm": t, "forward_backward": backward}),
    )
}

fn run_clip(args: &BenchArgs) -> Result<(), String> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| "mimo-core/fixtures/clip/hf_tiny.ron".into());
    let config = ClipVisionConfig::from_name_or_file(&model).map_err(|e| e.to_string())?;
    let reference: Option<ClipReference> = reference(&args.reference)?;
    eprintln!("timing CLIP `{model}` on {} ...", backend::NAME);
    let t = bench_clip::<Backend>(&config, args.runs, &backend::device());
    println!("component        mimo median (min)        runs");
    println!(
        "vision forward   {:>9.2} ms ({:>8.2})  {:>4}",
        t.median_ms, t.min_ms, t.runs
    );
    if let Some(r) = reference {
        println!(
            "PyTorch: forward {:.2} ms; ratio mimo/PyTorch: {:.2}x",
            r.forward_ms,
            t.median_ms / r.forward_ms
        );
    }
    Ok(())
}

fn run_sam(args: &BenchArgs) -> Result<(), String> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| "mimo-core/fixtures/sam/tiny_a.ron".into());
    let config = SamConfig::from_name_or_file(&model).map_err(|e| e.to_string())?;
    let reference: Option<SamReference> = reference(&args.reference)?;
    if let Some(dtype) = parse_dtype(&args.dtype)? {
        eprintln!(
            "timing SAM `{model}` image encoder on {} in {} ...",
            backend::NAME,
            args.dtype
        );
        let t = mimo_bench::perf::bench_sam_encoder::<Backend>(
            &config,
            dtype,
            args.runs,
            &backend::device(),
        );
        println!(
            "image encoder ({})  {:>9.1} ms ({:>8.1})  {:>4}",
            args.dtype, t.median_ms, t.min_ms, t.runs
        );
        return write_json(&args.json, &t);
    }
    eprintln!("timing SAM `{model}` on {} ...", backend::NAME);
    let t: SamTimings = bench_sam::<Backend>(&config, args.runs, &backend::device());
    println!("component        mimo median (min)        runs");
    println!(
        "image encoder    {:>9.1} ms ({:>8.1})  {:>4}",
        t.encoder.median_ms, t.encoder.min_ms, t.encoder.runs
    );
    println!(
        "prompt+decoder   {:>9.2} ms ({:>8.2})  {:>4}",
        t.decoder.median_ms, t.decoder.min_ms, t.decoder.runs
    );
    if let Some(r) = reference {
        println!(
            "PyTorch: encoder {:.1} ms, decoder {:.2} ms; ratio mimo/PyTorch: encoder {:.2}x, decoder {:.2}x",
            r.encoder_ms,
            r.decoder_ms,
            t.encoder.median_ms / r.encoder_ms,
            t.decoder.median_ms / r.decoder_ms
        );
    }
    write_json(&args.json, &t)
}
