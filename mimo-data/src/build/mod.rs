//! Building a MIMOSeg-style dataset from sources: a RON file lists the sources (synthetic
//! phantoms, 2D image + mask folders), the perspectives to generate, the split shares and
//! the prompt sampling; `build` writes the images and `records.jsonl`.
//!
//! Every sample is generated from `(seed, source, file)` alone, so a build is deterministic,
//! can run in any order, and an interrupted build rerun gives the same records (images
//! already written are kept). Files are written atomically; unreadable inputs are counted
//! and reported with their reason, never silently dropped.

mod output;
mod pool;
mod records;
mod sources;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod strictness_tests;

/// Chat-endpoint generation against a local OpenAI-compatible mock server.
#[cfg(test)]
mod endpoint_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mimo_core::rng::hash64;
use serde::{Deserialize, Serialize};

use crate::knowledge::KnowledgeBase;
use crate::prompts::PointMode;
use crate::qa_endpoint::{QaEndpoint, QaReport};
use crate::record::{Perspective, Record, Split};
use records::InputOut;
use sources::Reader;

pub use sources::Source;

/// Split shares (summing to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    /// Training share.
    pub train: f64,
    /// Validation share.
    pub val: f64,
    /// Test share.
    pub test: f64,
}

impl Default for Splits {
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

fn default_jitter() -> f64 {
    0.1
}

fn default_point_share() -> f64 {
    0.5
}

fn default_perspectives() -> Vec<Perspective> {
    vec![Perspective::P1, Perspective::P2]
}

fn default_point_mode() -> PointMode {
    PointMode::Interior
}

/// A dataset build description (`DATASET.ron`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Dataset name.
    pub name: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// Sources.
    pub sources: Vec<Source>,
    /// Perspectives to generate (P1 and P2 from templates).
    #[serde(default = "default_perspectives")]
    pub perspectives: Vec<Perspective>,
    /// Split shares, by volume.
    #[serde(default)]
    pub splits: Splits,
    /// Box jitter: each side moves outward by up to this share of the box size.
    #[serde(default = "default_jitter")]
    pub box_jitter: f64,
    /// Share of P2 samples with a point prompt (the rest get a box).
    #[serde(default = "default_point_share")]
    pub point_share: f64,
    /// How points are placed.
    #[serde(default = "default_point_mode")]
    pub point_mode: PointMode,
    /// A knowledge file extending the built-in knowledge base (Perspective III/IV).
    #[serde(default)]
    pub knowledge: Option<PathBuf>,
    /// Write Perspective III/IV with a chat model behind an OpenAI-compatible endpoint
    /// (`None`: the built-in offline generator over the knowledge base).
    #[serde(default)]
    pub qa_endpoint: Option<QaEndpoint>,
    /// Threads reading inputs and writing images (default: every core). The records do not
    /// depend on it. Each thread holds one input in memory: a 512 x 512 x 600 CT volume is
    /// about 0.6 GB as f32, so bound this on machines with many cores and little memory.
    #[serde(default)]
    pub workers: Option<usize>,
}

/// What a build is doing, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading inputs, writing images, P-I/P-II (and offline P-III/P-IV) records.
    Inputs,
    /// Asking the chat endpoint for P-III/P-IV questions and answers.
    Questions,
}

/// Why a build failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the field).
        message: String,
    },
    /// The chat endpoint refused the requests (bad key, unknown model) or the reply cache
    /// could not be written.
    #[error("{0}")]
    Endpoint(String),
    /// Every input was skipped (or there was none): nothing to write. The message lists
    /// the reasons.
    #[error("the build produced no record ({} input(s) skipped){}", skipped.len(), reasons(skipped))]
    Empty {
        /// The inputs left out, with their reasons.
        skipped: Vec<Skipped>,
    },
    /// Writing the output failed.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
}

fn reasons(skipped: &[Skipped]) -> String {
    const SHOWN: usize = 5;
    let mut s: String = skipped
        .iter()
        .take(SHOWN)
        .map(|k| format!("\n  {}: {}", k.path, k.reason))
        .collect();
    if skipped.len() > SHOWN {
        s.push_str(&format!(
            "\n  ... ({} more in the list)",
            skipped.len() - SHOWN
        ));
    }
    if skipped.is_empty() {
        s.push_str(": the sources list no input");
    }
    s
}

impl DatasetConfig {
    /// Reads and checks a RON file.
    pub fn load(path: &Path) -> Result<Self, BuildError> {
        let err = |message: String| BuildError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg: Self = ron::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Checks values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let s = self.splits;
        if [s.train, s.val, s.test]
            .iter()
            .any(|v| !(0.0..=1.0).contains(v))
            || (s.train + s.val + s.test - 1.0).abs() > 1e-6
        {
            return Err("`splits`: train, val and test must be in [0, 1] and sum to 1".into());
        }
        if !(0.0..=1.0).contains(&self.point_share) {
            return Err("`point_share` must be in [0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.box_jitter) {
            return Err("`box_jitter` must be in [0, 1]".into());
        }
        for p in &self.perspectives {
            if !matches!(
                p,
                Perspective::P1 | Perspective::P2 | Perspective::P3 | Perspective::P4
            ) {
                return Err(format!(
                    "`perspectives`: {p:?} is not a MIMOSeg perspective; use P1, P2, P3, P4"
                ));
            }
        }
        if let Some(q) = &self.qa_endpoint {
            q.validate()?;
        }
        if self.workers == Some(0) {
            return Err("`workers` must be at least 1 (or absent: every core)".into());
        }
        let mut names = std::collections::HashSet::new();
        for src in &self.sources {
            if !names.insert(src.name()) {
                return Err(format!(
                    "`sources`: the name `{}` is used twice",
                    src.name()
                ));
            }
            if let Source::Phantom {
                count,
                size,
                volumes,
                ..
            } = src
                && (*count == 0 || *size < 16 || *volumes == 0)
            {
                return Err(format!(
                    "`sources`: phantom `{}` needs count >= 1, size >= 16, volumes >= 1",
                    src.name()
                ));
            }
        }
        Ok(())
    }
}

/// The split of a volume: a seeded hash of the volume id, so every slice of a volume lands
/// in the same split and the assignment does not depend on the order of the files.
pub fn split_of(volume: &str, seed: u64, s: Splits) -> Split {
    let u = (hash64(&format!("{seed}/{volume}")) >> 11) as f64 / (1u64 << 53) as f64;
    if u < s.train {
        Split::Train
    } else if u < s.train + s.val {
        Split::Val
    } else {
        Split::Test
    }
}

/// Whether a training record belongs to the `ratio` subset (e.g. 0.25). The decision is a
/// seeded hash of the volume compared with the ratio, so subsets are nested (25 % ⊂ 50 % ⊂
/// 75 % ⊂ 100 %) and volumes are never split.
pub fn in_ratio(record: &Record, ratio: f64, seed: u64) -> bool {
    let key = if record.volume.is_empty() {
        &record.id
    } else {
        &record.volume
    };
    let u = (hash64(&format!("ratio/{seed}/{}/{key}", record.source)) >> 11) as f64
        / (1u64 << 53) as f64;
    u < ratio
}

/// One input that was not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// The reason.
    pub reason: String,
}

/// What a build wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildSummary {
    /// Images read or generated.
    pub images: usize,
    /// Images already present from an earlier (interrupted) run and reused.
    pub reused_images: usize,
    /// Records by perspective.
    pub records: BTreeMap<String, usize>,
    /// Records by split.
    pub splits: BTreeMap<String, usize>,
    /// Inputs not used.
    pub skipped: Vec<Skipped>,
    /// The chat-endpoint phase (requests, cache hits, rejections by reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<QaReport>,
}

/// Builds the dataset into `out` (`records.jsonl`, `images/`, `build.json`; with a chat
/// endpoint also its reply cache, `qa-cache/` by default). `progress(stage, done, total)` is
/// called after each input and, with an endpoint, after each generated question/answer.
pub fn build(
    cfg: &DatasetConfig,
    out: &Path,
    progress: &mut dyn FnMut(Stage, usize, usize),
) -> Result<BuildSummary, BuildError> {
    let mut summary = BuildSummary::default();
    // The inputs, in a fixed order: (source, index in the source).
    let readers = sources::open_all(&cfg.sources, cfg.seed, &mut summary.skipped);
    let inputs: Vec<(usize, usize)> = readers
        .iter()
        .enumerate()
        .flat_map(|(si, r)| (0..r.inputs()).map(move |i| (si, i)))
        .collect();
    output::remove_temporaries(out, &cfg.sources);
    let kb = knowledge_base(cfg)?;
    // Every input read on worker threads; merged in input order, so the records do not
    // depend on the number of workers.
    let outs = pool::run(
        pool::threads(cfg.workers, inputs.len()),
        &inputs,
        |&(si, index)| process_input(cfg, &kb, out, &cfg.sources[si], &*readers[si], index),
        &mut |done, total| progress(Stage::Inputs, done, total),
    )?;
    let mut all = InputOut::default();
    for o in outs {
        all.append(o);
    }
    // Endpoint questions are asked once every input is read.
    if !all.jobs.is_empty()
        && let Some(endpoint) = &cfg.qa_endpoint
    {
        let report = all.ask_endpoint(endpoint, out, &kb, &mut |d, t| {
            progress(Stage::Questions, d, t)
        })?;
        summary.qa = Some(report);
    }
    summary.skipped.extend(all.skipped);
    summary.images = all.images;
    summary.reused_images = all.reused_images;
    let records = all.records;
    summary.count(&records);
    if records.is_empty() {
        return Err(BuildError::Empty {
            skipped: summary.skipped,
        });
    }
    output::write_records(out, &records)?;
    output::write_summary(out, &summary)?;
    Ok(summary)
}

impl BuildSummary {
    /// Adds `records` to the counts by perspective and by split.
    fn count(&mut self, records: &[Record]) {
        for r in records {
            *self
                .records
                .entry(format!("{:?}", r.perspective))
                .or_default() += 1;
            *self.splits.entry(r.split.to_string()).or_default() += 1;
        }
    }
}

/// The built-in knowledge base, extended by the configured knowledge file.
fn knowledge_base(cfg: &DatasetConfig) -> Result<KnowledgeBase, BuildError> {
    Ok(match &cfg.knowledge {
        Some(p) => KnowledgeBase::builtin()
            .with_file(p)
            .map_err(|e| BuildError::Config {
                path: p.clone(),
                message: e.to_string(),
            })?,
        None => KnowledgeBase::builtin(),
    })
}

/// One input (an image, a volume or a series) to records, writing its images; runs on a
/// worker thread. An input that cannot be read is reported in the result's `skipped`; only
/// a write failure is an error.
fn process_input(
    cfg: &DatasetConfig,
    kb: &KnowledgeBase,
    out: &Path,
    src: &Source,
    reader: &dyn Reader,
    index: usize,
) -> Result<InputOut, BuildError> {
    let mut o = InputOut::default();
    let samples = match reader.read(index) {
        Ok(s) => s,
        Err(reason) => {
            o.skipped.push(Skipped {
                path: reader
                    .path(index)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                reason,
            });
            return Ok(o);
        }
    };
    for sample in samples {
        let rel = format!("images/{}/{}.png", src.name(), sample.stem);
        if output::write_image(out, &rel, &sample)? {
            o.reused_images += 1;
        }
        o.images += 1;
        records::sample_records(cfg, kb, src.name(), &sample, &rel, &mut o);
    }
    Ok(o)
}
