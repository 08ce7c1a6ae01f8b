#!/usr/bin/env python3
"""PyTorch timings of the tiny MIMO statement (mimo.py) for `mimo bench mimo --reference`.

Usage: mimo_bench.py OUT.json [RUNS] [decoder_layers]
Builds the same tiny model and batch as mimo.py (same seeds, so the same weights and inputs
as mimo-core/fixtures/mimo) and times, on all CPU threads like the Rust side, the training
forward (CE + mask losses), forward + backward, and a whole training step (forward +
backward + AdamW over the trainable parameters, LISA's betas, as `mimo bench mimo` steps) of the
aligner variant: median of RUNS after one warm-up. The forward runs without autograd, as the Rust
figure runs on the inner (non-autodiff) backend. With `decoder_layers`, the LLM recomputes each
decoder layer in the backward (transformers' gradient checkpointing, as LISA's DeepSpeed runs
enable it), what `mimo bench mimo --checkpointing decoder_layers` times.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import mimo as ref  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from timing import median_ms  # noqa: E402

out_path = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.set_num_threads(os.cpu_count())

gen = torch.Generator().manual_seed(20240611)
tok = Tokenizer.from_file(f"{ref.FIX}/llm/chat/tokenizer.json")
clip, sam, llm = ref.load_clip(), ref.load_sam(), ref.load_llm(gen)
new = ref.NewModules().eval()
ref.init_new(new, sam, gen)
models = (clip, sam, llm, new)
batch = ref.make_batch(tok, gen)
checkpointing = len(sys.argv) > 3 and sys.argv[3] == "decoder_layers"
if checkpointing:
    inner = llm.base_model.model  # the LlamaForCausalLM under peft
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # transformers checkpoints only in training mode; the tiny LLM has no dropout, so the
    # values are those of eval mode.
    inner.model.train()
    assert inner.model.gradient_checkpointing and inner.model.training


def loss():
    return ref.mimo_forward(models, batch, batch["prompt_labels"], True)["loss"].sum()


def forward():
    with torch.no_grad():  # like the Rust forward figure: no autodiff
        loss()


def forward_backward():
    ref.zero_grads(models)
    loss().backward()


trainable = [p for m in models for p in m.parameters() if p.requires_grad]
optim = torch.optim.AdamW(trainable, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)


def step():
    optim.zero_grad(set_to_none=True)
    loss().backward()
    optim.step()


def timed(f):
    return median_ms(f, runs)


result = {"forward_ms": timed(forward), "forward_backward_ms": timed(forward_backward),
          "step_ms": timed(step),
          "threads": torch.get_num_threads(), "torch": torch.__version__,
          "decoder_layers_recomputed": checkpointing}
with open(out_path, "w") as f:
    json.dump(result, f, indent=1)
print(json.dumps(result))
