//! Parity of the CLIP tower with HF transformers and open_clip on tiny random-weight models
//! (fixtures written by `scripts/reference/clip.py`).

use std::collections::HashMap;

use burn::tensor::Tensor;

use super::*;
use crate::config::ModelConfig;
use crate::loader::{self, LoadError};
use crate::test_util::*;

type B = TestBackend;

/// f32 bound of the project; measured errors are printed.
const TOL: f32 = 1e-4;

fn config(name: &str) -> ClipVisionConfig {
    ClipVisionConfig::load(fixture(&format!("clip/{name}.ron"))).unwrap()
}

fn pixels(io: &HashMap<String, Array>) -> Tensor<B, 4> {
    let a = &io["pixel_values"];
    Tensor::<B, 1>::from_floats(a.f32.as_slice(), &Default::default())
        .reshape([a.shape[0], a.shape[1], a.shape[2], a.shape[3]])
}

fn check(tower: &ClipVision<B>, io_name: &str) {
    let io = read_fixture(io_name);
    let out = tower.forward(pixels(&io));
    assert_eq!(out.hidden_states.len(), tower.num_layers() + 1);
    for (i, h) in out.hidden_states.iter().enumerate() {
        assert_close(
            &format!("hidden_states_{i}"),
            h.clone(),
            &io[&format!("hidden_states_{i}")],
            TOL,
        );
    }
    assert_close("pooled", out.pooled, &io["pooled"], TOL);
    assert_close(
        "image_embeds",
        out.image_embeds.unwrap(),
        &io["image_embeds"],
        TOL,
    );
    // LLaVA's feature: penultimate layer, class token dropped.
    let l = tower.num_layers() - 1;
    let want = &io[&format!("hidden_states_{l}")];
    let feat = tower.features(pixels(&io));
    let [b, t, d] = feat.dims();
    assert_eq!((b, t + 1, d), (want.shape[0], want.shape[1], want.shape[2]));
    let full = Tensor::<B, 1>::from_floats(want.f32.as_slice(), &Default::default()).reshape([
        b,
        t + 1,
        d,
    ]);
    let err = (feat - full.slice([0..b, 1..t + 1, 0..d]))
        .abs()
        .max()
        .into_scalar();
    assert!(err <= TOL, "features: {err}");
}

#[test]
fn hf_clipmodel_matches_transformers() {
    let (tower, report) = crate::clip::load::load_clip::<B>(
        &config("hf_tiny"),
        fixture("clip/hf_tiny_clipmodel.safetensors"),
        &Default::default(),
    )
    .unwrap();
    // The text tower is reported, nothing of the vision tower is left over.
    assert!(report.unused.iter().any(|k| k.starts_with("text_model.")));
    assert!(
        report
            .unused
            .iter()
            .all(|k| !k.starts_with("vision_model.") || k.ends_with("position_ids")),
        "{:?}",
        report.unused
    );
    check(&tower, "clip/hf_tiny_io.safetensors");
}

#[test]
fn hf_v5_vision_model_without_prefix_loads_the_same_tower() {
    let mut cfg = config("hf_tiny");
    cfg.projection_dim = None;
    let (tower, report) = crate::clip::load::load_clip::<B>(
        &cfg,
        fixture("clip/hf_tiny_vision.safetensors"),
        &Default::default(),
    )
    .unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let io = read_fixture("clip/hf_tiny_io.safetensors");
    let out = tower.forward(pixels(&io));
    assert_close(
        "hidden_states_3",
        out.hidden_states[3].clone(),
        &io["hidden_states_3"],
        TOL,
    );
    assert!(out.image_embeds.is_none());
    // Asking for a projection the file does not have names the key.
    let err = crate::clip::load::load_clip::<B>(
        &config("hf_tiny"),
        fixture("clip/hf_tiny_vision.safetensors"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Missing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("visual_projection.weight [32, 64]"),
        "{err}"
    );
}

#[test]
fn open_clip_matches_open_clip_pth_and_safetensors() {
    for ext in ["pth", "safetensors"] {
        let (tower, report) = crate::clip::load::load_clip::<B>(
            &config("open_clip_tiny"),
            fixture(&format!("clip/open_clip_tiny.{ext}")),
            &Default::default(),
        )
        .unwrap();
        assert!(
            report.unused.iter().all(|k| !k.starts_with("visual.")),
            "{:?}",
            report.unused
        );
        check(&tower, "clip/open_clip_tiny_io.safetensors");
    }
}

#[test]
fn open_clip_shape_errors_name_the_fused_key() {
    // An HF-width config against the open_clip file: the fused in_proj is named.
    let mut cfg = config("open_clip_tiny");
    cfg.intermediate_size = 96;
    let err = crate::clip::load::load_clip::<B>(
        &cfg,
        fixture("clip/open_clip_tiny.pth"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("visual.transformer.resblocks.0.mlp.c_fc"),
        "{err}"
    );
    let err = crate::clip::load::load_clip::<B>(
        &config("hf_tiny"),
        fixture("sam/tiny_a.safetensors"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not a CLIP vision checkpoint"),
        "{err}"
    );
}

#[test]
fn real_key_sets_match_open_clip_and_transformers() {
    use crate::clip::load::{HfDialect, OpenClipDialect};
    let cases: [(&str, ClipVisionConfig, &dyn loader::Dialect); 2] = [
        (
            "keys_vit_h14_open_clip.txt",
            ClipVisionConfig::vit_h14(),
            &OpenClipDialect,
        ),
        (
            "keys_vit_l14_336_hf.txt",
            ClipVisionConfig::vit_l14_336(),
            &HfDialect { prefixed: true },
        ),
    ];
    for (file, cfg, dialect) in cases {
        assert_key_list(
            &format!("clip/{file}"),
            crate::clip::load::expected_keys::<B>(&cfg, dialect, &Default::default()),
        );
    }
}

#[test]
fn presets_equal_the_shipped_config_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/clip");
    for name in ClipVisionConfig::PRESETS {
        let file = ClipVisionConfig::load(dir.join(format!("{name}.ron"))).unwrap();
        assert_eq!(file, ClipVisionConfig::preset(name).unwrap(), "{name}");
    }
    let mut cfg = ClipVisionConfig::vit_h14();
    cfg.select.layer = -40;
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("select.layer")
    );
}

/// HF's Pillow processor bit for bit in the resize (per Pillow's pass order), f32 rounding
/// elsewhere; the torchvision processor resizes with another kernel.
#[test]
fn preprocessing_matches_hf_clip_image_processor() {
    let io = read_fixture("clip/preprocess.safetensors");
    let cfg = ClipPreprocessConfig {
        shortest_edge: Some(56),
        crop_size: Some(56),
        ..Default::default()
    };
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples");
    let mut worst_tv = 0.0f32;
    for (i, name) in ["mni152_t1_z95.png", "abdomen_mr_liver_lesion.png"]
        .iter()
        .enumerate()
    {
        let img = image::open(samples.join(name)).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        for expand in [false, true] {
            let tag = format!("img{i}_{}", if expand { "square" } else { "plain" });
            let c = ClipPreprocessConfig {
                expand_to_square: expand,
                ..cfg.clone()
            };
            let vertical_first = io[&format!("{tag}_order")].i64[0] == 1;
            let got = c.pixel_values(img.as_raw(), (h as usize, w as usize), 56, vertical_first);
            let diff = |want: &Array| {
                assert_eq!(want.shape, vec![3, 56, 56]);
                got.iter()
                    .zip(&want.f32)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max)
            };
            let pil = diff(&io[&format!("{tag}_pil")]);
            let tv = diff(&io[&format!("{tag}_torchvision")]);
            println!(
                "{tag}: max abs diff vs Pillow processor {pil:.2e}, vs torchvision processor {tv:.3}"
            );
            // Same uint8 pixels; only the f32 normalisation may round differently.
            assert!(pil <= 1e-6, "{tag}: {pil}");
            worst_tv = worst_tv.max(tv);
        }
    }
    // torchvision's antialiased bicubic (HF's default CLIPImageProcessor in transformers 5)
    // rounds differently from Pillow: measured at most one grey level, 1/255/std <= 0.0151
    // after normalisation.
    assert!(worst_tv < 0.0152, "{worst_tv}");
}

#[test]
fn feature_cache_returns_what_the_tower_computes() {
    use super::cache::{CacheError, CacheManifest, FeatureCache, image_key};
    let cfg = config("hf_tiny");
    let (tower, _) = crate::clip::load::load_clip::<B>(
        &cfg,
        fixture("clip/hf_tiny_clipmodel.safetensors"),
        &Default::default(),
    )
    .unwrap();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples");
    let dir = std::env::temp_dir().join(format!("mimo-clip-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let manifest = CacheManifest {
        config: cfg.clone(),
        checkpoint: "hf_tiny_clipmodel.safetensors".into(),
        feature_shape: [16, 64],
    };
    let mut expected = Vec::new();
    {
        let mut cache = FeatureCache::open(&dir, manifest.clone(), 1).unwrap();
        for name in ["mni152_t1_z95.png", "abdomen_mr_liver_lesion.png"] {
            let bytes = std::fs::read(samples.join(name)).unwrap();
            let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
            let (w, h) = img.dimensions();
            let image = crate::Image::new(w as usize, h as usize, img.into_raw()).unwrap();
            let feats = tower.image_features(&[&image]);
            let values = feats.into_data().to_vec::<f32>().unwrap();
            let key = image_key(&bytes);
            cache.insert(key.clone(), values.clone()).unwrap();
            expected.push((key, values));
        }
    }
    let cache = FeatureCache::open(&dir, manifest.clone(), 1).unwrap();
    assert_eq!(cache.len(), 2);
    for (key, values) in &expected {
        assert_eq!(cache.get(key).unwrap().as_ref(), Some(values), "{key}");
    }
    // As MIMO's CLIP input: one [N, tokens, hidden] tensor, in the order asked for.
    let keys: Vec<String> = expected.iter().rev().map(|(k, _)| k.clone()).collect();
    let batch = cache.batch::<B>(&keys, &Default::default()).unwrap();
    assert_eq!(batch.dims(), [2, 16, 64]);
    let flat = batch.into_data().to_vec::<f32>().unwrap();
    assert_eq!(&flat[..16 * 64], expected[1].1.as_slice());
    let missing = cache
        .batch::<B>(&["nope".into()], &Default::default())
        .unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
    let mut other = manifest.clone();
    other.config.select.layer = -1;
    assert!(matches!(
        FeatureCache::open(&dir, other, 1),
        Err(CacheError::Mismatch { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();

    // `fill` computes what is missing, batched, and skips images it has (by content): the
    // same features as one image at a time.
    let images: Vec<_> = [
        "mni152_t1_z95.png",
        "abdomen_mr_liver_lesion.png",
        "mni152_t1_z95.png",
    ]
    .iter()
    .map(|n| samples.join(n))
    .collect();
    let mut cache = FeatureCache::open(&dir, manifest.clone(), 1).unwrap();
    let mut calls = Vec::new();
    let report = cache
        .fill(&tower, &images, 2, &mut |d, t| calls.push((d, t)))
        .unwrap();
    assert_eq!((report.computed, report.cached), (2, 1));
    assert_eq!(calls, vec![(2, 3), (3, 3)]);
    for (key, values) in &expected {
        let got = cache.get(key).unwrap().unwrap();
        let err = got
            .iter()
            .zip(values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "batched vs single: {err}");
    }
    let again = cache.fill(&tower, &images, 2, &mut |_, _| {}).unwrap();
    assert_eq!((again.computed, again.cached), (0, 3));
    let bad = cache
        .fill(&tower, &[dir.join("index.json")], 1, &mut |_, _| {})
        .unwrap_err();
    assert!(bad.to_string().contains("index.json"), "{bad}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config with fewer layers than the checkpoint's vision tower is an error naming the
/// field; the text tower's keys of a full CLIPModel file stay a note.
#[test]
fn config_with_fewer_layers_than_the_checkpoint_is_an_error() {
    let (_, report) = crate::clip::load::load_clip::<B>(
        &config("hf_tiny"),
        fixture("clip/hf_tiny_clipmodel.safetensors"),
        &Default::default(),
    )
    .unwrap();
    assert!(report.unused.iter().any(|k| k.starts_with("text_model.")));
    for (name, file) in [
        ("hf_tiny", "clip/hf_tiny_clipmodel.safetensors"),
        ("open_clip_tiny", "clip/open_clip_tiny.safetensors"),
    ] {
        let full = config(name);
        let layers = full.num_hidden_layers;
        let cut = ClipVisionConfig {
            num_hidden_layers: layers - 1,
            ..full
        };
        let e = crate::clip::load::load_clip::<B>(&cut, fixture(file), &Default::default())
            .unwrap_err();
        assert!(matches!(e, LoadError::Unused { .. }), "{file}: {e}");
        let e = e.to_string();
        assert!(
            e.contains("num_hidden_layers") && e.contains(&format!("{layers} layers")),
            "{file}: {e}"
        );
    }
}

/// An HF model directory (`config.json` of a `CLIPModel` with HF's defaults left out, and
/// the weights) gives the shipped RON config and the same features; a vision-only config has
/// no projection unless its architecture has one; an unknown activation names the field.
#[test]
fn hf_model_directory_loads_like_the_ron_config() {
    let dir = std::env::temp_dir().join(format!("mimo-clip-hfdir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 32,
            "text_config": {"hidden_size": 48},
            "vision_config": {"hidden_size": 64, "intermediate_size": 112,
              "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 56,
              "patch_size": 14, "model_type": "clip_vision_model"}}"#,
    )
    .unwrap();
    std::fs::copy(
        fixture("clip/hf_tiny_clipmodel.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let dir_name = dir.display().to_string();
    let cfg = ClipVisionConfig::from_name_or_file(&dir_name).unwrap();
    assert_eq!(cfg, config("hf_tiny"));
    let (tower, report) =
        crate::clip::load::load_clip::<B>(&cfg, &dir, &Default::default()).unwrap();
    assert!(report.unused.iter().all(|k| k.starts_with("text_model.")
        || k == "text_projection.weight"
        || k == "logit_scale"
        || k.starts_with("vision_model.embeddings.position_ids")));
    check(&tower, "clip/hf_tiny_io.safetensors");

    // preprocessor_config.json's mean and std are taken.
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
            "size": {"shortest_edge": 56}, "crop_size": {"height": 56, "width": 56}}"#,
    )
    .unwrap();
    let cfg = ClipVisionConfig::from_name_or_file(&dir_name).unwrap();
    assert_eq!(cfg.preprocess.image_mean, [0.5; 3]);
    assert_eq!(cfg.preprocess.crop_size, Some(56));

    let vision = r#"{"hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 3,
                     "num_attention_heads": 4, "image_size": 56, "patch_size": 14}"#;
    assert_eq!(
        ClipVisionConfig::from_hf_json(vision)
            .unwrap()
            .projection_dim,
        None
    );
    let with = vision.replace(
        '{',
        r#"{"architectures": ["CLIPVisionModelWithProjection"], "#,
    );
    assert_eq!(
        ClipVisionConfig::from_hf_json(&with)
            .unwrap()
            .projection_dim,
        Some(512)
    );
    let relu = vision.replace('{', r#"{"hidden_act": "relu", "#);
    let e = ClipVisionConfig::from_hf_json(&relu).unwrap_err();
    assert!(e.contains("hidden_act") && e.contains("relu"), "{e}");
    std::fs::write(dir.join("config.json"), relu).unwrap();
    let e = ClipVisionConfig::from_name_or_file(&dir_name)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json") && e.contains("hidden_act"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
