use super::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/nifti")
        .join(name)
}

/// The committed MNI ICBM152 excerpt: slices equal nibabel's RAS-canonical slices in the
/// display convention, for a volume stored RAS (T1) and one stored LAS (GM map).
#[test]
fn mni_excerpt_matches_nibabel() {
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let t1 = read_volume(&fixture("mni_t1.nii.gz")).unwrap();
    let gm = read_volume(&fixture("mni_gm.nii.gz")).unwrap();
    assert_eq!(t1.dims, [60, 70, 6]);
    assert_eq!(gm.dims, t1.dims);
    for s in refs["slices"].as_array().unwrap() {
        let z = s["z"].as_u64().unwrap() as usize;
        let (h, w, v) = t1.slice(SliceAxis::Axial, z);
        assert_eq!((h, w), (70, 60));
        let want: Vec<f32> = s["t1"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(v, want, "T1 slice {z}");
        let (_, _, g) = gm.slice(SliceAxis::Axial, z);
        let area = g.iter().filter(|&&x| x > 127.0).count() as u64;
        assert_eq!(area, s["gm_area"].as_u64().unwrap(), "GM area of slice {z}");
        // and the flipped GM map lines up with the T1: grey matter is not dark background
        let mean_t1_in_gm: f32 = v
            .iter()
            .zip(&g)
            .filter(|(_, m)| **m > 127.0)
            .map(|(t, _)| *t)
            .sum::<f32>()
            / area as f32;
        assert!(
            mean_t1_in_gm > 30.0,
            "GM over background in slice {z}: {mean_t1_in_gm}"
        );
    }
}

#[test]
fn windows_and_percentiles() {
    let v = Volume {
        dims: [4, 1, 1],
        data: vec![-1000.0, 0.0, 40.0, 2000.0],
    };
    assert_eq!(v.range(Intensity::CtAbdomen), (-160.0, 240.0));
    assert_eq!(
        to_grey(&v.data, v.range(Intensity::CtAbdomen)),
        vec![0, 102, 128, 255]
    );
    assert_eq!(
        v.range(Intensity::Percentile(0.0, 100.0)),
        (-1000.0, 2000.0)
    );
    let e = read_volume(Path::new("/nonexistent.nii.gz")).unwrap_err();
    assert!(e.contains("/nonexistent.nii.gz"), "{e}");
}
