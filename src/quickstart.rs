//! `mimo quickstart`: the whole loop on a CPU in minutes. Builds the phantom MIMOSeg (all
//! four perspectives), scores the untrained mimo-tiny on the held-out test split, trains it
//! with `experiments/tiny_phantom.ron`, scores it again, and writes the tables, the loss
//! curves and overlays of grounded answers next to the ground truth.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend as _;
use clap::Args;
use mimo_bench::eval::{Prediction, Scores, score};
use mimo_core::fsutil::write_atomic;
use mimo_core::mimo::MimoConfig;
use mimo_data::batch::RecordsDataset;
use mimo_data::record::{PromptKind, Record, Split, read_jsonl};
use mimo_train::{Display, TrainOptions};
use serde::Serialize;

use crate::backend::{self, Backend};

/// Arguments of `mimo quickstart`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
What it writes into --out (default out/quickstart):
  data/          the phantom dataset (records.jsonl, images/)
  run/           the training run (train.csv, valid.csv, checkpoints/, final/, dashboard/)
  untrained/     predictions.jsonl and tables.md of the model before training
  trained/       the same after training
  curves.png     training loss, next-token accuracy, mask IoU and learning rate per step,
                 validation per epoch
  overlays/      for a few test images: <id>_pred.png (the trained model's answer, one colour
                 per grounded phrase) beside <id>_truth.png (the ground truth)
  summary.md     untrained vs trained on the held-out phantoms
A second quickstart into the same folder replaces it (only a folder a quickstart wrote).")]
pub struct QuickstartArgs {
    /// Output folder.
    #[arg(long, default_value = "out/quickstart", value_name = "DIR")]
    out: PathBuf,
    /// Training epochs over the phantom training split.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Stop training after this many minutes (the evaluation then uses the last checkpoint).
    #[arg(long)]
    minutes: Option<f64>,
    /// Overlays written.
    #[arg(long, default_value_t = 6)]
    overlays: usize,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    no_dashboard: bool,
}

const MARKER: &str = "quickstart.json";

/// The repository folder holding `experiments/` and `configs/`.
fn repo_root() -> Result<PathBuf, String> {
    for c in [
        PathBuf::from("."),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ] {
        if c.join("experiments/tiny_phantom.ron").is_file() {
            return std::path::absolute(&c).map_err(|e| e.to_string());
        }
    }
    Err("experiments/tiny_phantom.ron not found: run the quickstart from the repository".into())
}

#[derive(Serialize)]
struct Summary {
    rows: Vec<(String, Option<f64>, Option<f64>)>,
    train_seconds: f64,
    steps: usize,
}

fn seg(s: &Scores, p: &str) -> Option<f64> {
    s.held_in
        .get(p)
        .filter(|x| x.seg.masks > 0)
        .map(|x| 100.0 * x.seg.miou)
}

/// Runs `mimo quickstart`.
pub fn run(args: QuickstartArgs) -> Result<(), String> {
    let root = repo_root()?;
    let out = &args.out;
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !out.join(MARKER).is_file() {
            return Err(format!(
                "{} exists and was not written by a quickstart: choose another --out",
                out.display()
            ));
        }
        std::fs::remove_dir_all(out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    write_atomic(&out.join(MARKER), b"{}").map_err(|e| e.to_string())?;

    // 1. Data.
    eprintln!("[1/5] building the phantom MIMOSeg (4 perspectives) ...");
    let data = out.join("data");
    let cfg = mimo_data::build::DatasetConfig::load(&root.join("configs/data/quickstart.ron"))
        .map_err(|e| e.to_string())?;
    let summary =
        mimo_data::build::build(&cfg, &data, &mut |_, _, _| {}).map_err(|e| e.to_string())?;
    eprintln!(
        "      {} images, records by split {:?}",
        summary.images, summary.splits
    );
    let records_path = data.join("records.jsonl");
    let records: Vec<Record> = read_jsonl(&records_path).map_err(|e| e.to_string())?;
    let test: Vec<Record> = records
        .iter()
        .filter(|r| r.split == Split::Test)
        .cloned()
        .collect();

    // The experiment: tiny_phantom on this data.
    let exp_path = out.join("experiment.ron");
    let exp_text = format!(
        "// The quickstart's experiment: experiments/tiny_phantom.ron on {data}.\n(\n    name: \"quickstart\",\n    base: Some({base:?}),\n    data: (records: Some({rec:?}), build: None),\n    stages: [(name: \"grounding\", epochs: {epochs})],\n)\n",
        data = data.display(),
        base = root
            .join("experiments/tiny_phantom.ron")
            .display()
            .to_string(),
        rec = std::path::absolute(&records_path)
            .map_err(|e| e.to_string())?
            .display()
            .to_string(),
        epochs = args.epochs.max(1),
    );
    write_atomic(&exp_path, exp_text.as_bytes()).map_err(|e| e.to_string())?;
    let exp = mimo_train::Experiment::load(&exp_path).map_err(|e| e.to_string())?;

    // 2. The untrained model (built exactly as training builds it: same seed).
    eprintln!(
        "[2/5] scoring the untrained mimo-tiny on {} test records ...",
        test.len()
    );
    let device = backend::device();
    let model_path = exp_path.parent().unwrap_or(Path::new(".")).join(&exp.model);
    let config = MimoConfig::load(&model_path).map_err(|e| e.to_string())?;
    Backend::seed(&device, exp.seed);
    let untrained = config
        .build::<Backend>(model_path.parent().unwrap_or(Path::new(".")), &device)
        .map_err(|e| e.to_string())?;
    let batcher = mimo_train::train::batcher_for(&untrained, exp.data.max_text_len)
        .map_err(|e| e.to_string())?;
    let (before, before_tf) = evaluate(&untrained, &batcher, &test, &data, &out.join("untrained"))?;
    drop(untrained);

    // 3. Training.
    eprintln!(
        "[3/5] training (experiments/tiny_phantom.ron, {} epochs{}) ...",
        args.epochs,
        args.minutes
            .map(|m| format!(", at most {m} min"))
            .unwrap_or_default()
    );
    let run_dir = out.join("run");
    let outcome = mimo_train::train::<burn::backend::Autodiff<Backend>>(
        Some(&exp_path),
        &TrainOptions {
            run_dir: run_dir.clone(),
            resume: false,
            display: if args.no_dashboard {
                Display::Log
            } else {
                Display::Auto
            },
            max_steps: None,
            max_seconds: args.minutes.map(|m| m * 60.0),
            cluster: None,
        },
        std::slice::from_ref(&device),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "      {} optimiser steps in {:.0} s",
        outcome.info.steps, outcome.info.seconds
    );

    // 4. The trained model.
    eprintln!("[4/5] scoring the trained model ...");
    let target = match &outcome.info.final_checkpoint {
        Some(_) => run_dir.clone(),
        None => mimo_train::checkpoint::list(&run_dir)
            .pop()
            .map(|(_, d)| d)
            .ok_or("training stopped before its first checkpoint")?,
    };
    let loaded = crate::eval::load(&target, Some(&model_path))?;
    let (after, after_tf) = evaluate(&loaded.build, &batcher, &test, &data, &out.join("trained"))?;

    // 5. Curves, overlays, summary.
    eprintln!("[5/5] writing curves, overlays and the summary ...");
    crate::train::write_curves(&run_dir, &out.join("curves.png"))?;
    let preds: Vec<Prediction> =
        read_jsonl(out.join("trained/predictions.jsonl")).map_err(|e| e.to_string())?;
    overlays(&test, &preds, &data, &out.join("overlays"), args.overlays)?;

    let f1 = |s: &Scores, p: &str| s.held_in.get(p).map(|x| 100.0 * x.f1);
    let rouge = |s: &Scores, p: &str| s.held_in.get(p).map(|x| 100.0 * x.text.rouge_l);
    let rows: Vec<(String, Option<f64>, Option<f64>)> = vec![
        ("P-I mIoU (%)".into(), seg(&before, "P1"), seg(&after, "P1")),
        (
            "P-II mIoU (%)".into(),
            seg(&before, "P2"),
            seg(&after, "P2"),
        ),
        (
            "P-III mIoU (%)".into(),
            seg(&before, "P3"),
            seg(&after, "P3"),
        ),
        (
            "P-IV mIoU (%)".into(),
            seg(&before, "P4"),
            seg(&after, "P4"),
        ),
        (
            "P-I grounding F1 (%)".into(),
            f1(&before, "P1"),
            f1(&after, "P1"),
        ),
        (
            "P-III ROUGE-L (%)".into(),
            rouge(&before, "P3"),
            rouge(&after, "P3"),
        ),
        (
            "answer-token accuracy (%, teacher forced)".into(),
            before_tf.token_accuracy(),
            after_tf.token_accuracy(),
        ),
        (
            "mask IoU (%, teacher forced)".into(),
            before_tf.mask_iou(),
            after_tf.mask_iou(),
        ),
        (
            "loss (teacher forced; the model file's weights)".into(),
            Some(before_tf.loss),
            Some(after_tf.loss),
        ),
    ];
    let cell = |v: &Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let mut md = format!(
        "# mimo quickstart: mimo-tiny on the held-out phantom test split ({} records)\n\n\
         | metric | untrained | trained |\n|---|---:|---:|\n",
        test.len()
    );
    for (name, b, a) in &rows {
        md.push_str(&format!("| {name} | {} | {} |\n", cell(b), cell(a)));
    }
    md.push_str(&format!(
        "\n{} optimiser steps in {:.0} s on {}. Full tables: untrained/tables.md, trained/tables.md.\n",
        outcome.info.steps,
        outcome.info.seconds,
        backend::NAME
    ));
    write_atomic(&out.join("summary.md"), md.as_bytes()).map_err(|e| e.to_string())?;
    let s = Summary {
        rows,
        train_seconds: outcome.info.seconds,
        steps: outcome.info.steps,
    };
    write_atomic(
        &out.join(MARKER),
        serde_json::to_string_pretty(&s)
            .map_err(|e| e.to_string())?
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    println!("{md}");
    println!("outputs in {}:", out.display());
    println!("  summary.md, curves.png, overlays/ (*_pred.png beside *_truth.png),");
    println!("  untrained/ and trained/ (predictions.jsonl, tables.md), run/ (the training run)");
    println!(
        "  ask the trained model yourself: mimo infer --config configs/mimo/mimo-tiny.ron --checkpoint {} --image {} --question \"Segment the liver in the given image.\" --out out/infer-trained",
        run_dir.join("final").display(),
        test.first()
            .map(|r| data.join(&r.image).display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}

fn evaluate(
    build: &mimo_core::mimo::MimoBuild<Backend>,
    batcher: &mimo_data::batch::MimoBatcher,
    test: &[Record],
    data: &Path,
    out: &Path,
) -> Result<(Scores, mimo_train::step::MimoStepStats), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let preds = crate::eval::predict_into(build, test, data, out, 6, 64)?;
    let s = score(
        test,
        &preds,
        Some(Split::Test),
        &mimo_bench::eval::MeteorMode::Off,
    )
    .map_err(|e| e.to_string())?;
    let md = mimo_bench::eval::markdown(&s);
    write_atomic(&out.join("tables.md"), md.as_bytes()).map_err(|e| e.to_string())?;
    let tf = mimo_train::train::teacher_forced(
        &build.model,
        batcher,
        test.to_vec(),
        data.to_path_buf(),
        4,
        &backend::device(),
    )?;
    Ok((s, tf))
}

/// Overlays of the trained model's answers beside the ground truth, for the first test
/// records that have masks.
fn overlays(
    test: &[Record],
    preds: &[Prediction],
    data: &Path,
    out: &Path,
    n: usize,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let by_id: BTreeMap<&str, &Prediction> = preds.iter().map(|p| (p.id.as_str(), p)).collect();
    let chosen: Vec<&Record> = test
        .iter()
        .filter(|r| !r.masks.is_empty())
        .filter(|r| matches!(r.perspective.title(), t if !t.is_empty()))
        .take(n)
        .collect();
    let ds =
        RecordsDataset::from_records(chosen.iter().map(|r| (*r).clone()).collect(), data.into());
    for (i, r) in chosen.iter().enumerate() {
        let Some(s) = burn::data::dataset::Dataset::get(&ds, i) else {
            continue;
        };
        let [h, w] = s.size;
        let points: Vec<([f64; 2], bool)> = r
            .prompts
            .iter()
            .filter(|p| p.kind == PromptKind::Point && p.coords.len() == 2)
            .map(|p| ([p.coords[0], p.coords[1]], p.label != Some(0)))
            .collect();
        let boxes: Vec<[f64; 4]> = r
            .prompts
            .iter()
            .filter(|p| p.kind == PromptKind::Box && p.coords.len() == 4)
            .map(|p| [p.coords[0], p.coords[1], p.coords[2], p.coords[3]])
            .collect();
        let name = r.id.replace('/', "_");
        // Ground truth.
        let labels: Vec<String> = r.masks.iter().map(|m| m.label.clone()).collect();
        let masks: Vec<Vec<bool>> = s.masks.clone();
        let png =
            crate::overlay::grounded_overlay_png(&s.rgb, w, h, &masks, &labels, &points, &boxes)?;
        write_atomic(&out.join(format!("{name}_truth.png")), &png).map_err(|e| e.to_string())?;
        // Prediction.
        if let Some(p) = by_id.get(r.id.as_str()) {
            let phrases = mimo_bench::metrics::grounding::grounded_phrases(&p.answer);
            let masks: Vec<Vec<bool>> =
                p.masks.iter().filter_map(|m| m.rle.decode().ok()).collect();
            let labels: Vec<String> = (0..masks.len())
                .map(|k| {
                    phrases
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| "(no phrase)".into())
                })
                .collect();
            let png = crate::overlay::grounded_overlay_png(
                &s.rgb, w, h, &masks, &labels, &points, &boxes,
            )?;
            write_atomic(&out.join(format!("{name}_pred.png")), &png).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
