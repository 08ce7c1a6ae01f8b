//! Pre-processing as segment_anything's `ResizeLongestSide` + `Sam.preprocess`, done on the
//! host with the exact arithmetic of the Python pipeline.
//!
//! segment_anything resizes the uint8 image with `torchvision...resize(to_pil_image(img))`,
//! i.e. Pillow's bilinear resampling, which [`resize_bilinear_u8`] reproduces bit for bit
//! (see [`crate::imageops`]).

use crate::imageops::{Filter, resize_u8};

/// SAM's input pixels on the host (segment_anything's `ResizeLongestSide.apply_image`
/// then `Sam.preprocess`): the RGB image (`height x width x 3`) resized with Pillow's
/// bilinear filter so its long side is `size`, normalised `(x - mean) / std` per channel,
/// zero-padded to `size x size`, channel-major `[3, size, size]`. Also returns the resized
/// `(height, width)`.
pub fn pixels(
    rgb: &[u8],
    (h, w): (usize, usize),
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> (Vec<f32>, (usize, usize)) {
    let (rh, rw) = preprocess_shape(h, w, size);
    let resized = resize_bilinear_u8(rgb, (h, w), 3, (rh, rw));
    let mut out = vec![0f32; 3 * size * size];
    for c in 0..3 {
        for y in 0..rh {
            for x in 0..rw {
                let v = resized[(y * rw + x) * 3 + c] as f32;
                out[(c * size + y) * size + x] = (v - mean[c]) / std[c];
            }
        }
    }
    (out, (rh, rw))
}

/// Output size `(new_h, new_w)` of resizing `(old_h, old_w)` so the long side is `long`:
/// `int(old * long / max(old_h, old_w) + 0.5)` per side, computed in f64 as in Python.
pub fn preprocess_shape(old_h: usize, old_w: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / old_h.max(old_w) as f64;
    let new_h = (old_h as f64 * scale + 0.5) as usize;
    let new_w = (old_w as f64 * scale + 0.5) as usize;
    (new_h, new_w)
}

/// Maps a point from original pixels to the resized frame (`apply_coords`):
/// `x * new_w / old_w`, `y * new_h / old_h`.
pub fn apply_coords(
    [x, y]: [f64; 2],
    (old_h, old_w): (usize, usize),
    (new_h, new_w): (usize, usize),
) -> [f32; 2] {
    [
        (x * (new_w as f64 / old_w as f64)) as f32,
        (y * (new_h as f64 / old_h as f64)) as f32,
    ]
}

/// Resizes an interleaved `height x width x channels` uint8 image with Pillow's bilinear
/// filter (`PIL.Image.resize(..., BILINEAR)`), horizontal pass first as Pillow up to 12
/// always does. See [`resize_bilinear_u8_ordered`].
pub fn resize_bilinear_u8(
    src: &[u8],
    size: (usize, usize),
    channels: usize,
    out: (usize, usize),
) -> Vec<u8> {
    resize_u8(src, size, channels, out, Filter::Bilinear, false)
}

/// Pillow's bilinear resize with an explicit pass order (see [`crate::imageops::resize_u8`]).
pub fn resize_bilinear_u8_ordered(
    src: &[u8],
    size: (usize, usize),
    channels: usize,
    out: (usize, usize),
    vertical_first: bool,
) -> Vec<u8> {
    resize_u8(src, size, channels, out, Filter::Bilinear, vertical_first)
}

#[cfg(test)]
mod tests;
