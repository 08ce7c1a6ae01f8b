#!/usr/bin/env python3
"""PyTorch timing of a LLaMA (transformers LlamaForCausalLM) for `mimo bench llm --reference`.

Usage: llm_bench.py MODEL OUT.json [RUNS] [PROMPT_LEN] [DECODE_TOKENS]
MODEL is `tiny` (LlamaConfig::tiny of mimo-core) or an HF config.json (e.g.
configs/llm/mid_512x4.json). Random weights, batch 1, f32, all CPU threads; same stages as mimo:
forward of the prompt (no grad), forward + backward of mean(logits^2), and greedy decoding with the
KV cache: (generate(n) - generate(1)) / (n - 1) per token. Medians of RUNS after one warm-up.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from timing import median_ms

torch.set_num_threads(os.cpu_count())
model_arg, out = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
prompt_len = int(sys.argv[4]) if len(sys.argv) > 4 else 64
decode = max(2, int(sys.argv[5]) if len(sys.argv) > 5 else 16)

if model_arg == "tiny":
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)
else:
    with open(model_arg) as f:
        cfg = LlamaConfig(**json.load(f))
model = LlamaForCausalLM(cfg).eval()
ids = torch.tensor([[1 + (i * 7919) % (cfg.vocab_size - 1) for i in range(prompt_len)]])
mask = torch.ones_like(ids)


def timed(f):
    return median_ms(f, runs)


with torch.no_grad():
    forward = timed(lambda: model(input_ids=ids, attention_mask=mask).logits)


def step():
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, attention_mask=mask).logits.pow(2).mean().backward()


backward = timed(step)


def gen(n):
    with torch.no_grad():
        return timed(lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                            do_sample=False, eos_token_id=None, pad_token_id=0))


per_token = (gen(decode) - gen(1)) / (decode - 1)
res = {"model": model_arg, "torch": torch.__version__, "threads": torch.get_num_threads(), "prompt_len": prompt_len,
       "forward_ms": forward, "backward_ms": backward, "decode_ms_per_token": per_token}
with open(out, "w") as f:
    json.dump(res, f)
print(f"PyTorch {model_arg}: forward {forward:.2f} ms, fwd+bwd {backward:.2f} ms, decode {per_token:.2f} ms/token "
      f"({torch.get_num_threads()} threads)")
