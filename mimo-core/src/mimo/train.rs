//! The training forwards: the frozen encoders on the inner backend ([`Mimo::forward_train`])
//! and a forward-backward that recomputes each decoder layer in the backward pass
//! ([`Mimo::forward_backward_recompute`]).

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};

use super::{ClipInput, Mimo, MimoError, MimoInput, MimoOutput, row_positions};

/// Any parameter of `module` that requires a gradient.
fn any_trains<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Trains(bool);
    impl<B: Backend> ModuleVisitor<B> for Trains {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 |= param.val().is_require_grad();
        }
    }
    let mut v = Trains(false);
    module.visit(&mut v);
    v.0
}

/// Moves the gradients of a module's parameters out of one backward pass's `grads` into
/// `into`, adding to what an earlier pass left there (a weight used on both sides of a
/// segment boundary, e.g. tied embeddings, gets the sum).
struct Collect<'a, B: AutodiffBackend> {
    grads: &'a mut B::Gradients,
    into: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad_remove(self.grads) {
            let g = match self.into.remove::<B::InnerBackend, D>(param.id) {
                Some(earlier) => earlier + g,
                None => g,
            };
            self.into.register(param.id, g);
        }
    }
}

fn collect<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut B::Gradients,
    into: &mut GradientsParams,
) {
    module.visit(&mut Collect { grads, into });
}

impl<B: AutodiffBackend> Mimo<B> {
    /// [`Mimo::forward`] for training: what never receives a gradient runs on the inner
    /// backend first — SAM's image encoder always (LISA runs it under `torch.no_grad()`), and
    /// CLIP's tower when none of its parameters trains and `input` holds pixels.
    ///
    /// Under autodiff every operation goes through the autodiff backend even when nothing
    /// is tracked, and burn-autodiff 0.21.0 computes attention with its materialised
    /// fallback (`ops/module.rs`, `attention_fallback`) instead of the backend's fused
    /// kernel: for SAM ViT-H's global blocks, `[16, 4096, 4096]` scores per image. On the
    /// inner backend the encoders use the fused kernels (and, on the CPU, `crate::nn`'s
    /// threaded paths). The values are the same; the gradients are unchanged, since neither
    /// output is differentiated.
    pub fn forward_train(&self, input: MimoInput<B>) -> Result<MimoOutput<B>, MimoError> {
        self.forward(self.frozen_encoders_inner(input))
    }

    /// Runs SAM's image encoder (and CLIP's tower, when frozen) on the inner backend and
    /// puts their outputs into `input` (see [`Mimo::forward_train`]).
    fn frozen_encoders_inner(&self, mut input: MimoInput<B>) -> MimoInput<B> {
        if input.sam_embeddings.is_none() {
            let pixels = input
                .sam_pixels
                .clone()
                .inner()
                .cast(self.sam_encoder_dtype());
            let embeddings = self.sam.image_encoder.valid().forward(pixels);
            input.sam_embeddings = Some(Tensor::from_inner(embeddings));
        }
        if let ClipInput::Pixels(pixels) = &input.clip
            && !any_trains(&self.clip)
        {
            let dtype = self.clip.vision_model.pre_layrnorm.gamma.val().dtype();
            let features = self
                .clip
                .valid()
                .features(pixels.clone().inner().cast(dtype));
            input.clip = ClipInput::Features(Tensor::from_inner(features));
        }
        input
    }

    /// Forward and backward of a training batch with every decoder layer recomputed in the
    /// backward pass, as transformers' `gradient_checkpointing_enable()` does for LISA's
    /// LLaMA (`torch.utils.checkpoint` around each `LlamaDecoderLayer`): the forward keeps
    /// only each layer's input, and the backward re-runs one layer at a time with its graph.
    /// Returns the output (its tensors' graph already consumed) and the gradients of every
    /// parameter that trains, equal to [`Mimo::forward_train`]'s `loss.backward()`.
    ///
    /// burn 0.21 has no per-module checkpoint (its `BalancedCheckpointing` decides per
    /// operation and keeps every matmul's output), so the backward runs in segments: the
    /// head and losses from the last layer's output, then each layer from the gradient of
    /// its output (`Σ y·∂L/∂y`), then the embeddings, the aligner and the prompt encoder.
    /// Held at once: the layer inputs (`[N, L', hidden]` each), one layer's graph, and the
    /// head's.
    ///
    /// LoRA dropout draws its masks again in the recomputation: each layer reseeds the
    /// backend before it runs, from a seed drawn once per call from the backend's generator,
    /// so both runs of a layer see the same masks. The generator is process-wide: two calls
    /// running at once on different threads (devices) would disturb each other's seeds, so
    /// with dropout run one such call at a time.
    pub fn forward_backward_recompute(
        &self,
        input: MimoInput<B>,
    ) -> Result<(MimoOutput<B>, GradientsParams), MimoError> {
        self.forward_backward_layers(input, true, &mut || {})
    }

    /// [`Mimo::forward_backward_recompute`], calling `after_forward` once the forward has
    /// reached the losses and before any backward runs: what is held then is what the
    /// backward keeps (a memory benchmark reads it there).
    pub fn forward_backward_recompute_observed(
        &self,
        input: MimoInput<B>,
        after_forward: &mut dyn FnMut(),
    ) -> Result<(MimoOutput<B>, GradientsParams), MimoError> {
        self.forward_backward_layers(input, true, after_forward)
    }

    /// Whether any LoRA adapter applies dropout (its masks come from the backend's generator).
    pub fn has_dropout(&self) -> bool {
        self.llm
            .model
            .layers
            .iter()
            .flat_map(|l| l.projections())
            .any(|p| p.has_adapter() && p.dropout.prob > 0.0)
    }

    /// The layer-by-layer forward-backward; without `recompute` the layers keep their graph
    /// and one backward runs (same reseeding: the reference that recomputation must equal).
    pub(super) fn forward_backward_layers(
        &self,
        input: MimoInput<B>,
        recompute: bool,
        after_forward: &mut dyn FnMut(),
    ) -> Result<(MimoOutput<B>, GradientsParams), MimoError> {
        let device = self.device();
        let input = self.frozen_encoders_inner(input);
        let asm = self.assemble(&input)?;
        let [_, s, _] = asm.inputs_embeds.dims();
        let h0 = asm.inputs_embeds.clone().cast(self.llm.compute_dtype());
        let ctx = self.llm.decoder_context(
            asm.attention_mask.clone(),
            row_positions(&asm, &device),
            s,
            0,
            h0.dtype(),
        );
        let layers = &self.llm.model.layers;
        // Per-layer seeds: the same dropout masks in the forward and the recomputation.
        let seeds: Option<u64> = self.has_dropout().then(|| {
            let r = Tensor::<B::InnerBackend, 1>::random([2], Distribution::Default, &device)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default();
            r.iter().fold(0x243F_6A88_85A3_08D3u64, |a, v| {
                (a ^ v.to_bits() as u64).wrapping_mul(0x100_0000_01B3)
            })
        });
        let reseed = |i: usize| {
            if let Some(base) = seeds {
                B::seed(
                    &device,
                    base ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
            }
        };
        let mut params = GradientsParams::new();
        if !recompute {
            let mut x = h0;
            for (i, layer) in layers.iter().enumerate() {
                reseed(i);
                x = layer.forward(x, &ctx, &mut None);
            }
            let out = self.finish_forward(&input, &asm, self.llm.head(x, false))?;
            after_forward();
            let mut grads = out.loss.backward();
            collect(self, &mut grads, &mut params);
            return Ok((out, params));
        }
        // The forward without a graph, keeping each layer's input.
        let mut inputs = Vec::with_capacity(layers.len());
        let mut x = h0.clone().detach();
        for (i, layer) in layers.iter().enumerate() {
            reseed(i);
            inputs.push(x.clone());
            x = layer.clone().no_grad().forward(x, &ctx, &mut None);
        }
        // The head and the losses, then their backward.
        let top = x.require_grad();
        let out = self.finish_forward(&input, &asm, self.llm.head(top.clone(), false))?;
        after_forward();
        let mut grads = out.loss.backward();
        let mut g = top.grad_remove(&mut grads);
        collect(self, &mut grads, &mut params);
        drop(grads);
        // Each layer from the last: its forward again, then the backward of `Σ y·g`.
        for (i, (layer, x)) in layers.iter().zip(inputs).enumerate().rev() {
            let Some(upstream) = g.take() else {
                // Nothing reaches this layer's output (no loss term depends on it).
                break;
            };
            reseed(i);
            let x = x.require_grad();
            let y = layer.forward(x.clone(), &ctx, &mut None);
            let mut grads = (y * Tensor::from_inner(upstream)).sum().backward();
            g = x.grad_remove(&mut grads);
            collect(layer, &mut grads, &mut params);
        }
        // The embeddings and what produced them (prompt encoder, aligner, projector).
        if let Some(upstream) = g {
            let mut grads = (h0 * Tensor::from_inner(upstream)).sum().backward();
            collect(self, &mut grads, &mut params);
        }
        Ok((out, params))
    }
}

#[cfg(test)]
mod tests;
