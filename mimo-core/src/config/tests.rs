use super::*;

#[test]
fn json_where_ron_is_expected_says_so() {
    let dir = std::env::temp_dir().join(format!("mimo-cfg-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    std::fs::write(&file, r#"{"hidden_size": 64}"#).unwrap();
    let e = load_ron::<crate::sam::SamConfig>(&file)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("this is JSON") && e.contains("config.json"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
