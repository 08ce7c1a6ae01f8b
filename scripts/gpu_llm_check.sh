#!/usr/bin/env bash
# Language-model check on a CUDA GPU (run it with the device tool when a task is lent one; not
# part of CI, which has no GPU). Prints:
#   1. the tiny chat model's greedy answer on CUDA in f32, compared with the CPU/transformers text;
#   2. Vicuna-7B-shaped random weights in bf16: prefill time of a 512-token prompt and decode
#      tokens/s at batch 1 (`mimo bench llm`).
# Usage: scripts/gpu_llm_check.sh [RUNS]      (about 5 minutes cold: most of it is the build)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
export CARGO_TERM_COLOR=never
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "build (cuda)"
cargo build -q --features cuda

step "tiny chat model, greedy, f32 on CUDA"
# The text transformers generates for this prompt (ids in mimo-core/fixtures/llm/chat/io.safetensors),
# decoded by mimo; the CPU run prints the same (tests/cli.rs checks it).
want='round</p>Anv esopins irre� largeWh irrehot'
got=$(./target/debug/mimo generate --model mimo-core/fixtures/llm/chat --prompt "Where is the liver?" --max-new-tokens 12)
echo "got:  $got"
if [ "$got" = "$want" ]; then echo "CUDA greedy text equals transformers' text"; else echo "MISMATCH (want: $want)"; fi

step "Vicuna-7B shape, bf16: prefill 512 tokens + decode"
./target/debug/mimo bench llm --model vicuna_7b_v1_5 --dtype bf16 --prompt-len 512 --decode-tokens 32 --runs "$runs"

step "done"
