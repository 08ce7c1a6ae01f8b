use burn::module::Param;
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::clip::preprocess::ClipPreprocessConfig;
use crate::test_util::TestBackend as B;

fn encoder(c: usize, image_dim: usize) -> VisualPromptEncoder<B> {
    VisualPromptEncoderConfig {
        embed_dim: c,
        image_dim,
    }
    .init::<B>(&Default::default())
}

/// A point marked on the original image lands on the CLIP patch that shows it: the
/// normalised coordinate follows `expand2square` and the resize of the CLIP pre-processing.
#[test]
fn point_lands_on_its_clip_patch() {
    let cfg = ClipPreprocessConfig::default();
    let (side, patch) = (224usize, 14usize);
    let grid = side / patch;
    for (h, w, x, y) in [
        (100usize, 160usize, 85usize, 45usize),
        (160, 100, 35, 125),
        (90, 90, 8, 70),
    ] {
        // A bright 3x3 spot on black; the patch that changes most when it is added.
        let black = vec![0u8; h * w * 3];
        let mut rgb = black.clone();
        for dy in 0..3 {
            for dx in 0..3 {
                let (px, py) = (x + dx - 1, y + dy - 1);
                rgb[(py * w + px) * 3..(py * w + px) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let pix = cfg.pixel_values(&rgb, (h, w), side, false);
        let base = cfg.pixel_values(&black, (h, w), side, false);
        let mut best = (0usize, 0usize, f32::MIN);
        for gy in 0..grid {
            for gx in 0..grid {
                let mut sum = 0f32;
                for yy in 0..patch {
                    for xx in 0..patch {
                        let i = (gy * patch + yy) * side + gx * patch + xx;
                        sum += pix[i] - base[i];
                    }
                }
                if sum > best.2 {
                    best = (gx, gy, sum);
                }
            }
        }
        let (px, py, s) = square_frame([h, w]);
        let cx = (x as f32 + px + 0.5) / s;
        let cy = (y as f32 + py + 0.5) / s;
        let want = ((cx * grid as f32) as usize, (cy * grid as f32) as usize);
        assert_eq!((best.0, best.1), want, "{h}x{w} point ({x}, {y})");
    }
}

/// The Fourier features follow SAM's `PositionEmbeddingRandom`
/// (`segment_anything/modeling/prompt_encoder.py`): a column (1, 0) of `G` and
/// c = (0.75, 0.5) give (2c - 1) · (1, 0) = 0.5, so sin(π) = 0 and cos(π) = -1.
#[test]
fn fourier_features_golden() {
    let device = Default::default();
    let mut enc = encoder(4, 8);
    let g = Tensor::<B, 2>::from_data(TensorData::new(vec![1f32, 0.3, 0.0, 0.7], [2, 2]), &device);
    enc.pe_gaussian = Param::from_tensor(g);
    let c = Tensor::<B, 3>::from_data(TensorData::new(vec![0.75f32, 0.5], [1, 1, 2]), &device);
    let pe = enc.pe(c).into_data().to_vec::<f32>().unwrap();
    assert!(pe[0].abs() < 1e-5, "sin(pi) = {}", pe[0]);
    assert!((pe[2] + 1.0).abs() < 1e-5, "cos(pi) = {}", pe[2]);
}

/// Labels pick their embedding, padding slots drop the positional part and are flagged,
/// and coordinates are shifted into the square frame before normalising.
#[test]
fn labels_padding_and_frame() {
    let device = Default::default();
    let enc = encoder(8, 6);
    // Image 30 high, 50 wide: S = 50, pad_y = 10.
    let prompts = PromptTensors::<B>::from_prompts(
        &[vec![
            VisualPrompt::Point {
                x: 4.0,
                y: 2.0,
                positive: true,
            },
            VisualPrompt::Box {
                x0: 1.0,
                y0: 1.0,
                x1: 20.0,
                y1: 25.0,
            },
        ]],
        4,
        &device,
    );
    assert_eq!(prompts.slots(), 4);
    let labels = prompts
        .labels
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap();
    assert_eq!(labels, vec![1, 2, 3, -1]);
    let (v, pad) = enc.forward(&prompts, &[[30, 50]]);
    assert_eq!(v.dims(), [1, 4, 6]);
    let pad: Vec<i64> = pad.int().into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(pad, vec![0, 0, 0, 1]);
    // The padding token is proj(not_a_point_embed).
    let want = enc
        .proj
        .forward(enc.not_a_point_embed.weight.val())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let got = v
        .clone()
        .slice([0..1, 3..4, 0..6])
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6);
    }
    // The foreground point: pe((4.5 / 50, 12.5 / 50)) + point_embeddings[1], projected.
    let c = Tensor::<B, 3>::from_data(
        TensorData::new(vec![4.5f32 / 50.0, 12.5 / 50.0], [1, 1, 2]),
        &device,
    );
    let tok = enc.pe(c) + enc.point_embeddings[1].weight.val().unsqueeze::<3>();
    let want = enc.proj.forward(tok).into_data().to_vec::<f32>().unwrap();
    let got = v
        .slice([0..1, 0..1, 0..6])
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn prompts_outside_the_image_are_detected() {
    let p = VisualPrompt::Point {
        x: 50.5,
        y: 3.0,
        positive: true,
    };
    assert!(!p.inside(50, 30));
    assert!(p.inside(51, 30));
    let b = VisualPrompt::Box {
        x0: 0.0,
        y0: 0.0,
        x1: 10.0,
        y1: f64::NAN,
    };
    assert!(!b.inside(50, 30));
}

#[test]
fn config_errors_name_the_field() {
    let bad = VisualPromptEncoderConfig {
        embed_dim: 7,
        image_dim: 4,
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("embed_dim"), "{e}");
}
