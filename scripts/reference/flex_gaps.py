"""PyTorch on the operations of mimo-bench/examples/flex_gaps.rs (2 threads, f32).

Prints one line per case; scripts/bench_flex_gaps.sh runs both.
"""
import torch
import torch.nn.functional as F

from timing import median_ms

torch.set_num_threads(2)
torch.set_grad_enabled(False)


def row(case, f, runs=9):
    print(f"{case:<58} torch {median_ms(f, runs):8.2f} ms")


x = torch.randn(1, 32, 256, 256)
row("gelu (erf) [1, 32, 256, 256]", lambda: F.gelu(x))
row("exp [1, 32, 256, 256]", lambda: x.exp())
row("sigmoid [1, 32, 256, 256]", lambda: x.sigmoid())
row("silu [1, 32, 256, 256]", lambda: F.silu(x))
h = torch.rand(1, 197, 12, 64)
row("head split copy [1, 197, 12, 64] -> [1, 12, 197, 64]", lambda: h.transpose(1, 2).contiguous())
q, cos = torch.rand(1, 8, 512, 64), torch.rand(1, 1, 512, 64)
row("q [1, 8, 512, 64] * cos [1, 1, 512, 64]", lambda: q * cos)
qa, ka, va = (torch.rand(1, 12, 4096, 64) for _ in range(3))
row("attention [1, 12, 4096, 64]", lambda: F.scaled_dot_product_attention(qa, ka, va), runs=3)
