//! `mimo train`: run or resume an experiment on burn-train's learner.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use clap::Args;
use mimo_train::collective::{DeviceAllReduce, ThroughFirstDevice};
use mimo_train::experiment::{ActivationCheckpointing, GradientSync};
use mimo_train::{Display, TrainOptions};

use crate::backend;

/// Arguments of `mimo train`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
An experiment file (experiments/*.ron) names the model file, the data, the batch sizes, the
optimiser, the schedule and the stages; an override file names a `base` and only what differs.
Each run gets its own directory (default runs/<name>-<time>) holding experiment.ron (resolved),
run.json, train.csv (one row per optimiser step), valid.csv (one row per epoch), curves.png
(loss, answer-token accuracy, mask IoU and learning rate; redrawn whenever `mimo train`
ends), dashboard/ (burn's metric logs), checkpoints/step-N/ (trained parameters, optimiser
state, position) and, at the end, final/ (peft adapter + trained parts:
`mimo infer --checkpoint RUN/final`). data.workers loader threads (default 2) read and batch
samples while the devices compute.

Several GPUs (batch.devices: N, --devices): with batch.gradient_sync: \"main_device\" (the
default) the first device sums the gradients and steps the one optimiser, then copies the
trained parameters out; with \"all_reduce\" (DDP) every device steps its own optimiser on the
all-reduced gradients, through NCCL in a build with --features nccl.

Progress: burn's terminal dashboard when stdout is a terminal (built with feature `tui`),
log lines on stderr otherwise. Ctrl-C or a crash loses at most the steps since the last
checkpoint: `mimo train --resume RUN_DIR` continues exactly where it stopped.

Examples:
  mimo train experiments/tiny_phantom.ron
  mimo train experiments/tiny_phantom.ron --out runs/try1 --minutes 5
  mimo train --resume runs/try1
  mimo train experiments/mimo_full.ron --devices 0,1,2,3   (with batch.devices: 4)

Several machines (batch.nodes: N > 1): start `mimo train` on each with its rank and every
node's address (the same list everywhere); each trains on its share of every global batch,
and once per optimiser step the nodes exchange their gradients through burn's tensor data
service (burn-communication, WebSocket) and take the same step. Each node writes its own
run directory; resume each with --resume and the same flags. One process per GPU on one
machine is the same with 127.0.0.1 addresses and --devices K for the K-th process:
  mimo train exp.ron --node-rank 0 --nodes-at ws://10.0.0.1:3001,ws://10.0.0.2:3001   (on 10.0.0.1)
  mimo train exp.ron --node-rank 1 --nodes-at ws://10.0.0.1:3001,ws://10.0.0.2:3001   (on 10.0.0.2)")]
pub struct TrainArgs {
    /// The experiment file (not needed with --resume).
    #[arg(value_name = "EXPERIMENT.ron", required_unless_present = "resume")]
    experiment: Option<PathBuf>,
    /// Continue this run directory from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// The run directory (must not exist yet). Default: runs/<name>-<YYYYmmdd-HHMMSS>.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Stop after this many optimiser steps (the run can be resumed).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Stop after this many minutes, writing a checkpoint first (the run can be resumed).
    #[arg(long)]
    minutes: Option<f64>,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    no_dashboard: bool,
    /// Device indices for data-parallel training, e.g. 0,1,2,3 (as many as the experiment's
    /// `batch.devices`; default 0..devices). With `gradient_sync: "main_device"` the first
    /// holds the optimiser; with `"all_reduce"` each holds one.
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    devices: Vec<usize>,
    /// The backend to train on, among those this binary was built with (cargo features
    /// flex, wgpu, cuda). Default: cuda if built in, else wgpu, else flex.
    #[arg(long, value_enum, value_name = "BACKEND")]
    backend: Option<backend::Kind>,
    /// This process's rank in a multi-node run (the experiment's `batch.nodes` > 1): which
    /// share of every global batch it trains on. Needs --nodes-at.
    #[arg(long, value_name = "RANK", requires = "nodes_at")]
    node_rank: Option<usize>,
    /// Every node's address in rank order, as the other nodes reach it, e.g.
    /// ws://10.0.0.1:3001,ws://10.0.0.2:3001. This node's tensor data service listens on the
    /// port of its own entry.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URL,URL,...",
        requires = "node_rank"
    )]
    nodes_at: Vec<String>,
}

fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let (h, m, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}")
}

/// Runs `mimo train`.
pub fn run(args: TrainArgs) -> Result<(), String> {
    let (run_dir, resume) = match (&args.resume, &args.out, &args.experiment) {
        (Some(dir), _, _) => (dir.clone(), true),
        (None, Some(out), _) => (out.clone(), false),
        (None, None, Some(exp)) => {
            let e = mimo_train::Experiment::load(exp).map_err(|e| e.to_string())?;
            (
                PathBuf::from("runs").join(format!("{}-{}", e.name, timestamp())),
                false,
            )
        }
        (None, None, None) => return Err("name an experiment file or --resume RUN_DIR".into()),
    };
    let options = TrainOptions {
        run_dir,
        resume,
        display: if args.no_dashboard {
            Display::Log
        } else {
            Display::Auto
        },
        max_steps: args.max_steps,
        max_seconds: args.minutes.map(|m| m * 60.0),
        cluster: args.node_rank.map(|rank| mimo_train::ClusterNode {
            rank,
            nodes: args.nodes_at.clone(),
        }),
    };
    let kind = args
        .backend
        .unwrap_or_else(backend::Kind::default_kind)
        .check()?;
    eprintln!(
        "{} {} on {}",
        if resume { "resuming" } else { "training into" },
        options.run_dir.display(),
        kind.feature()
    );
    let exp = match (&args.experiment, resume) {
        (Some(e), false) => mimo_train::Experiment::load(e),
        _ => {
            let f = options.run_dir.join(mimo_train::train::EXPERIMENT_FILE);
            if !f.is_file() {
                return Err(format!(
                    "{} is not a run directory ({} is missing)",
                    options.run_dir.display(),
                    f.display()
                ));
            }
            mimo_train::Experiment::load(f)
        }
    }
    .map_err(|e| e.to_string())?;
    if args.node_rank.is_some() {
        // burn-communication's server installs a logger printing INFO lines to stdout
        // unless a subscriber is already set: set a silent one first.
        let _ =
            tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
        eprintln!(
            "node {} of {}: exchanging gradients with {}",
            args.node_rank.unwrap_or_default(),
            exp.batch.nodes,
            args.nodes_at.join(", ")
        );
    }
    let indices: Vec<usize> = if args.devices.is_empty() {
        (0..exp.batch.devices).collect()
    } else {
        args.devices.clone()
    };
    match exp.activation_checkpointing {
        ActivationCheckpointing::Off => {}
        ActivationCheckpointing::Balanced => {
            eprintln!("activation checkpointing: burn's BalancedCheckpointing")
        }
        ActivationCheckpointing::DecoderLayers => {
            eprintln!("activation checkpointing: each decoder layer recomputed in the backward")
        }
    }
    if exp.batch.gradient_sync == GradientSync::AllReduce && indices.len() > 1 {
        let how = if kind == backend::Kind::Cuda && cfg!(feature = "nccl") {
            "NCCL"
        } else {
            "through the first device (NCCL needs a CUDA build with --features nccl)"
        };
        eprintln!("gradients all-reduced over {} devices {how}", indices.len());
    }
    let experiment = args.experiment.as_deref();
    let checkpointing = exp.activation_checkpointing == ActivationCheckpointing::Balanced;
    let owned =
        resume || std::fs::read_dir(&options.run_dir).map_or(true, |mut d| d.next().is_none());
    let out = match kind {
        #[cfg(feature = "flex")]
        backend::Kind::Flex => train_on::<burn::backend::Flex>(
            experiment,
            &options,
            // The CPU backend has one device: several "devices" share the cores (how the
            // data-parallel path is tested without GPUs).
            indices.iter().map(|_| Default::default()).collect(),
            checkpointing,
            Arc::new(ThroughFirstDevice),
        ),
        #[cfg(feature = "wgpu")]
        backend::Kind::Wgpu => train_on::<burn::backend::Wgpu>(
            experiment,
            &options,
            indices
                .iter()
                .map(|&i| burn::backend::wgpu::WgpuDevice::DiscreteGpu(i)) // discrete GPU i
                .collect(),
            checkpointing,
            Arc::new(ThroughFirstDevice),
        ),
        #[cfg(feature = "cuda")]
        backend::Kind::Cuda => train_on::<burn::backend::Cuda>(
            experiment,
            &options,
            indices
                .iter()
                .map(|&i| burn::backend::cuda::CudaDevice::new(i))
                .collect(),
            checkpointing,
            cuda_all_reduce(),
        ),
        #[allow(unreachable_patterns)]
        other => return Err(other.check().err().unwrap_or_default()),
    }
    .map_err(|e| e.to_string());
    // The curves of what was trained, also when training failed part-way (only in a run
    // directory this command owns: one it resumes or one that was new or empty).
    let curves = options.run_dir.join(CURVES_FILE);
    let drawn = owned
        && options.run_dir.join(mimo_train::train::TRAIN_CSV).is_file()
        && match write_curves(&options.run_dir, &curves) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("warning: no curves: {e}");
                false
            }
        };
    let out = out?;
    let i = &out.info;
    println!(
        "{} after {} optimiser steps ({:.0} s): {}",
        if i.finished { "finished" } else { "stopped" },
        i.steps,
        i.seconds,
        out.run_dir.display()
    );
    match &i.final_checkpoint {
        Some(f) => println!(
            "trained parts: {} (mimo infer --checkpoint {})",
            f.display(),
            f.display()
        ),
        None => println!(
            "continue with: mimo train --resume {}",
            out.run_dir.display()
        ),
    }
    if drawn {
        println!("curves: {}", curves.display());
    }
    Ok(())
}

/// [`mimo_train::train`] on backend `B` (with burn's `BalancedCheckpointing` when the
/// experiment's `activation_checkpointing` is `"balanced"`).
fn train_on<B: burn::tensor::backend::Backend>(
    experiment: Option<&Path>,
    options: &TrainOptions,
    devices: Vec<B::Device>,
    checkpointing: bool,
    all_reduce: Arc<dyn DeviceAllReduce<B>>,
) -> Result<mimo_train::RunOutcome, mimo_train::TrainError> {
    if checkpointing {
        mimo_train::train_with_all_reduce::<burn::backend::Autodiff<B, BalancedCheckpointing>>(
            experiment, options, &devices, all_reduce,
        )
    } else {
        mimo_train::train_with_all_reduce::<burn::backend::Autodiff<B>>(
            experiment, options, &devices, all_reduce,
        )
    }
}

/// How `gradient_sync: "all_reduce"` sums the devices' gradients on CUDA: NCCL when built
/// with the `nccl` feature, else through the first device.
#[cfg(feature = "cuda")]
fn cuda_all_reduce() -> Arc<dyn DeviceAllReduce<burn::backend::Cuda>> {
    #[cfg(feature = "nccl")]
    return Arc::new(mimo_train::collective::Nccl);
    #[cfg(not(feature = "nccl"))]
    Arc::new(ThroughFirstDevice)
}

/// The run directory's plot of its training curves (redrawn whenever `mimo train` ends, also
/// when training failed part-way).
pub(crate) const CURVES_FILE: &str = "curves.png";

/// Draws the loss, token-accuracy, mask-IoU and learning-rate curves of the run in `run`
/// (its `train.csv` and `valid.csv`) into the PNG `out`, written atomically.
pub(crate) fn write_curves(run: &Path, out: &Path) -> Result<(), String> {
    let read = |name: &str| std::fs::read_to_string(run.join(name)).unwrap_or_default();
    let img = mimo_bench::report::training_curves(
        &read(mimo_train::train::TRAIN_CSV),
        &read(mimo_train::train::VALID_CSV),
    );
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode {}: {e}", out.display()))?;
    mimo_core::fsutil::write_atomic(out, png.get_ref())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}
