#!/usr/bin/env python3
"""PyTorch timings of segment_anything for `mimo bench sam --reference`.

Usage: sam_bench.py MODEL OUT.json [RUNS]
  MODEL: vit_b | vit_l | vit_h | path to a tiny config written by sam.py (its .ron is
  read back through the matching entry of sam.CONFIGS).
Measures, with random weights, the image encoder on one [1,3,S,S] input (median of RUNS
after one warm-up) and prompt encoder + mask decoder for one point (5x RUNS), on all CPU
threads, like the Rust side.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import sam as ref  # noqa: E402
from segment_anything import sam_model_registry  # noqa: E402
from timing import median_ms  # noqa: E402

torch.set_grad_enabled(False)
torch.set_num_threads(os.cpu_count())

model, out = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
if model in sam_model_registry:
    sam = sam_model_registry[model](checkpoint=None).eval()
else:
    name = os.path.splitext(os.path.basename(model))[0]
    sam = ref.build(ref.CONFIGS[name])
s = sam.image_encoder.img_size
x = torch.rand(1, 3, s, s)


def timed(f, warmup, n):
    return median_ms(f, n, warmup)


enc = timed(lambda: sam.image_encoder(x), 1, runs)
emb = sam.image_encoder(x)
pe = sam.prompt_encoder.get_dense_pe()
pts = (torch.tensor([[[s / 2, s / 3]]]), torch.tensor([[1]]))


def decode():
    sp, de = sam.prompt_encoder(points=pts, boxes=None, masks=None)
    return sam.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sp,
                            dense_prompt_embeddings=de, multimask_output=False)


dec = timed(decode, 2, runs * 5)
with open(out, "w") as f:
    json.dump({"model": model, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "encoder_ms": enc, "decoder_ms": dec}, f)
print(f"PyTorch {model}: encoder {enc:.1f} ms, decoder {dec:.2f} ms ({torch.get_num_threads()} threads)")
