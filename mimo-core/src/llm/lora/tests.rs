//! LoRA parity with peft (fixtures by `scripts/reference/lora.py`), merge/unmerge, the peft
//! file format in both directions, and frozen-base training.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::llm::{KvCache, LlamaConfig, positions_from_mask};
use crate::test_util::*;

type B = TestBackend;

/// f32 bound of the project; measured errors are printed.
const TOL: f32 = 1e-4;

struct Batch {
    ids: Vec<Vec<u32>>,
    mask: Vec<Vec<u8>>,
    pos: Vec<Vec<i64>>,
}

fn batch() -> Batch {
    let io = read_fixture("llm/mha/io.safetensors");
    let w = io["input_ids"].shape[1];
    let ids: Vec<Vec<u32>> = io["input_ids"]
        .i64
        .chunks(w)
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect();
    let mask: Vec<Vec<u8>> = io["attention_mask"]
        .i64
        .chunks(w)
        .map(|r| r.iter().map(|&v| v as u8).collect())
        .collect();
    let pos = positions_from_mask(&mask);
    Batch { ids, mask, pos }
}

fn base<Bk: Backend>() -> Llama<Bk> {
    let dir = fixture("llm/mha");
    let cfg = LlamaConfig::load(&dir).unwrap();
    crate::llm::load::load_llama::<Bk>(&cfg, &dir, &Default::default())
        .unwrap()
        .0
}

fn logits<Bk: Backend>(model: &Llama<Bk>, b: &Batch) -> Tensor<Bk, 3> {
    model
        .forward_ids(&b.ids, &b.mask, &b.pos, &mut KvCache::new(), false)
        .logits
}

/// Max abs difference over the non-padding positions.
fn err(got: Tensor<B, 3>, want: &[f32], b: &Batch) -> f32 {
    let v = got.dims()[2];
    let got = got.into_data().to_vec::<f32>().unwrap();
    let real: Vec<bool> = b.mask.iter().flatten().map(|&m| m == 1).collect();
    got.chunks(v)
        .zip(want.chunks(v))
        .zip(&real)
        .filter(|(_, r)| **r)
        .flat_map(|((a, w), _)| a.iter().zip(w).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn peft_adapters_match_peft() {
    let b = batch();
    for (name, modules) in [("peft_qv", 4), ("peft_rs", 3), ("peft_re", 2)] {
        let dir = fixture(&format!("llm/lora/{name}"));
        let (model, cfg, report) = base::<B>().load_lora(&dir).unwrap();
        assert!(report.unused.is_empty(), "{name}: {:?}", report.unused);
        assert_eq!(report.applied, 2 * modules, "{name}: adapter tensors");
        let io = read_fixture(&format!("llm/lora/{name}/io.safetensors"));
        let e = err(logits(&model, &b), &io["logits"].f32, &b);
        println!(
            "{name}: logits max abs err {e:.3e} (tol {TOL:.0e}), scaling {}",
            cfg.scaling()
        );
        assert!(e <= TOL, "{name}: {e}");
        // The adapter changes the output (B is non-zero), so the test is not vacuous.
        let base_err = err(logits(&base::<B>(), &b), &io["logits"].f32, &b);
        assert!(
            base_err > 1e-2,
            "{name}: adapter has no effect ({base_err})"
        );

        let merged = model.merge_lora();
        let e = err(logits(&merged, &b), &io["merged_logits"].f32, &b);
        println!("{name}: merged logits max abs err {e:.3e}");
        assert!(e <= TOL, "{name} merged: {e}");
        let unmerged = merged.unmerge_lora();
        let e = err(logits(&unmerged, &b), &io["logits"].f32, &b);
        assert!(e <= TOL, "{name} unmerged: {e}");
    }
}

/// Deterministic non-zero adapter weights for the Rust-written adapter.
fn fill(model: &mut Llama<B>) {
    let mut k = 0f32;
    for (_, _, p) in model.projections_mut() {
        for lin in [p.lora_a.as_mut(), p.lora_b.as_mut()].into_iter().flatten() {
            let [i, o] = lin.weight.dims();
            let v: Vec<f32> = (0..i * o)
                .map(|j| {
                    k += 1.0;
                    0.3 * ((j as f32) * 0.37 + k * 0.11).sin()
                })
                .collect();
            lin.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(v, [i, o]),
                &Default::default(),
            ));
        }
    }
}

fn rust_config() -> LoraConfig {
    LoraConfig {
        r: 2,
        lora_alpha: 6.0,
        lora_dropout: 0.0,
        target_modules: TargetModules::List(vec![
            "q_proj".into(),
            "v_proj".into(),
            "up_proj".into(),
        ]),
        base_model_name_or_path: Some("mimo-core/fixtures/llm/mha".into()),
        ..LoraConfig::default()
    }
}

/// An adapter saved here loads in peft to the same logits: `scripts/reference/lora.py`
/// loaded the committed `llm/lora/rust/` and recorded the comparison in `peft_check.json`.
/// `MIMO_WRITE_FIXTURES=1` rewrites the adapter (then rerun the script).
#[test]
fn lora_saved_by_rust_loads_in_peft() {
    let b = batch();
    let cfg = rust_config();
    let (mut model, n) = base::<B>().with_lora(&cfg).unwrap();
    assert_eq!(n, 6);
    fill(&mut model);
    let out = logits(&model, &b);
    let fixture_dir = fixture("llm/lora/rust");
    let tmp = std::env::temp_dir().join(format!("mimo-lora-{}", std::process::id()));
    let write = std::env::var_os("MIMO_WRITE_FIXTURES").is_some();
    let dir = if write {
        fixture_dir.clone()
    } else {
        tmp.clone()
    };
    model.save_lora(&cfg, &dir).unwrap();
    if write {
        let data = out.clone().into_data().convert::<f32>();
        let shape = out.dims().to_vec();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data.as_bytes())
                .unwrap();
        safetensors::serialize_to_file(
            [("logits".to_string(), view)],
            None,
            &fixture_dir.join("rust_logits.safetensors"),
        )
        .unwrap();
        println!(
            "wrote {}; now run scripts/reference/lora.py",
            fixture_dir.display()
        );
        return;
    }
    // Saving is deterministic and equals what peft checked.
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(fixture_dir.join(f)).unwrap(),
            "{f} differs from the committed adapter"
        );
    }
    let check: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir.join("peft_check.json")).unwrap(),
    )
    .unwrap();
    println!("peft check of the Rust-written adapter: {check}");
    assert_eq!(check["ok"], true);
    assert_eq!(check["tensors"], 12);
    let want = read_fixture("llm/lora/rust/rust_logits.safetensors");
    let e = err(out, &want["logits"].f32, &b);
    println!("peft logits of the Rust-written adapter vs ours: max abs err {e:.3e}");
    // 4e-6 is 8 ulp of the largest logit (3.6): burn-flex's multi-threaded SIMD gemm sums
    // in another order than PyTorch (2.1e-6 measured; 1e-6 held for the single-threaded
    // kernels). Still far inside the 1e-4 the f32 parity tests use elsewhere.
    assert!(e <= 4e-6);

    // And it reads back here to the same output.
    let (back, back_cfg, _) = base::<B>().load_lora(&dir).unwrap();
    assert_eq!(back_cfg.r, 2);
    assert!(err(logits(&back, &b), &want["logits"].f32, &b) <= 4e-6);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn fresh_adapter_leaves_output_unchanged_and_counts_params() {
    let b = batch();
    let (model, n) = base::<B>().with_lora(&LoraConfig::default()).unwrap();
    assert_eq!(n, 4); // q_proj and v_proj in 2 layers
    let io = read_fixture("llm/mha/io.safetensors");
    assert!(err(logits(&model, &b), &io["logits"].f32, &b) <= TOL);
    // 2 layers x (q: 32*8 + 8*32, v: 32*8 + 8*32)
    assert_eq!(model.lora_param_count(), 2 * 2 * (32 * 8 + 8 * 32));
    // Vicuna-7B: 4,194,304 trainable LoRA parameters (LISA's `train_ds.py` LoRA, r = 8 on
    // `q_proj` and `v_proj` of the 32 layers: 64 x (8 x 4096 + 4096 x 8)).
    let big = LlamaConfig::vicuna_7b_v1_5().init::<B>(&Default::default());
    let (big, _) = big.with_lora(&LoraConfig::default()).unwrap();
    assert_eq!(big.lora_param_count(), 4_194_304);
}

#[test]
fn bad_configs_are_rejected_with_the_field() {
    let cases: Vec<(LoraConfig, &str)> = vec![
        (
            LoraConfig {
                r: 0,
                ..Default::default()
            },
            "`r`",
        ),
        (
            LoraConfig {
                lora_dropout: 1.0,
                ..Default::default()
            },
            "lora_dropout",
        ),
        (
            LoraConfig {
                bias: "all".into(),
                ..Default::default()
            },
            "bias",
        ),
        (
            LoraConfig {
                use_dora: true,
                ..Default::default()
            },
            "use_dora",
        ),
        (
            LoraConfig {
                target_modules: TargetModules::Regex("(".into()),
                ..Default::default()
            },
            "target_modules",
        ),
    ];
    for (cfg, field) in cases {
        let e = base::<B>().with_lora(&cfg).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    let none = LoraConfig {
        target_modules: TargetModules::List(vec!["lm_head".into()]),
        ..Default::default()
    };
    let e = base::<B>().with_lora(&none).unwrap_err().to_string();
    assert!(
        e.contains("match none") && e.contains("model.layers.0"),
        "{e}"
    );
    let json = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "exclude_modules": ["x"]}"#;
    let tmp = std::env::temp_dir().join(format!("mimo-lora-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("adapter_config.json"), json).unwrap();
    let e = LoraConfig::load(&tmp).unwrap_err().to_string();
    assert!(e.contains("exclude_modules"), "{e}");
    // An adapter file without the tensors its config implies names the missing keys.
    std::fs::write(
        tmp.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj"]}"#,
    )
    .unwrap();
    std::fs::copy(
        fixture("llm/lora/peft_qv/adapter_model.safetensors"),
        tmp.join("adapter_model.safetensors"),
    )
    .unwrap();
    let e = base::<B>().load_lora(&tmp).unwrap_err().to_string();
    assert!(
        e.contains("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight [4, 32]"),
        "{e}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// Collects parameter ids by whether the path is a LoRA tensor.
#[derive(Default)]
struct Ids {
    path: Vec<String>,
    lora: Vec<ParamId>,
    base: Vec<ParamId>,
}

impl<Bk: Backend> ModuleVisitor<Bk> for Ids {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        let path = self.path.join(".");
        if path.contains(".lora_") {
            self.lora.push(p.id);
        } else {
            self.base.push(p.id);
        }
    }
}

/// With the base frozen, a backward pass gives gradients for LoRA parameters only, and an
/// optimizer step keeps state for them only and leaves the base weights unchanged.
#[test]
fn gradients_reach_only_lora_parameters() {
    use burn::backend::Autodiff;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    type A = Autodiff<B>;
    let b = batch();
    let (model, _) = base::<A>().with_lora(&LoraConfig::default()).unwrap();
    let mut ids = Ids::default();
    model.visit(&mut ids);
    assert_eq!(ids.lora.len(), 8);
    let loss = logits(&model, &b).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    for id in &ids.lora {
        assert!(
            grads.get::<B, 2>(*id).is_some(),
            "LoRA param without gradient"
        );
    }
    for id in &ids.base {
        assert!(
            grads.get::<B, 2>(*id).is_none() && grads.get::<B, 1>(*id).is_none(),
            "frozen param has a gradient"
        );
    }
    assert_eq!(grads.len(), ids.lora.len());
    let before: HashMap<ParamId, Vec<f32>> = snapshot(&model);
    let mut optim = AdamWConfig::new().init::<A, Llama<A>>();
    let model = optim.step(1e-2, model, grads);
    let record = optim.to_record();
    assert!(
        record.keys().all(|k| ids.lora.contains(k)),
        "optimizer state for a frozen param"
    );
    assert_eq!(record.len(), ids.lora.len());
    let after = snapshot(&model);
    for id in &ids.base {
        assert_eq!(before[id], after[id], "a frozen parameter changed");
    }
    let changed = ids
        .lora
        .iter()
        .filter(|id| before[*id] != after[*id])
        .count();
    // B starts at zero, so A's gradient is zero on the first step; B moves.
    assert!(
        changed >= ids.lora.len() / 2,
        "{changed} LoRA params changed"
    );
}

fn snapshot<Bk: Backend>(m: &Llama<Bk>) -> HashMap<ParamId, Vec<f32>> {
    struct S(HashMap<ParamId, Vec<f32>>);
    impl<Bk: Backend> ModuleVisitor<Bk> for S {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
            self.0
                .insert(p.id, p.val().into_data().convert::<f32>().to_vec().unwrap());
        }
    }
    let mut s = S(HashMap::new());
    m.visit(&mut s);
    s.0
}

/// peft's `modules_to_save` (LISA's layout: adapters plus fully trained `embed_tokens` and
/// `lm_head`): the adapter file's whole modules replace the model's, train, and are written
/// back under peft's keys.
#[test]
fn modules_to_save_match_peft_and_round_trip() {
    let b = batch();
    let dir = fixture("llm/lora/peft_mts");
    let (model, cfg, report) = base::<B>().load_lora(&dir).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert_eq!(
        report.applied,
        2 * 4 + 2,
        "adapter tensors + two whole modules"
    );
    assert!(cfg.saves("embed_tokens") && cfg.saves("lm_head"));
    // On an autodiff backend the two modules train; the base projections stay frozen.
    {
        type A = burn::backend::Autodiff<B>;
        let (m, _, _) = base::<A>().load_lora(&dir).unwrap();
        assert!(m.model.embed_tokens.weight.is_require_grad());
        assert!(m.lm_head.as_ref().unwrap().weight.is_require_grad());
        assert!(
            !m.model.layers[0]
                .self_attn
                .q_proj
                .base
                .weight
                .is_require_grad()
        );
        assert!(!m.model.norm.weight.is_require_grad());
    }
    let io = read_fixture("llm/lora/peft_mts/io.safetensors");
    let e = err(logits(&model, &b), &io["logits"].f32, &b);
    println!("peft_mts: logits max abs err {e:.3e} (tol {TOL:.0e})");
    assert!(e <= TOL, "{e}");
    let merged = model.clone().merge_lora();
    let e = err(logits(&merged, &b), &io["merged_logits"].f32, &b);
    assert!(e <= TOL, "merged: {e}");

    // Written back: the same keys and values as peft's file.
    let out = std::env::temp_dir().join(format!("mimo-lora-mts-{}", std::process::id()));
    model.save_lora(&cfg, &out).unwrap();
    let read = |p: &std::path::Path| {
        let bytes = std::fs::read(p.join("adapter_model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, t.shape().to_vec(), t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(read(&out), read(&dir));
    let text = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
    assert!(text.contains("\"lm_head\""), "{text}");
    let (again, _, _) = base::<B>().load_lora(&out).unwrap();
    assert!(err(logits(&again, &b), &io["logits"].f32, &b) <= TOL);
    std::fs::remove_dir_all(&out).unwrap();

    // Modules other than the two are refused, naming the field and the entry.
    let bad = LoraConfig {
        modules_to_save: Some(vec!["norm".into()]),
        ..LoraConfig::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("modules_to_save") && e.contains("norm"), "{e}");
}
