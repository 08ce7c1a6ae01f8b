//! Experiment files (`experiments/*.ron`): which model, which data, how to optimise, one or
//! more stages. An experiment may name a `base` file and state only what differs; the two
//! are merged field by field (nested structures merge, lists and values replace).

use std::path::{Path, PathBuf};

use mimo_data::record::Split;
use serde::{Deserialize, Serialize};

mod checkpointing;
mod overrides;
pub use checkpointing::ActivationCheckpointing;
use overrides::{field, merge, parse_value, read, rebase_paths, relative_to};

/// Why an experiment file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The file could not be read.
    #[error("cannot read experiment {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid RON, or a field is unknown, missing or of the wrong type.
    #[error("invalid experiment {path}: {message}")]
    Parse {
        /// The file (with its base chain, for an override).
        path: String,
        /// The parser's message (names the field).
        message: String,
    },
    /// A field has a value that cannot be trained with.
    #[error("invalid experiment {path}: field `{field}` {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// One training experiment, as resolved from its file (and base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment (run directories are named after it).
    pub name: String,
    /// A base experiment this file overrides (relative to this file). Resolved away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    /// The MIMO model file (`configs/mimo/*.ron`), relative to the experiment file.
    pub model: PathBuf,
    /// Overrides the model file's `aligner` switch (`Some(false)`: the paper's "w/o
    /// Aligner" ablation on the same model file).
    #[serde(default)]
    pub aligner: Option<bool>,
    /// Overrides the model file's loss weights (CE, mask BCE, mask Dice).
    #[serde(default)]
    pub loss: Option<mimo_core::mimo::LossWeights>,
    /// The data.
    pub data: DataSpec,
    /// Batch sizes: the global batch is per-device batch × devices × nodes × accumulation.
    pub batch: BatchSpec,
    /// The optimiser.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// The learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Training stages, run in order; the optimiser and schedule restart at each stage.
    pub stages: Vec<StageSpec>,
    /// Extra parameters to train beyond MIMO's trainable set: module-path prefixes such
    /// as `"llm."` (a tiny random LLM has nothing for LoRA to adapt) or
    /// `"sam.prompt_encoder."`. SAM's image encoder cannot be named: its output is
    /// detached, as LISA runs it under `torch.no_grad()`, so it would get no gradient.
    #[serde(default)]
    pub train_also: Vec<String>,
    /// Train the whole `embed_tokens` and `lm_head` matrices (LISA) instead of leaving
    /// them frozen.
    #[serde(default = "yes")]
    pub train_token_embeddings: bool,
    /// With `train_token_embeddings`, train only the rows of MIMO's added tokens (`<SEG>`,
    /// `<p>`, ...) instead of the whole matrices: the base rows stay frozen, and gradients
    /// and AdamW state exist for the added rows only (at 7B: 6 rows × 4096 × 2 instead of
    /// 262 M parameters, about 4.2 GB less). Checkpoints hold the added rows only.
    #[serde(default)]
    pub new_token_rows_only: bool,
    /// Checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// Validation.
    #[serde(default)]
    pub validation: ValidationSpec,
    /// Seed of the data order, the new modules' initialisation and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Activation checkpointing (see [`ActivationCheckpointing`]): `"balanced"` is burn's
    /// per-operation strategy (the `mimo` CLI picks the backend from it), `"decoder_layers"`
    /// recomputes each LLM decoder layer in the backward pass.
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
    /// Mixed precision (burn 0.21 has none built in): `Some("bf16")` (or `"f16"`) reads the
    /// frozen towers and LLM base straight into that dtype and keeps what trains — adapters,
    /// token rows, new modules, SAM's mask decoder — in f32 with f32 optimiser state
    /// (`Mimo::with_frozen_dtype`). `None` or `"f32"`: everything in f32.
    #[serde(default)]
    pub frozen_dtype: Option<String>,
}

impl Experiment {
    /// The dtype of the frozen parts (`frozen_dtype`), f32 by default.
    pub fn frozen_dtype(&self) -> Result<burn::tensor::DType, String> {
        use burn::tensor::DType;
        match self.frozen_dtype.as_deref() {
            None | Some("f32") => Ok(DType::F32),
            Some("bf16") => Ok(DType::BF16),
            Some("f16") => Ok(DType::F16),
            Some(other) => Err(format!(
                "is `{other}`; expected \"f32\", \"bf16\" or \"f16\""
            )),
        }
    }
}

fn yes() -> bool {
    true
}

/// Where the records come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A built dataset's `records.jsonl` (`mimo data build`), relative to the experiment.
    #[serde(default)]
    pub records: Option<PathBuf>,
    /// Or a dataset config (`configs/data/*.ron`) that is built into the run directory
    /// first (phantoms build in seconds; real sources are better built once).
    #[serde(default)]
    pub build: Option<PathBuf>,
    /// Share of the MIMOSeg training records used (the paper's 25/50/75/100 % runs); the
    /// subsets are nested and keep volumes whole.
    #[serde(default = "one")]
    pub ratio: f64,
    /// LLaVA-Med-style VQA conversations (`[{id, image, conversations}]` JSON) mixed in.
    #[serde(default)]
    pub vqa: Vec<VqaSpec>,
    /// Split trained on (`"train"`, `"val"` or `"test"`).
    #[serde(default = "train_split")]
    pub train_split: Split,
    /// Split validated on.
    #[serde(default = "val_split")]
    pub valid_split: Split,
    /// Longest tokenised conversation; longer ones are cut.
    #[serde(default = "max_text_len")]
    pub max_text_len: usize,
    /// A CLIP feature cache directory (relative to the experiment): the frozen tower's
    /// features are read from it instead of running the tower each step. Images not yet in
    /// it are computed with the model's own tower before training starts; a cache made with
    /// another tower is refused. CLIP must not train (`train_also`).
    #[serde(default)]
    pub clip_cache: Option<PathBuf>,
    /// Loader threads that read and batch training samples while the devices compute
    /// (0: on the training thread between steps). Any number trains the same parameters.
    #[serde(default = "workers")]
    pub workers: usize,
}

fn one() -> f64 {
    1.0
}
fn train_split() -> Split {
    Split::Train
}
fn val_split() -> Split {
    Split::Val
}
fn max_text_len() -> usize {
    512
}
fn workers() -> usize {
    2
}

/// Most loader threads an experiment may ask for (`data.workers`).
pub const MAX_WORKERS: usize = 64;

/// One VQA file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqaSpec {
    /// The JSON file.
    pub path: PathBuf,
    /// Folder its `image` fields are relative to (default: the file's folder).
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// Source name in the records.
    pub source: String,
}

/// Batch sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Samples per optimiser step over all devices and nodes (the paper: 40).
    pub global: usize,
    /// Samples per forward pass on one device.
    pub per_device: usize,
    /// Devices (data parallel) on each node.
    #[serde(default = "one_usize")]
    pub devices: usize,
    /// Nodes: processes or machines that each run `devices` devices and exchange their
    /// gradients once per optimiser step (`mimo train --node-rank K --nodes-at …`). One
    /// process per GPU is `devices: 1, nodes: <GPUs>`.
    #[serde(default = "one_usize")]
    pub nodes: usize,
    /// Gradient accumulation; when absent, `global / (per_device × devices × nodes)`.
    #[serde(default)]
    pub accumulation: Option<usize>,
    /// How a node's devices combine their gradients each optimiser step.
    #[serde(default)]
    pub gradient_sync: GradientSync,
}

/// How the devices of a node combine their gradients (`batch.gradient_sync`:
/// `"main_device"` or `"all_reduce"` in experiment files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GradientSync {
    /// The gradients are gathered on the first device, summed there and applied by the one
    /// optimiser; the trained parameters are then copied out to the other devices (burn's
    /// multi-device scheme).
    #[default]
    MainDevice,
    /// Data-distributed parallel: every device keeps its own optimiser; the gradients are
    /// all-reduced (summed onto every device) and every device takes the same step. On CUDA
    /// builds with the `nccl` feature the sum is NCCL's all-reduce (burn's
    /// `DistributedBackend`); elsewhere it goes through the first device. One node only.
    AllReduce,
}

impl TryFrom<String> for GradientSync {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "main_device" => Ok(Self::MainDevice),
            "all_reduce" => Ok(Self::AllReduce),
            _ => Err(format!(
                "unknown gradient_sync `{s}`: use \"main_device\" or \"all_reduce\""
            )),
        }
    }
}

impl From<GradientSync> for String {
    fn from(g: GradientSync) -> String {
        match g {
            GradientSync::MainDevice => "main_device",
            GradientSync::AllReduce => "all_reduce",
        }
        .into()
    }
}

fn one_usize() -> usize {
    1
}

impl BatchSpec {
    /// Micro-batches per optimiser step, checked against the global batch.
    pub fn accumulation(&self) -> Result<usize, (String, String)> {
        for (field, v) in [
            ("batch.per_device", self.per_device),
            ("batch.devices", self.devices),
            ("batch.nodes", self.nodes),
        ] {
            if v == 0 {
                return Err((field.into(), "must be at least 1".into()));
            }
        }
        let per_step = self.per_device * self.devices * self.nodes;
        let product = if self.nodes > 1 {
            format!(
                "per_device {} × devices {} × nodes {}",
                self.per_device, self.devices, self.nodes
            )
        } else {
            format!("per_device {} × devices {}", self.per_device, self.devices)
        };
        match self.accumulation {
            Some(0) => Err(("batch.accumulation".into(), "must be at least 1".into())),
            Some(a) if a * per_step != self.global => Err((
                "batch.global".into(),
                format!(
                    "is {} but {product} × accumulation {a} = {}",
                    self.global,
                    a * per_step
                ),
            )),
            Some(a) => Ok(a),
            None if self.global == 0 || !self.global.is_multiple_of(per_step) => Err((
                "batch.global".into(),
                format!("{} is not a positive multiple of {product}", self.global),
            )),
            None => Ok(self.global / per_step),
        }
    }
}

/// AdamW (with `weight_decay: 0` it is Adam, as the paper states).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Peak learning rate.
    pub lr: f64,
    /// Adam's β₁.
    pub beta_1: f32,
    /// Adam's β₂.
    pub beta_2: f32,
    /// Adam's ε.
    pub epsilon: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the gradients to this global L2 norm (DeepSpeed's `gradient_clipping`);
    /// `None` = no clipping.
    pub clip_grad_norm: Option<f64>,
}

impl Default for OptimizerSpec {
    /// LISA's `train_ds.py`: `AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0)`,
    /// `gradient_clipping: 1.0`, with PyTorch's ε 1e-8.
    fn default() -> Self {
        Self {
            lr: 3e-4,
            beta_1: 0.9,
            beta_2: 0.95,
            epsilon: 1e-8,
            weight_decay: 0.0,
            clip_grad_norm: Some(1.0),
        }
    }
}

/// Linear warm-up from 0 to the peak, then linear decay to 0 at the stage's last
/// optimiser step (DeepSpeed's `WarmupDecayLR`), counted in optimiser steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Warm-up optimiser steps (LISA: 100).
    pub warmup_steps: usize,
    /// Decay to 0 after the warm-up (false: hold the peak).
    pub decay: bool,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            warmup_steps: 100,
            decay: true,
        }
    }
}

/// One stage of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Name (shown on the dashboard and in the run directory).
    pub name: String,
    /// Epochs over the stage's data.
    pub epochs: usize,
    /// Mixing weight of the MIMOSeg records (0 = none).
    #[serde(default = "one")]
    pub mimoseg_weight: f64,
    /// Mixing weight of the VQA conversations (0 = none).
    #[serde(default)]
    pub vqa_weight: f64,
    /// Samples per epoch (default: all records of the groups with a positive weight).
    #[serde(default)]
    pub samples_per_epoch: Option<usize>,
    /// Module-path prefixes frozen in this stage, e.g. `"sam.mask_decoder."` for the VQA
    /// stage.
    #[serde(default)]
    pub freeze: Vec<String>,
}

/// When checkpoints are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Every this many optimiser steps (also at the end of each epoch).
    #[serde(default)]
    pub every_steps: Option<usize>,
    /// Checkpoints kept (older ones are deleted).
    #[serde(default = "two")]
    pub keep_last: usize,
}

fn two() -> usize {
    2
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            every_steps: None,
            keep_last: 2,
        }
    }
}

/// Validation runs at the end of each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Samples per validation batch.
    #[serde(default = "one_usize")]
    pub batch_size: usize,
    /// Use at most this many validation records (default: all).
    #[serde(default)]
    pub max_samples: Option<usize>,
}

impl Default for ValidationSpec {
    fn default() -> Self {
        Self {
            batch_size: 1,
            max_samples: None,
        }
    }
}

impl Experiment {
    /// Reads an experiment file, merging it over its `base` chain, and checks it. Every
    /// relative path in the result is relative to the directory of `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ExperimentError> {
        let path = path.as_ref();
        let mut chain = vec![path.to_path_buf()];
        let mut value = parse_value(path, &read(path)?)?;
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        // Walk the base chain: each base's paths are rebased onto `dir`.
        let mut current = value.clone();
        let mut current_dir = dir.clone();
        loop {
            let b = match field(&current, "base") {
                Some(ron::Value::String(s)) => s.clone(),
                Some(ron::Value::Option(Some(inner))) => match inner.as_ref() {
                    ron::Value::String(s) => s.clone(),
                    _ => break,
                },
                _ => break,
            };
            let base_path = current_dir.join(&b);
            if chain.contains(&base_path) || chain.len() > 16 {
                return Err(ExperimentError::Invalid {
                    path: path.to_path_buf(),
                    field: "base".into(),
                    message: format!("forms a cycle through {}", base_path.display()),
                });
            }
            let mut base = parse_value(&base_path, &read(&base_path)?)?;
            let base_dir = base_path.parent().unwrap_or(Path::new("")).to_path_buf();
            let rel = relative_to(&base_dir, &dir);
            rebase_paths(&mut base, &rel);
            chain.push(base_path);
            current = base.clone();
            current_dir = base_dir;
            value = merge(base, value);
        }
        if let ron::Value::Map(m) = &mut value {
            m.remove(&ron::Value::String("base".into()));
        }
        let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        // Through serde_path_to_error: ron's own message for a value of the wrong type names
        // neither the field nor a position once the files are merged.
        let exp: Experiment = serde_path_to_error::deserialize(value).map_err(|e| {
            let at = e.path().to_string();
            ExperimentError::Parse {
                path: names.join(" over base "),
                message: if at == "." {
                    e.inner().to_string()
                } else {
                    format!("field `{at}`: {}", e.inner())
                },
            }
        })?;
        exp.validate(path)?;
        Ok(exp)
    }

    /// The files this experiment names (paths relative to `exp_dir`), read before any work:
    /// the model file, the records or the dataset description, the VQA files and image
    /// folders. Errors name the field.
    pub fn check_files(&self, exp_dir: &Path) -> Result<(), (&'static str, String)> {
        let model = exp_dir.join(&self.model);
        mimo_core::mimo::MimoConfig::load(&model)
            .map_err(|e| ("model", format!("`{}`: {e}", model.display())))?;
        match (&self.data.records, &self.data.build) {
            (Some(r), _) => {
                let r = exp_dir.join(r);
                if !r.is_file() {
                    return Err(("data.records", format!("`{}`: no such file", r.display())));
                }
            }
            (None, Some(cfg)) => {
                let cfg = exp_dir.join(cfg);
                mimo_data::build::DatasetConfig::load(&cfg)
                    .map_err(|e| ("data.build", format!("`{}`: {e}", cfg.display())))?;
            }
            (None, None) => {}
        }
        for v in &self.data.vqa {
            let path = exp_dir.join(&v.path);
            if !path.is_file() {
                return Err((
                    "data.vqa.path",
                    format!("`{}`: no such file", path.display()),
                ));
            }
            if let Some(i) = &v.images {
                let i = exp_dir.join(i);
                if !i.is_dir() {
                    return Err((
                        "data.vqa.images",
                        format!("`{}`: no such folder", i.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks values that parse but cannot be trained with.
    pub fn validate(&self, path: &Path) -> Result<(), ExperimentError> {
        let bad = |field: &str, message: String| ExperimentError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            message,
        };
        if self.name.trim().is_empty()
            || self
                .name
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(bad(
                "name",
                format!(
                    "`{}` must be non-empty ASCII letters, digits, `-`, `_` or `.`",
                    self.name
                ),
            ));
        }
        match (&self.data.records, &self.data.build) {
            (None, None) => {
                return Err(bad(
                    "data",
                    "needs `records` (a built records.jsonl) or `build` (a dataset config)".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "data",
                    "has both `records` and `build`: name one".into(),
                ));
            }
            _ => {}
        }
        if let Err(e) = self.frozen_dtype() {
            return Err(bad("frozen_dtype", e));
        }
        if self.new_token_rows_only && !self.train_token_embeddings {
            return Err(bad(
                "new_token_rows_only",
                "is true but `train_token_embeddings` is false: there are no token rows to train"
                    .into(),
            ));
        }
        if !(self.data.ratio > 0.0 && self.data.ratio <= 1.0) {
            return Err(bad(
                "data.ratio",
                format!("is {} but must lie in (0, 1]", self.data.ratio),
            ));
        }
        if self.data.max_text_len < 8 {
            return Err(bad("data.max_text_len", "must be at least 8".into()));
        }
        if self.data.workers > MAX_WORKERS {
            return Err(bad(
                "data.workers",
                format!(
                    "is {} but at most {MAX_WORKERS} loader threads are allowed (each keeps up \
                     to two batches on the device)",
                    self.data.workers
                ),
            ));
        }
        self.batch
            .accumulation()
            .map_err(|(field, message)| bad(&field, message))?;
        if self.batch.gradient_sync == GradientSync::AllReduce && self.batch.nodes > 1 {
            return Err(bad(
                "batch.gradient_sync",
                format!(
                    "is \"all_reduce\" but `batch.nodes` is {}: several nodes exchange \
                     gradients through the first device of each (use \"main_device\")",
                    self.batch.nodes
                ),
            ));
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0 && o.lr <= 1.0) {
            return Err(bad(
                "optimizer.lr",
                format!("is {} but must lie in (0, 1]", o.lr),
            ));
        }
        for (name, b) in [
            ("optimizer.beta_1", o.beta_1),
            ("optimizer.beta_2", o.beta_2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad(name, format!("is {b} but must lie in [0, 1)")));
            }
        }
        if o.epsilon.is_nan() || o.epsilon <= 0.0 {
            return Err(bad("optimizer.epsilon", "must be positive".into()));
        }
        if o.weight_decay.is_nan() || o.weight_decay < 0.0 {
            return Err(bad("optimizer.weight_decay", "must be non-negative".into()));
        }
        if let Some(c) = o.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(bad(
                "optimizer.clip_grad_norm",
                format!("is {c} but must be positive (or None)"),
            ));
        }
        if self.stages.is_empty() {
            return Err(bad("stages", "is empty: name at least one stage".into()));
        }
        for (i, s) in self.stages.iter().enumerate() {
            let f = |n: &str| format!("stages[{i}].{n}");
            if s.epochs == 0 {
                return Err(bad(&f("epochs"), "must be at least 1".into()));
            }
            for (n, w) in [
                ("mimoseg_weight", s.mimoseg_weight),
                ("vqa_weight", s.vqa_weight),
            ] {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(bad(&f(n), format!("is {w} but must be ≥ 0")));
                }
            }
            if s.mimoseg_weight + s.vqa_weight <= 0.0 {
                return Err(bad(
                    &f("mimoseg_weight"),
                    "and `vqa_weight` are both 0: the stage has no data".into(),
                ));
            }
            if s.vqa_weight > 0.0 && self.data.vqa.is_empty() {
                return Err(bad(
                    &f("vqa_weight"),
                    "is positive but `data.vqa` names no VQA file".into(),
                ));
            }
            if s.samples_per_epoch == Some(0) {
                return Err(bad(&f("samples_per_epoch"), "must be at least 1".into()));
            }
            if let Some(p) = s.freeze.iter().find(|p| p.is_empty()) {
                return Err(bad(&f("freeze"), format!("has an empty prefix `{p}`")));
            }
        }
        if let Some(p) = self.train_also.iter().find(|p| p.is_empty()) {
            return Err(bad("train_also", format!("has an empty prefix `{p}`")));
        }
        if let Some(p) = self
            .train_also
            .iter()
            .find(|p| p.starts_with("sam.image_encoder"))
        {
            return Err(bad(
                "train_also",
                format!(
                    "names `{p}`, but SAM's image encoder does not train in MIMO: its \
                     output is detached, as LISA runs it under torch.no_grad()"
                ),
            ));
        }
        if self.checkpoint.every_steps == Some(0) {
            return Err(bad("checkpoint.every_steps", "must be at least 1".into()));
        }
        if self.checkpoint.keep_last == 0 {
            return Err(bad("checkpoint.keep_last", "must be at least 1".into()));
        }
        if self.validation.batch_size == 0 {
            return Err(bad("validation.batch_size", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The experiment as RON (what a run directory keeps as `experiment.ron`).
    pub fn to_ron(&self) -> String {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
            .expect("an experiment serialises")
    }
}
