//! Image pre-processing identical to HF's (slow, Pillow-based) `CLIPImageProcessor`, with
//! LLaVA's `expand2square` padding as a switch.
//!
//! Steps: optional padding to a square with the mean colour (`int(mean * 255)`, the image
//! centred); Pillow bicubic resize of the shortest edge (`long = int(edge * long / short)`);
//! centre crop at `((h - crop) // 2, (w - crop) // 2)`; rescale by 1/255 in f64 then f32;
//! normalise in f32. The resize is bit-exact with Pillow <= 12 (horizontal pass first; see
//! [`crate::imageops::resize_u8`] for Pillow 13).

use serde::{Deserialize, Serialize};

use crate::imageops::{Filter, resize_u8};

/// OpenAI CLIP's per-channel mean (also used by open_clip's ViT-H/14).
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation.
// Written with the digits HF and open_clip use; the f32 rounding is the same as numpy's.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// How images become pixel values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipPreprocessConfig {
    /// Pad to a square with the mean colour first (LLaVA's `image_aspect_ratio = "pad"`;
    /// MIMO's choice: no part of the image is cropped away, so visual prompts keep their
    /// place).
    pub expand_to_square: bool,
    /// Target of the shortest edge (`None`: the model's `image_size`).
    pub shortest_edge: Option<usize>,
    /// Centre-crop side (`None`: the model's `image_size`).
    pub crop_size: Option<usize>,
    /// Per-channel mean.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation.
    pub image_std: [f32; 3],
}

impl Default for ClipPreprocessConfig {
    fn default() -> Self {
        Self {
            expand_to_square: true,
            shortest_edge: None,
            crop_size: None,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }
}

/// `int(mean * 255)` per channel, the padding colour of `expand2square`.
pub fn background_color(mean: [f32; 3]) -> [u8; 3] {
    // Python evaluates the product in f64 on the f64 mean; the f32 constants round-trip.
    mean.map(|m| (m as f64 * 255.0) as u8)
}

/// Pads `height x width` RGB to a square, the image centred (PIL `paste` at
/// `(0, (w - h) // 2)` or `((h - w) // 2, 0)`).
pub fn expand_to_square(rgb: &[u8], (h, w): (usize, usize), bg: [u8; 3]) -> (Vec<u8>, usize) {
    let side = h.max(w);
    let (top, left) = if w > h {
        ((w - h) / 2, 0)
    } else {
        (0, (h - w) / 2)
    };
    let mut out: Vec<u8> = bg.iter().copied().cycle().take(side * side * 3).collect();
    for y in 0..h {
        let dst = ((y + top) * side + left) * 3;
        out[dst..dst + w * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
    }
    (out, side)
}

/// HF's `get_resize_output_image_size(default_to_square=False)`: `(new_h, new_w)`.
pub fn shortest_edge_size((h, w): (usize, usize), edge: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (edge as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (new_long, edge)
    } else {
        (edge, new_long)
    }
}

impl ClipPreprocessConfig {
    /// RGB `height x width x 3` to `[3, crop, crop]` pixel values (channel-major), for a
    /// model whose input side is `image_size`. `vertical_first` selects Pillow 13's pass
    /// order for the resize (false: Pillow <= 12).
    pub fn pixel_values(
        &self,
        rgb: &[u8],
        (h, w): (usize, usize),
        image_size: usize,
        vertical_first: bool,
    ) -> Vec<f32> {
        let (padded, (h, w)) = if self.expand_to_square && h != w {
            let (img, side) = expand_to_square(rgb, (h, w), background_color(self.image_mean));
            (img, (side, side))
        } else {
            (rgb.to_vec(), (h, w))
        };
        let edge = self.shortest_edge.unwrap_or(image_size);
        let (rh, rw) = shortest_edge_size((h, w), edge);
        let resized = resize_u8(
            &padded,
            (h, w),
            3,
            (rh, rw),
            Filter::Bicubic,
            vertical_first,
        );
        let crop = self.crop_size.unwrap_or(image_size);
        let top = rh.saturating_sub(crop) / 2;
        let left = rw.saturating_sub(crop) / 2;
        let scale = 1.0f64 / 255.0;
        let mut out = vec![0f32; 3 * crop * crop];
        for c in 0..3 {
            for y in 0..crop.min(rh) {
                for x in 0..crop.min(rw) {
                    let v = resized[((y + top) * rw + x + left) * 3 + c];
                    let v = (v as f64 * scale) as f32;
                    out[(c * crop + y) * crop + x] = (v - self.image_mean[c]) / self.image_std[c];
                }
            }
        }
        out
    }
}
