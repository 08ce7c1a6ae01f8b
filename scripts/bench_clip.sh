#!/usr/bin/env bash
# Times an HF CLIP vision forward in PyTorch and in mimo in the same session and prints the
# ratio. Needs the reference venv (scripts/reference/README.md); not part of CI.
#   scripts/bench_clip.sh [CONFIG.ron] [RUNS]   default: the tiny HF fixture; e.g. configs/clip/vit_b16.ron
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=${1:-mimo-core/fixtures/clip/hf_tiny.ron}
runs=${2:-5}
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
ref=$(mktemp --suffix .json)
"$py" scripts/reference/clip_bench.py "$cfg" "$ref" "$runs"
cargo run -q -- bench clip --model "$cfg" --runs "$runs" --reference "$ref"
