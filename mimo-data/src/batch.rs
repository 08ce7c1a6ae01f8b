//! burn integration: a [`Dataset`] over `records.jsonl` that loads images and masks lazily,
//! and a [`Batcher`] that turns samples into model-ready batches: CLIP and SAM
//! pre-processed pixels, token ids and labels of the conversation (LISA's tokenisation, −100
//! outside the answers), visual prompts in the original and in SAM's frame, and the masks at
//! original size, one per `<SEG>`.

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use mimo_core::clip::ClipVisionConfig;
use mimo_core::clip::preprocess::ClipPreprocessConfig;
use mimo_core::sam::SamConfig;
use mimo_core::sam::transforms::{apply_coords, pixels};
use mimo_core::tokenizer::conversation::{Template, tokenize_conversation};
use mimo_core::tokenizer::{IGNORE_INDEX, IMAGE_TOKEN_INDEX, MimoTokenizer};

use crate::record::{JsonlError, Record, Split, VisualPrompt, read_jsonl};

/// A record with its image and masks loaded.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The record.
    pub record: Record,
    /// RGB pixels, row-major (empty when `error` is set).
    pub rgb: Vec<u8>,
    /// Masks (row-major, original size), in `<SEG>` order.
    pub masks: Vec<Vec<bool>>,
    /// `[height, width]` of the loaded image (`[0, 0]` when `error` is set).
    pub size: [usize; 2],
    /// Why the sample could not be loaded; the batcher leaves such samples out.
    pub error: Option<String>,
}

/// RGB pixels, masks and `[height, width]` of a loaded record.
type Loaded = (Vec<u8>, Vec<Vec<bool>>, [usize; 2]);

/// Records of a `records.jsonl` (optionally one split), read lazily: images and masks are
/// loaded in [`Dataset::get`], so a data loader's workers do the decoding.
#[derive(Debug, Clone)]
pub struct RecordsDataset {
    records: Vec<Record>,
    root: PathBuf,
}

impl RecordsDataset {
    /// Opens `records.jsonl`; image paths are relative to its folder.
    pub fn open(path: &Path, split: Option<Split>) -> Result<Self, JsonlError> {
        let records: Vec<Record> = read_jsonl(path)?;
        Ok(Self::from_records(
            records
                .into_iter()
                .filter(|r| split.is_none_or(|s| r.split == s))
                .collect(),
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        ))
    }

    /// Wraps records whose images are relative to `root`.
    pub fn from_records(records: Vec<Record>, root: PathBuf) -> Self {
        Self { records, root }
    }

    /// The records.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    fn load(&self, r: &Record) -> Result<Loaded, String> {
        let path = self.root.join(&r.image);
        let img = image::open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        if let Some(size) = r.size
            && [h, w] != size
        {
            return Err(format!(
                "{}: image is {w}x{h}, the record says {size:?}",
                path.display()
            ));
        }
        let masks = r
            .masks
            .iter()
            .map(|m| {
                if m.rle.size != [h, w] {
                    return Err(format!(
                        "record {}: mask `{}` has size {:?}",
                        r.id, m.label, m.rle.size
                    ));
                }
                m.rle
                    .decode()
                    .map_err(|e| format!("record {}: mask `{}`: {e}", r.id, m.label))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((img.into_raw(), masks, [h, w]))
    }
}

impl Dataset<Sample> for RecordsDataset {
    fn get(&self, index: usize) -> Option<Sample> {
        let record = self.records.get(index)?.clone();
        Some(match self.load(&record) {
            Ok((rgb, masks, size)) => Sample {
                record,
                rgb,
                masks,
                size,
                error: None,
            },
            Err(e) => Sample {
                record,
                rgb: Vec::new(),
                masks: Vec::new(),
                size: [0, 0],
                error: Some(e),
            },
        })
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

/// What the batcher produces.
#[derive(Debug, Clone)]
pub struct MimoBatch<B: Backend> {
    /// Record ids (samples that failed to load are left out and listed in `skipped`).
    pub ids: Vec<String>,
    /// CLIP pixel values `[N, 3, S, S]`.
    pub clip_pixels: Tensor<B, 4>,
    /// SAM input `[N, 3, L, L]`: resized (long side L), normalised, zero-padded.
    pub sam_pixels: Tensor<B, 4>,
    /// Size of each image inside the SAM input before padding.
    pub sam_resized: Vec<(usize, usize)>,
    /// Original `[height, width]`.
    pub sizes: Vec<[usize; 2]>,
    /// Token ids, right-padded with the pad id; [`IMAGE_TOKEN_INDEX`] where the image goes.
    pub input_ids: Vec<Vec<i64>>,
    /// Targets: [`IGNORE_INDEX`] outside the answers and on padding.
    pub labels: Vec<Vec<i64>>,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u8>>,
    /// Visual prompts in original pixels.
    pub prompts: Vec<Vec<VisualPrompt>>,
    /// The same prompts in SAM's resized frame.
    pub prompts_sam: Vec<Vec<VisualPrompt>>,
    /// Ground-truth masks at original size, one per `<SEG>` kept after truncation.
    pub masks: Vec<Vec<Vec<bool>>>,
    /// Samples left out, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl<B: Backend> MimoBatch<B> {
    /// The model's input ([`mimo_core::mimo::MimoInput`]): the same tensors, token ids
    /// and masks on `device`, prompts as SAM-style points (boxes as two corners).
    pub fn to_input(&self) -> mimo_core::mimo::MimoInput<B> {
        use mimo_core::prompt::{PromptTensors, VisualPrompt as Vp};
        let device = self.clip_pixels.device();
        let n = self.ids.len();
        let l = self.input_ids.first().map(Vec::len).unwrap_or(0);
        let ints = |rows: &[Vec<i64>]| {
            let flat: Vec<i64> = rows.iter().flatten().copied().collect();
            Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(flat, [n, l]), &device)
        };
        let prompts: Vec<Vec<Vp>> = self
            .prompts
            .iter()
            .map(|ps| ps.iter().filter_map(|p| p.to_model()).collect())
            .collect();
        let mask: Vec<bool> = self
            .attention_mask
            .iter()
            .flatten()
            .map(|&m| m != 0)
            .collect();
        mimo_core::mimo::MimoInput {
            clip: mimo_core::mimo::ClipInput::Pixels(self.clip_pixels.clone()),
            sam_pixels: self.sam_pixels.clone(),
            sam_resized: self.sam_resized.iter().map(|&(h, w)| [h, w]).collect(),
            sizes: self.sizes.clone(),
            prompts: PromptTensors::from_prompts(&prompts, 0, &device),
            input_ids: ints(&self.input_ids),
            labels: Some(ints(&self.labels)),
            attention_mask: Tensor::from_data(TensorData::new(mask, [n, l]), &device),
            masks: self
                .masks
                .iter()
                .zip(&self.sizes)
                .map(|(ms, &[h, w])| {
                    let flat: Vec<f32> = ms
                        .iter()
                        .flat_map(|m| m.iter().map(|&v| if v { 1.0 } else { 0.0 }))
                        .collect();
                    Tensor::from_data(TensorData::new(flat, [ms.len(), h, w]), &device)
                })
                .collect(),
        }
    }
}

/// Settings of the batcher.
#[derive(Debug, Clone)]
pub struct MimoBatcher {
    /// The tokenizer (with MIMO's added tokens).
    pub tokenizer: MimoTokenizer,
    /// Conversation template.
    pub template: Template,
    /// CLIP pre-processing.
    pub clip: ClipPreprocessConfig,
    /// CLIP input side.
    pub clip_size: usize,
    /// SAM input side (1024 for the real models).
    pub sam_size: usize,
    /// SAM pixel mean (0..255 scale).
    pub sam_mean: [f32; 3],
    /// SAM pixel std.
    pub sam_std: [f32; 3],
    /// Text tokens kept per sample (LISA: `model_max_length - 255`).
    pub max_text_len: usize,
}

impl MimoBatcher {
    /// The batcher for a model with these CLIP and SAM configs: their input sides and
    /// pre-processing (CLIP's resize/crop/normalisation, SAM's pixel mean and std).
    pub fn for_model(
        tokenizer: MimoTokenizer,
        template: Template,
        clip: &ClipVisionConfig,
        sam: &SamConfig,
        max_text_len: usize,
    ) -> Self {
        Self {
            tokenizer,
            template,
            clip: clip.preprocess.clone(),
            clip_size: clip.image_size,
            sam_size: sam.image_encoder.img_size,
            sam_mean: sam.pixel_mean,
            sam_std: sam.pixel_std,
            max_text_len,
        }
    }

    /// SAM's pre-processing on the host ([`mimo_core::sam::transforms::pixels`], which
    /// `Sam::preprocess` uses too) at `sam_size` with the batcher's mean and std.
    pub fn sam_pixels(&self, rgb: &[u8], h: usize, w: usize) -> (Vec<f32>, (usize, usize)) {
        pixels(rgb, (h, w), self.sam_size, self.sam_mean, self.sam_std)
    }

    /// Token ids and labels of a record's conversation, truncated to `max_text_len`; the
    /// number of `<SEG>` tokens that survived truncation.
    pub fn tokenize(&self, r: &Record) -> Result<(Vec<i64>, Vec<i64>, usize), String> {
        let mut rounds: Vec<(String, Option<String>)> = Vec::new();
        for pair in r.turns.chunks(2) {
            let q = pair[0].value.clone();
            let a = pair.get(1).map(|t| t.value.clone());
            rounds.push((q, a));
        }
        if rounds.iter().any(|(_, a)| a.is_none()) {
            return Err(format!("record {}: a question without an answer", r.id));
        }
        let text = self.template.expand_image(&self.template.prompt(&rounds));
        let t = tokenize_conversation(&self.tokenizer, &self.template, &text)
            .map_err(|e| format!("record {}: {e}", r.id))?;
        let (mut ids, mut labels) = (t.input_ids, t.labels);
        ids.truncate(self.max_text_len);
        labels.truncate(self.max_text_len);
        let seg = i64::from(self.tokenizer.ids().seg);
        let kept = ids.iter().filter(|&&t| t == seg).count();
        Ok((ids, labels, kept))
    }
}

fn scale_prompt(p: &VisualPrompt, old: (usize, usize), new: (usize, usize)) -> VisualPrompt {
    let coords = p
        .coords
        .chunks(2)
        .flat_map(|xy| {
            let [x, y] = apply_coords([xy[0], xy.get(1).copied().unwrap_or(0.0)], old, new);
            [f64::from(x), f64::from(y)]
        })
        .collect();
    VisualPrompt {
        kind: p.kind,
        coords,
        label: p.label,
    }
}

impl<B: Backend> Batcher<B, Sample, MimoBatch<B>> for MimoBatcher {
    fn batch(&self, items: Vec<Sample>, device: &B::Device) -> MimoBatch<B> {
        let mut b = MimoBatch {
            ids: Vec::new(),
            clip_pixels: mimo_core::nn::empty([0, 3, self.clip_size, self.clip_size], device),
            sam_pixels: mimo_core::nn::empty([0, 3, self.sam_size, self.sam_size], device),
            sam_resized: Vec::new(),
            sizes: Vec::new(),
            input_ids: Vec::new(),
            labels: Vec::new(),
            attention_mask: Vec::new(),
            prompts: Vec::new(),
            prompts_sam: Vec::new(),
            masks: Vec::new(),
            skipped: Vec::new(),
        };
        let (mut clip, mut sam) = (Vec::new(), Vec::new());
        for s in items {
            if let Some(e) = s.error {
                b.skipped.push((s.record.id, e));
                continue;
            }
            let [h, w] = s.size;
            let (ids, labels, segs) = match self.tokenize(&s.record) {
                Ok(t) => t,
                Err(e) => {
                    b.skipped.push((s.record.id, e));
                    continue;
                }
            };
            clip.extend(
                self.clip
                    .pixel_values(&s.rgb, (h, w), self.clip_size, false),
            );
            let (px, resized) = self.sam_pixels(&s.rgb, h, w);
            sam.extend(px);
            b.sam_resized.push(resized);
            b.prompts_sam.push(
                s.record
                    .prompts
                    .iter()
                    .map(|p| scale_prompt(p, (h, w), resized))
                    .collect(),
            );
            b.prompts.push(s.record.prompts.clone());
            let mut masks = s.masks;
            masks.truncate(segs);
            b.masks.push(masks);
            b.sizes.push([h, w]);
            b.input_ids.push(ids);
            b.labels.push(labels);
            b.ids.push(s.record.id);
        }
        let n = b.ids.len();
        let width = b.input_ids.iter().map(Vec::len).max().unwrap_or(0);
        let pad = i64::from(self.tokenizer.ids().pad());
        for (ids, labels) in b.input_ids.iter_mut().zip(b.labels.iter_mut()) {
            let len = ids.len();
            b.attention_mask
                .push((0..width).map(|i| u8::from(i < len)).collect());
            ids.resize(width, pad);
            labels.resize(width, IGNORE_INDEX);
        }
        let (c, s) = (self.clip_size, self.sam_size);
        b.clip_pixels = Tensor::from_data(TensorData::new(clip, [n, 3, c, c]), device);
        b.sam_pixels = Tensor::from_data(TensorData::new(sam, [n, 3, s, s]), device);
        debug_assert!(
            b.input_ids
                .iter()
                .all(|r| r.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count() <= 1)
        );
        b
    }
}

#[cfg(test)]
mod tests {
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
}
