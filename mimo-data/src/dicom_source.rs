//! DICOM files: images with the modality LUT applied (CT in Hounsfield units, rescale slope
//! and intercept), the file's window when it has one, and 1-bit DICOM-SEG masks (bits
//! unpacked LSB-first, as the standard stores them; the decoder library does not do it).
//!
//! Series: [`scan_series`] groups the files of a folder tree by SeriesInstanceUID (reading
//! headers only), expands multi-frame files into their frames and orders the slices along
//! the slice normal (ImagePositionPatient projected on the cross product of
//! ImageOrientationPatient's row and column directions; InstanceNumber and frame order when
//! positions are missing). [`read_seg`] reads every frame of a DICOM-SEG with the segment it
//! belongs to and the image (SOPInstanceUID, frame number) or position it refers to, so
//! masks land on the right slices whatever order the frames are stored in.
//!
//! Transfer syntaxes: uncompressed, RLE Lossless and JPEG (baseline, extended, lossless) are
//! decoded in pure Rust; JPEG-LS and JPEG 2000 are not (the error names the file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_object::{InMemDicomObject, OpenFileOptions, Tag, open_file};
use dicom_pixeldata::PixelDecoder;

/// A decoded DICOM image (first frame).
#[derive(Debug, Clone)]
pub struct DicomImage {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Values after the modality LUT (HU for CT), row-major.
    pub values: Vec<f32>,
    /// The Modality attribute (CT, MR, SEG, ...).
    pub modality: String,
    /// Window center and width from the file, if present.
    pub window: Option<(f32, f32)>,
}

fn text(obj: &dicom_object::InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element(tag)
        .ok()?
        .to_str()
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads a DICOM image; errors name the file.
pub fn read_dicom(path: &Path) -> Result<DicomImage, String> {
    let err = |e: String| format!("{}: {e}", path.display());
    let obj = open_file(path).map_err(|e| err(e.to_string()))?;
    let pixels = obj.decode_pixel_data().map_err(|e| err(e.to_string()))?;
    let (height, width) = (pixels.rows() as usize, pixels.columns() as usize);
    let all: Vec<f32> = pixels.to_vec::<f32>().map_err(|e| err(e.to_string()))?;
    let spp = pixels.samples_per_pixel() as usize;
    if spp != 1 {
        return Err(err(format!(
            "{spp} samples per pixel: only greyscale DICOM images are read"
        )));
    }
    let values = all.into_iter().take(height * width).collect();
    let first = |tag: Tag| -> Option<f32> {
        let e = obj.element(tag).ok()?;
        e.to_multi_float64().ok()?.first().map(|&v| v as f32)
    };
    let window = match (first(Tag(0x0028, 0x1050)), first(Tag(0x0028, 0x1051))) {
        (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
        _ => None,
    };
    Ok(DicomImage {
        height,
        width,
        values,
        modality: text(&obj, Tag(0x0008, 0x0060)).unwrap_or_default(),
        window,
    })
}

/// A binary DICOM-SEG: the first frame's mask and its segment's label.
pub fn read_dicom_seg(path: &Path) -> Result<(usize, usize, Vec<bool>, String), String> {
    let seg = read_seg(path)?;
    let first = seg
        .frames
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: the SEG has no frames", path.display()))?;
    let label = seg
        .segments
        .get(&first.segment)
        .cloned()
        .unwrap_or_else(|| "segment".into());
    Ok((seg.rows, seg.columns, first.mask, label))
}

/// One frame of a DICOM-SEG.
#[derive(Debug, Clone, PartialEq)]
pub struct SegFrame {
    /// Row-major mask.
    pub mask: Vec<bool>,
    /// The segment number (key of [`SegFile::segments`]).
    pub segment: u16,
    /// The SOPInstanceUID of the image this frame was derived from.
    pub source_sop: Option<String>,
    /// The (1-based) frame of that image, for multi-frame sources.
    pub source_frame: Option<u32>,
    /// The frame's ImagePositionPatient.
    pub position: Option<[f64; 3]>,
}

/// Every frame of a DICOM-SEG.
#[derive(Debug, Clone, PartialEq)]
pub struct SegFile {
    /// The segmented series (ReferencedSeriesSequence), when given.
    pub series: Option<String>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub columns: usize,
    /// Segment number -> label.
    pub segments: BTreeMap<u16, String>,
    /// Frames in stored order.
    pub frames: Vec<SegFrame>,
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.element(tag).ok()?.to_multi_float64().ok()
}

/// The first item of a sequence.
fn item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.element(tag).ok()?.items()?.first()
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.element(tag).ok()?.to_int::<i64>().ok()
}

const POSITION: Tag = Tag(0x0020, 0x0032);
const ORIENTATION: Tag = Tag(0x0020, 0x0037);
const PER_FRAME: Tag = Tag(0x5200, 0x9230);
const SHARED: Tag = Tag(0x5200, 0x9229);
const PLANE_POSITION: Tag = Tag(0x0020, 0x9113);
const PLANE_ORIENTATION: Tag = Tag(0x0020, 0x9116);

fn position3(obj: &InMemDicomObject) -> Option<[f64; 3]> {
    let p = floats(obj, POSITION)?;
    (p.len() == 3).then(|| [p[0], p[1], p[2]])
}

/// Reads every frame of a DICOM-SEG (BINARY: one bit per pixel, packed LSB-first across
/// frames; FRACTIONAL: 8 bits, a pixel counts when at least half the maximum). Errors name
/// the file.
pub fn read_seg(path: &Path) -> Result<SegFile, String> {
    seg_file(path, true)
}

/// A DICOM-SEG's segments and frame references without decoding its pixel data (frame
/// masks are left empty): enough to tell which series and slices it covers.
pub fn read_seg_refs(path: &Path) -> Result<SegFile, String> {
    seg_file(path, false)
}

fn seg_file(path: &Path, pixels: bool) -> Result<SegFile, String> {
    let err = |e: String| format!("{}: {e}", path.display());
    let obj = if pixels {
        open_file(path)
    } else {
        OpenFileOptions::new()
            .read_until(Tag(0x7FE0, 0x0010))
            .open_file(path)
    }
    .map_err(|e| err(e.to_string()))?;
    if text(&obj, Tag(0x0008, 0x0060)).as_deref() != Some("SEG") {
        return Err(err("not a DICOM-SEG (Modality is not SEG)".into()));
    }
    let num = |tag: Tag| -> Result<usize, String> {
        obj.element(tag)
            .map_err(|e| err(e.to_string()))?
            .to_int::<u32>()
            .map(|v| v as usize)
            .map_err(|e| err(e.to_string()))
    };
    let (h, w, bits) = (
        num(Tag(0x0028, 0x0010))?,
        num(Tag(0x0028, 0x0011))?,
        num(Tag(0x0028, 0x0100))?,
    );
    let n_frames = int(&obj, Tag(0x0028, 0x0008)).unwrap_or(1).max(1) as usize;
    let data = if pixels {
        obj.element(Tag(0x7FE0, 0x0010))
            .map_err(|e| err(e.to_string()))?
            .to_bytes()
            .map_err(|e| err(e.to_string()))?
    } else {
        Vec::new().into()
    };
    let n = h * w;
    let need = match bits {
        1 => (n * n_frames).div_ceil(8),
        8 => n * n_frames,
        b => return Err(err(format!("{b} bits per SEG pixel are not supported"))),
    };
    if pixels && data.len() < need {
        return Err(err(format!(
            "{} bytes of pixel data for {n_frames} frame(s) of {w}x{h} at {bits} bit(s)",
            data.len()
        )));
    }
    let max_fraction = int(&obj, Tag(0x0062, 0x000E)).unwrap_or(255).max(1) as f32;
    let mut segments = BTreeMap::new();
    if let Ok(e) = obj.element(Tag(0x0062, 0x0002))
        && let Some(items) = e.items()
    {
        for (i, it) in items.iter().enumerate() {
            let number = int(it, Tag(0x0062, 0x0004)).unwrap_or(i as i64 + 1) as u16;
            let label = text(it, Tag(0x0062, 0x0005)).unwrap_or_else(|| "segment".into());
            segments.insert(number, label);
        }
    }
    let per_frame: &[InMemDicomObject] = obj
        .element(PER_FRAME)
        .ok()
        .and_then(|e| e.items())
        .unwrap_or(&[]);
    let mut frames = Vec::with_capacity(n_frames);
    for f in 0..n_frames {
        let mask: Vec<bool> = if !pixels {
            Vec::new()
        } else if bits == 1 {
            (f * n..(f + 1) * n)
                .map(|i| (data[i / 8] >> (i % 8)) & 1 == 1)
                .collect()
        } else {
            data[f * n..(f + 1) * n]
                .iter()
                .map(|&b| b as f32 >= max_fraction / 2.0)
                .collect()
        };
        let pf = per_frame.get(f);
        let segment = pf
            .and_then(|p| item(p, Tag(0x0062, 0x000A)))
            .and_then(|si| int(si, Tag(0x0062, 0x000B)))
            .unwrap_or(1) as u16;
        let source = pf
            .and_then(|p| item(p, Tag(0x0008, 0x9124)))
            .and_then(|d| item(d, Tag(0x0008, 0x2112)));
        let source_sop = source.and_then(|s| text(s, Tag(0x0008, 0x1155)));
        let source_frame = source
            .and_then(|s| int(s, Tag(0x0008, 0x1160)))
            .map(|v| v as u32);
        let position = pf.and_then(|p| item(p, PLANE_POSITION)).and_then(position3);
        frames.push(SegFrame {
            mask,
            segment,
            source_sop,
            source_frame,
            position,
        });
    }
    let series = item(&obj, Tag(0x0008, 0x1115)).and_then(|r| text(r, Tag(0x0020, 0x000E)));
    Ok(SegFile {
        series,
        rows: h,
        columns: w,
        segments,
        frames,
    })
}

/// A file that could not be used, and why.
pub type Unreadable = (PathBuf, String);

/// A decoded file: its path, pixels and window.
type Decoded = (
    PathBuf,
    dicom_pixeldata::DecodedPixelData<'static>,
    Option<(f32, f32)>,
);

/// One 2D slice of a series: a file and one of its frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRef {
    /// The file.
    pub path: PathBuf,
    /// 0-based frame in the file.
    pub frame: u32,
    /// The file's SOPInstanceUID.
    pub sop: String,
    /// ImagePositionPatient.
    pub position: Option<[f64; 3]>,
    /// InstanceNumber.
    pub instance: Option<i64>,
}

/// The slices of one series, in spatial order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// SeriesInstanceUID.
    pub uid: String,
    /// PatientID (empty when absent).
    pub patient: String,
    /// Modality.
    pub modality: String,
    /// The slice normal (unit), when the orientation is known.
    pub normal: Option<[f64; 3]>,
    /// Slices ordered along the normal (feet to head for axial slices).
    pub slices: Vec<SliceRef>,
}

impl Series {
    /// The index of the slice a SEG frame refers to: by SOPInstanceUID (and frame for
    /// multi-frame images), else by position along the normal (within 1 % of the spacing).
    pub fn slice_of(&self, f: &SegFrame) -> Option<usize> {
        if let Some(sop) = &f.source_sop {
            let hits: Vec<usize> = (0..self.slices.len())
                .filter(|&i| &self.slices[i].sop == sop)
                .collect();
            return match (hits.len(), f.source_frame) {
                (1, _) => Some(hits[0]),
                (_, Some(fr)) => hits.into_iter().find(|&i| self.slices[i].frame + 1 == fr),
                _ => None,
            };
        }
        let (p, nrm) = (f.position?, self.normal?);
        let d = |q: [f64; 3]| (0..3).map(|k| q[k] * nrm[k]).sum::<f64>();
        let zs: Vec<Option<f64>> = self.slices.iter().map(|s| s.position.map(d)).collect();
        let spacing = zs
            .windows(2)
            .filter_map(|w| Some((w[1]? - w[0]?).abs()))
            .fold(f64::INFINITY, f64::min);
        let tol = if spacing.is_finite() {
            spacing * 0.01
        } else {
            1e-3
        };
        let z = d(p);
        zs.iter()
            .position(|q| q.is_some_and(|q| (q - z).abs() <= tol))
    }
}

fn cross(a: &[f64], b: &[f64]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files_under(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// All files under `dir` (recursively), sorted.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v = Vec::new();
    files_under(dir, &mut v).map_err(|e| format!("{}: {e}", dir.display()))?;
    v.sort();
    Ok(v)
}

/// Groups the DICOM images under `dir` (recursively) into series, reading headers only.
/// DICOM-SEG files are left out (they are masks); files that are not DICOM are returned
/// with the reason.
pub fn scan_series(dir: &Path) -> Result<(Vec<Series>, Vec<Unreadable>), String> {
    let mut bad = Vec::new();
    let mut by_uid: BTreeMap<String, Series> = BTreeMap::new();
    for path in list_files(dir)? {
        let obj = match OpenFileOptions::new()
            .read_until(Tag(0x7FE0, 0x0010))
            .open_file(&path)
        {
            Ok(o) => o,
            Err(e) => {
                bad.push((path, format!("not a readable DICOM file: {e}")));
                continue;
            }
        };
        let modality = text(&obj, Tag(0x0008, 0x0060)).unwrap_or_default();
        if modality == "SEG" {
            continue;
        }
        let Some(uid) = text(&obj, Tag(0x0020, 0x000E)) else {
            bad.push((path, "no SeriesInstanceUID".into()));
            continue;
        };
        let sop = text(&obj, Tag(0x0008, 0x0018)).unwrap_or_default();
        let frames = int(&obj, Tag(0x0028, 0x0008)).unwrap_or(1).max(1) as u32;
        let instance = int(&obj, Tag(0x0020, 0x0013));
        let per_frame: &[InMemDicomObject] = obj
            .element(PER_FRAME)
            .ok()
            .and_then(|e| e.items())
            .unwrap_or(&[]);
        let orientation = floats(&obj, ORIENTATION).or_else(|| {
            item(&obj, SHARED)
                .and_then(|s| item(s, PLANE_ORIENTATION))
                .and_then(|o| floats(o, ORIENTATION))
        });
        let normal = orientation.filter(|o| o.len() == 6).map(|o| {
            let c = cross(&o[0..3], &o[3..6]);
            let n = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt().max(1e-12);
            [c[0] / n, c[1] / n, c[2] / n]
        });
        let series = by_uid.entry(uid.clone()).or_insert_with(|| Series {
            uid,
            patient: text(&obj, Tag(0x0010, 0x0020)).unwrap_or_default(),
            modality: modality.clone(),
            normal,
            slices: Vec::new(),
        });
        if series.normal.is_none() {
            series.normal = normal;
        }
        for f in 0..frames {
            let position = if frames > 1 {
                per_frame
                    .get(f as usize)
                    .and_then(|p| item(p, PLANE_POSITION))
                    .and_then(position3)
            } else {
                position3(&obj)
            };
            series.slices.push(SliceRef {
                path: path.clone(),
                frame: f,
                sop: sop.clone(),
                position,
                instance,
            });
        }
    }
    let mut out: Vec<Series> = by_uid.into_values().collect();
    for s in &mut out {
        let along = |sl: &SliceRef| -> Option<f64> {
            let (p, n) = (sl.position?, s.normal?);
            Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
        };
        if s.slices.iter().all(|sl| along(sl).is_some()) {
            let mut keyed: Vec<(f64, SliceRef)> = s
                .slices
                .drain(..)
                .map(|sl| (along(&sl).unwrap_or(0.0), sl))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            s.slices = keyed.into_iter().map(|(_, sl)| sl).collect();
        } else {
            s.slices.sort_by(|a, b| {
                (a.instance, &a.path, a.frame).cmp(&(b.instance, &b.path, b.frame))
            });
        }
    }
    Ok((out, bad))
}

/// The slices of `series` as images (modality LUT applied), each file decoded once.
pub fn read_series(series: &Series) -> Result<Vec<DicomImage>, String> {
    let mut cache: Option<Decoded> = None;
    let mut out = Vec::with_capacity(series.slices.len());
    for sl in &series.slices {
        let err = |e: String| format!("{}: {e}", sl.path.display());
        if cache.as_ref().is_none_or(|(p, _, _)| p != &sl.path) {
            let obj = open_file(&sl.path).map_err(|e| err(e.to_string()))?;
            let pixels = obj
                .decode_pixel_data()
                .map_err(|e| err(e.to_string()))?
                .to_owned();
            if pixels.samples_per_pixel() != 1 {
                return Err(err("only greyscale DICOM images are read".into()));
            }
            let first = |tag: Tag| -> Option<f32> {
                obj.element(tag)
                    .ok()?
                    .to_multi_float64()
                    .ok()?
                    .first()
                    .map(|&v| v as f32)
            };
            let window = match (first(Tag(0x0028, 0x1050)), first(Tag(0x0028, 0x1051))) {
                (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
                _ => None,
            };
            cache = Some((sl.path.clone(), pixels, window));
        }
        let Some((_, pixels, window)) = &cache else {
            unreachable!("filled above")
        };
        let values = pixels
            .to_vec_frame::<f32>(sl.frame)
            .map_err(|e| err(format!("frame {}: {e}", sl.frame)))?;
        out.push(DicomImage {
            height: pixels.rows() as usize,
            width: pixels.columns() as usize,
            values,
            modality: series.modality.clone(),
            window: *window,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
