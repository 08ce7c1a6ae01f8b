//! Comparing evaluation runs (`mimo report`): ablations such as MIMO without the aligner,
//! and the data-ratio study (25/50/75/100 %), as Markdown tables and a PNG line chart of
//! each metric against the data ratio, like the paper's Figure 5.
//!
//! A run folder holds the `scores.json` that `mimo score` wrote, and optionally `run.json`:
//! `{"name": "MIMO 25%", "data_ratio": 0.25, "aligner": true}` (without it the folder name is
//! the run's name and the run has no ratio). The ratio figure follows MIMO itself: runs without
//! the aligner are ablations, compared in the tables but not drawn against the ratio.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::Deserialize;

use crate::eval::Scores;
use crate::plot::{Series, panel};

/// One evaluated run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Display name.
    pub name: String,
    /// Share of the training data, if the run is part of the ratio study.
    pub data_ratio: Option<f64>,
    /// Whether the model had the aligner (`false`: the "w/o Aligner" ablation). Unknown
    /// counts as with.
    pub aligner: Option<bool>,
    /// Its scores.
    pub scores: Scores,
}

#[derive(Deserialize)]
struct RunFile {
    name: Option<String>,
    data_ratio: Option<f64>,
    aligner: Option<bool>,
}

/// Why a run could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReportError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Reads a run folder.
pub fn load_run(dir: &Path) -> Result<Run, ReportError> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| ReportError {
            path: p.clone(),
            message: e.to_string(),
        })
    };
    let scores_path = dir.join("scores.json");
    let scores: Scores =
        serde_json::from_str(&read(scores_path.clone())?).map_err(|e| ReportError {
            path: scores_path,
            message: format!("{e} (expected the scores.json written by `mimo score`)"),
        })?;
    let run_path = dir.join("run.json");
    let info = if run_path.is_file() {
        serde_json::from_str::<RunFile>(&read(run_path.clone())?).map_err(|e| ReportError {
            path: run_path,
            message: e.to_string(),
        })?
    } else {
        RunFile {
            name: None,
            data_ratio: None,
            aligner: None,
        }
    };
    if let Some(r) = info.data_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return Err(ReportError {
            path: dir.join("run.json"),
            message: format!("data_ratio {r} must be in (0, 1]"),
        });
    }
    Ok(Run {
        name: info.name.unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string())
        }),
        data_ratio: info.data_ratio,
        aligner: info.aligner,
        scores,
    })
}

/// The runs of the data-ratio study, in the given order: those with a `data_ratio` and the
/// aligner (or no word on it). The second run at a ratio already taken is left out too (e.g.
/// a memory-saving variant of the full run). Returns the runs drawn and, for each run left out
/// although it has a ratio, its name and why.
pub fn ratio_study(runs: &[Run]) -> (Vec<&Run>, Vec<(String, String)>) {
    let mut drawn: Vec<&Run> = Vec::new();
    let mut left_out = Vec::new();
    for r in runs {
        let Some(ratio) = r.data_ratio else { continue };
        if r.aligner == Some(false) {
            left_out.push((
                r.name.clone(),
                "a run without the aligner (an ablation, not part of the ratio study)".into(),
            ));
        } else if let Some(first) = drawn.iter().find(|d| d.data_ratio == Some(ratio)) {
            left_out.push((
                r.name.clone(),
                format!("data ratio {ratio} is already drawn from `{}`", first.name),
            ));
        } else {
            drawn.push(r);
        }
    }
    (drawn, left_out)
}

type Metric = (
    &'static str,
    fn(&crate::eval::PerspectiveScores) -> Option<f64>,
);

const METRICS: [Metric; 6] = [
    ("mIoU", |p| Some(p.seg.miou)),
    ("AP50", |p| Some(p.seg.ap50)),
    ("F1", |p| Some(p.f1)),
    ("BLEU-4", |p| Some(p.text.bleu4)),
    ("ROUGE-L", |p| Some(p.text.rouge_l)),
    ("METEOR", |p| p.text.meteor),
];

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

/// Markdown tables: one per held-in metric (runs x perspectives) and one for held-out VQA.
pub fn markdown(runs: &[Run]) -> String {
    let persp: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| r.scores.held_in.keys().cloned())
        .collect();
    let mut out = String::new();
    for (name, get) in METRICS {
        out.push_str(&format!("## {name}\n\n| run |"));
        for p in &persp {
            out.push_str(&format!(" {p} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(persp.len()));
        out.push('\n');
        for r in runs {
            out.push_str(&format!("| {} |", r.name));
            for p in &persp {
                out.push_str(&format!(
                    " {} |",
                    fmt(r.scores.held_in.get(p).and_then(get))
                ));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    let sources: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| r.scores.vqa.keys().cloned())
        .collect();
    if !sources.is_empty() {
        out.push_str("## Held-out VQA accuracy %\n\n| run |");
        for s in &sources {
            out.push_str(&format!(" {s} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(sources.len()));
        out.push('\n');
        for r in runs {
            out.push_str(&format!("| {} |", r.name));
            for s in &sources {
                out.push_str(&format!(" {} |", fmt(r.scores.vqa.get(s).map(|v| v.0))));
            }
            out.push('\n');
        }
    }
    out
}

/// The ratio figure (the runs [`ratio_study`] draws): (a) mIoU, (b) AP50, (c) F1 per
/// perspective and (d) VQA accuracy per benchmark, against the share of training data.
pub fn ratio_figure(runs: &[Run]) -> RgbImage {
    let (w, h) = (480i64, 340i64);
    let mut img = RgbImage::from_pixel((2 * w) as u32, (2 * h) as u32, Rgb([255, 255, 255]));
    let (mut with, _) = ratio_study(runs);
    with.sort_by(|a, b| {
        let ratio = |r: &Run| r.data_ratio.unwrap_or(0.0);
        ratio(a).total_cmp(&ratio(b))
    });
    let persp: BTreeSet<String> = with
        .iter()
        .flat_map(|r| r.scores.held_in.keys().cloned())
        .collect();
    for (k, (name, get)) in METRICS[..3].iter().enumerate() {
        let series: Vec<Series> = persp
            .iter()
            .map(|p| Series {
                name: p.clone(),
                points: with
                    .iter()
                    .filter_map(|r| Some((r.data_ratio?, get(r.scores.held_in.get(p)?)?)))
                    .collect(),
            })
            .collect();
        let origin = ((k as i64 % 2) * w, (k as i64 / 2) * h);
        let title = format!("({}) {name}", ["A", "B", "C"][k]);
        panel(&mut img, origin, (w, h), &title, "DATA RATIO", &series);
    }
    let sources: BTreeSet<String> = with
        .iter()
        .flat_map(|r| r.scores.vqa.keys().cloned())
        .collect();
    let series: Vec<Series> = sources
        .iter()
        .map(|s| Series {
            name: s.clone(),
            points: with
                .iter()
                .filter_map(|r| Some((r.data_ratio?, r.scores.vqa.get(s)?.0)))
                .collect(),
        })
        .collect();
    panel(
        &mut img,
        (w, h),
        (w, h),
        "(D) VQA ACCURACY %",
        "DATA RATIO",
        &series,
    );
    img
}

/// The rows of a CSV text with a header line, as `column -> value` for every numeric cell
/// (empty and text cells are left out).
pub fn csv_rows(text: &str) -> Vec<std::collections::BTreeMap<String, f64>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .filter_map(|(h, v)| v.parse::<f64>().ok().map(|x| (h.to_string(), x)))
                .collect()
        })
        .collect()
}

/// Most training points drawn per curve: longer runs are averaged over windows of steps.
pub const CURVE_POINTS: usize = 100;

/// A training run's curves from its `train.csv` (one row per optimiser step) and
/// `valid.csv` (one row per epoch) texts, as written by `mimo train`: loss, answer-token
/// accuracy and mask IoU (training as means over windows of `⌈rows / CURVE_POINTS⌉`
/// steps, plotted at each window's last step; validation at each epoch's end), and the
/// learning rate per step.
pub fn training_curves(train_csv: &str, valid_csv: &str) -> RgbImage {
    let train = csv_rows(train_csv);
    let valid = csv_rows(valid_csv);
    let window = train.len().div_ceil(CURVE_POINTS).max(1);
    let binned = |key: &str| -> Vec<(f64, f64)> {
        train
            .chunks(window)
            .filter_map(|rows| {
                let vals: Vec<f64> = rows.iter().filter_map(|r| r.get(key).copied()).collect();
                let x = rows.last()?.get("step").copied()?;
                (!vals.is_empty()).then(|| (x, vals.iter().sum::<f64>() / vals.len() as f64))
            })
            .collect()
    };
    let per_epoch = |key: &str| -> Vec<(f64, f64)> {
        valid
            .iter()
            .filter_map(|r| Some((*r.get("step")?, *r.get(key)?)))
            .collect()
    };
    let (w, h) = (560i64, 340i64);
    let mut img = RgbImage::from_pixel((2 * w) as u32, (2 * h) as u32, Rgb([255, 255, 255]));
    for (i, (title, key)) in [
        ("LOSS", "loss"),
        ("ANSWER TOKEN ACCURACY %", "token_accuracy"),
        ("MASK IOU %", "mask_iou"),
    ]
    .iter()
    .enumerate()
    {
        let series = [
            Series {
                name: "train".into(),
                points: binned(key),
            },
            Series {
                name: "valid".into(),
                points: per_epoch(key),
            },
        ];
        let origin = ((i as i64 % 2) * w, (i as i64 / 2) * h);
        panel(&mut img, origin, (w, h), title, "OPTIMISER STEP", &series);
    }
    let lr = Series {
        name: "lr".into(),
        points: train
            .iter()
            .filter_map(|r| Some((*r.get("step")?, *r.get("lr")?)))
            .collect(),
    };
    panel(
        &mut img,
        (w, h),
        (w, h),
        "LEARNING RATE",
        "OPTIMISER STEP",
        &[lr],
    );
    img
}

#[cfg(test)]
mod tests;
