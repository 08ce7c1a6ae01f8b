//! PNG outputs a person can look at: the binary mask, and the image with the mask and the
//! prompts drawn on it.

use image::{ImageEncoder, Rgb, RgbImage};
use mimo_core::Image;
use mimo_core::sam::{LABEL_POSITIVE, Prompt};

fn encode_png(
    bytes: &[u8],
    w: usize,
    h: usize,
    color: image::ExtendedColorType,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(bytes, w as u32, h as u32, color)
        .map_err(|e| format!("encoding PNG: {e}"))?;
    Ok(out)
}

/// The mask as an 8-bit grey PNG: 255 foreground, 0 background.
pub fn mask_png(mask: &[bool], w: usize, h: usize) -> Result<Vec<u8>, String> {
    let bytes: Vec<u8> = mask.iter().map(|&m| if m { 255 } else { 0 }).collect();
    encode_png(&bytes, w, h, image::ExtendedColorType::L8)
}

/// An RGB image as a PNG.
pub fn rgb_png(rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>, String> {
    encode_png(rgb, w, h, image::ExtendedColorType::Rgb8)
}

const MASK_COLOR: [f32; 3] = [30.0, 144.0, 255.0];
const POSITIVE: Rgb<u8> = Rgb([40, 220, 60]);
const NEGATIVE: Rgb<u8> = Rgb([235, 40, 40]);
const BOX: Rgb<u8> = Rgb([40, 220, 60]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// The image with the mask tinted (60 %) and outlined, the clicks as dots (green
/// foreground, red background) and the box as a rectangle.
pub fn overlay_png(image: &Image, mask: &[bool], prompt: &Prompt) -> Result<Vec<u8>, String> {
    let (w, h) = (image.width(), image.height());
    let mut img =
        RgbImage::from_raw(w as u32, h as u32, image.rgb().to_vec()).ok_or("image buffer size")?;
    tint_mask(&mut img, mask, MASK_COLOR, 0.6);
    let scale = (w.min(h) as f64 / 100.0).max(1.0);
    if let Some([x0, y0, x1, y1]) = prompt.bbox {
        let t = scale.round().max(1.0) as i64;
        draw_rect(&mut img, [x0, y0, x1, y1], t, BOX);
    }
    for p in &prompt.points {
        let r = 2.5 * scale;
        let color = if p.label == LABEL_POSITIVE {
            POSITIVE
        } else {
            NEGATIVE
        };
        draw_disc(&mut img, p.x, p.y, r + scale.max(1.0), WHITE);
        draw_disc(&mut img, p.x, p.y, r, color);
    }
    encode_png(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
}

/// Tints the mask's pixels (`alpha` of the colour) and draws its outline in full colour.
fn tint_mask(img: &mut RgbImage, mask: &[bool], tint: [f32; 3], alpha: f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let at = |x: usize, y: usize| mask[y * w + x];
    for y in 0..h {
        for x in 0..w {
            if !at(x, y) {
                continue;
            }
            let edge = x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || !at(x - 1, y)
                || !at(x + 1, y)
                || !at(x, y - 1)
                || !at(x, y + 1);
            let p = img.get_pixel_mut(x as u32, y as u32);
            for (channel, t) in p.0.iter_mut().zip(tint) {
                let v = if edge {
                    t
                } else {
                    (1.0 - alpha) * *channel as f32 + alpha * t
                };
                *channel = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Colours of successive masks in multi-mask overlays.
const PALETTE: [[f32; 3]; 6] = [
    [30.0, 144.0, 255.0],
    [255.0, 140.0, 0.0],
    [220.0, 20.0, 160.0],
    [0.0, 200.0, 200.0],
    [240.0, 220.0, 0.0],
    [150.0, 80.0, 255.0],
];

/// An RGB image (row-major bytes) with several masks tinted and outlined in distinct
/// colours, foreground points as green dots and boxes as green rectangles.
pub fn overlay_masks_png(
    rgb: &[u8],
    w: usize,
    h: usize,
    masks: &[Vec<bool>],
    points: &[[f64; 2]],
    boxes: &[[f64; 4]],
) -> Result<Vec<u8>, String> {
    let mut img =
        RgbImage::from_raw(w as u32, h as u32, rgb.to_vec()).ok_or("image buffer size")?;
    for (k, mask) in masks.iter().enumerate() {
        tint_mask(&mut img, mask, PALETTE[k % PALETTE.len()], 0.45);
    }
    let scale = (w.min(h) as f64 / 100.0).max(1.0);
    for b in boxes {
        draw_rect(&mut img, *b, scale.round().max(1.0) as i64, BOX);
    }
    for [x, y] in points {
        let r = 2.5 * scale;
        draw_disc(&mut img, *x, *y, r + scale.max(1.0), WHITE);
        draw_disc(&mut img, *x, *y, r, POSITIVE);
    }
    encode_png(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn draw_disc(img: &mut RgbImage, cx: f64, cy: f64, r: f64, c: Rgb<u8>) {
    let ri = r.ceil() as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if ((dx * dx + dy * dy) as f64) <= r * r {
                put(img, cx.round() as i64 + dx, cy.round() as i64 + dy, c);
            }
        }
    }
}

fn draw_rect(img: &mut RgbImage, [x0, y0, x1, y1]: [f64; 4], t: i64, c: Rgb<u8>) {
    let (x0, y0, x1, y1) = (
        x0.round() as i64,
        y0.round() as i64,
        x1.round() as i64 - 1,
        y1.round() as i64 - 1,
    );
    for k in 0..t {
        for x in x0..=x1 {
            put(img, x, y0 + k, c);
            put(img, x, y1 - k, c);
        }
        for y in y0..=y1 {
            put(img, x0 + k, y, c);
            put(img, x1 - k, y, c);
        }
    }
}

/// The colour of grounded phrase `k` (masks and legend share it).
pub fn phrase_color(k: usize) -> [u8; 3] {
    PALETTE[k % PALETTE.len()].map(|v| v as u8)
}

/// A grounded answer drawn for a person: the image (scaled up to at least 384 px on its short
/// side, nearest neighbour, so small scans stay readable) with each mask tinted and outlined
/// in its phrase's colour, the prompts drawn (foreground points green, background red,
/// boxes green), and a legend below naming each phrase in its colour.
pub fn grounded_overlay_png(
    rgb: &[u8],
    w: usize,
    h: usize,
    masks: &[Vec<bool>],
    labels: &[String],
    points: &[([f64; 2], bool)],
    boxes: &[[f64; 4]],
) -> Result<Vec<u8>, String> {
    let up = 384usize.div_ceil(w.min(h).max(1)).max(1);
    let (sw, sh) = (w * up, h * up);
    let scale_mask = |m: &[bool]| -> Vec<bool> {
        (0..sh)
            .flat_map(|y| (0..sw).map(move |x| (y / up, x / up)))
            .map(|(y, x)| m.get(y * w + x).copied().unwrap_or(false))
            .collect()
    };
    let mut big = vec![0u8; sw * sh * 3];
    for y in 0..sh {
        for x in 0..sw {
            let s = ((y / up) * w + x / up) * 3;
            big[(y * sw + x) * 3..(y * sw + x) * 3 + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    let text_scale = 2i64;
    let line_h = (9 * text_scale) as usize;
    let legend_h = if labels.is_empty() {
        0
    } else {
        8 + labels.len() * (line_h + 4)
    };
    let mut img = RgbImage::from_raw(sw as u32, sh as u32, big).ok_or("image buffer size")?;
    for (k, mask) in masks.iter().enumerate() {
        let c = phrase_color(k).map(f32::from);
        tint_mask(&mut img, &scale_mask(mask), c, 0.45);
    }
    let t = (sw.min(sh) as f64 / 150.0).round().max(1.0) as i64;
    for b in boxes {
        draw_rect(&mut img, b.map(|v| v * up as f64), t, BOX);
    }
    for ([x, y], positive) in points {
        let r = 2.5 * t as f64 + 1.0;
        let (x, y) = ((x + 0.5) * up as f64, (y + 0.5) * up as f64);
        draw_disc(&mut img, x, y, r + t as f64, WHITE);
        draw_disc(
            &mut img,
            x,
            y,
            r,
            if *positive { POSITIVE } else { NEGATIVE },
        );
    }
    let mut full = RgbImage::from_pixel(sw as u32, (sh + legend_h) as u32, Rgb([24, 24, 24]));
    image::imageops::replace(&mut full, &img, 0, 0);
    for (k, label) in labels.iter().enumerate() {
        let y = (sh + 8 + k * (line_h + 4)) as i64;
        let c = Rgb(phrase_color(k));
        for dy in 0..line_h as i64 - 4 {
            for dx in 0..line_h as i64 - 4 {
                put(&mut full, 8 + dx, y + dy, c);
            }
        }
        mimo_bench::plot::text(
            &mut full,
            8 + line_h as i64 + 4,
            y,
            label,
            WHITE,
            text_scale,
        );
    }
    let (fw, fh) = (full.width() as usize, full.height() as usize);
    encode_png(full.as_raw(), fw, fh, image::ExtendedColorType::Rgb8)
}
