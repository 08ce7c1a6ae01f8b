use super::*;

fn job(p: Perspective, labels: &[&str], prompt: Option<PromptKind>) -> QaJob {
    QaJob {
        id: "s/000001/P3".into(),
        perspective: p,
        modality: "CT".into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        prompt,
    }
}

#[test]
fn prompt_has_names_knowledge_requirements_and_example() {
    let kb = KnowledgeBase::builtin();
    let j = job(Perspective::P3, &["liver", "liver tumor"], None);
    let m = messages(&j, &kb).unwrap();
    assert_eq!(m.len(), 2);
    let u = &m[1].content;
    for needle in [
        "Image modality: CT.",
        "liver (organ), liver tumor (lesion)",
        "Knowledge:\n- liver (organ): ",
        "\n- liver tumor (lesion): ",
        "how they relate to each other",
        "<p>liver</p>, <p>liver tumor</p>",
        "Example:\nEntities: liver (organ), liver tumor (lesion)",
    ] {
        assert!(u.contains(needle), "missing {needle:?} in\n{u}");
    }
    let j = job(Perspective::P4, &["heart"], Some(PromptKind::Point));
    let u = &messages(&j, &kb).unwrap()[1].content;
    assert!(u.contains("A point is placed on the heart"), "{u}");
    assert!(u.contains("\"at the marked point\""), "{u}");
    assert!(!u.contains("relate to each other"), "{u}");
    let e = messages(&job(Perspective::P3, &["unknown thing"], None), &kb).unwrap_err();
    assert!(e.contains("unknown thing"), "{e}");
}

#[test]
fn replies_are_parsed_marked_and_checked() {
    let j = job(Perspective::P3, &["liver", "liver tumor"], None);
    let ok = "```json\n{\"question\": \"Which organ filters blood here, and what grows in it?\", \
                  \"answer\": \"The <p>liver</p> holds a <p>Liver tumor</p> <SEG>.\"}\n```";
    let (q, a) = parse_reply(ok, &j, false).unwrap();
    assert!(q.starts_with("Which organ"));
    assert_eq!(a, "The <p>liver</p><SEG> holds a <p>Liver tumor</p><SEG>.");
    let kind = |c: &str, j: &QaJob| parse_reply(c, j, false).unwrap_err().kind();
    assert_eq!(kind("Sure! Here it is.", &j), "not_json");
    assert_eq!(kind("{\"question\": \"q?\"}", &j), "not_json");
    assert_eq!(
        kind(r#"{"question": "Where is the liver?", "answer": "x"}"#, &j),
        "name_in_question"
    );
    // "livers" is not the word "liver"; the answer misses an entity.
    assert_eq!(
        kind(
            r#"{"question": "Which organ?", "answer": "The <p>liver</p>."}"#,
            &j
        ),
        "answer_entity_count"
    );
    assert_eq!(
        kind(
            r#"{"question": "Which organ?", "answer": "<p>liver tumor</p> in <p>liver</p>"}"#,
            &j
        ),
        "answer_entities"
    );
    assert_eq!(
        kind(r#"{"question": "Which <p>organ</p>?", "answer": "a"}"#, &j),
        "markup_in_question"
    );
    let p4 = job(Perspective::P4, &["heart"], Some(PromptKind::Box));
    assert_eq!(
        kind(
            r#"{"question": "What is this?", "answer": "<p>heart</p>"}"#,
            &p4
        ),
        "prompt_not_referenced"
    );
    assert!(
        parse_reply(
            r#"{"question": "What is within the bounding box?", "answer": "The <p>heart</p>."}"#,
            &p4,
            false
        )
        .is_ok()
    );
    // Names allowed on request.
    let named = r#"{"question": "Is the liver tumor inside the liver?", "answer": "Yes: <p>liver</p>, <p>liver tumor</p>."}"#;
    assert!(parse_reply(named, &j, true).is_ok());
    assert!(contains_word("the liver.", "liver") && !contains_word("delivery", "liver"));
}
