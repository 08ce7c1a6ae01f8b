//! `mimo bench load`: peak memory and time of loading a checkpoint, each load in a fresh
//! process.

use std::path::PathBuf;

use mimo_core::clip::ClipVisionConfig;
use mimo_core::config::ModelConfig;

use super::{BenchArgs, write_json};
use crate::backend::{self, Backend};

/// The default model of `bench load`: a LLaMA of 0.54 B parameters (1.07 GB in bf16), big
/// enough that the weights dominate the process's memory.
const LOAD_MODEL: &str = r#"{"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5504,
  "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 16,
  "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "hidden_act": "silu"}"#;

/// `(VmRSS, VmHWM, RssAnon)` of this process in bytes (Linux; zeros elsewhere).
fn memory() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LoadFigures {
    dtype: String,
    params: u64,
    file_bytes: u64,
    rss_before: u64,
    peak_rss: u64,
    rss_anon_after: u64,
    seconds: f64,
}

pub(super) fn run_load(args: &BenchArgs) -> Result<(), String> {
    use burn::tensor::backend::Backend as _;
    use mimo_core::llm::{LlamaConfig, load::DIALECT, load_llama};
    use mimo_core::loader::LoadOptions;
    let device = backend::device();
    if let Some(path) = &args.measure_load {
        // The child: one load, then its figures as one JSON line.
        use burn::module::Module as _;
        let dtype = crate::backend::parse_dtype(&args.dtype)?;
        let options = || LoadOptions::new(&device).with_dtype(dtype);
        let (rss_before, _, _) = memory();
        let started = std::time::Instant::now();
        // Taken while the loaded model is still alive.
        let figures = |params: usize, file: &std::path::Path| -> Result<LoadFigures, String> {
            Backend::sync(&device).map_err(|e| format!("backend error: {e:?}"))?;
            // As every CLI command does once its model is loaded.
            crate::malloc::release_free_memory();
            let seconds = started.elapsed().as_secs_f64();
            let (_, peak_rss, rss_anon_after) = memory();
            Ok(LoadFigures {
                dtype: args.dtype.clone(),
                params: params as u64,
                file_bytes: std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
                rss_before,
                peak_rss,
                rss_anon_after,
                seconds,
            })
        };
        let figures = match &args.model {
            // A SAM or CLIP checkpoint (`--checkpoint`), its config named by `--model`.
            Some(m) => match mimo_core::sam::SamConfig::from_name_or_file(m) {
                Ok(config) => {
                    let (model, _) =
                        mimo_core::sam::load::load_sam::<Backend>(&config, path, options())
                            .map_err(|e| e.to_string())?;
                    figures(model.num_params(), path)?
                }
                Err(sam) => {
                    let config = ClipVisionConfig::from_name_or_file(m).map_err(|clip| {
                        format!("--model `{m}` is neither a SAM ({sam}) nor a CLIP ({clip}) config")
                    })?;
                    let (model, _) =
                        mimo_core::clip::load::load_clip::<Backend>(&config, path, options())
                            .map_err(|e| e.to_string())?;
                    figures(model.num_params(), path)?
                }
            },
            None => {
                let config = LlamaConfig::load(path).map_err(|e| e.to_string())?;
                let (model, _) =
                    load_llama::<Backend>(&config, path, options()).map_err(|e| e.to_string())?;
                let params: usize = mimo_core::loader::file_params(&model, &DIALECT)
                    .iter()
                    .map(|p| p.shape.iter().product::<usize>())
                    .sum();
                figures(params, &path.join("model.safetensors"))?
            }
        };
        println!(
            "{}",
            serde_json::to_string(&figures).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if let Some(file) = &args.checkpoint {
        let Some(model) = &args.model else {
            return Err(
                "--checkpoint needs --model: the SAM or CLIP config of the file (e.g. vit_h, vit_h14)"
                    .into(),
            );
        };
        if !file.is_file() {
            return Err(format!("--checkpoint {}: no such file", file.display()));
        }
        eprintln!(
            "loading {} ({:.2} GB) as `{model}` in fresh processes ...",
            file.display(),
            std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) as f64 / 1e9
        );
        let rows = ["f32", "bf16"]
            .into_iter()
            .map(|dtype| measure_load_child(dtype, file, Some(model)))
            .collect::<Result<Vec<_>, _>>()?;
        return print_load_rows(&args.json, rows);
    }
    let config_text = match &args.model {
        Some(m) => {
            let config = LlamaConfig::load(m).map_err(|e| e.to_string())?;
            serde_json::to_string(&config).map_err(|e| e.to_string())?
        }
        None => LOAD_MODEL.to_string(),
    };
    let config = LlamaConfig::from_hf_json(&config_text)?;
    // A bf16 checkpoint as HF ships Vicuna, written tensor by tensor from a cheap generator.
    let dir = std::env::temp_dir().join(format!("mimo-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("config.json"), &config_text)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let params = mimo_core::loader::file_params(&config.init::<Backend>(&device), &DIALECT);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let bytes = (0..n)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // bf16 of a value in [-0.05, 0.05)
                    let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                    ((v.to_bits() >> 16) as u16).to_le_bytes()
                })
                .collect();
            (p.key.clone(), p.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let file = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &file).map_err(|e| e.to_string())?;
    drop(tensors);
    eprintln!(
        "wrote a bf16 checkpoint of {:.2} B parameters ({:.2} GB); loading it in fresh processes ...",
        params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum::<usize>() as f64
            / 1e9,
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / 1e9
    );
    let rows = ["f32", "bf16"]
        .into_iter()
        .map(|dtype| measure_load_child(dtype, &dir, None))
        .collect::<Result<Vec<_>, _>>();
    let _ = std::fs::remove_dir_all(&dir);
    print_load_rows(&args.json, rows?)
}

/// One load in a fresh `mimo bench load --measure-load` process: its figures.
fn measure_load_child(
    dtype: &str,
    path: &std::path::Path,
    model: Option<&str>,
) -> Result<LoadFigures, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(&exe);
    command.args(["bench", "load", "--dtype", dtype]);
    if let Some(m) = model {
        command.args(["--model", m]);
    }
    let out = command
        .arg("--measure-load")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "loading as {dtype} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).map_err(|e| e.to_string())
}

/// Prints the f32 and bf16 loads and their ratio, and writes them as JSON with `--json`.
fn print_load_rows(json: &Option<PathBuf>, rows: Vec<LoadFigures>) -> Result<(), String> {
    let gb = |b: u64| b as f64 / 1e9;
    for f in &rows {
        println!(
            "load as {:<4}: {:.2} s, peak RSS {:.2} GB ({:.2} GB above the {:.2} GB before loading), \
             anonymous memory after {:.2} GB; weights in {}: {:.2} GB; file {:.2} GB",
            f.dtype,
            f.seconds,
            gb(f.peak_rss),
            gb(f.peak_rss.saturating_sub(f.rss_before)),
            gb(f.rss_before),
            gb(f.rss_anon_after),
            f.dtype,
            gb(f.params * if f.dtype == "f32" { 4 } else { 2 }),
            gb(f.file_bytes),
        );
    }
    if let [a, b] = rows.as_slice() {
        println!(
            "bf16 loading needs {:.2}x the memory of f32 loading (peak RSS above baseline), on {}",
            b.peak_rss.saturating_sub(b.rss_before) as f64
                / a.peak_rss.saturating_sub(a.rss_before).max(1) as f64,
            backend::NAME
        );
    }
    write_json(json, &rows)
}
