//! SAM's prompt encoder (`segment_anything/modeling/prompt_encoder.py`): random-Fourier
//! positional encoding of points and box corners, learned per-label embeddings, and the
//! convolutional mask-prompt down-scaler.

use std::f64::consts::PI;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};

use super::config::SamConfig;
use crate::nn::{LayerNorm2d, gelu};

/// Label of a padding point (no prompt at this slot).
pub const LABEL_PAD: i64 = -1;
/// Label of a background (negative) click.
pub const LABEL_NEGATIVE: i64 = 0;
/// Label of a foreground (positive) click.
pub const LABEL_POSITIVE: i64 = 1;
/// Label of a box's top-left corner.
pub const LABEL_BOX_TOP_LEFT: i64 = 2;
/// Label of a box's bottom-right corner.
pub const LABEL_BOX_BOTTOM_RIGHT: i64 = 3;

/// `cat[sin(x), cos(x)]` along `dim`. burn-flex's sin and cos are scalar libm calls on one
/// thread (the dense grid of a 1024 px SAM, 4096 × 128 of each, took 14 ms), so they go
/// through [`crate::nn::elementwise`]'s threads.
fn sin_cos<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let sin = crate::nn::elementwise(x.clone(), |t| t.sin());
    let cos = crate::nn::elementwise(x, |t| t.cos());
    Tensor::cat(vec![sin, cos], dim)
}

/// Positional encoding with random spatial frequencies (`pe_layer`).
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom<B: Backend> {
    /// `[2, embed_dim / 2]` Gaussian frequencies; a buffer stored in the checkpoint.
    pub positional_encoding_gaussian_matrix: Param<Tensor<B, 2>>,
}

impl<B: Backend> PositionEmbeddingRandom<B> {
    /// `coords: [.., 2]` normalised to `[0, 1]` -> `[.., embed_dim]` =
    /// `cat[sin(2π (2c-1) G), cos(2π (2c-1) G)]`.
    pub fn pe_encoding<const D: usize>(&self, coords: Tensor<B, D>) -> Tensor<B, D> {
        let g = self.positional_encoding_gaussian_matrix.val();
        let coords = coords * 2.0 - 1.0;
        let mut g_shape = [1usize; D];
        let [two, half] = g.dims();
        g_shape[D - 2] = two;
        g_shape[D - 1] = half;
        sin_cos(coords.matmul(g.reshape(g_shape)) * (2.0 * PI), D - 1)
    }

    /// Dense encoding of an `[h, w]` grid of pixel centres: `[1, embed_dim, h, w]`.
    ///
    /// The values of [`Self::pe_encoding`] on the grid (segment_anything's
    /// `PositionEmbeddingRandom.forward`), computed channel-first: `Gᵀ · coords` with the
    /// coordinates as `[2, h·w]` rows, so the result needs no permute (a permuted view costs
    /// a copy in every later operation on the CPU backend).
    pub fn dense(&self, [h, w]: [usize; 2]) -> Tensor<B, 4> {
        let g = self.positional_encoding_gaussian_matrix.val();
        let device = g.device();
        let [_, half] = g.dims();
        let mut grid = Vec::with_capacity(2 * h * w);
        grid.extend((0..h * w).map(|k| ((k % w) as f32 + 0.5) / w as f32));
        grid.extend((0..h * w).map(|k| ((k / w) as f32 + 0.5) / h as f32));
        let coords = Tensor::<B, 1>::from_floats(grid.as_slice(), &device)
            .reshape([2, h * w])
            .cast(g.dtype());
        let proj = g.transpose().matmul(coords * 2.0 - 1.0) * (2.0 * PI);
        sin_cos(proj, 0).reshape([1, 2 * half, h, w])
    }

    /// Encodes pixel coordinates `[B, N, 2]` (x, y) given the input image size `[h, w]`.
    pub fn forward_with_coords(&self, coords: Tensor<B, 3>, [h, w]: [usize; 2]) -> Tensor<B, 3> {
        let device = coords.device();
        let scale = Tensor::<B, 1>::from_floats([1.0 / w as f32, 1.0 / h as f32], &device);
        self.pe_encoding(coords * scale.reshape([1, 1, 2]))
    }
}

/// The mask-prompt down-scaler (`mask_downscaling.{0,1,3,4,6}` in PyTorch).
#[derive(Module, Debug)]
pub struct MaskDownscaling<B: Backend> {
    /// `.0`: Conv2d(1, mask_in_chans/4, k2, s2).
    pub conv1: Conv2d<B>,
    /// `.1`.
    pub ln1: LayerNorm2d<B>,
    /// `.3`: Conv2d(mask_in_chans/4, mask_in_chans, k2, s2).
    pub conv2: Conv2d<B>,
    /// `.4`.
    pub ln2: LayerNorm2d<B>,
    /// `.6`: Conv2d(mask_in_chans, embed_dim, k1).
    pub conv3: Conv2d<B>,
}

impl<B: Backend> MaskDownscaling<B> {
    /// `[B, 1, 4h, 4w]` mask logits to `[B, embed_dim, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = gelu(self.ln1.forward(self.conv1.forward(x)));
        let x = gelu(self.ln2.forward(self.conv2.forward(x)));
        self.conv3.forward(x)
    }
}

/// Sparse (points, box corners) and dense (mask) prompt embeddings.
#[derive(Module, Debug)]
pub struct PromptEncoder<B: Backend> {
    /// Positional encoding.
    pub pe_layer: PositionEmbeddingRandom<B>,
    /// Label embeddings: 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.
    pub point_embeddings: Vec<Embedding<B>>,
    /// Embedding of a padding point (label -1).
    pub not_a_point_embed: Embedding<B>,
    /// Mask prompt network.
    pub mask_downscaling: MaskDownscaling<B>,
    /// Dense embedding used when no mask is given.
    pub no_mask_embed: Embedding<B>,
    /// Token width.
    pub embed_dim: usize,
    /// Side of the image-embedding grid.
    pub image_embedding_size: [usize; 2],
    /// Side of the (padded) model input.
    pub input_image_size: [usize; 2],
}

/// Builds the prompt encoder of `cfg`.
pub(crate) fn init_prompt_encoder<B: Backend>(
    cfg: &SamConfig,
    device: &B::Device,
) -> PromptEncoder<B> {
    let c = cfg.prompt_encoder.embed_dim;
    let m = cfg.prompt_encoder.mask_in_chans;
    let grid = cfg.embedding_size();
    let img = cfg.image_encoder.img_size;
    let emb = || EmbeddingConfig::new(1, c).init(device);
    PromptEncoder {
        pe_layer: PositionEmbeddingRandom {
            positional_encoding_gaussian_matrix: Param::from_tensor(Tensor::random(
                [2, c / 2],
                Distribution::Normal(0.0, 1.0),
                device,
            )),
        },
        point_embeddings: (0..4).map(|_| emb()).collect(),
        not_a_point_embed: emb(),
        mask_downscaling: MaskDownscaling {
            conv1: Conv2dConfig::new([1, m / 4], [2, 2])
                .with_stride([2, 2])
                .init(device),
            ln1: LayerNorm2d::new(m / 4, 1e-6, device),
            conv2: Conv2dConfig::new([m / 4, m], [2, 2])
                .with_stride([2, 2])
                .init(device),
            ln2: LayerNorm2d::new(m, 1e-6, device),
            conv3: Conv2dConfig::new([m, c], [1, 1]).init(device),
        },
        no_mask_embed: emb(),
        embed_dim: c,
        image_embedding_size: [grid, grid],
        input_image_size: [img, img],
    }
}

impl<B: Backend> PromptEncoder<B> {
    /// Positional encoding of the whole embedding grid, `[1, C, h, w]`.
    pub fn get_dense_pe(&self) -> Tensor<B, 4> {
        self.pe_layer.dense(self.image_embedding_size)
    }

    /// Embeds points `[B, N, 2]` (input-frame pixels) with labels `[B, N]`. When `pad` is
    /// true a padding point (label -1) is appended, as SAM does when no box is given.
    ///
    /// Labels -1, 0 and 1 behave as in segment_anything; labels 2 and 3 add the box-corner
    /// embeddings (the convention `embed_boxes` uses internally).
    pub fn embed_points(
        &self,
        points: Tensor<B, 3>,
        labels: Tensor<B, 2, Int>,
        pad: bool,
    ) -> Tensor<B, 3> {
        let device = points.device();
        let [b, _, _] = points.dims();
        let mut points = points + 0.5;
        let mut labels = labels;
        if pad {
            points = Tensor::cat(vec![points, Tensor::zeros([b, 1, 2], &device)], 1);
            labels = Tensor::cat(vec![labels, Tensor::full([b, 1], LABEL_PAD, &device)], 1);
        }
        let pe = self
            .pe_layer
            .forward_with_coords(points, self.input_image_size);
        let is = |l: i64| labels.clone().equal_elem(l).float().unsqueeze_dim::<3>(2);
        let row = |e: &Embedding<B>| e.weight.val().unsqueeze::<3>();
        let not_pad = is(LABEL_PAD).neg() + 1.0;
        let mut out = pe * not_pad + is(LABEL_PAD) * row(&self.not_a_point_embed);
        for (label, emb) in self.point_embeddings.iter().enumerate() {
            out = out + is(label as i64) * row(emb);
        }
        out
    }

    /// Embeds boxes `[B, 4]` (x0, y0, x1, y1 in input-frame pixels) as two corner tokens
    /// each, `[B, 2, C]`.
    pub fn embed_boxes(&self, boxes: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, _] = boxes.dims();
        let coords = (boxes + 0.5).reshape([b, 2, 2]);
        let pe = self
            .pe_layer
            .forward_with_coords(coords, self.input_image_size);
        let tl = self.point_embeddings[2].weight.val().unsqueeze::<3>();
        let br = self.point_embeddings[3].weight.val().unsqueeze::<3>();
        let corner = Tensor::cat(vec![tl, br], 1); // [1, 2, C]
        pe + corner
    }

    /// Dense embedding of mask logits `[B, 1, 4h, 4w]`.
    pub fn embed_masks(&self, masks: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mask_downscaling.forward(masks)
    }

    /// segment_anything's `PromptEncoder.forward`: returns the sparse embeddings
    /// `[B, N, C]` (points, then two tokens per box) and the dense embeddings `[B, C, h, w]`.
    pub fn forward(
        &self,
        points: Option<(Tensor<B, 3>, Tensor<B, 2, Int>)>,
        boxes: Option<Tensor<B, 2>>,
        masks: Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let device = self.no_mask_embed.weight.device();
        let bs = if let Some((p, _)) = &points {
            p.dims()[0]
        } else if let Some(b) = &boxes {
            b.dims()[0]
        } else if let Some(m) = &masks {
            m.dims()[0]
        } else {
            1
        };
        let mut sparse = Vec::new();
        if let Some((coords, labels)) = points {
            sparse.push(self.embed_points(coords, labels, boxes.is_none()));
        }
        if let Some(b) = boxes {
            sparse.push(self.embed_boxes(b));
        }
        let sparse = if sparse.is_empty() {
            Tensor::zeros([bs, 0, self.embed_dim], &device)
        } else {
            Tensor::cat(sparse, 1)
        };
        let dense = match masks {
            Some(m) => self.embed_masks(m),
            None => {
                let [h, w] = self.image_embedding_size;
                self.no_mask_embed
                    .weight
                    .val()
                    .reshape([1, self.embed_dim, 1, 1])
                    .expand([bs, self.embed_dim, h, w])
            }
        };
        (sparse, dense)
    }
}
