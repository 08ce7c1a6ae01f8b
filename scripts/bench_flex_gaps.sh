#!/usr/bin/env bash
# The gaps of burn-flex 0.21.0 that mimo works around or cannot, as minimal reproductions:
# PyTorch first, then burn-flex and mimo's alternative (mimo-bench/examples/flex_gaps.rs), same
# session, with the allocator settings of the `mimo` binary (src/malloc.rs). Needs the
# reference venv (scripts/reference/README.md); not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
echo "PyTorch (2 threads):"
"$py" scripts/reference/flex_gaps.py
echo "burn-flex:"
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
    cargo run -q -p mimo-bench --example flex_gaps
