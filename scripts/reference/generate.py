#!/usr/bin/env python3
"""Reference fixtures for mimo-core's generation (transformers `generate` and its logits processors).

Writes into mimo-core/fixtures/llm/:
  sampling.safetensors  random `scores` [4, 96] and `input_ids` [4, 10], and the processed scores of
                        transformers' RepetitionPenaltyLogitsProcessor(1.3) `rep`, TemperatureLogitsWarper(0.7)
                        `temp`, TopKLogitsWarper(5) `topk`, TopPLogitsWarper(0.8) `topp`, and the chain in
                        generate's order (repetition penalty, temperature, top-k, top-p) `chain`.
  chat/                 a tiny random LLaMA whose vocabulary is the repository's small tokenizer with MIMO's
                        added tokens (config.json, model.safetensors, tokenizer.json), and io.safetensors:
                        two Vicuna-v1 prompts left-padded (`input_ids`, `attention_mask`), greedy
                        `generated` (12 tokens), greedy with repetition_penalty 1.2 `generated_rep`, and
                        greedy with an EOS id (`eos_id`, the 4th greedy token of row 0) `generated_eos`
                        (pad 0 after a row's EOS, as generate returns it).

Environment: the reference venv plus `pip install transformers tokenizers`.
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/generate.py
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import transformers.generation.logits_process as lp
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures")
OUT = os.path.join(ROOT, "llm")
torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
PROMPTS = ["Where is the liver?", "Please segment the left kidney in this CT image."]


def processors():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(4, 96, generator=gen) * 3
    ids = torch.randint(0, 96, (4, 10), generator=gen)
    rep = lp.RepetitionPenaltyLogitsProcessor(1.3)
    temp = lp.TemperatureLogitsWarper(0.7)
    topk = lp.TopKLogitsWarper(5)
    topp = lp.TopPLogitsWarper(0.8)
    out = {"scores": scores, "input_ids": ids}
    for name, p in [("rep", rep), ("temp", temp), ("topk", topk), ("topp", topp)]:
        out[name] = p(ids, scores.clone())
    s = scores.clone()
    for p in [rep, temp, topk, topp]:
        s = p(ids, s)
    out["chain"] = s
    # -inf is not representable in every reader: store as a mask plus finite values.
    for k in ["rep", "temp", "topk", "topp", "chain"]:
        out[f"{k}_kept"] = torch.isfinite(out[k]).to(torch.uint8)
        out[k] = torch.where(torch.isfinite(out[k]), out[k], torch.zeros_like(out[k]))
    save_file({k: v.contiguous() for k, v in out.items()}, f"{OUT}/sampling.safetensors")


def chat():
    tok = Tokenizer.from_file(f"{ROOT}/tokenizer/tokenizer.json")
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t in ["<p>", "</p>", "<SEG>", "<image>", "<im_start>", "<im_end>"]])
    vocab = tok.get_vocab_size(with_added_tokens=True)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(5)
    for k, t in model.state_dict().items():
        if k.endswith("norm.weight") or "layernorm" in k:
            t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
        else:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.25)
    out_dir = f"{OUT}/chat"
    model.save_pretrained(out_dir)
    tok.save(f"{out_dir}/tokenizer.json")
    rows = [[1] + tok.encode(f"{SYSTEM} USER: {p} ASSISTANT:", add_special_tokens=False).ids for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    greedy = model.generate(**kw, eos_token_id=None)[:, width:]
    rep = model.generate(**kw, eos_token_id=None, repetition_penalty=1.2)[:, width:]
    eos_id = int(greedy[0, 3])
    eos = model.generate(**kw, eos_token_id=eos_id)[:, width:]
    eos = torch.nn.functional.pad(eos, (0, 12 - eos.shape[1]))
    save_file({"input_ids": ids, "attention_mask": mask, "generated": greedy.contiguous(),
               "generated_rep": rep.contiguous(), "generated_eos": eos.contiguous(),
               "eos_id": torch.tensor([eos_id])}, f"{out_dir}/io.safetensors")
    with open(f"{out_dir}/prompts.json", "w") as f:
        json.dump({"system": SYSTEM, "prompts": PROMPTS,
                   "greedy_text": [tok.decode(r.tolist()) for r in greedy]}, f, indent=1)
    print("chat:", greedy.tolist(), rep.tolist(), "eos", eos_id, eos.tolist())


if __name__ == "__main__":
    processors()
    chat()
