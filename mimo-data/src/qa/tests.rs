use super::*;

fn l(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn validation_accepts_exact_markup_and_names_the_reason_otherwise() {
    let ok = "The <p>liver</p><SEG> and <p>Spleen</p><SEG>.";
    assert_eq!(validate_answer(ok, &l(&["liver", "spleen"])), Ok(()));
    assert!(matches!(
        validate_answer(ok, &l(&["liver"])),
        Err(Rejection::SegCount { .. })
    ));
    assert!(matches!(
        validate_answer(ok, &l(&["spleen", "liver"])),
        Err(Rejection::Entities { .. })
    ));
    assert!(matches!(
        validate_answer("<p>liver <SEG>", &l(&["liver"])),
        Err(Rejection::Markup(_))
    ));
}

#[test]
fn generated_p3_p4_answers_mark_the_entities() {
    let kb = KnowledgeBase::builtin();
    let mut rng = Rng::new(2);
    let (q, a) = p3(&kb, &l(&["liver", "liver tumor"]), "CT", &mut rng).unwrap();
    assert!(q.ends_with('?'), "{q}");
    assert!(
        a.contains("<p>liver</p><SEG>") && a.contains("<p>liver tumor</p><SEG>"),
        "{a}"
    );
    let (q, a) = p4(&kb, "optic disc", "fundus", true, &mut rng).unwrap();
    assert!(q.contains("marked point"), "{q}");
    assert!(a.contains("<p>optic disc</p><SEG>"), "{a}");
    let e = p3(&kb, &l(&["unknown organ"]), "CT", &mut rng).unwrap_err();
    assert!(e.contains("unknown organ"), "{e}");
}
