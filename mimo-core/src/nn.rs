//! Small building blocks shared by the model components that burn does not ship with
//! PyTorch-compatible parameter names.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

/// Channel-first layer normalisation over dim 1 of a `[B, C, H, W]` tensor.
///
/// Matches segment_anything's `LayerNorm2d`: `(x - mean_c) / sqrt(var_c + eps) * weight + bias`
/// with the biased variance. Parameters are named `weight`/`bias` like the PyTorch module, so
/// checkpoints load without renaming.
#[derive(Module, Debug)]
pub struct LayerNorm2d<B: Backend> {
    /// Per-channel scale, `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift, `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<B: Backend> LayerNorm2d<B> {
    /// A layer norm over `channels` with weight 1, bias 0.
    pub fn new(channels: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            eps,
        }
    }

    /// Normalises `x: [B, C, H, W]` over `C`.
    ///
    /// Computed channel-last: reductions over the innermost axis are several times faster
    /// than strided ones on CPU backends, which outweighs the two layout copies.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let x = x.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
        let (var, mean) = x.clone().var_mean_bias(1);
        let x = (x - mean) / (var + self.eps).sqrt();
        let x = x * self.weight.val().unsqueeze::<2>() + self.bias.val().unsqueeze::<2>();
        x.reshape([b, h, w, c]).permute([0, 3, 1, 2])
    }
}

/// A stack of linear layers with ReLU between them (none after the last), like
/// segment_anything's `MLP` (`layers.{i}.weight`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The linear layers, applied in order.
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    /// `num_layers` linear layers: `input -> hidden -> ... -> hidden -> output`.
    pub fn new(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        device: &B::Device,
    ) -> Self {
        let layers = (0..num_layers)
            .map(|i| {
                let d_in = if i == 0 { input_dim } else { hidden_dim };
                let d_out = if i + 1 == num_layers {
                    output_dim
                } else {
                    hidden_dim
                };
                LinearConfig::new(d_in, d_out).init(device)
            })
            .collect();
        Self { layers }
    }

    /// Applies the layers with ReLU after every layer but the last.
    pub fn forward<const D: usize>(&self, mut x: Tensor<B, D>) -> Tensor<B, D> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = relu(x);
            }
        }
        x
    }
}

/// Casts every float parameter of a module to `dtype` (e.g. `DType::BF16` on a GPU). Each cast
/// parameter is a new leaf with the original's gradient requirement, so a cast model trains.
pub fn cast_module<B: Backend, M: burn::module::Module<B>>(
    module: M,
    dtype: burn::tensor::DType,
) -> M {
    struct CastTo(burn::tensor::DType);
    impl<B: Backend> burn::module::ModuleMapper<B> for CastTo {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            let dtype = self.0;
            if param.dtype() == dtype {
                return param;
            }
            param.map(|t| {
                let require = t.is_require_grad();
                t.cast(dtype).detach().set_require_grad(require)
            })
        }
    }
    module.map(&mut CastTo(dtype))
}
