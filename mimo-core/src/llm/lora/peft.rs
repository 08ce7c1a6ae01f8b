//! peft's adapter files: `adapter_model.safetensors` (or `.bin`) with keys
//! `base_model.model.<module>.lora_{A,B}.weight` in PyTorch's `[out, in]` layout, read into
//! and written from a [`Llama`]'s [`super::LoraLinear`]s.

use std::path::Path;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;

use super::{LoraConfig, LoraError};
use crate::llm::Llama;
use crate::loader::{Checkpoint, LoadReport, PatternDialect, load_checkpoint_partial};

/// peft's file keys: `base_model.model.<module>.lora_{A,B}.weight` <->
/// `<module>.lora_{a,b}.weight`. Also read: the in-memory form with an adapter name
/// (`lora_A.default.weight`) and keys without peft's `base_model.model.` prefix; and the
/// `modules_to_save` tensors (`base_model.model.model.embed_tokens.weight`,
/// `base_model.model.lm_head.weight`).
const ADAPTER_DIALECT: PatternDialect = PatternDialect {
    name: "peft LoRA adapter",
    rules: &[
        ("base_model.model.**.lora_A.weight", "**.lora_a.weight"),
        ("base_model.model.**.lora_B.weight", "**.lora_b.weight"),
        ("base_model.model.**.lora_A.*.weight", "**.lora_a.weight"),
        ("base_model.model.**.lora_B.*.weight", "**.lora_b.weight"),
        ("**.lora_A.weight", "**.lora_a.weight"),
        ("**.lora_B.weight", "**.lora_b.weight"),
        ("**.lora_A.*.weight", "**.lora_a.weight"),
        ("**.lora_B.*.weight", "**.lora_b.weight"),
        // modules_to_save: whole modules, under their own names.
        (
            "base_model.model.model.embed_tokens.weight",
            "model.embed_tokens.weight",
        ),
        ("base_model.model.lm_head.weight", "lm_head.weight"),
    ],
    keep_unmatched: false,
};

impl<B: Backend> Llama<B> {
    /// Attaches the adapter of a peft directory (`adapter_config.json` +
    /// `adapter_model.safetensors` or `adapter_model.bin`): every adapter tensor the config
    /// implies must be in the file with its shape, and so must the `modules_to_save`
    /// (`embed_tokens`, `lm_head`), which replace the model's and train with the adapters.
    pub fn load_lora(
        self,
        dir: impl AsRef<Path>,
    ) -> Result<(Self, LoraConfig, LoadReport), LoraError> {
        let dir = dir.as_ref();
        let config = LoraConfig::load(dir)?;
        let (model, _) = self.with_lora(&config)?;
        let file = ["adapter_model.safetensors", "adapter_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join("adapter_model.safetensors"));
        let checkpoint = Checkpoint::open(&file)?;
        // The adapter takes the base model's dtype.
        let dtype = model.dtype();
        let (model, report) = load_checkpoint_partial(
            model,
            &checkpoint,
            &ADAPTER_DIALECT,
            &|p| {
                p.contains(".lora_a.")
                    || p.contains(".lora_b.")
                    || (p == "model.embed_tokens.weight" && config.saves("embed_tokens"))
                    || (p.starts_with("lm_head.") && config.saves("lm_head"))
            },
            dtype,
        )?;
        Ok((model, config, report))
    }

    /// Writes the adapters as a peft directory (`adapter_config.json` and
    /// `adapter_model.safetensors`, keys and layouts as peft saves them), atomically.
    pub fn save_lora(&self, config: &LoraConfig, dir: impl AsRef<Path>) -> Result<(), LoraError> {
        let dir = dir.as_ref();
        let io = |path: &Path, e: std::io::Error| LoraError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (path, _, p) in self.projections() {
            let (Some(a), Some(b)) = (&p.lora_a, &p.lora_b) else {
                continue;
            };
            for (tag, w) in [("lora_A", &a.weight), ("lora_B", &b.weight)] {
                // burn [in, out] -> PyTorch [out, in]
                let t = w.val().transpose();
                let shape = t.dims().to_vec();
                let data: TensorData = t.into_data().convert::<f32>();
                let bytes = data.as_bytes().to_vec();
                tensors.push((
                    format!("base_model.model.{path}.{tag}.weight"),
                    shape,
                    bytes,
                ));
            }
        }
        // modules_to_save, in PyTorch's layout ([vocab, hidden] for both).
        if config.saves("embed_tokens") {
            let t = self.model.embed_tokens.weight.val();
            let data: TensorData = t.clone().into_data().convert::<f32>();
            tensors.push((
                "base_model.model.model.embed_tokens.weight".into(),
                t.dims().to_vec(),
                data.as_bytes().to_vec(),
            ));
        }
        if config.saves("lm_head") {
            let head = self.lm_head.as_ref().ok_or_else(|| LoraError::Config {
                field: "modules_to_save",
                message: "the model ties lm_head to embed_tokens: there is no lm_head to save"
                    .into(),
            })?;
            let t = head.weight.val().transpose();
            let data: TensorData = t.clone().into_data().convert::<f32>();
            tensors.push((
                "base_model.model.lm_head.weight".into(),
                t.dims().to_vec(),
                data.as_bytes().to_vec(),
            ));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(k, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| LoraError::Io {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let weights = dir.join("adapter_model.safetensors");
        crate::fsutil::write_atomic(&weights, &bytes).map_err(|e| io(&weights, e))?;
        let cfg = dir.join("adapter_config.json");
        crate::fsutil::write_atomic(&cfg, config.to_peft_json().as_bytes())
            .map_err(|e| io(&cfg, e))?;
        Ok(())
    }
}
