//! LISA's mask losses, exactly (dvlab-research/LISA `model/LISA.py` lines 16-59 and
//! 305-343): a per-mask pixel-mean sigmoid cross-entropy and a scaled Dice loss, each
//! normalised per image by its mask count and then by the batch's total mask count.

use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Weights of the total loss `ce * CE + bce * BCE + dice * Dice` (LISA's defaults, which
/// the paper's `λ_bce`, `λ_dice` leave open: LISA `train_ds.py` lines 78-80).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    /// Next-token cross-entropy.
    pub ce: f64,
    /// Mask binary cross-entropy.
    pub bce: f64,
    /// Mask Dice.
    pub dice: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            ce: 1.0,
            bce: 2.0,
            dice: 0.5,
        }
    }
}

/// Both losses compute in f32 whatever the inputs' dtype.
///
/// LISA's `sigmoid_ce_loss`: BCE with logits (stable form `max(x, 0) - x t + log(1 +
/// e^{-|x|})`), averaged over each mask's pixels, summed over masks, divided by
/// `num_masks + 1e-8`. `logits`, `targets` `[n, H, W]`.
pub fn sigmoid_ce_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 3>,
    num_masks: f64,
) -> Tensor<B, 1> {
    let [n, h, w] = logits.dims();
    let x = logits.cast(DType::F32).reshape([n, h * w]);
    let t = targets.cast(DType::F32).reshape([n, h * w]);
    let loss = x.clone().clamp_min(0.0) - x.clone() * t + x.abs().neg().exp().log1p();
    loss.mean_dim(1).sum() / (num_masks + 1e-8)
}

/// LISA's `dice_loss` with `scale = 1000`, `eps = 1e-6`: `1 - (2 Σ p t / s + eps) / (Σ p / s
/// + Σ t / s + eps)` per mask, summed, divided by `num_masks + 1e-8`.
pub fn dice_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 3>,
    num_masks: f64,
) -> Tensor<B, 1> {
    const SCALE: f64 = 1000.0;
    const EPS: f64 = 1e-6;
    let [n, h, w] = logits.dims();
    let p = sigmoid(logits.cast(DType::F32).reshape([n, h * w]));
    let t = targets.cast(DType::F32).reshape([n, h * w]);
    let num = (p.clone() / SCALE * t.clone()).sum_dim(1) * 2.0;
    let den = (p / SCALE).sum_dim(1) + (t / SCALE).sum_dim(1);
    let loss = ((num + EPS) / (den + EPS)).neg() + 1.0;
    loss.sum() / (num_masks + 1e-8)
}

/// The mask part of LISA's loss over a batch: for image `b` with `n_b` masks,
/// `bce_b = sigmoid_ce_loss * n_b`, `dice_b = dice_loss * n_b`; then
/// `(Σ bce_b / (N + 1e-8), Σ dice_b / (N + 1e-8))` with `N = Σ n_b` (unweighted). Images
/// without masks contribute 0; a batch without masks gives 0.
pub fn mask_losses<B: Backend>(
    preds: &[Tensor<B, 3>],
    targets: &[Tensor<B, 3>],
    device: &B::Device,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let mut bce = Tensor::<B, 1>::zeros([1], device);
    let mut dice = Tensor::<B, 1>::zeros([1], device);
    let mut total = 0usize;
    for (p, t) in preds.iter().zip(targets) {
        let n = p.dims()[0];
        if n == 0 {
            continue;
        }
        total += n;
        bce = bce + sigmoid_ce_loss(p.clone(), t.clone(), n as f64) * n as f64;
        dice = dice + dice_loss(p.clone(), t.clone(), n as f64) * n as f64;
    }
    let norm = total as f64 + 1e-8;
    (bce / norm, dice / norm)
}
