//! Small building blocks shared by the model components that burn does not ship with
//! PyTorch-compatible parameter names.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

/// Channel-first layer normalisation over dim 1 of a `[B, C, H, W]` tensor.
///
/// Matches segment_anything's `LayerNorm2d`: `(x - mean_c) / sqrt(var_c + eps) * weight + bias`
/// with the biased variance. Parameters are named `weight`/`bias` like the PyTorch module, so
/// checkpoints load without renaming.
#[derive(Module, Debug)]
pub struct LayerNorm2d<B: Backend> {
    /// Per-channel scale, `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift, `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<B: Backend> LayerNorm2d<B> {
    /// A layer norm over `channels` with weight 1, bias 0.
    pub fn new(channels: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            eps,
        }
    }

    /// Normalises `x: [B, C, H, W]` over `C`.
    ///
    /// On the CPU backend the channel means are products with a row of `1/C`
    /// (`[1, C] · [C, H·W]`, a gemm), so the result keeps `x`'s channel-first layout: burn-flex
    /// 0.21.0 reduces a middle axis element by element, and a channel-last result is a permuted
    /// view that every later operation copies. Elsewhere (and under autodiff) it is computed
    /// channel-last: reductions over the innermost axis are several times faster than strided
    /// ones, which outweighs the two layout copies.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        if B::name(&x.device()) == "flex" {
            let x = x.reshape([b, c, h * w]);
            let avg = Tensor::<B, 3>::full([1, 1, c], 1.0 / c as f64, &x.device())
                .cast(x.dtype())
                .repeat_dim(0, b);
            let centred = x.clone() - avg.clone().matmul(x);
            let var = avg.matmul(centred.clone() * centred.clone());
            let x = centred / (var + self.eps).sqrt();
            let x = x * self.weight.val().reshape([1, c, 1]) + self.bias.val().reshape([1, c, 1]);
            return x.reshape([b, c, h, w]);
        }
        let x = x.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
        let (var, mean) = x.clone().var_mean_bias(1);
        let x = (x - mean) / (var + self.eps).sqrt();
        let x = x * self.weight.val().unsqueeze::<2>() + self.bias.val().unsqueeze::<2>();
        x.reshape([b, h, w, c]).permute([0, 3, 1, 2])
    }
}

/// A stack of linear layers with ReLU between them (none after the last), like
/// segment_anything's `MLP` (`layers.{i}.weight`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The linear layers, applied in order.
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    /// `num_layers` linear layers: `input -> hidden -> ... -> hidden -> output`.
    pub fn new(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        device: &B::Device,
    ) -> Self {
        let layers = (0..num_layers)
            .map(|i| {
                let d_in = if i == 0 { input_dim } else { hidden_dim };
                let d_out = if i + 1 == num_layers {
                    output_dim
                } else {
                    hidden_dim
                };
                LinearConfig::new(d_in, d_out).init(device)
            })
            .collect();
        Self { layers }
    }

    /// Applies the layers with ReLU after every layer but the last.
    pub fn forward<const D: usize>(&self, mut x: Tensor<B, D>) -> Tensor<B, D> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = relu(x);
            }
        }
        x
    }
}

/// `param` in `dtype` (unchanged if already), a new leaf that keeps whether it trains.
pub fn cast_param<B: Backend, const D: usize>(
    param: burn::module::Param<Tensor<B, D>>,
    dtype: burn::tensor::DType,
) -> burn::module::Param<Tensor<B, D>> {
    if param.dtype() == dtype {
        return param;
    }
    param.map(|t| {
        let require = t.is_require_grad();
        t.cast(dtype).detach().set_require_grad(require)
    })
}

/// Casts every float parameter of a module to `dtype` (e.g. `DType::BF16` on a GPU). Each cast
/// parameter is a new leaf with the original's gradient requirement, so a cast model trains.
pub fn cast_module<B: Backend, M: burn::module::Module<B>>(
    module: M,
    dtype: burn::tensor::DType,
) -> M {
    struct CastTo(burn::tensor::DType);
    impl<B: Backend> burn::module::ModuleMapper<B> for CastTo {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            cast_param(param, self.0)
        }
    }
    module.map(&mut CastTo(dtype))
}

/// A float tensor with no elements (a dimension of `shape` is 0), made from host data so
/// that no kernel runs.
///
/// Operations on zero-size tensors must be avoided on GPU backends: cubecl 0.10 launches
/// their kernels with a cube count of zero, which CUDA rejects (`CUDA_ERROR_INVALID_VALUE`)
/// and which leaves the device's stream unusable. The model code therefore skips work on
/// empty sets (no prompts, no `<SEG>`) and represents "nothing" with this tensor, which is
/// only ever looked at through its `dims()`.
pub fn empty<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    debug_assert!(shape.contains(&0), "empty() needs a zero dimension");
    Tensor::from_data(
        burn::tensor::TensorData::new(Vec::<f32>::new(), shape),
        device,
    )
}

/// Interpolation weights `[output, input]` (row-major) of PyTorch's
/// `F.interpolate(mode="bilinear", align_corners=False)` along one axis: output `o` reads
/// source `s = max(0, (o + 0.5) * input / output - 0.5)` from pixels `floor(s)` and the next
/// one (PyTorch `aten/src/ATen/native/UpSample.h`, `area_pixel_compute_source_index`).
pub fn bilinear_weights(input: usize, output: usize) -> Vec<f64> {
    let mut w = vec![0.0; output * input];
    if input == 0 {
        return w;
    }
    // PyTorch computes the scale and the source index in f32.
    let scale = input as f32 / output as f32;
    for o in 0..output {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(input - 1);
        let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
        let l1 = (src - i0 as f32) as f64;
        w[o * input + i0] += 1.0 - l1;
        w[o * input + i1] += l1;
    }
    w
}

/// `a [m, k] x b [k, n]` on the host.
pub fn host_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let v = a[i * k + p];
            if v != 0.0 {
                for j in 0..n {
                    out[i * n + j] += v * b[p * n + j];
                }
            }
        }
    }
    out
}

/// Resizes `x [B, C, H, W]` with separable weights: `rows [Ho, H]` and `cols [Wo, W]`
/// (row-major, from [`bilinear_weights`] or products of them): `rows · x · colsᵀ` per channel.
///
/// Two matmuls instead of burn's `interpolate`: the same values, differentiable on every
/// backend (burn-cubecl 0.21 has no bilinear backward), and a chain of resizes and crops
/// folds into one pair of matrices.
pub fn resize_separable<B: Backend>(
    x: Tensor<B, 4>,
    rows: &[f64],
    cols: &[f64],
    [ho, wo]: [usize; 2],
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    assert_eq!(rows.len(), ho * h, "rows must be [Ho, H]");
    assert_eq!(cols.len(), wo * w, "cols must be [Wo, W]");
    let device = x.device();
    let dtype = x.dtype();
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut cols_t = vec![0.0; w * wo];
    for o in 0..wo {
        for i in 0..w {
            cols_t[i * wo + o] = cols[o * w + i];
        }
    }
    let r = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(f32s(rows), [ho, h]), &device)
        .cast(dtype)
        .unsqueeze::<3>()
        .expand([b * c, ho, h]);
    let ct = Tensor::<B, 2>::from_data(
        burn::tensor::TensorData::new(f32s(&cols_t), [w, wo]),
        &device,
    )
    .cast(dtype)
    .unsqueeze::<3>()
    .expand([b * c, w, wo]);
    r.matmul(x.reshape([b * c, h, w]))
        .matmul(ct)
        .reshape([b, c, ho, wo])
}

#[cfg(test)]
mod tests;

/// `linear.forward(x)` with the leading dimensions of `x` flattened into one row dimension:
/// the same values, but the weight's gradient is one `[in, rows] × [rows, out]` product.
/// burn-backend 0.21.0's default `linear_weight_backward` (`ops/modules/linear.rs`) computes
/// one product per leading index and then sums over the leading dimensions — even a size-1
/// batch costs a full pass over a `[1, in, out]` tensor (for an LM head of 32000 tokens, a
/// 65 MB reduction per step).
pub fn linear_rows<B: Backend, const D: usize>(
    linear: &burn::nn::Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if D <= 2 {
        return linear.forward(x);
    }
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let y = linear.forward(x.reshape([rows, dims[D - 1]]));
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}

/// Scaled dot-product attention, `burn::tensor::module::attention` with the work spread over
/// the CPU's threads.
///
/// burn-flex 0.21.0's fused attention (`ops/attention.rs`, `attention_impl` and
/// `attention_naive_impl`) loops over `(batch, head)` pairs on the calling thread and calls
/// `gemm` with `Parallelism::None`, so a SAM global block's attention (12 heads × 4096²
/// scores) used one core of two while the rest of the encoder used both. On that backend the
/// heads (or, with one head, the batch) are split into one chunk per thread of rayon's pool
/// and each chunk runs the same fused kernel; the values are those of one call. Other
/// backends (GPUs, and autodiff, whose attention is burn's materialised fallback) get the
/// single call, as do calls too small to repay a thread hand-off.
///
/// `mask` and `attn_bias` may broadcast over batch and heads (size 1) as in burn.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, burn::tensor::Bool>>,
    attn_bias: Option<Tensor<B, 4>>,
    options: burn::tensor::ops::AttentionModuleOptions,
) -> Tensor<B, 4> {
    use burn::tensor::module::attention as fused;
    let [b, heads, nq, d] = q.dims();
    let [_, _, nk, dv] = v.dims();
    // Multiply-adds of the two products; below ~8 M a split costs more than it saves.
    let work = b * heads * nq * nk * (d + dv);
    let threads = rayon::current_num_threads();
    // Split the heads if there are enough of them, else the batch.
    let dim = if heads > 1 { 1 } else { 0 };
    let size = [b, heads][dim];
    let chunks = threads.min(size);
    if chunks < 2 || work < (8 << 20) || B::name(&q.device()) != "flex" {
        return fused(q, k, v, mask, attn_bias, options);
    }
    // A chunk of the split axis, or the whole tensor where it broadcasts along that axis.
    fn part<B: Backend, K: burn::tensor::BasicOps<B>>(
        t: &Tensor<B, 4, K>,
        dim: usize,
        size: usize,
        (start, len): (usize, usize),
    ) -> Tensor<B, 4, K> {
        if t.dims()[dim] == size {
            t.clone().narrow(dim, start, len)
        } else {
            t.clone()
        }
    }
    use rayon::prelude::*;
    let outs: Vec<Tensor<B, 4>> = (0..chunks)
        .into_par_iter()
        .map(|i| {
            let range = (
                i * size / chunks,
                (i + 1) * size / chunks - i * size / chunks,
            );
            fused(
                part(&q, dim, size, range),
                part(&k, dim, size, range),
                part(&v, dim, size, range),
                mask.as_ref().map(|m| part(m, dim, size, range)),
                attn_bias.as_ref().map(|t| part(t, dim, size, range)),
                options,
            )
        })
        .collect();
    Tensor::cat(outs, dim)
}

/// `x.swap_dims(a, b)`, laid out contiguously: the head split and merge of attention
/// (`[B, S, H, hd] <-> [B, H, S, hd]`).
///
/// burn-flex 0.21.0 copies a permuted tensor quickly only when its layout collapses to two
/// dimensions (`FlexTensor::copy_contiguous`); any other permute is walked element by element
/// (`StridedIter`), and so is a binary operation on one (`ops/binary.rs`,
/// `binary_op_typed`). A CLIP or LLM head split is such a permute, and every later operation
/// on the view paid for it. On that backend the smaller of the two axes is cut into slices of
/// one, each slice's swap is a two-dimensional copy, and `cat` lays the slices side by side
/// (chunk memcpys); the values are those of the swap. Other backends, autodiff (whose backward
/// of a slice would build one full-size zero tensor per slice) and swaps that do not move
/// memory (an axis of size one, or the last axis involved) get `x.swap_dims(a, b)`.
pub fn swap_dims_contiguous<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    a: usize,
    b: usize,
) -> Tensor<B, D> {
    let dims = x.dims();
    let (lo, hi) = (a.min(b), a.max(b));
    if lo == hi || hi + 1 >= D || dims[lo] == 1 || dims[hi] == 1 || B::name(&x.device()) != "flex" {
        return x.swap_dims(a, b);
    }
    // Slices along `split`, each swapped, then joined along the other axis of the pair:
    // slicing the smaller axis keeps the number of pieces small, and in both cases a piece
    // collapses to a two-dimensional strided copy for the heads layouts above.
    let (split, join) = if dims[hi] <= dims[lo] {
        (hi, lo)
    } else {
        (lo, hi)
    };
    let pieces = (0..dims[split])
        .map(|i| x.clone().narrow(split, i, 1).swap_dims(lo, hi))
        .collect();
    Tensor::cat(pieces, join)
}

/// Elements per piece in [`elementwise`]: 512 KiB of f32, about a core's L2 cache on the EPYC
/// measured here. For the composed GELU, 16–64 Ki elements lost to per-operation overhead and
/// 256 Ki or more to the cache.
const ELEMENTWISE_PIECE: usize = 1 << 17;

/// `f(x)` for an element-wise `f` (an activation such as GELU), with the elements spread over
/// rayon's threads on the CPU backend.
///
/// burn-flex 0.21.0 runs unary operations on the calling thread (`ops/unary.rs`,
/// `unary_op_typed`), and its exact GELU calls the scalar `libm::erff` per element: a
/// SAM ViT-B MLP activation (12.6 M elements) took ~100 ms on one core of two. On that backend
/// the flattened tensor is cut into contiguous pieces of at most [`ELEMENTWISE_PIECE`]
/// elements (at least one per thread), `f` runs on each piece in parallel, and the pieces are joined (one memcpy):
/// a composition of several operations then works on cache-resident pieces. Other backends,
/// autodiff (whose graph is built on the calling thread) and small tensors get `f(x)`
/// directly. `f` must act element by element.
pub fn elementwise<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl Fn(Tensor<B, 1>) -> Tensor<B, 1> + Sync,
) -> Tensor<B, D> {
    let dims = x.dims();
    let n: usize = dims.iter().product();
    let threads = rayon::current_num_threads();
    let flat = x.reshape([n]);
    if threads < 2 || n < (1 << 18) || B::name(&flat.device()) != "flex" {
        return f(flat).reshape(dims);
    }
    use rayon::prelude::*;
    let pieces = n.div_ceil(ELEMENTWISE_PIECE).max(threads);
    let parts: Vec<Tensor<B, 1>> = (0..pieces)
        .into_par_iter()
        .map(|i| {
            let (start, end) = (i * n / pieces, (i + 1) * n / pieces);
            f(flat.clone().narrow(0, start, end - start))
        })
        .collect();
    Tensor::cat(parts, 0).reshape(dims)
}

/// `x · sigmoid(alpha · x)`, computed on the CPU backend as `x / (1 + exp(-alpha · x))` with
/// [`elementwise`]'s threads.
///
/// burn-flex 0.21.0's `sigmoid` and `silu` are scalar per element with a branch and a
/// division (`ops/activation.rs`): on `[1, 32, 256, 256]` f32, sigmoid took 17.4 ms and silu
/// 13.9 ms on one thread, while `exp` took 6.4 ms and the other operations here are
/// vectorised (0.4 ms each): the composed form is about twice as fast. Values agree to
/// rounding (relative 1e-7); for `alpha · x < -88` the denominator overflows to infinity and
/// the result is `-0` instead of a subnormal. Other backends and autodiff get
/// `x · sigmoid(alpha · x)` through burn's own operations.
fn x_sigmoid<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    alpha: f64,
    other: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    if B::name(&x.device()) != "flex" {
        return other(x);
    }
    elementwise(x, move |x| x.clone() / ((x * -alpha).exp() + 1.0))
}

/// SiLU, `x · sigmoid(x)` (LLaMA's MLP), through [`x_sigmoid`] on the CPU backend and
/// `burn::tensor::activation::silu` elsewhere.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x_sigmoid(x, 1.0, burn::tensor::activation::silu)
}

/// CLIP's quick GELU, `x · sigmoid(1.702 x)` (OpenAI CLIP's `QuickGELU`), through
/// [`x_sigmoid`] on the CPU backend.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x_sigmoid(x, 1.702, |x| {
        x.clone() * burn::tensor::activation::sigmoid(x * 1.702)
    })
}

/// The exact (erf) GELU, `x · (1 + erf(x / √2)) / 2` (`torch.nn.GELU()`, SAM's and the
/// aligner's activation).
///
/// On the CPU backend with f32 values it is computed from burn-flex's vectorised operations
/// over [`elementwise`]'s pieces, because burn-flex 0.21.0's `gelu` calls the scalar
/// `libm::erff` per element on one thread (22 ms on `[1, 32, 256, 256]`, PyTorch 1.3 ms).
/// With `a = |x|` and `erfc(a / √2) ≈ p(a)^-16`, where `p` is the degree-6 polynomial of
/// Abramowitz & Stegun, *Handbook of Mathematical Functions* (1964), formula 7.1.28
/// (|error in erf| ≤ 3e-7), its argument scaled by 1/√2:
/// `gelu(x) = (x + a − a · p(a)^-16) / 2`, which keeps both tails exact: far out, `p^16`
/// overflows to infinity and the result is exactly 0 (negative `x`) or `x`. Measured against an f64
/// reference on [−12, 12]: max absolute error 7.1e-7 (PyTorch's f32 GELU: 3.8e-7).
/// Other backends, other dtypes and autodiff use `burn::tensor::activation::gelu`.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if B::name(&x.device()) != "flex" || x.dtype() != burn::tensor::DType::F32 {
        return burn::tensor::activation::gelu(x);
    }
    elementwise(x, gelu_polynomial)
}

/// A&S 7.1.28's coefficients `a1..a6` times `2^(-k/2)` (the argument `a / √2` folded in).
const GELU_ERFC_POLY: [f64; 6] = [
    0.070_523_078_4 * std::f64::consts::FRAC_1_SQRT_2,
    0.042_282_012_3 * 0.5,
    0.009_270_527_2 * std::f64::consts::FRAC_1_SQRT_2 * 0.5,
    0.000_152_014_3 * 0.25,
    0.000_276_567_2 * std::f64::consts::FRAC_1_SQRT_2 * 0.25,
    0.000_043_063_8 * 0.125,
];

/// [`gelu`]'s composed form on a one-dimensional piece.
fn gelu_polynomial<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let a = x.clone().abs();
    // Horner: p = 1 + a (c1 + a (c2 + … + a c6)).
    let mut p = a.clone() * GELU_ERFC_POLY[5];
    for c in GELU_ERFC_POLY[..5].iter().rev() {
        p = (p + *c) * a.clone();
    }
    let p = p + 1.0;
    let p = p.clone() * p;
    let p = p.clone() * p;
    let p = p.clone() * p;
    let p = p.clone() * p;
    let tail = a.clone() * p.recip();
    (x + a - tail) * 0.5
}
