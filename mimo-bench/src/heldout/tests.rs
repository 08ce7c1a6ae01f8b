use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/heldout")
        .join(name)
}

fn closed(r: &[Record]) -> Vec<(String, String)> {
    r.iter()
        .filter_map(|r| {
            r.vqa
                .as_ref()
                .map(|v| (r.id.clone(), v.answer_type.clone()))
        })
        .collect()
}

#[test]
fn vqa_readers_select_the_evaluated_questions() {
    let rad = read_vqa_rad(&fixture("vqa_rad_sample.json")).unwrap();
    // Only test questions; numeric answers become text; "CLOSED " is closed.
    assert_eq!(
        closed(&rad),
        vec![
            ("vqa-rad/2".into(), "closed".into()),
            ("vqa-rad/3".into(), "open".into()),
            ("vqa-rad/4".into(), "closed".into())
        ]
    );
    assert_eq!(rad[2].vqa.as_ref().unwrap().answer, "2");
    let slake = read_slake(&fixture("slake_sample.json")).unwrap();
    assert_eq!(slake.len(), 2, "English questions only");
    assert_eq!(slake[0].source, "SLAKE");
    let path = read_pathvqa(&fixture("pathvqa_sample.json")).unwrap();
    assert_eq!(
        path.iter()
            .map(|r| r.vqa.as_ref().unwrap().answer_type.as_str())
            .collect::<Vec<_>>(),
        ["closed", "open", "closed"]
    );
    let mc = read_multiple_choice(&fixture("choice_sample.json"), "x").unwrap();
    // The repeated id and the open question are dropped.
    assert_eq!(
        mc.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["VQA-RAD/q1", "SLAKE/q3"]
    );
    assert_eq!(mc[1].vqa.as_ref().unwrap().options.len(), 3);
    let e = read_slake(&fixture("nope.json")).unwrap_err().to_string();
    assert!(e.contains("nope.json"), "{e}");
}

#[test]
fn segmentation_folders_become_records_with_and_without_box() {
    let dir = fixture("seg");
    let plain = read_seg_folder(
        &dir.join("images"),
        &dir.join("masks"),
        "Skin Lesion",
        "lesion",
        false,
    )
    .unwrap();
    let boxed = read_seg_folder(
        &dir.join("images"),
        &dir.join("masks"),
        "Skin Lesion",
        "lesion",
        true,
    )
    .unwrap();
    assert_eq!(plain.len(), 2);
    assert!(plain[0].prompts.is_empty());
    assert_eq!(plain[0].size, Some([6, 8]));
    // a.png: rows 2..5, columns 1..4
    assert_eq!(boxed[0].prompts[0].coords, vec![1.0, 2.0, 4.0, 5.0]);
    assert_eq!(boxed[0].masks[0].rle.area().unwrap(), 9);
    assert_ne!(plain[0].id, boxed[0].id);
}
