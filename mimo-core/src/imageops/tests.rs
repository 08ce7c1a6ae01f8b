use super::*;

/// `Image::new` checks the buffer; `Image::open` decodes files and names the file when it
/// cannot.
#[test]
fn images_are_checked_and_errors_name_the_file() {
    assert!(matches!(
        Image::new(2, 3, vec![0; 17]),
        Err(ImageError::BufferSize { got: 17, .. })
    ));
    assert!(matches!(
        Image::new(0, 3, vec![]),
        Err(ImageError::Empty { .. })
    ));
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples");
    let img = Image::open(samples.join("mni152_t1_z95.png")).unwrap();
    assert_eq!(img.rgb().len(), img.width() * img.height() * 3);
    let e = Image::open(samples.join("nope.png"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.png"), "{e}");
    let bad = std::env::temp_dir().join(format!("mimo-bad-{}.png", std::process::id()));
    std::fs::write(&bad, b"not an image").unwrap();
    let e = Image::open(&bad).unwrap_err().to_string();
    std::fs::remove_file(&bad).unwrap();
    assert!(e.contains("mimo-bad-"), "{e}");
}
