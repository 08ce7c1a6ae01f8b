//! The MIMOSeg record: one JSON object per line (`records.jsonl`), written by the dataset
//! builder and read by training and evaluation.
//!
//! ```json
//! {"id": "abdomenct1k/case_0001/z045/p2/0",
//!  "image": "images/abdomenct1k/case_0001_z045.png", "size": [512, 512],
//!  "modality": "CT", "source": "abdomenct1k", "volume": "case_0001", "split": "test",
//!  "perspective": "P2",
//!  "prompts": [{"kind": "box", "coords": [120.0, 88.0, 230.0, 190.0]}],
//!  "turns": [{"from": "human", "value": "<image>\nPlease segment the organ in the box."},
//!            {"from": "gpt", "value": "It is <p>liver</p><SEG>."}],
//!  "masks": [{"label": "liver", "rle": {"size": [512, 512], "counts": "..."}}]}
//! ```
//!
//! * `masks` are in the order of the answer's `<SEG>` tokens (the i-th `<SEG>` segments the
//!   i-th mask), as COCO RLE at the image's original size.
//! * `prompts` coordinates are pixels of the original image: a box is `[x0, y0, x1, y1]`, a
//!   point `[x, y]` (with `label` 1 foreground, 0 background).
//! * `volume` groups slices of one patient/volume: splits never separate them.
//! * Evaluation-only records use `perspective` `"heldout_seg"` (image + masks, optionally a
//!   box prompt) or `"vqa"` (with `vqa`: question, answer, answer type, options).

use serde::{Deserialize, Serialize};

use crate::rle::Rle;

/// The kind of sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Perspective {
    /// Language-guided segmentation.
    P1,
    /// Visual prompt perceiving.
    P2,
    /// Responses with segmentation aligning.
    P3,
    /// Visual-prompt-assisted questioning.
    P4,
    /// A general medical VQA pair (LLaVA-Med instructions or a held-out benchmark).
    #[serde(rename = "vqa")]
    Vqa,
    /// A held-out segmentation sample (image, masks, optional box).
    #[serde(rename = "heldout_seg")]
    HeldoutSeg,
}

impl Perspective {
    /// The paper's name ("Perspective II", ...).
    pub fn title(self) -> &'static str {
        match self {
            Perspective::P1 => "Perspective I",
            Perspective::P2 => "Perspective II",
            Perspective::P3 => "Perspective III",
            Perspective::P4 => "Perspective IV",
            Perspective::Vqa => "VQA",
            Perspective::HeldoutSeg => "Held-out segmentation",
        }
    }
}

/// The kind of a visual prompt (`"box"` or `"point"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// A bounding box.
    Box,
    /// A point.
    Point,
}

/// Who speaks a turn (`"human"` or `"gpt"` in JSON, as in LLaVA's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user's question.
    Human,
    /// The model's answer.
    Gpt,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Human => "human",
            Role::Gpt => "gpt",
        })
    }
}

/// The split of a record (`"train"`, `"val"` or `"test"` in JSON and in experiment files;
/// any other name is an error that names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data.
    Val,
    /// Test data.
    Test,
}

impl Split {
    /// The three splits.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name in files: `train`, `val` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown split `{s}`: expected train, val or test"))
    }
}

impl TryFrom<String> for Split {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Split> for String {
    fn from(s: Split) -> String {
        s.as_str().to_string()
    }
}

/// A visual prompt in original-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisualPrompt {
    /// Box or point.
    pub kind: PromptKind,
    /// Box `[x0, y0, x1, y1]` or point `[x, y]`.
    pub coords: Vec<f64>,
    /// Point label (1 foreground, 0 background); absent for boxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u8>,
}

impl VisualPrompt {
    /// The prompt as the model takes it; `None` for an unknown kind or a wrong number of
    /// coordinates.
    pub fn to_model(&self) -> Option<mimo_core::prompt::VisualPrompt> {
        use mimo_core::prompt::VisualPrompt as Vp;
        match (self.kind, self.coords.as_slice()) {
            (PromptKind::Point, [x, y]) => Some(Vp::Point {
                x: *x,
                y: *y,
                positive: self.label != Some(0),
            }),
            (PromptKind::Box, [x0, y0, x1, y1]) => Some(Vp::Box {
                x0: *x0,
                y0: *y0,
                x1: *x1,
                y1: *y1,
            }),
            _ => None,
        }
    }
}

/// One conversation turn (LLaVA's `{"from", "value"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Who speaks.
    pub from: Role,
    /// The text; answers carry `<p>label</p><SEG>` markup.
    pub value: String,
}

/// A labelled mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledMask {
    /// Medical name of the structure.
    pub label: String,
    /// The mask at the image's original size.
    pub rle: Rle,
}

/// A VQA item (held-out benchmarks and LLaVA-Med instructions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqaItem {
    /// The question.
    pub question: String,
    /// The ground-truth answer.
    pub answer: String,
    /// `"closed"` (yes/no or choice) or `"open"`.
    pub answer_type: String,
    /// Options for multiple-choice evaluation (HuatuoGPT-Vision style); the answer is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

fn size_or_unknown<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<[usize; 2]>, D::Error> {
    let v: Option<[usize; 2]> = Option::deserialize(d)?;
    Ok(v.filter(|s| *s != [0, 0]))
}

/// One MIMOSeg sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique id.
    pub id: String,
    /// Image path, relative to the records file's folder (or absolute).
    pub image: String,
    /// `[height, width]` of the original image; `None` when the record does not state it
    /// (VQA data; the image's own size is used). Omitted from JSON when unknown; the legacy
    /// `[0, 0]` reads as unknown.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "size_or_unknown"
    )]
    pub size: Option<[usize; 2]>,
    /// Imaging modality (CT, MR, X-ray, ultrasound, endoscopy, fundus, dermoscopy, PET, ...).
    pub modality: String,
    /// Source dataset name.
    pub source: String,
    /// Patient or volume id (slices of one volume share it).
    #[serde(default)]
    pub volume: String,
    /// Train, val or test.
    pub split: Split,
    /// The kind of sample.
    pub perspective: Perspective,
    /// Visual prompts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<VisualPrompt>,
    /// Conversation (human, gpt, human, gpt, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<Turn>,
    /// Masks in `<SEG>` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<LabeledMask>,
    /// VQA fields for `vqa` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vqa: Option<VqaItem>,
}

impl Record {
    /// The last assistant answer (the one evaluated), if any.
    pub fn answer(&self) -> Option<&str> {
        self.turns
            .iter()
            .rev()
            .find(|t| t.from == Role::Gpt)
            .map(|t| t.value.as_str())
    }
}

/// Why a JSONL file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The file could not be opened or read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The reason.
        message: String,
    },
    /// A line is not a valid record.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message (names the field).
        message: String,
    },
}

/// Reads a JSONL file of `T` (blank lines skipped); errors name the file and line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: impl AsRef<std::path::Path>,
) -> Result<Vec<T>, JsonlError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| JsonlError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| JsonlError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Counts of a set of records by perspective, split, modality, source and mask label (what
/// `mimo data stats` prints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordStats {
    /// Number of records.
    pub records: usize,
    /// Table name (`perspective`, `split`, `modality`, `source`, `label (masks)`) -> value ->
    /// count.
    pub tables: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
}

impl RecordStats {
    /// Counts `records`.
    pub fn of(records: &[Record]) -> Self {
        let mut stats = Self {
            records: records.len(),
            ..Self::default()
        };
        let mut add = |table: &str, value: String| {
            *stats
                .tables
                .entry(table.to_string())
                .or_default()
                .entry(value)
                .or_default() += 1;
        };
        for r in records {
            add("perspective", format!("{:?}", r.perspective));
            add("split", r.split.to_string());
            add("modality", r.modality.clone());
            add("source", r.source.clone());
            for m in &r.masks {
                add("label (masks)", m.label.clone());
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests;
