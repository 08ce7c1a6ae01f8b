//! `activation_checkpointing`: how the backward pass saves activation memory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Experiment;

/// How training trades compute for activation memory (`activation_checkpointing` in
/// experiment files: `"off"`, `"balanced"` or `"decoder_layers"`; `false`/`true` are read as
/// `"off"`/`"balanced"`, as earlier experiment files wrote it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Written", into = "String")]
pub enum ActivationCheckpointing {
    /// The backward pass gets every activation it needs from the forward (fastest).
    #[default]
    Off,
    /// burn's `Autodiff<B, BalancedCheckpointing>`: only the outputs of compute-bound
    /// operations (matmuls, convolutions) are kept; the memory-bound ones (element-wise,
    /// activations, normalisations) are recomputed in the backward pass.
    Balanced,
    /// Each LLM decoder layer is recomputed in the backward pass
    /// (`Mimo::forward_backward_recompute`, as transformers' gradient checkpointing does for
    /// LISA): the forward keeps one `[N, L', hidden]` input per layer instead of the layer's
    /// activations, for about one more forward of the decoder per step.
    DecoderLayers,
}

/// What an experiment file may hold for the field.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Flag(bool),
    Name(String),
}

impl TryFrom<Written> for ActivationCheckpointing {
    type Error = String;

    fn try_from(w: Written) -> Result<Self, String> {
        match w {
            Written::Flag(false) => Ok(Self::Off),
            Written::Flag(true) => Ok(Self::Balanced),
            Written::Name(s) => match s.as_str() {
                "off" => Ok(Self::Off),
                "balanced" => Ok(Self::Balanced),
                "decoder_layers" => Ok(Self::DecoderLayers),
                _ => Err(format!(
                    "unknown activation_checkpointing `{s}`: use \"off\", \"balanced\" or \
                     \"decoder_layers\""
                )),
            },
        }
    }
}

impl From<ActivationCheckpointing> for String {
    fn from(a: ActivationCheckpointing) -> String {
        match a {
            ActivationCheckpointing::Off => "off",
            ActivationCheckpointing::Balanced => "balanced",
            ActivationCheckpointing::DecoderLayers => "decoder_layers",
        }
        .into()
    }
}

impl Experiment {
    /// With `"decoder_layers"` and several devices in one process, the model's LoRA dropout
    /// must be 0: the recomputation redraws the dropout masks from per-layer reseeds of
    /// burn's one process-wide generator, which devices stepping side by side would disturb.
    /// The error names the field; `exp_dir` is where the experiment's paths start.
    pub fn check_recompute(
        &self,
        exp_dir: &Path,
        devices: usize,
    ) -> Result<(), (&'static str, String)> {
        if self.activation_checkpointing != ActivationCheckpointing::DecoderLayers || devices < 2 {
            return Ok(());
        }
        let dropout = mimo_core::mimo::MimoConfig::load(exp_dir.join(&self.model))
            .map(|c| c.lora.dropout)
            .unwrap_or(0.0);
        if dropout > 0.0 {
            return Err((
                "activation_checkpointing",
                format!(
                    "is \"decoder_layers\" with {devices} devices in one process and LoRA \
                     dropout {dropout} in {}: the recomputed layers would not redraw the same \
                     dropout masks. Run one process per device (`batch.devices: 1` with \
                     `batch.nodes`), or use \"balanced\"",
                    self.model.display()
                ),
            ));
        }
        Ok(())
    }
}
