//! `mimo`: the command-line interface of the MIMO toolkit.

mod backend;
mod bench;
mod clip_cache;
mod data;
mod eval;
mod generate;
mod heldout;
mod infer;
mod malloc;
mod overlay;
mod quickstart;
mod report;
mod score;
mod segment;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// MIMO: a medical vision-language model with visual referring input and pixel-grounded
/// output, on burn.
///
/// Everything runs offline: weights, tokenizers and data come from local paths.
#[derive(Parser)]
#[command(name = "mimo", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop on a CPU in minutes: phantom data, training mimo-tiny, evaluation
    /// before and after, curves and overlays.
    Quickstart(quickstart::QuickstartArgs),
    /// Train MIMO from an experiment file (or resume a run) on burn-train's learner.
    Train(train::TrainArgs),
    /// Evaluate a trained run or checkpoint on a split: predictions and the paper's tables.
    Eval(eval::EvalArgs),
    /// Segment an image with Segment Anything from point and/or box prompts.
    Segment(segment::SegmentArgs),
    /// Precompute CLIP image features of a folder into a feature cache.
    ClipCache(clip_cache::ClipCacheArgs),
    /// Build MIMOSeg-style datasets, summarise and inspect records.
    Data(data::DataArgs),
    /// Generate text with a LLaMA/Vicuna model (and a LoRA adapter), streaming the answer.
    Generate(generate::GenerateArgs),
    /// Ask MIMO a question about a scan (with optional points and boxes) and get the answer
    /// with one mask per grounded phrase.
    Infer(infer::InferArgs),
    /// Convert a held-out benchmark (VQA-RAD, SLAKE, PathVQA, multiple choice, segmentation
    /// folder) to evaluation records.
    Heldout(heldout::HeldoutArgs),
    /// Score a predictions file against records and write the paper's tables.
    Score(score::ScoreArgs),
    /// Compare evaluation runs (ablations, data ratios) as tables and a PNG plot.
    Report(report::ReportArgs),
    /// A local web app: open a scan, mark points and boxes, ask, and see the grounded masks
    /// (or, with --sam, click and see SAM's mask).
    Serve(serve::ServeArgs),
    /// Time model components on this machine (see `mimo bench --help`).
    Bench(bench::BenchArgs),
}

#[global_allocator]
static ALLOCATOR: malloc::Counting = malloc::Counting;

fn main() -> ExitCode {
    malloc::tune_for_tensors();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segment(args) => segment::run(args),
        Command::ClipCache(args) => clip_cache::run(args),
        Command::Data(args) => data::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Infer(args) => infer::run(args),
        Command::Heldout(args) => heldout::run(args),
        Command::Score(args) => score::run(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
