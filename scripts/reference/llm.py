#!/usr/bin/env python3
"""Reference fixtures for mimo-core's LLaMA decoder (transformers LlamaForCausalLM).

Writes into mimo-core/fixtures/llm/<name>/: config.json + model.safetensors (save_pretrained) and
io.safetensors: a left-padded batch of two prompts (`input_ids`, `attention_mask`,
`position_ids` = cumsum(mask) - 1 as generate uses), `logits`, every hidden state
(`hidden_states_{i}`, the last one after the final norm) and greedy `generated` ids.
Configs: `mha` (4 heads, rope_theta 10000, untied) and `gqa` (4 query / 2 key-value heads,
rope_theta 500000, tied embeddings). All weights random, norms included.

Environment: the reference venv (scripts/reference/README.md) plus `pip install transformers`.
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/llm.py
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures", "llm")
torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)

CONFIGS = {
    "mha": dict(num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=False),
    "gqa": dict(num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=True),
}


def main():
    gen = torch.Generator().manual_seed(0)
    for name, extra in CONFIGS.items():
        cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6,
                          hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra)
        model = LlamaForCausalLM(cfg).eval()
        for k, t in model.state_dict().items():
            if k.endswith("norm.weight") or "layernorm" in k:
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
        out_dir = f"{OUT}/{name}"
        model.save_pretrained(out_dir)
        ids = torch.tensor([[0, 0, 1, 17, 42, 9, 63], [1, 5, 77, 3, 29, 88, 14]])
        mask = (ids != 0).long()
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        o = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
        gen_ids = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                 pad_token_id=0, eos_token_id=None)
        io = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "logits": o.logits,
              "generated": gen_ids[:, ids.shape[1]:]}
        for i, h in enumerate(o.hidden_states):
            io[f"hidden_states_{i}"] = h
        save_file({k: v.contiguous() for k, v in io.items()}, f"{out_dir}/io.safetensors")
        print(name, sorted(os.listdir(out_dir)), gen_ids[:, ids.shape[1]:].tolist())


def keys():
    """Key list of lmsys/vicuna-7b-v1.5 (LLaMA-2 7B layout), built on the meta device."""
    import transformers
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    with open(f"{OUT}/keys_vicuna_7b_v1_5.txt", "w") as f:
        f.write(f"# LlamaForCausalLM, vicuna-7b-v1.5 config, transformers {transformers.__version__}\n")
        for k, v in model.state_dict().items():
            f.write(f"{k} {list(v.shape)}\n".replace(", ", ","))


if __name__ == "__main__":
    main()
    keys()
