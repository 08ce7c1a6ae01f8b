use super::*;
use crate::eval::PerspectiveScores;

fn run(name: &str, ratio: f64, miou: f64) -> Run {
    let mut scores = Scores::default();
    let mut p = PerspectiveScores::default();
    p.seg.miou = miou;
    p.seg.ap50 = miou / 2.0;
    p.f1 = miou / 3.0;
    scores.held_in.insert("P1".into(), p.clone());
    scores.held_in.insert("P2".into(), p);
    scores.vqa.insert("SLAKE".into(), (50.0 + 10.0 * ratio, 10));
    Run {
        name: name.into(),
        data_ratio: Some(ratio),
        scores,
    }
}

#[test]
fn tables_and_figure_show_every_run() {
    let runs = vec![
        run("25%", 0.25, 0.4),
        run("50%", 0.5, 0.5),
        run("100%", 1.0, 0.6),
    ];
    let md = markdown(&runs);
    assert!(md.contains("| 50% | 0.500 | 0.500 |"), "{md}");
    assert!(md.contains("| 100% | 60.000 |"), "{md}");
    let img = ratio_figure(&runs);
    assert_eq!(img.dimensions(), (960, 680));
    // Each panel drew its series colour.
    let blue = crate::plot::PALETTE[0];
    for (x0, y0) in [(0, 0), (480, 0), (0, 340), (480, 340)] {
        let found = (x0..x0 + 480).any(|x| (y0..y0 + 340).any(|y| *img.get_pixel(x, y) == blue));
        assert!(found, "panel at {x0},{y0} has no series");
    }
}
