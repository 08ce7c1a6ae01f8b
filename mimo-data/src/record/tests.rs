use super::*;

/// The enums read and write the same JSON as the strings they replaced; an unknown
/// split, role or prompt kind is an error that names it.
#[test]
fn record_enums_keep_the_json_format() {
    let line = r#"{"id":"a/0","image":"images/a.png","size":[4,4],"modality":"CT","source":"a","volume":"v","split":"test","perspective":"P2","prompts":[{"kind":"box","coords":[0.0,0.0,2.0,2.0]},{"kind":"point","coords":[1.0,1.0],"label":0}],"turns":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]}"#;
    let r: Record = serde_json::from_str(line).unwrap();
    assert_eq!(r.split, Split::Test);
    assert_eq!(r.prompts[0].kind, PromptKind::Box);
    assert_eq!(r.prompts[1].kind, PromptKind::Point);
    assert_eq!(r.turns[1].from, Role::Gpt);
    assert_eq!(serde_json::to_string(&r).unwrap(), line);
    for (bad, word) in [
        (line.replace(r#""split":"test""#, r#""split":"dev""#), "dev"),
        (line.replace(r#""from":"gpt""#, r#""from":"bot""#), "bot"),
        (
            line.replace(r#""kind":"box""#, r#""kind":"circle""#),
            "circle",
        ),
    ] {
        let e = serde_json::from_str::<Record>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains(word), "{e}");
    }
    assert_eq!("val".parse::<Split>(), Ok(Split::Val));
    assert_eq!(Split::Train.to_string(), "train");

    let stats = RecordStats::of(&[r.clone(), r]);
    assert_eq!(stats.records, 2);
    assert_eq!(stats.tables["split"]["test"], 2);
    assert_eq!(stats.tables["perspective"]["P2"], 2);
    assert!(!stats.tables.contains_key("label (masks)"));
}
