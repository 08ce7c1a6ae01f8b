#!/usr/bin/env bash
# Times the tiny MIMO's training forward and forward + backward in PyTorch (the statement in
# scripts/reference/mimo.py) and in mimo on the same batch in the same session, and prints the
# ratio. Needs the reference venv (see scripts/reference/README.md); not part of CI.
# With `decoder_layers`, both recompute each decoder layer in the backward (transformers'
# gradient checkpointing; `--checkpointing decoder_layers`).
#   scripts/bench_mimo.sh [RUNS] [decoder_layers]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
ref=$(mktemp --suffix .json)
mode=${2:-}
"$py" scripts/reference/mimo_bench.py "$ref" "$runs" $mode
# shellcheck disable=SC2086
cargo run -- bench mimo --fixture-batch --runs "$runs" --reference "$ref" ${mode:+--checkpointing $mode}
