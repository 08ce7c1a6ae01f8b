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
    /// The image file's feature-cache key (SHA-256 of its bytes,
    /// [`mimo_core::clip::cache::image_key`]), when the dataset computes keys
    /// ([`RecordsDataset::with_image_keys`]).
    pub image_key: Option<String>,
}

/// RGB pixels, masks, `[height, width]` and cache key of a loaded record.
type Loaded = (Vec<u8>, Vec<Vec<bool>>, [usize; 2], Option<String>);

/// Records of a `records.jsonl` (optionally one split), read lazily: images and masks are
/// loaded in [`Dataset::get`], so a data loader's workers do the decoding.
#[derive(Debug, Clone)]
pub struct RecordsDataset {
    records: Vec<Record>,
    root: PathBuf,
    image_keys: bool,
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
        Self {
            records,
            root,
            image_keys: false,
        }
    }

    /// Whether samples carry their image's feature-cache key (for a batcher reading CLIP
    /// features from a cache).
    pub fn with_image_keys(mut self, keys: bool) -> Self {
        self.image_keys = keys;
        self
    }

    /// The records.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    fn load(&self, r: &Record) -> Result<Loaded, String> {
        let path = self.root.join(&r.image);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = self
            .image_keys
            .then(|| mimo_core::clip::cache::image_key(&bytes));
        let img = image::load_from_memory(&bytes)
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
        Ok((img.into_raw(), masks, [h, w], key))
    }
}

impl Dataset<Sample> for RecordsDataset {
    fn get(&self, index: usize) -> Option<Sample> {
        let record = self.records.get(index)?.clone();
        Some(match self.load(&record) {
            Ok((rgb, masks, size, image_key)) => Sample {
                record,
                rgb,
                masks,
                size,
                error: None,
                image_key,
            },
            Err(e) => Sample {
                record,
                rgb: Vec::new(),
                masks: Vec::new(),
                size: [0, 0],
                image_key: None,
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
    /// CLIP pixel values `[N, 3, S, S]` (`[0, 3, S, S]` when `clip_features` is set).
    pub clip_pixels: Tensor<B, 4>,
    /// CLIP features `[N, tokens, hidden]` from a feature cache, when the batcher has one:
    /// the tower does not run.
    pub clip_features: Option<Tensor<B, 3>>,
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
            clip: match &self.clip_features {
                Some(f) => mimo_core::mimo::ClipInput::Features(f.clone()),
                None => mimo_core::mimo::ClipInput::Pixels(self.clip_pixels.clone()),
            },
            sam_pixels: self.sam_pixels.clone(),
            sam_embeddings: None,
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
    /// CLIP features of the images, looked up by the samples' image keys instead of
    /// pre-processing pixels for the tower (the dataset must compute keys:
    /// [`RecordsDataset::with_image_keys`]). A sample whose image is not cached is skipped
    /// with the reason.
    pub clip_cache: Option<std::sync::Arc<mimo_core::clip::cache::FeatureCache>>,
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
            clip_cache: None,
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
            clip_features: None,
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
        let mut features: Vec<f32> = Vec::new();
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
            match &self.clip_cache {
                Some(cache) => {
                    let found = match &s.image_key {
                        Some(key) => cache.get(key).map_err(|e| e.to_string()).and_then(|f| {
                            f.ok_or_else(|| {
                                format!("image {} is not in the CLIP feature cache", s.record.image)
                            })
                        }),
                        None => Err("the dataset gives no image keys for the feature cache".into()),
                    };
                    match found {
                        Ok(f) => features.extend(f),
                        Err(e) => {
                            b.skipped.push((s.record.id, e));
                            continue;
                        }
                    }
                }
                None => clip.extend(
                    self.clip
                        .pixel_values(&s.rgb, (h, w), self.clip_size, false),
                ),
            }
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
        match &self.clip_cache {
            Some(cache) => {
                let [t, d] = cache.manifest().feature_shape;
                b.clip_features = Some(Tensor::from_data(
                    TensorData::new(features, [n, t, d]),
                    device,
                ));
            }
            None => {
                b.clip_pixels = Tensor::from_data(TensorData::new(clip, [n, 3, c, c]), device);
            }
        }
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
mod tests;
