//! Scoring prediction files against MIMOSeg records and writing the paper's tables.
//!
//! Predictions are JSONL, one object per record id, so any model's outputs can be scored:
//!
//! ```json
//! {"id": "abdomenct1k/case_0001/z045/p2/0",
//!  "answer": "It is <p>liver</p><SEG>.",
//!  "masks": [{"rle": {"size": [512, 512], "counts": "..."}, "score": 1.0}],
//!  "choice": "B"}
//! ```
//!
//! * `answer`: the generated text with its grounding markup;
//! * `masks`: one per `<SEG>` of the answer, in order, as COCO RLE at the original image size;
//!   `score` (default 1.0) orders detections for AP50;
//! * `choice`: the chosen option letter of a multiple-choice question (optional: otherwise
//!   HuatuoGPT-Vision's regex reads it from `answer`).
//!
//! Scoring (each metric as its reference implementation computes it; `metrics` names the
//! upstream files): per perspective, segmentation mIoU (LISA gIoU over the ground-truth
//! masks, the i-th predicted mask against the i-th ground truth, a missing one counting as
//! empty), cIoU, Dice, Pr@0.5, AP50 (pycocotools, each sample an image), grounding F1, and
//! text metrics (BLEU-4, ROUGE-L, METEOR) of the answers with the markup removed, after
//! pycocoevalcap-style tokenisation; held-out segmentation per source with and without a
//! box; closed-question VQA accuracy per source (multiple choice when the record has
//! options, else LLaVA-Med's yes/no rule).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use mimo_data::record::{Perspective, PromptKind, Record, Split};
use mimo_data::rle::Rle;
use serde::{Deserialize, Serialize};

use crate::metrics::coco::{CocoImage, coco_ap50};
use crate::metrics::grounding::{GroundingF1, grounded_phrases, pair_by_order};
use crate::metrics::meteor::{JavaMeteor, Synonyms, WordNet, nltk_meteor};
use crate::metrics::seg::IouMeter;
use crate::metrics::text::{coco_bleu, coco_rouge_l, coco_tokenize};
use crate::metrics::vqa::{closed_hit, match_choice};

/// A predicted mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredMask {
    /// The mask.
    pub rle: Rle,
    /// Confidence for AP50 ordering.
    #[serde(default = "one")]
    pub score: f64,
}

fn one() -> f64 {
    1.0
}

/// One line of a predictions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The record id.
    pub id: String,
    /// Generated answer.
    #[serde(default)]
    pub answer: String,
    /// Masks in `<SEG>` order.
    #[serde(default)]
    pub masks: Vec<PredMask>,
    /// Chosen option letter for multiple-choice questions.
    #[serde(default)]
    pub choice: Option<String>,
}

/// Which METEOR to compute.
#[derive(Debug, Clone, Default)]
pub enum MeteorMode {
    /// Not computed.
    #[default]
    Off,
    /// nltk-compatible, WordNet read from this folder.
    Nltk(PathBuf),
    /// pycocoevalcap's METEOR 1.5 through this jar.
    Java(PathBuf),
}

impl MeteorMode {
    /// Label for the tables.
    pub fn label(&self) -> &'static str {
        match self {
            MeteorMode::Off => "not computed",
            MeteorMode::Nltk(_) => "nltk METEOR (WordNet 3.0)",
            MeteorMode::Java(_) => "pycocoevalcap METEOR 1.5 (Java)",
        }
    }
}

/// Segmentation scores of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegScores {
    /// Samples.
    pub samples: usize,
    /// Ground-truth masks.
    pub masks: usize,
    /// mIoU (LISA gIoU).
    pub miou: f64,
    /// cIoU.
    pub ciou: f64,
    /// Dice.
    pub dice: f64,
    /// Pr@0.5.
    pub pr50: f64,
    /// pycocotools AP50 (-1 without ground truth).
    pub ap50: f64,
}

/// Text scores of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextScores {
    /// Samples with a reference answer.
    pub samples: usize,
    /// BLEU-4 (pycocoevalcap).
    pub bleu4: f64,
    /// ROUGE-L (pycocoevalcap).
    pub rouge_l: f64,
    /// METEOR (see `meteor_kind`), if computed.
    pub meteor: Option<f64>,
}

/// One held-in perspective.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerspectiveScores {
    /// Segmentation.
    pub seg: SegScores,
    /// Grounding F1.
    pub f1: f64,
    /// Text.
    pub text: TextScores,
}

/// Everything `mimo score` computes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Held-in, by perspective name (P1..P4).
    pub held_in: BTreeMap<String, PerspectiveScores>,
    /// Held-out segmentation by `source` then `with_box`/`without_box`.
    pub held_out_seg: BTreeMap<String, BTreeMap<String, SegScores>>,
    /// Closed-question VQA accuracy (%) and counts by source.
    pub vqa: BTreeMap<String, (f64, usize)>,
    /// Records without a prediction (scored as empty).
    pub missing_predictions: usize,
    /// Which METEOR.
    pub meteor_kind: String,
}

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A mask could not be decoded or has the wrong size.
    #[error("record {id}: {message}")]
    Mask {
        /// The record.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// METEOR could not run.
    #[error("METEOR: {0}")]
    Meteor(String),
}

/// Text without grounding markup.
pub fn strip_markup(s: &str) -> String {
    s.replace("<SEG>", " ")
        .replace("<p>", "")
        .replace("</p>", "")
        .replace("<image>", " ")
}

fn decode(id: &str, rle: &Rle, size: [usize; 2]) -> Result<Vec<bool>, ScoreError> {
    if rle.size != size {
        return Err(ScoreError::Mask {
            id: id.into(),
            message: format!(
                "mask size {:?} differs from the image size {:?}",
                rle.size, size
            ),
        });
    }
    rle.decode().map_err(|e| ScoreError::Mask {
        id: id.into(),
        message: e.to_string(),
    })
}

/// Source names compared loosely ("VQA-RAD" = "vqarad", "Skin Lesion" = "skinlesion").
pub fn source_key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

struct SegGroup {
    meter: IouMeter,
    images: Vec<CocoImage>,
    samples: usize,
}

impl SegGroup {
    fn new() -> Self {
        Self {
            meter: IouMeter::new(),
            images: Vec::new(),
            samples: 0,
        }
    }

    fn add(&mut self, gts: Vec<Vec<bool>>, preds: Vec<(Vec<bool>, f64)>) {
        for (i, g) in gts.iter().enumerate() {
            match preds.get(i) {
                Some((p, _)) => self.meter.add(p, g),
                None => self.meter.add(&vec![false; g.len()], g),
            }
        }
        self.samples += 1;
        self.images.push(CocoImage { gts, dets: preds });
    }

    fn scores(&self) -> SegScores {
        SegScores {
            samples: self.samples,
            masks: self.meter.count(),
            miou: self.meter.miou(),
            ciou: self.meter.ciou(),
            dice: self.meter.dice(),
            pr50: self.meter.precision_at_05(),
            ap50: coco_ap50(&self.images),
        }
    }
}

/// Scores `predictions` against `records` (records of `split` only, if given).
pub fn score(
    records: &[Record],
    predictions: &[Prediction],
    split: Option<Split>,
    meteor: &MeteorMode,
) -> Result<Scores, ScoreError> {
    let by_id: HashMap<&str, &Prediction> =
        predictions.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut scorer = Scorer::new(meteor);
    for r in records {
        if split.is_some_and(|s| s != r.split) {
            continue;
        }
        scorer.add(r, by_id.get(r.id.as_str()).copied())?;
    }
    scorer.finish()
}

/// The paper's metrics accumulated record by record (as predictions arrive, e.g. during
/// training's validation or a long `mimo eval`); [`Scorer::finish`] computes the tables.
/// [`score`] is this over a predictions file.
pub struct Scorer {
    meteor: MeteorMode,
    missing: usize,
    seg: BTreeMap<String, SegGroup>,
    f1: BTreeMap<String, GroundingF1>,
    text: BTreeMap<String, Vec<(Vec<String>, String)>>,
    held_out: BTreeMap<(String, String), SegGroup>,
    vqa: BTreeMap<String, (usize, usize)>,
}

impl Scorer {
    /// An empty scorer computing METEOR as `meteor` says.
    pub fn new(meteor: &MeteorMode) -> Self {
        Self {
            meteor: meteor.clone(),
            missing: 0,
            seg: BTreeMap::new(),
            f1: BTreeMap::new(),
            text: BTreeMap::new(),
            held_out: BTreeMap::new(),
            vqa: BTreeMap::new(),
        }
    }

    /// Adds one record and its prediction (`None`: no prediction, scored as an empty
    /// answer and counted in [`Scores::missing_predictions`]).
    pub fn add(&mut self, r: &Record, p: Option<&Prediction>) -> Result<(), ScoreError> {
        let empty = Prediction {
            id: String::new(),
            answer: String::new(),
            masks: Vec::new(),
            choice: None,
        };
        let p = match p {
            Some(p) => p,
            None => {
                self.missing += 1;
                &empty
            }
        };
        let gts = || -> Result<Vec<Vec<bool>>, ScoreError> {
            r.masks
                .iter()
                .map(|m| decode(&r.id, &m.rle, r.size.unwrap_or(m.rle.size)))
                .collect()
        };
        let preds = || -> Result<Vec<(Vec<bool>, f64)>, ScoreError> {
            p.masks
                .iter()
                .map(|m| {
                    Ok((
                        decode(&r.id, &m.rle, r.size.unwrap_or(m.rle.size))?,
                        m.score,
                    ))
                })
                .collect()
        };
        match r.perspective {
            Perspective::P1 | Perspective::P2 | Perspective::P3 | Perspective::P4 => {
                let key = format!("{:?}", r.perspective);
                let (g, pm) = (gts()?, preds()?);
                let gt_answer = r.answer().unwrap_or("");
                let gt_items = pair_by_order(grounded_phrases(gt_answer), g.clone());
                let pred_items = pair_by_order(
                    grounded_phrases(&p.answer),
                    pm.iter().map(|(m, _)| m.clone()).collect(),
                );
                self.f1
                    .entry(key.clone())
                    .or_default()
                    .add(&pred_items, &gt_items);
                self.seg
                    .entry(key.clone())
                    .or_insert_with(SegGroup::new)
                    .add(g, pm);
                if !gt_answer.is_empty() {
                    self.text.entry(key).or_default().push((
                        vec![coco_tokenize(&strip_markup(gt_answer))],
                        coco_tokenize(&strip_markup(&p.answer)),
                    ));
                }
            }
            Perspective::HeldoutSeg => {
                let boxed = if r.prompts.iter().any(|v| v.kind == PromptKind::Box) {
                    "with_box"
                } else {
                    "without_box"
                };
                self.held_out
                    .entry((r.source.clone(), boxed.into()))
                    .or_insert_with(SegGroup::new)
                    .add(gts()?, preds()?);
            }
            Perspective::Vqa => {
                let Some(item) = &r.vqa else { return Ok(()) };
                if item.answer_type != "closed" {
                    return Ok(());
                }
                let hit = if item.options.is_empty() {
                    closed_hit(&item.answer, &p.answer)
                } else {
                    let want = item
                        .options
                        .iter()
                        .position(|o| o == &item.answer)
                        .and_then(|i| "ABCDEFGHIJK".chars().nth(i));
                    let got = match &p.choice {
                        Some(c) => c.chars().next(),
                        None => match_choice(&p.answer),
                    };
                    want.is_some() && got == want
                };
                let e = self.vqa.entry(r.source.clone()).or_default();
                e.0 += usize::from(hit);
                e.1 += 1;
            }
        }
        Ok(())
    }

    /// The tables of everything added.
    pub fn finish(self) -> Result<Scores, ScoreError> {
        let meteor = &self.meteor;
        let (seg, f1, text, held_out, vqa) =
            (self.seg, self.f1, self.text, self.held_out, self.vqa);
        let mut out = Scores {
            meteor_kind: meteor.label().into(),
            missing_predictions: self.missing,
            ..Default::default()
        };
        let mut java = match meteor {
            MeteorMode::Java(jar) => {
                Some(JavaMeteor::start(jar).map_err(|e| ScoreError::Meteor(e.to_string()))?)
            }
            _ => None,
        };
        let wordnet: Option<Box<dyn Synonyms>> = match meteor {
            MeteorMode::Nltk(dir) => Some(Box::new(
                WordNet::open(dir).map_err(|e| ScoreError::Meteor(e.to_string()))?,
            )),
            _ => None,
        };
        for (key, group) in &seg {
            let samples = text.get(key).cloned().unwrap_or_default();
            let meteor_score = if samples.is_empty() {
                None
            } else if let Some(j) = java.as_mut() {
                Some(
                    j.score(&samples)
                        .map_err(|e| ScoreError::Meteor(e.to_string()))?
                        .0,
                )
            } else {
                wordnet.as_ref().map(|wn| {
                    samples
                        .iter()
                        .map(|(refs, hyp)| {
                            let refs: Vec<Vec<&str>> = refs
                                .iter()
                                .map(|r| r.split_whitespace().collect())
                                .collect();
                            nltk_meteor(
                                &refs,
                                &hyp.split_whitespace().collect::<Vec<_>>(),
                                wn.as_ref(),
                            )
                        })
                        .sum::<f64>()
                        / samples.len() as f64
                })
            };
            out.held_in.insert(
                key.clone(),
                PerspectiveScores {
                    seg: group.scores(),
                    f1: f1.get(key).map(GroundingF1::f1).unwrap_or(0.0),
                    text: TextScores {
                        samples: samples.len(),
                        bleu4: if samples.is_empty() {
                            0.0
                        } else {
                            coco_bleu(&samples)[3]
                        },
                        rouge_l: coco_rouge_l(&samples),
                        meteor: meteor_score,
                    },
                },
            );
        }
        for ((source, boxed), g) in held_out {
            out.held_out_seg
                .entry(source)
                .or_default()
                .insert(boxed, g.scores());
        }
        for (source, (hits, n)) in vqa {
            out.vqa
                .insert(source, (100.0 * hits as f64 / n.max(1) as f64, n));
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct Paper {
    held_in: BTreeMap<String, BTreeMap<String, f64>>,
    held_out_seg: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
    vqa: BTreeMap<String, f64>,
}

fn paper() -> Paper {
    serde_json::from_str(include_str!("../data/paper_mimo.json")).expect("bundled paper numbers")
}

/// One table cell: ours and, where the paper has the row, the paper's MIMO value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Table name.
    pub table: String,
    /// Row (perspective, dataset, ...).
    pub row: String,
    /// Metric.
    pub metric: String,
    /// Our value.
    pub ours: Option<f64>,
    /// The paper's MIMO value.
    pub paper: Option<f64>,
}

/// The paper's tables as cells: Table 1 (mIoU, AP50, F1 per perspective), Table 2 (ROUGE-L,
/// BLEU-4, METEOR per perspective), held-out segmentation (AP50, mIoU without/with box) and
/// held-out VQA (accuracy %).
pub fn cells(s: &Scores) -> Vec<Cell> {
    let paper = paper();
    let mut out = Vec::new();
    let cell = |table: &str, row: &str, metric: &str, ours: Option<f64>, paper: Option<f64>| Cell {
        table: table.into(),
        row: row.into(),
        metric: metric.into(),
        ours,
        paper,
    };
    for (p, v) in &s.held_in {
        let pp = paper.held_in.get(p);
        let get = |m: &str| pp.and_then(|x| x.get(m).copied());
        let row = p.to_string();
        out.push(cell("Table 1", &row, "mIoU", Some(v.seg.miou), get("miou")));
        out.push(cell("Table 1", &row, "AP50", Some(v.seg.ap50), get("ap50")));
        out.push(cell("Table 1", &row, "F1", Some(v.f1), get("f1")));
        out.push(cell(
            "Table 2",
            &row,
            "ROUGE-L",
            Some(v.text.rouge_l),
            get("rouge_l"),
        ));
        out.push(cell(
            "Table 2",
            &row,
            "BLEU-4",
            Some(v.text.bleu4),
            get("bleu4"),
        ));
        out.push(cell(
            "Table 2",
            &row,
            "METEOR",
            v.text.meteor,
            get("meteor"),
        ));
    }
    for (source, groups) in &s.held_out_seg {
        let pp = paper.held_out_seg.get(&source_key(source));
        for (boxed, g) in groups {
            let get = |m: &str| {
                pp.and_then(|x| x.get(boxed))
                    .and_then(|x| x.get(m).copied())
            };
            let row = format!("{source} ({})", boxed.replace('_', " "));
            out.push(cell(
                "Held-out segmentation",
                &row,
                "AP50",
                Some(g.ap50),
                get("ap50"),
            ));
            out.push(cell(
                "Held-out segmentation",
                &row,
                "mIoU",
                Some(g.miou),
                get("miou"),
            ));
        }
    }
    for (source, (acc, _)) in &s.vqa {
        let p = paper.vqa.get(&source_key(source)).copied();
        out.push(cell("Held-out VQA", source, "accuracy %", Some(*acc), p));
    }
    if !s.vqa.is_empty() {
        let avg = s.vqa.values().map(|v| v.0).sum::<f64>() / s.vqa.len() as f64;
        out.push(cell(
            "Held-out VQA",
            "Avg.",
            "accuracy %",
            Some(avg),
            paper.vqa.get("average").copied(),
        ));
    }
    out
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

/// The tables as Markdown, ours beside the paper's MIMO numbers.
pub fn markdown(s: &Scores) -> String {
    let cells = cells(s);
    let mut out = String::new();
    let mut tables: Vec<&str> = Vec::new();
    for c in &cells {
        if !tables.contains(&c.table.as_str()) {
            tables.push(&c.table);
        }
    }
    for t in tables {
        out.push_str(&format!(
            "## {t}\n\n| row | metric | ours | paper (MIMO) |\n|---|---|---|---|\n"
        ));
        for c in cells.iter().filter(|c| c.table == t) {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.row,
                c.metric,
                fmt(c.ours),
                fmt(c.paper)
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "METEOR: {}. Records without a prediction (scored as empty): {}.\n",
        s.meteor_kind, s.missing_predictions
    ));
    out
}

/// The tables as CSV (`table,row,metric,ours,paper`).
pub fn csv(s: &Scores) -> String {
    let q = |x: &str| format!("\"{}\"", x.replace('"', "\"\""));
    let mut out = String::from("table,row,metric,ours,paper\n");
    for c in cells(s) {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            q(&c.table),
            q(&c.row),
            q(&c.metric),
            c.ours.map(|v| v.to_string()).unwrap_or_default(),
            c.paper.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests;
