use burn::backend::Autodiff;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Distribution, Tensor};

use super::*;
use crate::test_util::TestBackend;

type AD = Autodiff<TestBackend>;

fn max_diff<const D: usize>(a: Tensor<AD, D>, b: Tensor<AD, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// One folded resize (up to 64, crop, down to 37x29) equals burn's two bilinear
/// interpolations with the crop between them, forward and backward (the CPU backend has
/// interpolate's backward; the GPU backends do not, which is why SAM uses this).
#[test]
fn folded_bilinear_resize_matches_interpolate_forward_and_backward() {
    let device = Default::default();
    let x = Tensor::<AD, 4>::random([2, 3, 16, 12], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    let (s, crop, out) = (64usize, [48usize, 40usize], [37usize, 29usize]);
    let opts = || InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
    let reference = interpolate(
        interpolate(x.clone(), [s, s], opts()).slice([0..2, 0..3, 0..crop[0], 0..crop[1]]),
        out,
        opts(),
    );
    let axis = |low: usize, crop: usize, out: usize| {
        let up = bilinear_weights(low, s)[..crop * low].to_vec();
        host_matmul(&bilinear_weights(crop, out), &up, out, crop, low)
    };
    let got = resize_separable(
        x.clone(),
        &axis(16, crop[0], out[0]),
        &axis(12, crop[1], out[1]),
        out,
    );
    let fwd = max_diff(got.clone(), reference.clone());
    // f32 weights folded on the host in f64: differences of a few ulps of values ~3.
    assert!(fwd < 1e-5, "forward differs by {fwd}");
    let w = Tensor::<AD, 4>::random([2, 3, 37, 29], Distribution::Normal(0.0, 1.0), &device);
    let g_ref = (reference * w.clone()).sum().backward();
    let g_ref = x.grad(&g_ref).unwrap();
    let g = (got * w).sum().backward();
    let g = x.grad(&g).unwrap();
    let bwd = (g - g_ref).abs().max().into_scalar();
    assert!(bwd < 1e-5, "gradient differs by {bwd}");
}

/// Each row of the weights sums to one and reads at most two neighbouring pixels.
#[test]
fn bilinear_weights_are_a_partition_of_unity() {
    for (i, o) in [(4, 16), (16, 4), (7, 7), (1, 5), (5, 1)] {
        let w = bilinear_weights(i, o);
        for r in 0..o {
            let row = &w[r * i..(r + 1) * i];
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(row.iter().filter(|&&v| v != 0.0).count() <= 2);
        }
    }
}

/// The attention spread over threads (heads split, or the batch when there is one head)
/// gives exactly the values of burn's single fused call, with a mask and an additive bias that
/// broadcast over some of the leading dimensions.
#[test]
fn threaded_attention_equals_one_fused_call() {
    use burn::tensor::module::attention as fused;
    use burn::tensor::ops::AttentionModuleOptions;
    let device = Default::default();
    let rand = |s: [usize; 4]| {
        Tensor::<TestBackend, 4>::random(s, Distribution::Normal(0.0, 1.0), &device)
    };
    for (b, heads, n, d) in [(1, 4, 300, 32), (2, 1, 400, 24), (3, 3, 260, 40)] {
        let (q, k, v) = (
            rand([b, heads, n, d]),
            rand([b, heads, n, d]),
            rand([b, heads, n, d]),
        );
        // Causal-style mask shared by the heads; a bias per head shared by the batch.
        let mask = Tensor::<TestBackend, 1, burn::tensor::Int>::arange(0..n as i64, &device)
            .reshape([1, n])
            .greater(
                Tensor::<TestBackend, 1, burn::tensor::Int>::arange(0..n as i64, &device)
                    .reshape([n, 1]),
            )
            .reshape([1, 1, n, n])
            .expand([b, 1, n, n]);
        let bias = rand([1, heads, n, n]);
        assert!(
            b * heads * n * n * 2 * d >= 8 << 20,
            "the test must take the split path"
        );
        for options in [
            AttentionModuleOptions::default(),
            AttentionModuleOptions {
                scale: Some(0.3),
                ..Default::default()
            },
        ] {
            type T4 = Tensor<TestBackend, 4>;
            type Attn = fn(
                T4,
                T4,
                T4,
                Option<Tensor<TestBackend, 4, burn::tensor::Bool>>,
                Option<T4>,
                AttentionModuleOptions,
            ) -> T4;
            let run = |f: Attn| {
                let (mask, bias) = (Some(mask.clone()), Some(bias.clone()));
                f(q.clone(), k.clone(), v.clone(), mask, bias, options)
            };
            let (one, split) = (run(fused), run(attention));
            assert_eq!(split.dims(), [b, heads, n, d]);
            let diff: f32 = (one - split).abs().max().into_scalar();
            assert_eq!(diff, 0.0, "b={b} heads={heads} n={n} d={d}");
        }
        let plain = fused(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            Default::default(),
        );
        let split = attention(q, k, v, None, None, Default::default());
        assert_eq!((plain - split).abs().max().into_scalar(), 0.0);
    }
}

/// GELU and quick GELU spread over threads equal burn's single call bit for bit, on a tensor
/// large enough to be split (and a small one, which is not).
#[test]
fn threaded_elementwise_equals_one_call() {
    use burn::tensor::activation::sigmoid;
    let device = Default::default();
    for shape in [[3, 7, 129, 131], [1, 2, 3, 5]] {
        let x = Tensor::<TestBackend, 4>::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let one = burn::tensor::activation::gelu(x.clone());
        let split = elementwise(x.clone(), burn::tensor::activation::gelu);
        assert_eq!((one - split).abs().max().into_scalar(), 0.0);
        let quick = |x: Tensor<TestBackend, 1>| x.clone() * sigmoid(x * 1.702);
        let one = x.clone() * sigmoid(x.clone() * 1.702);
        let split = elementwise(x, quick);
        assert_eq!(split.dims(), shape);
        assert_eq!((one - split).abs().max().into_scalar(), 0.0);
    }
}

/// The contiguous swap equals `swap_dims` for the attention head layouts in both directions,
/// a batch, both choices of the sliced axis, and the swaps it leaves to burn.
#[test]
fn contiguous_swap_equals_swap_dims() {
    let device = Default::default();
    let check = |shape: [usize; 4], a: usize, b: usize| {
        let x = Tensor::<TestBackend, 4>::random(shape, Distribution::Default, &device);
        let want = x.clone().swap_dims(a, b);
        let got = swap_dims_contiguous(x, a, b);
        assert_eq!(got.dims(), want.dims(), "{shape:?} swap {a} {b}");
        let diff = (got - want).abs().max().into_scalar();
        assert_eq!(diff, 0.0, "{shape:?} swap {a} {b}");
    };
    for shape in [[1, 13, 4, 8], [3, 13, 4, 8], [2, 4, 13, 8], [2, 5, 3, 6]] {
        for (a, b) in [(1, 2), (2, 1), (0, 1), (0, 2), (1, 3), (0, 0)] {
            check(shape, a, b);
        }
    }
    check([1, 1, 4, 8], 1, 2);
    check([2, 7, 1, 8], 1, 2);
}

/// SiLU and quick GELU in the composed `x / (1 + exp(-a x))` form agree with burn's
/// `silu` and `x * sigmoid(1.702 x)` to rounding, split over threads and not, including
/// inputs far out in both tails.
#[test]
fn composed_silu_and_quick_gelu_match_burn() {
    use burn::tensor::activation::sigmoid;
    let device = Default::default();
    for shape in [[2, 3, 211, 257], [1, 1, 3, 5]] {
        let x = Tensor::<TestBackend, 4>::random(shape, Distribution::Normal(0.0, 30.0), &device);
        let cases = [
            (silu(x.clone()), burn::tensor::activation::silu(x.clone())),
            (
                quick_gelu(x.clone()),
                x.clone() * sigmoid(x.clone() * 1.702),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.dims(), shape);
            let err = ((got - want.clone()).abs() / (want.abs() + 1e-30))
                .max()
                .into_scalar();
            assert!(err <= 1e-6, "{shape:?}: relative error {err}");
        }
    }
}

/// The composed GELU (A&S 7.1.28 for erfc) agrees with burn's exact GELU (`libm::erff`) within
/// 2e-6 · max(1, |x|), split over threads and not, including both tails and exact zeros far out.
#[test]
fn polynomial_gelu_matches_exact_gelu() {
    let device = Default::default();
    let tails = [
        -1e30, -1e4, -40.0, -19.0, -9.0, -4.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3, 4.0, 9.0, 40.0,
        1e4, 1e30,
    ];
    let tails = Tensor::<TestBackend, 1>::from_floats(tails, &device);
    for n in [3 * 211 * 257, 17] {
        let x = Tensor::<TestBackend, 1>::random([n], Distribution::Normal(0.0, 4.0), &device);
        let x = Tensor::cat(vec![x, tails.clone()], 0);
        let got = gelu(x.clone());
        let want = burn::tensor::activation::gelu(x.clone());
        let scale = x.clone().abs().clamp_min(1.0);
        let err = ((got.clone() - want) / scale).abs().max().into_scalar();
        assert!(err <= 2e-6, "n {n}: error {err}");
        let got = got.into_data().to_vec::<f32>().unwrap();
        assert_eq!(got[n..n + 2], [0.0, 0.0], "n {n}: far negative tail");
        assert_eq!(got[n + 14..], [1e4, 1e30], "n {n}: far positive tail");
    }
}

/// LayerNorm2d's channel-first form on the CPU backend (channel means as products) equals the
/// channel-last form it replaces there (the one autodiff and other backends use), with random
/// weight and bias, a batch of 2 and an offset mean.
#[test]
fn layer_norm2d_channel_first_matches_channel_last() {
    let device = Default::default();
    let [b, c, h, w] = [2, 24, 9, 13];
    let mut ln = LayerNorm2d::<TestBackend>::new(c, 1e-6, &device);
    ln.weight = Param::from_tensor(Tensor::random([c], Distribution::Normal(1.0, 0.5), &device));
    ln.bias = Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), &device));
    let x = Tensor::<TestBackend, 4>::random([b, c, h, w], Distribution::Normal(3.0, 2.0), &device);
    let got = ln.forward(x.clone());
    let rows = x.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
    let (var, mean) = rows.clone().var_mean_bias(1);
    let want = (rows - mean) / (var + 1e-6).sqrt() * ln.weight.val().unsqueeze::<2>()
        + ln.bias.val().unsqueeze::<2>();
    let want = want.reshape([b, h, w, c]).permute([0, 3, 1, 2]);
    assert_eq!(got.dims(), [b, c, h, w]);
    let err = (got - want).abs().max().into_scalar();
    assert!(err <= 1e-5, "max error {err}");
}
