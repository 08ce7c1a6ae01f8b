//! A minimal line-plot renderer for report PNGs (no font or system libraries): axes with
//! ticks, polylines with point markers, and text in a built-in 5x7 pixel font.

use image::{Rgb, RgbImage};

/// Glyphs of the 5x7 font: 7 rows of 5 bits (MSB = leftmost pixel).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        _ => [0; 7],
    }
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>, scale: i64) {
    for (i, c) in s.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (1 << (4 - col)) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x + (i as i64 * 6 + col) * scale + dx,
                                y + row as i64 * scale + dy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `s` at `scale`.
pub fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// A line `width` pixels thick.
pub fn line(
    img: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    c: Rgb<u8>,
    width: i64,
) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (
            (x0 + t * (x1 - x0)).round() as i64,
            (y0 + t * (y1 - y0)).round() as i64,
        );
        for dy in -(width / 2)..=(width / 2) {
            for dx in -(width / 2)..=(width / 2) {
                put(img, x + dx, y + dy, c);
            }
        }
    }
}

/// One series of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, drawn in x order.
    pub points: Vec<(f64, f64)>,
}

/// Distinct colours for series.
pub const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
];

/// Up to this many distinct x values, each gets a tick label; beyond, round ticks do.
const MAX_X_LABELS: usize = 12;
/// Up to this many points, a series marks each one.
const MAX_MARKERS: usize = 40;

/// About three to nine round tick values (1, 2 or 5 times a power of ten apart) within
/// `[lo, hi]`.
pub(crate) fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 8.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Draws a line-chart panel into the `w x h` region at `(ox, oy)`: title, axes with tick
/// labels at the x values (round ticks when there are many) and five y ticks, one coloured
/// polyline per series, a legend.
pub fn panel(
    img: &mut RgbImage,
    (ox, oy): (i64, i64),
    (w, h): (i64, i64),
    title: &str,
    xlabel: &str,
    series: &[Series],
) {
    let black = Rgb([0, 0, 0]);
    let grey = Rgb([200, 200, 200]);
    text(
        img,
        ox + (w - text_width(title, 2)) / 2,
        oy + 6,
        title,
        black,
        2,
    );
    let (l, r, t, b) = (ox + 52, ox + w - 12, oy + 30, oy + h - 40);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if pts.is_empty() {
        text(img, l + 10, t + 20, "NO DATA", black, 2);
        return;
    }
    let (mut xmin, mut xmax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut ymin, mut ymax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if xmax - xmin < 1e-12 {
        xmin -= 0.5;
        xmax += 0.5;
    }
    let pad = if ymax > ymin {
        (ymax - ymin) * 0.1
    } else if ymax != 0.0 {
        ymax.abs() * 0.1
    } else {
        0.01
    };
    // Non-negative data (losses, percentages, rates) keeps a non-negative axis.
    ymin = if ymin >= 0.0 {
        (ymin - pad).max(0.0)
    } else {
        ymin - pad
    };
    ymax += pad;
    // Small values (learning rates) get scientific tick labels.
    let small = ymin.abs().max(ymax.abs()) < 0.01;
    let sx = |x: f64| l as f64 + (x - xmin) / (xmax - xmin) * (r - l) as f64;
    let sy = |y: f64| b as f64 - (y - ymin) / (ymax - ymin) * (b - t) as f64;
    for i in 0..=4 {
        let y = ymin + (ymax - ymin) * i as f64 / 4.0;
        line(img, (l as f64, sy(y)), (r as f64, sy(y)), grey, 1);
        let label = if small {
            format!("{y:.1e}")
        } else {
            format!("{y:.3}")
        };
        text(
            img,
            l - 4 - text_width(&label, 1),
            sy(y) as i64 - 3,
            &label,
            black,
            1,
        );
    }
    let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.len() > MAX_X_LABELS {
        xs = nice_ticks(xmin, xmax);
    }
    for x in xs {
        let label = format!("{}", (x * 100.0).round() / 100.0);
        text(
            img,
            sx(x) as i64 - text_width(&label, 1) / 2,
            b + 6,
            &label,
            black,
            1,
        );
    }
    text(
        img,
        ox + (w - text_width(xlabel, 1)) / 2,
        b + 20,
        xlabel,
        black,
        1,
    );
    line(img, (l as f64, b as f64), (r as f64, b as f64), black, 1);
    line(img, (l as f64, t as f64), (l as f64, b as f64), black, 1);
    for (k, s) in series.iter().enumerate() {
        let c = PALETTE[k % PALETTE.len()];
        let mut p = s.points.clone();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w2 in p.windows(2) {
            line(
                img,
                (sx(w2[0].0), sy(w2[0].1)),
                (sx(w2[1].0), sy(w2[1].1)),
                c,
                2,
            );
        }
        for q in p.iter().filter(|_| p.len() <= MAX_MARKERS) {
            line(
                img,
                (sx(q.0) - 3.0, sy(q.1)),
                (sx(q.0) + 3.0, sy(q.1)),
                c,
                5,
            );
        }
        let ly = t + 4 + 12 * k as i64;
        line(
            img,
            ((r - 70) as f64, (ly + 3) as f64),
            ((r - 58) as f64, (ly + 3) as f64),
            c,
            3,
        );
        text(img, r - 54, ly, &s.name, black, 1);
    }
}
