#!/usr/bin/env python3
"""A small committed excerpt of the MNI ICBM152 2009a template (T1 and the grey-matter
probability map shipped in the nilearn wheel, BSD-3 / MNI licence) and nibabel's reference
slices for mimo-data's NIfTI source.

Writes mimo-data/fixtures/nifti/: mni_t1.nii.gz and mni_gm.nii.gz (a 60x70x6 crop around
axial slice 95, the original affine shifted accordingly; the GM map flipped along x and
saved with a negative x direction to exercise reorientation), and reference.json: for each
axial slice of the RAS-canonical volume, the GM mask area (> 127) and the T1 slice in mimo's
display convention (rows from anterior to posterior, columns from patient right to left).

Needs: pip install nibabel numpy; the nilearn wheel (pip download --no-deps nilearn) unpacked
at $NILEARN (folder holding nilearn/datasets/data/).
Run from the repository root: NILEARN=/tmp/nilearn_whl/x ~/.cache/mimo-ref-venv/bin/python scripts/reference/nifti.py
"""
import json
import os

import nibabel as nib
import numpy as np

SRC = os.path.join(os.environ.get("NILEARN", "."), "nilearn", "datasets", "data")
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-data", "fixtures", "nifti")
os.makedirs(OUT, exist_ok=True)


def crop(name):
    img = nib.load(f"{SRC}/mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")
    x0, y0, z0 = 68, 80, 92
    data = np.asarray(img.dataobj)[x0:x0 + 60, y0:y0 + 70, z0:z0 + 6]
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ [x0, y0, z0] + img.affine[:3, 3]
    return data, aff


t1, aff = crop("t1")
gm, _ = crop("gm")
# store the GM map in LAS order (x flipped) so the reader must reorient it
gm_las = gm[::-1]
aff_las = aff.copy()
aff_las[:3, 0] = -aff[:3, 0]
aff_las[:3, 3] = aff[:3, 3] + aff[:3, 0] * (gm.shape[0] - 1)
for data, a, name in [(t1, aff, "mni_t1"), (gm_las, aff_las, "mni_gm")]:
    img = nib.Nifti1Image(data.astype(np.uint8), a)
    img.set_sform(a, code=1)
    img.set_qform(a, code=1)
    nib.save(img, f"{OUT}/{name}.nii.gz")

ref = {"slices": []}
c_t1 = nib.as_closest_canonical(nib.load(f"{OUT}/mni_t1.nii.gz"))
c_gm = nib.as_closest_canonical(nib.load(f"{OUT}/mni_gm.nii.gz"))
vt, vg = np.asarray(c_t1.dataobj), np.asarray(c_gm.dataobj)
for z in range(vt.shape[2]):
    # Display (radiological): rows from anterior to posterior (y descending), columns from the
    # patient's right to left (x descending: in RAS, +x points to the patient's right).
    t = vt[::-1, ::-1, z].T  # rows: y descending; columns: x descending
    g = vg[::-1, ::-1, z].T
    ref["slices"].append({"z": z, "gm_area": int((g > 127).sum()), "t1": t.astype(int).tolist()})
with open(f"{OUT}/reference.json", "w") as f:
    json.dump(ref, f)
print("wrote", OUT, vt.shape, [s["gm_area"] for s in ref["slices"]])
