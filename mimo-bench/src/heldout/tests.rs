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

#[test]
fn every_heldout_record_asks_the_model_a_question() {
    use crate::predict::record_question;
    let rad = read_vqa_rad(&fixture("vqa_rad_sample.json")).unwrap();
    let q = record_question(&rad[0]).unwrap();
    assert_eq!(q, rad[0].vqa.as_ref().unwrap().question);
    let choice = read_multiple_choice(&fixture("choice_sample.json"), "held-out").unwrap();
    let q = record_question(&choice[0]).unwrap();
    let v = choice[0].vqa.as_ref().unwrap();
    assert!(
        q.starts_with(&format!("{}\nA. {}\n", v.question, v.options[0])),
        "{q}"
    );
    assert!(
        q.ends_with("Answer with the option's letter from the given choices directly."),
        "{q}"
    );
    let (images, masks) = (fixture("seg/images"), fixture("seg/masks"));
    let text = read_seg_folder(&images, &masks, "x", "skin lesion", false).unwrap();
    assert_eq!(
        record_question(&text[0]).unwrap(),
        "Please segment the skin lesion in the image."
    );
    let boxed = read_seg_folder(&images, &masks, "x", "skin lesion", true).unwrap();
    assert_eq!(
        record_question(&boxed[0]).unwrap(),
        "Please segment out the organs or lesions in the bounding box."
    );
}
