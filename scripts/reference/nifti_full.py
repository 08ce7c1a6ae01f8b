#!/usr/bin/env python3
"""Reference values for the full MNI ICBM152 2009a template in the nilearn wheel (not
committed: 197x233x189 volumes), used by mimo-data's `full_mni_template_when_present` test
when $MIMO_NILEARN_DATA points at nilearn/datasets/data/.

Writes mimo-data/fixtures/nifti/full_reference.json: the shape of the RAS-canonical volumes
and, for each axial slice (inferior to superior), the grey-matter area (probability map
> 127) and the sum of the T1 values.

Run from the repository root:
  NILEARN=/tmp/nilearn_whl/x ~/.cache/mimo-ref-venv/bin/python scripts/reference/nifti_full.py
"""
import json
import os

import nibabel as nib
import numpy as np

SRC = os.path.join(os.environ.get("NILEARN", "."), "nilearn", "datasets", "data")
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-data", "fixtures", "nifti")


def canonical(name):
    img = nib.as_closest_canonical(nib.load(f"{SRC}/mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"))
    return np.asarray(img.get_fdata(dtype=np.float64))


t1, gm = canonical("t1"), canonical("gm")
ref = {"shape": list(t1.shape),
       "gm_area": [int((gm[:, :, z] > 127).sum()) for z in range(gm.shape[2])],
       "t1_sum": [float(t1[:, :, z].sum()) for z in range(t1.shape[2])]}
with open(f"{OUT}/full_reference.json", "w") as f:
    json.dump(ref, f)
print(ref["shape"], sum(a > 0 for a in ref["gm_area"]), "slices with grey matter")
