//! Visual prompts sampled from masks (seeded): a box around the mask with outward jitter, or
//! a point inside it (the most interior pixel by the Euclidean distance transform, or a
//! uniformly random foreground pixel). Coordinates are pixel indices of the original image
//! (SAM's convention: the prompt encoder adds the half-pixel offset).

use mimo_core::rng::Rng;
use serde::{Deserialize, Serialize};

/// How points are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointMode {
    /// The foreground pixel farthest from the background (first in row-major order on ties).
    Interior,
    /// A uniformly random foreground pixel.
    Random,
}

/// Tight bounding box `[x0, y0, x1, y1]` in pixel edges (`x1`, `y1` exclusive).
pub fn bbox(mask: &[bool], h: usize, w: usize) -> Option<[usize; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
    }
    (x1 > 0).then_some([x0, y0, x1, y1])
}

/// A box around the mask, each side moved outward by up to `jitter` times the box's size
/// (uniform), clamped to the image, so it always contains the mask. `None` for an empty mask.
pub fn sample_box(
    mask: &[bool],
    h: usize,
    w: usize,
    jitter: f64,
    rng: &mut Rng,
) -> Option<[f64; 4]> {
    let [x0, y0, x1, y1] = bbox(mask, h, w)?;
    let (bw, bh) = ((x1 - x0) as f64, (y1 - y0) as f64);
    let j = jitter.max(0.0);
    Some([
        (x0 as f64 - rng.range(0.0, j * bw)).max(0.0).floor(),
        (y0 as f64 - rng.range(0.0, j * bh)).max(0.0).floor(),
        (x1 as f64 + rng.range(0.0, j * bw)).min(w as f64).ceil(),
        (y1 as f64 + rng.range(0.0, j * bh)).min(h as f64).ceil(),
    ])
}

/// 1-D squared distance transform (Felzenszwalb & Huttenlocher): `d[q] = min_p (q-p)² + f[p]`.
fn edt_1d(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    let mut d = vec![0.0; n];
    if n == 0 {
        return d;
    }
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f64; n + 1];
    let mut k = 0usize;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let s = |q: usize, p: usize| {
        ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * (q as f64 - p as f64))
    };
    for q in 1..n {
        let mut x = s(q, v[k]);
        while x <= z[k] {
            k -= 1;
            x = s(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = x;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        *out = (q as f64 - p as f64).powi(2) + f[p];
    }
    d
}

/// Squared Euclidean distance of every pixel to the nearest background pixel, the image
/// border counting as background (so a mask touching the edge is not "deep" there).
pub fn distance_transform(mask: &[bool], h: usize, w: usize) -> Vec<f64> {
    // Pad by one background pixel on every side.
    let (ph, pw) = (h + 2, w + 2);
    // Larger than any squared distance in an image, small enough to keep f64 exact.
    let inf = 1e10;
    let mut g = vec![inf; ph * pw];
    for y in 0..ph {
        for x in 0..pw {
            let inside = y >= 1 && y <= h && x >= 1 && x <= w && mask[(y - 1) * w + (x - 1)];
            if !inside {
                g[y * pw + x] = 0.0;
            }
        }
    }
    for x in 0..pw {
        let col: Vec<f64> = (0..ph).map(|y| g[y * pw + x]).collect();
        for (y, v) in edt_1d(&col).into_iter().enumerate() {
            g[y * pw + x] = v;
        }
    }
    for y in 0..ph {
        let row = edt_1d(&g[y * pw..(y + 1) * pw]);
        g[y * pw..(y + 1) * pw].copy_from_slice(&row);
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = g[(y + 1) * pw + x + 1];
        }
    }
    out
}

/// A point `[x, y]` inside the mask; `None` for an empty mask.
pub fn sample_point(
    mask: &[bool],
    h: usize,
    w: usize,
    mode: PointMode,
    rng: &mut Rng,
) -> Option<[f64; 2]> {
    let fg: Vec<usize> = (0..h * w).filter(|&i| mask[i]).collect();
    if fg.is_empty() {
        return None;
    }
    let i = match mode {
        PointMode::Random => fg[rng.index(fg.len())],
        PointMode::Interior => {
            let d = distance_transform(mask, h, w);
            let mut best = fg[0];
            for &i in &fg {
                if d[i] > d[best] {
                    best = i;
                }
            }
            best
        }
    };
    Some([(i % w) as f64, (i / w) as f64])
}

#[cfg(test)]
mod tests;
