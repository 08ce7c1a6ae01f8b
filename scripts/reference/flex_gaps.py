"""PyTorch on the operations of mimo-bench/examples/flex_gaps.rs (2 threads, f32).

Prints one line per case; scripts/bench_flex_gaps.sh runs both.
"""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.set_grad_enabled(False)


def median_ms(runs, f):
    f()
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms)


x = torch.randn(1, 32, 256, 256)
print(f"{'gelu (erf) [1, 32, 256, 256]':<58} torch {median_ms(9, lambda: F.gelu(x)):8.2f} ms")
print(f"{'exp [1, 32, 256, 256]':<58} torch {median_ms(9, lambda: x.exp()):8.2f} ms")
print(f"{'sigmoid [1, 32, 256, 256]':<58} torch {median_ms(9, lambda: x.sigmoid()):8.2f} ms")
print(f"{'silu [1, 32, 256, 256]':<58} torch {median_ms(9, lambda: F.silu(x)):8.2f} ms")
h = torch.rand(1, 197, 12, 64)
print(f"{'head split copy [1, 197, 12, 64] -> [1, 12, 197, 64]':<58} torch "
      f"{median_ms(9, lambda: h.transpose(1, 2).contiguous()):8.2f} ms")
q, cos = torch.rand(1, 8, 512, 64), torch.rand(1, 1, 512, 64)
print(f"{'q [1, 8, 512, 64] * cos [1, 1, 512, 64]':<58} torch {median_ms(9, lambda: q * cos):8.2f} ms")
qa, ka, va = (torch.rand(1, 12, 4096, 64) for _ in range(3))
print(f"{'attention [1, 12, 4096, 64]':<58} torch "
      f"{median_ms(3, lambda: F.scaled_dot_product_attention(qa, ka, va)):8.2f} ms")
