use super::*;
use crate::phantom::{Style, phantom};
use crate::record::{PromptKind, read_jsonl};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mimo-build-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn phantoms(count: usize) -> DatasetConfig {
    DatasetConfig {
        name: "t".into(),
        seed: 5,
        sources: vec![
            Source::Phantom {
                name: "ct".into(),
                style: Style::Ct,
                count,
                size: 48,
                volumes: 6,
            },
            Source::Phantom {
                name: "fundus".into(),
                style: Style::Fundus,
                count: 4,
                size: 32,
                volumes: 2,
            },
        ],
        perspectives: vec![Perspective::P1, Perspective::P2],
        splits: Splits::default(),
        box_jitter: 0.1,
        point_share: 0.5,
        point_mode: PointMode::Interior,
        knowledge: None,
        qa_endpoint: None,
        workers: None,
    }
}

#[test]
fn phantom_build_is_deterministic_resumable_and_split_by_volume() {
    let out = tmp("det");
    let cfg = phantoms(24);
    let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert_eq!(s.images, 28);
    assert_eq!(s.records["P1"], 28);
    assert_eq!(s.records["P2"], 28);
    assert!(s.skipped.is_empty());
    assert!(
        s.splits.len() >= 2,
        "every volume in one split: {:?}",
        s.splits
    );
    let first = std::fs::read(out.join("records.jsonl")).unwrap();
    // An interrupted build (records not yet written, some images missing) rerun gives the
    // same records.
    std::fs::remove_file(out.join("records.jsonl")).unwrap();
    std::fs::remove_file(out.join("images/ct/000003.png")).unwrap();
    let again = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert_eq!(again.reused_images, 27);
    assert_eq!(std::fs::read(out.join("records.jsonl")).unwrap(), first);
    // A fresh directory gives byte-identical output, whatever the number of workers.
    let out2 = tmp("det2");
    let one = DatasetConfig {
        workers: Some(1),
        ..cfg.clone()
    };
    build(&one, &out2, &mut |_, _, _| {}).unwrap();
    assert_eq!(std::fs::read(out2.join("records.jsonl")).unwrap(), first);
    let out2 = tmp("det3");
    let three = DatasetConfig {
        workers: Some(3),
        ..cfg.clone()
    };
    build(&three, &out2, &mut |_, _, _| {}).unwrap();
    assert_eq!(std::fs::read(out2.join("records.jsonl")).unwrap(), first);
    assert_eq!(
        std::fs::read(out.join("images/fundus/000001.png")).unwrap(),
        std::fs::read(out2.join("images/fundus/000001.png")).unwrap()
    );

    let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
    // No volume in two splits.
    let mut split_of_volume: BTreeMap<&str, Split> = BTreeMap::new();
    for r in &records {
        let prev = split_of_volume.insert(&r.volume, r.split);
        assert!(
            prev.is_none() || prev == Some(r.split),
            "volume {} in two splits",
            r.volume
        );
    }
    for r in &records {
        let answer = r.answer().unwrap();
        assert_eq!(answer.matches("<SEG>").count(), r.masks.len(), "{}", r.id);
        for (m, phrase) in r.masks.iter().zip(answer.split("<p>").skip(1)) {
            assert!(
                phrase.starts_with(&format!("{}</p><SEG>", m.label)),
                "{answer}"
            );
        }
        if r.perspective == Perspective::P2 {
            let mask = r.masks[0].rle.decode().unwrap();
            let [h, w] = r.size.unwrap();
            let p = &r.prompts[0];
            match p.kind {
                PromptKind::Point => assert!(mask[p.coords[1] as usize * w + p.coords[0] as usize]),
                _ => {
                    let [x0, y0, x1, y1] = crate::prompts::bbox(&mask, h, w).unwrap();
                    assert!(p.coords[0] <= x0 as f64 && p.coords[1] <= y0 as f64);
                    assert!(p.coords[2] >= x1 as f64 && p.coords[3] >= y1 as f64);
                }
            }
        }
    }
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&out2).ok();
}

#[test]
fn all_four_perspectives_with_offline_qa() {
    let out = tmp("p34");
    let mut cfg = phantoms(6);
    cfg.perspectives = vec![
        Perspective::P1,
        Perspective::P2,
        Perspective::P3,
        Perspective::P4,
    ];
    let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    assert_eq!((s.records["P3"], s.records["P4"]), (10, 10));
    let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
    for r in records
        .iter()
        .filter(|r| matches!(r.perspective, Perspective::P3 | Perspective::P4))
    {
        let labels: Vec<String> = r.masks.iter().map(|m| m.label.clone()).collect();
        crate::qa::validate_answer(r.answer().unwrap(), &labels).unwrap();
        assert_eq!(
            r.prompts.len(),
            usize::from(r.perspective == Perspective::P4),
            "{}",
            r.id
        );
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn ratio_subsets_are_nested_and_keep_volumes_whole() {
    let out = tmp("ratio");
    build(&phantoms(40), &out, &mut |_, _, _| {}).unwrap();
    let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
    let subset =
        |r: f64| -> Vec<&Record> { records.iter().filter(|x| in_ratio(x, r, 5)).collect() };
    let (a, b, c, d) = (subset(0.25), subset(0.5), subset(0.75), subset(1.0));
    assert_eq!(d.len(), records.len());
    assert!(a.len() <= b.len() && b.len() <= c.len() && c.len() <= d.len());
    for (small, big) in [(&a, &b), (&b, &c), (&c, &d)] {
        for r in small.iter() {
            assert!(big.iter().any(|x| x.id == r.id), "not nested");
        }
    }
    for r in &records {
        let same_volume = records
            .iter()
            .filter(|x| x.volume == r.volume && x.source == r.source);
        for x in same_volume {
            assert_eq!(in_ratio(x, 0.5, 5), in_ratio(r, 0.5, 5));
        }
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn folder_source_reads_real_slices_and_reports_bad_files() {
    let root = tmp("folder");
    let (img, msk) = (root.join("images"), root.join("masks"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&msk).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples");
    std::fs::copy(samples.join("mni152_t1_z95.png"), img.join("mni_z95.png")).unwrap();
    std::fs::copy(
        samples.join("mni152_t1_z95_brain.png"),
        msk.join("mni_z95.png"),
    )
    .unwrap();
    std::fs::write(img.join("broken.png"), b"\x89PNG not really").unwrap();
    std::fs::write(msk.join("broken.png"), b"x").unwrap();
    std::fs::copy(samples.join("mni152_t1_z95.png"), img.join("nomask.png")).unwrap();
    let cfg = DatasetConfig {
        sources: vec![Source::Folder {
            name: "mni".into(),
            images: img.clone(),
            masks: msk.clone(),
            modality: "MR".into(),
            labels: BTreeMap::from([(255, "brain".to_string())]),
            volume_separator: Some("_".into()),
            mask_suffix: None,
        }],
        ..phantoms(1)
    };
    let out = root.join("out");
    let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert_eq!(s.images, 1);
    assert_eq!(s.skipped.len(), 2, "{:?}", s.skipped);
    assert!(
        s.skipped
            .iter()
            .any(|k| k.path.ends_with("broken.png") && k.reason.contains("cannot read image"))
    );
    assert!(
        s.skipped
            .iter()
            .any(|k| k.path.ends_with("nomask.png") && k.reason.contains("no mask"))
    );
    let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
    assert_eq!(records[0].size, Some([233, 197]));
    assert_eq!(records[0].volume, "mni/mni");
    let area = records[0].masks[0].rle.area().unwrap();
    assert!(area > 10_000, "brain mask area {area}");
    std::fs::remove_dir_all(&root).ok();
}

/// The committed MNI ICBM152 excerpt (T1 + grey-matter probability map) through the NIfTI
/// source: every slice has grey matter, the masks equal nibabel's thresholded map.
/// Synthetic CT volumes written as NIfTI (the benchmark's input) come back slice by slice
/// with the phantoms' structures.
#[test]
fn synthetic_ct_volumes_round_trip_through_the_nifti_source() {
    let root = tmp("synthetic-nifti");
    let labels = crate::phantom::write_ct_volumes(&root, 2, 40, 3, 9).unwrap();
    let cfg = DatasetConfig {
        sources: vec![Source::Nifti {
            name: "ct".into(),
            images: root.join("images"),
            masks: root.join("masks"),
            modality: "CT".into(),
            labels: labels.clone(),
            threshold: None,
            axis: crate::nifti_source::SliceAxis::Axial,
            intensity: crate::nifti_source::Intensity::CtAbdomen,
            empty_share: 0.0,
        }],
        ..phantoms(1)
    };
    let s = build(&cfg, &root.join("out"), &mut |_, _, _| {}).unwrap();
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    assert_eq!(s.images, 6);
    let recs = read_jsonl::<Record>(&root.join("out/records.jsonl")).unwrap();
    for v in 0..2 {
        for z in 0..3 {
            let p = phantom(Style::Ct, 40, 9, (v * 3 + z) as u64);
            let union =
                |ms: Vec<Vec<bool>>| (0..40 * 40).filter(|&i| ms.iter().any(|m| m[i])).count();
            let want = union(p.masks.iter().map(|(_, m)| m.clone()).collect());
            let rec = recs
                .iter()
                .find(|r| r.id == format!("ct/vol{v:03}_{z:04}/P1"))
                .unwrap();
            let got = union(rec.masks.iter().map(|m| m.rle.decode().unwrap()).collect());
            assert_eq!(got, want, "volume {v} slice {z}");
            assert_eq!(rec.volume, format!("ct/vol{v:03}"));
        }
    }
}

/// The full MNI template from the nilearn wheel, when `MIMO_NILEARN_DATA` names its
/// `nilearn/datasets/data/` folder: the reoriented volumes equal nibabel's canonical ones
/// slice by slice (T1 sums, grey-matter areas), and the builder makes one sample per slice
/// with grey matter.
#[test]
fn full_mni_template_when_present() {
    let Some(dir) = std::env::var_os("MIMO_NILEARN_DATA").map(PathBuf::from) else {
        eprintln!("MIMO_NILEARN_DATA not set: full MNI template check skipped");
        return;
    };
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nifti/full_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let file = |k: &str| dir.join(format!("mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"));
    let t1 = crate::nifti_source::read_volume(&file("t1")).unwrap();
    let gm = crate::nifti_source::read_volume(&file("gm")).unwrap();
    assert_eq!(serde_json::json!(t1.dims), r["shape"]);
    let [nx, ny, nz] = t1.dims;
    let plane = nx * ny;
    let mut with_gm = 0;
    for z in 0..nz {
        let sum: f64 = t1.data[z * plane..(z + 1) * plane]
            .iter()
            .map(|&v| v as f64)
            .sum();
        let want = r["t1_sum"][z].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-6 * want.abs().max(1.0),
            "T1 slice {z}: {sum} vs {want}"
        );
        let area = gm.data[z * plane..(z + 1) * plane]
            .iter()
            .filter(|&&v| v > 127.0)
            .count();
        assert_eq!(
            area as u64,
            r["gm_area"][z].as_u64().unwrap(),
            "GM slice {z}"
        );
        with_gm += usize::from(area > 0);
    }
    let root = tmp("nifti-full");
    for sub in ["vol", "lab"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(file("t1"), root.join("vol/mni.nii.gz")).unwrap();
    std::fs::copy(file("gm"), root.join("lab/mni.nii.gz")).unwrap();
    let cfg = DatasetConfig {
        sources: vec![Source::Nifti {
            name: "mni".into(),
            images: root.join("vol"),
            masks: root.join("lab"),
            modality: "MR".into(),
            labels: BTreeMap::from([(1, "grey matter".to_string())]),
            threshold: Some(127.0),
            axis: crate::nifti_source::SliceAxis::Axial,
            intensity: crate::nifti_source::Intensity::Percentile(0.5, 99.5),
            empty_share: 0.0,
        }],
        ..phantoms(1)
    };
    let s = build(&cfg, &root.join("out"), &mut |_, _, _| {}).unwrap();
    assert_eq!(s.images, with_gm);
    eprintln!(
        "full MNI template: {nx}x{ny}x{nz}, {with_gm} slices with grey matter, equal to nibabel"
    );
}

#[test]
fn nifti_source_slices_the_mni_template() {
    let root = tmp("nifti");
    let (img, msk) = (root.join("vol"), root.join("lab"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&msk).unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nifti");
    std::fs::copy(fx.join("mni_t1.nii.gz"), img.join("mni.nii.gz")).unwrap();
    std::fs::copy(fx.join("mni_gm.nii.gz"), msk.join("mni.nii.gz")).unwrap();
    std::fs::copy(fx.join("mni_t1.nii.gz"), img.join("unlabelled.nii.gz")).unwrap();
    let cfg = DatasetConfig {
        sources: vec![Source::Nifti {
            name: "mni".into(),
            images: img,
            masks: msk,
            modality: "MR".into(),
            labels: BTreeMap::from([(1, "grey matter".to_string())]),
            threshold: Some(127.0),
            axis: crate::nifti_source::SliceAxis::Axial,
            intensity: crate::nifti_source::Intensity::Percentile(0.5, 99.5),
            empty_share: 0.0,
        }],
        ..phantoms(1)
    };
    let out = root.join("out");
    let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert_eq!(s.images, 6);
    assert_eq!(s.skipped.len(), 1);
    assert!(
        s.skipped[0].reason.contains("no label volume"),
        "{:?}",
        s.skipped
    );
    let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let p1: Vec<&Record> = records
        .iter()
        .filter(|r| r.perspective == Perspective::P1)
        .collect();
    assert_eq!(p1.len(), 6);
    for (r, want) in p1.iter().zip(refs["slices"].as_array().unwrap()) {
        assert_eq!(r.size, Some([70, 60]));
        assert_eq!(
            r.masks[0].rle.area().unwrap(),
            want["gm_area"].as_u64().unwrap(),
            "{}",
            r.id
        );
        assert_eq!(r.volume, "mni/mni");
    }
    // A threshold no voxel passes: every slice is empty; with empty_share 1 they become
    // negative Perspective I samples (no masks, no <SEG>), and no other perspective.
    let mut neg = cfg.clone();
    if let Source::Nifti {
        threshold,
        empty_share,
        ..
    } = &mut neg.sources[0]
    {
        *threshold = Some(255.0);
        *empty_share = 1.0;
    }
    let out2 = root.join("out2");
    let s = build(&neg, &out2, &mut |_, _, _| {}).unwrap();
    assert_eq!(s.records.get("P1"), Some(&6));
    assert_eq!(s.records.get("P2"), None);
    let records: Vec<Record> = read_jsonl(out2.join("records.jsonl")).unwrap();
    assert!(records.iter().all(
        |r| r.masks.is_empty() && r.answer().unwrap().contains("does not include grey matter")
    ));
    std::fs::remove_dir_all(&root).ok();
}

/// A DICOM CT image with a PNG label mask, and a DICOM-SEG mask whose size does not fit
/// its image is reported, not used.
/// A CT series of shuffled single-frame files and a multi-frame MR file, with SEGs whose
/// frames are stored out of order: masks land on the right slices, empty slices become
/// negatives, patients are split units.
#[test]
fn dicom_series_source_places_seg_frames_on_their_slices() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom/series");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let out = tmp("series");
    let mut cfg = phantoms(1);
    cfg.sources = vec![Source::DicomSeries {
        name: "tcia".into(),
        images: fx.join("images"),
        masks: fx.join("seg"),
        rename: [("kidney".to_string(), "left kidney".to_string())].into(),
        intensity: None,
        empty_share: 1.0,
    }];
    cfg.perspectives = vec![Perspective::P1];
    let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    assert_eq!(s.images, 9);
    let recs = read_jsonl::<Record>(&out.join("records.jsonl")).unwrap();
    let a_uid = r["A"]["uid"].as_str().unwrap();
    for k in 0..5 {
        let rec = recs
            .iter()
            .find(|x| x.id == format!("tcia/{a_uid}_{k:04}/P1"))
            .unwrap();
        assert_eq!(rec.volume, "tcia/patient-1");
        assert_eq!(rec.modality, "CT");
        for (name, want) in [
            ("liver", &r["A"]["liver"]),
            ("liver tumor", &r["A"]["liver tumor"]),
        ] {
            let area = rec.masks.iter().find(|m| m.label == name).map_or(0, |m| {
                m.rle.decode().unwrap().iter().filter(|&&b| b).count()
            });
            assert_eq!(area as u64, want[k].as_u64().unwrap(), "slice {k} {name}");
        }
        if k == 0 {
            assert!(
                rec.answer().unwrap().contains("does not include"),
                "{rec:?}"
            );
        } else {
            assert_eq!(
                rec.masks[0].label, "liver",
                "mask order follows segment numbers"
            );
        }
    }
    let b_uid = r["B"]["uid"].as_str().unwrap();
    let kidney: Vec<u64> = (0..4)
        .map(|k| {
            let rec = recs
                .iter()
                .find(|x| x.id == format!("tcia/{b_uid}_{k:04}/P1"))
                .unwrap();
            assert_eq!(rec.modality, "MR");
            rec.masks
                .iter()
                .filter(|m| m.label == "left kidney")
                .map(|m| m.rle.decode().unwrap().iter().filter(|&&b| b).count() as u64)
                .sum()
        })
        .collect();
    assert_eq!(serde_json::json!(kidney), r["B"]["kidney"]);
    // A SEG that refers to no series is reported by name.
    let lone = tmp("series-lone");
    std::fs::copy(fx.join("seg/B_seg.dcm"), lone.join("B_seg.dcm")).unwrap();
    cfg.sources = vec![Source::DicomSeries {
        name: "tcia".into(),
        images: fx.join("images/A"),
        masks: lone.clone(),
        rename: BTreeMap::new(),
        intensity: None,
        empty_share: 0.0,
    }];
    // Series A has no mask here, so nothing is built: the error carries the report.
    let skipped = match build(&cfg, &tmp("series-out2"), &mut |_, _, _| {}) {
        Err(BuildError::Empty { skipped }) => skipped,
        other => panic!("expected an empty build, got {other:?}"),
    };
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].path.ends_with("B_seg.dcm"));
    assert!(skipped[0].reason.contains("no series"));
}

#[test]
fn dicom_source_reads_ct_and_reports_mismatched_seg() {
    let root = tmp("dicom");
    let (img, msk) = (root.join("img"), root.join("msk"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&msk).unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
    std::fs::copy(fx.join("CT_small.dcm"), img.join("ct.dcm")).unwrap();
    std::fs::copy(fx.join("CT_small.dcm"), img.join("seg.dcm")).unwrap();
    std::fs::copy(fx.join("liver_1frame.dcm"), msk.join("seg.dcm")).unwrap();
    let mut m = image::GrayImage::new(128, 128);
    for y in 40..90 {
        for x in 30..100 {
            m.put_pixel(x, y, image::Luma([1]));
        }
    }
    m.save(msk.join("ct.png")).unwrap();
    let cfg = DatasetConfig {
        sources: vec![Source::Dicom {
            name: "ct".into(),
            images: img,
            masks: msk,
            labels: BTreeMap::from([(1, "liver".to_string())]),
            intensity: Some(crate::nifti_source::Intensity::CtAbdomen),
            volume_separator: None,
        }],
        ..phantoms(1)
    };
    let out = root.join("out");
    let s = build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    assert_eq!(s.images, 1);
    assert_eq!(s.skipped.len(), 1);
    assert!(
        s.skipped[0].reason.contains("SEG") && s.skipped[0].reason.contains("512x512"),
        "{:?}",
        s.skipped
    );
    let records: Vec<Record> = read_jsonl(out.join("records.jsonl")).unwrap();
    assert_eq!(records[0].modality, "CT");
    assert_eq!(records[0].masks[0].rle.area().unwrap(), 50 * 70);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_configs_name_the_field() {
    let mut c = phantoms(1);
    c.splits.train = 0.9;
    assert!(c.validate().unwrap_err().contains("splits"));
    let mut c = phantoms(1);
    c.perspectives.push(Perspective::Vqa);
    assert!(c.validate().unwrap_err().contains("perspectives"));
    let text = "(name: \"x\", seed: 1, sources: [], bogus: 3)";
    let dir = tmp("badcfg");
    std::fs::write(dir.join("d.ron"), text).unwrap();
    let e = DatasetConfig::load(&dir.join("d.ron"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus") && e.contains("d.ron"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
