//! Minimal reproductions of the places where burn-flex 0.21.0 (the CPU backend) is slower
//! than it could be, each next to a faster way to get the same values, for an upstream
//! report: `cargo run -p mimo-bench --example flex_gaps`. `scripts/bench_flex_gaps.sh` runs
//! PyTorch on the same operations first (`scripts/reference/flex_gaps.py`).
//!
//! Each line prints burn's call and the alternative (median of several runs, milliseconds).
//! The alternatives are what mimo does today (`mimo_core::nn`), except where the line says
//! there is none: those gaps can only close in burn-flex.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::activation::{gelu, sigmoid, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use mimo_core::nn;

type B = Flex;

/// Median milliseconds of `f` over `runs` calls after one warm-up.
fn median_ms<T>(runs: usize, f: impl Fn() -> T) -> f64 {
    let _ = f();
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let _ = f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn line(case: &str, burn: f64, alternative: Option<(&str, f64)>) {
    match alternative {
        Some((how, ms)) => println!("{case:<58} burn {burn:8.2} ms | {how} {ms:8.2} ms"),
        None => println!("{case:<58} burn {burn:8.2} ms | no alternative outside burn-flex"),
    }
}

fn main() {
    let d = Default::default();
    let runs = 9;

    // 1. Transcendental unary operations: scalar libm per element, on the calling thread
    //    (`ops/unary.rs` `unary_op_typed`, `ops/activation.rs`). A multiply by a scalar on the
    //    same tensor shows what a vectorised pass over this memory costs.
    let x = Tensor::<B, 4>::random([1, 32, 256, 256], Distribution::Normal(0.0, 1.0), &d);
    let scale = median_ms(runs, || x.clone() * 1.702);
    println!("[1, 32, 256, 256] f32; a vectorised multiply by a scalar: {scale:.2} ms");
    line(
        "gelu (erf) [1, 32, 256, 256]",
        median_ms(runs, || gelu(x.clone())),
        Some((
            "nn::gelu (A&S 7.1.28 erfc, pieces over threads)",
            median_ms(runs, || nn::gelu(x.clone())),
        )),
    );
    line(
        "exp [1, 32, 256, 256]",
        median_ms(runs, || x.clone().exp()),
        None,
    );
    line(
        "sigmoid [1, 32, 256, 256]",
        median_ms(runs, || sigmoid(x.clone())),
        None,
    );
    line(
        "silu [1, 32, 256, 256]",
        median_ms(runs, || silu(x.clone())),
        Some((
            "nn::silu (x / (1 + exp(-x)), threads)",
            median_ms(runs, || nn::silu(x.clone())),
        )),
    );

    // 2. A permute that does not collapse to two dimensions is copied element by element
    //    (`FlexTensor::copy_contiguous` falls back to `StridedIter`): the attention head
    //    split of CLIP ViT-B/16, `[1, 197, 12, 64] -> [1, 12, 197, 64]`.
    let heads = Tensor::<B, 4>::random([1, 197, 12, 64], Distribution::Default, &d);
    line(
        "head split copy [1, 197, 12, 64] -> [1, 12, 197, 64]",
        median_ms(runs, || {
            heads.clone().swap_dims(1, 2).reshape([12 * 197 * 64])
        }),
        Some((
            "nn::swap_dims_contiguous",
            median_ms(runs, || {
                nn::swap_dims_contiguous(heads.clone(), 1, 2).reshape([12 * 197 * 64])
            }),
        )),
    );

    // 3. A binary operation that broadcasts along a middle axis takes the element-by-element
    //    path (`ops/binary.rs`: the SIMD broadcast paths cover a shared last row or a per-row
    //    scalar): RoPE's `q * cos` with q `[1, 8, 512, 64]` and cos `[1, 1, 512, 64]`.
    let q = Tensor::<B, 4>::random([1, 8, 512, 64], Distribution::Default, &d);
    let cos = Tensor::<B, 4>::random([1, 1, 512, 64], Distribution::Default, &d);
    let cos_full = cos.clone().repeat_dim(1, 8);
    line(
        "q [1, 8, 512, 64] * cos [1, 1, 512, 64]",
        median_ms(runs, || q.clone() * cos.clone()),
        Some((
            "cos repeated to q's shape",
            median_ms(runs, || q.clone() * cos_full.clone()),
        )),
    );

    // 4. Fused attention loops over (batch, head) on the calling thread
    //    (`ops/attention.rs`): a SAM ViT-B global block, 12 heads x 4096 tokens. With the
    //    heads over threads the rest of the gap is the tiled kernel's online softmax, which is
    //    scalar: `perf` puts 52 % of this example's samples in `attention_impl`'s own scalar
    //    loops and 13 % in `expf`, against 28 % in gemm's products.
    let [qa, ka, va] =
        [0, 1, 2].map(|_| Tensor::<B, 4>::random([1, 12, 4096, 64], Distribution::Default, &d));
    let opts = AttentionModuleOptions::default();
    let attn_runs = 3;
    line(
        "attention [1, 12, 4096, 64]",
        median_ms(attn_runs, || {
            attention(qa.clone(), ka.clone(), va.clone(), None, None, opts)
        }),
        Some((
            "nn::attention (heads over threads)",
            median_ms(attn_runs, || {
                nn::attention(qa.clone(), ka.clone(), va.clone(), None, None, opts)
            }),
        )),
    );
}
