//! The model thread: the model is loaded once, on its own thread, and serves one job at a
//! time from a bounded queue. A job whose client has gone, or whose deadline has passed
//! while it waited, is dropped unrun; a panic inside the model fails that job only.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use base64::Engine as _;
use burn::tensor::backend::Backend as _;
use mimo_core::Image;
use mimo_core::config::ModelConfig;
use mimo_core::llm::GenerationConfig;
use mimo_core::loader::LoadOptions;
use mimo_core::mimo::{AnswerRequest, MimoBuild, MimoConfig, MimoError};
use mimo_core::prompt::VisualPrompt;
use mimo_core::sam::{ImageEmbedding, MaskPrediction, Prompt, Sam, SamConfig};
use mimo_data::rle::Rle;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::api::ApiError;
use crate::backend::{self, Backend};
use crate::overlay;

/// Which model to load.
pub enum ModelSpec {
    /// MIMO from a model file, with an optional trained checkpoint directory.
    Mimo {
        /// The RON model file.
        config: PathBuf,
        /// A training run's `final/` (or `checkpoints/step-N/`) directory.
        checkpoint: Option<PathBuf>,
        /// Weight and activation dtype.
        dtype: burn::tensor::DType,
    },
    /// Segment Anything alone.
    Sam {
        /// vit_b, vit_l, vit_h or a SamConfig RON file.
        model: String,
        /// The checkpoint file.
        checkpoint: PathBuf,
    },
}

/// What the loaded model is, for `/api/info`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `mimo` or `sam`.
    pub mode: &'static str,
    /// The model file or name.
    pub model: String,
    /// The checkpoint, if any.
    pub checkpoint: Option<String>,
    /// The backend.
    pub backend: &'static str,
    /// Parts without weights (randomly initialised).
    pub random_parts: Vec<String>,
}

/// One mask of a reply.
#[derive(Debug, Clone, Serialize)]
pub struct MaskOut {
    /// SAM's predicted IoU.
    pub predicted_iou: f32,
    /// Foreground pixels.
    pub area: u64,
    /// COCO RLE (pycocotools' compressed counts).
    pub rle: Rle,
    /// The mask as a PNG (white = foreground), base64.
    pub png: String,
}

/// The reply to a segmentation.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentOut {
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// The mask with the highest predicted IoU.
    pub best: usize,
    /// One or three masks.
    pub masks: Vec<MaskOut>,
    /// Seconds the model took (embedding included when it was not cached).
    pub seconds: f64,
    /// Whether the image embedding came from the cache.
    pub cached_embedding: bool,
}

/// One grounded phrase of an answer.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentJson {
    /// The phrase.
    pub phrase: Option<String>,
    /// `[start, end)` of the phrase in `text`, in characters.
    pub char_span: Option<(usize, usize)>,
    /// The mask.
    #[serde(flatten)]
    pub mask: MaskOut,
}

/// The reply to a question: the fields of `mimo infer`'s answer.json, with each mask as a
/// PNG too.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerOut {
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// The question.
    pub question: String,
    /// The prompts.
    pub prompts: Vec<VisualPrompt>,
    /// The answer without markup.
    pub text: String,
    /// The answer with its `<p>..</p><SEG>` markup.
    pub raw: String,
    /// Why generation ended.
    pub finish: String,
    /// One per `<SEG>`.
    pub segments: Vec<SegmentJson>,
    /// Seconds the model took.
    pub seconds: f64,
}

/// What an answer job sends back as it runs.
pub enum AnswerEvent {
    /// Decoded text, as it is generated.
    Text(String),
    /// The whole answer.
    Done(Box<AnswerOut>),
    /// It failed.
    Failed(ApiError),
}

/// A unit of work for the model thread.
pub struct Job {
    /// Past this instant the job is not started.
    pub deadline: Instant,
    /// What to do.
    pub task: Task,
}

/// The work itself.
pub enum Task {
    /// Segment with SAM (MIMO's own SAM in MIMO mode).
    Segment {
        /// Cache key of the image embedding (image id and slice).
        key: String,
        /// The image.
        image: Image,
        /// Points and box.
        prompt: Prompt,
        /// Three masks instead of one.
        multimask: bool,
        /// Where the reply goes.
        reply: oneshot::Sender<Result<SegmentOut, ApiError>>,
    },
    /// Ask MIMO.
    Answer {
        /// The image.
        image: Image,
        /// The question.
        question: String,
        /// Points and boxes.
        prompts: Vec<VisualPrompt>,
        /// Decoding settings.
        generation: GenerationConfig,
        /// Where text and the answer go.
        events: mpsc::UnboundedSender<AnswerEvent>,
    },
}

enum Engine {
    Sam(Box<Sam<Backend>>),
    Mimo(Box<MimoBuild<Backend>>),
}

impl Engine {
    fn sam(&self) -> &Sam<Backend> {
        match self {
            Engine::Sam(s) => s,
            Engine::Mimo(m) => &m.model.sam,
        }
    }
}

fn load(spec: &ModelSpec) -> Result<(Engine, ModelInfo), String> {
    let device = backend::device();
    match spec {
        ModelSpec::Sam { model, checkpoint } => {
            let config = SamConfig::from_name_or_file(model).map_err(|e| e.to_string())?;
            backend::announce_load(checkpoint, model);
            let (sam, report) =
                mimo_core::sam::load::load_sam::<Backend>(&config, checkpoint, &device)
                    .map_err(|e| e.to_string())?;
            backend::note_unused(&report.unused);
            Ok((
                Engine::Sam(Box::new(sam)),
                ModelInfo {
                    mode: "sam",
                    model: model.clone(),
                    checkpoint: Some(checkpoint.display().to_string()),
                    backend: backend::NAME,
                    random_parts: Vec::new(),
                },
            ))
        }
        ModelSpec::Mimo {
            config,
            checkpoint,
            dtype,
        } => {
            let mut cfg = MimoConfig::load(config).map_err(|e| e.to_string())?;
            if let Some(dir) = checkpoint {
                crate::eval::apply_run_switches(dir, &mut cfg)?;
                cfg = cfg.with_checkpoint(dir).map_err(|e| e.to_string())?;
            }
            eprintln!(
                "building MIMO from {} on {}",
                config.display(),
                backend::NAME
            );
            let base = config.parent().unwrap_or(Path::new("."));
            let built = cfg
                .build::<Backend>(base, LoadOptions::new(&device).with_dtype(*dtype))
                .map_err(|e| e.to_string())?;
            crate::malloc::release_free_memory();
            if built.tokenizer.is_none() {
                return Err(format!(
                    "{} names no tokenizer and the LLM folder has no tokenizer.json: set \
                     `tokenizer`",
                    config.display()
                ));
            }
            if !built.random_parts.is_empty() {
                eprintln!(
                    "note: no weights for {} (randomly initialised): answers are not meaningful",
                    built.random_parts.join(", ")
                );
            }
            let info = ModelInfo {
                mode: "mimo",
                model: config.display().to_string(),
                checkpoint: checkpoint.as_ref().map(|c| c.display().to_string()),
                backend: backend::NAME,
                random_parts: built.random_parts.iter().map(|s| s.to_string()).collect(),
            };
            Ok((Engine::Mimo(Box::new(built)), info))
        }
    }
}

/// Starts the model thread: loads the model, then serves jobs from a queue of `capacity`
/// waiting jobs. Returns once the model is loaded (or failed to load).
pub fn spawn(spec: ModelSpec, capacity: usize) -> Result<(SyncSender<Job>, ModelInfo), String> {
    let (jobs, rx) = sync_channel::<Job>(capacity);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mimo-model".into())
        .spawn(move || match load(&spec) {
            Ok((engine, info)) => {
                let _ = ready_tx.send(Ok(info));
                serve(engine, rx);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(|e| format!("cannot start the model thread: {e}"))?;
    let info = ready_rx
        .recv()
        .map_err(|_| "the model thread ended while loading".to_string())??;
    Ok((jobs, info))
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

fn serve(engine: Engine, rx: Receiver<Job>) {
    let mut cache: VecDeque<(String, ImageEmbedding<Backend>)> = VecDeque::new();
    while let Ok(job) = rx.recv() {
        let late = Instant::now() > job.deadline;
        match job.task {
            Task::Segment {
                key,
                image,
                prompt,
                multimask,
                reply,
            } => {
                if reply.is_closed() {
                    continue;
                }
                if late {
                    let _ = reply.send(Err(ApiError::timeout()));
                    continue;
                }
                let result = catch_unwind(AssertUnwindSafe(|| {
                    segment(engine.sam(), &mut cache, key, &image, &prompt, multimask)
                }))
                .unwrap_or_else(|p| Err(ApiError::internal(panic_message(p))));
                let _ = reply.send(result);
            }
            Task::Answer {
                image,
                question,
                prompts,
                generation,
                events,
            } => {
                if events.is_closed() {
                    continue;
                }
                if late {
                    let _ = events.send(AnswerEvent::Failed(ApiError::timeout()));
                    continue;
                }
                let Engine::Mimo(built) = &engine else {
                    let _ = events.send(AnswerEvent::Failed(ApiError::bad_request(
                        "this server runs SAM alone (--sam): questions need a MIMO model \
                         (--config)",
                    )));
                    continue;
                };
                let result = catch_unwind(AssertUnwindSafe(|| {
                    answer(
                        built,
                        &image,
                        question,
                        prompts,
                        &generation,
                        &events,
                        job.deadline,
                    )
                }))
                .unwrap_or_else(|p| Err(ApiError::internal(panic_message(p))));
                let _ = events.send(match result {
                    Ok(a) => AnswerEvent::Done(Box::new(a)),
                    Err(e) => AnswerEvent::Failed(e),
                });
            }
        }
    }
}

fn mask_out(mask: &[bool], w: usize, h: usize, predicted_iou: f32) -> Result<MaskOut, ApiError> {
    let png = overlay::mask_png(mask, w, h).map_err(ApiError::internal)?;
    Ok(MaskOut {
        predicted_iou,
        area: mask.iter().filter(|&&v| v).count() as u64,
        rle: Rle::encode(mask, h, w),
        png: base64::engine::general_purpose::STANDARD.encode(png),
    })
}

fn segment(
    sam: &Sam<Backend>,
    cache: &mut VecDeque<(String, ImageEmbedding<Backend>)>,
    key: String,
    image: &Image,
    prompt: &Prompt,
    multimask: bool,
) -> Result<SegmentOut, ApiError> {
    let started = Instant::now();
    let (w, h) = (image.width(), image.height());
    prompt
        .validate(w, h, sam.low_res_size())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Most recently used last: a hit moves to the back, a miss is computed and pushed there.
    let hit = cache
        .iter()
        .position(|(k, _)| *k == key)
        .and_then(|i| cache.remove(i));
    let cached_embedding = hit.is_some();
    let entry = hit.unwrap_or_else(|| (key, sam.embed_image(image)));
    cache.push_back(entry);
    while cache.len() > 4 {
        cache.pop_front();
    }
    let Some((_, embedding)) = cache.back() else {
        return Err(ApiError::internal("the embedding cache is empty"));
    };
    let pred: MaskPrediction<Backend> = sam
        .predict(embedding, prompt, multimask)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let host = pred.to_host().map_err(ApiError::internal)?;
    Backend::sync(&backend::device())
        .map_err(|e| ApiError::internal(format!("backend error: {e:?}")))?;
    let masks = (0..host.ious.len())
        .map(|k| mask_out(host.mask(k), w, h, host.ious[k]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SegmentOut {
        width: w,
        height: h,
        best: host.best,
        masks,
        seconds: started.elapsed().as_secs_f64(),
        cached_embedding,
    })
}

fn answer(
    built: &MimoBuild<Backend>,
    image: &Image,
    question: String,
    prompts: Vec<VisualPrompt>,
    generation: &GenerationConfig,
    events: &mpsc::UnboundedSender<AnswerEvent>,
    deadline: Instant,
) -> Result<AnswerOut, ApiError> {
    let started = Instant::now();
    let tok = built
        .tokenizer
        .as_ref()
        .ok_or_else(|| ApiError::internal("the model has no tokenizer"))?;
    let mut generation = generation.clone();
    generation.eos_token_id = vec![tok.ids().eos];
    generation.pad_token_id = tok.ids().pad();
    // Generation stops at the deadline or when the client has gone (its receiver dropped).
    let stop = || Instant::now() > deadline || events.is_closed();
    let a = built
        .model
        .answer_batch_until(
            tok,
            &built.template,
            &[AnswerRequest {
                image,
                question: &question,
                prompts: &prompts,
            }],
            &generation,
            &mut |_, t| {
                let _ = events.send(AnswerEvent::Text(t.to_string()));
            },
            &stop,
        )
        .map(|mut v| v.remove(0))
        .map_err(|e| match e {
            MimoError::Input(m) => ApiError::bad_request(m),
            e => ApiError::internal(e.to_string()),
        })?;
    let (w, h) = (image.width(), image.height());
    let segments = a
        .segments
        .iter()
        .map(|s| {
            Ok(SegmentJson {
                phrase: s.phrase.clone(),
                char_span: s.char_span,
                mask: mask_out(&s.mask, w, h, s.score)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(AnswerOut {
        width: w,
        height: h,
        question,
        prompts,
        text: a.text,
        raw: a.raw,
        finish: format!("{:?}", a.finish),
        segments,
        seconds: started.elapsed().as_secs_f64(),
    })
}
