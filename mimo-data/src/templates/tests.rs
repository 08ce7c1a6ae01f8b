use super::*;

#[test]
fn answers_mark_every_label_in_mask_order() {
    let labels: Vec<String> = ["liver", "spleen", "left kidney"]
        .map(String::from)
        .to_vec();
    let mut rng = Rng::new(3);
    for _ in 0..50 {
        let (q, a) = p1(&labels, &mut rng);
        assert!(q.contains("liver, spleen and left kidney"), "{q}");
        assert!(
            a.contains("<p>liver</p><SEG>, <p>spleen</p><SEG> and <p>left kidney</p><SEG>"),
            "{a}"
        );
        assert!(
            P1_RESPONSES_MULTI
                .iter()
                .any(|t| t.replace("{}", &grounded_list(&labels)) == a)
        );
        let (q, a) = p2(&labels[..1], true, &mut rng);
        assert!(P2_POINT_INSTRUCTIONS.contains(&q.as_str()));
        assert_eq!(a.matches("<SEG>").count(), 1);
    }
    let (_, a) = p1(&labels[..1], &mut Rng::new(1));
    assert!(
        P1_RESPONSES_SINGLE
            .iter()
            .any(|t| t.replace("{}", "<p>liver</p><SEG>") == a)
    );
}
