//! The train and validation steps of MIMO on burn-train's learner.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{Adaptor, ItemLazy};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use mimo_core::mimo::{Mimo, MimoError, MimoOutput};
use mimo_core::tokenizer::IGNORE_INDEX;
use mimo_data::batch::MimoBatch;

/// MIMO as a burn-train model (the step traits live here, beside the training code).
#[derive(Module, Debug)]
pub struct MimoTrainer<B: Backend> {
    /// The model.
    pub mimo: Mimo<B>,
    /// Whether the training step recomputes each decoder layer in its backward pass
    /// ([`Mimo::forward_backward_recompute`]) instead of keeping the layers' activations.
    #[module(skip)]
    pub recompute_layers: bool,
}

impl<B: Backend> MimoTrainer<B> {
    /// The model as a burn-train model, keeping every activation for the backward pass.
    pub fn new(mimo: Mimo<B>) -> Self {
        Self {
            mimo,
            recompute_layers: false,
        }
    }

    /// With `recompute`, the training step recomputes each decoder layer in its backward.
    pub fn with_recompute(mut self, recompute: bool) -> Self {
        self.recompute_layers = recompute;
        self
    }
}

/// What one step reports: the losses and the counts behind next-token accuracy and
/// mask IoU, still on the device (read when the dashboard processes the item).
#[derive(Debug, Clone)]
pub struct MimoStepOutput<B: Backend> {
    /// Total, CE, weighted BCE, weighted Dice: `[4]`.
    pub losses: Tensor<B, 1>,
    /// Correct and counted answer tokens, mask intersection and union pixels: `[4]`.
    pub counts: Tensor<B, 1>,
    /// Samples in the batch.
    pub batch_size: usize,
}

/// [`MimoStepOutput`] read back to the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MimoStepStats {
    /// `ce·CE + bce·BCE + dice·Dice`.
    pub loss: f64,
    /// Next-token cross-entropy.
    pub ce: f64,
    /// Weighted mask BCE.
    pub bce: f64,
    /// Weighted mask Dice loss.
    pub dice: f64,
    /// Answer tokens predicted right (greedy, teacher forcing).
    pub correct_tokens: f64,
    /// Answer tokens.
    pub tokens: f64,
    /// Pixels in prediction ∩ ground truth over the batch's masks.
    pub intersection: f64,
    /// Pixels in prediction ∪ ground truth.
    pub union: f64,
    /// Samples in the batch.
    pub batch_size: usize,
}

impl MimoStepStats {
    /// Next-token accuracy on answer tokens in %, if any were counted.
    pub fn token_accuracy(&self) -> Option<f64> {
        (self.tokens > 0.0).then(|| 100.0 * self.correct_tokens / self.tokens)
    }

    /// Mask IoU (Σ intersection / Σ union) in %, if any mask was counted.
    pub fn mask_iou(&self) -> Option<f64> {
        (self.union > 0.0).then(|| 100.0 * self.intersection / self.union)
    }
}

impl<B: Backend> ItemLazy for MimoStepOutput<B> {
    type ItemSync = MimoStepStats;

    fn sync(self) -> MimoStepStats {
        let l = self.losses.into_data().convert::<f64>().to_vec::<f64>();
        let c = self.counts.into_data().convert::<f64>().to_vec::<f64>();
        let (l, c) = match (l, c) {
            (Ok(l), Ok(c)) if l.len() == 4 && c.len() == 4 => (l, c),
            _ => (vec![f64::NAN; 4], vec![0.0; 4]),
        };
        MimoStepStats {
            loss: l[0],
            ce: l[1],
            bce: l[2],
            dice: l[3],
            correct_tokens: c[0],
            tokens: c[1],
            intersection: c[2],
            union: c[3],
            batch_size: self.batch_size,
        }
    }
}

impl Adaptor<MimoStepStats> for MimoStepStats {
    fn adapt(&self) -> MimoStepStats {
        *self
    }
}

/// The step report of a forward pass: the losses (detached) and the accuracy/IoU counts.
pub fn step_output<B: Backend>(
    out: &MimoOutput<B>,
    gt_masks: &[Tensor<B, 3>],
    batch_size: usize,
) -> MimoStepOutput<B> {
    let device = out.loss.device();
    let losses = Tensor::cat(
        vec![
            out.loss.clone().detach(),
            out.ce.clone().detach(),
            out.mask_bce.clone().detach(),
            out.mask_dice.clone().detach(),
        ],
        0,
    );
    // Next-token accuracy on supervised positions (teacher forcing).
    let [n, s, v] = out.logits.dims();
    let (correct, tokens) = if s >= 2 {
        let pred = out
            .logits
            .clone()
            .detach()
            .slice([0..n, 0..s - 1, 0..v])
            .argmax(2)
            .reshape([n, s - 1]);
        let labels = out.labels.clone().slice([0..n, 1..s]);
        let valid = labels.clone().not_equal_elem(IGNORE_INDEX);
        let hit = pred.equal(labels).bool_and(valid.clone());
        (hit.float().sum(), valid.float().sum())
    } else {
        (Tensor::zeros([1], &device), Tensor::zeros([1], &device))
    };
    let (mut inter, mut union) = (Tensor::zeros([1], &device), Tensor::zeros([1], &device));
    for (p, g) in out.pred_masks.iter().zip(gt_masks) {
        if p.dims()[0] == 0 || p.dims() != g.dims() {
            continue;
        }
        let p = p.clone().detach().greater_elem(0.0);
        let g = g.clone().greater_elem(0.5);
        inter = inter + p.clone().bool_and(g.clone()).float().sum();
        union = union + p.bool_or(g).float().sum();
    }
    let counts = Tensor::cat(vec![correct, tokens, inter, union], 0);
    MimoStepOutput {
        losses,
        counts,
        batch_size,
    }
}

impl<B: Backend> MimoTrainer<B> {
    /// The forward pass on a batch: the model output and the step report.
    pub fn forward_batch(
        &self,
        batch: &MimoBatch<B>,
    ) -> Result<(MimoOutput<B>, MimoStepOutput<B>), MimoError> {
        let input = batch.to_input();
        let gt = input.masks.clone();
        let out = self.mimo.forward(input)?;
        let report = step_output(&out, &gt, batch.ids.len());
        Ok((out, report))
    }
}

impl<B: AutodiffBackend> MimoTrainer<B> {
    /// Forward ([`Mimo::forward_train`]: the frozen encoders on the inner backend) and
    /// backward on a batch (with `recompute_layers`, [`Mimo::forward_backward_recompute`]);
    /// a batch the model rejects is an error, not a panic.
    pub fn try_step(
        &self,
        batch: &MimoBatch<B>,
    ) -> Result<TrainOutput<MimoStepOutput<B>>, MimoError> {
        let input = batch.to_input();
        let gt = input.masks.clone();
        if self.recompute_layers {
            let (out, grads) = self.mimo.forward_backward_recompute(input)?;
            let report = step_output(&out, &gt, batch.ids.len());
            return Ok(TrainOutput {
                grads,
                item: report,
            });
        }
        let out = self.mimo.forward_train(input)?;
        let report = step_output(&out, &gt, batch.ids.len());
        let grads = out.loss.backward();
        Ok(TrainOutput::new(self, grads, report))
    }
}

impl<B: AutodiffBackend> TrainStep for MimoTrainer<B> {
    type Input = MimoBatch<B>;
    type Output = MimoStepOutput<B>;

    /// burn's own strategies call this; `mimo-train`'s strategy calls [`MimoTrainer::try_step`]
    /// and stops the run with the error instead.
    fn step(&self, item: MimoBatch<B>) -> TrainOutput<MimoStepOutput<B>> {
        match self.try_step(&item) {
            Ok(o) => o,
            Err(e) => panic!("MIMO training step failed on {:?}: {e}", item.ids),
        }
    }
}

impl<B: Backend> InferenceStep for MimoTrainer<B> {
    type Input = MimoBatch<B>;
    type Output = MimoStepOutput<B>;

    fn step(&self, item: MimoBatch<B>) -> MimoStepOutput<B> {
        match self.forward_batch(&item) {
            Ok((_, report)) => report,
            Err(e) => panic!("MIMO validation step failed on {:?}: {e}", item.ids),
        }
    }
}

struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.cast(burn::tensor::DType::F32).powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

struct ScaleGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Averages summed micro-batch gradients (`1 / accumulation`) and clips them to a global
/// L2 norm, as `torch.nn.utils.clip_grad_norm_` and DeepSpeed's `gradient_clipping` do
/// (burn's `GradientClippingConfig::Norm` clips each tensor on its own). Returns the
/// gradients and their global norm before clipping.
pub fn average_and_clip<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    accumulation: usize,
    max_norm: Option<f64>,
) -> (GradientsParams, f64) {
    let mut norm = GradNorm::<B> {
        grads: &grads,
        sum: None,
    };
    model.visit(&mut norm);
    let sum = norm
        .sum
        .map(|s| s.into_scalar().elem::<f64>())
        .unwrap_or(0.0);
    let avg = 1.0 / accumulation.max(1) as f64;
    let total = sum.sqrt() * avg;
    // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when < 1.
    let clip = match max_norm {
        Some(m) if total.is_finite() => (m / (total + 1e-6)).min(1.0),
        _ => 1.0,
    };
    let factor = avg * clip;
    if factor != 1.0 {
        let mut scale = ScaleGrads::<B> {
            grads: &mut grads,
            factor,
            _b: std::marker::PhantomData,
        };
        model.visit(&mut scale);
    }
    (grads, total)
}
