#!/usr/bin/env python3
"""DICOM series fixtures for mimo-data, written with pydicom (a real DICOM writer), and what a
reader must recover from them (reference.json):

- series A: a CT volume of 5 single-frame files (24 rows x 20 columns, stored unsigned with
  RescaleIntercept -1024 so values are HU after the modality LUT). File names and
  InstanceNumbers are deliberately out of spatial order: slices must be ordered by
  ImagePositionPatient along the slice normal (ImageOrientationPatient), feet to head.
- series B: one multi-frame MR file (4 frames, 16 x 16, no positions: stored frame order).
- seg/A_seg.dcm: a binary multi-frame DICOM-SEG with two segments (liver, liver tumor) whose
  frames reference series A's instances by SOPInstanceUID; frame bits packed contiguously
  LSB-first, as the standard stores them.
- seg/B_seg.dcm: a DICOM-SEG whose frames reference series B's frames by
  ReferencedFrameNumber.
- RLE: pydicom's MR_small_RLE.dcm (RLE Lossless) must decode to MR_small.dcm's values.
- JPEG: an 8-bit greyscale JPEG baseline image (Pillow-encoded) wrapped in DICOM; reference =
  Pillow's decoding (libjpeg); other decoders may differ by a grey level or two.

Run from the repository root: ~/.cache/mimo-ref-venv/bin/python scripts/reference/dicom_series.py
"""
import io
import json
import os

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

D = os.path.join(os.path.dirname(__file__), "..", "..", "mimo-data", "fixtures", "dicom", "series")
os.makedirs(f"{D}/images/A", exist_ok=True)
os.makedirs(f"{D}/images/B", exist_ok=True)
os.makedirs(f"{D}/seg", exist_ok=True)
rng = np.random.default_rng(7)
CT, MR, SEG = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.66.4"
root = "1.2.826.0.1.3680043.8.498."


def uid(n):
    return f"{root}{n}"


def base(sop_class, sop_uid, series_uid, modality, patient):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(1), series_uid
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, patient
    return ds


def image(ds, arr):
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.astype("<u2").tobytes()


ref = {}
# Series A: CT, 5 slices, positions z = 0, 2.5, ..., 10 (feet to head), files shuffled.
A = uid(10)
H, W = 24, 20
yy, xx = np.mgrid[0:H, 0:W]
hu = []
liver, tumor = [], []
for k in range(5):
    v = -1000 + np.zeros((H, W))
    body = (yy - 12) ** 2 / 100 + (xx - 10) ** 2 / 81 < 1
    v[body] = 40
    lv = ((yy - 11) ** 2 / 36 + (xx - 8) ** 2 / (16 - 2 * abs(k - 2)) < 1) & (k > 0)
    v[lv] = 60
    tm = lv & ((yy - 11) ** 2 + (xx - 8) ** 2 < 4) & (k in (2, 3))
    v[tm] = 20
    v = v + rng.integers(-5, 6, size=(H, W))
    hu.append(v.astype(np.int32))
    liver.append(lv)
    tumor.append(tm)
order = [3, 0, 4, 1, 2]  # file i holds slice order[i]
sop_a = {}
for i, k in enumerate(order):
    s = uid(100 + k)
    sop_a[k] = s
    ds = base(CT, s, A, "CT", "patient-1")
    ds.InstanceNumber = 5 - k  # reversed: sorting must use positions
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-10.0, -12.0, 2.5 * k]
    ds.PixelSpacing = [1.0, 1.0]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    image(ds, hu[k] + 1024)
    ds.save_as(f"{D}/images/A/IM{i:02d}.dcm", enforce_file_format=True)
ref["A"] = {"uid": A, "patient": "patient-1", "modality": "CT", "rows": H, "columns": W,
            "files": [f"IM{order.index(k):02d}.dcm" for k in range(5)],
            "min": [int(h.min()) for h in hu], "max": [int(h.max()) for h in hu],
            "sum": [int(h.sum()) for h in hu],
            "liver": [int(m.sum()) for m in liver], "liver tumor": [int(m.sum()) for m in tumor]}

# Series B: MR, one multi-frame file without positions.
B = uid(20)
mr = rng.integers(0, 800, size=(4, 16, 16)).astype(np.int32)
ds = base(MR, uid(200), B, "MR", "patient-2")
ds.NumberOfFrames = 4
image(ds, mr)
ds.save_as(f"{D}/images/B/multi.dcm", enforce_file_format=True)
kidney = np.zeros((4, 16, 16), bool)
kidney[1, 4:9, 5:12] = True
kidney[2, 5:8, 6:10] = True
ref["B"] = {"uid": B, "patient": "patient-2", "modality": "MR", "rows": 16, "columns": 16,
            "frames": 4, "sum": [int(m.sum()) for m in mr], "kidney": [int(m.sum()) for m in kidney]}


def seg(path, series, frames, labels):
    """frames: list of (mask, segment number, source sop uid, source frame number or None)."""
    ds = base(SEG, uid(60 + len(frames)), uid(30 + len(frames)), "SEG", "x")
    rs = Dataset()
    rs.SeriesInstanceUID = series
    ds.ReferencedSeriesSequence = [rs]
    ds.Rows, ds.Columns = frames[0][0].shape
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.SegmentationType = "BINARY"
    segs = []
    for n, name in enumerate(labels, 1):
        s = Dataset()
        s.SegmentNumber, s.SegmentLabel = n, name
        segs.append(s)
    ds.SegmentSequence = segs
    per = []
    for m, n, sop, fr in frames:
        f = Dataset()
        src = Dataset()
        src.ReferencedSOPInstanceUID = sop
        if fr is not None:
            src.ReferencedFrameNumber = fr
        der = Dataset()
        der.SourceImageSequence = [src]
        f.DerivationImageSequence = [der]
        si = Dataset()
        si.ReferencedSegmentNumber = n
        f.SegmentIdentificationSequence = [si]
        per.append(f)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = pack_bits(np.stack([m for m, *_ in frames]).astype(np.uint8))
    ds.save_as(path, enforce_file_format=True)


# Frames in an order unrelated to the slices; empty frames are not stored.
fa = [(tumor[k], 2, sop_a[k], None) for k in (3, 2)] + [(liver[k], 1, sop_a[k], None) for k in (4, 1, 3, 2)]
seg(f"{D}/seg/A_seg.dcm", A, fa, ["Liver", "Liver tumor"])
seg(f"{D}/seg/B_seg.dcm", B, [(kidney[k], 1, uid(200), k + 1) for k in (2, 1)], ["Kidney"])

# A JPEG baseline greyscale image.
g = (np.add.outer(np.arange(32) * 6, np.arange(24) * 3) % 256).astype(np.uint8)
buf = io.BytesIO()
Image.fromarray(g).save(buf, format="JPEG", quality=90)
ds = base("1.2.840.10008.5.1.4.1.1.7", uid(300), uid(40), "OT", "patient-3")
ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
ds.Rows, ds.Columns = g.shape
ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
ds.PixelData = encapsulate([buf.getvalue()])
ds["PixelData"].VR = "OB"
ds.save_as(f"{D}/jpeg_baseline.dcm", enforce_file_format=True)
dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")).astype(np.int64)
ref["jpeg"] = {"rows": 32, "columns": 24, "sum": int(dec.sum()), "pixels": dec.ravel().tolist()}

with open(f"{D}/reference.json", "w") as f:
    json.dump(ref, f)
print({k: {kk: vv for kk, vv in v.items() if kk != "pixels"} for k, v in ref.items()})
