//! Tests of the training crate (one binary: `cargo test -p mimo-train`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;

use crate::experiment::Experiment;
use crate::params::trained_paths;
use crate::step::{MimoTrainer, average_and_clip};
use crate::train::{TrainOptions, batcher_for};

type B = Autodiff<Flex>;

/// Tests that draw random numbers hold this: the backend's seed is process-wide, so a test
/// seeding and building a model while another draws would see other numbers.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mimo-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn every_experiment_file_parses_and_resolves() {
    let dir = repo().join("experiments");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ron") {
            let exp = Experiment::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            // Paths resolve against the experiment's folder.
            assert!(
                dir.join(&exp.model).is_file(),
                "{}: model file",
                p.display()
            );
            names.push(exp.name.clone());
        }
    }
    names.sort();
    for n in [
        "mimo_data_25",
        "mimo_data_50",
        "mimo_data_75",
        "mimo_full",
        "mimo_no_aligner",
        "tiny_phantom",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Overrides change only what they name.
    let full = Experiment::load(dir.join("mimo_full.ron")).unwrap();
    let no_al = Experiment::load(dir.join("mimo_no_aligner.ron")).unwrap();
    assert_eq!(no_al.aligner, Some(false));
    assert_eq!(no_al.data, full.data);
    assert_eq!(no_al.stages, full.stages);
    let d25 = Experiment::load(dir.join("mimo_data_25.ron")).unwrap();
    assert_eq!(d25.data.ratio, 0.25);
    assert_eq!(d25.data.vqa, full.data.vqa);
    assert_eq!(d25.batch, full.batch);
    assert_eq!(full.batch.accumulation(), Ok(20));
    assert_eq!(full.stages[1].freeze, vec!["sam.mask_decoder.".to_string()]);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_experiments_are_rejected_naming_the_field_and_file() {
    let dir = scratch("bad-exp");
    let base = repo().join("experiments/tiny_phantom.ron");
    let base = base.display();
    let cases = [
        (
            format!("(name: \"x\", base: Some(\"{base}\"), learning_rate: 1.0)"),
            "learning_rate",
        ),
        (
            format!("(name: \"x\", base: Some(\"{base}\"), batch: (global: 10, per_device: 4))"),
            "batch.global",
        ),
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), batch: (global: 8, per_device: 2, accumulation: Some(3)))"
            ),
            "batch.global",
        ),
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), batch: (global: 8, per_device: 2, nodes: 3))"
            ),
            "nodes 3",
        ),
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), batch: (global: 8, per_device: 2, nodes: 0))"
            ),
            "batch.nodes",
        ),
        (
            format!("(name: \"x\", base: Some(\"{base}\"), data: (ratio: 1.5))"),
            "data.ratio",
        ),
        (
            format!("(name: \"x\", base: Some(\"{base}\"), data: (workers: 1000))"),
            "data.workers",
        ),
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), batch: (global: 4, per_device: 2, gradient_sync: \"ring\"))"
            ),
            "unknown gradient_sync `ring`",
        ),
        (
            format!("(name: \"x\", base: Some(\"{base}\"), stages: [(name: \"s\", epochs: 0)])"),
            "stages[0].epochs",
        ),
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), stages: [(name: \"s\", epochs: 1, vqa_weight: 1.0)])"
            ),
            "stages[0].vqa_weight",
        ),
        (
            format!("(name: \"x\", base: Some(\"{base}\"), optimizer: (lr: 0.0))"),
            "optimizer.lr",
        ),
        (format!("(name: \"a b\", base: Some(\"{base}\"))"), "name"),
        // Values of the wrong type name their field too.
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), stages: [(name: \"s\", epochs: \"3\")])"
            ),
            "field `stages[0].epochs`",
        ),
        (
            format!("(name: \"x\", base: Some(\"{base}\"), checkpoint: (every_steps: 250))"),
            "field `checkpoint.every_steps`",
        ),
        (
            format!(
                "(name: \"x\", base: Some(\"{base}\"), train_also: [\"sam.image_encoder.blocks.\"])"
            ),
            "torch.no_grad",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let p = write(&dir, &format!("bad{i}.ron"), text);
        let e = Experiment::load(&p).expect_err(text).to_string();
        assert!(e.contains(field), "{text}\n -> {e}");
        assert!(e.contains(&format!("bad{i}.ron")), "{e}");
    }
    // A base cycle.
    let a = write(&dir, "a.ron", "(name: \"a\", base: Some(\"b.ron\"))");
    write(&dir, "b.ron", "(name: \"b\", base: Some(\"a.ron\"))");
    let e = Experiment::load(&a).unwrap_err().to_string();
    assert!(e.contains("cycle"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Float parameter values by module path.
struct Values {
    path: Vec<String>,
    out: BTreeMap<String, Vec<f32>>,
}

impl<Bk: Backend> ModuleVisitor<Bk> for Values {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        let v = p
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap();
        self.out.insert(self.path.join("."), v);
    }
}

/// Gradient values by module path.
struct GradValues<'a> {
    path: Vec<String>,
    grads: &'a GradientsParams,
    out: BTreeMap<String, Vec<f32>>,
}

impl ModuleVisitor<B> for GradValues<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<Flex, D>(p.id) {
            let v = g.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            self.out.insert(self.path.join("."), v);
        }
    }
}

fn values<Bk: Backend, M: Module<Bk>>(m: &M) -> BTreeMap<String, Vec<f32>> {
    let mut v = Values {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    m.visit(&mut v);
    v.out
}

fn phantom_records(dir: &Path) -> PathBuf {
    let cfg =
        mimo_data::build::DatasetConfig::load(&repo().join("configs/data/quickstart.ron")).unwrap();
    mimo_data::build::build(&cfg, dir, &mut |_, _, _| {}).unwrap();
    dir.join("records.jsonl")
}

#[test]
fn one_step_changes_exactly_the_trainable_parameters() {
    let _rng = rng_lock();
    let dir = scratch("one-step");
    let records = phantom_records(&dir.join("data"));
    let device = Default::default();
    let cfg_path = repo().join("configs/mimo/mimo-tiny.ron");
    let cfg = mimo_core::mimo::MimoConfig::load(&cfg_path).unwrap();
    let build = cfg.build::<B>(cfg_path.parent().unwrap(), &device).unwrap();
    let batcher = batcher_for(&build, 160).unwrap();
    let trainer = MimoTrainer::new(build.model.clone().with_trainable_set(true));
    let trainable: std::collections::BTreeSet<String> =
        trained_paths(&trainer).into_iter().collect();
    // MIMO's set: no CLIP, no SAM encoders, no LLM base weight other than the token rows.
    assert!(trainable.iter().any(|p| p.starts_with("mimo.aligner.")));
    assert!(trainable.iter().any(|p| p.contains(".lora_b.")));
    assert!(trainable.contains("mimo.sam.mask_decoder.iou_token.weight"));
    assert!(!trainable.iter().any(|p| p.starts_with("mimo.clip.")));
    assert!(
        !trainable
            .iter()
            .any(|p| p.starts_with("mimo.sam.image_encoder."))
    );
    assert!(!trainable.contains("mimo.llm.model.layers.0.self_attn.q_proj.weight"));
    assert!(!trainable.contains("mimo.vp_encoder.pe_gaussian"));

    let ds =
        mimo_data::batch::RecordsDataset::open(&records, Some(mimo_data::record::Split::Train))
            .unwrap();
    // One sample of each perspective's kind is enough: the first two records.
    let items: Vec<_> = (0..2)
        .map(|i| burn::data::dataset::Dataset::get(&ds, i).unwrap())
        .collect();
    let batch: mimo_data::batch::MimoBatch<B> =
        burn::data::dataloader::batcher::Batcher::batch(&batcher, items, &device);
    let before = values(&trainer);
    let out = trainer.try_step(&batch).unwrap();
    // Global-norm clipping (torch.nn.utils.clip_grad_norm_): one coefficient
    // max / (norm + 1e-6) for every tensor, from the norm over all of them.
    let raw = |g: &GradientsParams| -> BTreeMap<String, Vec<f32>> {
        let mut v = GradValues {
            path: Vec::new(),
            grads: g,
            out: BTreeMap::new(),
        };
        trainer.visit(&mut v);
        v.out
    };
    let before_clip = raw(&out.grads);
    let expected: f64 = before_clip
        .values()
        .flatten()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    let (grads, norm) = average_and_clip::<B, _>(&trainer, out.grads, 1, Some(1.0));
    assert!(
        (norm - expected).abs() < 1e-4 * expected,
        "{norm} vs {expected}"
    );
    assert!(norm > 1.0, "the test needs clipping to happen: norm {norm}");
    let coef = 1.0 / (norm + 1e-6);
    let clipped = raw(&grads);
    assert_eq!(clipped.len(), before_clip.len());
    for (k, g) in &before_clip {
        for (a, b) in g.iter().zip(&clipped[k]) {
            assert!((f64::from(*a) * coef - f64::from(*b)).abs() < 1e-6, "{k}");
        }
    }
    // Averaging over accumulated micro-batches divides by their count before the norm.
    let (grads, half) = average_and_clip::<B, _>(&trainer, grads, 2, None);
    assert!((half - 0.5).abs() < 1e-4, "{half}");
    let mut optim = AdamWConfig::new().init::<B, MimoTrainer<B>>();
    let trainer = optim.step(1e-3, trainer, grads);
    let after = values(&trainer);
    let changed: std::collections::BTreeSet<String> = before
        .iter()
        .filter(|(k, v)| after[*k] != **v)
        .map(|(k, _)| k.clone())
        .collect();
    // SAM's IoU head is in the trained set (the mask decoder trains whole, as in LISA) but
    // MIMO's loss does not use its output, so it gets no gradient and stays put.
    let missing: Vec<_> = trainable
        .difference(&changed)
        .filter(|p| !p.starts_with("mimo.sam.mask_decoder.iou_prediction_head."))
        .collect();
    let extra: Vec<_> = changed.difference(&trainable).collect();
    // Every trainable tensor moved (AdamW moves any tensor with a non-zero gradient), and
    // no frozen tensor did.
    assert!(extra.is_empty(), "frozen parameters changed: {extra:?}");
    assert!(
        missing.is_empty(),
        "trainable parameters unchanged: {missing:?}"
    );
    let _ = trainer.valid();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tensors of the newest checkpoint, by name (the file's key order is not fixed).
fn params_file(run: &Path) -> BTreeMap<String, Vec<u8>> {
    let (_, dir) = crate::checkpoint::list(run).pop().expect("a checkpoint");
    let bytes = std::fs::read(dir.join(crate::checkpoint::PARAMS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, v.data().to_vec()))
        .collect()
}

/// `tiny_phantom.ron` on `records` as `dir/<name>.ron`: one stage `g` of `epochs` epochs of
/// `samples` samples, 4 validation samples, `data_rest` more `data` fields and `rest` more
/// experiment fields (each starting with a comma).
fn tiny_exp(
    dir: &Path,
    records: &Path,
    name: &str,
    (epochs, samples): (usize, usize),
    data_rest: &str,
    rest: &str,
) -> PathBuf {
    let base = repo().join("experiments/tiny_phantom.ron");
    write(
        dir,
        &format!("{name}.ron"),
        &format!(
            "(name: \"{name}\", base: Some(\"{}\"), \
             data: (records: Some(\"{}\"), build: None{data_rest}), \
             stages: [(name: \"g\", epochs: {epochs}, samples_per_epoch: Some({samples}))], \
             validation: (batch_size: 4, max_samples: Some(4)){rest})",
            base.display(),
            records.display()
        ),
    )
}

/// Quiet options for a run in `dir/run`.
fn run_opts(dir: &Path, run: &str, resume: bool, max_steps: Option<usize>) -> TrainOptions {
    TrainOptions {
        run_dir: dir.join(run),
        resume,
        display: crate::Display::Quiet,
        max_steps,
        max_seconds: None,
        cluster: None,
    }
}

/// mimo-tiny with LoRA dropout (MIMO-7B's 0.05 is random at every step; mimo-tiny's is 0).
fn tiny_model_with_dropout(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("configs/mimo/mimo-tiny.ron")).unwrap();
    let configs = repo().join("configs/mimo");
    let text = text
        .replace("\"../", &format!("\"{}/../", configs.display()))
        .replace("dropout: 0.0", "dropout: 0.05");
    assert!(text.contains("dropout: 0.05"));
    write(dir, "mimo-tiny-dropout.ron", &text)
}

#[test]
fn resumed_run_ends_with_the_parameters_of_an_uninterrupted_one() {
    let _rng = rng_lock();
    let dir = scratch("resume");
    let records = phantom_records(&dir.join("data"));
    // With LoRA dropout: the resumed run must draw the same masks.
    let model = tiny_model_with_dropout(&dir);
    let exp = tiny_exp(
        &dir,
        &records,
        "resume",
        (2, 16),
        "",
        &format!(
            ", model: \"{}\", checkpoint: (every_steps: Some(2), keep_last: 2)",
            model.display()
        ),
    );
    let device = Default::default();
    let opts =
        |run: &str, resume: bool, max_steps: Option<usize>| run_opts(&dir, run, resume, max_steps);
    // 16 samples / 4 per step = 4 steps per epoch, 2 epochs.
    let full = crate::train::<B>(Some(&exp), &opts("full", false, None), &[device]).unwrap();
    assert!(full.info.finished);
    assert_eq!(full.info.steps, 8);
    // Interrupted after 3 steps (mid-epoch, after the step-2 checkpoint and one more step
    // that the checkpoint does not hold), then resumed twice.
    let part = crate::train::<B>(Some(&exp), &opts("part", false, Some(3)), &[device]).unwrap();
    assert!(!part.info.finished);
    assert_eq!(part.info.steps, 3);
    let part = crate::train::<B>(None, &opts("part", true, Some(3)), &[device]).unwrap();
    assert_eq!(part.info.steps, 6);
    let part = crate::train::<B>(None, &opts("part", true, None), &[device]).unwrap();
    assert!(part.info.finished);
    assert_eq!(part.info.steps, 8);
    let (a, b) = (
        params_file(&dir.join("full")),
        params_file(&dir.join("part")),
    );
    assert!(!a.is_empty());
    assert!(a == b, "checkpoint parameters differ");
    let a = std::fs::read(dir.join("full/final/trained.safetensors")).unwrap();
    let b = std::fs::read(dir.join("part/final/trained.safetensors")).unwrap();
    assert!(a == b, "final trained parts differ");
    // The metric rows of the resumed run continue the step count without duplicates.
    let csv = std::fs::read_to_string(dir.join("part/train.csv")).unwrap();
    let steps: Vec<usize> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    // Killed before its first checkpoint (here: the checkpoint removed): the resumed run
    // starts over, and its metric log too.
    let early = crate::train::<B>(Some(&exp), &opts("early", false, Some(1)), &[device]).unwrap();
    assert_eq!(early.info.steps, 1);
    let _ = std::fs::remove_dir_all(dir.join("early/checkpoints"));
    let early = crate::train::<B>(None, &opts("early", true, None), &[device]).unwrap();
    assert!(early.info.finished);
    let csv = std::fs::read_to_string(dir.join("early/train.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
    let b = std::fs::read(dir.join("early/final/trained.safetensors")).unwrap();
    assert!(a == b, "final trained parts differ after starting over");
    // A new run never overwrites an earlier one.
    let e = crate::train::<B>(Some(&exp), &opts("full", false, None), &[device]).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every tensor of a run's final trained parts and extra parameters, as f32.
fn final_values(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for f in ["trained.safetensors", "extra.safetensors"] {
        let Ok(bytes) = std::fs::read(run.join("final").join(f)) else {
            continue;
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (k, v) in st.tensors() {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.insert(format!("{f}:{k}"), vals);
        }
    }
    out
}

/// The largest difference between two runs' final tensors (which must be the same set).
fn final_max_diff(a: &Path, b: &Path) -> f32 {
    let (va, vb) = (final_values(a), final_values(b));
    assert_eq!(va.keys().collect::<Vec<_>>(), vb.keys().collect::<Vec<_>>());
    let mut worst = 0f32;
    for (k, x) in &va {
        for (p, q) in x.iter().zip(&vb[k]) {
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

#[test]
fn two_devices_train_like_accumulation_on_one() {
    let _rng = rng_lock();
    let dir = scratch("devices");
    let records = phantom_records(&dir.join("data"));
    let exp = |name: &str, batch: &str| {
        tiny_exp(
            &dir,
            &records,
            name,
            (1, 16),
            "",
            &format!(", batch: {batch}"),
        )
    };
    let one = exp("one", "(global: 4, per_device: 2, devices: 1)");
    let two = exp("two", "(global: 4, per_device: 2, devices: 2)");
    let device: burn::tensor::Device<B> = Default::default();
    let opts = |run: &str| run_opts(&dir, run, false, None);
    // The device count must match the experiment.
    let e = crate::train::<B>(Some(&two), &opts("bad"), &[device]).unwrap_err();
    assert!(e.to_string().contains("batch.devices"), "{e}");
    // One device, 2 micro-batches accumulated, against two devices with one micro-batch
    // each: the same samples per step, the same averaged gradient.
    let a = crate::train::<B>(Some(&one), &opts("one"), &[device]).unwrap();
    let b = crate::train::<B>(Some(&two), &opts("two"), &[device, device]).unwrap();
    assert_eq!((a.info.steps, b.info.steps), (4, 4));
    let worst = final_max_diff(&dir.join("one"), &dir.join("two"));
    println!("two devices vs accumulation: max |diff| {worst:e}");
    assert!(worst <= 1e-5, "parameters differ by {worst}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gradient_sync: AllReduce`: each device steps its own optimiser on the all-reduced
/// gradients. Without accumulation it adds in the same order as `MainDevice` and trains the
/// same bits; with accumulation (each device sums its micro-batches first) within rounding;
/// resumed after a stop, the devices' optimisers continue from the checkpoint's state.
#[test]
fn all_reduce_trains_like_the_main_device() {
    let _rng = rng_lock();
    let dir = scratch("allreduce");
    let records = phantom_records(&dir.join("data"));
    let exp = |name: &str, global: usize, sync: &str| {
        tiny_exp(
            &dir,
            &records,
            name,
            (2, 16),
            "",
            &format!(
                ", batch: (global: {global}, per_device: 1, devices: 2, gradient_sync: \"{sync}\")"
            ),
        )
    };
    let devices: [burn::tensor::Device<B>; 2] = Default::default();
    let run = |e: Option<&Path>, name: &str, resume: bool, max_steps: Option<usize>| {
        crate::train::<B>(e, &run_opts(&dir, name, resume, max_steps), &devices)
            .unwrap()
            .info
            .steps
    };
    for (global, steps) in [(2, 16), (4, 8)] {
        let main = format!("main{global}");
        let ar = format!("ar{global}");
        assert_eq!(
            run(Some(&exp(&main, global, "main_device")), &main, false, None),
            steps
        );
        assert_eq!(
            run(Some(&exp(&ar, global, "all_reduce")), &ar, false, None),
            steps
        );
        let worst = final_max_diff(&dir.join(&main), &dir.join(&ar));
        println!("AllReduce vs MainDevice, global {global}: max |diff| {worst:e}");
        if global == 2 {
            assert_eq!(
                worst, 0.0,
                "no accumulation: the same additions, the same bits"
            );
        } else {
            // The same gradients summed in another order (each device first sums its own
            // micro-batches), then 8 AdamW steps, whose normalisation enlarges the rounding
            // differences of small gradients: 7.1e-6 on an earlier session's machine, 1.15e-5
            // with the same code on an AMD EPYC Zen 4 with AVX-512 (other vector kernels).
            assert!(worst <= 5e-5, "parameters differ by {worst}");
        }
    }
    let e = exp("ar_resumed", 4, "all_reduce");
    assert_eq!(run(Some(&e), "ar_resumed", false, Some(3)), 3);
    assert_eq!(run(None, "ar_resumed", true, None), 8);
    let worst = final_max_diff(&dir.join("ar4"), &dir.join("ar_resumed"));
    assert_eq!(worst, 0.0, "the resumed AllReduce run differs by {worst}");
    // Several nodes exchange through each node's first device: refused by name.
    let bad = write(
        &dir,
        "bad.ron",
        &format!(
            "(name: \"bad\", base: Some(\"{}\"), batch: (global: 4, per_device: 1, devices: 2, \
             nodes: 2, gradient_sync: \"all_reduce\"))",
            repo().join("experiments/tiny_phantom.ron").display()
        ),
    );
    let e = crate::Experiment::load(&bad).unwrap_err().to_string();
    assert!(e.contains("batch.gradient_sync"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small module for the all-reduce layout test.
#[derive(Module, Debug)]
struct TwoLinear<B: Backend> {
    a: burn::nn::Linear<B>,
    b: burn::nn::Linear<B>,
}

/// Replicas whose data reached different parameters (a VQA-only batch leaves the mask
/// decoder without gradients) still sum slot by slot: the all-reduce gives what accumulating
/// the same gradients on one device gives, and a parameter no replica reached stays without
/// a gradient.
#[test]
fn all_reduce_lines_up_replicas_that_reached_different_parameters() {
    use burn::optim::GradientsAccumulator;
    use burn::tensor::Distribution;
    let device = Default::default();
    let m = TwoLinear::<B> {
        a: burn::nn::LinearConfig::new(3, 2).init(&device),
        b: burn::nn::LinearConfig::new(2, 4).init(&device),
    };
    let x = Tensor::<B, 2>::random([5, 3], Distribution::Default, &device);
    // Replica 0 reaches `a` and `b`; replica 1 only `a`.
    let grads = |reach_b: bool| {
        let h = m.a.forward(x.clone());
        let loss = if reach_b {
            m.b.forward(h).sum()
        } else {
            h.powf_scalar(2.0).sum()
        };
        GradientsParams::from_grads::<B, _>(loss.backward(), &m)
    };
    let summed = crate::collective::all_reduce_grads::<B, _>(
        &crate::collective::ThroughFirstDevice,
        &[m.clone(), m.clone()],
        vec![grads(true), grads(false)],
    )
    .unwrap();
    let mut acc = GradientsAccumulator::<TwoLinear<B>>::new();
    acc.accumulate::<B>(&m, grads(true));
    acc.accumulate::<B>(&m, grads(false));
    let want = acc.grads();
    for mut got in summed {
        for id in [m.a.weight.id, m.b.weight.id] {
            let (g, w) = (
                got.remove::<Flex, 2>(id).expect("a summed gradient"),
                want.get::<Flex, 2>(id).expect("an accumulated gradient"),
            );
            assert_eq!(g.into_data(), w.into_data());
        }
    }
    // Neither replica reached `b`: no gradient for it, none made up.
    let only_a = crate::collective::all_reduce_grads::<B, _>(
        &crate::collective::ThroughFirstDevice,
        &[m.clone(), m.clone()],
        vec![grads(false), grads(false)],
    )
    .unwrap();
    for got in only_a {
        assert!(got.get::<Flex, 2>(m.a.weight.id).is_some());
        assert!(got.get::<Flex, 2>(m.b.weight.id).is_none());
    }
}

/// Loader threads prepare batches ahead, in any interleaving: training ends with the same
/// bits as loading on the training thread (two devices, accumulation, two epochs).
#[test]
fn loader_threads_train_the_same_parameters() {
    let _rng = rng_lock();
    let dir = scratch("workers");
    let records = phantom_records(&dir.join("data"));
    let exp = |name: &str, workers: usize| {
        tiny_exp(
            &dir,
            &records,
            name,
            (2, 16),
            &format!(", workers: {workers}"),
            ", batch: (global: 4, per_device: 1, devices: 2)",
        )
    };
    let device: burn::tensor::Device<B> = Default::default();
    let mut runs = Vec::new();
    for workers in [0, 3] {
        let name = format!("w{workers}");
        let e = exp(&name, workers);
        let out = crate::train::<B>(
            Some(&e),
            &run_opts(&dir, &name, false, None),
            &[device, device],
        )
        .unwrap();
        assert_eq!(out.info.steps, 8);
        runs.push(dir.join(name));
    }
    let worst = final_max_diff(&runs[0], &runs[1]);
    assert_eq!(
        worst, 0.0,
        "loader threads changed the parameters by {worst}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `activation_checkpointing`: `true` (read as `"balanced"`) selects burn's
/// `BalancedCheckpointing` (memory-bound activations recomputed in the backward pass), and
/// `"decoder_layers"` recomputes each decoder layer; both end training with the parameters
/// of the default. With LoRA dropout and two devices in one process, `"decoder_layers"` is
/// refused before any work, naming the field.
#[test]
fn activation_checkpointing_trains_like_the_default() {
    use crate::experiment::ActivationCheckpointing as A;
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    type C = Autodiff<Flex, BalancedCheckpointing>;
    let _rng = rng_lock();
    let dir = scratch("checkpointing");
    let records = phantom_records(&dir.join("data"));
    let exp = |name: &str, on: &str| {
        let rest = format!(", activation_checkpointing: {on}");
        tiny_exp(&dir, &records, name, (1, 12), "", &rest)
    };
    let plain = exp("plain", "false");
    let ckpt = exp("ckpt", "true");
    let layers = exp("layers", "\"decoder_layers\"");
    for (f, want) in [
        (&plain, A::Off),
        (&ckpt, A::Balanced),
        (&layers, A::DecoderLayers),
    ] {
        let got = crate::Experiment::load(f).unwrap().activation_checkpointing;
        assert_eq!(got, want, "{}", f.display());
    }
    let e = crate::Experiment::load(exp("bad", "\"layers\"")).unwrap_err();
    assert!(e.to_string().contains("decoder_layers"), "{e}");
    let opts = |run: &str| run_opts(&dir, run, false, None);
    let a = crate::train::<B>(Some(&plain), &opts("plain"), &[Default::default()]).unwrap();
    let b = crate::train::<C>(Some(&ckpt), &opts("ckpt"), &[Default::default()]).unwrap();
    let c = crate::train::<B>(Some(&layers), &opts("layers"), &[Default::default()]).unwrap();
    assert_eq!(a.info.steps, b.info.steps);
    assert_eq!(a.info.steps, c.info.steps);
    for run in ["ckpt", "layers"] {
        let worst = final_max_diff(&dir.join("plain"), &dir.join(run));
        println!("activation checkpointing {run} vs default: max |diff| {worst:e}");
        assert!(worst <= 1e-5, "{run}: parameters differ by {worst}");
    }
    // Two devices in one process: without dropout, the same parameters as keeping the
    // layers; with dropout, refused.
    let two = |name: &str, mode: &str| {
        tiny_exp(
            &dir,
            &records,
            name,
            (1, 12),
            "",
            &format!(
                ", batch: (global: 4, per_device: 2, devices: 2), \
                 activation_checkpointing: \"{mode}\""
            ),
        )
    };
    let devices = [Default::default(); 2];
    for (name, mode) in [("two_off", "off"), ("two_layers", "decoder_layers")] {
        crate::train::<B>(Some(&two(name, mode)), &opts(name), &devices).unwrap();
    }
    let worst = final_max_diff(&dir.join("two_off"), &dir.join("two_layers"));
    println!("two devices, decoder layers recomputed vs kept: max |diff| {worst:e}");
    assert!(worst <= 1e-5, "two devices: parameters differ by {worst}");
    let model = tiny_model_with_dropout(&dir);
    let two = tiny_exp(
        &dir,
        &records,
        "two",
        (1, 12),
        "",
        &format!(
            ", model: \"{}\", batch: (global: 4, per_device: 2, devices: 2), \
             activation_checkpointing: \"decoder_layers\"",
            model.display()
        ),
    );
    let e = crate::train::<B>(Some(&two), &opts("two"), &devices).unwrap_err();
    assert!(e.to_string().contains("`activation_checkpointing`"), "{e}");
    assert!(
        !dir.join("two").exists(),
        "refused after creating the run directory"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `new_token_rows_only: true`: only the added tokens' rows of `embed_tokens`/`lm_head`
/// train (the base rows end bit-identical to the initial model), far fewer parameters get
/// optimiser state, and the final checkpoint loads back into a whole-matrix model.
#[test]
fn new_token_rows_only_trains_the_added_rows() {
    let _rng = rng_lock();
    let dir = scratch("new-rows");
    let records = phantom_records(&dir.join("data"));
    let exp = tiny_exp(
        &dir,
        &records,
        "rows",
        (1, 8),
        "",
        ", train_also: [\"clip.\"], new_token_rows_only: true",
    );
    let device: burn::tensor::Device<B> = Default::default();
    let cfg_path = repo().join("configs/mimo/mimo-tiny.ron");
    let cfg = mimo_core::mimo::MimoConfig::load(&cfg_path).unwrap();
    // The initial model, drawn as `train` draws it (seeded with the experiment's seed).
    let seed = crate::Experiment::load(&exp).unwrap().seed;
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let initial = cfg
        .clone()
        .build::<B>(cfg_path.parent().unwrap(), &device)
        .unwrap();
    let first_new = initial.base_vocab_size;
    let vocab = initial.model.llm.vocab_size();
    assert!(first_new < vocab, "{first_new} {vocab}");
    // Trainable parameters: whole token matrices against the added rows only.
    let numel = |m: &mimo_core::mimo::Mimo<B>| -> (usize, usize) {
        let vals = values(m);
        let paths = trained_paths(m);
        (paths.iter().map(|p| vals[p].len()).sum(), paths.len())
    };
    let whole = numel(&initial.model.clone().with_trainable_set(true));
    let rows = numel(
        &initial
            .model
            .clone()
            .with_new_token_rows_trainable(first_new)
            .unwrap(),
    );
    println!(
        "trainable parameters: whole token matrices {} ({} tensors), added rows only {} ({} tensors)",
        whole.0, whole.1, rows.0, rows.1
    );
    let hidden = initial.config.llm.hidden_size;
    assert_eq!(
        whole.0 - rows.0,
        2 * first_new * hidden,
        "the base rows of embed_tokens and lm_head leave the trainable set"
    );
    let opts = run_opts(&dir, "run", false, None);
    let out = crate::train::<B>(Some(&exp), &opts, &[device]).unwrap();
    assert!(out.info.finished);
    // The final checkpoint holds the added rows apart, and loads into whole matrices.
    let extra = dir.join("run/final/extra.safetensors");
    let bytes = std::fs::read(&extra).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    assert!(
        names.iter().any(|n| n == "llm.new_token_rows.embed"),
        "{names:?}"
    );
    let trained = cfg
        .with_checkpoint(&dir.join("run/final"))
        .unwrap()
        .build::<B>(cfg_path.parent().unwrap(), &device)
        .unwrap();
    assert!(trained.model.llm.new_token_rows.is_none());
    let (e0, e1) = (
        initial.model.llm.model.embed_tokens.weight.val(),
        trained.model.llm.model.embed_tokens.weight.val(),
    );
    assert_eq!(e1.dims(), [vocab, hidden]);
    let base_diff = (e0.clone().slice([0..first_new, 0..hidden])
        - e1.clone().slice([0..first_new, 0..hidden]))
    .abs()
    .max()
    .into_scalar();
    let new_diff = (e0.slice([first_new..vocab, 0..hidden])
        - e1.slice([first_new..vocab, 0..hidden]))
    .abs()
    .max()
    .into_scalar();
    println!(
        "embed_tokens after training: base rows max |diff| {base_diff:e}, added rows {new_diff:e}"
    );
    assert_eq!(base_diff, 0.0, "the base rows moved");
    assert!(new_diff > 0.0, "the added rows did not train");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `data.clip_cache`: the frozen tower's features come from a feature cache (filled with the
/// model's own tower before training) and training ends where running the tower each step
/// ends; a second run finds every image cached; a CLIP that trains is refused.
#[test]
fn clip_features_from_the_cache_train_like_the_tower() {
    let _rng = rng_lock();
    let dir = scratch("clip-cache");
    let records = phantom_records(&dir.join("data"));
    let cache = dir.join("cache");
    let exp = |name: &str, extra: &str| {
        tiny_exp(
            &dir,
            &records,
            name,
            (1, 12),
            extra,
            ", train_also: [\"llm.\"]",
        )
    };
    let tower = exp("tower", "");
    let cached = exp(
        "cached",
        &format!(", clip_cache: Some(\"{}\")", cache.display()),
    );
    let opts = |run: &str| run_opts(&dir, run, false, None);
    let device: burn::tensor::Device<B> = Default::default();
    let a = crate::train::<B>(Some(&tower), &opts("tower"), &[device]).unwrap();
    let b = crate::train::<B>(Some(&cached), &opts("cached"), &[device]).unwrap();
    assert_eq!(a.info.steps, b.info.steps);
    let index: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(cache.join("index.json")).unwrap()).unwrap();
    assert!(index.len() >= 4, "{} images cached", index.len());
    let worst = final_max_diff(&dir.join("tower"), &dir.join("cached"));
    println!(
        "{} cached images; CLIP from the cache vs the tower: max |diff| {worst:e}",
        index.len()
    );
    assert!(worst <= 1e-5, "parameters differ by {worst}");
    // Again: every image is found, nothing is recomputed.
    let shards = || std::fs::read_dir(&cache).unwrap().count();
    let before = shards();
    crate::train::<B>(Some(&cached), &opts("again"), &[device]).unwrap();
    assert_eq!(shards(), before);
    // CLIP must not train when its features are cached.
    let bad = write(
        &dir,
        "bad.ron",
        &std::fs::read_to_string(&cached).unwrap().replace(
            "train_also: [\"llm.\"]",
            "train_also: [\"llm.\", \"clip.\"]",
        ),
    );
    let e = crate::train::<B>(Some(&bad), &opts("bad"), &[device]).unwrap_err();
    assert!(e.to_string().contains("data.clip_cache"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `frozen_dtype: "bf16"`: the frozen towers and LLM base train in bf16 beside f32 trained
/// parts; the first step's loss is near the all-f32 run's, and a run resumed from a
/// checkpoint ends bit-identical to an uninterrupted one (each parameter keeps its dtype).
#[test]
fn frozen_bf16_trains_and_resumes() {
    let _rng = rng_lock();
    let dir = scratch("frozen-bf16");
    let records = phantom_records(&dir.join("data"));
    let exp = |name: &str, dtype: &str| {
        let rest =
            format!(", train_also: [], checkpoint: (every_steps: Some(1), keep_last: 2){dtype}");
        tiny_exp(&dir, &records, name, (2, 8), "", &rest)
    };
    let f32_exp = exp("f32", "");
    let bf16 = exp("bf16", ", frozen_dtype: Some(\"bf16\")");
    let bad = exp("bad", ", frozen_dtype: Some(\"fp8\")");
    let e = crate::Experiment::load(&bad).unwrap_err().to_string();
    assert!(e.contains("frozen_dtype"), "{e}");
    let opts =
        |run: &str, resume: bool, max_steps: Option<usize>| run_opts(&dir, run, resume, max_steps);
    let device: burn::tensor::Device<B> = Default::default();
    crate::train::<B>(Some(&f32_exp), &opts("f32", false, None), &[device]).unwrap();
    let full = crate::train::<B>(Some(&bf16), &opts("full", false, None), &[device]).unwrap();
    assert!(full.info.finished);
    assert_eq!(full.info.steps, 4);
    let first_loss = |run: &str| -> f64 {
        let csv = std::fs::read_to_string(dir.join(run).join("train.csv")).unwrap();
        csv.lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(4)
            .unwrap()
            .parse()
            .unwrap()
    };
    let (l32, l16) = (first_loss("f32"), first_loss("full"));
    println!("first-step loss: all f32 {l32}, frozen bf16 {l16}");
    assert!((l32 - l16).abs() < 0.02 * l32, "{l32} vs {l16}");
    crate::train::<B>(Some(&bf16), &opts("part", false, Some(3)), &[device]).unwrap();
    let part = crate::train::<B>(None, &opts("part", true, None), &[device]).unwrap();
    assert!(part.info.finished);
    let worst = final_max_diff(&dir.join("full"), &dir.join("part"));
    println!("frozen bf16, resumed vs uninterrupted: max |diff| {worst:e}");
    assert_eq!(worst, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
