//! Times the matrix products of a CLIP ViT-B/16 layer, a SAM ViT-B block (4096 tokens) and the
//! 512 x 4 LLM (64 tokens, LM head of 32000) on the CPU backend:
//! `cargo run -p mimo-bench --example matmul_probe`. `scripts/bench_matmul.sh` times PyTorch
//! on the same shapes first, and runs this probe with the allocator settings of the `mimo`
//! binary (`src/malloc.rs`). burn-flex computes synchronously, so the product is timed without
//! reading it back (PyTorch's side does not copy its output either).

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};

type B = Flex;

fn main() {
    let d = Default::default();
    let shapes: [(usize, usize, usize); 10] = [
        (197, 768, 3072),
        (197, 3072, 768),
        (197, 768, 768),
        (394, 768, 3072),
        (1024, 768, 3072),
        (4096, 768, 2304),
        (64, 512, 32000),
        (64, 512, 1376),
        (64, 1376, 512),
        (64, 512, 512),
    ];
    for (m, k, n) in shapes {
        let a = Tensor::<B, 2>::random([m, k], Distribution::Default, &d);
        let b = Tensor::<B, 2>::random([k, n], Distribution::Default, &d);
        let _ = a.clone().matmul(b.clone());
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = a.clone().matmul(b.clone());
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let gflops = 2.0 * (m * k * n) as f64 / ms / 1e6;
        println!("[{m}x{k}] x [{k}x{n}]: {ms:.2} ms, {gflops:.0} GFLOP/s");
    }
}
