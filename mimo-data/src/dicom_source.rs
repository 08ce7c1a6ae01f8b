//! DICOM files: images with the modality LUT applied (CT in Hounsfield units, rescale slope
//! and intercept), the file's window when it has one, and 1-bit DICOM-SEG masks (bits
//! unpacked LSB-first, as the standard stores them; the decoder library does not do it).

use std::path::Path;

use dicom_object::{Tag, open_file};
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

/// A binary DICOM-SEG: the first frame's mask and the first segment's label.
pub fn read_dicom_seg(path: &Path) -> Result<(usize, usize, Vec<bool>, String), String> {
    let err = |e: String| format!("{}: {e}", path.display());
    let obj = open_file(path).map_err(|e| err(e.to_string()))?;
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
    let data = obj
        .element(Tag(0x7FE0, 0x0010))
        .map_err(|e| err(e.to_string()))?
        .to_bytes()
        .map_err(|e| err(e.to_string()))?;
    let n = h * w;
    let mask: Vec<bool> = match bits {
        1 => {
            if data.len() * 8 < n {
                return Err(err(format!(
                    "{} bytes of pixel data for {n} one-bit pixels",
                    data.len()
                )));
            }
            (0..n).map(|i| (data[i / 8] >> (i % 8)) & 1 == 1).collect()
        }
        8 => data.iter().take(n).map(|&b| b > 0).collect(),
        b => return Err(err(format!("{b} bits per SEG pixel are not supported"))),
    };
    let label = obj
        .element(Tag(0x0062, 0x0002))
        .ok()
        .and_then(|e| {
            e.items()
                .and_then(|items| items.first().and_then(|it| text(it, Tag(0x0062, 0x0005))))
        })
        .unwrap_or_else(|| "segment".into());
    Ok((h, w, mask, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/dicom")
            .join(name)
    }

    /// pydicom's test files: values after the modality LUT and the SEG mask equal pydicom's.
    #[test]
    fn dicom_images_and_seg_match_pydicom() {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap())
                .unwrap();
        for name in ["CT_small.dcm", "MR_small.dcm"] {
            let want = &r[name];
            let img = read_dicom(&fixture(name)).unwrap();
            assert_eq!(
                (img.height, img.width),
                (
                    want["rows"].as_u64().unwrap() as usize,
                    want["columns"].as_u64().unwrap() as usize
                )
            );
            assert_eq!(img.modality, want["modality"].as_str().unwrap());
            let (mn, mx) = img
                .values
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert_eq!(mn as f64, want["min"].as_f64().unwrap(), "{name} min");
            assert_eq!(mx as f64, want["max"].as_f64().unwrap(), "{name} max");
            let mean = img.values.iter().map(|&v| v as f64).sum::<f64>() / img.values.len() as f64;
            assert!(
                (mean - want["mean"].as_f64().unwrap()).abs() < 1e-6,
                "{name} mean"
            );
            for s in want["samples"].as_array().unwrap() {
                let (y, x) = (
                    s[0].as_u64().unwrap() as usize,
                    s[1].as_u64().unwrap() as usize,
                );
                assert_eq!(
                    img.values[y * img.width + x] as f64,
                    s[2].as_f64().unwrap(),
                    "{name} ({y},{x})"
                );
            }
        }
        let want = &r["liver_1frame.dcm"];
        let (h, w, mask, label) = read_dicom_seg(&fixture("liver_1frame.dcm")).unwrap();
        assert_eq!((h, w), (512, 512));
        assert_eq!(
            mask.iter().filter(|&&m| m).count() as u64,
            want["foreground"].as_u64().unwrap()
        );
        assert_eq!(label, want["label"].as_str().unwrap());
        let first = (0..h)
            .find(|&y| mask[y * w..(y + 1) * w].iter().any(|&m| m))
            .unwrap();
        assert_eq!(
            first as u64,
            want["first_row_with_foreground"].as_u64().unwrap()
        );
        assert!(
            read_dicom_seg(&fixture("CT_small.dcm"))
                .unwrap_err()
                .contains("not a DICOM-SEG")
        );
        assert!(
            read_dicom(Path::new("/nonexistent.dcm"))
                .unwrap_err()
                .contains("/nonexistent.dcm")
        );
    }
}
