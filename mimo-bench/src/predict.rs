//! Running MIMO over evaluation records: one [`Prediction`] per record (the answer with its
//! markup and one mask per `<SEG>`), appended to a JSONL file that [`crate::eval::score`]
//! reads. Resumable: records already in the file are skipped.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use mimo_core::Image;
use mimo_core::llm::GenerationConfig;
use mimo_core::mimo::{AnswerRequest, Mimo};
use mimo_core::prompt::VisualPrompt;
use mimo_core::tokenizer::MimoTokenizer;
use mimo_core::tokenizer::conversation::Template;
use mimo_data::batch::RecordsDataset;
use mimo_data::record::Record;
use mimo_data::rle::Rle;

use crate::eval::{PredMask, Prediction};

/// A record's visual prompts as the model takes them.
pub fn record_prompts(r: &Record) -> Vec<VisualPrompt> {
    r.prompts.iter().filter_map(|p| p.to_model()).collect()
}

/// The question a record asks the model: its first human turn; for a held-out VQA record
/// (no turns) the benchmark's question, posed as HuatuoGPT-Vision's multiple-choice prompt
/// when it has options; for a held-out segmentation record the first Perspective I
/// instruction for its label (text only) or the first Perspective II box instruction (with
/// its box), as the paper evaluates held-out segmentation "with the same settings as the
/// held-in experiments".
pub fn record_question(r: &Record) -> Option<String> {
    use mimo_data::record::{Perspective, Role};
    use mimo_data::templates::{P1_INSTRUCTIONS, P2_BOX_INSTRUCTIONS, P2_POINT_INSTRUCTIONS};
    if let Some(t) = r.turns.iter().find(|t| t.from == Role::Human) {
        return Some(t.value.clone());
    }
    if let Some(v) = &r.vqa {
        return Some(if v.options.is_empty() {
            v.question.clone()
        } else {
            crate::metrics::vqa::multiple_choice_prompt(&v.question, &v.options)
        });
    }
    if r.perspective == Perspective::HeldoutSeg {
        return Some(match r.prompts.first().map(|p| p.kind) {
            Some(mimo_data::record::PromptKind::Box) => P2_BOX_INSTRUCTIONS[0].to_string(),
            Some(_) => P2_POINT_INSTRUCTIONS[0].to_string(),
            None => {
                let names: Vec<String> = r.masks.iter().map(|m| m.label.clone()).collect();
                P1_INSTRUCTIONS[0].replace("{}", &mimo_data::templates::join_names(&names))
            }
        });
    }
    None
}

/// Ids already in a predictions file; a last line cut short by a crash is removed.
fn done_ids(path: &Path) -> Result<HashSet<String>, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(HashSet::new());
    };
    let mut ids = HashSet::new();
    let mut good = String::new();
    for line in text.lines() {
        match serde_json::from_str::<Prediction>(line) {
            Ok(p) => {
                ids.insert(p.id);
                good.push_str(line);
                good.push('\n');
            }
            Err(_) if line.trim().is_empty() => {}
            Err(_) => {}
        }
    }
    if good.len() != text.len() {
        mimo_core::fsutil::write_atomic(path, good.as_bytes())
            .map_err(|e| format!("cannot rewrite {}: {e}", path.display()))?;
    }
    Ok(ids)
}

/// Runs `model` over `records` (images relative to `root`), `batch` records at a time,
/// appending to `out`. `progress(done, total)` is called after each batch. Returns the
/// number of records predicted in this call.
#[allow(clippy::too_many_arguments)]
pub fn predict<B: Backend>(
    model: &Mimo<B>,
    tok: &MimoTokenizer,
    template: &Template,
    records: &[Record],
    root: &Path,
    cfg: &GenerationConfig,
    batch: usize,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, String> {
    let done = done_ids(out)?;
    let todo: Vec<&Record> = records.iter().filter(|r| !done.contains(&r.id)).collect();
    let total = records.len();
    let mut finished = total - todo.len();
    progress(finished, total);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| format!("cannot open {}: {e}", out.display()))?;
    let ds = RecordsDataset::from_records(todo.iter().map(|r| (*r).clone()).collect(), root.into());
    let mut written = 0;
    for chunk_start in (0..todo.len()).step_by(batch.max(1)) {
        let end = (chunk_start + batch.max(1)).min(todo.len());
        let mut images = Vec::new();
        let mut questions = Vec::new();
        let mut prompts = Vec::new();
        for (i, r) in todo.iter().enumerate().take(end).skip(chunk_start) {
            let s = ds
                .get(i)
                .ok_or_else(|| format!("record {} is missing", r.id))?;
            if let Some(e) = s.error {
                return Err(format!("record {}: {e}", r.id));
            }
            let [h, w] = s.size;
            images.push(Image::new(w, h, s.rgb).map_err(|e| format!("record {}: {e}", r.id))?);
            let q = record_question(r).ok_or_else(|| {
                format!(
                    "record {} has no question (no human turn, VQA item or held-out mask)",
                    r.id
                )
            })?;
            questions.push(q);
            prompts.push(record_prompts(r));
        }
        let requests: Vec<AnswerRequest<'_>> = (0..images.len())
            .map(|k| AnswerRequest {
                image: &images[k],
                question: &questions[k],
                prompts: &prompts[k],
            })
            .collect();
        let answers = model
            .answer_batch(tok, template, &requests, cfg, &mut |_, _| {})
            .map_err(|e| e.to_string())?;
        for (k, a) in answers.iter().enumerate() {
            let r = todo[chunk_start + k];
            let [h, w] = a.size;
            let p = Prediction {
                id: r.id.clone(),
                answer: a.raw.clone(),
                masks: a
                    .segments
                    .iter()
                    .map(|s| PredMask {
                        rle: Rle::encode(&s.mask, h, w),
                        score: f64::from(s.score),
                    })
                    .collect(),
                choice: None,
            };
            let line = serde_json::to_string(&p).map_err(|e| e.to_string())?;
            writeln!(file, "{line}").map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            written += 1;
        }
        file.flush()
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        finished += end - chunk_start;
        progress(finished, total);
    }
    Ok(written)
}
