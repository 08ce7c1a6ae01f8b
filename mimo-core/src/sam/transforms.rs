//! Pre-processing as segment_anything's `ResizeLongestSide` + `Sam.preprocess`, done on the
//! host with the exact arithmetic of the Python pipeline.
//!
//! segment_anything resizes the uint8 image with `torchvision...resize(to_pil_image(img))`,
//! i.e. Pillow's bilinear resampling: a separable triangle filter whose support grows with
//! the down-scaling factor (antialiasing), evaluated in 22-bit fixed point, horizontal pass
//! first, each pass rounded and clipped to uint8. [`resize_bilinear_u8`] reproduces that
//! bit for bit.

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

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel filter window: first input index and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let arg = ((x + xmin) as f64 - center + 0.5) * ss;
            let w = (1.0 - arg.abs()).max(0.0);
            *kx = w;
            ww += w;
        }
        for x in 0..ksize {
            let v = if x < n && ww != 0.0 { k[x] / ww } else { 0.0 };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an interleaved `height x width x channels` uint8 image to `out_h x out_w` with
/// Pillow's bilinear filter (`PIL.Image.resize(..., BILINEAR)`), horizontal pass first as
/// Pillow up to 12 always does. See [`resize_bilinear_u8_ordered`].
pub fn resize_bilinear_u8(
    src: &[u8],
    size: (usize, usize),
    channels: usize,
    out: (usize, usize),
) -> Vec<u8> {
    resize_bilinear_u8_ordered(src, size, channels, out, false)
}

/// Pillow's two-pass bilinear resize with an explicit pass order. Each pass rounds to
/// uint8, so the order matters by at most one grey level. Pillow <= 12 always runs the
/// horizontal pass first; Pillow 13 runs the vertical pass first for some shapes (both
/// axes changing, height shrinking); given the order, the result is bit-exact.
pub fn resize_bilinear_u8_ordered(
    src: &[u8],
    (height, width): (usize, usize),
    channels: usize,
    (out_h, out_w): (usize, usize),
    vertical_first: bool,
) -> Vec<u8> {
    assert_eq!(src.len(), height * width * channels, "image buffer size");
    let need_h = out_w != width;
    let need_v = out_h != height;
    let img = Plane {
        data: src,
        width,
        channels,
    };
    match (need_h, need_v) {
        (false, false) => src.to_vec(),
        (true, false) => horizontal(&img, 0..height, out_w),
        (false, true) => vertical(&img, 0, height, out_h),
        (true, true) if vertical_first => {
            let tmp = vertical(&img, 0, height, out_h);
            let tmp = Plane {
                data: &tmp,
                width,
                channels,
            };
            horizontal(&tmp, 0..out_h, out_w)
        }
        (true, true) => {
            // Only the rows the vertical pass reads are resampled horizontally.
            let coeffs = precompute_coeffs(height, out_h);
            let first = coeffs.bounds[0].0;
            let (lmin, ln) = coeffs.bounds[out_h - 1];
            let tmp = horizontal(&img, first..lmin + ln, out_w);
            let tmp = Plane {
                data: &tmp,
                width: out_w,
                channels,
            };
            vertical(&tmp, first, height, out_h)
        }
    }
}

/// An interleaved uint8 image view.
struct Plane<'a> {
    data: &'a [u8],
    width: usize,
    channels: usize,
}

/// Pillow's `ImagingResampleHorizontal_8bpc` over the rows `rows` of `img`.
fn horizontal(img: &Plane, rows: std::ops::Range<usize>, out_w: usize) -> Vec<u8> {
    let ch = img.channels;
    let coeffs = precompute_coeffs(img.width, out_w);
    let round = 1i64 << (PRECISION_BITS - 1);
    let mut out = Vec::with_capacity(rows.len() * out_w * ch);
    for y in rows {
        let row = &img.data[y * img.width * ch..][..img.width * ch];
        for xx in 0..out_w {
            let (xmin, n) = coeffs.bounds[xx];
            let k = &coeffs.weights[xx * coeffs.ksize..][..n];
            for c in 0..ch {
                let mut ss = round;
                for (x, &kx) in k.iter().enumerate() {
                    ss += row[(x + xmin) * ch + c] as i64 * kx as i64;
                }
                out.push(clip8(ss));
            }
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc` from a source of `src_h` rows, of which `img`
/// holds the rows from `row0` on.
fn vertical(img: &Plane, row0: usize, src_h: usize, out_h: usize) -> Vec<u8> {
    let ch = img.channels;
    let coeffs = precompute_coeffs(src_h, out_h);
    let round = 1i64 << (PRECISION_BITS - 1);
    let stride = img.width * ch;
    let mut out = Vec::with_capacity(out_h * stride);
    for yy in 0..out_h {
        let (ymin, n) = coeffs.bounds[yy];
        let k = &coeffs.weights[yy * coeffs.ksize..][..n];
        for i in 0..stride {
            let mut ss = round;
            for (y, &ky) in k.iter().enumerate() {
                ss += img.data[(y + ymin - row0) * stride + i] as i64 * ky as i64;
            }
            out.push(clip8(ss));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_like_python() {
        // 1024 * 75 / 100 = 768; 1024 * 333 / 500 = 681.98 -> 682
        assert_eq!(preprocess_shape(75, 100, 1024), (768, 1024));
        assert_eq!(preprocess_shape(333, 500, 1024), (682, 1024));
        assert_eq!(preprocess_shape(500, 333, 1024), (1024, 682));
        assert_eq!(preprocess_shape(1024, 1024, 1024), (1024, 1024));
    }

    #[test]
    fn identity_resize_is_a_copy() {
        let img: Vec<u8> = (0..4 * 5 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_bilinear_u8(&img, (4, 5), 3, (4, 5)), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = vec![77u8; 7 * 9];
        let out = resize_bilinear_u8(&img, (7, 9), 1, (20, 13));
        assert!(out.iter().all(|&v| v == 77));
        let out = resize_bilinear_u8(&img, (7, 9), 1, (3, 2));
        assert!(out.iter().all(|&v| v == 77));
    }
}
