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
        aligner: None,
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

#[test]
fn ratio_study_leaves_out_ablations_and_repeated_ratios() {
    let mut no_aligner = run("w/o aligner", 1.0, 0.3);
    no_aligner.aligner = Some(false);
    let runs = vec![
        run("100%", 1.0, 0.6),
        no_aligner,
        run("25%", 0.25, 0.4),
        run("100% 24 GB", 1.0, 0.59),
    ];
    let (drawn, left_out) = ratio_study(&runs);
    let names: Vec<&str> = drawn.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["100%", "25%"]);
    assert_eq!(left_out.len(), 2);
    assert_eq!(left_out[0].0, "w/o aligner");
    assert!(left_out[1].1.contains("`100%`"), "{:?}", left_out[1]);
    // The ablation still has its row in the tables.
    assert!(markdown(&runs).contains("| w/o aligner |"));
}

#[test]
fn training_curves_draw_every_panel() {
    // 250 steps over 5 epochs (more steps than CURVE_POINTS: averaged over windows), one
    // validation row per epoch; the stage column is text and a token accuracy cell empty.
    let mut train = String::from(
        "stage,epoch,step,lr,loss,ce,bce,dice,token_accuracy,mask_iou,grad_norm,seconds\n",
    );
    for s in 1..=250 {
        let acc = if s == 7 {
            String::new()
        } else {
            format!("{}", s as f64 / 5.0)
        };
        train += &format!(
            "g,{},{s},{},{},0,0,0,{acc},{},1.0,0.1\n",
            (s - 1) / 50 + 1,
            3e-4 * (1.0 - s as f64 / 250.0),
            5.0 / s as f64,
            s as f64 / 4.0
        );
    }
    let mut valid = String::from("stage,epoch,step,loss,ce,bce,dice,token_accuracy,mask_iou\n");
    for e in 1..=5 {
        valid += &format!(
            "g,{e},{},{},0,0,0,{},{}\n",
            e * 50,
            1.0 / e as f64,
            e * 10,
            e * 8
        );
    }
    let rows = csv_rows(&train);
    assert_eq!(rows.len(), 250);
    assert!(!rows[0].contains_key("stage"));
    assert!(!rows[6].contains_key("token_accuracy"));
    let img = training_curves(&train, &valid);
    assert_eq!(img.dimensions(), (1120, 680));
    let has = |(x0, y0): (u32, u32), c| {
        (x0..x0 + 560).any(|x| (y0..y0 + 340).any(|y| *img.get_pixel(x, y) == c))
    };
    let [train_c, valid_c, ..] = crate::plot::PALETTE;
    for origin in [(0, 0), (560, 0), (0, 340)] {
        assert!(
            has(origin, train_c),
            "panel at {origin:?} has no training curve"
        );
        assert!(
            has(origin, valid_c),
            "panel at {origin:?} has no validation points"
        );
    }
    assert!(has((560, 340), train_c), "no learning-rate curve");
    // No rows at all: the panels say so instead of failing.
    let empty = training_curves("", "");
    assert_eq!(empty.dimensions(), (1120, 680));
}

#[test]
fn many_x_values_get_round_ticks() {
    assert_eq!(
        crate::plot::nice_ticks(1.0, 250.0),
        vec![50.0, 100.0, 150.0, 200.0, 250.0]
    );
    assert_eq!(crate::plot::nice_ticks(0.0, 1.0).len(), 6);
    assert_eq!(crate::plot::nice_ticks(3.0, 3.0), vec![3.0]);
}
