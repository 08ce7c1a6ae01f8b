//! `mimo generate`: text generation with a LLaMA/Vicuna model directory and an optional
//! peft LoRA adapter, streaming the answer.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use mimo_core::config::ConfigError;
use mimo_core::llm::{ChatModel, ChatOptions, GenerationConfig};
use mimo_core::loader::LoadOptions;
use mimo_core::tokenizer::MimoTokenizer;
use mimo_core::tokenizer::conversation::Template;

use crate::backend::{self, Backend};

/// Arguments of `mimo generate`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
The model directory is an HF LLaMA/Vicuna export: config.json, the weights
(model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin; read in
the --dtype, f32 by default) and tokenizer.json. MIMO's tokens <p>, </p>, <SEG>, <image>, <im_start>,
<im_end> are added to the tokenizer when missing; if the model has fewer embedding rows
than the tokenizer has tokens, the rows are added as the mean of the existing ones.

Decoding is greedy unless --temperature is above 0; then tokens are sampled after
temperature, --top-k and --top-p (transformers' order; the repetition penalty applies in
both modes). With one prompt the answer streams to stdout as it is generated; with several
(repeat --prompt) they run as one left-padded batch and are printed in order.

Example (the repository's tiny random model, so the text is gibberish):
  mimo generate --model mimo-core/fixtures/llm/chat --prompt \"Where is the liver?\" --max-new-tokens 12")]
pub struct GenerateArgs {
    /// Model directory (config.json, weights, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// peft LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Merge the adapter into the weights before generating (same output, faster).
    #[arg(long, requires = "adapter")]
    merge: bool,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The question; repeat for a batch.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Conversation template around each prompt: vicuna_v1, llava_v1, or none (raw text).
    #[arg(long, default_value = "vicuna_v1")]
    template: String,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens reaching this probability mass (1: all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalty for tokens already in the sequence (1: none; transformers' rule).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Stop when the answer contains this text (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight and activation dtype: f32, or bf16/f16 (how 7B models run on a GPU; a bf16
    /// checkpoint then loads without an f32 copy).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Runs `mimo generate`.
pub fn run(args: GenerateArgs) -> Result<(), String> {
    let template = match args.template.as_str() {
        "none" => None,
        name => Some(Template::by_name(name).ok_or_else(|| {
            format!("unknown --template `{name}`: use vicuna_v1, llava_v1 or none")
        })?),
    };
    if !args.model.is_dir() {
        return Err(format!(
            "--model {}: not a directory (expected config.json, weights and tokenizer.json)",
            args.model.display()
        ));
    }
    let dtype = backend::parse_dtype(&args.dtype)?;
    // The tokenizer is read first (cheap) so that flags are checked before the weights load.
    let tok_path = args.tokenizer.clone().unwrap_or_else(|| args.model.clone());
    let tok = MimoTokenizer::from_file(&tok_path).map_err(|e| e.to_string())?;
    let ids = tok.ids();
    let sample = args.temperature > 0.0;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        do_sample: sample,
        temperature: if sample { args.temperature } else { 1.0 },
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        eos_token_id: vec![ids.eos],
        pad_token_id: ids.pad(),
        stop_strings: args.stop.clone(),
        seed: args.seed,
    };
    cfg.validate().map_err(|e| match &e {
        ConfigError::Invalid { field, .. } => {
            format!("{e} (command-line flag --{})", flag_of(field))
        }
        _ => e.to_string(),
    })?;
    if args.temperature < 0.0 {
        return Err("--temperature must be 0 (greedy) or positive".into());
    }

    let device = backend::device();
    let options = ChatOptions {
        load: LoadOptions::new(&device).with_dtype(dtype),
        tokenizer: args.tokenizer.clone(),
        merge_adapter: args.merge,
        ..ChatOptions::new(&device)
    };
    backend::announce_load(&mimo_core::llm::load::weights_file(&args.model), "LLaMA");
    let (chat, report) = ChatModel::<Backend>::open(&args.model, args.adapter.as_deref(), options)
        .map_err(|e| e.to_string())?;
    backend::note_unused(&report.base.unused);
    if let Some((rows, size)) = report.added_rows {
        eprintln!(
            "note: the tokenizer has {size} tokens, the model {rows} embedding rows: adding {} \
             rows (mean of the existing ones) for MIMO's added tokens",
            size - rows
        );
    }
    if let (Some(dir), Some((lora, r))) = (&args.adapter, &report.adapter) {
        eprintln!(
            "adapter {}: r {}, alpha {}, {} tensors{}",
            dir.display(),
            lora.r,
            lora.lora_alpha,
            r.applied,
            if args.merge { ", merged" } else { "" }
        );
        backend::note_unused(&r.unused);
    }

    let stream = args.prompt.len() == 1;
    let mut stdout = std::io::stdout();
    let out = chat
        .generate(template.as_ref(), &args.prompt, &cfg, &mut |_, text| {
            if stream {
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
        })
        .map_err(|e| e.to_string())?;
    if stream {
        println!();
    } else {
        for (i, (p, o)) in args.prompt.iter().zip(&out).enumerate() {
            println!("### {} {p}\n{}\n", i + 1, o.text);
        }
    }
    for (i, o) in out.iter().enumerate() {
        eprintln!(
            "[{}] {} tokens, finished by {:?}",
            i + 1,
            o.tokens.len(),
            o.finish
        );
    }
    Ok(())
}

/// The CLI flag of a `GenerationConfig` field.
fn flag_of(field: &str) -> String {
    match field {
        "stop_strings" => "stop".into(),
        f => f.replace('_', "-"),
    }
}
