"""Times torch.matmul on the shapes of mimo-bench/examples/matmul_probe.rs (2 threads, f32).

Prints one line per shape in the probe's format; scripts/bench_matmul.sh runs both.
"""
import time

import torch

SHAPES = [
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
]

torch.set_num_threads(2)
for m, k, n in SHAPES:
    a, b = torch.rand(m, k), torch.rand(k, n)
    for _ in range(3):
        a @ b
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    ms = (time.perf_counter() - t) * 1e3 / reps
    print(f"[{m}x{k}] x [{k}x{n}]: {ms:.2f} ms, {2 * m * k * n / ms / 1e6:.0f} GFLOP/s")
