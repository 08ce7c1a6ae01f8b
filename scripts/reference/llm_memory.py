#!/usr/bin/env python3
"""PyTorch's side of scripts/memory_7b.sh: the memory a LISA-style LoRA training step of a
Vicuna-7B-wide LLaMA keeps for its backward, so that the per-layer figure can be set beside
mimo's, measured the same way in the same session.

Usage: llm_memory.py OUT.json SEQ LAYERS...
For each layer count: transformers' LlamaForCausalLM with Vicuna-7B's widths (hidden 4096, MLP
11008, 32 heads, vocabulary 32000 + MIMO's 6 added tokens) and LAYERS decoder layers, random
weights in bf16; a peft LoRA adapter as LISA's (r 8, alpha 16, dropout 0.05 on q_proj and
v_proj) kept in f32 as mimo trains it; embed_tokens and lm_head trainable (LISA trains them
whole). One sequence of SEQ positions goes in as input embeddings (MIMO feeds the image tokens
as embeddings) with labels on every position; the model is in training mode (dropout on).

Measured as mimo measures it: the bytes held on the heap (glibc's mallinfo2: in-use chunks plus
mmapped blocks; PyTorch's CPU allocator takes its memory from malloc) right after the forward
returned, above what was held before it (the weights and inputs): what autograd keeps for the
backward, plus the outputs. Then the same with transformers' gradient checkpointing (every
decoder layer recomputed in the backward; non-reentrant). Weights are not counted.
"""
import ctypes
import gc
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
out_path, seq = sys.argv[1], int(sys.argv[2])
layers = [int(x) for x in sys.argv[3:]] or [1, 2]


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2


def live_bytes():
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def model_of(n_layers):
    cfg = LlamaConfig(vocab_size=32006, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=n_layers, num_attention_heads=32, num_key_value_heads=32,
                      max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
    inner = model.base_model.model
    inner.model.embed_tokens.weight.requires_grad_(True)
    inner.lm_head.weight.requires_grad_(True)
    return model.train()


def kept_for_backward(model, checkpointing):
    if checkpointing:
        model.base_model.model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    embeds = torch.randn(1, seq, 4096, dtype=torch.bfloat16)
    labels = torch.randint(0, 32000, (1, seq))
    gc.collect()
    before = live_bytes()
    out = model(inputs_embeds=embeds, labels=labels, use_cache=False)
    kept = live_bytes() - before
    out.loss.backward()
    del out
    model.zero_grad(set_to_none=True)
    gc.collect()
    return kept


rows = []
for n in layers:
    model = model_of(n)
    kept_for_backward(model, False)  # warm-up (allocator, lazy state)
    plain = kept_for_backward(model, False)
    ckpt = kept_for_backward(model, True)
    rows.append({"layers": n, "kept_bytes": plain, "kept_bytes_checkpointing": ckpt})
    print(json.dumps(rows[-1]), flush=True)
    del model
    gc.collect()

result = {"seq": seq, "torch": torch.__version__, "rows": rows}
with open(out_path, "w") as f:
    json.dump(result, f, indent=1)
