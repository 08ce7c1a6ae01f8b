use super::*;

#[test]
fn replaces_and_leaves_no_temp_file() {
    let dir = std::env::temp_dir().join(format!("mimo-fsutil-{}", std::process::id()));
    let path = dir.join("sub").join("a.txt");
    write_atomic(&path, b"one").unwrap();
    write_atomic(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
