//! Records from samples: P-I/P-II from the templates, P-III/P-IV from the knowledge base or
//! as questions for the chat endpoint, whose answers are filled in once every input is read.

use std::path::Path;

use mimo_core::rng::{Rng, hash64};

use super::sources::SourceSample;
use super::{BuildError, DatasetConfig, Skipped, split_of};
use crate::knowledge::KnowledgeBase;
use crate::prompts::{sample_box, sample_point};
use crate::qa;
use crate::qa_endpoint::{QaEndpoint, QaJob, QaReport, run_jobs};
use crate::record::{LabeledMask, Perspective, PromptKind, Record, Role, Turn, VisualPrompt};
use crate::rle::Rle;
use crate::templates;

/// What one input (or, appended, every input) gave.
#[derive(Default)]
pub(super) struct InputOut {
    pub(super) records: Vec<Record>,
    /// Endpoint jobs and the index of their record in `records`.
    pub(super) jobs: Vec<QaJob>,
    pub(super) job_records: Vec<usize>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) images: usize,
    pub(super) reused_images: usize,
}

impl InputOut {
    /// Appends what the next input gave (its job indices moved to its records' new place).
    pub(super) fn append(&mut self, o: InputOut) {
        let offset = self.records.len();
        self.job_records
            .extend(o.job_records.iter().map(|r| offset + r));
        self.jobs.extend(o.jobs);
        self.records.extend(o.records);
        self.skipped.extend(o.skipped);
        self.images += o.images;
        self.reused_images += o.reused_images;
    }

    /// Asks the chat endpoint the questions of `self.jobs` and writes the questions and
    /// answers it gives into their records; a record whose answer was rejected is dropped and reported in
    /// `skipped`. `progress(done, total)` is called after each question/answer.
    pub(super) fn ask_endpoint(
        &mut self,
        endpoint: &QaEndpoint,
        out: &Path,
        kb: &KnowledgeBase,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<QaReport, BuildError> {
        let (results, report) = run_jobs(endpoint, out, kb, &self.jobs, progress)
            .map_err(|e| BuildError::Endpoint(e.to_string()))?;
        let records = &mut self.records;
        let mut drop = vec![false; records.len()];
        for ((ri, job), result) in self.job_records.iter().zip(&self.jobs).zip(results) {
            match result {
                Ok((q, a)) => {
                    records[*ri].turns[0].value = format!("<image>\n{q}");
                    records[*ri].turns[1].value = a;
                }
                Err(reason) => {
                    drop[*ri] = true;
                    self.skipped.push(Skipped {
                        path: job.id.clone(),
                        reason,
                    });
                }
            }
        }
        let mut keep = drop.iter().map(|d| !d);
        records.retain(|_| keep.next().unwrap_or(true));
        Ok(report)
    }
}

/// A record's content before it has an id.
struct Generated {
    question: String,
    answer: String,
    masks: Vec<(String, Vec<bool>)>,
    prompts: Vec<VisualPrompt>,
    /// The endpoint question that will write `question` and `answer` (empty until then).
    job: Option<QaJob>,
}

/// The records of one sample of `source`, whose image is `image` (relative to the output):
/// one per configured perspective that applies, each seeded by `(seed, source, stem,
/// perspective)`. Perspectives that cannot be generated are reported in `o.skipped`.
pub(super) fn sample_records(
    cfg: &DatasetConfig,
    kb: &KnowledgeBase,
    source: &str,
    sample: &SourceSample,
    image: &str,
    o: &mut InputOut,
) {
    let volume = format!("{}/{}", source, sample.volume);
    let split = split_of(&volume, cfg.seed, cfg.splits);
    for persp in &cfg.perspectives {
        let mut rng = Rng::for_item(
            cfg.seed ^ hash64(&format!("{}/{}/{persp:?}", source, sample.stem)),
            0,
        );
        let (h, w) = (sample.h, sample.w);
        let labels: Vec<String> = sample.masks.iter().map(|(l, _)| l.clone()).collect();
        if labels.is_empty() && *persp != Perspective::P1 {
            continue;
        }
        let generated = match generate(cfg, kb, *persp, sample, &labels, &mut rng) {
            Ok(g) => g,
            Err(reason) => {
                o.skipped.push(Skipped {
                    path: format!("{}/{} ({persp:?})", source, sample.stem),
                    reason,
                });
                continue;
            }
        };
        let Generated {
            question,
            answer,
            masks,
            prompts,
            job,
        } = generated;
        let id = format!("{}/{}/{persp:?}", source, sample.stem);
        if let Some(mut job) = job {
            job.id = id.clone();
            o.job_records.push(o.records.len());
            o.jobs.push(job);
        }
        o.records.push(Record {
            id,
            image: image.to_string(),
            size: Some([h, w]),
            modality: sample.modality.clone(),
            source: source.into(),
            volume: volume.clone(),
            split,
            perspective: *persp,
            prompts,
            turns: vec![
                Turn {
                    from: Role::Human,
                    value: format!("<image>\n{question}"),
                },
                Turn {
                    from: Role::Gpt,
                    value: answer,
                },
            ],
            masks: masks
                .into_iter()
                .map(|(label, m)| LabeledMask {
                    label,
                    rle: Rle::encode(&m, h, w),
                })
                .collect(),
            vqa: None,
        });
    }
}

/// One perspective's question, answer, masks and prompts for `sample` (whose mask labels
/// are `labels`): P-I/P-II from the templates, P-III/P-IV from the knowledge base, or, with
/// a chat endpoint, P-III/P-IV left empty with the question to ask.
fn generate(
    cfg: &DatasetConfig,
    kb: &KnowledgeBase,
    persp: Perspective,
    sample: &SourceSample,
    labels: &[String],
    rng: &mut Rng,
) -> Result<Generated, String> {
    let (h, w) = (sample.h, sample.w);
    match persp {
        Perspective::P1 if labels.is_empty() => {
            let names: Vec<String> = sample.negatives.clone();
            let (q, _) = templates::p1(&names, rng);
            Ok(Generated {
                question: q,
                answer: format!(
                    "The image does not include {}.",
                    templates::join_names(&names)
                ),
                masks: Vec::new(),
                prompts: Vec::new(),
                job: None,
            })
        }
        Perspective::P1 => {
            let (q, a) = templates::p1(labels, rng);
            Ok(Generated {
                question: q,
                answer: a,
                masks: sample.masks.clone(),
                prompts: Vec::new(),
                job: None,
            })
        }
        Perspective::P3 if cfg.qa_endpoint.is_some() => Ok(Generated {
            question: String::new(),
            answer: String::new(),
            masks: sample.masks.clone(),
            prompts: Vec::new(),
            job: Some(QaJob {
                id: String::new(),
                perspective: persp,
                modality: sample.modality.clone(),
                labels: labels.to_vec(),
                prompt: None,
            }),
        }),
        Perspective::P3 => {
            qa::p3(kb, labels, &sample.modality, rng).map(|(question, answer)| Generated {
                question,
                answer,
                masks: sample.masks.clone(),
                prompts: Vec::new(),
                job: None,
            })
        }
        _ => {
            let (label, mask) = sample.masks[rng.index(sample.masks.len())].clone();
            let point = rng.next_f64() < cfg.point_share;
            let prompt = if point {
                sample_point(&mask, h, w, cfg.point_mode, rng).map(|p| VisualPrompt {
                    kind: PromptKind::Point,
                    coords: p.to_vec(),
                    label: Some(1),
                })
            } else {
                sample_box(&mask, h, w, cfg.box_jitter, rng).map(|b| VisualPrompt {
                    kind: PromptKind::Box,
                    coords: b.to_vec(),
                    label: None,
                })
            };
            let mut job = None;
            let qa = if persp == Perspective::P4 && cfg.qa_endpoint.is_some() {
                job = Some(QaJob {
                    id: String::new(),
                    perspective: persp,
                    modality: sample.modality.clone(),
                    labels: vec![label.clone()],
                    prompt: Some(if point {
                        PromptKind::Point
                    } else {
                        PromptKind::Box
                    }),
                });
                Ok((String::new(), String::new()))
            } else if persp == Perspective::P4 {
                qa::p4(kb, &label, &sample.modality, point, rng)
            } else {
                Ok(templates::p2(std::slice::from_ref(&label), point, rng))
            };
            qa.map(|(question, answer)| Generated {
                question,
                answer,
                masks: vec![(label, mask)],
                prompts: prompt.into_iter().collect(),
                job,
            })
        }
    }
}
