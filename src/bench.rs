//! `mimo bench`: component timings on this machine, optionally next to PyTorch's.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mimo_bench::perf::{SamTimings, bench_sam};
use mimo_core::sam::SamConfig;

use crate::backend::{self, Backend};

/// What to benchmark.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Component {
    /// Segment Anything: image encoder and prompt decoding.
    Sam,
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
    /// Model: vit_b, vit_l, vit_h or a SamConfig RON file.
    #[arg(long, default_value = "mimo-core/fixtures/sam/tiny_a.ron")]
    model: String,
    /// Timed runs of the image encoder (the decoder runs 5x as many).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// JSON with PyTorch's figures for this model, `{"encoder_ms": .., "decoder_ms": ..}`,
    /// as written by scripts/reference/sam_bench.py; prints the ratio.
    #[arg(long, value_name = "FILE.json")]
    reference: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Reference {
    encoder_ms: f64,
    decoder_ms: f64,
}

/// Runs `mimo bench`.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let Component::Sam = args.component;
    let config = SamConfig::from_name_or_file(&args.model).map_err(|e| e.to_string())?;
    let reference: Option<Reference> = match &args.reference {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    eprintln!("timing SAM `{}` on {} ...", args.model, backend::NAME);
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
