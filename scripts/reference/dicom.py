#!/usr/bin/env python3
"""pydicom reference values for mimo-data's DICOM reader, on pydicom's own test files (MIT),
copied to mimo-data/fixtures/dicom/: CT_small.dcm, MR_small.dcm and liver_1frame.dcm (a 1-bit
DICOM-SEG). Writes reference.json: size, modality, rescaled (modality-LUT) pixel statistics and
a few pixel values, and the SEG frame's foreground count and segment label.

Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/dicom.py  (pip install pydicom numpy)
"""
import json
import os

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

D = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-data", "fixtures", "dicom")
out = {}
for name in ["CT_small.dcm", "MR_small.dcm"]:
    ds = pydicom.dcmread(f"{D}/{name}")
    a = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    out[name] = {"rows": int(ds.Rows), "columns": int(ds.Columns), "modality": ds.Modality,
                 "min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()),
                 "samples": [[int(r), int(c), float(a[r, c])] for r, c in [(0, 0), (10, 20), (64, 64), (100, 37)]
                             if r < a.shape[0] and c < a.shape[1]]}
ds = pydicom.dcmread(f"{D}/liver_1frame.dcm")
seg = ds.pixel_array
out["liver_1frame.dcm"] = {"rows": int(ds.Rows), "columns": int(ds.Columns), "modality": ds.Modality,
                           "foreground": int(np.count_nonzero(seg)),
                           "label": str(ds.SegmentSequence[0].SegmentLabel),
                           "first_row_with_foreground": int(np.argmax(seg.reshape(seg.shape[-2], -1).any(axis=1)))}
with open(f"{D}/reference.json", "w") as f:
    json.dump(out, f, indent=1)
print(json.dumps(out, indent=1)[:800])
