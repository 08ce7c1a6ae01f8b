//! Pillow-exact image resampling of interleaved uint8 images.
//!
//! The Python pipelines we match resize with Pillow (`Image.resize`): a separable filter
//! whose support grows with the down-scaling factor (antialiasing), weights normalised
//! and stored in 22-bit fixed point, each pass rounded and clipped to uint8. This module
//! reproduces that arithmetic for the bilinear (SAM) and bicubic (CLIP) filters.

/// An RGB image in original pixels: interleaved bytes, row-major `height x width x 3`, checked
/// on construction. The one image type of the crate (SAM, CLIP and MIMO take it); sizes are
/// given as (width, height) everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// An image whose buffer does not fit its stated size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The pixel buffer does not match the stated size.
    #[error("image buffer has {got} bytes, expected {width}x{height}x3 = {}", width * height * 3)]
    BufferSize {
        /// Stated width.
        width: usize,
        /// Stated height.
        height: usize,
        /// Actual buffer length.
        got: usize,
    },
    /// An empty image.
    #[error("image is empty ({width}x{height})")]
    Empty {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// An image file that cannot be read or decoded.
    #[error("cannot read image {path}: {message}")]
    File {
        /// The file (empty for in-memory bytes).
        path: std::path::PathBuf,
        /// The reason.
        message: String,
    },
}

impl Image {
    /// Wraps interleaved RGB bytes of a `width x height` image.
    pub fn new(width: usize, height: usize, rgb: Vec<u8>) -> Result<Self, ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::Empty { width, height });
        }
        if rgb.len() != width * height * 3 {
            return Err(ImageError::BufferSize {
                width,
                height,
                got: rgb.len(),
            });
        }
        Ok(Self { width, height, rgb })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// The bytes, giving up the image.
    pub fn into_rgb(self) -> Vec<u8> {
        self.rgb
    }

    /// Decodes a PNG, JPEG, BMP or TIFF file; grey, 16-bit and alpha images become 8-bit RGB.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ImageError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::decode(&bytes).map_err(|e| match e {
            ImageError::File { message, .. } => ImageError::File {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Decodes image file bytes (PNG, JPEG, BMP or TIFF) like [`Image::open`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        let rgb = image::load_from_memory(bytes)
            .map_err(|e| ImageError::File {
                path: Default::default(),
                message: e.to_string(),
            })?
            .to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        Self::new(w, h, rgb.into_raw())
    }
}

/// A Pillow resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1 (`Image.BILINEAR`).
    Bilinear,
    /// Keys cubic with a = -0.5, support 2 (`Image.BICUBIC`).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel filter window: first input index and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`.
fn precompute_coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
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
            let w = filter.eval(arg);
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

/// Pillow's two-pass resize of an interleaved `height x width x channels` uint8 image to
/// `out_h x out_w` (`PIL.Image.resize(size, filter)`), with an explicit pass order. Each
/// pass rounds to uint8, so the order matters by about one grey level. Pillow <= 12 always
/// runs the horizontal pass first; Pillow 13 runs the vertical pass first for some shapes
/// (both axes changing, height shrinking); given the order, the result is bit-exact.
pub fn resize_u8(
    src: &[u8],
    (height, width): (usize, usize),
    channels: usize,
    (out_h, out_w): (usize, usize),
    filter: Filter,
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
        (true, false) => horizontal(&img, 0..height, out_w, filter),
        (false, true) => vertical(&img, 0, height, out_h, filter),
        (true, true) if vertical_first => {
            let tmp = vertical(&img, 0, height, out_h, filter);
            let tmp = Plane {
                data: &tmp,
                width,
                channels,
            };
            horizontal(&tmp, 0..out_h, out_w, filter)
        }
        (true, true) => {
            // Only the rows the vertical pass reads are resampled horizontally.
            let coeffs = precompute_coeffs(height, out_h, filter);
            let first = coeffs.bounds[0].0;
            let (lmin, ln) = coeffs.bounds[out_h - 1];
            let tmp = horizontal(&img, first..lmin + ln, out_w, filter);
            let tmp = Plane {
                data: &tmp,
                width: out_w,
                channels,
            };
            vertical(&tmp, first, height, out_h, filter)
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
fn horizontal(img: &Plane, rows: std::ops::Range<usize>, out_w: usize, filter: Filter) -> Vec<u8> {
    let ch = img.channels;
    let coeffs = precompute_coeffs(img.width, out_w, filter);
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
fn vertical(img: &Plane, row0: usize, src_h: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    let ch = img.channels;
    let coeffs = precompute_coeffs(src_h, out_h, filter);
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
mod tests;
