#!/usr/bin/env python3
"""PyTorch timing of an HF CLIP vision forward for `mimo bench clip --reference`.

Usage: clip_bench.py CONFIG.ron OUT.json [RUNS]
Reads the few fields it needs from one of our ClipVisionConfig RON files, builds HF's
CLIPVisionModel with random weights and times one full forward (all hidden states) on a
[1,3,S,S] input: median of RUNS after one warm-up, all CPU threads.
"""
import json
import os
import re
import sys

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from timing import median_ms

torch.set_grad_enabled(False)
torch.set_num_threads(os.cpu_count())

path, out = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
text = open(path).read()


def field(name):
    return re.search(rf"\b{name}:\s*([\w.\-]+)", text).group(1)


cfg = CLIPVisionConfig(hidden_size=int(field("hidden_size")), intermediate_size=int(field("intermediate_size")),
                       num_hidden_layers=int(field("num_hidden_layers")),
                       num_attention_heads=int(field("num_attention_heads")), image_size=int(field("image_size")),
                       patch_size=int(field("patch_size")), hidden_act=field("hidden_act"),
                       layer_norm_eps=float(field("layer_norm_eps")))
model = CLIPVisionModel(cfg).eval()
x = torch.rand(1, 3, cfg.image_size, cfg.image_size)
med = median_ms(lambda: model(pixel_values=x, output_hidden_states=True), runs)
with open(out, "w") as f:
    json.dump({"model": path, "torch": torch.__version__, "threads": torch.get_num_threads(), "forward_ms": med}, f)
print(f"PyTorch {path}: forward {med:.2f} ms ({torch.get_num_threads()} threads)")
