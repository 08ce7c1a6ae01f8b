//! The backend the CLI runs on, chosen at compile time by cargo feature: `cuda`, else
//! `wgpu`, else the default pure-Rust CPU backend `flex`.

#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Backend = burn::backend::Wgpu;

#[cfg(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda"))))]
pub type Backend = burn::backend::Flex;

#[cfg(not(any(feature = "flex", feature = "wgpu", feature = "cuda")))]
compile_error!("enable one backend feature: flex (default), wgpu or cuda");

/// Name of the compiled-in backend, for messages.
pub const NAME: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else {
    "flex (CPU)"
};

/// A backend chosen at run time (`mimo train --backend`) among those compiled in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// burn-flex, the pure-Rust CPU backend (cargo feature `flex`, on by default).
    Flex,
    /// burn-wgpu: Vulkan, Metal or DX12 (cargo feature `wgpu`).
    Wgpu,
    /// burn-cuda: NVIDIA GPUs (cargo feature `cuda`).
    Cuda,
}

impl Kind {
    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Kind::Flex => "flex",
            Kind::Wgpu => "wgpu",
            Kind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled(self) -> bool {
        match self {
            Kind::Flex => cfg!(feature = "flex"),
            Kind::Wgpu => cfg!(feature = "wgpu"),
            Kind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backend every other command runs on ([`Backend`]).
    pub fn default_kind() -> Kind {
        if cfg!(feature = "cuda") {
            Kind::Cuda
        } else if cfg!(feature = "wgpu") {
            Kind::Wgpu
        } else {
            Kind::Flex
        }
    }

    /// `Ok` when compiled in, else an error saying how to build a binary that has it.
    pub fn check(self) -> Result<Kind, String> {
        if self.compiled() {
            return Ok(self);
        }
        let have: Vec<&str> = [Kind::Flex, Kind::Wgpu, Kind::Cuda]
            .into_iter()
            .filter(|k| k.compiled())
            .map(Kind::feature)
            .collect();
        Err(format!(
            "--backend {0}: this mimo was built without the `{0}` cargo feature (it has: {1}); \
             build one with `cargo build --release --features {0}`",
            self.feature(),
            have.join(", ")
        ))
    }
}

/// The default device of the backend.
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}

/// Says on stderr which checkpoint is being loaded, as which model, on which backend.
pub fn announce_load(checkpoint: &std::path::Path, model: &str) {
    eprintln!("loading {} ({model}) on {NAME}", checkpoint.display());
}

/// Lists checkpoint keys the model did not use (another tower, buffers), briefly.
pub fn note_unused(unused: &[String]) {
    if unused.is_empty() {
        return;
    }
    let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
    let more = unused.len().saturating_sub(shown.len());
    eprintln!(
        "note: {} checkpoint key(s) not used by the model: {}{}",
        unused.len(),
        shown.join(", "),
        if more > 0 {
            format!(", ... ({more} more)")
        } else {
            String::new()
        }
    );
}

/// A `--dtype` value: f32, bf16 or f16.
pub fn parse_dtype(s: &str) -> Result<burn::tensor::DType, String> {
    use burn::tensor::DType;
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(format!("unknown --dtype `{other}`: use f32, bf16 or f16")),
    }
}
