use super::*;

#[test]
fn preprocess_shape_rounds_like_python() {
    // 1024 * 75 / 100 = 768; 1024 * 333 / 500 = 681.98 -> 682
    assert_eq!(preprocess_shape(75, 100, 1024), (768, 1024));
    assert_eq!(preprocess_shape(333, 500, 1024), (682, 1024));
    assert_eq!(preprocess_shape(500, 333, 1024), (1024, 682));
    assert_eq!(preprocess_shape(1024, 1024, 1024), (1024, 1024));
}

#[test]
fn identity_resize_is_a_copy() {
    let img: Vec<u8> = (0..4 * 5 * 3).map(|v| v as u8).collect();
    assert_eq!(resize_bilinear_u8(&img, (4, 5), 3, (4, 5)), img);
}

#[test]
fn constant_image_stays_constant() {
    let img = vec![77u8; 7 * 9];
    let out = resize_bilinear_u8(&img, (7, 9), 1, (20, 13));
    assert!(out.iter().all(|&v| v == 77));
    let out = resize_bilinear_u8(&img, (7, 9), 1, (3, 2));
    assert!(out.iter().all(|&v| v == 77));
}
