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
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
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

fn series_reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("series/reference.json")).unwrap())
        .unwrap()
}

/// pydicom-written series: slices ordered by position (not file name or InstanceNumber),
/// multi-frame files expanded, SEG frames placed on their slices by SOP/frame reference.
#[test]
fn series_are_grouped_ordered_and_segs_placed() {
    let r = series_reference();
    let (series, bad) = scan_series(&fixture("series/images")).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(series.len(), 2);
    let a = series.iter().find(|s| s.uid == r["A"]["uid"]).unwrap();
    assert_eq!(
        (a.patient.as_str(), a.modality.as_str()),
        ("patient-1", "CT")
    );
    assert_eq!(a.normal, Some([0.0, 0.0, 1.0]));
    let files: Vec<String> = a
        .slices
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(serde_json::json!(files), r["A"]["files"]);
    let imgs = read_series(a).unwrap();
    for (k, img) in imgs.iter().enumerate() {
        let sum: f64 = img.values.iter().map(|&v| v as f64).sum();
        assert_eq!(sum, r["A"]["sum"][k].as_f64().unwrap(), "slice {k}");
        assert_eq!(img.window, Some((40.0, 400.0)));
    }
    let seg = read_seg(&fixture("series/seg/A_seg.dcm")).unwrap();
    assert_eq!(seg.series.as_deref(), a.uid.as_str().into());
    // The header-only read gives the same references, without masks.
    let refs = read_seg_refs(&fixture("series/seg/A_seg.dcm")).unwrap();
    assert_eq!(
        (refs.series.as_ref(), &refs.segments),
        (seg.series.as_ref(), &seg.segments)
    );
    for (r, f) in refs.frames.iter().zip(&seg.frames) {
        assert!(r.mask.is_empty());
        assert_eq!((&r.source_sop, r.segment), (&f.source_sop, f.segment));
    }
    assert_eq!(seg.segments[&1], "Liver");
    assert_eq!(seg.segments[&2], "Liver tumor");
    let mut areas = [[0usize; 5]; 2];
    for f in &seg.frames {
        let k = a.slice_of(f).expect("every frame refers to a slice");
        areas[f.segment as usize - 1][k] += f.mask.iter().filter(|&&b| b).count();
    }
    for (i, name) in ["liver", "liver tumor"].iter().enumerate() {
        assert_eq!(serde_json::json!(areas[i]), r["A"][name], "{name}");
    }
    let b = series.iter().find(|s| s.uid == r["B"]["uid"]).unwrap();
    assert_eq!(b.slices.len(), 4);
    assert_eq!(
        b.slices.iter().map(|s| s.frame).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let imgs = read_series(b).unwrap();
    for (k, img) in imgs.iter().enumerate() {
        let sum: f64 = img.values.iter().map(|&v| v as f64).sum();
        assert_eq!(sum, r["B"]["sum"][k].as_f64().unwrap(), "frame {k}");
    }
    let seg = read_seg(&fixture("series/seg/B_seg.dcm")).unwrap();
    let mut kidney = [0usize; 4];
    for f in &seg.frames {
        kidney[b.slice_of(f).unwrap()] += f.mask.iter().filter(|&&m| m).count();
    }
    assert_eq!(serde_json::json!(kidney), r["B"]["kidney"]);
}

/// RLE Lossless decodes to the uncompressed file's values; JPEG baseline within one grey
/// level of libjpeg (Pillow): the two IDCTs round differently.
#[test]
fn compressed_transfer_syntaxes_decode() {
    let raw = read_dicom(&fixture("MR_small.dcm")).unwrap();
    let rle = read_dicom(&fixture("MR_small_RLE.dcm")).unwrap();
    assert_eq!(raw.values, rle.values);
    let r = series_reference();
    let jpeg = read_dicom(&fixture("series/jpeg_baseline.dcm")).unwrap();
    let want: Vec<f64> = r["jpeg"]["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!((jpeg.height, jpeg.width), (32, 24));
    let max = jpeg
        .values
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    eprintln!("JPEG baseline vs libjpeg: max grey-level difference {max}");
    assert!(max <= 1.0, "max grey-level difference {max}");
}
