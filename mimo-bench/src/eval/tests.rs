use super::*;
use mimo_data::record::read_jsonl;

fn fixture(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/eval")
        .join(name)
}

/// The numbers of `fixtures/eval` worked out by hand (2x2 masks; see the comments).
#[test]
fn scores_and_tables_match_hand_computed_values() {
    let records: Vec<Record> = read_jsonl(fixture("records.jsonl")).unwrap();
    let preds: Vec<Prediction> = read_jsonl(fixture("predictions.jsonl")).unwrap();
    let s = score(&records, &preds, Some(Split::Test), &MeteorMode::Off).unwrap();
    let eq = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} != {b}");
    // P1: r1 IoU 1/2, r2 IoU 2/2 (r3 is in train).
    let p1 = &s.held_in["P1"];
    assert_eq!((p1.seg.samples, p1.seg.masks), (2, 2));
    eq(p1.seg.miou, (1.0 / (2.0 + 1e-5) + 2.0 / (2.0 + 1e-5)) / 2.0);
    eq(p1.seg.ciou, 3.0 / (4.0 + 1e-10));
    eq(p1.seg.pr50, 0.5); // IoU 0.5 is not above 0.5
    eq(p1.seg.ap50, 1.0); // both detections reach IoU >= 0.5
    eq(p1.f1, 0.5); // liver's IoU 0.5 fails "> 0.5"; spleen matches: P = R = 1/2
    // Same answers: ROUGE-L 1; BLEU-4 has no 4-gram, p4 = 1e-15 / 1e-9.
    eq(p1.text.rouge_l, 1.0);
    assert!(
        (p1.text.bleu4 - 1e-6f64.powf(0.25)).abs() < 1e-6,
        "{}",
        p1.text.bleu4
    );
    // P2: r4 has no prediction: everything 0.
    let p2 = &s.held_in["P2"];
    eq(p2.seg.miou, 0.0);
    eq(p2.seg.ap50, 0.0);
    eq(p2.f1, 0.0);
    eq(p2.text.rouge_l, 0.0);
    eq(p2.text.bleu4, 0.0);
    assert_eq!(s.missing_predictions, 1);
    // Held-out X-ray: 2/3 without box, 3/3 with.
    eq(
        s.held_out_seg["X-ray"]["without_box"].miou,
        2.0 / (3.0 + 1e-5),
    );
    eq(s.held_out_seg["X-ray"]["with_box"].miou, 3.0 / (3.0 + 1e-5));
    eq(s.held_out_seg["X-ray"]["with_box"].ap50, 1.0);
    // VQA: r7 hits ("no" in "nodule" too), r8 misses, r9 picks B = "no"; r10 is open.
    assert_eq!(s.vqa["VQA-RAD"], (50.0, 2));
    assert_eq!(s.vqa["SLAKE"], (100.0, 1));

    let md = markdown(&s);
    assert!(md.contains("| P1 | mIoU | 0.750 | 0.639 |"), "{md}");
    assert!(
        md.contains("| X-ray (with box) | mIoU | 1.000 | 0.883 |"),
        "{md}"
    );
    assert!(
        md.contains("| Avg. | accuracy % | 75.000 | 56.100 |"),
        "{md}"
    );
    assert!(md.contains("| P2 | METEOR | – | 0.253 |"), "{md}");
    let csv = csv(&s);
    assert!(csv.starts_with("table,row,metric,ours,paper\n"));
    assert!(
        csv.contains("\"Held-out VQA\",\"SLAKE\",\"accuracy %\",100,57\n"),
        "{csv}"
    );
}

/// A `Scorer` fed record by record (as during training) gives the tables of `score`.
#[test]
fn scorer_accumulates_like_score() {
    let records: Vec<Record> = read_jsonl(fixture("records.jsonl")).unwrap();
    let preds: Vec<Prediction> = read_jsonl(fixture("predictions.jsonl")).unwrap();
    let want = score(&records, &preds, None, &MeteorMode::Off).unwrap();
    let mut scorer = Scorer::new(&MeteorMode::Off);
    for r in &records {
        scorer.add(r, preds.iter().find(|p| p.id == r.id)).unwrap();
    }
    let got = scorer.finish().unwrap();
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&want).unwrap()
    );
    assert!(got.held_in.len() > 1);
}
