#!/usr/bin/env bash
# GFLOP/s of matrix products on the shapes of the ViT-B, SAM and LLM layers: PyTorch first, then
# burn-flex (mimo-bench/examples/matmul_probe.rs), same session. Needs the reference venv.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
echo "PyTorch (2 threads):"
"$py" scripts/reference/matmul_bench.py
echo "mimo (burn-flex, glibc keeping freed memory as the mimo binary does):"
# The same allocator settings as src/malloc.rs sets in `mimo`: without them every product's
# output (above glibc's mmap threshold) pays its page faults again.
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
    cargo run -q -p mimo-bench --example matmul_probe
