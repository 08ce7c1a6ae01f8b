//! Parity of the tiny MIMO with its PyTorch statement (`scripts/reference/mimo.py`):
//! losses, masks and gradients of every trainable module, with and without the aligner.

use std::collections::HashMap;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::*;
use crate::clip::ClipVisionConfig;
use crate::clip::load::load_clip;
use crate::config::ModelConfig;
use crate::llm::LlamaConfig;
use crate::llm::load::load_llama;
use crate::prompt::PromptTensors;
use crate::sam::SamConfig;
use crate::sam::load::load_sam;
use crate::test_util::{Array, TestBackend, assert_close, fixture, read_fixture};
use crate::tokenizer::IMAGE_TOKEN_INDEX;

type AD = Autodiff<TestBackend>;

pub(crate) fn tiny_config(aligner: bool) -> MimoModelConfig {
    let lora: crate::llm::LoraConfig =
        crate::llm::LoraConfig::load(fixture("mimo/adapter")).expect("adapter config");
    // MIMO reads hidden states; the tower's projection head is not used (nor in this file).
    let clip = ClipVisionConfig {
        projection_dim: None,
        ..ClipVisionConfig::load(fixture("clip/hf_tiny.ron")).expect("clip config")
    };
    MimoModelConfig {
        clip,
        sam: SamConfig::load(fixture("sam/tiny_a.ron")).expect("sam config"),
        llm: LlamaConfig::load(fixture("llm/chat")).expect("llm config"),
        aligner: aligner.then_some(AlignerSizes {
            num_queries: 4,
            width: 32,
            num_heads: 4,
            depth: 2,
            mlp_dim: 64,
        }),
        lora: Some(lora),
        loss: LossWeights::default(),
        seg_token_id: 702,
    }
}

/// The tiny MIMO with the fixture's weights: CLIP, SAM and the LLM from their own fixtures,
/// the adapter and the new modules from `fixtures/mimo/`.
pub(crate) fn tiny_model<B: Backend>(aligner: bool) -> Mimo<B> {
    let device = Default::default();
    let cfg = tiny_config(aligner);
    let (clip, _) = load_clip::<B>(
        &cfg.clip,
        fixture("clip/hf_tiny_vision.safetensors"),
        &device,
    )
    .expect("clip weights");
    let (sam, _) =
        load_sam::<B>(&cfg.sam, fixture("sam/tiny_a.safetensors"), &device).expect("sam weights");
    let (llm, _) = load_llama::<B>(&cfg.llm, fixture("llm/chat"), &device).expect("llm weights");
    let (llm, _, _) = llm.load_lora(fixture("mimo/adapter")).expect("adapter");
    let model = Mimo::from_parts(&cfg, clip, sam, llm).expect("model");
    let (model, report) = model
        .load_new_modules(fixture("mimo/new_modules.safetensors"))
        .expect("new modules");
    if aligner {
        assert!(report.unused.is_empty(), "unused: {:?}", report.unused);
    }
    model
}

fn float<B: Backend, const D: usize>(a: &Array) -> Tensor<B, D> {
    let shape: [usize; D] = a.shape.clone().try_into().expect("rank");
    Tensor::from_data(TensorData::new(a.f32.clone(), shape), &Default::default())
}

fn int<B: Backend, const D: usize>(a: &Array) -> Tensor<B, D, Int> {
    let shape: [usize; D] = a.shape.clone().try_into().expect("rank");
    Tensor::from_data(TensorData::new(a.i64.clone(), shape), &Default::default())
}

fn pairs(a: &Array) -> Vec<[usize; 2]> {
    a.i64
        .chunks(2)
        .map(|c| [c[0] as usize, c[1] as usize])
        .collect()
}

pub(crate) fn fixture_input<B: Backend>(
    io: &HashMap<String, Array>,
    labels_key: &str,
) -> MimoInput<B> {
    let device = Default::default();
    let mask = &io["attention_mask"];
    let shape: [usize; 2] = mask.shape.clone().try_into().unwrap();
    let mask: Vec<bool> = mask.i64.iter().map(|&v| v != 0).collect();
    MimoInput {
        clip: ClipInput::Pixels(float(&io["clip_pixels"])),
        sam_pixels: float(&io["sam_pixels"]),
        sam_embeddings: None,
        sam_resized: pairs(&io["sam_resized"]),
        sizes: pairs(&io["sizes"]),
        prompts: PromptTensors {
            coords: float(&io["prompt_points"]),
            labels: int(&io[labels_key]),
        },
        input_ids: int(&io["input_ids"]),
        labels: Some(int(&io["labels"])),
        attention_mask: Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, shape), &device),
        masks: vec![float(&io["gt_masks_0"]), float(&io["gt_masks_1"])],
    }
}

/// Gradients of every float parameter, by burn path, in PyTorch layout (linear weights
/// transposed back), with whether the parameter requires a gradient.
struct GradCollector<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    containers: Vec<String>,
    out: HashMap<String, (Option<Vec<f32>>, bool)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradCollector<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.push(name.into());
        self.containers.push(container.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
        self.containers.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        let linear = self
            .containers
            .iter()
            .rev()
            .find(|c| c.starts_with("Struct:"))
            .is_some_and(|c| c == "Struct:Linear");
        let t = param.val();
        let require = t.is_require_grad();
        let g = t.grad(self.grads).map(|g| {
            let g = if linear && D == 2 && path.ends_with(".weight") {
                g.transpose()
            } else {
                g
            };
            g.into_data().convert::<f32>().to_vec::<f32>().unwrap()
        });
        self.out.insert(path, (g, require));
    }
}

/// A fixture gradient key (PyTorch/peft naming) → our module path.
fn module_path(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("base_model.model.") {
        return format!(
            "llm.{}",
            rest.replace(".lora_A.", ".lora_a.")
                .replace(".lora_B.", ".lora_b.")
        );
    }
    if key.starts_with("model.") || key.starts_with("lm_head.") {
        return format!("llm.{key}");
    }
    if key.starts_with("mask_decoder.") {
        return format!("sam.{}", crate::sam::load::DIALECT.to_module(key));
    }
    load::NEW_MODULES.to_module(key)
}

fn check_variant(aligner: bool, prefix: &str, labels_key: &str) {
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<AD>(aligner);
    let input = fixture_input::<AD>(&io, labels_key);
    let p = |k: &str| format!("{prefix}{k}");
    // The plain forward (the encoders under autodiff, untracked) gives the same loss as the
    // training forward below, which runs them on the inner backend first.
    let plain = model.forward(input.clone()).expect("forward");
    assert_close(&p("loss"), plain.loss, &io[&p("loss")], 1e-4);
    let out = model.forward_train(input).expect("forward_train");
    // Loss terms are means over hundreds of tokens/pixels: 1e-4 absolute is tight.
    assert_close(&p("ce"), out.ce.clone(), &io[&p("ce")], 1e-4);
    assert_close(
        &p("mask_bce"),
        out.mask_bce.clone(),
        &io[&p("mask_bce")],
        1e-4,
    );
    assert_close(
        &p("mask_dice"),
        out.mask_dice.clone(),
        &io[&p("mask_dice")],
        1e-4,
    );
    assert_close(&p("loss"), out.loss.clone(), &io[&p("loss")], 1e-4);
    let want_pos: Vec<usize> = io[&p("seg_positions")]
        .i64
        .iter()
        .map(|&v| v as usize)
        .collect();
    let got_pos: Vec<usize> = out.seg_positions.iter().flatten().copied().collect();
    assert_eq!(got_pos, want_pos, "expanded <SEG> positions");
    for (i, m) in out.pred_masks.iter().enumerate() {
        // Logits after two bilinear resizes of decoder outputs of magnitude ~10.
        assert_close(
            &p(&format!("pred_masks_{i}")),
            m.clone(),
            &io[&p(&format!("pred_masks_{i}"))],
            2e-4,
        );
    }
    if labels_key != "prompt_labels" {
        return;
    }
    let grads = out.loss.backward();
    let mut collector = GradCollector::<AD> {
        grads: &grads,
        path: vec![],
        containers: vec![],
        out: HashMap::new(),
    };
    model.visit(&mut collector);
    let grad_prefix = p("grad.");
    let mut checked = 0;
    for (key, want) in io.iter().filter(|(k, _)| k.starts_with(&grad_prefix)) {
        let key = &key[grad_prefix.len()..];
        let path = module_path(key);
        let (got, require) = collector
            .out
            .get(&path)
            .unwrap_or_else(|| panic!("{key}: no parameter at {path}"));
        assert!(*require, "{key} must be trainable");
        let got = got.as_ref().unwrap_or_else(|| panic!("{key}: no gradient"));
        let scale = want.f32.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let err = got
            .iter()
            .zip(&want.f32)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{prefix}grad {key}: max abs err {err:.3e} (max |grad| {scale:.3e})");
        assert_eq!(got.len(), want.f32.len(), "{key}: size");
        assert!(err <= 1e-4, "{key}: gradient off by {err:e}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} gradients in the fixture");
    // Frozen parts: no gradient at all, so no optimizer state either.
    for (path, (g, require)) in &collector.out {
        let llm_trained = path.contains(".lora_a.")
            || path.contains(".lora_b.")
            || path.starts_with("llm.model.embed_tokens.")
            || path.starts_with("llm.lm_head.");
        let frozen = path.starts_with("clip.")
            || path.starts_with("sam.image_encoder.")
            || path.starts_with("sam.prompt_encoder.")
            || path == "vp_encoder.pe_gaussian"
            // The IoU head's output is not in the loss (no gradient in PyTorch either).
            || path.starts_with("sam.mask_decoder.iou_prediction_head.")
            || (path.starts_with("llm.") && !llm_trained);
        assert_eq!(!frozen, *require, "{path}: trainable should be {}", !frozen);
        assert_eq!(
            is_trainable(path, true),
            *require,
            "{path}: is_trainable disagrees"
        );
        if frozen {
            assert!(!require, "{path} must be frozen");
            assert!(g.is_none(), "{path} got a gradient");
        }
    }
    let trainable = collector.out.values().filter(|(_, r)| *r).count();
    let with_grad = collector.out.values().filter(|(g, _)| g.is_some()).count();
    println!("{prefix}: {trainable} trainable tensors, {with_grad} with a gradient");
}

#[test]
fn parity_with_aligner() {
    check_variant(true, "al_", "prompt_labels");
}

#[test]
fn parity_without_aligner() {
    check_variant(false, "na_", "prompt_labels");
}

#[test]
fn parity_with_aligner_and_no_prompt() {
    check_variant(true, "al_empty_", "prompt_labels_empty");
}

/// LISA's mask losses (`model/LISA.py`, `dice_loss` and `sigmoid_ce_loss`) on a worked
/// example: logits 0 on a 2x2 mask with target [[1, 0], [1, 0]].
#[test]
fn mask_loss_golden_values() {
    let device = Default::default();
    let logits = Tensor::<TestBackend, 3>::zeros([1, 2, 2], &device);
    let target = Tensor::<TestBackend, 3>::from_data(
        TensorData::new(vec![1f32, 0.0, 1.0, 0.0], [1, 2, 2]),
        &device,
    );
    let dice = loss::dice_loss(logits.clone(), target.clone(), 1.0).into_scalar();
    let bce = loss::sigmoid_ce_loss(logits.clone(), target.clone(), 1.0).into_scalar();
    assert!((dice - 0.499_875_03).abs() < 1e-6, "dice {dice}");
    assert!((bce - std::f32::consts::LN_2).abs() < 1e-6, "bce {bce}");
    let (b, d) = loss::mask_losses(&[logits], &[target], &device);
    let total = 2.0 * b.into_scalar() + 0.5 * d.into_scalar();
    assert!((total - 1.636_232).abs() < 1e-5, "total {total}");
    let (b, d) = loss::mask_losses::<TestBackend>(&[], &[], &device);
    assert_eq!((b.into_scalar(), d.into_scalar()), (0.0, 0.0));
}

#[test]
fn instruction_mask_rule() {
    let ids = vec![vec![1, 5, IMAGE_TOKEN_INDEX, 6, 7, 8, 9, 0]];
    let labels = vec![vec![-100, -100, -100, -100, -100, 8, 9, -100]];
    let mask = vec![vec![true, true, true, true, true, true, true, false]];
    let m = instruction_mask(&ids, Some(&labels), &mask);
    assert_eq!(
        m[0],
        vec![false, false, false, true, true, false, false, false]
    );
    let m = instruction_mask(&ids, None, &mask);
    assert_eq!(
        m[0],
        vec![false, false, false, true, true, true, true, false]
    );
}

#[test]
fn bad_input_is_an_error() {
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<TestBackend>(true);
    // One mask too few for row 0's two <SEG>.
    let mut input = fixture_input::<TestBackend>(&io, "prompt_labels");
    let m0 = input.masks[0].clone();
    let [_, h, w] = m0.dims();
    input.masks[0] = m0.slice([0..1, 0..h, 0..w]);
    let e = model.forward(input).unwrap_err().to_string();
    assert!(e.contains("image 0") && e.contains("<SEG>"), "{e}");
    // No placeholder.
    let mut input = fixture_input::<TestBackend>(&io, "prompt_labels");
    input.input_ids = input.input_ids.clone().clamp_min(0);
    let e = model.forward(input).unwrap_err().to_string();
    assert!(e.contains("<image> placeholders"), "{e}");
}

/// The trained parts round-trip through their file.
#[test]
fn trained_parts_round_trip() {
    let model = tiny_model::<TestBackend>(true);
    let dir = std::env::temp_dir().join(format!("mimo-parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trained.safetensors");
    model.save_trained_parts(&file).unwrap();
    let fresh = tiny_config(true)
        .init::<TestBackend>(&Default::default())
        .unwrap();
    let (fresh, report) = fresh.load_trained_parts(&file).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let a = model.aligner.as_ref().unwrap().query.val();
    let b = fresh.aligner.as_ref().unwrap().query.val();
    assert_eq!(a.into_data(), b.into_data());
    let a = model.sam.mask_decoder.iou_token.weight.val();
    let b = fresh.sam.mask_decoder.iou_token.weight.val();
    assert_eq!(a.into_data(), b.into_data());
    let _ = std::fs::remove_dir_all(&dir);
}

/// KV-cache generation equals the reference's greedy loop that recomputes the whole
/// sequence each step; `<SEG>` is forced at two steps (random weights rarely emit it), and
/// the hidden states of those steps and their masks match.
#[test]
fn greedy_answer_matches_reference() {
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<TestBackend>(true);
    let full = fixture_input::<TestBackend>(&io, "prompt_labels");
    let ids: Tensor<TestBackend, 2, Int> = int(&io["gen_prompt_ids"]);
    let l = ids.dims()[1];
    let device = Default::default();
    let ClipInput::Pixels(clip) = full.clip else {
        unreachable!()
    };
    let [_, c, s, _] = clip.dims();
    let [_, sc, ss, _] = full.sam_pixels.dims();
    let [_, np, _] = full.prompts.coords.dims();
    let input = MimoInput {
        clip: ClipInput::Pixels(clip.slice([0..1, 0..c, 0..s, 0..s])),
        sam_pixels: full.sam_pixels.slice([0..1, 0..sc, 0..ss, 0..ss]),
        sam_embeddings: None,
        sam_resized: full.sam_resized[..1].to_vec(),
        sizes: full.sizes[..1].to_vec(),
        prompts: PromptTensors {
            coords: full.prompts.coords.slice([0..1, 0..np, 0..2]),
            labels: full.prompts.labels.slice([0..1, 0..np]),
        },
        input_ids: ids,
        labels: None,
        attention_mask: Tensor::<TestBackend, 2, Bool>::from_data(
            TensorData::new(vec![true; l], [1, l]),
            &device,
        ),
        masks: vec![],
    };
    let forced: Vec<usize> = io["gen_forced_steps"]
        .i64
        .iter()
        .map(|&v| v as usize)
        .collect();
    let cfg = crate::llm::GenerationConfig {
        max_new_tokens: 16,
        ..Default::default()
    };
    let seg = model.seg_token_id;
    let raw = model
        .generate_input(input, &cfg, &mut |_, _| false, &mut |_, tokens, scores| {
            if forced.contains(&tokens.len()) {
                scores.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                scores[seg] = 0.0;
            }
        })
        .expect("generate");
    let want: Vec<u32> = io["gen_tokens"].i64.iter().map(|&v| v as u32).collect();
    assert_eq!(raw[0].tokens, want);
    assert_close(
        "gen_seg_hidden",
        raw[0].seg_hidden.clone(),
        &io["gen_seg_hidden"],
        1e-4,
    );
    assert_close("gen_masks", raw[0].masks.clone(), &io["gen_masks"], 1e-4);
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// `configs/mimo/mimo-7b.ron` resolves and builds without weights (lazily: nothing of the
/// 7B model is allocated); the new modules have the names and shapes of the design, and the
/// trainable parameters are counted.
#[test]
fn mimo_7b_config_builds_without_weights() {
    let path = repo_file("configs/mimo/mimo-7b.ron");
    let cfg = MimoConfig::load(&path).expect("mimo-7b.ron");
    let base = path.parent().unwrap();
    let model_cfg = cfg.model_config(base, None).expect("resolves");
    assert_eq!(model_cfg.llm.vocab_size, 32006);
    assert_eq!(model_cfg.seg_token_id, 32002);
    let model = model_cfg
        .init::<TestBackend>(&Default::default())
        .expect("builds");
    let params = model.parameters();
    let shape = |key: &str| -> Vec<usize> {
        params
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no parameter {key}"))
            .shape
            .clone()
    };
    for (key, want) in [
        ("vp_encoder.pe_gaussian", vec![2, 128]),
        ("vp_encoder.point_embeddings.3.weight", vec![1, 256]),
        ("vp_encoder.not_a_point_embed.weight", vec![1, 256]),
        ("vp_encoder.proj.weight", vec![1280, 256]),
        ("aligner.query", vec![32, 1024]),
        ("aligner.type_embed", vec![3, 1024]),
        ("aligner.img_ctx.weight", vec![1024, 1280]),
        ("aligner.txt_ctx.weight", vec![1024, 4096]),
        (
            "aligner.blocks.1.cross_attn.k_proj.weight",
            vec![1024, 1024],
        ),
        ("aligner.blocks.1.mlp.fc1.weight", vec![4096, 1024]),
        ("aligner.llm_proj.weight", vec![4096, 1024]),
        ("mm_projector.weight", vec![4096, 1280]),
        ("text_hidden_fcs.0.0.weight", vec![4096, 4096]),
        ("text_hidden_fcs.0.2.weight", vec![256, 4096]),
        ("model.embed_tokens.weight", vec![32006, 4096]),
        ("lm_head.weight", vec![32006, 4096]),
    ] {
        assert_eq!(shape(key), want, "{key}");
    }
    let count = |f: &dyn Fn(&ParamInfo) -> bool| -> usize {
        params
            .iter()
            .filter(|p| f(p))
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    };
    let total = count(&|_| true);
    let trainable = count(&|p| p.trainable);
    let group = |prefix: &str| count(&|p| p.trainable && p.path.starts_with(prefix));
    let lora =
        count(&|p| p.trainable && (p.path.contains(".lora_a.") || p.path.contains(".lora_b.")));
    let tokens = group("llm.model.embed_tokens.") + group("llm.lm_head.");
    println!("MIMO-7B: {total} parameters, {trainable} trainable:");
    for (name, n) in [
        ("LoRA (q_proj, v_proj; r 8)", lora),
        ("embed_tokens + lm_head", tokens),
        ("vp_encoder", group("vp_encoder.")),
        ("aligner", group("aligner.")),
        ("mm_projector", group("mm_projector.")),
        ("text_hidden_fcs", group("text_hidden_fcs.")),
        ("SAM mask decoder", group("sam.mask_decoder.")),
    ] {
        println!("  {name}: {n}");
    }
    assert_eq!(lora, 4_194_304, "LISA's LoRA count for 7B");
    assert_eq!(tokens, 2 * 32006 * 4096);
    assert_eq!(
        trainable,
        lora + tokens
            + group("vp_encoder.")
            + group("aligner.")
            + group("mm_projector.")
            + group("text_hidden_fcs.")
            + group("sam.mask_decoder.")
    );
}

#[test]
fn model_file_errors_name_the_field() {
    let dir = std::env::temp_dir().join(format!("mimo-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.ron");
    let text = std::fs::read_to_string(repo_file("configs/mimo/mimo-tiny.ron")).unwrap();
    std::fs::write(
        &file,
        text.replace("aligner: true", "aligner: true, algner_sizes: 3"),
    )
    .unwrap();
    let e = MimoConfig::load(&file).unwrap_err().to_string();
    assert!(e.contains("algner_sizes") && e.contains("bad.ron"), "{e}");
    std::fs::write(&file, text.replace("\"../clip/tiny.ron\"", "\"vit_q\"")).unwrap();
    let cfg = MimoConfig::load(&file).unwrap();
    let e = cfg.model_config(&dir, None).unwrap_err().to_string();
    assert!(e.contains("clip") && e.contains("vit_q"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tiny model file builds (random weights) and answers: text, and one mask per `<SEG>`
/// at the image size.
#[test]
fn tiny_model_file_answers() {
    let path = repo_file("configs/mimo/mimo-tiny.ron");
    let cfg = MimoConfig::load(&path).unwrap();
    let built = cfg
        .build::<TestBackend>(path.parent().unwrap(), &Default::default())
        .expect("builds");
    assert_eq!(
        built.random_parts,
        vec!["clip", "sam", "llm", "new modules"]
    );
    let tok = built.tokenizer.as_ref().unwrap();
    let (w, h) = (40usize, 30usize);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let image = crate::Image::new(w, h, rgb).unwrap();
    let prompts = [crate::prompt::VisualPrompt::Point {
        x: 10.0,
        y: 5.0,
        positive: true,
    }];
    let gcfg = crate::llm::GenerationConfig {
        max_new_tokens: 6,
        ..Default::default()
    };
    let mut streamed = String::new();
    let seg = built.model.seg_token_id as u32;
    let ans = built
        .model
        .answer(
            tok,
            &built.template,
            AnswerRequest {
                image: &image,
                question: "Where is the lesion?",
                prompts: &prompts,
            },
            &gcfg,
            &mut |t| streamed.push_str(t),
        )
        .expect("answer");
    assert_eq!(streamed, ans.raw);
    let segs = ans.tokens.iter().filter(|&&t| t == seg).count();
    assert_eq!(ans.segments.len(), segs);
    assert!(ans.segments.iter().all(|s| s.mask.len() == w * h));
    // A prompt outside the image is an error, not a panic.
    let outside = [crate::prompt::VisualPrompt::Point {
        x: 41.0,
        y: 5.0,
        positive: true,
    }];
    let e = built
        .model
        .answer(
            tok,
            &built.template,
            AnswerRequest {
                image: &image,
                question: "Where?",
                prompts: &outside,
            },
            &gcfg,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside"), "{e}");
}

/// The model cast to bf16 runs forward and backward (inputs are cast at the seams) and its
/// losses stay near the f32 ones.
#[test]
fn bf16_forward_and_backward() {
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<AD>(true).cast(burn::tensor::DType::BF16);
    let out = model
        .forward_train(fixture_input::<AD>(&io, "prompt_labels"))
        .expect("bf16 forward");
    let loss = out.loss.clone().into_scalar();
    let want = io["al_loss"].f32[0];
    println!("bf16 loss {loss} vs f32 reference {want}");
    assert!(
        (loss - want).abs() < 0.05 * want,
        "bf16 loss {loss} vs {want}"
    );
    let grads = out.loss.backward();
    let g = model
        .mm_projector
        .weight
        .val()
        .grad(&grads)
        .expect("gradient");
    let g: Vec<f32> = g.into_data().convert::<f32>().to_vec().unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0));
}

/// Mixed precision for training: frozen towers and LLM base in bf16, trained parts in f32.
/// The loss stays near the f32 reference, trained parameters get f32 gradients, frozen ones
/// none, and the loss against the whole-model-in-f32 forward is printed.
#[test]
fn frozen_bf16_with_f32_trained_parts() {
    use burn::tensor::DType;
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<AD>(true)
        .with_trainable_set(true)
        .with_frozen_dtype(DType::BF16);
    // What ended where.
    assert_eq!(
        model.clip.vision_model.pre_layrnorm.gamma.val().dtype(),
        DType::BF16
    );
    assert_eq!(model.sam_encoder_dtype(), DType::BF16);
    assert_eq!(model.llm.compute_dtype(), DType::BF16);
    let q = &model.llm.model.layers[0].self_attn.q_proj;
    assert_eq!(q.base.weight.val().dtype(), DType::BF16);
    let a = q.lora_a.as_ref().expect("an adapter");
    assert_eq!(a.weight.val().dtype(), DType::F32);
    assert_eq!(
        model.llm.model.embed_tokens.weight.val().dtype(),
        DType::F32
    );
    assert_eq!(model.dtype(), DType::F32);
    let out = model
        .forward_train(fixture_input::<AD>(&io, "prompt_labels"))
        .expect("mixed forward");
    let loss = out.loss.clone().into_scalar();
    let want = io["al_loss"].f32[0];
    println!("frozen bf16 / trained f32 loss {loss} vs f32 reference {want}");
    assert!((loss - want).abs() < 0.05 * want, "{loss} vs {want}");
    let grads = out.loss.backward();
    for (name, g) in [
        ("lora_a", a.weight.val().grad(&grads)),
        ("mm_projector", model.mm_projector.weight.val().grad(&grads)),
        (
            "mask decoder",
            model.sam.mask_decoder.mask_tokens.weight.val().grad(&grads),
        ),
    ] {
        let g = g.unwrap_or_else(|| panic!("{name} has no gradient"));
        assert_eq!(g.dtype(), DType::F32, "{name}");
        let v: Vec<f32> = g.into_data().to_vec().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0),
            "{name}"
        );
    }
    assert!(q.base.weight.val().grad(&grads).is_none());
}

/// The whole model round-trips through one file; a file of another model is an error that
/// names the tensor and both shapes.
#[test]
fn full_model_round_trip() {
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<TestBackend>(true);
    let dir = std::env::temp_dir().join(format!("mimo-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mimo.safetensors");
    model.save_full(&file).unwrap();
    let fresh = tiny_config(true)
        .init::<TestBackend>(&Default::default())
        .unwrap();
    let back = fresh.load_full(&file).unwrap();
    let a = model
        .forward(fixture_input(&io, "prompt_labels"))
        .unwrap()
        .loss
        .into_scalar();
    let b = back
        .forward(fixture_input(&io, "prompt_labels"))
        .unwrap()
        .loss
        .into_scalar();
    assert_eq!(a, b);
    let mut other = tiny_config(true);
    other.aligner.as_mut().unwrap().mlp_dim = 48;
    let e = other
        .init::<TestBackend>(&Default::default())
        .unwrap()
        .load_full(&file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mlp.fc1") && e.contains("does not fit"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Features computed ahead (the CLIP feature cache) give the same result as the tower.
#[test]
fn cached_clip_features_equal_the_tower() {
    let io = read_fixture("mimo/io.safetensors");
    let model = tiny_model::<TestBackend>(true);
    let input = fixture_input::<TestBackend>(&io, "prompt_labels");
    let features = model.image_features(&input.clip);
    assert_close("F_img", features.clone(), &io["F_img"], 1e-5);
    let from_cache = MimoInput {
        clip: ClipInput::Features(features),
        ..input.clone()
    };
    let a = model.forward(input).unwrap().loss.into_scalar();
    let b = model.forward(from_cache).unwrap().loss.into_scalar();
    assert_eq!(a, b);
}

/// Batched inference (left-padded rows of different lengths) gives each image the tokens
/// and masks it gets alone.
#[test]
fn batched_answers_equal_single_answers() {
    let model = tiny_model::<TestBackend>(true);
    let tok = crate::tokenizer::MimoTokenizer::from_file(fixture("llm/chat")).unwrap();
    let template = crate::tokenizer::conversation::Template::vicuna_v1();
    let img = |w: usize, h: usize, k: usize| {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * k) % 251) as u8).collect();
        crate::Image::new(w, h, rgb).unwrap()
    };
    let (a, b) = (img(40, 30, 7), img(24, 36, 13));
    let pa = [crate::prompt::VisualPrompt::Point {
        x: 10.0,
        y: 5.0,
        positive: true,
    }];
    let pb = [crate::prompt::VisualPrompt::Box {
        x0: 2.0,
        y0: 3.0,
        x1: 20.0,
        y1: 30.0,
    }];
    let reqs = [
        AnswerRequest {
            image: &a,
            question: "Where is the lesion in this scan?",
            prompts: &pa,
        },
        AnswerRequest {
            image: &b,
            question: "What is it?",
            prompts: &pb,
        },
    ];
    let gcfg = crate::llm::GenerationConfig {
        max_new_tokens: 6,
        ..Default::default()
    };
    let batch = model
        .answer_batch(&tok, &template, &reqs, &gcfg, &mut |_, _| {})
        .unwrap();
    for (r, got) in reqs.iter().zip(&batch) {
        let alone = model
            .answer(&tok, &template, r.clone(), &gcfg, &mut |_| {})
            .unwrap();
        assert_eq!(got.tokens, alone.tokens, "{}", r.question);
        assert_eq!(got.size, alone.size);
    }
    // Stopped after its second token, an answer keeps those tokens and says why it ended.
    let asked = std::cell::Cell::new(0);
    let stopped = model
        .answer_batch_until(&tok, &template, &reqs[..1], &gcfg, &mut |_, _| {}, &|| {
            asked.set(asked.get() + 1);
            asked.get() >= 2
        })
        .unwrap();
    assert!(batch[0].tokens.len() > 2, "the unstopped answer is longer");
    assert_eq!(stopped[0].tokens, batch[0].tokens[..2]);
    assert_eq!(stopped[0].finish, crate::llm::FinishReason::Stop);
}

/// `MimoConfig::build` with bf16 `LoadOptions`: the demo checkpoint's components are read
/// into bf16, every float parameter ends in bf16, and the model answers.
#[test]
fn demo_model_builds_in_bf16() {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::DType;
    struct Dtypes(Vec<DType>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.push(param.val().dtype());
        }
    }
    let path = repo_file("configs/mimo/mimo-tiny.ron");
    let cfg = MimoConfig::load(&path)
        .unwrap()
        .with_checkpoint(&repo_file("assets/demo/mimo-tiny-phantom"))
        .unwrap();
    let options =
        crate::loader::LoadOptions::<TestBackend>::new(&Default::default()).with_dtype(DType::BF16);
    let built = cfg.build(path.parent().unwrap(), options).expect("builds");
    assert!(built.random_parts.is_empty(), "{:?}", built.random_parts);
    let mut seen = Dtypes(Vec::new());
    built.model.visit(&mut seen);
    assert!(!seen.0.is_empty());
    assert!(seen.0.iter().all(|d| *d == DType::BF16), "{:?}", seen.0);
    let tok = built.tokenizer.as_ref().unwrap();
    let (w, h) = (32usize, 32usize);
    let image = crate::Image::new(w, h, vec![90; w * h * 3]).unwrap();
    let gcfg = crate::llm::GenerationConfig {
        max_new_tokens: 4,
        ..Default::default()
    };
    built
        .model
        .answer(
            tok,
            &built.template,
            AnswerRequest {
                image: &image,
                question: "Where is the liver?",
                prompts: &[],
            },
            &gcfg,
            &mut |_| {},
        )
        .expect("answers in bf16");
}

/// `MimoConfig` is a `ModelConfig`: `mimo_7b` is the shipped model file, embedded.
#[test]
fn mimo_7b_preset_is_the_shipped_model_file() {
    use crate::config::ModelConfig;
    let preset = <MimoConfig as ModelConfig>::from_name_or_file("mimo_7b").unwrap();
    let file = MimoConfig::load(repo_file("configs/mimo/mimo-7b.ron")).unwrap();
    assert_eq!(format!("{preset:?}"), format!("{file:?}"));
    let e = <MimoConfig as ModelConfig>::from_name_or_file("mimo_13b").unwrap_err();
    assert!(e.to_string().contains("mimo_7b"), "{e}");
}
