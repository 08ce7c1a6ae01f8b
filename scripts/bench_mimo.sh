#!/usr/bin/env bash
# Times the tiny MIMO's training forward and forward + backward in PyTorch (the statement in
# scripts/reference/mimo.py) and in mimo on the same batch in the same session, and prints the
# ratio. Needs the reference venv (see scripts/reference/README.md); not part of CI.
#   scripts/bench_mimo.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
ref=$(mktemp --suffix .json)
"$py" scripts/reference/mimo_bench.py "$ref" "$runs"
cargo run -- bench mimo --fixture-batch --runs "$runs" --reference "$ref"
