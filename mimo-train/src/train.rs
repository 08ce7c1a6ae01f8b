//! Running an experiment: the run directory, the data of each stage, the model with its
//! trainable set, burn-train's learner with MIMO's strategy (accumulation, global-norm
//! clipping, a schedule counted in optimiser steps, step checkpoints and exact resume).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, Optimizer};
use burn::prelude::*;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{ItemLazy, IterationSpeedMetric, LearningRateMetric};
use burn::train::{Learner, SupervisedTraining, TrainingStrategy};
use mimo_core::mimo::{MimoBuild, MimoConfig};
use mimo_data::batch::{MimoBatch, MimoBatcher, RecordsDataset, Sample};
use mimo_data::mix::MixedDataset;
use mimo_data::record::Record;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainState};
use crate::cluster::{Cluster, ClusterNode};
use crate::collective::{DeviceAllReduce, ThroughFirstDevice};
use crate::error::other;
use crate::experiment::{ActivationCheckpointing, Experiment, GradientSync, StageSpec};
use crate::metrics::{MimoMetric, MimoMetricKind};
use crate::optim::{Snapshotting, WarmupDecay};
use crate::params::{PathIds, all_paths, fnv, set_grad, trained_paths};
use crate::renderer::{Display, RendererBox, renderer};
use crate::step::{MimoStepStats, MimoTrainer};
use crate::strategy::{AllReduceParts, OptimRecord, StageResult, StageRun, add};

pub use crate::checkpoint::{FINAL_DIR, RUN_FILE, TRAIN_CSV, VALID_CSV};
pub use crate::error::TrainError;
pub use crate::strategy::{MimoComponents, MimoOptimizer};

/// How to run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run directory: created (must not exist yet), or, with `resume`, an earlier
    /// run's directory to continue.
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` from its newest checkpoint.
    pub resume: bool,
    /// How progress is shown.
    pub display: Display,
    /// Stop after this many optimiser steps in this process (tests, time-boxed runs);
    /// the run can be resumed.
    pub max_steps: Option<usize>,
    /// Stop after this much wall time; a checkpoint is written first.
    pub max_seconds: Option<f64>,
    /// This process's place in a multi-node run (required when the experiment's
    /// `batch.nodes` is above 1; each node writes its own run directory).
    pub cluster: Option<ClusterNode>,
}

/// What `run.json` records (what `mimo report` and `mimo eval` read).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// The experiment's name.
    pub experiment: String,
    /// The model file.
    pub model: PathBuf,
    /// The records trained on.
    pub records: PathBuf,
    /// Share of MIMOSeg training records used.
    pub data_ratio: f64,
    /// Whether the model has the aligner.
    pub aligner: bool,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Whether every stage ran to its end.
    pub finished: bool,
    /// Training samples per stage (after the ratio subset and mixing).
    pub samples: Vec<usize>,
    /// The final trained parts (a checkpoint directory for `mimo infer --checkpoint`).
    pub final_checkpoint: Option<PathBuf>,
    /// Wall-clock seconds spent training (all processes of the run).
    pub seconds: f64,
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// What `run.json` says.
    pub info: RunInfo,
}

/// The resolved experiment file inside a run directory.
pub const EXPERIMENT_FILE: &str = "experiment.ron";

/// The data batcher for a built model.
pub fn batcher_for<B: Backend>(
    build: &MimoBuild<B>,
    max_text_len: usize,
) -> Result<MimoBatcher, TrainError> {
    let tokenizer = build.tokenizer.clone().ok_or_else(|| {
        other("the model file names no tokenizer and the LLM folder has no tokenizer.json: set `tokenizer`")
    })?;
    Ok(MimoBatcher::for_model(
        tokenizer,
        build.template.clone(),
        &build.config.clip,
        &build.config.sam,
        max_text_len,
    ))
}

/// The resolved inputs of a run.
struct Prepared {
    exp: Experiment,
    records_path: PathBuf,
    mimoseg_train: Vec<Record>,
    records_root: PathBuf,
    vqa: Vec<(Vec<Record>, PathBuf)>,
    valid: Vec<Record>,
}

fn prepare(exp: Experiment, exp_dir: &Path, run_dir: &Path) -> Result<Prepared, TrainError> {
    let records_path = match (&exp.data.records, &exp.data.build) {
        (Some(r), _) => exp_dir.join(r),
        (None, Some(cfg)) => {
            let out = run_dir.join("data");
            let records = out.join("records.jsonl");
            if !records.is_file() {
                let cfg_path = exp_dir.join(cfg);
                let dc = mimo_data::build::DatasetConfig::load(&cfg_path).map_err(other)?;
                mimo_data::build::build(&dc, &out, &mut |_, _, _| {}).map_err(other)?;
            }
            records
        }
        (None, None) => unreachable!("validated"),
    };
    let root = records_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let all: Vec<Record> = mimo_data::record::read_jsonl(&records_path).map_err(other)?;
    let mimoseg_train: Vec<Record> = all
        .iter()
        .filter(|r| r.split == exp.data.train_split)
        .filter(|r| {
            exp.data.ratio >= 1.0 || mimo_data::build::in_ratio(r, exp.data.ratio, exp.seed)
        })
        .cloned()
        .collect();
    let mut valid: Vec<Record> = all
        .into_iter()
        .filter(|r| r.split == exp.data.valid_split)
        .collect();
    if let Some(n) = exp.validation.max_samples {
        valid.truncate(n);
    }
    let mut vqa = Vec::new();
    for v in &exp.data.vqa {
        let path = exp_dir.join(&v.path);
        let (records, _skipped) =
            mimo_data::mix::read_llava_vqa(&path, &v.source).map_err(other)?;
        let images = match &v.images {
            Some(i) => exp_dir.join(i),
            None => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        };
        vqa.push((records, images));
    }
    Ok(Prepared {
        exp,
        records_path,
        mimoseg_train,
        records_root: root,
        vqa,
        valid,
    })
}

fn stage_dataset(
    p: &Prepared,
    stage_index: usize,
    stage: &StageSpec,
) -> Result<MixedDataset<RecordsDataset>, TrainError> {
    let keys = p.exp.data.clip_cache.is_some();
    let mut groups = vec![
        RecordsDataset::from_records(p.mimoseg_train.clone(), p.records_root.clone())
            .with_image_keys(keys),
    ];
    let mut weights = vec![stage.mimoseg_weight];
    for (records, root) in &p.vqa {
        groups.push(
            RecordsDataset::from_records(records.clone(), root.clone()).with_image_keys(keys),
        );
        weights.push(stage.vqa_weight / p.vqa.len() as f64);
    }
    let natural: usize = groups
        .iter()
        .zip(&weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(g, _)| g.len())
        .sum();
    let len = stage.samples_per_epoch.unwrap_or(natural);
    if natural == 0 {
        return Err(other(format!(
            "stage `{}`: no training records (split `{}` of {} after the {} ratio subset{})",
            stage.name,
            p.exp.data.train_split,
            p.records_path.display(),
            p.exp.data.ratio,
            if p.vqa.is_empty() {
                ""
            } else {
                ", and the VQA files"
            }
        )));
    }
    MixedDataset::new(
        groups,
        &weights,
        len,
        p.exp.seed ^ ((stage_index as u64 + 1) * 0x9E37),
    )
    .map_err(|e| other(format!("stage `{}`: {e}", stage.name)))
}

/// Runs (or resumes) an experiment on `devices` (as many as the experiment's
/// `batch.devices`; the first holds the optimiser). Returns where the run is and what it did.
///
/// Randomness (a random component's initialisation, dropout) comes from the backend's seed,
/// which is process-wide: run one training per process, or none beside other code that draws
/// random numbers, to get reproducible runs.
pub fn train<B: AutodiffBackend>(
    experiment_path: Option<&Path>,
    options: &TrainOptions,
    devices: &[B::Device],
) -> Result<RunOutcome, TrainError> {
    train_with_all_reduce::<B>(
        experiment_path,
        options,
        devices,
        Arc::new(ThroughFirstDevice),
    )
}

/// [`train`], summing the devices' gradients with `all_reduce` when the experiment's
/// `batch.gradient_sync` is `AllReduce` ([`train`] sums through the first device; on CUDA,
/// [`crate::collective`]'s `Nccl` with the `nccl` feature).
pub fn train_with_all_reduce<B: AutodiffBackend>(
    experiment_path: Option<&Path>,
    options: &TrainOptions,
    devices: &[B::Device],
    all_reduce: Arc<dyn DeviceAllReduce<B::InnerBackend>>,
) -> Result<RunOutcome, TrainError> {
    // Absolute, so the paths run.json records work from any working directory.
    let run_dir = std::path::absolute(&options.run_dir)
        .map_err(|e| other(format!("{}: {e}", options.run_dir.display())))?;
    let t_start = Instant::now();
    // The experiment: from its file for a new run, from the run directory on resume.
    let (exp, exp_dir, resume_from) = if options.resume {
        let f = run_dir.join(EXPERIMENT_FILE);
        if !f.is_file() {
            return Err(other(format!(
                "{} is not a run directory ({} is missing)",
                run_dir.display(),
                f.display()
            )));
        }
        let exp = Experiment::load(&f)?;
        let latest = checkpoint::list(&run_dir).pop();
        (exp, run_dir.clone(), latest)
    } else {
        let path = experiment_path.ok_or_else(|| other("no experiment file given"))?;
        let exp = Experiment::load(path)?;
        if run_dir.exists()
            && std::fs::read_dir(&run_dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(other(format!(
                "run directory {} already exists and is not empty: runs never overwrite \
                 each other (pass --resume to continue it)",
                run_dir.display()
            )));
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (absolutize(exp, &dir), dir, None)
    };
    // Everything that can be checked without work is checked before the run directory exists.
    let exp_file = match (options.resume, experiment_path) {
        (false, Some(p)) => p.to_path_buf(),
        _ => run_dir.join(EXPERIMENT_FILE),
    };
    let field = |f: &str, m: String| {
        other(format!(
            "{}: experiment field `{f}` {m}",
            exp_file.display()
        ))
    };
    let accumulation = exp.batch.accumulation().map_err(|(f, m)| field(&f, m))?;
    if devices.len() != exp.batch.devices {
        return Err(field(
            "batch.devices",
            format!(
                "is {} but {} device(s) were given (--devices)",
                exp.batch.devices,
                devices.len()
            ),
        ));
    }
    match (&options.cluster, exp.batch.nodes) {
        (None, n) if n > 1 => {
            return Err(field(
                "batch.nodes",
                format!("is {n}: give this process its place in the run (--node-rank, --nodes-at)"),
            ));
        }
        (Some(_), 1) => {
            return Err(field(
                "batch.nodes",
                "is 1 but a node rank was given (--node-rank, --nodes-at)".into(),
            ));
        }
        _ => {}
    }
    exp.check_files(&exp_dir).map_err(|(f, m)| field(f, m))?;
    exp.check_recompute(&exp_dir, devices.len())
        .map_err(|(f, m)| field(f, m))?;
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| other(format!("cannot create {}: {e}", run_dir.display())))?;
    if !options.resume {
        mimo_core::fsutil::write_atomic(&run_dir.join(EXPERIMENT_FILE), exp.to_ron().as_bytes())
            .map_err(other)?;
    }
    let device = &devices[0];
    let prepared = prepare(exp.clone(), &exp_dir, &run_dir)?;

    // The model: seeded, so random parts (a tiny model's components) are the same in a
    // resumed process.
    B::seed(device, exp.seed);
    let model_path = exp_dir.join(&exp.model);
    let mut config = MimoConfig::load(&model_path).map_err(other)?;
    if let Some(a) = exp.aligner {
        config.aligner = a;
    }
    if let Some(l) = exp.loss {
        config.loss = l;
    }
    let base = model_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Frozen parts are read straight into their dtype (no f32 copy of a bf16 7B base).
    let frozen_dtype = exp
        .frozen_dtype()
        .map_err(|e| other(format!("experiment field `frozen_dtype` {e}")))?;
    let build = config
        .build::<B>(
            &base,
            mimo_core::loader::LoadOptions::new(device).with_dtype(frozen_dtype),
        )
        .map_err(other)?;
    let mut batcher = batcher_for(&build, exp.data.max_text_len)?;
    let lora = config.lora.to_peft();
    let aligner = build.model.aligner.is_some();
    // Whole token matrices train unless only the added rows do (split off, see
    // `Mimo::with_new_token_rows_trainable`).
    let whole_rows = exp.train_token_embeddings && !exp.new_token_rows_only;
    let mimo = if exp.new_token_rows_only {
        build
            .model
            .clone()
            .with_new_token_rows_trainable(build.base_vocab_size)
            .map_err(|e| other(format!("experiment field `new_token_rows_only`: {e}")))?
    } else {
        build.model.clone().with_trainable_set(whole_rows)
    };
    let mimo = set_grad(mimo, &exp.train_also, true, "train_also")?;
    // What trains is kept in f32 (so are its optimiser state and gradients).
    let mimo = if frozen_dtype == burn::tensor::DType::F32 {
        mimo
    } else {
        mimo.with_frozen_dtype(frozen_dtype)
    };
    let mut mimo = mimo.map(&mut PathIds { path: Vec::new() });
    // What checkpoints and final/ hold: the trained parameters, and the components that
    // had no weights file (randomly initialised, e.g. a tiny model's towers) so that the
    // model can be rebuilt exactly for evaluation and inference.
    let mut saved_paths = trained_paths(&mimo);
    let random: Vec<String> = build
        .random_parts
        .iter()
        .filter(|p| ["clip", "sam", "llm"].contains(p))
        .map(|p| format!("{p}."))
        .collect();
    for p in all_paths(&mimo) {
        if random.iter().any(|r| p.starts_with(r.as_str())) && !saved_paths.contains(&p) {
            saved_paths.push(p);
        }
    }

    if let Some(dir) = &exp.data.clip_cache {
        if let Some(p) = trained_paths(&mimo).iter().find(|p| p.starts_with("clip.")) {
            return Err(other(format!(
                "experiment field `data.clip_cache`: CLIP trains in this experiment (e.g. `{p}`, \
                 from `train_also`), so its features cannot come from a cache"
            )));
        }
        batcher.clip_cache = Some(Arc::new(clip_cache(
            dir,
            &config,
            &base,
            &build.model.clip,
            &prepared,
        )?));
    }
    let mut state = TrainState::stage_start(0, 0);
    let mut optim_record: Option<OptimRecord<B>> = None;
    if let Some((_, dir)) = &resume_from {
        state = checkpoint::read_state(dir).map_err(other)?;
        let (m, _) = mimo
            .load_params(dir.join(checkpoint::PARAMS_FILE))
            .map_err(other)?;
        mimo = m;
        let opt = dir.join(format!("{}.bin", checkpoint::OPTIMIZER_FILE));
        if opt.is_file() {
            optim_record = Some(
                BinFileRecorder::<FullPrecisionSettings>::new()
                    .load(dir.join(checkpoint::OPTIMIZER_FILE), device)
                    .map_err(|e| other(format!("{}: {e}", opt.display())))?,
            );
        }
        // Drop metric rows written after the checkpoint (the resumed run writes them again).
        for (file, col) in [(TRAIN_CSV, 2), (VALID_CSV, 2)] {
            truncate_csv(&run_dir.join(file), col, state.global_step).map_err(other)?;
        }
    } else if options.resume {
        // Killed before its first checkpoint: the run starts over, and so do its logs.
        for file in [TRAIN_CSV, VALID_CSV] {
            truncate_csv(&run_dir.join(file), 2, 0).map_err(other)?;
        }
    }

    // Every node blocks here until all have joined.
    let cluster = match &options.cluster {
        Some(node) => Some(Arc::new(
            Cluster::<B::InnerBackend>::join(
                node,
                exp.batch.nodes,
                // What every node must agree on (paths may differ between machines).
                fnv(&format!(
                    "{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}",
                    exp.name,
                    exp.batch,
                    exp.optimizer,
                    exp.schedule,
                    exp.stages,
                    exp.seed,
                    exp.train_also,
                    (exp.train_token_embeddings, exp.new_token_rows_only)
                )),
                state.global_step,
            )
            .map_err(other)?,
        )),
        None => None,
    };
    let mut samples = Vec::new();
    let mut stopped_early = false;
    let start_stage = state.stage;
    for (si, stage) in exp.stages.iter().enumerate() {
        let dataset = Arc::new(stage_dataset(&prepared, si, stage)?);
        samples.push(dataset.len());
        if si < start_stage {
            continue;
        }
        if state.epoch > stage.epochs {
            // The checkpoint closed this stage: the next one starts fresh.
            state = TrainState::stage_start(si + 1, state.global_step);
            optim_record = None;
            continue;
        }
        state.stage = si;
        let steps_per_epoch = dataset.len()
            / (exp.batch.per_device * exp.batch.devices * exp.batch.nodes)
            / accumulation;
        if steps_per_epoch == 0 {
            return Err(other(format!(
                "stage `{}` has {} samples, fewer than one global batch of {}",
                stage.name,
                dataset.len(),
                exp.batch.global
            )));
        }
        // This stage's trainable set: the run's, minus the stage's frozen prefixes.
        let staged = set_grad(
            set_grad(
                mimo.clone().with_trainable_set(whole_rows),
                &exp.train_also,
                true,
                "train_also",
            )?,
            &stage.freeze,
            false,
            &format!("stages[{si}].freeze"),
        )?;
        let trainer = MimoTrainer::new(staged)
            .with_recompute(exp.activation_checkpointing == ActivationCheckpointing::DecoderLayers);
        let adamw = || {
            AdamWConfig::new()
                .with_beta_1(exp.optimizer.beta_1)
                .with_beta_2(exp.optimizer.beta_2)
                .with_epsilon(exp.optimizer.epsilon)
                .with_weight_decay(exp.optimizer.weight_decay)
                .init::<B, MimoTrainer<B>>()
        };
        // Under AllReduce, the devices after the first step optimisers of their own, in the
        // same state as the learner's.
        let all_reduce = (exp.batch.gradient_sync == GradientSync::AllReduce && devices.len() > 1)
            .then(|| AllReduceParts {
                reduce: all_reduce.clone(),
                optimizers: Mutex::new(
                    devices[1..]
                        .iter()
                        .map(|_| match &optim_record {
                            Some(r) => adamw().load_record(r.clone()),
                            None => adamw(),
                        })
                        .collect(),
                ),
            });
        let (optim, snapshot) = Snapshotting::new(adamw());
        let scheduler = WarmupDecay {
            peak: exp.optimizer.lr,
            warmup: exp.schedule.warmup_steps,
            total: steps_per_epoch * stage.epochs,
            decay: exp.schedule.decay,
            step: 0,
        };
        let mut learner = Learner::new(trainer, optim, scheduler);
        if let Some(r) = optim_record.take() {
            learner.load_optim(r);
        }
        learner.load_scheduler(state.stage_step);

        let valid_loader: Arc<dyn DataLoader<B::InnerBackend, MimoBatch<B::InnerBackend>>> =
            DataLoaderBuilder::new(batcher.clone())
                .batch_size(exp.validation.batch_size)
                .set_device(device.clone())
                .build(
                    RecordsDataset::from_records(
                        prepared.valid.clone(),
                        prepared.records_root.clone(),
                    )
                    .with_image_keys(exp.data.clip_cache.is_some()),
                );
        let train_loader: Arc<dyn DataLoader<B, MimoBatch<B>>> =
            DataLoaderBuilder::new(batcher.clone())
                .batch_size(exp.batch.per_device)
                .set_device(device.clone())
                .build(RecordsDataset::from_records(Vec::new(), PathBuf::new()));
        let strategy = Arc::new(StageRun::<B> {
            stage_index: si,
            stage: stage.clone(),
            dataset: dataset.clone(),
            batcher: batcher.clone(),
            devices: devices.to_vec(),
            per_device: exp.batch.per_device,
            workers: exp.data.workers,
            all_reduce,
            cluster: cluster.clone(),
            accumulation,
            clip: exp.optimizer.clip_grad_norm,
            seed: exp.seed,
            run_dir: run_dir.clone(),
            keep_last: exp.checkpoint.keep_last,
            every_steps: exp.checkpoint.every_steps,
            saved_paths: saved_paths.clone(),
            snapshot,
            start: state,
            max_steps: options.max_steps,
            deadline: options
                .max_seconds
                .map(|s| t_start + std::time::Duration::from_secs_f64(s)),
            result: Mutex::new(StageResult::default()),
            _b: std::marker::PhantomData,
        });
        let interrupter = burn::train::Interrupter::new();
        let mut training = SupervisedTraining::new(
            run_dir.join("dashboard").join(&stage.name),
            train_loader,
            valid_loader,
        )
        .with_interrupter(interrupter.clone())
        .with_application_logger(None)
        .renderer(RendererBox(renderer(
            options.display,
            10,
            &format!("[{}] ", stage.name),
            &interrupter,
        )))
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(IterationSpeedMetric::new())
        .num_epochs(stage.epochs)
        .with_training_strategy(TrainingStrategy::Custom(strategy.clone()));
        for kind in MimoMetricKind::ALL {
            training = training
                .metric_train_numeric(MimoMetric::new(kind))
                .metric_valid_numeric(MimoMetric::new(kind));
        }
        let result = training.launch(learner);
        let r = std::mem::take(&mut *strategy.result.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(e) = r.error {
            return Err(other(e));
        }
        mimo = <MimoTrainer<B> as AutodiffModule<B>>::from_inner(result.model).mimo;
        state = r.state.unwrap_or(state);
        if r.stopped_early || state.epoch <= stage.epochs {
            stopped_early = true;
            break;
        }
        state = TrainState::stage_start(si + 1, state.global_step);
    }

    if let Some(c) = &cluster {
        c.finish().map_err(other)?;
    }
    let finished = !stopped_early;
    let final_dir = run_dir.join(FINAL_DIR);
    let mut final_checkpoint = None;
    if finished {
        let tmp = run_dir.join(".final.partial");
        let _ = std::fs::remove_dir_all(&tmp);
        // Checkpoint formats hold whole token matrices: split rows go back in first.
        mimo.clone()
            .merge_token_rows()
            .save_checkpoint(&tmp, &lora)
            .map_err(other)?;
        let extra: Vec<String> = saved_paths
            .iter()
            .filter(|p| !mimo_core::mimo::load::is_trained_part(p) && !p.contains(".lora_"))
            .cloned()
            .collect();
        if !extra.is_empty() {
            mimo.save_params(tmp.join(mimo_core::mimo::load::EXTRA_FILE), &extra)
                .map_err(other)?;
        }
        checkpoint::sync_tree(&tmp).map_err(|e| other(format!("{}: {e}", tmp.display())))?;
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir).map_err(other)?;
        final_checkpoint = Some(final_dir);
    }
    let previous = read_run_info(&run_dir).map(|i| i.seconds).unwrap_or(0.0);
    let info = RunInfo {
        experiment: exp.name.clone(),
        model: model_path,
        records: prepared.records_path.clone(),
        data_ratio: exp.data.ratio,
        aligner,
        steps: state.global_step,
        finished,
        samples,
        final_checkpoint,
        seconds: previous + t_start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&info).expect("run info serialises");
    mimo_core::fsutil::write_atomic(&run_dir.join(RUN_FILE), json.as_bytes()).map_err(other)?;
    Ok(RunOutcome { run_dir, info })
}

/// Opens (creating if needed) the experiment's CLIP feature cache and computes the features
/// of every training and validation image not in it yet, with the model's own tower.
fn clip_cache<B: Backend>(
    dir: &Path,
    config: &MimoConfig,
    base: &Path,
    tower: &mimo_core::clip::ClipVision<B>,
    prepared: &Prepared,
) -> Result<mimo_core::clip::cache::FeatureCache, TrainError> {
    use mimo_core::clip::cache::{CacheManifest, FeatureCache};
    let field = |e: String| other(format!("experiment field `data.clip_cache`: {e}"));
    let clip_config = config
        .model_config(base, None)
        .map_err(|e| field(e.to_string()))?
        .clip;
    // A tower from one checkpoint file is identified as `mimo clip-cache` does (so its
    // caches are reused); any other tower by a hash of its weights.
    let manifest = match &config.weights.clip {
        Some(p) if config.weights.extra.is_none() => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            CacheManifest::for_checkpoint(&clip_config, p).map_err(|e| field(e.to_string()))?
        }
        _ => CacheManifest::for_weights(&clip_config, tower),
    };
    let mut cache = FeatureCache::open(dir, manifest, 256).map_err(|e| field(e.to_string()))?;
    let mut images: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let groups = std::iter::once((&prepared.mimoseg_train, &prepared.records_root))
        .chain(prepared.vqa.iter().map(|(r, root)| (r, root)))
        .chain(std::iter::once((&prepared.valid, &prepared.records_root)));
    for (records, root) in groups {
        for r in records {
            let p = root.join(&r.image);
            if seen.insert(p.clone()) {
                images.push(p);
            }
        }
    }
    cache
        .fill(tower, &images, 8, &mut |_, _| {})
        .map_err(|e| field(e.to_string()))?;
    Ok(cache)
}

/// Reads a run directory's `run.json`.
pub fn read_run_info(run_dir: &Path) -> Option<RunInfo> {
    let text = std::fs::read_to_string(run_dir.join(RUN_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn truncate_csv(path: &Path, step_col: usize, max_step: usize) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let keep = i == 0
            || line
                .split(',')
                .nth(step_col)
                .and_then(|s| s.parse::<usize>().ok())
                .is_some_and(|s| s <= max_step);
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    mimo_core::fsutil::write_atomic(path, out.as_bytes()).map_err(|e| e.to_string())
}

/// Makes the experiment's paths absolute (a run directory's copy works from anywhere).
fn absolutize(mut exp: Experiment, dir: &Path) -> Experiment {
    let abs = |p: &Path| std::path::absolute(dir.join(p)).unwrap_or_else(|_| dir.join(p));
    exp.model = abs(&exp.model);
    exp.data.records = exp.data.records.as_deref().map(abs);
    exp.data.build = exp.data.build.as_deref().map(abs);
    exp.data.clip_cache = exp.data.clip_cache.as_deref().map(abs);
    for v in &mut exp.data.vqa {
        v.path = abs(&v.path);
        v.images = v.images.as_deref().map(abs);
    }
    exp.base = None;
    exp
}

/// Teacher-forced evaluation: the mean losses, next-token accuracy on answer tokens and
/// mask IoU of `model` over `records` (images relative to `root`), `batch` at a time.
pub fn teacher_forced<B: Backend>(
    model: &mimo_core::mimo::Mimo<B>,
    batcher: &MimoBatcher,
    records: Vec<Record>,
    root: PathBuf,
    batch: usize,
    device: &B::Device,
) -> Result<MimoStepStats, String> {
    let trainer = MimoTrainer::new(model.clone());
    let ds = RecordsDataset::from_records(records, root);
    let mut total = MimoStepStats::default();
    let n = ds.len();
    for start in (0..n).step_by(batch.max(1)) {
        let items: Vec<Sample> = (start..(start + batch.max(1)).min(n))
            .filter_map(|i| ds.get(i))
            .collect();
        let b: MimoBatch<B> =
            burn::data::dataloader::batcher::Batcher::batch(batcher, items, device);
        if let Some((id, why)) = b.skipped.first() {
            return Err(format!("record {id}: {why}"));
        }
        let (_, report) = trainer.forward_batch(&b).map_err(|e| e.to_string())?;
        add(&mut total, &report.sync());
    }
    let k = total.batch_size.max(1) as f64;
    total.loss /= k;
    total.ce /= k;
    total.bce /= k;
    total.dice /= k;
    Ok(total)
}
