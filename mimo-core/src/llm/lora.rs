//! LoRA adapters compatible with peft: `y = W x + (B(A(dropout(x)))) · alpha / r`, A
//! kaiming-uniform and B zero at creation, base weights frozen, merge into and unmerge from
//! the base, and the peft file format (`adapter_config.json` + `adapter_model.safetensors`
//! with keys `base_model.model.<module>.lora_{A,B}.weight`, PyTorch `[out, in]` layout), so
//! an adapter trained here loads in peft and the other way round.

mod config;
mod peft;

pub use config::{LayerSelection, LoraConfig, LoraError, MODULES_TO_SAVE, TargetModules};

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{Llama, LlamaDecoderLayer};
use crate::nn::linear_rows;

/// A linear layer that can carry a LoRA adapter. The base layer is a plain burn `Linear`
/// (`<name>.base.*`); the checkpoint dialect maps HF's `<name>.weight` onto it.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The (frozen) base projection.
    pub base: Linear<B>,
    /// `A`: `in -> r`, no bias.
    pub lora_a: Option<Linear<B>>,
    /// `B`: `r -> out`, no bias.
    pub lora_b: Option<Linear<B>>,
    /// Dropout on the adapter's input (active only on an autodiff backend).
    pub dropout: Dropout,
    /// `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub scaling: f64,
    /// Whether `B A · scaling` has been added to the base weight.
    pub merged: bool,
}

impl<B: Backend> LoraLinear<B> {
    /// A layer without adapter.
    pub fn new(base: Linear<B>) -> Self {
        Self {
            base,
            lora_a: None,
            lora_b: None,
            dropout: DropoutConfig::new(0.0).init(),
            scaling: 1.0,
            merged: false,
        }
    }

    /// Applies the layer to `[..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match (&self.lora_a, &self.lora_b) {
            (Some(a), Some(b)) if !self.merged => {
                let y = linear_rows(&self.base, x.clone());
                // The adapter may be in another dtype than the base (f32 adapters on a
                // bf16 base in training): it computes in its own and adds in the base's.
                let dtype = a.weight.val().dtype();
                let z = linear_rows(b, linear_rows(a, self.dropout.forward(x.cast(dtype))))
                    .mul_scalar(self.scaling);
                let out = y.dtype();
                y + z.cast(out)
            }
            _ => linear_rows(&self.base, x),
        }
    }

    /// Whether an adapter is attached.
    pub fn has_adapter(&self) -> bool {
        self.lora_a.is_some() && self.lora_b.is_some()
    }

    /// `B A · scaling` in burn's `[in, out]` layout.
    fn delta(&self) -> Option<Tensor<B, 2>> {
        let (a, b) = (self.lora_a.as_ref()?, self.lora_b.as_ref()?);
        Some(
            a.weight
                .val()
                .matmul(b.weight.val())
                .mul_scalar(self.scaling),
        )
    }

    /// Adds the adapter into the base weight (faster inference; the adapter stays).
    pub fn merge(&mut self) {
        if !self.merged
            && let Some(d) = self.delta()
        {
            self.base.weight = self.base.weight.clone().map(|w| w + d);
            self.merged = true;
        }
    }

    /// Subtracts a merged adapter from the base weight again.
    pub fn unmerge(&mut self) {
        if self.merged
            && let Some(d) = self.delta()
        {
            self.base.weight = self.base.weight.clone().map(|w| w - d);
            self.merged = false;
        }
    }
}

/// Marks every parameter as not requiring gradients, keeping lazy ones lazy (burn's
/// `Module::no_grad` would materialise a 7B model's weights).
struct Freeze;

impl<B: Backend> burn::module::ModuleMapper<B> for Freeze {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        param.set_require_grad(false)
    }
}

/// Projection names of a LLaMA layer that can take adapters, in the order of
/// [`LlamaDecoderLayer::projections`].
pub const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl<B: Backend> LlamaDecoderLayer<B> {
    /// The layer's projections in [`PROJECTIONS`] order.
    pub fn projections(&self) -> [&LoraLinear<B>; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
    }

    /// [`LlamaDecoderLayer::projections`], mutable.
    pub fn projections_mut(&mut self) -> [&mut LoraLinear<B>; 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            &mut a.q_proj,
            &mut a.k_proj,
            &mut a.v_proj,
            &mut a.o_proj,
            &mut m.gate_proj,
            &mut m.up_proj,
            &mut m.down_proj,
        ]
    }
}

impl<B: Backend> Llama<B> {
    /// Every projection with its module path (`model.layers.3.self_attn.q_proj`) and layer.
    pub fn projections(&self) -> Vec<(String, usize, &LoraLinear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.model.layers.iter().enumerate() {
            for (name, p) in PROJECTIONS.iter().zip(l.projections()) {
                out.push((format!("model.layers.{i}.{name}"), i, p));
            }
        }
        out
    }

    /// [`Llama::projections`], mutable.
    pub fn projections_mut(&mut self) -> Vec<(String, usize, &mut LoraLinear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.model.layers.iter_mut().enumerate() {
            for (name, p) in PROJECTIONS.iter().zip(l.projections_mut()) {
                out.push((format!("model.layers.{i}.{name}"), i, p));
            }
        }
        out
    }

    /// Freezes every existing parameter (as peft's `get_peft_model`) and attaches fresh
    /// adapters (A kaiming-uniform, B zero: the output is unchanged) to the targeted
    /// projections. Returns the number of adapted modules.
    pub fn with_lora(self, config: &LoraConfig) -> Result<(Self, usize), LoraError> {
        config.validate()?;
        let mut model = self.map(&mut Freeze);
        let device = model.model.embed_tokens.weight.lazy_device();
        let mut count = 0;
        let mut example = String::new();
        for (path, layer, proj) in model.projections_mut() {
            if example.is_empty() {
                example = path.clone();
            }
            if !config.targets(&path, layer) {
                continue;
            }
            // lazy_shape: dims() would materialise a lazily initialised base weight.
            let shape = proj.base.weight.lazy_shape();
            let (d_in, d_out) = (shape.as_slice()[0], shape.as_slice()[1]);
            proj.lora_a = Some(
                LinearConfig::new(d_in, config.r)
                    .with_bias(false)
                    .init(&device),
            );
            proj.lora_b = Some(
                LinearConfig::new(config.r, d_out)
                    .with_bias(false)
                    .with_initializer(Initializer::Zeros)
                    .init(&device),
            );
            proj.dropout = DropoutConfig::new(config.lora_dropout).init();
            proj.scaling = config.scaling();
            proj.merged = false;
            count += 1;
        }
        if count == 0 {
            return Err(LoraError::NoTarget {
                targets: serde_json::to_string(&config.target_modules).unwrap_or_default(),
                example,
            });
        }
        // modules_to_save train in full beside the adapters.
        if config.saves("embed_tokens") {
            let w = model.model.embed_tokens.weight;
            model.model.embed_tokens.weight = w.set_require_grad(true);
        }
        if config.saves("lm_head") {
            let head = model.lm_head.as_mut().ok_or_else(|| LoraError::Config {
                field: "modules_to_save",
                message: "the model ties lm_head to embed_tokens: there is no lm_head to train"
                    .into(),
            })?;
            let w = head.weight.clone();
            head.weight = w.set_require_grad(true);
        }
        Ok((model, count))
    }

    /// Adds every adapter into its base weight.
    pub fn merge_lora(mut self) -> Self {
        for (_, _, p) in self.projections_mut() {
            p.merge();
        }
        self
    }

    /// Undoes [`Llama::merge_lora`].
    pub fn unmerge_lora(mut self) -> Self {
        for (_, _, p) in self.projections_mut() {
            p.unmerge();
        }
        self
    }

    /// Number of trainable LoRA parameters.
    pub fn lora_param_count(&self) -> usize {
        self.projections()
            .into_iter()
            .map(|(_, _, p)| {
                p.lora_a
                    .as_ref()
                    .map_or(0, |a| a.weight.shape().num_elements())
                    + p.lora_b
                        .as_ref()
                        .map_or(0, |b| b.weight.shape().num_elements())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests;
