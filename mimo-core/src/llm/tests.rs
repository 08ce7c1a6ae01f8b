//! Parity of the LLaMA decoder with transformers on tiny random-weight models (fixtures by
//! `scripts/reference/llm.py`).

use std::collections::HashMap;

use super::*;
use crate::loader;
use crate::test_util::*;

type B = TestBackend;

/// f32 bound of the project; measured errors are printed.
const TOL: f32 = 1e-4;

fn rows_u32(a: &Array) -> Vec<Vec<u32>> {
    a.i64
        .chunks(a.shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

fn check(name: &str) {
    let dir = fixture(&format!("llm/{name}"));
    let cfg = LlamaConfig::load(&dir).unwrap();
    let (model, report) =
        crate::llm::load::load_llama::<B>(&cfg, &dir, &Default::default()).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let io: HashMap<String, Array> = read_fixture(&format!("llm/{name}/io.safetensors"));
    let ids = rows_u32(&io["input_ids"]);
    let mask: Vec<Vec<u8>> = io["attention_mask"]
        .i64
        .chunks(ids[0].len())
        .map(|r| r.iter().map(|&v| v as u8).collect())
        .collect();
    let pos = positions_from_mask(&mask);
    let want_pos: Vec<Vec<i64>> = io["position_ids"]
        .i64
        .chunks(ids[0].len())
        .map(|r| r.to_vec())
        .collect();
    assert_eq!(pos, want_pos);
    let out = model.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), true);
    // Padding positions attend to nothing; what a model computes there is arbitrary and
    // never read (HF's own value depends on its attention kernel), so they are skipped.
    let real: Vec<bool> = mask.iter().flatten().map(|&m| m == 1).collect();
    let compare = |what: String, got: Tensor<B, 3>, want: &Array| {
        assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
        let d = want.shape[2];
        let got = got.into_data().to_vec::<f32>().unwrap();
        let err = got
            .chunks(d)
            .zip(want.f32.chunks(d))
            .zip(&real)
            .filter(|(_, r)| **r)
            .flat_map(|((a, b), _)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        println!("{what}: max abs err {err:.3e} (tol {TOL:.0e})");
        assert!(err <= TOL, "{what}: {err}");
    };
    compare(format!("{name} logits"), out.logits, &io["logits"]);
    for (i, h) in out.hidden_states.iter().enumerate() {
        compare(
            format!("{name} hidden_states_{i}"),
            h.clone(),
            &io[&format!("hidden_states_{i}")],
        );
    }
    let cfg = GenerationConfig {
        max_new_tokens: 8,
        eos_token_id: vec![],
        ..Default::default()
    };
    let generated = model.generate(&ids, &mask, &cfg, &mut |_, _| false);
    assert_eq!(
        generated.tokens,
        rows_u32(&io["generated"]),
        "{name}: greedy ids"
    );
}

#[test]
fn multi_head_untied_matches_transformers() {
    check("mha");
}

#[test]
fn grouped_query_tied_rope_theta_500k_matches_transformers() {
    check("gqa");
}

#[test]
fn rope_golden_values() {
    // d=4, theta=10000, position 1, x=[5,6,7,8] -> HF rotate_half [-3.1888, 5.9197, 7.9895, 8.0596]
    let device = Default::default();
    let pos = Tensor::<B, 1, Int>::from_ints([1], &device).reshape([1, 1]);
    let (cos, sin) = rope_tables(&pos, 4, 10000.0);
    let x = Tensor::<B, 1>::from_floats([5.0, 6.0, 7.0, 8.0], &device).reshape([1, 1, 1, 4]);
    let y = x.clone() * cos + rotate_half(x) * sin;
    let y = y.into_data().to_vec::<f32>().unwrap();
    for (a, b) in y.iter().zip([-3.1888f32, 5.9197, 7.9895, 8.0596]) {
        assert!((a - b).abs() < 1e-4, "{y:?}");
    }
}

#[test]
fn vicuna_7b_key_set_matches_transformers() {
    let model = LlamaConfig::vicuna_7b_v1_5().init::<B>(&Default::default());
    assert_key_list(
        "llm/keys_vicuna_7b_v1_5.txt",
        loader::file_params(&model, &crate::llm::load::DIALECT),
    );
}

/// A bf16 copy of a fixture's `model.safetensors` (round to nearest even, as torch does).
fn bf16_copy(dir: &std::path::Path, tag: &str) -> std::path::PathBuf {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            // f32 -> bf16 with round-to-nearest-even on the dropped half.
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
                    ((rounded >> 16) as u16).to_le_bytes()
                })
                .collect();
            (k, v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = converted
        .iter()
        .map(|(k, s, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let tmp = std::env::temp_dir().join(format!(
        "mimo-llm-bf16-{tag}-{}.safetensors",
        std::process::id()
    ));
    safetensors::serialize_to_file(views, None, &tmp).unwrap();
    tmp
}

/// A bf16 checkpoint (how HF ships Vicuna) loads into f32 parameters and runs.
#[test]
fn bf16_checkpoint_loads_as_f32() {
    let dir = fixture("llm/mha");
    let tmp = bf16_copy(&dir, "f32");
    let cfg = LlamaConfig::load(&dir).unwrap();
    let (model, _) = crate::llm::load::load_llama::<B>(&cfg, &tmp, &Default::default()).unwrap();
    std::fs::remove_file(&tmp).unwrap();
    assert_eq!(
        model.model.layers[0]
            .self_attn
            .q_proj
            .base
            .weight
            .val()
            .dtype(),
        DType::F32
    );
    let ids = vec![vec![1u32, 17, 42, 9]];
    let mask = vec![vec![1u8; 4]];
    let pos = positions_from_mask(&mask);
    let bf = model
        .forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false)
        .logits;
    let (f32_model, _) =
        crate::llm::load::load_llama::<B>(&cfg, &dir, &Default::default()).unwrap();
    let full = f32_model
        .forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false)
        .logits;
    let err = (bf - full).abs().max().into_scalar();
    println!("bf16 weights vs f32 weights: max logit difference {err:.3e}");
    assert!(err.is_finite() && err < 0.5, "{err}");
}

#[test]
fn added_token_rows_keep_old_rows_and_follow_the_init_switch() {
    let dir = fixture("llm/mha");
    let cfg = LlamaConfig::load(&dir).unwrap();
    let (model, _) = crate::llm::load::load_llama::<B>(&cfg, &dir, &Default::default()).unwrap();
    let old_emb = model.model.embed_tokens.weight.val();
    let old_head = model.lm_head.as_ref().unwrap().weight.val();
    let grown = model.resize_token_embeddings(100, NewTokenInit::Mean);
    let emb = grown.model.embed_tokens.weight.val();
    assert_eq!(emb.dims(), [100, 32]);
    let kept = (emb.clone().slice([0..96, 0..32]) - old_emb.clone())
        .abs()
        .max()
        .into_scalar();
    assert_eq!(kept, 0.0);
    let mean_err = (emb.slice([96..100, 0..32]) - old_emb.mean_dim(0).expand([4, 32]))
        .abs()
        .max()
        .into_scalar();
    assert!(mean_err < 1e-6);
    let head = grown.lm_head.as_ref().unwrap().weight.val();
    assert_eq!(head.dims(), [32, 100]);
    let kept = (head.slice([0..32, 0..96]) - old_head)
        .abs()
        .max()
        .into_scalar();
    assert_eq!(kept, 0.0);
    // The logits of old tokens do not change.
    let ids = vec![vec![1u32, 17, 42]];
    let mask = vec![vec![1u8; 3]];
    let pos = positions_from_mask(&mask);
    let logits = grown
        .forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false)
        .logits;
    assert_eq!(logits.dims(), [1, 3, 100]);
    let normal = LlamaConfig::tiny()
        .init::<B>(&Default::default())
        .resize_token_embeddings(600, NewTokenInit::Normal { std: 0.02 });
    let new_rows = normal
        .model
        .embed_tokens
        .weight
        .val()
        .slice([512..600, 0..64]);
    let std = new_rows.powi_scalar(2).mean().sqrt().into_scalar();
    assert!((std - 0.02).abs() < 0.003, "{std}");
}

/// An HF sharded directory (`model.safetensors.index.json` + shards) loads to the same model
/// as the single file, and a missing shard is named.
#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let dir = fixture("llm/mha");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tmp = std::env::temp_dir().join(format!("mimo-llm-shards-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(dir.join("config.json"), tmp.join("config.json")).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let file = format!("model-0000{}-of-00003.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|k| (k.clone(), st.tensor(k).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &tmp.join(&file)).unwrap();
        for k in part {
            weight_map.insert(k.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.join("model.safetensors.index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let cfg = LlamaConfig::load(&tmp).unwrap();
    let (sharded, report) =
        crate::llm::load::load_llama::<B>(&cfg, &tmp, &Default::default()).unwrap();
    assert!(report.unused.is_empty());
    let (single, _) = crate::llm::load::load_llama::<B>(&cfg, &dir, &Default::default()).unwrap();
    let ids = vec![vec![1u32, 17, 42, 9]];
    let mask = vec![vec![1u8; 4]];
    let pos = positions_from_mask(&mask);
    let a = sharded.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false);
    let b = single.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false);
    assert_eq!(
        a.logits.into_data().to_vec::<f32>().unwrap(),
        b.logits.into_data().to_vec::<f32>().unwrap()
    );
    std::fs::remove_file(tmp.join("model-00002-of-00003.safetensors")).unwrap();
    let e = crate::llm::load::load_llama::<B>(&cfg, &tmp, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model-00002-of-00003.safetensors") && e.contains("missing"),
        "{e}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

/// With `LoadOptions::with_dtype(BF16)` a bf16 checkpoint loads as bf16 (no f32 copy is
/// made) and an f32 one is narrowed tensor by tensor; both give exactly the model that
/// loading in f32 and casting gives.
#[test]
fn load_options_dtype_loads_in_bf16() {
    let dir = fixture("llm/mha");
    let cfg = LlamaConfig::load(&dir).unwrap();
    let device = Default::default();
    let bf16 = loader::LoadOptions::<B>::new(&device).with_dtype(DType::BF16);
    let ids = vec![vec![1u32, 17, 42, 9]];
    let mask = vec![vec![1u8; 4]];
    let pos = positions_from_mask(&mask);
    let run = |m: &Llama<B>| {
        m.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false)
            .logits
    };
    let (f32_model, _) = crate::llm::load::load_llama::<B>(&cfg, &dir, &device).unwrap();
    let want = run(&f32_model.cast(DType::BF16));
    let tmp = bf16_copy(&dir, "bf16");
    for (name, path) in [("bf16 file", tmp.as_path()), ("f32 file", dir.as_path())] {
        let (model, report) = crate::llm::load::load_llama(&cfg, path, bf16.clone()).unwrap();
        assert!(report.unused.is_empty(), "{name}: {:?}", report.unused);
        assert_eq!(model.dtype(), DType::BF16, "{name}");
        let q = &model.model.layers[0].self_attn.q_proj.base.weight;
        assert_eq!(q.val().dtype(), DType::BF16, "{name}");
        let got = run(&model);
        assert_eq!(got.dtype(), DType::BF16);
        let err = (got.cast(DType::F32) - want.clone().cast(DType::F32))
            .abs()
            .max()
            .into_scalar();
        assert_eq!(
            err, 0.0,
            "{name}: loading as bf16 differs from loading and casting"
        );
    }
    std::fs::remove_file(&tmp).unwrap();
}

/// bf16 weights and activations (how Vicuna runs on a GPU) give logits close to f32 and the
/// same greedy tokens on the fixture (bf16 keeps 8 bits of mantissa).
#[test]
fn bf16_activations_run_close_to_f32() {
    let dir = fixture("llm/mha");
    let cfg = LlamaConfig::load(&dir).unwrap();
    let (model, _) = crate::llm::load::load_llama::<B>(&cfg, &dir, &Default::default()).unwrap();
    let ids = vec![vec![0u32, 1, 17, 42, 9], vec![1, 5, 77, 3, 29]];
    let mask = vec![vec![0u8, 1, 1, 1, 1], vec![1; 5]];
    let pos = positions_from_mask(&mask);
    let full = model
        .forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false)
        .logits;
    let half = model.cast(DType::BF16);
    let out = half.forward_ids(&ids, &mask, &pos, &mut KvCache::new(), false);
    assert_eq!(out.logits.dtype(), DType::BF16);
    let err = (out.logits.cast(DType::F32) - full)
        .abs()
        .max()
        .into_scalar();
    println!("bf16 activations vs f32: max logit difference {err:.3e}");
    assert!(err.is_finite() && err < 0.5, "{err}");
}

/// `causal_lm_loss`: shifted, ignore index -100, mean over the real targets, 0 without any.
#[test]
fn causal_lm_loss_is_hf_shifted_mean() {
    use crate::llm::causal_lm_loss;
    let device = Default::default();
    // logits [1, 3, 2]; targets are labels[1..] = [1, -100]: only position 0 predicts.
    let logits = Tensor::<B, 3>::from_data(
        TensorData::new(vec![0.5f32, 1.5, 9.0, -9.0, 3.0, 3.0], [1, 3, 2]),
        &device,
    );
    let labels =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![7i64, 1, -100], [1, 3]), &device);
    let got = causal_lm_loss(logits.clone(), labels).into_scalar();
    let want = -(1.5f32 - (0.5f32.exp() + 1.5f32.exp()).ln());
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    let none =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, -100, -100], [1, 3]), &device);
    assert_eq!(causal_lm_loss(logits, none).into_scalar(), 0.0);
}

/// HF config settings whose math is not implemented are errors naming the field (they used
/// to load and give wrong logits).
#[test]
fn unimplemented_hf_settings_are_errors() {
    let base = std::fs::read_to_string(fixture("llm/chat/config.json")).unwrap();
    assert!(LlamaConfig::from_hf_json(&base).is_ok());
    let with = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        v[key] = value;
        LlamaConfig::from_hf_json(&v.to_string())
    };
    let linear = serde_json::json!({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0});
    let e = with("rope_parameters", linear).unwrap_err();
    assert!(
        e.contains("rope_parameters.rope_type") && e.contains("linear"),
        "{e}"
    );
    let e = with(
        "rope_scaling",
        serde_json::json!({"type": "dynamic", "factor": 2.0}),
    )
    .unwrap_err();
    assert!(e.contains("rope_scaling"), "{e}");
    assert!(with("rope_scaling", serde_json::Value::Null).is_ok());
    let e = with("attention_bias", serde_json::json!(true)).unwrap_err();
    assert!(e.contains("attention_bias"), "{e}");
    let e = with("mlp_bias", serde_json::json!(true)).unwrap_err();
    assert!(e.contains("mlp_bias"), "{e}");
    let e = with("hidden_act", serde_json::json!("gelu")).unwrap_err();
    assert!(e.contains("hidden_act"), "{e}");
}

/// `LlamaConfig` is a `ModelConfig` like the other models: presets by name, and HF model
/// directories (or their `config.json`) by path.
#[test]
fn llama_config_is_a_model_config() {
    use crate::config::ModelConfig;
    let preset = <LlamaConfig as ModelConfig>::from_name_or_file("vicuna_7b_v1_5").unwrap();
    assert_eq!(preset, LlamaConfig::vicuna_7b_v1_5());
    let dir = fixture("llm/chat");
    let by_dir = <LlamaConfig as ModelConfig>::from_name_or_file(dir.to_str().unwrap()).unwrap();
    assert_eq!(by_dir, LlamaConfig::load(&dir).unwrap());
    let e = <LlamaConfig as ModelConfig>::from_name_or_file("vicuna_13b").unwrap_err();
    assert!(e.to_string().contains("vicuna_7b_v1_5"), "{e}");
}

/// Split added-token rows: the same logits as whole matrices, the same gradients for the
/// added rows (and none for the base rows), and merging gives the model back bit for bit.
#[test]
fn split_token_rows_keep_outputs_and_gradients() {
    type A = burn::backend::Autodiff<B>;
    let device = Default::default();
    let dir = fixture("llm/mha");
    let cfg = LlamaConfig::load(&dir).unwrap();
    let (model, _) = crate::llm::load::load_llama::<A>(&cfg, &dir, &Default::default()).unwrap();
    let whole = model.resize_token_embeddings(100, NewTokenInit::Mean);
    let split = whole.clone().split_token_rows(96).unwrap();
    assert_eq!(split.vocab_size(), 100);
    assert_eq!(split.model.embed_tokens.weight.dims(), [96, 32]);
    let rows = split.new_token_rows.as_ref().unwrap();
    assert_eq!(rows.embed.dims(), [4, 32]);
    assert_eq!(rows.head.as_ref().unwrap().dims(), [32, 4]);
    assert!(split.clone().split_token_rows(96).is_err());
    assert!(whole.clone().split_token_rows(100).is_err());
    // Added tokens in the input and the targets.
    let ids = Tensor::<A, 2, Int>::from_data(
        TensorData::new(vec![1i64, 97, 42, 99, 98, 5], [1, 6]),
        &device,
    );
    let loss_of = |m: &Llama<A>| {
        let x = m.embed(ids.clone());
        let mask = Tensor::<A, 2, Bool>::from_data(TensorData::new(vec![true; 6], [1, 6]), &device);
        let pos = Tensor::<A, 2, Int>::from_data(
            TensorData::new((0..6i64).collect::<Vec<_>>(), [1, 6]),
            &device,
        );
        let out = m.forward(x, mask, pos, None, false);
        (
            out.logits.clone(),
            crate::llm::causal_lm_loss(out.logits, ids.clone()),
        )
    };
    let (lw, loss_w) = loss_of(&whole);
    let (ls, loss_s) = loss_of(&split);
    let d = (lw - ls).abs().max().into_scalar();
    println!("split vs whole logits: max |diff| {d:e}");
    assert!(d <= 1e-6);
    let gw = loss_w.backward();
    let gs = loss_s.backward();
    let emb_w = whole.model.embed_tokens.weight.grad(&gw).unwrap();
    let head_w = whole.lm_head.as_ref().unwrap().weight.grad(&gw).unwrap();
    let emb_s = rows.embed.grad(&gs).unwrap();
    let head_s = rows.head.as_ref().unwrap().grad(&gs).unwrap();
    let de = (emb_w.slice([96..100, 0..32]) - emb_s)
        .abs()
        .max()
        .into_scalar();
    let dh = (head_w.slice([0..32, 96..100]) - head_s)
        .abs()
        .max()
        .into_scalar();
    println!("added-row gradients, split vs whole: max |diff| embed {de:e}, head {dh:e}");
    // The embedding backward sums per row in another order than the slice of a whole one.
    assert!(de <= TOL && dh <= TOL);
    // The base rows are frozen: no gradient.
    assert!(split.model.embed_tokens.weight.grad(&gs).is_none());
    assert!(split.lm_head.as_ref().unwrap().weight.grad(&gs).is_none());
    // Merging puts every value back.
    let merged = split.clone().merge_token_rows();
    assert!(merged.new_token_rows.is_none());
    let same = |a: Tensor<A, 2>, b: Tensor<A, 2>| (a - b).abs().max().into_scalar() == 0.0;
    assert!(same(
        merged.model.embed_tokens.weight.val(),
        whole.model.embed_tokens.weight.val()
    ));
    assert!(same(
        merged.lm_head.as_ref().unwrap().weight.val(),
        whole.lm_head.as_ref().unwrap().weight.val()
    ));
}
