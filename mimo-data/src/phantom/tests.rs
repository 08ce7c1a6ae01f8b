use super::*;

#[test]
fn phantoms_are_seeded_and_have_masks_inside_the_image() {
    for style in Style::ALL {
        let a = phantom(style, 64, 7, 3);
        let b = phantom(style, 64, 7, 3);
        assert_eq!(a.rgb, b.rgb, "{style:?} not deterministic");
        assert_ne!(
            a.rgb,
            phantom(style, 64, 7, 4).rgb,
            "{style:?} ignores the index"
        );
        assert!(!a.masks.is_empty(), "{style:?} without masks");
        for (label, m) in &a.masks {
            assert_eq!(m.len(), 64 * 64);
            let area = m.iter().filter(|&&v| v).count();
            assert!(area > 4 && area < 64 * 64, "{style:?} {label}: area {area}");
        }
        assert_eq!(a.rgb.len(), 64 * 64 * 3);
    }
}

#[test]
fn structures_differ_from_their_surroundings() {
    // A mask's mean intensity differs from the pixels just outside it: the structures
    // are visible, not only in the masks.
    let p = phantom(Style::Ct, 96, 1, 0);
    let (label, m) = &p.masks[0];
    let lum = |i: usize| p.rgb[3 * i] as f64;
    let inside: Vec<f64> = (0..m.len()).filter(|&i| m[i]).map(lum).collect();
    let ring: Vec<f64> = (0..m.len())
        .filter(|&i| !m[i] && (i >= 2 && m[i - 2] || i + 2 < m.len() && m[i + 2]))
        .map(lum)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        (mean(&inside) - mean(&ring)).abs() > 10.0,
        "{label}: {} vs {}",
        mean(&inside),
        mean(&ring)
    );
}
