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

/// The default device of the backend.
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}

/// The devices with these indices (CUDA: GPU `i`; wgpu: discrete GPU `i`; the CPU backend
/// has one device, so every index names it: several "devices" there share the cores, which
/// is how the data-parallel path is tested without GPUs).
pub fn devices(indices: &[usize]) -> Vec<burn::tensor::Device<Backend>> {
    indices.iter().map(|&i| device_at(i)).collect()
}

#[cfg(feature = "cuda")]
fn device_at(i: usize) -> burn::tensor::Device<Backend> {
    burn::backend::cuda::CudaDevice::new(i)
}

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
fn device_at(i: usize) -> burn::tensor::Device<Backend> {
    burn::backend::wgpu::WgpuDevice::DiscreteGpu(i)
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn device_at(_: usize) -> burn::tensor::Device<Backend> {
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
