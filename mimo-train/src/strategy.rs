//! MIMO's training strategy on burn-train's learner: the optimiser-step loop (micro-batches
//! over devices, accumulation, global-norm clipping, one scheduler step per optimiser step,
//! per-step seeds), validation, metric rows and checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::Progress;
use burn::data::dataset::Dataset;
use std::collections::HashMap;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsAccumulator, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn::train::metric::ItemLazy;
use burn::train::{
    EventProcessorTraining, Learner, LearnerEvent, LearningComponentsMarker,
    SupervisedLearningStrategy, TrainLoader, TrainingComponents, TrainingItem, TrainingModel,
    ValidLoader,
};
use mimo_data::batch::{MimoBatcher, RecordsDataset};
use mimo_data::mix::MixedDataset;

use crate::checkpoint::{self, TrainState};
use crate::checkpoint::{TRAIN_CSV, VALID_CSV};
use crate::cluster::Cluster;
use crate::collective::{DeviceAllReduce, all_reduce_grads};
use crate::experiment::StageSpec;
use crate::optim::SnapshotHandle;
use crate::optim::{Snapshotting, WarmupDecay};
use crate::params::fnv;
use crate::prefetch::{Job, Prefetch, Source};
use crate::step::{MimoStepStats, MimoTrainer, average_and_clip};

/// The optimiser of a MIMO run.
pub type MimoOptimizer<B> = Snapshotting<OptimizerAdaptor<AdamW, MimoTrainer<B>, B>>;
/// burn-train's components of a MIMO run.
pub type MimoComponents<B> =
    LearningComponentsMarker<B, WarmupDecay, MimoTrainer<B>, MimoOptimizer<B>>;
pub(crate) type OptimRecord<B> = <MimoOptimizer<B> as Optimizer<MimoTrainer<B>, B>>::Record;

/// A seeded permutation of `0..n` (xorshift; same for every platform).
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed ^ 0x2545F4914F6CDD1D;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The trained parameters (those that require a gradient) of a module, by id.
struct TrainedTensors<B: AutodiffBackend>(HashMap<ParamId, TensorPrimitive<B>>);

impl<B: AutodiffBackend> ModuleVisitor<B> for TrainedTensors<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        if tensor.is_require_grad() {
            self.0.insert(param.id, tensor.into_primitive());
        }
    }
}

/// Replaces a replica's trained parameters by the main model's, copied to the replica's
/// device; every other parameter (the frozen base) stays where it is.
struct RefreshTrained<'a, B: AutodiffBackend> {
    trained: &'a TrainedTensors<B>,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> ModuleMapper<B> for RefreshTrained<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.trained.0.get(&id) {
            Some(main) => Tensor::<B, D>::from_primitive(main.clone())
                .to_device(self.device)
                .detach()
                .require_grad(),
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The model's copies on the devices after the first, kept for the whole stage.
///
/// burn's multi-device step forks the whole model to every device for every micro-batch;
/// with a frozen 7B base that is ~13.5 GB per device per micro-batch. Here the full copy
/// happens once, and after each optimiser step only the trained parameters move.
struct Replicas<B: AutodiffBackend> {
    models: Vec<MimoTrainer<B>>,
}

impl<B: AutodiffBackend> Replicas<B> {
    fn new(main: &MimoTrainer<B>, devices: &[B::Device]) -> Self {
        let models = devices
            .iter()
            .skip(1)
            .map(|device| main.clone().fork(device))
            .collect();
        Self { models }
    }

    /// The model to run on device `d` (`main` itself on the first device).
    fn get(&self, main: &MimoTrainer<B>, d: usize) -> MimoTrainer<B> {
        if d == 0 {
            main.clone()
        } else {
            self.models[d - 1].clone()
        }
    }

    /// Every device's model, the first device's being `main`.
    fn all(&self, main: &MimoTrainer<B>) -> Vec<MimoTrainer<B>> {
        std::iter::once(main.clone())
            .chain(self.models.iter().cloned())
            .collect()
    }

    /// Brings every replica's trained parameters up to date with `main`'s.
    fn refresh(&mut self, main: &MimoTrainer<B>, devices: &[B::Device]) {
        if self.models.is_empty() {
            return;
        }
        let mut trained = TrainedTensors(HashMap::new());
        main.visit(&mut trained);
        for (model, device) in self.models.iter_mut().zip(&devices[1..]) {
            let old = std::mem::replace(model, main.clone());
            *model = old.map(&mut RefreshTrained {
                trained: &trained,
                device,
            });
        }
    }
}

/// The optimiser of a device after the first under `gradient_sync: AllReduce`.
pub(crate) type ReplicaOptimizer<B> = OptimizerAdaptor<AdamW, MimoTrainer<B>, B>;

/// `batch.gradient_sync: AllReduce`: how the devices' gradients are summed, and the
/// optimisers of the devices after the first (the first device's is the learner's).
pub(crate) struct AllReduceParts<B: AutodiffBackend> {
    pub(crate) reduce: Arc<dyn DeviceAllReduce<B::InnerBackend>>,
    pub(crate) optimizers: Mutex<Vec<ReplicaOptimizer<B>>>,
}

/// Everything MIMO's strategy needs for one stage.
pub(crate) struct StageRun<B: AutodiffBackend> {
    pub(crate) stage_index: usize,
    pub(crate) stage: StageSpec,
    pub(crate) dataset: Arc<MixedDataset<RecordsDataset>>,
    pub(crate) batcher: MimoBatcher,
    /// Devices, the first one holding the optimiser (data parallel: each runs its share of
    /// every micro-batch on its own copy of the model).
    pub(crate) devices: Vec<B::Device>,
    pub(crate) per_device: usize,
    /// Loader threads preparing batches ahead (0: on the training thread).
    pub(crate) workers: usize,
    /// Set when the devices all-reduce their gradients and each steps its own optimiser.
    pub(crate) all_reduce: Option<AllReduceParts<B>>,
    /// The multi-node collective, when the run spans several nodes.
    pub(crate) cluster: Option<Arc<Cluster<B::InnerBackend>>>,
    pub(crate) accumulation: usize,
    pub(crate) clip: Option<f64>,
    pub(crate) seed: u64,
    pub(crate) run_dir: PathBuf,
    pub(crate) keep_last: usize,
    pub(crate) every_steps: Option<usize>,
    pub(crate) saved_paths: Vec<String>,
    pub(crate) snapshot: SnapshotHandle,
    pub(crate) start: TrainState,
    pub(crate) max_steps: Option<usize>,
    pub(crate) deadline: Option<Instant>,
    /// Filled by the strategy.
    pub(crate) result: Mutex<StageResult>,
    pub(crate) _b: std::marker::PhantomData<B>,
}

#[derive(Default)]
pub(crate) struct StageResult {
    pub(crate) error: Option<String>,
    pub(crate) state: Option<TrainState>,
    pub(crate) stopped_early: bool,
}

fn append(path: &Path, header: &str, line: &str) -> Result<(), String> {
    let new = !path.is_file();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if new {
        writeln!(f, "{header}").map_err(|e| e.to_string())?;
    }
    writeln!(f, "{line}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

const TRAIN_HEADER: &str =
    "stage,epoch,step,lr,loss,ce,bce,dice,token_accuracy,mask_iou,grad_norm,seconds";
const VALID_HEADER: &str = "stage,epoch,step,loss,ce,bce,dice,token_accuracy,mask_iou";

pub(crate) fn add(a: &mut MimoStepStats, b: &MimoStepStats) {
    let n = b.batch_size as f64;
    a.loss += b.loss * n;
    a.ce += b.ce * n;
    a.bce += b.bce * n;
    a.dice += b.dice * n;
    a.correct_tokens += b.correct_tokens;
    a.tokens += b.tokens;
    a.intersection += b.intersection;
    a.union += b.union;
    a.batch_size += b.batch_size;
}

fn row(s: &MimoStepStats) -> String {
    let n = s.batch_size.max(1) as f64;
    let pct = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.4}", 100.0 * a / b)
        } else {
            String::new()
        }
    };
    format!(
        "{:.6},{:.6},{:.6},{:.6},{},{}",
        s.loss / n,
        s.ce / n,
        s.bce / n,
        s.dice / n,
        pct(s.correct_tokens, s.tokens),
        pct(s.intersection, s.union)
    )
}

impl<B: AutodiffBackend> StageRun<B> {
    fn fail(&self, e: String) {
        let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if r.error.is_none() {
            r.error = Some(e);
        }
    }

    fn save(&self, learner_model: &MimoTrainer<B>, state: TrainState) -> Result<(), String> {
        let record: Option<OptimRecord<B>> = self.snapshot.take();
        let paths = &self.saved_paths;
        checkpoint::save(&self.run_dir, &state, self.keep_last, |tmp| {
            learner_model
                .mimo
                .save_params(tmp.join(checkpoint::PARAMS_FILE), paths)
                .map_err(|e| e.to_string())?;
            if let Some(record) = record {
                BinFileRecorder::<FullPrecisionSettings>::new()
                    .record(record, tmp.join(checkpoint::OPTIMIZER_FILE))
                    .map_err(|e| format!("cannot write the optimiser state: {e}"))?;
            }
            Ok(())
        })
        .map(|_| ())
    }
}

impl<B: AutodiffBackend> SupervisedLearningStrategy<MimoComponents<B>> for StageRun<B> {
    fn fit(
        &self,
        components: TrainingComponents<MimoComponents<B>>,
        mut learner: Learner<MimoComponents<B>>,
        _train: TrainLoader<MimoComponents<B>>,
        valid: ValidLoader<MimoComponents<B>>,
        _starting_epoch: usize,
    ) -> (
        TrainingModel<MimoComponents<B>>,
        burn::train::SupervisedTrainingEventProcessor<MimoComponents<B>>,
    ) {
        let mut processor = components.event_processor;
        let interrupter = components.interrupter;
        let epochs = self.stage.epochs;
        let n = self.dataset.len();
        let ndev = self.devices.len();
        let (rank, nodes) = self.cluster.as_ref().map_or((0, 1), |c| (c.rank, c.nodes));
        let micro_per_epoch = n / (self.per_device * ndev * nodes);
        let steps_per_epoch = micro_per_epoch / self.accumulation;
        let mut state = self.start;
        let mut steps_here = 0usize;
        let started = Instant::now();
        let train_csv = self.run_dir.join(TRAIN_CSV);
        let valid_csv = self.run_dir.join(VALID_CSV);
        let mut replicas = Replicas::new(&learner.model(), &self.devices);
        // Each device sums all devices' gradients and steps its own optimiser (one node).
        let all_reduce = self.all_reduce.is_some() && ndev > 1;
        let source = Source::<B> {
            dataset: self.dataset.clone(),
            batcher: Arc::new(self.batcher.clone()),
            devices: Arc::new(self.devices.clone()),
        };
        // All nodes' shares of a micro-batch; this node's devices take theirs from its rank
        // onwards.
        let span = self.per_device * ndev * nodes;
        'epochs: while state.epoch <= epochs {
            let epoch = state.epoch;
            let order = permutation(
                n,
                self.seed ^ fnv(&format!("order/{}/{epoch}", self.stage_index)),
            );
            // The rest of the epoch's batches, one per micro-batch and device, in the order
            // the loop below takes them.
            let jobs: Vec<Job> = (state.step_in_epoch * self.accumulation
                ..steps_per_epoch * self.accumulation)
                .flat_map(|micro| {
                    let first = micro * span + rank * ndev * self.per_device;
                    let order = &order;
                    (0..ndev).map(move |d| Job {
                        device: d,
                        indices: order
                            [first + d * self.per_device..first + (d + 1) * self.per_device]
                            .to_vec(),
                    })
                })
                .collect();
            let mut batches = Prefetch::new(source.clone(), jobs, self.workers);
            let global = Progress {
                items_processed: epoch,
                items_total: epochs,
            };
            // Iterations counted from where this process started the epoch (burn's speed
            // metric divides them by the time since the epoch's first item).
            let first_micro = state.step_in_epoch * self.accumulation;
            while state.step_in_epoch < steps_per_epoch {
                if interrupter.should_stop() {
                    break 'epochs;
                }
                if self.max_steps.is_some_and(|m| steps_here >= m)
                    || self.deadline.is_some_and(|d| Instant::now() >= d)
                {
                    let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
                    r.stopped_early = true;
                    break 'epochs;
                }
                let t0 = Instant::now();
                // Dropout and other randomness depend only on the step: a resumed run draws
                // the same numbers as an uninterrupted one.
                B::seed(
                    &self.devices[0],
                    self.seed ^ fnv(&format!("step/{}/{}", self.stage_index, state.stage_step)),
                );
                let mut accumulator = GradientsAccumulator::<MimoTrainer<B>>::new();
                // Under AllReduce, each device accumulates its own gradients.
                let mut per_device: Vec<GradientsAccumulator<MimoTrainer<B>>> = if all_reduce {
                    (0..ndev).map(|_| GradientsAccumulator::new()).collect()
                } else {
                    Vec::new()
                };
                let mut stats = MimoStepStats::default();
                let lr_next = {
                    learner.lr_step();
                    learner.lr_current()
                };
                for k in 0..self.accumulation {
                    let micro = state.step_in_epoch * self.accumulation + k;
                    let mut device_batches = Vec::with_capacity(ndev);
                    for _ in 0..ndev {
                        match batches.next() {
                            Some(Ok(b)) => device_batches.push(b),
                            Some(Err(e)) => {
                                self.fail(e);
                                break 'epochs;
                            }
                            None => {
                                self.fail("the data loader ran out of batches".into());
                                break 'epochs;
                            }
                        }
                    }
                    let model = learner.model();
                    let replicas = &replicas;
                    // One share of the micro-batch per device, run side by side; gradients
                    // come back to the first device.
                    let results: Vec<Result<_, String>> = std::thread::scope(|scope| {
                        let handles: Vec<_> = device_batches
                            .into_iter()
                            .enumerate()
                            .map(|(d, batch)| {
                                let replica = replicas.get(&model, d);
                                scope.spawn(move || {
                                    if let Some((id, why)) = batch.skipped.first() {
                                        return Err(format!(
                                            "training sample {id} could not be read: {why}"
                                        ));
                                    }
                                    let out = replica.try_step(&batch).map_err(|e| {
                                        format!("training step on {:?}: {e}", batch.ids)
                                    })?;
                                    let grads = if d == 0 || all_reduce {
                                        out.grads
                                    } else {
                                        out.grads.to_device(&self.devices[0], &replica)
                                    };
                                    Ok((grads, out.item))
                                })
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join()
                                    .unwrap_or_else(|_| Err("a device's step panicked".into()))
                            })
                            .collect()
                    });
                    for (d, r) in results.into_iter().enumerate() {
                        let (grads, item) = match r {
                            Ok(x) => x,
                            Err(e) => {
                                self.fail(e);
                                break 'epochs;
                            }
                        };
                        if all_reduce {
                            per_device[d].accumulate(&replicas.get(&model, d), grads);
                        } else {
                            accumulator.accumulate(&model, grads);
                        }
                        add(&mut stats, &item.clone().sync());
                        let item = TrainingItem::new(
                            item,
                            Progress {
                                items_processed: micro + 1,
                                items_total: steps_per_epoch * self.accumulation,
                            },
                            global.clone(),
                            Some(micro + 1 - first_micro),
                            Some(lr_next),
                        );
                        processor.process_train(LearnerEvent::ProcessedItem(item));
                    }
                }
                let last_of_epoch = state.step_in_epoch + 1 == steps_per_epoch;
                let due = self
                    .every_steps
                    .is_some_and(|e| (state.global_step + 1).is_multiple_of(e));
                // Stopping early (step budget, time budget) writes a checkpoint first.
                let time_up = self.deadline.is_some_and(|d| Instant::now() >= d)
                    || self.max_steps.is_some_and(|m| steps_here + 1 >= m);
                if due || last_of_epoch || time_up {
                    self.snapshot.request();
                }
                let norm = if let (true, Some(parts)) = (all_reduce, &self.all_reduce) {
                    // Every device sums all devices' gradients and steps its own optimiser:
                    // the replicas stay identical without copying parameters.
                    let models = replicas.all(&learner.model());
                    let grads: Vec<_> = per_device.iter_mut().map(|a| a.grads()).collect();
                    let summed =
                        match all_reduce_grads::<B, _>(parts.reduce.as_ref(), &models, grads) {
                            Ok(g) => g,
                            Err(e) => {
                                self.fail(format!(
                                    "summing the gradients {}: {e}",
                                    parts.reduce.describe()
                                ));
                                break 'epochs;
                            }
                        };
                    let mut optimizers = parts.optimizers.lock().unwrap_or_else(|e| e.into_inner());
                    let mut norm = 0.0;
                    for (d, (model, grads)) in models.into_iter().zip(summed).enumerate() {
                        let (grads, n) = average_and_clip::<B, _>(
                            &model,
                            grads,
                            self.accumulation * ndev,
                            self.clip,
                        );
                        if d == 0 {
                            norm = n;
                            learner.optimizer_step(grads);
                        } else {
                            replicas.models[d - 1] = optimizers[d - 1].step(lr_next, model, grads);
                        }
                    }
                    norm
                } else {
                    let mut grads = accumulator.grads();
                    if let Some(cluster) = &self.cluster {
                        // Every node's gradients and statistics summed: all replicas take the
                        // same step.
                        match cluster.all_reduce::<B, _>(&learner.model(), grads, &mut stats) {
                            Ok(g) => grads = g,
                            Err(e) => {
                                self.fail(e);
                                break 'epochs;
                            }
                        }
                    }
                    let (grads, norm) = average_and_clip::<B, _>(
                        &learner.model(),
                        grads,
                        self.accumulation * ndev * nodes,
                        self.clip,
                    );
                    learner.optimizer_step(grads);
                    replicas.refresh(&learner.model(), &self.devices);
                    norm
                };
                state.step_in_epoch += 1;
                state.stage_step += 1;
                state.global_step += 1;
                steps_here += 1;
                let line = format!(
                    "{},{epoch},{},{lr_next:.8e},{},{norm:.6},{:.3}",
                    self.stage.name,
                    state.global_step,
                    row(&stats),
                    t0.elapsed().as_secs_f64()
                );
                if let Err(e) = append(&train_csv, TRAIN_HEADER, &line) {
                    self.fail(e);
                    break 'epochs;
                }
                if (due || time_up)
                    && !last_of_epoch
                    && let Err(e) = self.save(&learner.model(), state)
                {
                    self.fail(e);
                    break 'epochs;
                }
            }
            if state.step_in_epoch < steps_per_epoch {
                break;
            }
            processor.process_train(LearnerEvent::EndEpoch(epoch));
            // Validation on the inner (non-autodiff) model.
            let model = learner.model().valid();
            let mut it = valid.iter();
            let mut vstats = MimoStepStats::default();
            let mut i = 0;
            while let Some(batch) = it.next() {
                i += 1;
                if let Some((id, why)) = batch.skipped.first() {
                    self.fail(format!("validation sample {id} could not be read: {why}"));
                    break 'epochs;
                }
                match model.forward_batch(&batch) {
                    Ok((_, report)) => {
                        add(&mut vstats, &report.clone().sync());
                        let item =
                            TrainingItem::new(report, it.progress(), global.clone(), Some(i), None);
                        processor.process_valid(LearnerEvent::ProcessedItem(item));
                    }
                    Err(e) => {
                        self.fail(format!("validation step on {:?}: {e}", batch.ids));
                        break 'epochs;
                    }
                }
            }
            processor.process_valid(LearnerEvent::EndEpoch(epoch));
            if vstats.batch_size > 0 {
                let line = format!(
                    "{},{epoch},{},{}",
                    self.stage.name,
                    state.global_step,
                    row(&vstats)
                );
                if let Err(e) = append(&valid_csv, VALID_HEADER, &line) {
                    self.fail(e);
                    break;
                }
            }
            state.epoch += 1;
            state.step_in_epoch = 0;
            state.epoch_done = true;
            if let Err(e) = self.save(&learner.model(), state) {
                self.fail(e);
                break;
            }
            state.epoch_done = false;
        }
        let _ = started;
        {
            let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
            r.state = Some(state);
        }
        (learner.model(), processor)
    }
}
