use super::DatasetConfig;

fn parse(text: &str) -> Result<DatasetConfig, String> {
    mimo_core::config::parse_ron(text)
}

/// A build that produced nothing (a missing input folder) is an error that says why, and
/// writes no records file.
#[test]
fn empty_build_is_an_error() {
    let out = std::env::temp_dir().join(format!("mimo-empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let text = r#"(name: "d", seed: 1, sources: [Folder(name: "f", images: "/nonexistent/images",
            masks: "/nonexistent/masks", modality: "CT", labels: {1: "liver"}, volume_separator: None)],
            perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
            point_share: 0.5, point_mode: Interior)"#;
    let cfg = parse(text).unwrap();
    let e = super::build(&cfg, &out, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no record") && e.contains("/nonexistent/images"),
        "{e}"
    );
    assert!(!out.join("records.jsonl").exists());
    let _ = std::fs::remove_dir_all(&out);
}

/// A 16-bit label map is read as the labels it stores (an AAL-style atlas: 37, 41,
/// 2001), not rescaled to zeros; a colour mask is skipped with a clear reason.
#[test]
fn sixteen_bit_label_maps_keep_their_values() {
    let root = std::env::temp_dir().join(format!("mimo-labels16-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (img, msk) = (root.join("img"), root.join("msk"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&msk).unwrap();
    let (w, h) = (24u32, 16u32);
    for name in ["a", "b"] {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 9 + y * 5) as u8]))
            .save(img.join(format!("{name}.png")))
            .unwrap();
    }
    let labels16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, _| {
        image::Luma([match x {
            0..=7 => 37,
            8..=15 => 41,
            _ => 2001,
        }])
    });
    labels16.save(msk.join("a.png")).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([255, 0, 0]))
        .save(msk.join("b.png"))
        .unwrap();
    let text = format!(
        r#"(name: "d", seed: 1, sources: [Folder(name: "aal", images: "{}", masks: "{}",
            modality: "MR", labels: {{37: "left hippocampus", 41: "left amygdala", 2001: "precentral gyrus"}},
            volume_separator: None)], perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0),
            box_jitter: 0.1, point_share: 0.5, point_mode: Interior)"#,
        img.display(),
        msk.display()
    );
    let cfg = parse(&text).unwrap();
    let out = root.join("out");
    let summary = super::build(&cfg, &out, &mut |_, _, _| {}).unwrap();
    let records: Vec<crate::record::Record> =
        crate::record::read_jsonl(out.join("records.jsonl")).unwrap();
    let labels: std::collections::BTreeSet<&str> = records
        .iter()
        .flat_map(|r| r.masks.iter().map(|m| m.label.as_str()))
        .collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        vec!["left amygdala", "left hippocampus", "precentral gyrus"]
    );
    assert_eq!(summary.skipped.len(), 1, "{:?}", summary.skipped);
    assert!(
        summary.skipped[0].reason.contains("colour image"),
        "{:?}",
        summary.skipped
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Real folder layouts: masks named `<stem>_seg.png`, in their own folder or beside the
/// images (where they are not taken for images).
#[test]
fn mask_suffix_finds_masks_beside_or_apart() {
    let root = std::env::temp_dir().join(format!("mimo-suffix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (apart, beside) = (root.join("apart"), root.join("beside"));
    for d in [apart.join("img"), apart.join("label"), beside.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (w, h) = (20u32, 12u32);
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 11 + y) as u8]));
    let mask = image::GrayImage::from_fn(w, h, |x, _| image::Luma([u8::from(x < 9) * 255]));
    for k in 0..2 {
        img.save(apart.join(format!("img/case_{k:03}.png")))
            .unwrap();
        mask.save(apart.join(format!("label/case_{k:03}_seg.png")))
            .unwrap();
        img.save(beside.join(format!("case_{k:03}.png"))).unwrap();
        mask.save(beside.join(format!("case_{k:03}_seg.png")))
            .unwrap();
    }
    for (name, images, masks) in [
        ("apart", apart.join("img"), apart.join("label")),
        ("beside", beside.clone(), beside.clone()),
    ] {
        let text = format!(
            r#"(name: "d", seed: 1, sources: [Folder(name: "{name}", images: "{}", masks: "{}",
                modality: "CT", labels: {{255: "lesion"}}, mask_suffix: Some("_seg"))],
                perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
                point_share: 0.5, point_mode: Interior)"#,
            images.display(),
            masks.display()
        );
        let cfg = parse(&text).unwrap();
        let out = root.join(format!("out-{name}"));
        let s = super::build(&cfg, &out, &mut |_, _, _| {}).unwrap();
        assert!(s.skipped.is_empty(), "{name}: {:?}", s.skipped);
        assert_eq!(s.images, 2, "{name}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A misspelt field inside a source or the splits is an error naming it: ignoring
/// `volume_seperator` would put slices of one volume into different splits.
#[test]
fn misspelt_source_fields_are_errors() {
    let ok = r#"(name: "d", seed: 1, sources: [Folder(name: "f", images: "i", masks: "m",
            modality: "CT", labels: {1: "liver"}, volume_separator: Some("_z"))],
            perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
            point_share: 0.5, point_mode: Interior)"#;
    assert!(parse(ok).is_ok(), "{:?}", parse(ok).err());
    let bad = ok.replace("volume_separator", "volume_seperator");
    let e = parse(&bad).unwrap_err();
    assert!(e.contains("volume_seperator"), "{e}");
    let bad = ok.replace("test: 0.0", "tset: 0.0");
    let e = parse(&bad).unwrap_err();
    assert!(e.contains("tset"), "{e}");
}
