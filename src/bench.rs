//! `mimo bench`: component timings on this machine, optionally next to PyTorch's.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mimo_bench::perf::{SamTimings, bench_clip, bench_sam};
use mimo_core::clip::ClipVisionConfig;
use mimo_core::config::ModelConfig;
use mimo_core::sam::SamConfig;

use crate::backend::{self, Backend};

/// What to benchmark.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Component {
    /// Segment Anything: image encoder and prompt decoding.
    Sam,
    /// CLIP vision tower: one full forward.
    Clip,
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
    /// Model: a preset (SAM: vit_b, vit_l, vit_h; CLIP: vit_l14, vit_l14_336, vit_h14) or a
    /// RON config file. Default: the tiny test model of the component.
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

/// Runs `mimo bench`.
pub fn run(args: BenchArgs) -> Result<(), String> {
    match args.component {
        Component::Sam => run_sam(&args),
        Component::Clip => run_clip(&args),
    }
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
    Ok(())
}
