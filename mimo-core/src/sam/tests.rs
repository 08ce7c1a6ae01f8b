//! Parity of the SAM port with segment_anything on tiny random-weight models; the fixtures
//! are written by `scripts/reference/sam.py`.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Int, Tensor};

use super::*;
use crate::config::ModelConfig;
use crate::loader::LoadError;
use crate::test_util::*;

type B = TestBackend;

/// f32 tolerance of the image embedding, the low-resolution logits and the IoU predictions:
/// the acceptance bound of the project.
const TOL: f32 = 1e-4;
/// Post-processed logits come from two bilinear resizes of the low-res logits (a convex
/// combination, so errors do not grow): the same bound holds.
const TOL_MASKS: f32 = 1e-4;

fn load_tiny(name: &str, ext: &str) -> Sam<B> {
    let cfg = SamConfig::load(fixture(&format!("sam/{name}.ron"))).expect("tiny config");
    let (sam, report) = crate::sam::load::load_sam::<B>(
        &cfg,
        fixture(&format!("sam/{name}.{ext}")),
        &Default::default(),
    )
    .expect("tiny checkpoint loads");
    assert!(report.unused.is_empty(), "unused keys: {:?}", report.unused);
    assert!(report.applied > 0);
    sam
}

fn image_of(a: &Array) -> Image {
    Image::new(a.shape[1], a.shape[0], a.u8.clone()).unwrap()
}

fn prompt_of(io: &HashMap<String, Array>, case: &str) -> Prompt {
    let mut prompt = Prompt::default();
    if let Some(c) = io.get(&format!("{case}_point_coords")) {
        let labels = &io[&format!("{case}_point_labels")].i64;
        for (i, l) in labels.iter().enumerate() {
            prompt.points.push(PointPrompt {
                x: c.f32[2 * i] as f64,
                y: c.f32[2 * i + 1] as f64,
                label: *l,
            });
        }
    }
    if let Some(b) = io.get(&format!("{case}_box")) {
        let v: Vec<f64> = b.f32.iter().map(|&x| x as f64).collect();
        prompt.bbox = Some([v[0], v[1], v[2], v[3]]);
    }
    if let Some(m) = io.get(&format!("{case}_mask_input")) {
        prompt.mask_input = Some(m.f32.clone());
    }
    prompt
}

fn check_model(sam: &Sam<B>, io_name: &str) {
    let io = read_fixture(io_name);
    let image = image_of(&io["image"]);
    let emb = sam.embed_image(&image);
    assert_close(
        "image_embeddings",
        emb.embeddings.clone(),
        &io["image_embeddings"],
        TOL,
    );
    assert_close(
        "image_pe",
        sam.prompt_encoder.get_dense_pe(),
        &io["image_pe"],
        TOL,
    );

    let mut checked = 0;
    for case in [
        "point",
        "points",
        "box",
        "points_box",
        "mask_point",
        "mask_only",
    ] {
        let prompt = prompt_of(&io, case);
        for multi in [false, true] {
            let tag = format!("{case}_{}", if multi { "multi" } else { "single" });
            let pred = sam.predict(&emb, &prompt, multi).unwrap();
            let k = if multi { 3 } else { 1 };
            assert_eq!(pred.masks.dims()[1], k);
            let low = io[&format!("{tag}_low_res")].clone();
            assert_close(
                &format!("{tag} low_res"),
                pred.low_res_masks.clone().squeeze_dim::<3>(0),
                &low,
                TOL,
            );
            let iou = &io[&format!("{tag}_iou")];
            assert_close(
                &format!("{tag} iou"),
                pred.iou_predictions.clone().squeeze_dim::<1>(0),
                iou,
                TOL,
            );
            if let Some(want) = io.get(&format!("{tag}_masks")) {
                let got = pred.masks.clone().squeeze_dim::<3>(0);
                assert_close(&format!("{tag} masks"), got.clone(), want, TOL_MASKS);
                // Thresholded masks: a pixel may only flip where the reference logit is
                // within the tolerance of the threshold.
                let got = got.into_data().to_vec::<f32>().unwrap();
                let flips = got
                    .iter()
                    .zip(&want.f32)
                    .filter(|(g, w)| (**g > 0.0) != (**w > 0.0) && w.abs() > TOL_MASKS)
                    .count();
                assert_eq!(flips, 0, "{tag}: binary masks differ");
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no post-processed masks compared");

    // LISA path: a projected [SEG] embedding as the only sparse token, no mask prompt.
    let text = &io["text_embeds"];
    let device = Default::default();
    let sparse = Tensor::<B, 1>::from_floats(text.f32.as_slice(), &device).reshape([
        text.shape[0],
        text.shape[1],
        text.shape[2],
    ]);
    let (_, dense) = sam.prompt_encoder.forward(None, None, None);
    let [_, c, h, w] = dense.dims();
    let (low, iou) = sam.mask_decoder.forward(
        emb.embeddings.clone(),
        sam.prompt_encoder.get_dense_pe(),
        sparse,
        dense.expand([text.shape[0], c, h, w]),
        false,
    );
    assert_close("text low_res", low, &io["text_low_res"], TOL);
    assert_close("text iou", iou, &io["text_iou"], TOL);
}

#[test]
fn resize_longest_side_matches_pillow_bit_for_bit() {
    let io = read_fixture("sam/transforms.safetensors");
    let mut n = 0;
    while let Some(img) = io.get(&format!("case{n}_image")) {
        let want = &io[&format!("case{n}_resized")];
        let long = io[&format!("case{n}_long")].i64[0] as usize;
        let (h, w) = (img.shape[0], img.shape[1]);
        let (nh, nw) = transforms::preprocess_shape(h, w, long);
        assert_eq!(vec![nh, nw, 3], want.shape, "case {n}: size");
        // The fixture records the pass order the reference's Pillow used (see
        // `transforms::resize_bilinear_u8_ordered`); each order must match bit for bit.
        let vertical_first = io[&format!("case{n}_order")].i64[0] == 1;
        let got =
            transforms::resize_bilinear_u8_ordered(&img.u8, (h, w), 3, (nh, nw), vertical_first);
        let diff = got.iter().zip(&want.u8).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "case {n} ({h}x{w} -> {nh}x{nw}): {diff} pixels differ"
        );
        // Horizontal-first (what `preprocess` does) is at most one grey level off.
        let hf = transforms::resize_bilinear_u8(&img.u8, (h, w), 3, (nh, nw));
        let max = hf
            .iter()
            .zip(&want.u8)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(max <= 1, "case {n}: horizontal-first differs by {max}");
        n += 1;
    }
    assert!(n >= 5);
}

#[test]
fn tiny_a_windowed_padding_matches_segment_anything_pth() {
    let sam = load_tiny("tiny_a", "pth");
    check_model(&sam, "sam/tiny_a_io.safetensors");
}

#[test]
fn tiny_a_safetensors_loads_the_same_weights() {
    let a = load_tiny("tiny_a", "pth");
    let b = load_tiny("tiny_a", "safetensors");
    let x = Tensor::<B, 4>::ones([1, 3, 128, 128], &Default::default());
    let ea = a.image_encoder.forward(x.clone());
    let eb = b.image_encoder.forward(x);
    let diff = (ea - eb).abs().max().into_scalar();
    assert_eq!(diff, 0.0);
}

#[test]
fn tiny_b_several_global_blocks_matches_segment_anything() {
    let sam = load_tiny("tiny_b", "safetensors");
    check_model(&sam, "sam/tiny_b_io.safetensors");
}

#[test]
fn real_checkpoint_key_sets_match_segment_anything() {
    for (name, cfg) in [("vit_b", SamConfig::vit_b()), ("vit_h", SamConfig::vit_h())] {
        assert_key_list(
            &format!("sam/keys_{name}.txt"),
            crate::sam::load::expected_keys::<B>(&cfg, &Default::default()),
        );
    }
}

/// Rewrites a fixture checkpoint with `edit` applied to its tensor map.
fn edited_checkpoint(
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>),
) -> tempfile_path::TempPath {
    let bytes = std::fs::read(fixture("sam/tiny_a.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: BTreeMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let path = tempfile_path::TempPath::new("ckpt.safetensors");
    safetensors::serialize_to_file(views, None, &path.0).unwrap();
    path
}

/// A unique temporary file removed on drop.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "mimo-core-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir.join(name))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn tiny_a_config() -> SamConfig {
    SamConfig::load(fixture("sam/tiny_a.ron")).unwrap()
}

#[test]
fn missing_key_is_named_with_its_shape() {
    let key = "image_encoder.blocks.1.attn.rel_pos_h";
    let path = edited_checkpoint(|m| {
        m.remove(key);
    });
    let err = crate::sam::load::load_sam::<B>(&tiny_a_config(), &path.0, &Default::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::Missing { .. }), "{msg}");
    assert!(msg.contains(&format!("{key} [15, 24]")), "{msg}");
}

#[test]
fn mis_shaped_key_names_key_and_both_shapes() {
    // A linear weight: the message must use the file's [out, in] layout.
    let key = "mask_decoder.transformer.layers.0.mlp.lin1.weight"; // [64, 32]
    let path = edited_checkpoint(|m| {
        let (shape, data) = m.get_mut(key).unwrap();
        *shape = vec![32, 32];
        data.truncate(32 * 32 * 4);
    });
    let err = crate::sam::load::load_sam::<B>(&tiny_a_config(), &path.0, &Default::default())
        .unwrap_err();
    let msg = err.to_string();
    match &err {
        LoadError::Shape {
            key: k,
            expected,
            found,
            ..
        } => {
            assert_eq!(k, key);
            assert_eq!(expected, &vec![64, 32]);
            assert_eq!(found, &vec![32, 32]);
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(
        msg.contains(key) && msg.contains("[64, 32]") && msg.contains("[32, 32]"),
        "{msg}"
    );
}

#[test]
fn unused_keys_are_reported() {
    let path = edited_checkpoint(|m| {
        m.insert("extra_head.weight".into(), (vec![2], vec![0; 8]));
    });
    let (_, report) =
        crate::sam::load::load_sam::<B>(&tiny_a_config(), &path.0, &Default::default()).unwrap();
    assert_eq!(report.unused, vec!["extra_head.weight".to_string()]);
}

#[test]
fn bad_checkpoint_paths_are_clear_errors() {
    let cfg = tiny_a_config();
    let err = crate::sam::load::load_sam::<B>(&cfg, "/nonexistent/sam.pth", &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sam.pth"), "{err}");
    let err = crate::sam::load::load_sam::<B>(&cfg, fixture("sam/tiny_a.ron"), &Default::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::UnknownFormat { .. }), "{err}");
    let garbage = tempfile_path::TempPath::new("garbage.pth");
    std::fs::write(&garbage.0, b"not a zip").unwrap();
    let err = crate::sam::load::load_sam::<B>(&cfg, &garbage.0, &Default::default()).unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err}");
    // A checkpoint of another config names the first offending key.
    let cfg_b = SamConfig::load(fixture("sam/tiny_b.ron")).unwrap();
    let err =
        crate::sam::load::load_sam::<B>(&cfg_b, fixture("sam/tiny_a.pth"), &Default::default())
            .unwrap_err();
    assert!(matches!(err, LoadError::Shape { .. }), "{err}");
}

#[test]
fn prompts_out_of_range_are_rejected_with_the_range() {
    let p = Prompt::default().point(120.0, 5.0, true);
    let e = p.validate(100, 50, 32).unwrap_err();
    assert!(e.to_string().contains("x must be in [0, 100]"), "{e}");
    let p = Prompt::default().boxed(50.0, 5.0, 10.0, 20.0);
    let e = p.validate(100, 50, 32).unwrap_err();
    assert!(e.to_string().contains("x0 <= x1 <= 100"), "{e}");
    let p = Prompt::default().boxed(0.0, 0.0, 100.0, 51.0);
    assert!(p.validate(100, 50, 32).is_err());
    let p = Prompt {
        mask_input: Some(vec![0.0; 10]),
        ..Default::default()
    };
    assert!(matches!(
        p.validate(100, 50, 32),
        Err(PromptError::MaskSize { .. })
    ));
    assert!(
        Prompt::default()
            .point(f64::NAN, 1.0, true)
            .validate(10, 10, 32)
            .is_err()
    );
    assert!(Image::new(2, 2, vec![0; 11]).is_err());
    assert!(Image::new(0, 2, vec![]).is_err());
}

#[test]
fn presets_equal_the_shipped_config_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/sam");
    for name in SamConfig::PRESETS {
        let file = SamConfig::load(dir.join(format!("{name}.ron"))).unwrap();
        assert_eq!(file, SamConfig::preset(name).unwrap(), "{name}");
    }
}

#[test]
fn bad_ron_names_the_field() {
    let text = std::fs::read_to_string(fixture("sam/tiny_a.ron")).unwrap();
    let broken = text.replace("depth: 2,", "");
    let err = crate::config::parse_ron::<SamConfig>(&broken).unwrap_err();
    assert!(err.contains("depth"), "{err}");
    let unknown = text.replacen("qkv_bias: true,", "qkv_bias: true, qkv_bais: true,", 1);
    let err = crate::config::parse_ron::<SamConfig>(&unknown).unwrap_err();
    assert!(err.contains("qkv_bais"), "{err}");
    let mut cfg: SamConfig = crate::config::parse_ron(&text).unwrap();
    cfg.image_encoder.global_attn_indexes = vec![5];
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("image_encoder.global_attn_indexes"), "{err}");
    let err = SamConfig::from_name_or_file("vit_x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("vit_b, vit_l, vit_h"), "{err}");
}

#[test]
fn labels_tensor_roundtrip_sanity() {
    // embed_points with an explicit padding label equals the implicit padding.
    let sam = load_tiny("tiny_a", "safetensors");
    let device = Default::default();
    let pts = Tensor::<B, 3>::from_floats([[[10.0, 20.0]]], &device);
    let lbl = Tensor::<B, 2, Int>::from_ints([[1]], &device);
    let implicit = sam
        .prompt_encoder
        .embed_points(pts.clone(), lbl.clone(), true);
    let pts2 = Tensor::cat(vec![pts, Tensor::from_floats([[[-0.5, -0.5]]], &device)], 1);
    let lbl2 = Tensor::cat(vec![lbl, Tensor::from_ints([[-1]], &device)], 1);
    let explicit = sam.prompt_encoder.embed_points(pts2, lbl2, false);
    let diff = (implicit - explicit).abs().max().into_scalar();
    assert!(diff < 1e-6);
}

/// The image encoder folds the relative positions into a fused attention call. On the
/// real grid (64x64 global blocks) the backend takes its tiled (flash) path, which the tiny
/// fixtures never reach: compare it with the plain formula of segment_anything's
/// `Attention.forward` + `add_decomposed_rel_pos` on a 32x32 grid (1024 tokens, beyond
/// Flex's 512x512 naive-attention budget).
#[test]
fn folded_rel_pos_attention_matches_the_explicit_formula_on_a_large_grid() {
    use burn::tensor::Distribution;
    use burn::tensor::activation::softmax;

    let device = Default::default();
    let cfg = ImageEncoderViTConfig {
        img_size: 512,
        patch_size: 16,
        embed_dim: 32,
        depth: 1,
        num_heads: 2,
        global_attn_indexes: vec![0],
        ..SamConfig::vit_b().image_encoder
    };
    let mut enc = cfg.init::<B>(&device);
    let attn = &mut enc.blocks[0].attn;
    let rand = |shape: [usize; 2]| {
        burn::module::Param::from_tensor(Tensor::<B, 2>::random(
            shape,
            Distribution::Normal(0.0, 0.5),
            &device,
        ))
    };
    attn.rel_pos_h = Some(rand([63, 16]));
    attn.rel_pos_w = Some(rand([63, 16]));
    let x = Tensor::<B, 4>::random([1, 32, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let got = attn.forward(x.clone());

    // Explicit formula: materialised logits + broadcast rel-pos terms.
    let (h, w, heads, hd, n) = (32, 32, 2, 16, 1024);
    let qkv = attn
        .qkv
        .forward(x.reshape([n, 32]))
        .reshape([1, n, 3, heads, hd])
        .permute([2, 0, 3, 1, 4])
        .reshape([3, heads, n, hd]);
    let q = qkv.clone().narrow(0, 0, 1).reshape([heads, n, hd]);
    let k = qkv.clone().narrow(0, 1, 1).reshape([heads, n, hd]);
    let v = qkv.narrow(0, 2, 1).reshape([heads, n, hd]);
    let logits = (q.clone() * 0.25).matmul(k.swap_dims(1, 2));
    let gather = |table: Tensor<B, 2>| {
        let idx: Vec<i64> = (0..32)
            .flat_map(|a| (0..32).map(move |b| a - b + 31))
            .collect();
        table
            .select(0, Tensor::<B, 1, Int>::from_ints(idx.as_slice(), &device))
            .reshape([32, 32, hd])
    };
    let rh = gather(attn.rel_pos_h.as_ref().unwrap().val());
    let rw = gather(attn.rel_pos_w.as_ref().unwrap().val());
    let rq = q.reshape([heads, h, w, hd]);
    // rel_h[b,y,x,ky] = sum_c rq[b,y,x,c] rh[y,ky,c]
    let rel_h = (rq.clone().unsqueeze_dim::<5>(3) * rh.unsqueeze_dim::<4>(0).unsqueeze_dim::<5>(2))
        .sum_dim(4);
    let rel_w =
        (rq.unsqueeze_dim::<5>(3) * rw.unsqueeze_dim::<4>(0).unsqueeze_dim::<5>(1)).sum_dim(4);
    let rel_h: Tensor<B, 4> = rel_h.squeeze_dim(4);
    let rel_w: Tensor<B, 4> = rel_w.squeeze_dim(4);
    let logits = logits.reshape([heads, h, w, h, w])
        + rel_h.unsqueeze_dim::<5>(4)
        + rel_w.unsqueeze_dim::<5>(3);
    let out = softmax(logits.reshape([heads, n, n]), 2).matmul(v);
    let out = out
        .reshape([1, heads, h, w, hd])
        .permute([0, 2, 3, 1, 4])
        .reshape([n, 32]);
    let want = attn.proj.forward(out).reshape([1, h, w, 32]);
    let err = (got - want).abs().max().into_scalar();
    println!("folded vs explicit rel-pos attention: max abs err {err:e}");
    assert!(err < 1e-4, "{err}");
}

#[test]
fn mis_shaped_square_linear_reports_the_file_layout() {
    let key = "mask_decoder.transformer.layers.0.self_attn.q_proj.weight"; // [32, 32]
    let path = edited_checkpoint(|m| {
        let (shape, data) = m.get_mut(key).unwrap();
        *shape = vec![16, 32];
        data.truncate(16 * 32 * 4);
    });
    let err = crate::sam::load::load_sam::<B>(&tiny_a_config(), &path.0, &Default::default())
        .unwrap_err();
    match err {
        LoadError::Shape {
            key: k,
            expected,
            found,
            ..
        } => {
            assert_eq!(
                (k.as_str(), expected, found),
                (key, vec![32, 32], vec![16, 32])
            );
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn sharded_safetensors_with_index_load_like_one_file() {
    let bytes = std::fs::read(fixture("sam/tiny_a.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dir = tempfile_path::TempPath::new("model.safetensors.index.json");
    let root = dir.0.parent().unwrap().to_path_buf();
    let mut weight_map = serde_json::Map::new();
    let tensors = st.tensors();
    for (shard, part) in tensors.chunks(tensors.len() / 2 + 1).enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", shard + 1);
        for (k, _) in part {
            weight_map.insert(k.clone(), name.clone().into());
        }
        safetensors::serialize_to_file(part.to_vec(), None, &root.join(&name)).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(&dir.0, index.to_string()).unwrap();
    let cfg = tiny_a_config();
    let (sharded, report) =
        crate::sam::load::load_sam::<B>(&cfg, &dir.0, &Default::default()).unwrap();
    assert!(report.unused.is_empty());
    let single = load_tiny("tiny_a", "safetensors");
    let x = Tensor::<B, 4>::ones([1, 3, 128, 128], &Default::default());
    let diff = (sharded.image_encoder.forward(x.clone()) - single.image_encoder.forward(x))
        .abs()
        .max()
        .into_scalar();
    assert_eq!(diff, 0.0);
    // A missing shard is named.
    std::fs::remove_file(root.join("model-00002-of-00002.safetensors")).unwrap();
    let err = crate::sam::load::load_sam::<B>(&cfg, &dir.0, &Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

/// A config with fewer encoder blocks than its checkpoint is an error naming the field (it
/// used to run a cut-down encoder with a note about unused keys).
#[test]
fn config_with_fewer_blocks_than_the_checkpoint_is_an_error() {
    let mut cfg = SamConfig::load(fixture("sam/tiny_b.ron")).unwrap();
    cfg.image_encoder.depth = 2;
    cfg.image_encoder.global_attn_indexes = vec![1];
    let e = crate::sam::load::load_sam::<B>(
        &cfg,
        fixture("sam/tiny_b.safetensors"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::Unused { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("image_encoder.depth")
            && e.contains("4 encoder blocks")
            && e.contains("image_encoder.blocks.2"),
        "{e}"
    );
}
