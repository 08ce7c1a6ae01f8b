#!/usr/bin/env bash
# Times SAM in PyTorch (segment_anything) and in mimo in the same session and prints the
# ratio. Needs the reference venv (see scripts/reference/sam.py); not part of CI.
#   scripts/bench_sam.sh [MODEL] [RUNS]     MODEL: tiny_a (default), vit_b, vit_l, vit_h
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-tiny_a}
runs=${2:-3}
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
arg=$model
[ "$model" = tiny_a ] || [ "$model" = tiny_b ] && arg=mimo-core/fixtures/sam/$model.ron
ref=$(mktemp --suffix .json)
"$py" scripts/reference/sam_bench.py "$arg" "$ref" "$runs"
cargo run -- bench sam --model "$arg" --runs "$runs" --reference "$ref"
