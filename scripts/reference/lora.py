#!/usr/bin/env python3
"""Reference fixtures for mimo-core's LoRA (peft) on the tiny `mha` LLaMA of llm.py.

Writes into mimo-core/fixtures/llm/lora/:
  peft_qv/   peft adapter r=4, alpha=8 on q_proj/v_proj (target list), A and B random (B non-zero)
  peft_rs/   rsLoRA r=2, alpha=3 on k_proj/o_proj/down_proj, layers_to_transform=[1]
  peft_re/   r=3, alpha=5, regex target_modules (layer 0 gate_proj and up_proj)
  peft_mts/  r=2, alpha=4 on q_proj/v_proj with modules_to_save=[embed_tokens, lm_head] (their
             trained copies perturbed), as LISA saves them
             each with adapter_config.json + adapter_model.safetensors (peft save_pretrained) and
             io.safetensors: `logits` of the adapted model and `merged_logits` after merge_and_unload
             on the batch of llm/mha/io.safetensors.
  rust/peft_check.json
             when rust/ holds an adapter written by the Rust test (`MIMO_WRITE_FIXTURES=1 cargo test
             -p mimo-core lora_saved_by_rust`): peft loads it, compares every LoRA tensor with the file
             and its logits with rust/rust_logits.safetensors, and records the result.

Environment: the reference venv plus `pip install transformers peft`.
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/lora.py
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-core", "fixtures", "llm")
OUT = os.path.join(ROOT, "lora")
torch.set_grad_enabled(False)

ADAPTERS = {
    "peft_qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "peft_rs": dict(r=2, lora_alpha=3, target_modules=["k_proj", "o_proj", "down_proj"], use_rslora=True,
                    layers_to_transform=[1]),
    "peft_re": dict(r=3, lora_alpha=5, target_modules=r".*layers\.0\.mlp\.(gate|up)_proj"),
    # LISA's layout: adapters plus fully trained token embeddings and LM head.
    "peft_mts": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                     modules_to_save=["embed_tokens", "lm_head"]),
}


def base():
    return LlamaForCausalLM.from_pretrained(f"{ROOT}/mha").eval()


def batch():
    io = load_file(f"{ROOT}/mha/io.safetensors")
    return dict(input_ids=io["input_ids"], attention_mask=io["attention_mask"], position_ids=io["position_ids"])


def main(only=None):
    gen = torch.Generator().manual_seed(1)
    for name, kw in ADAPTERS.items():
        model = get_peft_model(base(), LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", **kw))
        for k, p in model.named_parameters():
            if "lora_" in k:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif "modules_to_save" in k:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        if only and name not in only:
            continue  # the random draws above keep the other adapters' values
        model.eval()
        out_dir = f"{OUT}/{name}"
        model.save_pretrained(out_dir)
        os.remove(f"{out_dir}/README.md")  # peft's model card template
        cfg_path = f"{out_dir}/adapter_config.json"
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["base_model_name_or_path"] = "mimo-core/fixtures/llm/mha"  # not this machine's absolute path
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        logits = model(**batch()).logits
        merged = model.merge_and_unload()(**batch()).logits
        save_file({"logits": logits.contiguous(), "merged_logits": merged.contiguous()}, f"{out_dir}/io.safetensors")
        print(name, sorted(os.listdir(out_dir)), "merge diff", (logits - merged).abs().max().item())

    rust = f"{OUT}/rust"
    if os.path.isfile(f"{rust}/adapter_config.json"):
        model = PeftModel.from_pretrained(base(), rust).eval()
        file = load_file(f"{rust}/adapter_model.safetensors")
        loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
        assert set(loaded) == set(file), (sorted(loaded)[:4], sorted(file)[:4])
        tensor_err = max((loaded[k] - file[k]).abs().max().item() for k in file)
        logits = model(**batch()).logits
        want = load_file(f"{rust}/rust_logits.safetensors")["logits"]
        real = batch()["attention_mask"].bool()  # padding positions attend to nothing: not compared
        err = (logits - want).abs()[real].max().item()
        base_err = (base()(**batch()).logits - want).abs()[real].max().item()
        result = {"peft_version": peft.__version__, "tensors": len(file), "max_abs_tensor_err": tensor_err,
                  "max_abs_logit_err": err, "logit_change_from_base": base_err, "ok": err <= 1e-4 and tensor_err == 0}
        with open(f"{rust}/peft_check.json", "w") as f:
            json.dump(result, f, indent=1)
        print("rust adapter in peft:", result)


if __name__ == "__main__":
    import sys
    # `lora.py peft_mts` rewrites only the named adapters.
    main(set(sys.argv[1:]) or None)
