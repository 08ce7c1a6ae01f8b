//! Segment Anything (`facebookresearch/segment-anything`): image encoder, prompt encoder
//! and mask decoder, with the predictor's pre- and post-processing.
//!
//! The image embedding is computed once with [`Sam::embed_image`] and reused by any number
//! of [`Sam::predict`] calls. Module fields carry the PyTorch names, so a checkpoint loads
//! with a handful of renames (see [`crate::sam::load`]).
//!
//! ```no_run
//! # use burn::backend::Flex;
//! use mimo_core::Image;
//! use mimo_core::sam::{Prompt, SamConfig};
//! let device = Default::default();
//! let sam = SamConfig::vit_b().init::<Flex>(&device);
//! let image = Image::new(640, 480, vec![0; 640 * 480 * 3]).unwrap();
//! let emb = sam.embed_image(&image);
//! let prompt = Prompt::default().point(320.0, 240.0, true).boxed(100.0, 80.0, 500.0, 400.0);
//! let pred = sam.predict(&emb, &prompt, false).unwrap();
//! let masks = pred.binary_masks(); // [1, 480, 640]
//! ```

mod config;
mod image_encoder;
pub mod load;
mod mask_decoder;
mod prompt_encoder;
pub mod transforms;

pub use config::{
    ImageEncoderViTConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig,
    TwoWayTransformerConfig,
};
pub use image_encoder::{
    Attention as EncoderAttention, Block, ImageEncoderViT, MlpBlock, Neck, PatchEmbed,
    window_partition, window_unpartition,
};
pub use load::load_sam;
pub use mask_decoder::{
    Attention as DecoderAttention, MaskDecoder, MlpBlock as DecoderMlpBlock, OutputUpscaling,
    TwoWayAttentionBlock, TwoWayTransformer,
};
pub use prompt_encoder::{
    LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT, LABEL_NEGATIVE, LABEL_PAD, LABEL_POSITIVE,
    MaskDownscaling, PositionEmbeddingRandom, PromptEncoder,
};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::imageops::{Image, ImageError};

/// The Segment Anything model.
#[derive(Module, Debug)]
pub struct Sam<B: Backend> {
    /// ViT image encoder.
    pub image_encoder: ImageEncoderViT<B>,
    /// Prompt encoder.
    pub prompt_encoder: PromptEncoder<B>,
    /// Mask decoder.
    pub mask_decoder: MaskDecoder<B>,
    /// Pixel mean (RGB, 0..255), not part of the checkpoint.
    pub pixel_mean: [f32; 3],
    /// Pixel standard deviation (RGB), not part of the checkpoint.
    pub pixel_std: [f32; 3],
    /// Logit threshold of a foreground pixel.
    pub mask_threshold: f32,
}

/// A bad image or prompt; the message gives the valid range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// The image buffer does not fit its size.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A point outside the image.
    #[error("point ({x}, {y}) is outside the image: x must be in [0, {width}], y in [0, {height}]")]
    PointOutside {
        /// x.
        x: f64,
        /// y.
        y: f64,
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
    },
    /// A box outside the image or with reversed corners.
    #[error(
        "box ({x0}, {y0}, {x1}, {y1}) is invalid: need 0 <= x0 <= x1 <= {width} and 0 <= y0 <= y1 <= {height}"
    )]
    BadBox {
        /// Left.
        x0: f64,
        /// Top.
        y0: f64,
        /// Right.
        x1: f64,
        /// Bottom.
        y1: f64,
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
    },
    /// A mask prompt of the wrong size.
    #[error("mask prompt must be {expected}x{expected} low-resolution logits, got {got} values")]
    MaskSize {
        /// Expected side.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A coordinate that is NaN or infinite.
    #[error("prompt coordinates must be finite")]
    NotFinite,
}

/// A point prompt in original pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointPrompt {
    /// Column.
    pub x: f64,
    /// Row.
    pub y: f64,
    /// 1 foreground, 0 background (see the `LABEL_*` constants).
    pub label: i64,
}

/// The prompts of one prediction, in original pixels.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// Clicks.
    pub points: Vec<PointPrompt>,
    /// Box `[x0, y0, x1, y1]`.
    pub bbox: Option<[f64; 4]>,
    /// Low-resolution mask logits (`low_res_size`²), e.g. a previous prediction.
    pub mask_input: Option<Vec<f32>>,
}

impl Prompt {
    /// Adds a foreground (`positive`) or background click.
    pub fn point(mut self, x: f64, y: f64, positive: bool) -> Self {
        self.points.push(PointPrompt {
            x,
            y,
            label: if positive {
                LABEL_POSITIVE
            } else {
                LABEL_NEGATIVE
            },
        });
        self
    }

    /// Sets the box.
    pub fn boxed(mut self, x0: f64, y0: f64, x1: f64, y1: f64) -> Self {
        self.bbox = Some([x0, y0, x1, y1]);
        self
    }

    /// Checks the prompt against an image of `width x height` and a mask side `mask_side`.
    pub fn validate(
        &self,
        width: usize,
        height: usize,
        mask_side: usize,
    ) -> Result<(), PromptError> {
        for p in &self.points {
            if !p.x.is_finite() || !p.y.is_finite() {
                return Err(PromptError::NotFinite);
            }
            if p.x < 0.0 || p.y < 0.0 || p.x > width as f64 || p.y > height as f64 {
                return Err(PromptError::PointOutside {
                    x: p.x,
                    y: p.y,
                    width,
                    height,
                });
            }
        }
        if let Some([x0, y0, x1, y1]) = self.bbox {
            if [x0, y0, x1, y1].iter().any(|v| !v.is_finite()) {
                return Err(PromptError::NotFinite);
            }
            let ok = 0.0 <= x0
                && x0 <= x1
                && x1 <= width as f64
                && 0.0 <= y0
                && y0 <= y1
                && y1 <= height as f64;
            if !ok {
                return Err(PromptError::BadBox {
                    x0,
                    y0,
                    x1,
                    y1,
                    width,
                    height,
                });
            }
        }
        if let Some(m) = &self.mask_input
            && m.len() != mask_side * mask_side
        {
            return Err(PromptError::MaskSize {
                expected: mask_side,
                got: m.len(),
            });
        }
        Ok(())
    }
}

/// An image embedding with the sizes needed to map prompts and masks.
#[derive(Debug, Clone)]
pub struct ImageEmbedding<B: Backend> {
    /// `[1, C, h, w]`.
    pub embeddings: Tensor<B, 4>,
    /// Original `(height, width)`.
    pub original_size: (usize, usize),
    /// Size after the long-side resize, before padding.
    pub input_size: (usize, usize),
}

/// The result of [`Sam::predict`].
#[derive(Debug, Clone)]
pub struct MaskPrediction<B: Backend> {
    /// Mask logits at the original size, `[1, K, H, W]` (K = 1, or 3 with multimask).
    pub masks: Tensor<B, 4>,
    /// Predicted IoU of each mask, `[1, K]`.
    pub iou_predictions: Tensor<B, 2>,
    /// Low-resolution logits `[1, K, 4h, 4w]`, usable as the next `mask_input`.
    pub low_res_masks: Tensor<B, 4>,
    /// Threshold for [`MaskPrediction::binary_masks`].
    pub mask_threshold: f32,
}

/// A [`MaskPrediction`] read back to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMasks {
    /// `K` binary masks, row-major `K x H x W` (logit > threshold).
    pub masks: Vec<bool>,
    /// Predicted IoU of each mask.
    pub ious: Vec<f32>,
    /// The mask with the highest predicted IoU.
    pub best: usize,
    /// `(height, width)` of each mask.
    pub size: (usize, usize),
}

impl HostMasks {
    /// Mask `k`, row-major `H x W`.
    pub fn mask(&self, k: usize) -> &[bool] {
        let n = self.size.0 * self.size.1;
        &self.masks[k * n..(k + 1) * n]
    }
}

impl<B: Backend> MaskPrediction<B> {
    /// The masks (thresholded on the host: float logits read back the same on every backend)
    /// and predicted IoUs, with the index of the best mask.
    pub fn to_host(&self) -> Result<HostMasks, String> {
        let [_, _, h, w] = self.masks.dims();
        let masks = self
            .masks
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("reading masks: {e:?}"))?
            .into_iter()
            .map(|v| v > self.mask_threshold)
            .collect();
        let ious = self
            .iou_predictions
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("reading IoUs: {e:?}"))?;
        let best = ious
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        Ok(HostMasks {
            masks,
            ious,
            best,
            size: (h, w),
        })
    }

    /// `masks > threshold`, `[K, H, W]`. To read masks on the host, threshold
    /// `masks.into_data().convert::<f32>()` instead: bool tensors are stored per backend
    /// (u8 on Flex, u32 on wgpu) and do not convert to `Vec<bool>` everywhere.
    pub fn binary_masks(&self) -> Tensor<B, 3, Bool> {
        let [_, k, h, w] = self.masks.dims();
        self.masks
            .clone()
            .reshape([k, h, w])
            .greater_elem(self.mask_threshold)
    }
}

impl SamConfig {
    /// Builds a model of this config with lazily initialised weights (load a checkpoint
    /// next, or use [`crate::sam::load::load_sam`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Sam<B> {
        Sam {
            image_encoder: self.image_encoder.init(device),
            prompt_encoder: prompt_encoder::init_prompt_encoder(self, device),
            mask_decoder: self.mask_decoder.init(device),
            pixel_mean: self.pixel_mean,
            pixel_std: self.pixel_std,
            mask_threshold: self.mask_threshold,
        }
    }
}

impl<B: Backend> Sam<B> {
    /// The padded model input side (1024 for the released models).
    pub fn img_size(&self) -> usize {
        self.image_encoder.img_size
    }

    /// Side of the low-resolution masks and of a mask prompt.
    pub fn low_res_size(&self) -> usize {
        4 * self.prompt_encoder.image_embedding_size[0]
    }

    /// Resizes (Pillow bilinear, long side = `img_size`), normalises and zero-pads an image
    /// to `[1, 3, img_size, img_size]`; returns it with the resized size.
    pub fn preprocess(&self, image: &Image) -> (Tensor<B, 4>, (usize, usize)) {
        let s = self.img_size();
        let (data, resized) = transforms::pixels(
            image.rgb(),
            (image.height(), image.width()),
            s,
            self.pixel_mean,
            self.pixel_std,
        );
        let x = Tensor::from_data(TensorData::new(data, [1, 3, s, s]), &self.device());
        (x, resized)
    }

    /// Runs the image encoder once; the result serves any number of prompts.
    pub fn embed_image(&self, image: &Image) -> ImageEmbedding<B> {
        self.embed_image_with_progress(image, |_, _| {})
    }

    /// [`Sam::embed_image`] reporting `(blocks_done, blocks_total)` of the encoder.
    pub fn embed_image_with_progress(
        &self,
        image: &Image,
        progress: impl FnMut(usize, usize),
    ) -> ImageEmbedding<B> {
        let (x, input_size) = self.preprocess(image);
        ImageEmbedding {
            embeddings: self.image_encoder.forward_with_progress(x, progress),
            original_size: (image.height(), image.width()),
            input_size,
        }
    }

    /// Upscales low-resolution logits `[B, K, 4h, 4w]` to the padded input size, crops the
    /// padding and resizes to `original_size` (bilinear, `align_corners = false`).
    pub fn postprocess_masks(
        &self,
        masks: Tensor<B, 4>,
        input_size: (usize, usize),
        original_size: (usize, usize),
    ) -> Tensor<B, 4> {
        // segment_anything: interpolate to (s, s), crop to input_size, interpolate to
        // original_size, all bilinear without corner alignment. The three linear maps fold
        // into one matrix per axis (see `resize_separable`).
        let s = self.img_size();
        let [_, _, h, w] = masks.dims();
        let axis = |low: usize, crop: usize, out: usize| {
            let up: Vec<f64> = crate::nn::bilinear_weights(low, s)[..crop * low].to_vec();
            let down = crate::nn::bilinear_weights(crop, out);
            crate::nn::host_matmul(&down, &up, out, crop, low)
        };
        let rows = axis(h, input_size.0, original_size.0);
        let cols = axis(w, input_size.1, original_size.1);
        crate::nn::resize_separable(masks, &rows, &cols, [original_size.0, original_size.1])
    }

    /// Encodes a validated prompt into sparse and dense embeddings (input-frame
    /// coordinates, as `SamPredictor.predict` does).
    pub fn encode_prompt(
        &self,
        embedding: &ImageEmbedding<B>,
        prompt: &Prompt,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 4>), PromptError> {
        let (oh, ow) = embedding.original_size;
        let side = self.low_res_size();
        prompt.validate(ow, oh, side)?;
        let device = self.device();
        let old = embedding.original_size;
        let new = embedding.input_size;
        let points = (!prompt.points.is_empty()).then(|| {
            let coords: Vec<f32> = prompt
                .points
                .iter()
                .flat_map(|p| transforms::apply_coords([p.x, p.y], old, new))
                .collect();
            let labels: Vec<i64> = prompt.points.iter().map(|p| p.label).collect();
            let n = labels.len();
            (
                Tensor::<B, 1>::from_floats(coords.as_slice(), &device).reshape([1, n, 2]),
                Tensor::<B, 1, Int>::from_ints(labels.as_slice(), &device).reshape([1, n]),
            )
        });
        let boxes = prompt.bbox.map(|[x0, y0, x1, y1]| {
            let [a, b] = transforms::apply_coords([x0, y0], old, new);
            let [c, d] = transforms::apply_coords([x1, y1], old, new);
            Tensor::<B, 1>::from_floats([a, b, c, d], &device).reshape([1, 4])
        });
        let masks = prompt.mask_input.as_ref().map(|m| {
            Tensor::<B, 1>::from_floats(m.as_slice(), &device).reshape([1, 1, side, side])
        });
        Ok(self.prompt_encoder.forward(points, boxes, masks))
    }

    /// Predicts masks for one prompt on an embedded image (segment_anything's
    /// `SamPredictor.predict` with `return_logits=True`).
    pub fn predict(
        &self,
        embedding: &ImageEmbedding<B>,
        prompt: &Prompt,
        multimask_output: bool,
    ) -> Result<MaskPrediction<B>, PromptError> {
        let (sparse, dense) = self.encode_prompt(embedding, prompt)?;
        let (low_res, iou) = self.mask_decoder.forward(
            embedding.embeddings.clone(),
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
        );
        let masks = self.postprocess_masks(
            low_res.clone(),
            embedding.input_size,
            embedding.original_size,
        );
        Ok(MaskPrediction {
            masks,
            iou_predictions: iou,
            low_res_masks: low_res,
            mask_threshold: self.mask_threshold,
        })
    }

    fn device(&self) -> B::Device {
        self.mask_decoder.iou_token.weight.device()
    }
}

#[cfg(test)]
mod tests;
