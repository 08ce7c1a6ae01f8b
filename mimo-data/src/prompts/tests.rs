use super::*;

fn disk(h: usize, w: usize, cx: f64, cy: f64, r: f64) -> Vec<bool> {
    (0..h * w)
        .map(|i| {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            (x - cx).powi(2) + (y - cy).powi(2) <= r * r
        })
        .collect()
}

#[test]
fn distance_transform_is_exact() {
    let (h, w) = (9, 11);
    let m: Vec<bool> = (0..h * w).map(|i| (i * 7919 + i / 5) % 5 != 0).collect();
    let d = distance_transform(&m, h, w);
    for y in 0..h {
        for x in 0..w {
            let mut best = f64::MAX;
            for by in -1..=h as i64 {
                for bx in -1..=w as i64 {
                    let inside = by >= 0 && bx >= 0 && (by as usize) < h && (bx as usize) < w;
                    if !inside || !m[by as usize * w + bx as usize] {
                        best = best.min(((bx - x as i64).pow(2) + (by - y as i64).pow(2)) as f64);
                    }
                }
            }
            assert_eq!(
                d[y * w + x],
                if m[y * w + x] { best } else { 0.0 },
                "{x},{y}"
            );
        }
    }
}

#[test]
fn boxes_contain_and_points_fall_inside_the_mask() {
    let (h, w) = (40, 50);
    let mut rng = Rng::new(9);
    for k in 0..100 {
        let m = disk(
            h,
            w,
            rng.range(5.0, 45.0),
            rng.range(5.0, 35.0),
            rng.range(1.0, 12.0),
        );
        let [x0, y0, x1, y1] = bbox(&m, h, w).unwrap();
        let b = sample_box(&m, h, w, 0.2, &mut rng).unwrap();
        assert!(
            b[0] <= x0 as f64 && b[1] <= y0 as f64 && b[2] >= x1 as f64 && b[3] >= y1 as f64,
            "{k}"
        );
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f64 && b[3] <= h as f64);
        for mode in [PointMode::Interior, PointMode::Random] {
            let [x, y] = sample_point(&m, h, w, mode, &mut rng).unwrap();
            assert!(
                m[y as usize * w + x as usize],
                "{mode:?} point outside the mask"
            );
        }
    }
    // The interior point of a disk is its centre.
    let m = disk(31, 31, 15.0, 15.0, 9.0);
    assert_eq!(
        sample_point(&m, 31, 31, PointMode::Interior, &mut rng),
        Some([15.0, 15.0])
    );
    assert_eq!(sample_box(&[false; 4], 2, 2, 0.1, &mut rng), None);
}
