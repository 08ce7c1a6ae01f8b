#!/usr/bin/env bash
# Memory of MIMO-7B-wide training steps on the CPU, per LLM decoder layer, beside PyTorch's
# (LISA's setup: transformers + peft) measured the same way in the same session.
#
# Each step is `mimo bench mimo` on MIMO-7B's model file with Vicuna-7B's widths but LAYERS
# decoder layers (and SAM ViT-B instead of ViT-H: SAM's image encoder never trains and runs
# before the LLM, so only its weights differ, which are known; ViT-H's encoder would triple the
# time), bf16 frozen parts with f32 trained parts (`--dtype bf16 --mixed`, as
# `frozen_dtype: Some("bf16")`), 512 text tokens (the 24 GB experiment's `max_text_len`). On
# the CPU backend tensors are heap buffers, so `mimo bench mimo` reads the step's memory from
# its counting allocator: the weights and batch, what the forward leaves for the backward,
# and each stage's peak. A straight line through the layer counts gives the cost of one
# decoder layer, and the line at 32 layers is MIMO-7B's. Four settings: only the added token
# rows train (`--token-rows new`), the same with burn's balanced activation checkpointing,
# the same with each decoder layer recomputed in the backward (`--checkpointing
# decoder_layers`, the 24 GB experiment's), and LISA's whole token matrices (at the first
# layer count only: it adds a fixed amount).
#
#   scripts/memory_7b.sh [LAYERS...]            (default: 1 2 4)
#
# About 45 minutes and 12 GB of memory on 2 cores. PyTorch's side (scripts/reference/
# llm_memory.py: the same LLM under peft, kept-for-backward bytes from glibc's counters) runs
# when the reference venv exists (scripts/reference/README.md). Writes JSON per run and a
# summary into out/memory_7b/.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=("$@")
[ ${#layers[@]} -eq 0 ] && layers=(1 2 4)
out=out/memory_7b
mkdir -p "$out"
py=${MIMO_REF_PY:-$HOME/.cache/mimo-ref-venv/bin/python}
cargo build -q
# A copy: a rebuild while this runs must not change the binary under it.
bin=$(mktemp -d)/mimo
cp target/debug/mimo "$bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$(dirname "$bin")"' EXIT

if [ -x "$py" ]; then
    echo "== PyTorch (transformers + peft), layers ${layers[*]}"
    "$py" scripts/reference/llm_memory.py "$out/pytorch.json" 799 "${layers[@]}"
else
    echo "== no reference venv at $py: PyTorch's side skipped"
fi

for n in "${layers[@]}"; do
    mkdir -p "$tmp/llm$n"
    cat > "$tmp/llm$n/config.json" <<EOF
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
 "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": $n,
 "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
 "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
EOF
    sed -e "s|llm: \"vicuna_7b_v1_5\"|llm: \"llm$n/config.json\"|" -e 's|sam: "vit_h"|sam: "vit_b"|' \
        configs/mimo/mimo-7b.ron > "$tmp/mimo$n.ron"
    settings=("new" "new --checkpointing" "new --checkpointing decoder_layers")
    [ "$n" = "${layers[0]}" ] && settings+=("whole")
    for s in "${settings[@]}"; do
        name="L${n}_$(echo "$s" | tr -d ' -')"
        echo "== mimo: $n layer(s), token rows $s"
        # shellcheck disable=SC2086
        "$bin" bench mimo --model "$tmp/mimo$n.ron" --dtype bf16 --mixed --token-rows $s \
            --text-len 512 --runs 1 --json "$out/$name.json" | tail -n 8
    done
done

python3 - "$out" "${layers[@]}" <<'EOF'
import json, os, sys
out, layers = sys.argv[1], [int(x) for x in sys.argv[2:]]
gib = lambda b: b / 2**30

def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b

def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)

lines = ["# MIMO-7B-wide training step, heap memory on the CPU (GiB)", ""]
lines.append("| setting | layers | weights + batch | kept for backward | step peak (above weights) |")
lines.append("|---|---:|---:|---:|---:|")
per_layer = {}
for setting, tag in [("new rows", "new"), ("new rows + balanced checkpointing", "newcheckpointing"),
                     ("new rows + decoder layers recomputed", "newcheckpointingdecoder_layers")]:
    rows = []
    for n in layers:
        m = load(f"L{n}_{tag}.json")["memory"]
        rows.append((n, m["before_bytes"], m["graph_bytes"], m["step_peak_bytes"]))
        lines.append(f"| {setting} | {n} | {gib(m['before_bytes']):.2f} | {gib(m['graph_bytes']):.2f} | {gib(m['step_peak_bytes']):.2f} |")
    xs = [r[0] for r in rows]
    per_layer[setting] = {k: fit(xs, [r[i] for r in rows]) for i, k in [(1, "weights"), (2, "kept"), (3, "peak")]}
whole = load(f"L{layers[0]}_whole.json")["memory"]
lines.append(f"| whole token matrices (LISA) | {layers[0]} | {gib(whole['before_bytes']):.2f} | {gib(whole['graph_bytes']):.2f} | {gib(whole['step_peak_bytes']):.2f} |")
lines += ["", "Per decoder layer (slope) and at 32 layers (the line's value), GiB:", "",
          "| setting | weights / layer | kept / layer | step peak / layer | weights at 32 | step peak at 32 | weights + peak at 32 |",
          "|---|---:|---:|---:|---:|---:|---:|"]
for setting, f in per_layer.items():
    w32 = f["weights"][0] + 32 * f["weights"][1]
    p32 = f["peak"][0] + 32 * f["peak"][1]
    lines.append(f"| {setting} | {gib(f['weights'][1]):.3f} | {gib(f['kept'][1]):.3f} | {gib(f['peak'][1]):.3f} | {gib(w32):.2f} | {gib(p32):.2f} | {gib(w32 + p32):.2f} |")
pt = os.path.join(out, "pytorch.json")
if os.path.exists(pt):
    with open(pt) as f:
        ref = json.load(f)
    xs = [r["layers"] for r in ref["rows"]]
    a, b = fit(xs, [r["kept_bytes"] for r in ref["rows"]])
    ac, bc = fit(xs, [r["kept_bytes_checkpointing"] for r in ref["rows"]])
    ours = per_layer["new rows"]["kept"][1]
    ours_c = per_layer["new rows + balanced checkpointing"]["kept"][1]
    ours_l = per_layer["new rows + decoder layers recomputed"]["kept"][1]
    lines += ["", f"Kept for the backward per decoder layer, same sequence ({ref['seq']} positions), GiB:", "",
              "| | mimo (burn) | PyTorch (transformers + peft) | ratio mimo / PyTorch |", "|---|---:|---:|---:|",
              f"| no checkpointing | {gib(ours):.3f} | {gib(b):.3f} | {ours / b:.2f}x |",
              f"| burn's balanced checkpointing vs transformers' per-layer checkpointing | {gib(ours_c):.3f} | {gib(bc):.3f} | {ours_c / bc:.2f}x |",
              f"| decoder layers recomputed vs transformers' per-layer checkpointing | {gib(ours_l):.3f} | {gib(bc):.3f} | {ours_l / bc:.2f}x |"]
text = "\n".join(lines) + "\n"
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
print(text)
EOF
