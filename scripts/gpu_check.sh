#!/usr/bin/env bash
# The GPU check: one command for a CUDA machine (not part of CI, which has no GPU).
#
#   scripts/gpu_check.sh prepare      here, on the CPU machine: builds the CPU references
#                                     and a stripped CUDA binary into .gpu/ (git-ignored)
#   scripts/gpu_check.sh run [OUT]    on the GPU machine (the device tool: carry .gpu):
#                                     runs every check below, writes OUT/gpu_check.json
#                                     and OUT/gpu_check.log (OUT defaults to $OUT or out/gpu)
#
# What `run` measures, each step bounded by `timeout` so one slow step cannot eat the budget
# (at most about 8 minutes in all, kernel compilation and autotuning included):
#   1. tiny fixtures on CUDA against their expected values (and the tiny LLM read straight into
#      bf16): SAM (`mimo segment` masks and IoUs
#      against the CPU's), the LLM (greedy text against transformers'), MIMO (losses and masks
#      against PyTorch's; its CLIP tower, SAM and LLM all feed them);
#   2. SAM ViT-H image encoder per image, f32 and bf16;
#   3. Vicuna-7B-shaped LLM in bf16: 512-token prefill and decode tokens/s at batch 1;
#   4. MIMO-7B-shaped LoRA training steps (forward, backward, AdamW) with peak GPU memory
#      sampled by nvidia-smi: as `frozen_dtype: Some("bf16")` trains with LISA's whole token
#      matrices, and in the 24 GB setting (added token rows only, each decoder layer
#      recomputed in the backward, one 512-token sample);
#   5. `mimo train` on CUDA: 40 optimiser steps of experiments/tiny_phantom.ron (the
#      quickstart's run: learner, accumulation, clipping, a checkpoint), seconds per step,
#      with its default loader threads and again with data loaded on the training thread;
#   6. `mimo serve` on CUDA with the demo model: a sample uploaded, three questions answered
#      through the API, seconds per answer.
# Weights are random: timings do not depend on them.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

if [ "$mode" = prepare ]; then
    set -e
    mkdir -p .gpu/ref
    cargo build -q
    ./target/debug/mimo segment --model mimo-core/fixtures/sam/tiny_a.ron \
        --checkpoint mimo-core/fixtures/sam/tiny_a.safetensors \
        --image assets/samples/mni152_t1_z95.png --point 98,110 --box 30,30,170,200 \
        --multimask --out .gpu/ref/cpu.png --json .gpu/ref/segment.json 2>/dev/null
    cargo build -q --features cuda
    cp target/debug/mimo .gpu/mimo-cuda
    strip .gpu/mimo-cuda
    ls -la .gpu .gpu/ref
    echo "prepared: run it on the GPU machine with"
    echo "  device run, carry [\".gpu\"]: scripts/gpu_check.sh run"
    exit 0
fi

out=${2:-${OUT:-out/gpu}}
mkdir -p "$out"
log="$out/gpu_check.log"
exec > >(tee "$log") 2>&1
bin=.gpu/mimo-cuda
if [ ! -x "$bin" ]; then
    echo "no prepared binary: building with cargo (slow)"
    cargo build -q --features cuda && bin=target/debug/mimo || exit 1
fi
# cubecl compiles kernels at run time with NVRTC: make the toolkit's copy findable.
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
nvrtc=$(find /usr/local /opt -name 'libnvrtc.so*' 2>/dev/null | head -1)
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$(dirname "$nvrtc"):$LD_LIBRARY_PATH"
tmp=$(mktemp -d)
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
status() { printf '%s %s\n' "$1" "$2" >>"$tmp/status"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "tiny SAM on CUDA vs the CPU"
timeout 60 "$bin" segment --model mimo-core/fixtures/sam/tiny_a.ron \
    --checkpoint mimo-core/fixtures/sam/tiny_a.safetensors \
    --image assets/samples/mni152_t1_z95.png --point 98,110 --box 30,30,170,200 \
    --multimask --out "$tmp/gpu.png" --json "$tmp/segment.json"
python3 - .gpu/ref/segment.json "$tmp/segment.json" <<'PY' && status sam ok || status sam FAILED
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
worst = max(abs(x["predicted_iou"] - y["predicted_iou"]) for x, y in zip(a["masks"], b["masks"]))
same = sum(x["rle"] == y["rle"] for x, y in zip(a["masks"], b["masks"]))
print(f"masks identical: {same}/{len(a['masks'])}; max IoU difference {worst:.2e}")
json.dump({"masks_identical": same, "masks": len(a["masks"]), "max_iou_diff": worst}, open(sys.argv[2] + ".cmp", "w"))
sys.exit(0 if worst < 1e-3 else 1)
PY

step "tiny LLM on CUDA: greedy text vs transformers'"
want='round</p>Anv esopins irre� largeWh irrehot'
got=$(timeout 60 "$bin" generate --model mimo-core/fixtures/llm/chat --prompt "Where is the liver?" --max-new-tokens 12 2>/dev/null)
echo "got:  $got"
echo "want: $want"
if [ "$got" = "$want" ]; then status llm ok; else status llm FAILED; fi

step "tiny LLM read straight into bf16 (LoadOptions) answers on CUDA"
timeout 60 "$bin" generate --model mimo-core/fixtures/llm/chat --prompt "Where is the liver?" \
    --max-new-tokens 12 --dtype bf16 >"$tmp/llm_bf16.txt" 2>&1 && status llm_bf16 ok || status llm_bf16 FAILED
tail -2 "$tmp/llm_bf16.txt"

step "tiny MIMO on CUDA vs PyTorch (losses and masks)"
timeout 90 "$bin" bench mimo --check-fixture --json "$tmp/mimo_check.json" && status mimo ok || status mimo FAILED

step "SAM ViT-H image encoder, f32 (and prompt decoding)"
timeout 75 "$bin" bench sam --model vit_h --runs 3 --json "$tmp/sam_f32.json" || status sam_f32 FAILED

step "SAM ViT-H image encoder, bf16"
timeout 50 "$bin" bench sam --model vit_h --dtype bf16 --runs 3 --json "$tmp/sam_bf16.json" || status sam_bf16 FAILED

step "Vicuna-7B shape, bf16: prefill 512 tokens, decode at batch 1"
timeout 90 "$bin" bench llm --model vicuna_7b_v1_5 --dtype bf16 --prompt-len 512 --decode-tokens 32 --runs 2 \
    --json "$tmp/llm_7b.json" || status llm_7b FAILED

# Runs a command while sampling the GPU's used memory (nvidia-smi, every 0.2 s: what the
# process holds, cubecl's memory pools included, so an upper bound of what it needs).
#   with_peak NAME TIMEOUT CMD...   writes $tmp/peak_NAME (MiB)
with_peak() {
    local name=$1 limit=$2 sampler peak
    shift 2
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done) \
        >"$tmp/mem_$name" 2>/dev/null &
    sampler=$!
    timeout "$limit" "$@" || status "$name" FAILED
    kill "$sampler" 2>/dev/null
    peak=$(grep -E '^[0-9]+$' "$tmp/mem_$name" | sort -n | tail -1)
    echo "peak GPU memory ($name): ${peak:-not sampled} MiB"
    # No samples (nvidia-smi missing or failing): no file, so the summary says null.
    [ -n "$peak" ] && echo "$peak" >"$tmp/peak_$name"
    return 0
}

step "MIMO-7B shape, one LoRA training step as frozen_dtype bf16 trains (LISA's whole token matrices)"
# bf16 frozen towers and LLM base, f32 trained parts (LoRA, whole embed_tokens/lm_head, ...).
with_peak mimo_7b_mixed 120 "$bin" bench mimo --model configs/mimo/mimo-7b.ron --dtype bf16 --mixed \
    --token-rows whole --images 1 --image-size 512 --text-len 128 --runs 2 --json "$tmp/mimo_7b_mixed.json"

step "MIMO-7B shape, the 24 GB setting (experiments/mimo_full_24gb.ron): added token rows only, decoder layers recomputed"
# One sample of the experiment's longest text (max_text_len 512) per forward pass.
with_peak mimo_7b_24gb 120 "$bin" bench mimo --model configs/mimo/mimo-7b.ron --dtype bf16 --mixed \
    --token-rows new --checkpointing decoder_layers --images 1 --image-size 512 --text-len 512 --runs 1 \
    --json "$tmp/mimo_7b_24gb.json"

step "mimo train on CUDA: 40 optimiser steps of the tiny phantom experiment"
timeout 120 "$bin" train experiments/tiny_phantom.ron --out "$tmp/train" --max-steps 40 --no-dashboard \
    && status train ok || status train FAILED
python3 - "$tmp/train/train.csv" "$tmp/train.json" <<'PY' || true
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
secs = sorted(float(r["seconds"]) for r in rows[5:])
res = {"steps": len(rows), "median_seconds_per_step": secs[len(secs) // 2] if secs else None,
       "first_loss": float(rows[0]["loss"]), "last_loss": float(rows[-1]["loss"])}
print(res)
json.dump(res, open(sys.argv[2], "w"))
PY

step "the same 40 steps with data loaded on the training thread (data.workers: 0)"
printf '(name: "tiny_w0", base: Some("%s"), data: (build: Some("%s"), max_text_len: 160, workers: 0))\n' \
    "$PWD/experiments/tiny_phantom.ron" "$PWD/configs/data/quickstart.ron" >"$tmp/w0.ron"
timeout 120 "$bin" train "$tmp/w0.ron" --out "$tmp/train_w0" --max-steps 40 --no-dashboard \
    && status train_w0 ok || status train_w0 FAILED
python3 - "$tmp/train_w0/train.csv" "$tmp/train_w0.json" "$tmp/train/train.csv" <<'PY' || true
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
secs = sorted(float(r["seconds"]) for r in rows[5:])
with_workers = list(csv.DictReader(open(sys.argv[3])))
same = [r["loss"] for r in rows] == [r["loss"] for r in with_workers]
res = {"steps": len(rows), "median_seconds_per_step": secs[len(secs) // 2] if secs else None,
       "same_losses_as_with_loader_threads": same}
print(res)
json.dump(res, open(sys.argv[2], "w"))
PY

step "mimo serve on CUDA: the demo model answers through the API"
"$bin" serve --config configs/mimo/mimo-tiny.ron --checkpoint assets/demo/mimo-tiny-phantom \
    --port 0 >"$tmp/url" 2>"$tmp/serve.err" &
server=$!
for _ in $(seq 60); do [ -s "$tmp/url" ] && break; sleep 1; done
timeout 60 python3 - "$(head -1 "$tmp/url")" "$tmp/serve.json" <<'PY' && status serve ok || status serve FAILED
import json, sys, time, urllib.request
u, dest = sys.argv[1], sys.argv[2]
png = urllib.request.urlopen(u + "api/samples/phantom_ct").read()
img = json.load(urllib.request.urlopen(urllib.request.Request(u + "api/images", data=png, method="POST")))
q = "Cut out the liver, spleen, right kidney, left kidney and aorta from the image and display it."
secs = []
for _ in range(3):
    t = time.time()
    body = json.dumps({"image": img["id"], "question": q}).encode()
    req = urllib.request.Request(u + "api/answer", data=body, headers={"Content-Type": "application/json"})
    a = json.load(urllib.request.urlopen(req))
    secs.append(time.time() - t)
print(f"answers in {', '.join(f'{s:.2f}' for s in secs)} s; {a['text'][:80]!r}; {len(a['segments'])} masks")
json.dump({"seconds": secs, "masks": len(a["segments"])}, open(dest, "w"))
sys.exit(0 if a["segments"] else 1)
PY
kill "$server" 2>/dev/null

step "summary"
python3 - "$tmp" "$out/gpu_check.json" <<'PY'
import json, os, sys
tmp, dest = sys.argv[1], sys.argv[2]
def load(name):
    p = os.path.join(tmp, name)
    return json.load(open(p)) if os.path.exists(p) else None
def peak(name):
    try:
        return int(open(os.path.join(tmp, "peak_" + name)).read().strip())
    except (OSError, ValueError):
        return None
status = dict(line.split() for line in open(os.path.join(tmp, "status"))) if os.path.exists(os.path.join(tmp, "status")) else {}
result = {
    "checks": status,
    "sam_tiny_vs_cpu": load("segment.json.cmp"),
    "mimo_tiny_vs_pytorch": load("mimo_check.json"),
    "sam_vit_h_f32": load("sam_f32.json"),
    "sam_vit_h_bf16_encoder": load("sam_bf16.json"),
    "llm_7b_bf16": load("llm_7b.json"),
    "mimo_7b_mixed_step": load("mimo_7b_mixed.json"),
    "mimo_7b_mixed_peak_memory_mib": peak("mimo_7b_mixed"),
    "mimo_7b_24gb_step": load("mimo_7b_24gb.json"),
    "mimo_7b_24gb_peak_memory_mib": peak("mimo_7b_24gb"),
    "train_tiny_cuda": load("train.json"),
    "train_tiny_cuda_no_loader_threads": load("train_w0.json"),
    "serve_tiny_cuda": load("serve.json"),
}
json.dump(result, open(dest, "w"), indent=1)
print(json.dumps(result, indent=1))
PY
echo "wrote $out/gpu_check.json and $log"
