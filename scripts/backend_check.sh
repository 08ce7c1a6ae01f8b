#!/usr/bin/env bash
# Runs the README's main command on another backend and compares its masks and IoUs with the
# default CPU backend's, then times SAM there. Not part of CI (CI has no GPU).
#   scripts/backend_check.sh wgpu|cuda [BENCH_MODEL]
# wgpu also runs on a CPU through Mesa's software Vulkan (apt-get install mesa-vulkan-drivers),
# which is how this script was checked; cuda needs an NVIDIA driver.
set -euo pipefail
cd "$(dirname "$0")/.."
feature=${1:?usage: backend_check.sh wgpu|cuda [BENCH_MODEL]}
bench=${2:-vit_b}
out=$(mktemp -d)
args=(segment --model mimo-core/fixtures/sam/tiny_a.ron --checkpoint mimo-core/fixtures/sam/tiny_a.safetensors
      --image assets/samples/mni152_t1_z95.png --point 98,110 --box 30,30,170,200 --multimask)
cargo build -q
cp target/debug/mimo "$out/mimo-cpu"
cargo build -q --features "$feature"
cp target/debug/mimo "$out/mimo-$feature"
"$out/mimo-cpu" "${args[@]}" --out "$out/cpu.png" --json "$out/cpu.json"
"$out/mimo-$feature" "${args[@]}" --out "$out/$feature.png" --json "$out/$feature.json"
python3 - "$out/cpu.json" "$out/$feature.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
worst = max(abs(x["predicted_iou"] - y["predicted_iou"]) for x, y in zip(a["masks"], b["masks"]))
same = all(x["rle"] == y["rle"] for x, y in zip(a["masks"], b["masks"]))
print(f"masks identical: {same}; max IoU difference {worst:.2e}")
sys.exit(0 if same and worst < 1e-4 else 1)
PY
"$out/mimo-$feature" bench sam --model "$bench" --runs 3
