#!/usr/bin/env bash
# Times a LLaMA in PyTorch (transformers) and in mimo in the same session and prints the ratios.
# Needs the reference venv (scripts/reference/README.md); not part of CI.
#   scripts/bench_llm.sh [MODEL] [RUNS] [PROMPT_LEN] [DECODE_TOKENS]
#   MODEL: tiny (default) or an HF config.json, e.g. configs/llm/mid_512x4.json
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-tiny}
runs=${2:-5}
len=${3:-64}
decode=${4:-16}
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
ref=$(mktemp --suffix .json)
"$py" scripts/reference/llm_bench.py "$model" "$ref" "$runs" "$len" "$decode"
cargo run -q -- bench llm --model "$model" --runs "$runs" --prompt-len "$len" --decode-tokens "$decode" --reference "$ref"
