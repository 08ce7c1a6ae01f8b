//! Parity of the tiny MIMO fixture on any backend: the model of `mimo-core/fixtures/mimo/`
//! (written by `scripts/reference/mimo.py`) runs on the compiled backend and its losses and
//! masks are compared with PyTorch's. `mimo bench mimo --check-fixture` runs it, e.g. on a
//! GPU, where `cargo test` (CPU) does not reach.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use mimo_core::clip::ClipVisionConfig;
use mimo_core::config::ModelConfig;
use mimo_core::llm::{LlamaConfig, LoraConfig};
use mimo_core::mimo::{AlignerSizes, ClipInput, LossWeights, Mimo, MimoInput, MimoModelConfig};
use mimo_core::prompt::PromptTensors;
use mimo_core::sam::SamConfig;

/// One compared quantity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compared {
    /// What was compared.
    pub name: String,
    /// Max absolute difference to the reference.
    pub max_abs_err: f32,
    /// The tolerance it must stay within.
    pub tolerance: f32,
}

struct Arr {
    shape: Vec<usize>,
    f32: Vec<f32>,
    i64: Vec<i64>,
}

fn read(path: &Path) -> Result<HashMap<String, Arr>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let d = v.data();
            let mut a = Arr {
                shape: v.shape().to_vec(),
                f32: vec![],
                i64: vec![],
            };
            match v.dtype() {
                safetensors::Dtype::F32 => {
                    a.f32 = d
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                safetensors::Dtype::I64 => {
                    a.i64 = d
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect()
                }
                _ => {}
            }
            (k, a)
        })
        .collect())
}

fn dims<const D: usize>(a: &Arr, key: &str) -> Result<[usize; D], String> {
    a.shape
        .clone()
        .try_into()
        .map_err(|_| format!("fixture `{key}` has rank {}, expected {D}", a.shape.len()))
}

/// The tiny MIMO of the fixtures under `fixtures` (the `mimo-core/fixtures` folder), with or
/// without the aligner, and its training batch, on `device`.
pub fn fixture_model_and_input<B: Backend>(
    fixtures: &Path,
    aligner: bool,
    device: &B::Device,
) -> Result<(Mimo<B>, MimoInput<B>), String> {
    let (m, i, _) = fixture_parts(fixtures, aligner, device)?;
    Ok((m, i))
}

type Parts<B> = (Mimo<B>, MimoInput<B>, HashMap<String, Arr>);

fn fixture_parts<B: Backend>(
    fixtures: &Path,
    aligner: bool,
    device: &B::Device,
) -> Result<Parts<B>, String> {
    let f = |rel: &str| fixtures.join(rel);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let clip = ClipVisionConfig {
        projection_dim: None,
        ..ClipVisionConfig::load(f("clip/hf_tiny.ron")).map_err(|x| e(&x))?
    };
    let cfg = MimoModelConfig {
        clip,
        sam: SamConfig::load(f("sam/tiny_a.ron")).map_err(|x| e(&x))?,
        llm: LlamaConfig::load(f("llm/chat")).map_err(|x| e(&x))?,
        aligner: aligner.then_some(AlignerSizes {
            num_queries: 4,
            width: 32,
            num_heads: 4,
            depth: 2,
            mlp_dim: 64,
        }),
        lora: Some(LoraConfig::load(f("mimo/adapter")).map_err(|x| e(&x))?),
        loss: LossWeights::default(),
        seg_token_id: 702,
    };
    let (clip, _) = mimo_core::clip::load::load_clip::<B>(
        &cfg.clip,
        f("clip/hf_tiny_vision.safetensors"),
        device,
    )
    .map_err(|x| e(&x))?;
    let (sam, _) =
        mimo_core::sam::load::load_sam::<B>(&cfg.sam, f("sam/tiny_a.safetensors"), device)
            .map_err(|x| e(&x))?;
    let (llm, _) = mimo_core::llm::load::load_llama::<B>(&cfg.llm, f("llm/chat"), device)
        .map_err(|x| e(&x))?;
    let (llm, _, _) = llm.load_lora(f("mimo/adapter")).map_err(|x| e(&x))?;
    let (model, _) = Mimo::from_parts(&cfg, clip, sam, llm)
        .map_err(|x| e(&x))?
        .load_new_modules(f("mimo/new_modules.safetensors"))
        .map_err(|x| e(&x))?;

    let io = read(&f("mimo/io.safetensors"))?;
    let get = |k: &str| io.get(k).ok_or_else(|| format!("fixture lacks `{k}`"));
    let float4 = |k: &str| -> Result<Tensor<B, 4>, String> {
        let a = get(k)?;
        Ok(Tensor::from_data(
            TensorData::new(a.f32.clone(), dims::<4>(a, k)?),
            device,
        ))
    };
    let float3 = |k: &str| -> Result<Tensor<B, 3>, String> {
        let a = get(k)?;
        Ok(Tensor::from_data(
            TensorData::new(a.f32.clone(), dims::<3>(a, k)?),
            device,
        ))
    };
    let int2 = |k: &str| -> Result<Tensor<B, 2, Int>, String> {
        let a = get(k)?;
        Ok(Tensor::from_data(
            TensorData::new(a.i64.clone(), dims::<2>(a, k)?),
            device,
        ))
    };
    let pairs = |k: &str| -> Result<Vec<[usize; 2]>, String> {
        Ok(get(k)?
            .i64
            .chunks(2)
            .map(|c| [c[0] as usize, c[1] as usize])
            .collect())
    };
    let mask = get("attention_mask")?;
    let input = MimoInput {
        clip: ClipInput::Pixels(float4("clip_pixels")?),
        sam_pixels: float4("sam_pixels")?,
        sam_embeddings: None,
        sam_resized: pairs("sam_resized")?,
        sizes: pairs("sizes")?,
        prompts: PromptTensors {
            coords: float3("prompt_points")?,
            labels: int2("prompt_labels")?,
        },
        input_ids: int2("input_ids")?,
        labels: Some(int2("labels")?),
        attention_mask: Tensor::<B, 2, Bool>::from_data(
            TensorData::new(
                mask.i64.iter().map(|&v| v != 0).collect::<Vec<_>>(),
                dims::<2>(mask, "attention_mask")?,
            ),
            device,
        ),
        masks: vec![float3("gt_masks_0")?, float3("gt_masks_1")?],
    };
    Ok((model, input, io))
}

/// Runs the tiny MIMO fixture (with or without the aligner) found under `fixtures` (the
/// `mimo-core/fixtures` folder) on `device` and compares CE, mask BCE, Dice, the total
/// loss and the predicted masks with PyTorch's values. Every tolerance is multiplied by
/// `tolerance_scale`: 1 for f32 on the CPU; GPU backends need more because their f32 matmuls
/// run in TF32 (cubek-matmul 0.2 `definition/blueprint.rs` stages f32 operands as `tf32` on
/// tensor cores: a 10-bit mantissa).
pub fn check_mimo_fixture<B: Backend>(
    fixtures: &Path,
    aligner: bool,
    tolerance_scale: f32,
    device: &B::Device,
) -> Result<Vec<Compared>, String> {
    let (model, input, io) = fixture_parts::<B>(fixtures, aligner, device)?;
    let get = |k: &str| io.get(k).ok_or_else(|| format!("fixture lacks `{k}`"));
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let out = model.forward(input).map_err(|x| e(&x))?;
    let prefix = if aligner { "al_" } else { "na_" };
    let mut report = Vec::new();
    let mut compare = |name: &str, got: Vec<f32>, tol: f32| -> Result<(), String> {
        let want = &get(&format!("{prefix}{name}"))?.f32;
        if got.len() != want.len() {
            return Err(format!(
                "{name}: {} values, reference has {}",
                got.len(),
                want.len()
            ));
        }
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        report.push(Compared {
            name: format!("{prefix}{name}"),
            max_abs_err: err,
            tolerance: tol * tolerance_scale,
        });
        Ok(())
    };
    let host = |t: Tensor<B, 1>| {
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default()
    };
    compare("ce", host(out.ce), 1e-4)?;
    compare("mask_bce", host(out.mask_bce), 1e-4)?;
    compare("mask_dice", host(out.mask_dice), 1e-4)?;
    compare("loss", host(out.loss), 1e-4)?;
    for (i, m) in out.pred_masks.into_iter().enumerate() {
        // An image without <SEG> has a zero-size mask tensor, never read on the device.
        if m.dims()[0] == 0 {
            compare(&format!("pred_masks_{i}"), Vec::new(), 2e-4)?;
            continue;
        }
        let v = m
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        compare(&format!("pred_masks_{i}"), v, 2e-4)?;
    }
    Ok(report)
}
