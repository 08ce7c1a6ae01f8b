//! Readers that turn the held-out benchmarks, in the formats they are distributed in, into
//! MIMOSeg evaluation records (`vqa` and `heldout_seg`), so `mimo score` treats them like
//! any other records.
//!
//! * VQA-RAD: `VQA_RAD Dataset Public.json` (a list with `qid`, `image_name`, `question`,
//!   `answer`, `answer_type` CLOSED/OPEN, `phrase_type`; the test split is the
//!   `test_freeform`/`test_para` questions).
//! * SLAKE: `test.json` (a list with `qid`, `img_name`, `question`, `answer`, `answer_type`,
//!   `q_lang`); English questions only, as the papers evaluate.
//! * PathVQA: the test question file as JSON (a list with `image`, `question`, `answer`;
//!   the distributed pickle converts with `json.dump(pickle.load(f), ...)`); yes/no answers
//!   are the closed questions.
//! * Multiple-choice files as HuatuoGPT-Vision evaluates (a list with `id`, `question`,
//!   `options`, `answer`, `dataset`, `question_type`, `image`/`img_path`): open questions,
//!   items without options and repeated ids are dropped.
//! * Segmentation folders: images and masks with the same file stem; a mask pixel above 0
//!   is foreground; optionally with the mask's bounding box as the box prompt.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use mimo_data::prompts::bbox;
use mimo_data::record::{
    LabeledMask, Perspective, PromptKind, Record, Split, VisualPrompt, VqaItem,
};
use mimo_data::rle::Rle;
use serde_json::Value;

/// Why a benchmark file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReadError {
    /// The file or folder.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> ReadError {
    ReadError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_list(path: &Path) -> Result<Vec<Value>, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(path, e.to_string()))?;
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(err(path, "expected a JSON list of questions")),
    }
}

/// A field as text (answers are sometimes numbers in these files).
fn text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn need(path: &Path, i: usize, v: &Value, field: &str) -> Result<String, ReadError> {
    text(v, field).ok_or_else(|| err(path, format!("entry {i}: missing field `{field}`")))
}

fn vqa_record(id: String, image: String, source: &str, item: VqaItem) -> Record {
    Record {
        id,
        image,
        size: None,
        modality: String::new(),
        source: source.into(),
        volume: String::new(),
        split: Split::Test,
        perspective: Perspective::Vqa,
        prompts: Vec::new(),
        turns: Vec::new(),
        masks: Vec::new(),
        vqa: Some(item),
    }
}

fn closed_flag(s: &str) -> String {
    if s.trim().eq_ignore_ascii_case("closed") {
        "closed".into()
    } else {
        "open".into()
    }
}

/// VQA-RAD's public JSON: the test questions (`phrase_type` starting with `test`).
pub fn read_vqa_rad(path: &Path) -> Result<Vec<Record>, ReadError> {
    let mut out = Vec::new();
    for (i, q) in read_list(path)?.iter().enumerate() {
        let phrase = text(q, "phrase_type").unwrap_or_default();
        if !phrase.starts_with("test") {
            continue;
        }
        let item = VqaItem {
            question: need(path, i, q, "question")?,
            answer: need(path, i, q, "answer")?,
            answer_type: closed_flag(&need(path, i, q, "answer_type")?),
            options: Vec::new(),
        };
        let id = format!(
            "vqa-rad/{}",
            text(q, "qid").unwrap_or_else(|| i.to_string())
        );
        out.push(vqa_record(
            id,
            need(path, i, q, "image_name")?,
            "VQA-RAD",
            item,
        ));
    }
    Ok(out)
}

/// SLAKE's `test.json`: English questions.
pub fn read_slake(path: &Path) -> Result<Vec<Record>, ReadError> {
    let mut out = Vec::new();
    for (i, q) in read_list(path)?.iter().enumerate() {
        if text(q, "q_lang").as_deref() != Some("en") {
            continue;
        }
        let item = VqaItem {
            question: need(path, i, q, "question")?,
            answer: need(path, i, q, "answer")?,
            answer_type: closed_flag(&need(path, i, q, "answer_type")?),
            options: Vec::new(),
        };
        let id = format!("slake/{}", text(q, "qid").unwrap_or_else(|| i.to_string()));
        out.push(vqa_record(id, need(path, i, q, "img_name")?, "SLAKE", item));
    }
    Ok(out)
}

/// PathVQA's test questions as JSON; yes/no answers are closed.
pub fn read_pathvqa(path: &Path) -> Result<Vec<Record>, ReadError> {
    let mut out = Vec::new();
    for (i, q) in read_list(path)?.iter().enumerate() {
        let answer = need(path, i, q, "answer")?;
        let closed = matches!(answer.trim().to_lowercase().as_str(), "yes" | "no");
        let item = VqaItem {
            question: need(path, i, q, "question")?,
            answer,
            answer_type: if closed { "closed" } else { "open" }.into(),
            options: Vec::new(),
        };
        out.push(vqa_record(
            format!("pathvqa/{i}"),
            need(path, i, q, "image")?,
            "PathVQA",
            item,
        ));
    }
    Ok(out)
}

/// A HuatuoGPT-Vision-style multiple-choice file; `source` names the benchmark when the
/// entries have no `dataset` field.
pub fn read_multiple_choice(path: &Path, source: &str) -> Result<Vec<Record>, ReadError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, q) in read_list(path)?.iter().enumerate() {
        if text(q, "question_type").is_some_and(|t| t.eq_ignore_ascii_case("open")) {
            continue;
        }
        let options: Vec<String> = match q.get("options") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|o| {
                    o.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| o.to_string())
                })
                .collect(),
            _ => continue,
        };
        let id = text(q, "id").unwrap_or_else(|| i.to_string());
        if !seen.insert(id.clone()) {
            continue;
        }
        let answer = need(path, i, q, "answer")?;
        if !options.contains(&answer) {
            return Err(err(
                path,
                format!("entry {i} (id {id}): the answer {answer:?} is not one of its options"),
            ));
        }
        let dataset = text(q, "dataset").unwrap_or_else(|| source.to_string());
        let image = text(q, "image")
            .or_else(|| text(q, "img_path"))
            .unwrap_or_default();
        let item = VqaItem {
            question: need(path, i, q, "question")?,
            answer,
            answer_type: "closed".into(),
            options,
        };
        out.push(vqa_record(format!("{dataset}/{id}"), image, &dataset, item));
    }
    Ok(out)
}

/// A segmentation folder pair as `heldout_seg` records, one per image, with `label`; with
/// `with_box`, the mask's bounding box is the prompt. Images without a mask are reported.
pub fn read_seg_folder(
    images: &Path,
    masks: &Path,
    source: &str,
    label: &str,
    with_box: bool,
) -> Result<Vec<Record>, ReadError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(images)
        .map_err(|e| err(images, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mask_files: Vec<PathBuf> = std::fs::read_dir(masks)
        .map_err(|e| err(masks, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut out = Vec::new();
    for img in entries {
        let stem = img
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let Some(mask_path) = mask_files
            .iter()
            .find(|m| m.file_stem().and_then(|s| s.to_str()) == Some(stem.as_str()))
        else {
            return Err(err(
                &img,
                format!("no mask with the stem `{stem}` in {}", masks.display()),
            ));
        };
        let (iw, ih) = image::image_dimensions(&img).map_err(|e| err(&img, e.to_string()))?;
        let m = image::open(mask_path)
            .map_err(|e| err(mask_path, e.to_string()))?
            .to_luma8();
        if m.dimensions() != (iw, ih) {
            return Err(err(
                mask_path,
                format!("mask is {}x{}, image {}x{}", m.width(), m.height(), iw, ih),
            ));
        }
        let (h, w) = (ih as usize, iw as usize);
        let mask: Vec<bool> = m.pixels().map(|p| p.0[0] > 0).collect();
        let prompts = match (with_box, bbox(&mask, h, w)) {
            (true, Some(b)) => vec![VisualPrompt {
                kind: PromptKind::Box,
                coords: b.iter().map(|&v| v as f64).collect(),
                label: None,
            }],
            _ => Vec::new(),
        };
        let suffix = if with_box { "box" } else { "text" };
        out.push(Record {
            id: format!("{source}/{stem}/{suffix}"),
            image: img.display().to_string(),
            size: Some([h, w]),
            modality: String::new(),
            source: source.into(),
            volume: stem.clone(),
            split: Split::Test,
            perspective: Perspective::HeldoutSeg,
            prompts,
            turns: Vec::new(),
            masks: vec![LabeledMask {
                label: label.into(),
                rle: Rle::encode(&mask, h, w),
            }],
            vqa: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
