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
