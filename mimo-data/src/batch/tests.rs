use super::*;
use crate::build::{DatasetConfig, Source, Splits, build};
use crate::phantom::Style;
use crate::prompts::PointMode;
use crate::record::{Perspective, Turn};
use burn::backend::Flex;
use mimo_core::config::ModelConfig;

fn core_fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mimo-core/fixtures")
        .join(rel)
}

fn batcher() -> MimoBatcher {
    MimoBatcher {
        tokenizer: MimoTokenizer::from_file(core_fixture("tokenizer")).unwrap(),
        template: Template::vicuna_v1(),
        clip: ClipPreprocessConfig::default(),
        clip_size: 28,
        sam_size: 128,
        sam_mean: [123.675, 116.28, 103.53],
        sam_std: [58.395, 57.12, 57.375],
        max_text_len: 512,
        clip_cache: None,
    }
}

fn dataset(name: &str) -> (PathBuf, RecordsDataset) {
    let out = std::env::temp_dir().join(format!("mimo-batch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = DatasetConfig {
        name: "t".into(),
        seed: 1,
        sources: vec![Source::Phantom {
            name: "ct".into(),
            style: Style::Ct,
            count: 4,
            size: 96,
            volumes: 2,
        }],
        perspectives: vec![Perspective::P1, Perspective::P2],
        splits: Splits {
            train: 1.0,
            val: 0.0,
            test: 0.0,
        },
        box_jitter: 0.1,
        point_share: 0.5,
        point_mode: PointMode::Interior,
        knowledge: None,
        qa_endpoint: None,
        workers: None,
    };
    build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    let ds = RecordsDataset::open(&out.join("records.jsonl"), Some(Split::Train)).unwrap();
    (out, ds)
}

#[test]
fn batches_have_model_ready_shapes_and_masked_labels() {
    let (out, ds) = dataset("shapes");
    assert_eq!(ds.len(), 8);
    let items: Vec<Sample> = (0..ds.len()).filter_map(|i| ds.get(i)).collect();
    let b: MimoBatch<Flex> = batcher().batch(items, &Default::default());
    assert!(b.skipped.is_empty(), "{:?}", b.skipped);
    assert_eq!(b.clip_pixels.dims(), [8, 3, 28, 28]);
    assert_eq!(b.sam_pixels.dims(), [8, 3, 128, 128]);
    let seg = i64::from(batcher().tokenizer.ids().seg);
    for i in 0..8 {
        let ids = &b.input_ids[i];
        assert_eq!(ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count(), 1);
        // every <SEG> of the answer is supervised, and there is one mask per <SEG>
        let segs = ids
            .iter()
            .zip(&b.labels[i])
            .filter(|(t, l)| **t == seg && **l == seg)
            .count();
        assert_eq!(segs, b.masks[i].len(), "{}", b.ids[i]);
        // padding is masked and ignored
        for (j, &m) in b.attention_mask[i].iter().enumerate() {
            if m == 0 {
                assert_eq!(b.labels[i][j], IGNORE_INDEX);
            }
        }
        // prompts in SAM's frame: 96 px -> 128 px
        for (p, q) in b.prompts[i].iter().zip(&b.prompts_sam[i]) {
            for (a, c) in p.coords.iter().zip(&q.coords) {
                assert!((a * 128.0 / 96.0 - c).abs() < 1e-4);
            }
        }
        assert_eq!(b.sam_resized[i], (128, 128));
    }
    std::fs::remove_dir_all(&out).ok();
}

/// The golden conversation of the tokenizer fixtures (LISA's rule run in Python with
/// transformers 4.31, the tokenizer's default whitespace rule) comes out of the batcher
/// with the same ids and labels.
#[test]
fn golden_conversation_labels() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(core_fixture("tokenizer/cases.json")).unwrap(),
    )
    .unwrap();
    let conv = &cases["conversations"][0];
    assert_eq!(conv["template"], "vicuna_v1");
    let (q, a) = (
        conv["rounds"][0][0].as_str().unwrap().to_string(),
        conv["rounds"][0][1].as_str().unwrap().to_string(),
    );
    let (out, ds) = dataset("golden");
    let mut s = ds.get(0).unwrap();
    s.record.turns = vec![
        Turn {
            from: crate::record::Role::Human,
            value: q,
        },
        Turn {
            from: crate::record::Role::Gpt,
            value: a,
        },
    ];
    s.masks.truncate(1);
    let b: MimoBatch<Flex> = batcher().batch(vec![s], &Default::default());
    let tf431 = &cases["tf431"]["conversations"][0];
    let want = |k: &str| -> Vec<i64> {
        tf431[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    assert_eq!(b.input_ids[0], want("input_ids"));
    assert_eq!(b.labels[0], want("labels"));
    assert_eq!(b.masks[0].len(), 1);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn host_sam_preprocessing_equals_the_model_and_bad_samples_are_skipped() {
    let (out, ds) = dataset("sam");
    let s = ds.get(1).unwrap();
    let cfg = mimo_core::sam::SamConfig::load(core_fixture("sam/tiny_a.ron")).unwrap();
    let sam = cfg.init::<Flex>(&Default::default());
    let [h, w] = s.size;
    let img = mimo_core::Image::new(w, h, s.rgb.clone()).unwrap();
    let (want, resized) = sam.preprocess(&img);
    let bt = MimoBatcher {
        sam_size: cfg.image_encoder.img_size,
        ..batcher()
    };
    let (got, r2) = bt.sam_pixels(&s.rgb, h, w);
    assert_eq!(resized, r2);
    assert_eq!(want.into_data().to_vec::<f32>().unwrap(), got);

    let mut records = ds.records().to_vec();
    records[0].image = "images/missing.png".into();
    let broken = RecordsDataset::from_records(records, out.clone());
    let items: Vec<Sample> = (0..2).filter_map(|i| broken.get(i)).collect();
    let b: MimoBatch<Flex> = batcher().batch(items, &Default::default());
    assert_eq!(b.ids.len(), 1);
    assert_eq!(b.skipped.len(), 1);
    assert!(b.skipped[0].1.contains("missing.png"), "{:?}", b.skipped);
    std::fs::remove_dir_all(&out).ok();
}

/// Records → batcher → `MimoInput` → the tiny MIMO of `configs/mimo/mimo-tiny.ron`: a
/// finite loss and one mask per `<SEG>` at each image's size.
#[test]
fn batch_feeds_the_model() {
    let (out, ds) = dataset("model");
    let items: Vec<Sample> = (0..3).filter_map(|i| ds.get(i)).collect();
    let cfg_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/mimo/mimo-tiny.ron");
    let cfg = mimo_core::mimo::MimoConfig::load(&cfg_path).unwrap();
    let built = cfg
        .build::<Flex>(cfg_path.parent().unwrap(), &Default::default())
        .unwrap();
    let bt = MimoBatcher::for_model(
        built.tokenizer.clone().unwrap(),
        Template::vicuna_v1(),
        &built.config.clip,
        &built.config.sam,
        512,
    );
    let b: MimoBatch<Flex> = bt.batch(items, &Default::default());
    let out_model = built.model.forward(b.to_input()).expect("forward");
    let loss = out_model.loss.into_scalar();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    for (m, (masks, size)) in out_model
        .pred_masks
        .iter()
        .zip(b.masks.iter().zip(&b.sizes))
    {
        assert_eq!(m.dims(), [masks.len(), size[0], size[1]]);
    }
    std::fs::remove_dir_all(&out).ok();
}

/// VQA records (LLaVA-Med, held-out benchmarks) state no image size: they load with the
/// image's own size instead of being skipped, also from files with the legacy `[0, 0]`.
#[test]
fn records_without_a_size_load() {
    let (out, ds) = dataset("vqa");
    let mut r = ds.records()[0].clone();
    r.size = None;
    r.masks.clear();
    r.perspective = Perspective::Vqa;
    r.turns = vec![
        Turn {
            from: crate::record::Role::Human,
            value: "<image>\nIs there a lesion?".into(),
        },
        Turn {
            from: crate::record::Role::Gpt,
            value: "No.".into(),
        },
    ];
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("\"size\""), "{json}");
    let legacy = json.replacen("\"image\"", "\"size\":[0,0],\"image\"", 1);
    let back: Record = serde_json::from_str(&legacy).unwrap();
    assert_eq!(back.size, None);
    let vqa = RecordsDataset::from_records(vec![back], out.clone());
    let s = vqa.get(0).unwrap();
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(s.size, [96, 96]);
    let b: MimoBatch<Flex> = batcher().batch(vec![s], &Default::default());
    assert!(b.skipped.is_empty(), "{:?}", b.skipped);
    assert_eq!(b.sizes, vec![[96, 96]]);
    std::fs::remove_dir_all(&out).ok();
}
