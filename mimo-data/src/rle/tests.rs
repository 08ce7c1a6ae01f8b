use super::*;

/// Reference strings from pycocotools 2.0 (`scripts/reference/coco_rle.py`).
#[test]
fn matches_pycocotools() {
    let text = include_str!("../../fixtures/rle.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let h = case["height"].as_u64().unwrap() as usize;
        let w = case["width"].as_u64().unwrap() as usize;
        let mask: Vec<bool> = case["mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() == 1)
            .collect();
        let want = case["counts"].as_str().unwrap();
        let rle = Rle::encode(&mask, h, w);
        assert_eq!(rle.counts, want, "{h}x{w}");
        assert_eq!(rle.decode().unwrap(), mask);
        assert_eq!(rle.area().unwrap(), case["area"].as_u64().unwrap());
    }
}

#[test]
fn bad_strings_are_errors() {
    assert!(
        Rle {
            size: [2, 2],
            counts: "\u{7f}".into()
        }
        .decode()
        .is_err()
    );
    assert!(
        Rle {
            size: [2, 2],
            counts: "0".into()
        }
        .decode()
        .is_err()
    );
}
