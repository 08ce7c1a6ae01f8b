use super::*;
use burn::data::dataset::InMemDataset;

#[test]
fn mixture_follows_weights_and_uses_every_item() {
    let a = InMemDataset::new((0..10).collect::<Vec<u32>>());
    let b = InMemDataset::new((100..200).collect::<Vec<u32>>());
    let empty = InMemDataset::new(Vec::<u32>::new());
    let m = MixedDataset::new(vec![a, b, empty], &[1.0, 3.0, 5.0], 4000, 7).unwrap();
    let c = m.counts();
    assert_eq!(c[2], 0);
    assert!((c[0] as f64 / 4000.0 - 0.25).abs() < 0.03, "{c:?}");
    let first: std::collections::BTreeSet<u32> = (0..4000)
        .filter_map(|i| m.get(i))
        .filter(|&v| v < 10)
        .take(10)
        .collect();
    assert_eq!(first.len(), 10, "each item once before repeats");
    assert!(MixedDataset::new(vec![InMemDataset::new(vec![1u32])], &[0.0], 3, 1).is_err());
}

#[test]
fn llava_instructions_become_vqa_records() {
    let dir = std::env::temp_dir().join(format!("mimo-llava-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("instruct.json");
    std::fs::write(
        &f,
        r#"[{"id": "a1", "image": "x.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A chest X-ray."}]},
                {"id": 2, "conversations": [{"from": "human", "value": "no image"}, {"from": "gpt", "value": "x"}]},
                {"id": 3, "image": "y.jpg", "conversations": [{"from": "human", "value": "unanswered"}]}]"#,
    )
    .unwrap();
    let (r, skipped) = read_llava_vqa(&f, "llava-med").unwrap();
    assert_eq!((r.len(), skipped), (1, 2));
    assert_eq!(r[0].id, "llava-med/a1");
    assert_eq!(r[0].answer(), Some("A chest X-ray."));
    std::fs::remove_dir_all(&dir).ok();
}
