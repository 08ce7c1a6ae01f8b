//! Perspective III/IV questions and answers written by a chat model behind an
//! OpenAI-compatible endpoint (the paper used GPT-4o, §4 and Appendix E.2).
//!
//! Each prompt follows the structure of Appendix E.2: the medical entity names, the
//! knowledge of each entity (concatenated for multi-label images, with the request to relate
//! them), a hand-written in-context example, and the perspective-specific requirements
//! (Perspective III: identify the entities through a question that needs reasoning and
//! explain; Perspective IV: analyse the region under the box or point). The model is asked
//! to answer "as if it could see the image" and to reply with a JSON object whose answer
//! marks every entity as `<p>name</p>`; `<SEG>` is appended here and the answer must pass
//! [`crate::qa::validate_answer`]. A rejected generation is counted with its reason and asked
//! again with another seed, up to [`QaEndpoint::attempts`] times.
//!
//! The figures of Appendix E.2 are not reproduced in the paper's text; the wording here is
//! ours, the structure is the paper's. [`messages`] shows exactly what is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use mimo_core::rng::hash64;

use crate::chat::{ChatClient, ChatError, ChatSettings, Message};
use crate::knowledge::{Entry, KnowledgeBase};
use crate::qa::{Rejection, validate_answer};
use crate::record::Perspective;

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_temperature() -> f64 {
    0.7
}
fn default_max_tokens() -> usize {
    600
}
fn default_timeout() -> f64 {
    120.0
}
fn default_retries() -> usize {
    6
}
fn default_initial_backoff() -> f64 {
    1.0
}
fn default_max_backoff() -> f64 {
    60.0
}
fn default_attempts() -> usize {
    3
}
fn default_concurrency() -> usize {
    4
}

/// Where and how to ask (`qa_endpoint: Some((...))` in a `DATASET.ron`). The environment
/// variables `MIMO_QA_BASE_URL` and `MIMO_QA_MODEL` override `base_url` and `model`; the key
/// is read from the variable named by `api_key_env` (no key: no `Authorization` header, as
/// local servers expect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaEndpoint {
    /// Base URL up to the API version (`/chat/completions` is appended).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Model name, e.g. `gpt-4o`.
    pub model: String,
    /// Environment variable holding the key.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Sampling temperature.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// `max_tokens` per completion.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Ask for `response_format: json_object` (OpenAI, vLLM; some servers reject it).
    #[serde(default)]
    pub json_mode: bool,
    /// Per-request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// HTTP retries after transport errors, 408, 409, 429 and 5xx.
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// First back-off in seconds (doubles per retry).
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_s: f64,
    /// Largest back-off in seconds (also caps `Retry-After`).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_s: f64,
    /// Generations per sample: a rejected answer is asked again with another seed; after
    /// this many rejections the sample is left out (and listed in `build.json`).
    #[serde(default = "default_attempts")]
    pub attempts: usize,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Response cache (default `OUT/qa-cache`; relative paths are relative to `OUT`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Accept questions that name an entity (by default they are rejected: the question
    /// must identify entities indirectly, as in the paper's examples).
    #[serde(default)]
    pub allow_names_in_question: bool,
}

impl QaEndpoint {
    /// Checks values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let f = |name: &str, ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("`qa_endpoint.{name}` {what}"))
            }
        };
        f(
            "base_url",
            self.base_url.starts_with("http://") || self.base_url.starts_with("https://"),
            "must start with http:// or https://",
        )?;
        f("model", !self.model.trim().is_empty(), "must not be empty")?;
        f(
            "temperature",
            (0.0..=2.0).contains(&self.temperature),
            "must be in [0, 2]",
        )?;
        f("max_tokens", self.max_tokens >= 16, "must be at least 16")?;
        f(
            "timeout_s",
            self.timeout_s.is_finite() && self.timeout_s > 0.0,
            "must be > 0",
        )?;
        f(
            "initial_backoff_s",
            self.initial_backoff_s.is_finite() && self.initial_backoff_s >= 0.0,
            "must be >= 0",
        )?;
        f(
            "max_backoff_s",
            self.max_backoff_s.is_finite() && self.max_backoff_s >= self.initial_backoff_s,
            "must be >= initial_backoff_s",
        )?;
        f("attempts", self.attempts >= 1, "must be at least 1")?;
        f(
            "concurrency",
            (1..=256).contains(&self.concurrency),
            "must be in [1, 256]",
        )
    }

    /// Client settings, with the environment overrides applied and `cache` resolved
    /// against `out`.
    pub fn settings(&self, out: &Path) -> ChatSettings {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache = match &self.cache {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => out.join(p),
            None => out.join("qa-cache"),
        };
        ChatSettings {
            base_url: env("MIMO_QA_BASE_URL").unwrap_or_else(|| self.base_url.clone()),
            model: env("MIMO_QA_MODEL").unwrap_or_else(|| self.model.clone()),
            api_key: env(&self.api_key_env),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            json_mode: self.json_mode,
            timeout: Duration::from_secs_f64(self.timeout_s),
            max_retries: self.max_retries,
            initial_backoff: Duration::from_secs_f64(self.initial_backoff_s),
            max_backoff: Duration::from_secs_f64(self.max_backoff_s),
            cache,
        }
    }
}

/// The visual prompt of a Perspective IV question.
pub use crate::record::PromptKind;

/// One sample to write a question and answer for.
#[derive(Debug, Clone, PartialEq)]
pub struct QaJob {
    /// The record id (seeds the request).
    pub id: String,
    /// P3 or P4.
    pub perspective: Perspective,
    /// Image modality, e.g. `CT`.
    pub modality: String,
    /// Entities in mask order.
    pub labels: Vec<String>,
    /// The visual prompt (Perspective IV).
    pub prompt: Option<PromptKind>,
}

/// Why a generated question/answer was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QaRejection {
    /// No JSON object with string fields `question` and `answer`.
    #[error("no JSON object with `question` and `answer`: {0}")]
    NotJson(String),
    /// The question carries grounding markup.
    #[error("the question carries <p> or <SEG> markup")]
    MarkupInQuestion,
    /// The question names an entity.
    #[error("the question names `{0}`")]
    NameInQuestion(String),
    /// A Perspective IV question that does not refer to its box or point.
    #[error("the question does not refer to the {0}")]
    PromptNotReferenced(&'static str),
    /// The answer's markup does not mark the entities.
    #[error("{0}")]
    Answer(Rejection),
}

impl QaRejection {
    /// A short name of the reason, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::MarkupInQuestion => "markup_in_question",
            Self::NameInQuestion(_) => "name_in_question",
            Self::PromptNotReferenced(_) => "prompt_not_referenced",
            Self::Answer(Rejection::SegCount { .. }) => "answer_entity_count",
            Self::Answer(Rejection::Entities { .. }) => "answer_entities",
            Self::Answer(Rejection::Markup(_)) => "answer_markup",
        }
    }
}

const SYSTEM: &str = "You are an experienced radiologist and medical educator who writes \
question-answer pairs for training a medical vision-language model. You are given the \
names of the segmented medical entities in one image and reference knowledge about them. \
You cannot see the image, but you write every question and answer in the tone of someone \
looking at it. You never mention labels, masks, reference text or these instructions.";

const EXAMPLE_P3_ONE: &str = r#"Entities: heart (organ). Modality: X-ray.
{"question": "Could you identify the organ in the image that has rhythmic sequences of contractions that propagate through the atrioventricular node and conduction system?", "answer": "The organ is the <p>heart</p>, the rounded soft-tissue shadow in the middle of the chest between the two lungs. Its rhythmic contractions start at the sinoatrial node and spread through the atrioventricular node and the conduction system, which is what the question describes."}"#;

const EXAMPLE_P3_MANY: &str = r#"Entities: liver (organ), liver tumor (lesion). Modality: CT.
{"question": "Which structures in this image show an abnormal growth inside the largest solid organ of the upper abdomen, and how are they related?", "answer": "The large organ filling the right upper abdomen is the <p>liver</p>, which processes nutrients and produces bile. Inside it there is a rounded region of lower attenuation than the surrounding parenchyma, a <p>liver tumor</p>; it arises within the liver tissue, so its position and spread are judged against the liver's outline."}"#;

const EXAMPLE_P4: &str = r#"Entities: heart (organ). Modality: X-ray. Visual prompt: bounding box.
{"question": "Can you provide details about the physiological functions of the area within the bounding box that appears to be conical and situated in the chest?", "answer": "The area within the bounding box is the <p>heart</p>. It pumps blood through the pulmonary and systemic circulations; its rhythm starts at the sinoatrial node, and its size and outline on a chest radiograph help to judge heart failure or pericardial effusion."}"#;

fn knowledge_line(label: &str, e: &Entry) -> String {
    let mut s = format!(
        "- {label} ({}): {} Location: {}.",
        e.kind,
        e.definition.trim(),
        e.location.trim().trim_end_matches('.')
    );
    if let Some(f) = &e.function {
        s.push_str(&format!(" Function: {}.", f.trim().trim_end_matches('.')));
    }
    if let Some(c) = &e.cause {
        s.push_str(&format!(" Cause: {}.", c.trim().trim_end_matches('.')));
    }
    s.push_str(&format!(
        " Typical imaging findings: {}.",
        e.findings.trim().trim_end_matches('.')
    ));
    s
}

/// The chat messages for `job` (system, then one user message with entity names,
/// knowledge, requirements and an in-context example). Errors name a label that has no
/// knowledge.
pub fn messages(job: &QaJob, kb: &KnowledgeBase) -> Result<Vec<Message>, String> {
    let mut entries = Vec::new();
    for l in &job.labels {
        entries.push(kb.get(l).ok_or_else(|| {
            format!("no knowledge for the label `{l}` (add it to a knowledge file)")
        })?);
    }
    let names: Vec<String> = job
        .labels
        .iter()
        .zip(&entries)
        .map(|(l, e)| format!("{l} ({})", e.kind))
        .collect();
    let many = job.labels.len() > 1;
    let mut u = format!(
        "Image modality: {}.\nSegmented medical entities, in this order: {}.\n",
        job.modality,
        names.join(", ")
    );
    if let Some(p) = job.prompt {
        let (what, how) = match p {
            PromptKind::Box => ("bounding box", "is drawn around"),
            PromptKind::Point => ("point", "is placed on"),
        };
        u.push_str(&format!(
            "A {what} {how} the {} in the image.\n",
            job.labels.join(" and ")
        ));
    }
    u.push_str("\nKnowledge:\n");
    for (l, e) in job.labels.iter().zip(&entries) {
        u.push_str(&knowledge_line(l, e));
        u.push('\n');
    }
    u.push_str("\nWrite one question and its answer about this image.\nRequirements:\n");
    let example = match job.perspective {
        Perspective::P4 => {
            let place = match job.prompt {
                Some(PromptKind::Point) => "at the marked point",
                _ => "within the bounding box",
            };
            u.push_str(&format!(
                "- The question asks about the region {place} without naming it, focusing on \
                 what can be seen there and understanding its content (appearance, position, \
                 function or clinical significance). It must contain the words \"{place}\".\n\
                 - The answer first identifies the region and then explains it using the \
                 knowledge.\n"
            ));
            EXAMPLE_P4
        }
        _ => {
            u.push_str(
                "- The question identifies the entities only indirectly, through their \
                 function, position, appearance or clinical significance, so that answering \
                 needs reasoning; it must not name them.\n\
                 - The answer names the entities and gives the reasons that lead to them.\n",
            );
            if many {
                EXAMPLE_P3_MANY
            } else {
                EXAMPLE_P3_ONE
            }
        }
    };
    if many {
        u.push_str(
            "- Consider every entity and how they relate to each other (position, function, \
             disease).\n",
        );
    }
    u.push_str(&format!(
        "- In the answer, mark each entity exactly once as <p>name</p>, spelled exactly as \
         given ({}), in the order given; do not mark anything else.\n\
         - Speak as if you can see the image; do not mention labels, knowledge or these \
         instructions.\n\
         - Reply with one JSON object only: {{\"question\": \"...\", \"answer\": \"...\"}}.\n\
         \nExample:\n{example}\n",
        job.labels
            .iter()
            .map(|l| format!("<p>{l}</p>"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(vec![
        Message::new("system", SYSTEM),
        Message::new("user", u),
    ])
}

/// The JSON object in `content` (bare, or inside a ```json fence, or with text around it).
fn json_object(content: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let start = content.find('{')?;
    let end = content.rfind('}')?;
    if end <= start {
        return None;
    }
    match serde_json::from_str(&content[start..=end]).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

fn contains_word(hay: &str, word: &str) -> bool {
    let hay = hay.to_lowercase();
    let word = word.to_lowercase();
    let mut from = 0;
    while let Some(i) = hay[from..].find(&word) {
        let a = from + i;
        let b = a + word.len();
        let before = hay[..a].chars().next_back();
        let after = hay[b..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if edge(before) && edge(after) {
            return true;
        }
        from = a + word.len().max(1);
    }
    false
}

/// Turns a model reply into a (question, answer) pair: reads the JSON object, appends
/// `<SEG>` after every `</p>` that lacks it, and checks the markup and the question.
pub fn parse_reply(
    content: &str,
    job: &QaJob,
    allow_names_in_question: bool,
) -> Result<(String, String), QaRejection> {
    let clipped: String = content.chars().take(80).collect();
    let obj = json_object(content).ok_or_else(|| QaRejection::NotJson(clipped.clone()))?;
    let field = |k: &str| {
        obj.get(k)
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let (Some(q), Some(a)) = (field("question"), field("answer")) else {
        return Err(QaRejection::NotJson(clipped));
    };
    if q.contains("<p>") || q.contains("</p>") || q.contains("<SEG>") {
        return Err(QaRejection::MarkupInQuestion);
    }
    if !allow_names_in_question && let Some(l) = job.labels.iter().find(|l| contains_word(&q, l)) {
        return Err(QaRejection::NameInQuestion(l.clone()));
    }
    if job.perspective == Perspective::P4 {
        let word = match job.prompt {
            Some(PromptKind::Point) => "point",
            _ => "box",
        };
        if !contains_word(&q, word) && !contains_word(&q, &format!("{word}es")) {
            return Err(QaRejection::PromptNotReferenced(if word == "box" {
                "bounding box"
            } else {
                "point"
            }));
        }
    }
    let mut answer = String::new();
    let mut rest = a.as_str();
    while let Some(i) = rest.find("</p>") {
        answer.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        let t = rest.trim_start();
        if let Some(after) = t.strip_prefix("<SEG>") {
            rest = after;
        }
        answer.push_str("<SEG>");
    }
    answer.push_str(rest);
    validate_answer(&answer, &job.labels).map_err(QaRejection::Answer)?;
    Ok((q, answer))
}

/// One job's outcome: `(question, answer)`, or why the sample is left out.
pub type QaResult = Result<(String, String), String>;

/// What the endpoint phase did (written to `build.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QaReport {
    /// Model asked.
    pub model: String,
    /// Samples asked for.
    pub jobs: usize,
    /// Samples with an accepted question/answer.
    pub accepted: usize,
    /// Samples left out after every attempt was rejected or the endpoint gave up.
    pub failed: usize,
    /// Rejected generations by reason (one sample may add several).
    pub rejected: BTreeMap<String, usize>,
    /// HTTP requests sent (retries included).
    pub requests: usize,
    /// HTTP retries.
    pub retries: usize,
    /// Replies reused from the cache.
    pub cached: usize,
}

/// Generates a question/answer for every job with `concurrency` threads. Results are in
/// job order: `Ok((question, answer))` or `Err(reason)` for a sample left out. A fatal
/// endpoint error (bad key, unknown model) stops the run. `progress(done, total)` is
/// called on the calling thread as jobs finish.
pub fn run_jobs(
    cfg: &QaEndpoint,
    out: &Path,
    kb: &KnowledgeBase,
    jobs: &[QaJob],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<QaResult>, QaReport), ChatError> {
    let client = ChatClient::new(cfg.settings(out));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut results: Vec<Option<QaResult>> = vec![None; jobs.len()];
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    let mut fatal = None;
    std::thread::scope(|s| {
        for _ in 0..cfg.concurrency.min(jobs.len()) {
            let tx = tx.clone();
            let (client, next, stop) = (&client, &next, &stop);
            s.spawn(move || {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let outcome = one_job(client, cfg, kb, job);
                    if tx.send((i, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (i, (result, rejections)) in rx {
            for r in rejections {
                *rejected.entry(r).or_default() += 1;
            }
            match result {
                Err(JobError::Fatal(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    fatal.get_or_insert(e);
                }
                Err(JobError::Left(reason)) => results[i] = Some(Err(reason)),
                Ok(qa) => results[i] = Some(Ok(qa)),
            }
            done += 1;
            progress(done, jobs.len());
        }
    });
    if let Some(e) = fatal {
        return Err(e);
    }
    let results: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not generated".into())))
        .collect();
    let st = &client.stats;
    let report = QaReport {
        model: client.settings().model.clone(),
        jobs: jobs.len(),
        accepted: results.iter().filter(|r| r.is_ok()).count(),
        failed: results.iter().filter(|r| r.is_err()).count(),
        rejected,
        requests: st.requests.load(Ordering::Relaxed),
        retries: st.retries.load(Ordering::Relaxed),
        cached: st.cached.load(Ordering::Relaxed),
    };
    Ok((results, report))
}

enum JobError {
    Fatal(ChatError),
    Left(String),
}

type JobOutcome = (Result<(String, String), JobError>, Vec<String>);

fn one_job(client: &ChatClient, cfg: &QaEndpoint, kb: &KnowledgeBase, job: &QaJob) -> JobOutcome {
    let msgs = match messages(job, kb) {
        Ok(m) => m,
        Err(e) => return (Err(JobError::Left(e)), Vec::new()),
    };
    let mut rejections = Vec::new();
    let mut last = String::new();
    for attempt in 0..cfg.attempts {
        let seed = hash64(&format!("{}/qa/{attempt}", job.id));
        let content = match client.complete(&msgs, seed) {
            Ok(c) => c,
            Err(e @ (ChatError::Fatal { .. } | ChatError::Cache { .. })) => {
                return (Err(JobError::Fatal(e)), rejections);
            }
            Err(ChatError::NoContent(m)) => {
                rejections.push("no_content".to_string());
                last = format!("no content: {m}");
                continue;
            }
            Err(e) => return (Err(JobError::Left(e.to_string())), rejections),
        };
        match parse_reply(&content, job, cfg.allow_names_in_question) {
            Ok(qa) => return (Ok(qa), rejections),
            Err(r) => {
                rejections.push(r.kind().to_string());
                last = r.to_string();
            }
        }
    }
    (
        Err(JobError::Left(format!(
            "{} generation(s) rejected; last: {last}",
            cfg.attempts
        ))),
        rejections,
    )
}

#[cfg(test)]
mod tests;
