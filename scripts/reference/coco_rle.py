#!/usr/bin/env python3
"""COCO RLE reference strings from pycocotools, for mimo-data's rle tests.

Environment: the reference venv (see scripts/reference/sam.py) plus `pip install pycocotools`.
Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/coco_rle.py
"""
import json
import os

import numpy as np
from pycocotools import mask as mask_utils

rng = np.random.default_rng(0)
cases = []
shapes = [(1, 1), (3, 4), (7, 5), (16, 16), (40, 56), (33, 20)]
for i, (h, w) in enumerate(shapes):
    if i == 0:
        m = np.ones((h, w), np.uint8)
    elif i == 1:
        m = np.zeros((h, w), np.uint8)
    elif i == 5:  # long runs: counts above 31 and negative deltas
        m = np.zeros((h, w), np.uint8)
        m[5:30, 2:18] = 1
        m[0, 0] = 1
    else:
        m = (rng.random((h, w)) < 0.35 + 0.1 * i).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(m))
    cases.append(dict(height=h, width=w, mask=m.reshape(-1).tolist(), counts=rle["counts"].decode(),
                      area=int(mask_utils.area(rle))))
out = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-data", "fixtures", "rle.json")
with open(out, "w") as f:
    json.dump(cases, f)
print(out, len(cases))
