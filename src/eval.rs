//! `mimo eval`: run a trained MIMO over a split, write the predictions and the paper's
//! tables.

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mimo_bench::eval::{MeteorMode, Prediction, score};
use mimo_core::fsutil::write_atomic;
use mimo_core::llm::GenerationConfig;
use mimo_core::mimo::{MimoBuild, MimoConfig};
use mimo_data::record::{Record, Split, read_jsonl};

use crate::backend::{self, Backend};

/// Arguments of `mimo eval`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
TARGET is a run directory (`mimo train` wrote run.json and final/) or a checkpoint directory
(adapter/ + trained.safetensors, e.g. RUN/final or RUN/checkpoints/step-N). A checkpoint inside
a run directory is built as the run trained it (its model file and aligner switch); elsewhere
--config names the model file. The model answers each record's first question with greedy
decoding (held-out records from `mimo heldout`: the benchmark's question, or a segmentation
instruction); OUT gets predictions.jsonl (what `mimo score` reads: the answer with its
<p>..</p><SEG> markup and one COCO-RLE mask per <SEG>), then tables.md, tables.csv and
scores.json.

For a run directory, OUT also gets run.json (the run's name, data ratio and aligner switch), so
`mimo report OUT1 OUT2 ...` compares evaluated runs (Figure 5 over the data-ratio runs).

Long splits can be interrupted: run the same command again and the records already in
predictions.jsonl are skipped (OUT/model.json says which checkpoint, model file and records
they came from; another model's predictions are never mixed in).

Examples:
  mimo eval runs/tiny_phantom-20261129-120000 --split test --out out/eval-tiny
  mimo eval runs/mimo_full/final --config configs/mimo/mimo-7b.ron \\
      --records data/heldout/records.jsonl --out out/eval-heldout")]
pub struct EvalArgs {
    /// A run directory or a checkpoint directory.
    #[arg(value_name = "TARGET")]
    target: PathBuf,
    /// The model file (default: the run's).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Records to evaluate (default: the run's records).
    #[arg(long, value_name = "FILE")]
    records: Option<PathBuf>,
    /// Only records of this split (default: test).
    #[arg(long, default_value = "test")]
    split: Split,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Records answered together.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Most tokens generated per answer.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Evaluate only the first N records of the split.
    #[arg(long)]
    limit: Option<usize>,
}

/// A model ready to answer, and where its records are.
pub struct Loaded {
    /// The model, tokenizer and template.
    pub build: MimoBuild<Backend>,
    /// Default records (the run's).
    pub records: Option<PathBuf>,
    /// The run's summary, when the target is a run directory.
    pub run: Option<mimo_train::RunInfo>,
    /// The checkpoint directory the trained parts came from (absolute).
    pub checkpoint: PathBuf,
    /// The model file (as given or as the run names it).
    pub model: PathBuf,
}

/// The run directory `target` belongs to: `target` itself, or RUN for RUN/final and
/// RUN/checkpoints/step-N (a folder holding the resolved experiment `mimo train` wrote).
fn run_dir_of(target: &Path) -> Option<PathBuf> {
    target
        .ancestors()
        .take(3)
        .find(|d| d.join(mimo_train::train::EXPERIMENT_FILE).is_file())
        .map(Path::to_path_buf)
}

/// The experiment's switches over the model file's: `aligner` (the "w/o Aligner" ablation
/// trains without it, and its checkpoints have no aligner weights).
fn apply_experiment(experiment: Option<&mimo_train::experiment::Experiment>, cfg: &mut MimoConfig) {
    if let Some(a) = experiment.and_then(|e| e.aligner) {
        cfg.aligner = a;
    }
}

/// For a checkpoint inside a run directory (RUN/final, RUN/checkpoints/step-N), applies the
/// run's experiment switches to `cfg` (see [`load`]); a checkpoint elsewhere is left as the
/// model file says.
pub fn apply_run_switches(checkpoint: &Path, cfg: &mut MimoConfig) -> Result<(), String> {
    if let Some(dir) = run_dir_of(checkpoint) {
        let exp =
            mimo_train::experiment::Experiment::load(dir.join(mimo_train::train::EXPERIMENT_FILE))
                .map_err(|e| e.to_string())?;
        apply_experiment(Some(&exp), cfg);
    }
    Ok(())
}

/// Builds the model of a run directory or checkpoint directory. A checkpoint inside a run
/// directory (RUN/final, RUN/checkpoints/step-N) is built as the run trained it: the run's
/// model file unless `config` names another, with the experiment's `aligner` switch.
pub fn load(target: &Path, config: Option<&Path>) -> Result<Loaded, String> {
    let run = mimo_train::train::read_run_info(target);
    let owner = run_dir_of(target);
    let experiment = match &owner {
        Some(dir) => Some(
            mimo_train::experiment::Experiment::load(dir.join(mimo_train::train::EXPERIMENT_FILE))
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let (model_path, checkpoint, records) = match run.clone() {
        Some(info) => {
            // final/ beside run.json (the path in run.json is where the run was written,
            // which a moved or copied run directory no longer is).
            let here = target.join(mimo_train::train::FINAL_DIR);
            let ck = if here.is_dir() {
                Some(here)
            } else {
                info.final_checkpoint.clone()
            };
            let ck = ck.ok_or_else(|| {
                format!(
                    "run {} has not finished (no final/): `mimo train --resume {}` first, or \
                     evaluate a checkpoint: {}/checkpoints/step-N",
                    target.display(),
                    target.display(),
                    target.display()
                )
            })?;
            (
                config.map(Path::to_path_buf).unwrap_or(info.model),
                ck,
                Some(info.records),
            )
        }
        None => {
            let model = config
                .map(Path::to_path_buf)
                .or_else(|| experiment.as_ref().map(|e| e.model.clone()))
                .ok_or_else(|| {
                    format!(
                        "{} is neither a run directory nor inside one: pass --config MODEL.ron \
                         for a checkpoint directory",
                        target.display()
                    )
                })?;
            (model, target.to_path_buf(), None)
        }
    };
    let checkpoint = std::path::absolute(&checkpoint).map_err(|e| e.to_string())?;
    let mut cfg = MimoConfig::load(&model_path).map_err(|e| e.to_string())?;
    apply_experiment(experiment.as_ref(), &mut cfg);
    let params = checkpoint.join(mimo_train::checkpoint::PARAMS_FILE);
    if params.is_file() {
        // A training checkpoint: parameters by burn path.
        cfg.weights.extra = Some(params);
    } else {
        cfg = cfg
            .with_checkpoint(&checkpoint)
            .map_err(|e| e.to_string())?;
    }
    let base = model_path.parent().unwrap_or(Path::new("."));
    let build = cfg
        .build::<Backend>(base, &backend::device())
        .map_err(|e| e.to_string())?;
    crate::malloc::release_free_memory();
    Ok(Loaded {
        build,
        records,
        run,
        checkpoint,
        model: model_path,
    })
}

/// Predicts `records` into `out/predictions.jsonl` with a progress bar.
pub fn predict_into(
    build: &MimoBuild<Backend>,
    records: &[Record],
    root: &Path,
    out: &Path,
    batch: usize,
    max_new_tokens: usize,
) -> Result<Vec<Prediction>, String> {
    let tok = build
        .tokenizer
        .as_ref()
        .ok_or("the model has no tokenizer")?;
    let cfg = GenerationConfig {
        max_new_tokens,
        eos_token_id: vec![tok.ids().eos],
        pad_token_id: tok.ids().pad(),
        ..Default::default()
    };
    let path = out.join("predictions.jsonl");
    let bar = ProgressBar::new(records.len() as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("answering");
    mimo_bench::predict::predict(
        &build.model,
        tok,
        &build.template,
        records,
        root,
        &cfg,
        batch,
        &path,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    read_jsonl(&path).map_err(|e| e.to_string())
}

/// What produced the predictions in an output folder (`OUT/model.json`).
const MODEL_STAMP: &str = "model.json";

/// Resuming is only for the same model over the same records: an output folder whose
/// predictions came from another checkpoint, model file or records file is refused (its
/// answers would be scored as this model's). Writes the stamp for a new folder.
fn check_same_model(out: &Path, loaded: &Loaded, records: &Path) -> Result<(), String> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let stamp = serde_json::json!({
        "checkpoint": abs(&loaded.checkpoint),
        "model": abs(&loaded.model),
        "records": abs(records),
    });
    let stamp_path = out.join(MODEL_STAMP);
    let preds = out.join("predictions.jsonl");
    let earlier: Option<serde_json::Value> = std::fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if preds.is_file() && earlier.as_ref() != Some(&stamp) {
        return Err(format!(
            "{} holds predictions of another model or records ({}: {}; now {stamp}): give \
             another --out, or delete predictions.jsonl to start over",
            out.display(),
            stamp_path.display(),
            earlier.map_or("missing".to_string(), |e| e.to_string()),
        ));
    }
    write_atomic(
        &stamp_path,
        serde_json::to_string_pretty(&stamp)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", stamp_path.display()))
}

/// Runs `mimo eval`.
pub fn run(args: EvalArgs) -> Result<(), String> {
    let loaded = load(&args.target, args.config.as_deref())?;
    let records_path = args
        .records
        .clone()
        .or(loaded.records.clone())
        .ok_or("name the records to evaluate with --records")?;
    let all: Vec<Record> = read_jsonl(&records_path).map_err(|e| e.to_string())?;
    let mut records: Vec<Record> = all.into_iter().filter(|r| r.split == args.split).collect();
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    if records.is_empty() {
        return Err(format!(
            "no records of split `{}` in {}",
            args.split,
            records_path.display()
        ));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    check_same_model(&args.out, &loaded, &records_path)?;
    let root = records_path.parent().unwrap_or(Path::new("."));
    eprintln!(
        "evaluating {} on {} `{}` records of {}",
        args.target.display(),
        records.len(),
        args.split,
        records_path.display()
    );
    let preds = predict_into(
        &loaded.build,
        &records,
        root,
        &args.out,
        args.batch,
        args.max_new_tokens,
    )?;
    let s =
        score(&records, &preds, Some(args.split), &MeteorMode::Off).map_err(|e| e.to_string())?;
    if let Some(info) = &loaded.run {
        // What `mimo report` reads beside scores.json: the run's name and data ratio.
        let name = if info.aligner {
            info.experiment.clone()
        } else {
            format!("{} (w/o aligner)", info.experiment)
        };
        let json = serde_json::json!({
            "name": name,
            "data_ratio": info.data_ratio,
            "aligner": info.aligner,
            "steps": info.steps,
        });
        write_atomic(
            &args.out.join("run.json"),
            serde_json::to_string_pretty(&json)
                .map_err(|e| e.to_string())?
                .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    }
    crate::score::write_tables(&s, &args.out)
}
