//! Writes a grid of phantoms (one row per style, masks outlined in the second half of each
//! row) to a PNG: `cargo run -p mimo-data --example phantom_grid -- out.png`.

use mimo_data::phantom::{Style, phantom};

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "phantoms.png".into());
    let (size, per_row) = (128usize, 4usize);
    let (w, h) = (size * per_row * 2, size * Style::ALL.len());
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (r, style) in Style::ALL.iter().enumerate() {
        for k in 0..per_row {
            let p = phantom(*style, size, 42, k as u64);
            for half in 0..2 {
                let ox = (k + half * per_row) * size;
                for i in 0..size * size {
                    let (x, y) = (i % size, i / size);
                    let mut c = [p.rgb[3 * i], p.rgb[3 * i + 1], p.rgb[3 * i + 2]];
                    if half == 1 {
                        for (n, (_, m)) in p.masks.iter().enumerate() {
                            let edge = m[i]
                                && (x == 0
                                    || y == 0
                                    || x + 1 == size
                                    || y + 1 == size
                                    || !m[i - 1]
                                    || !m[i + 1]
                                    || !m[i - size]
                                    || !m[i + size]);
                            if edge {
                                c = [
                                    [255, 0, 0],
                                    [0, 255, 0],
                                    [0, 128, 255],
                                    [255, 255, 0],
                                    [255, 0, 255],
                                    [0, 255, 255],
                                ][n % 6];
                            }
                        }
                    }
                    img.put_pixel((ox + x) as u32, (r * size + y) as u32, image::Rgb(c));
                }
            }
        }
    }
    if let Err(e) = img.save(&out) {
        eprintln!("error: cannot write {out}: {e}");
        std::process::exit(1);
    }
    println!("wrote {out}");
}
