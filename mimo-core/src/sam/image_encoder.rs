//! SAM's ViT image encoder (`segment_anything/modeling/image_encoder.py`): patch embedding,
//! absolute positions, windowed and global attention blocks with decomposed relative
//! positions, and the convolutional neck.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor};

use super::config::ImageEncoderViTConfig;
use crate::nn::{LayerNorm2d, attention, gelu, swap_dims_contiguous};

/// Non-overlapping patch embedding (`patch_embed.proj`, a strided convolution).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// Conv2d with kernel = stride = patch size.
    pub proj: Conv2d<B>,
}

/// The 2-layer GELU MLP of a transformer block (`mlp.lin1`, `mlp.lin2`).
#[derive(Module, Debug)]
pub struct MlpBlock<B: Backend> {
    /// `embed_dim -> hidden`.
    pub lin1: Linear<B>,
    /// `hidden -> embed_dim`.
    pub lin2: Linear<B>,
}

impl<B: Backend> MlpBlock<B> {
    /// `lin2(gelu(lin1(x)))` with the exact (erf) GELU, on the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let shape = x.dims();
        let y = self.lin2.forward(gelu(self.lin1.forward(tokens(x))));
        y.reshape(shape)
    }
}

/// Flattens the leading dimensions into one token axis, `[.., C] -> [N, C]`, so a linear
/// layer is one matrix product rather than a batch of small ones.
fn tokens<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 2> {
    let c = x.dims()[D - 1];
    x.reshape([-1, c as i64])
}

/// Multi-head self-attention over a `[B, H, W, C]` grid with optional decomposed relative
/// position terms (`attn.qkv`, `attn.proj`, `attn.rel_pos_h`, `attn.rel_pos_w`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Fused query/key/value projection, `C -> 3C`.
    pub qkv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
    /// Relative position table along the height, `[2*h-1, head_dim]`.
    pub rel_pos_h: Option<Param<Tensor<B, 2>>>,
    /// Relative position table along the width, `[2*w-1, head_dim]`.
    pub rel_pos_w: Option<Param<Tensor<B, 2>>>,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Self-attention on `x: [B, H, W, C]`.
    ///
    /// The decomposed relative positions are folded into the attention product instead of
    /// being added to a materialised `[HW, HW]` logit matrix: the queries are extended with
    /// `rel_h[y, x, :]` and `rel_w[y, x, :]` and the keys with one-hot codes of their row and
    /// column, so `q'·k' = scale·q·k + rel_h[ky] + rel_w[kx]` exactly. The backend's fused
    /// attention can then tile the softmax (a ViT-H global block would otherwise hold
    /// 16 x 4096 x 4096 logits several times over).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, w, c] = x.dims();
        let heads = self.num_heads;
        let hd = c / heads;
        let n = h * w;
        // The qkv projection as one product batched over the 3 x heads column blocks of its
        // weight, `[1, B*HW, C] x [3*heads, C, hd] -> [3*heads, B*HW, hd]`: every head comes
        // out contiguous, where `Linear` + reshape + permute would copy the whole
        // `[B, HW, 3, heads, hd]` activation into head order (on the CPU backend an
        // element-by-element strided copy, a third of a windowed ViT-B block's attention).
        // The bias rides along as one more input column of ones (adding it to the
        // `[3*heads, B*HW, hd]` product would broadcast over its middle axis, a slow path on
        // the CPU backend). Same products, same values up to summation order; PyTorch's
        // column order `(3, heads, hd)` is kept.
        let x = tokens(x);
        let weight = self.qkv.weight.val(); // [C, 3*heads*hd]
        // With a bias: one more input row of the weight (a row append, one memcpy) and one
        // more input column of ones; the head blocks are then a strided view the batched
        // product reads in place.
        let (x, weight) = match &self.qkv.bias {
            Some(bias) => {
                let ones = Tensor::<B, 2>::ones([b * n, 1], &x.device()).cast(x.dtype());
                (
                    Tensor::cat(vec![x, ones], 1),
                    Tensor::cat(vec![weight, bias.val().unsqueeze::<2>()], 0),
                )
            }
            None => (x, weight),
        };
        let rows = weight.dims()[0];
        let weight = weight.reshape([rows, 3 * heads, hd]).swap_dims(0, 1);
        let qkv = x.unsqueeze::<3>().matmul(weight);
        // [3, heads * B, HW, hd]: the attention below runs over (head, image) pairs with the
        // heads as its batch; each pair is independent, so the order does not matter.
        let qkv = qkv.reshape([3, heads * b, n, hd]);
        let q = qkv.clone().narrow(0, 0, 1).reshape([heads * b, n, hd]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([heads * b, n, hd]);
        let v = qkv.narrow(0, 2, 1).reshape([heads, b, n, hd]);

        let scale = (hd as f64).powf(-0.5);
        let (q, k) = match (&self.rel_pos_h, &self.rel_pos_w) {
            (Some(rh), Some(rw)) => {
                let (rel_h, rel_w) = decomposed_rel_pos(q.clone(), rh.val(), rw.val(), [h, w]);
                let q = Tensor::cat(
                    vec![
                        q * scale,
                        rel_h.reshape([heads * b, n, h]),
                        rel_w.reshape([heads * b, n, w]),
                    ],
                    2,
                );
                let codes = key_position_codes::<B>([h, w], &k.device())
                    .cast(k.dtype())
                    .unsqueeze::<3>()
                    .expand([heads * b, n, h + w]);
                (q, Tensor::cat(vec![k, codes], 2))
            }
            _ => (q * scale, k),
        };
        let d = q.dims()[2];
        let out = attention(
            q.reshape([heads, b, n, d]),
            k.reshape([heads, b, n, d]),
            v,
            None,
            None,
            AttentionModuleOptions {
                scale: Some(1.0),
                ..Default::default()
            },
        );
        // [heads, B*HW, hd] -> [B*HW, heads * hd]
        let out = swap_dims_contiguous(out.reshape([heads, b * n, hd]), 0, 1).reshape([b * n, c]);
        self.proj.forward(out).reshape([b, h, w, c])
    }
}

/// Gathers the relative-position rows for every (query, key) pair along one axis:
/// `rel_pos[(qi - kj) + (size - 1)]` as `[size, size, hd]` (query and key sizes are equal
/// inside SAM, so no interpolation or rescaling of coordinates is needed).
fn get_rel_pos<B: Backend>(size: usize, rel_pos: Tensor<B, 2>) -> Tensor<B, 3> {
    let [_, hd] = rel_pos.dims();
    let device = rel_pos.device();
    let idx: Vec<i64> = (0..size)
        .flat_map(|q| (0..size).map(move |k| q as i64 - k as i64 + size as i64 - 1))
        .collect();
    let idx = Tensor::<B, 1, Int>::from_ints(idx.as_slice(), &device);
    rel_pos.select(0, idx).reshape([size, size, hd])
}

/// SAM's `add_decomposed_rel_pos` terms from the unscaled queries `q: [BH, HW, hd]`:
/// `rel_h[b, y, x, ky] = Σ_c q[b, y, x, c] · Rh[y, ky, c]` and likewise `rel_w` over x.
fn decomposed_rel_pos<B: Backend>(
    q: Tensor<B, 3>,
    rel_pos_h: Tensor<B, 2>,
    rel_pos_w: Tensor<B, 2>,
    [h, w]: [usize; 2],
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [bh, _, hd] = q.dims();
    let rh = get_rel_pos(h, rel_pos_h); // [y, ky, hd]
    let rw = get_rel_pos(w, rel_pos_w); // [x, kx, hd]
    let r_q = q.reshape([bh, h, w, hd]);
    // Products batched over (b, y) and (b, x) with the tables broadcast over b, read in place
    // from `r_q` and its transposed view (no permuted copy of the queries).
    // rel_h: [bh, y, x, hd] x [1, y, hd, ky] -> [bh, y, x, ky]
    let rel_h = r_q.clone().matmul(rh.swap_dims(1, 2).unsqueeze::<4>());
    // rel_w: [bh, x, y, hd] x [1, x, hd, kx] -> [bh, x, y, kx] -> [bh, y, x, kx]
    let rel_w = r_q
        .swap_dims(1, 2)
        .matmul(rw.swap_dims(1, 2).unsqueeze::<4>())
        .swap_dims(1, 2);
    (rel_h, rel_w)
}

/// `[HW, H + W]` one-hot codes of each key's row `ky` (first `H` columns) and column `kx`
/// (last `W` columns).
fn key_position_codes<B: Backend>([h, w]: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    let mut codes = vec![0f32; h * w * (h + w)];
    for ky in 0..h {
        for kx in 0..w {
            let row = (ky * w + kx) * (h + w);
            codes[row + ky] = 1.0;
            codes[row + h + kx] = 1.0;
        }
    }
    Tensor::<B, 1>::from_floats(codes.as_slice(), device).reshape([h * w, h + w])
}

/// One transformer block; windowed when `window_size > 0`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Pre-attention LayerNorm.
    pub norm1: LayerNorm<B>,
    /// Attention.
    pub attn: Attention<B>,
    /// Pre-MLP LayerNorm.
    pub norm2: LayerNorm<B>,
    /// MLP.
    pub mlp: MlpBlock<B>,
    /// Window side, 0 for global attention.
    pub window_size: usize,
}

impl<B: Backend> Block<B> {
    /// `x: [B, H, W, C]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let x = if self.window_size > 0 {
            let [_, h, w, _] = x.dims();
            let (windows, padded) = window_partition(x, self.window_size);
            let out = self.attn.forward(windows);
            window_unpartition(out, self.window_size, padded, [h, w])
        } else {
            self.attn.forward(x)
        };
        let x = shortcut + x;
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Zero-pads `[B, H, W, C]` at the bottom/right to a multiple of `ws` (padding is not
/// masked in attention, as in SAM) and cuts it into `[B * nH * nW, ws, ws, C]` windows.
/// Returns the windows and the padded size.
pub fn window_partition<B: Backend>(x: Tensor<B, 4>, ws: usize) -> (Tensor<B, 4>, [usize; 2]) {
    let [b, h, w, c] = x.dims();
    let pad_h = (ws - h % ws) % ws;
    let pad_w = (ws - w % ws) % ws;
    let x = if pad_h > 0 || pad_w > 0 {
        let (hp, wp) = (h + pad_h, w + pad_w);
        Tensor::<B, 4>::zeros([b, hp, wp, c], &x.device())
            .cast(x.dtype())
            .slice_assign([0..b, 0..h, 0..w, 0..c], x)
    } else {
        x
    };
    let (hp, wp) = (h + pad_h, w + pad_w);
    let windows = x
        .reshape([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b * (hp / ws) * (wp / ws), ws, ws, c]);
    (windows, [hp, wp])
}

/// Inverse of [`window_partition`]: reassembles the windows and crops the padding.
pub fn window_unpartition<B: Backend>(
    windows: Tensor<B, 4>,
    ws: usize,
    [hp, wp]: [usize; 2],
    [h, w]: [usize; 2],
) -> Tensor<B, 4> {
    let [n, _, _, c] = windows.dims();
    let b = n / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, c]);
    if hp > h || wp > w {
        x.slice([0..b, 0..h, 0..w, 0..c])
    } else {
        x
    }
}

/// The convolutional neck (`neck.0..3` in PyTorch): 1x1 conv, LayerNorm2d, 3x3 conv,
/// LayerNorm2d, all without bias on the convolutions.
#[derive(Module, Debug)]
pub struct Neck<B: Backend> {
    /// `neck.0`: 1x1 conv to `out_chans`.
    pub conv1: Conv2d<B>,
    /// `neck.1`.
    pub ln1: LayerNorm2d<B>,
    /// `neck.2`: 3x3 conv, padding 1.
    pub conv2: Conv2d<B>,
    /// `neck.3`.
    pub ln2: LayerNorm2d<B>,
}

/// SAM's image encoder.
#[derive(Module, Debug)]
pub struct ImageEncoderViT<B: Backend> {
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Absolute position embedding, `[1, H/p, W/p, C]`.
    pub pos_embed: Option<Param<Tensor<B, 4>>>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Neck to `out_chans` channels.
    pub neck: Neck<B>,
    /// Expected input side.
    pub img_size: usize,
}

impl ImageEncoderViTConfig {
    /// Builds the encoder with lazily-initialised parameters (nothing is allocated until a
    /// parameter is used or a checkpoint fills it).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ImageEncoderViT<B> {
        let grid = self.img_size / self.patch_size;
        let c = self.embed_dim;
        let head_dim = c / self.num_heads;
        let ln = || {
            LayerNormConfig::new(c)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let blocks = (0..self.depth)
            .map(|i| {
                let global = self.global_attn_indexes.contains(&i);
                let window_size = if global { 0 } else { self.window_size };
                let side = if window_size == 0 { grid } else { window_size };
                let rel = || {
                    self.use_rel_pos.then(|| {
                        Param::from_tensor(Tensor::zeros([2 * side - 1, head_dim], device))
                    })
                };
                let hidden = (c as f64 * self.mlp_ratio) as usize;
                Block {
                    norm1: ln(),
                    attn: Attention {
                        qkv: LinearConfig::new(c, 3 * c)
                            .with_bias(self.qkv_bias)
                            .init(device),
                        proj: LinearConfig::new(c, c).init(device),
                        rel_pos_h: rel(),
                        rel_pos_w: rel(),
                        num_heads: self.num_heads,
                    },
                    norm2: ln(),
                    mlp: MlpBlock {
                        lin1: LinearConfig::new(c, hidden).init(device),
                        lin2: LinearConfig::new(hidden, c).init(device),
                    },
                    window_size,
                }
            })
            .collect();
        ImageEncoderViT {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([self.in_chans, c], [self.patch_size, self.patch_size])
                    .with_stride([self.patch_size, self.patch_size])
                    .init(device),
            },
            pos_embed: self
                .use_abs_pos
                .then(|| Param::from_tensor(Tensor::zeros([1, grid, grid, c], device))),
            blocks,
            neck: Neck {
                conv1: Conv2dConfig::new([c, self.out_chans], [1, 1])
                    .with_bias(false)
                    .init(device),
                ln1: LayerNorm2d::new(self.out_chans, self.layer_norm_eps, device),
                conv2: Conv2dConfig::new([self.out_chans, self.out_chans], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(device),
                ln2: LayerNorm2d::new(self.out_chans, self.layer_norm_eps, device),
            },
            img_size: self.img_size,
        }
    }
}

impl<B: Backend> ImageEncoderViT<B> {
    /// `x: [B, 3, img_size, img_size]` (normalised, padded) to `[B, out_chans, H/p, W/p]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_with_progress(x, |_, _| {})
    }

    /// [`ImageEncoderViT::forward`], calling `progress(blocks_done, blocks_total)` after each
    /// transformer block (a ViT-H image takes about a minute on a CPU). On asynchronous
    /// backends a call marks when the block was queued, not when it finished.
    pub fn forward_with_progress(
        &self,
        x: Tensor<B, 4>,
        mut progress: impl FnMut(usize, usize),
    ) -> Tensor<B, 4> {
        let mut x = self.patch_embed.proj.forward(x).permute([0, 2, 3, 1]);
        if let Some(pos) = &self.pos_embed {
            x = x + pos.val();
        }
        let total = self.blocks.len();
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(x);
            progress(i + 1, total);
        }
        let x = x.permute([0, 3, 1, 2]);
        let x = self.neck.ln1.forward(self.neck.conv1.forward(x));
        self.neck.ln2.forward(self.neck.conv2.forward(x))
    }
}
