//! Checkpoint loading: one module per checkpoint dialect, each a commented remap table from
//! the file's keys to our module paths, on top of the shared machinery here (format
//! detection, typed errors that name the key and both shapes, unused-key reports, dtype
//! normalisation, and listing a module's parameters under the file's names).

pub mod sam;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use burn_store::{
    ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, PytorchStore, SafetensorsStore,
};

/// Why a checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist or cannot be opened.
    #[error("cannot open checkpoint {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
    /// The extension is neither `.pth`/`.pt`/`.bin` nor `.safetensors`.
    #[error("unknown checkpoint format for {path}: expected .pth, .pt, .bin or .safetensors")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be parsed.
    #[error("cannot read checkpoint {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// Tensors the model needs are not in the file.
    #[error("checkpoint {path} does not fit the model: {} missing key(s): {}", missing.len(), list(missing))]
    Missing {
        /// The file.
        path: PathBuf,
        /// `key [expected shape]`, with file key names.
        missing: Vec<String>,
    },
    /// A tensor has another shape than the model expects.
    #[error(
        "checkpoint {path} does not fit the model: key `{key}` has shape {found:?} in the file but the model expects {expected:?}"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The file's key.
        key: String,
        /// Shape the model expects (file layout).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// Any other per-tensor failure.
    #[error("checkpoint {path}: key `{key}`: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The file's key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

fn list(v: &[String]) -> String {
    const MAX: usize = 8;
    let mut s = v.iter().take(MAX).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > MAX {
        s.push_str(&format!(", ... ({} more)", v.len() - MAX));
    }
    s
}

/// What a successful load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Number of tensors written into the model.
    pub applied: usize,
    /// File keys the model did not use (e.g. buffers of other heads).
    pub unused: Vec<String>,
}

/// A checkpoint dialect: how file keys map onto module paths and back.
///
/// Each entry is `(file prefix, module prefix)`; a key that starts with the file prefix has
/// it replaced by the module prefix. Burn's PyTorch adapter additionally transposes
/// `nn::Linear` weights and renames LayerNorm `weight`/`bias` to `gamma`/`beta`.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// Human-readable name, for messages.
    pub name: &'static str,
    /// Prefix renames, file -> module.
    pub renames: &'static [(&'static str, &'static str)],
}

impl Dialect {
    /// Module path of a file key.
    pub fn to_module(&self, key: &str) -> String {
        rename(key, self.renames.iter().map(|&(f, m)| (f, m)))
    }

    /// The renames as anchored regex patterns for burn-store.
    pub fn remapper(&self) -> Result<KeyRemapper, String> {
        KeyRemapper::from_pattern_iter(
            self.renames
                .iter()
                .map(|(f, m)| (format!("^{}", regex_escape(f)), m.to_string())),
        )
        .map_err(|e| e.to_string())
    }

    /// File key of a module path (parameter names as PyTorch spells them).
    pub fn to_file(&self, path: &str) -> String {
        rename(path, self.renames.iter().map(|&(f, m)| (m, f)))
    }
}

fn rename<'a>(key: &str, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    match pairs.find(|(from, _)| key.starts_with(from)) {
        Some((from, to)) => format!("{to}{}", &key[from.len()..]),
        None => key.to_string(),
    }
}

/// One parameter of a module as it appears in a PyTorch checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileParam {
    /// The module path (burn naming).
    pub module_path: String,
    /// The checkpoint key.
    pub key: String,
    /// Shape in the checkpoint's layout (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Whether the file stores the tensor transposed relative to the module (linear weights).
    pub transposed: bool,
}

/// Lists a module's parameters under checkpoint names and layouts without initialising any
/// lazy parameter (so a ViT-H can be listed without allocating its weights).
pub fn file_params<B: Backend, M: Module<B>>(module: &M, dialect: &Dialect) -> Vec<FileParam> {
    struct Lister {
        path: Vec<String>,
        containers: Vec<String>,
        out: Vec<(String, String, Vec<usize>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Lister {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let container = self
                .containers
                .iter()
                .rev()
                .find(|c| c.starts_with("Struct:"))
                .cloned()
                .unwrap_or_default();
            self.out.push((
                self.path.join("."),
                container,
                param.lazy_shape().as_slice().to_vec(),
            ));
        }
    }
    let mut lister = Lister {
        path: Vec::new(),
        containers: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut lister);
    lister
        .out
        .into_iter()
        .map(|(path, container, mut shape)| {
            let (parent, leaf) = path.rsplit_once('.').unwrap_or(("", path.as_str()));
            let transposed = container == "Struct:Linear" && leaf == "weight";
            let leaf = match (container.as_str(), leaf) {
                ("Struct:LayerNorm", "gamma") => "weight",
                ("Struct:LayerNorm", "beta") => "bias",
                ("Struct:Linear", "weight") => {
                    shape.reverse();
                    "weight"
                }
                (_, l) => l,
            };
            let torch_path = if parent.is_empty() {
                leaf.to_string()
            } else {
                format!("{parent}.{leaf}")
            };
            FileParam {
                key: dialect.to_file(&torch_path),
                module_path: path,
                shape,
                transposed,
            }
        })
        .collect()
}

/// Casts every float parameter to f32 (half-precision checkpoints load in their own dtype).
struct CastToF32;

impl<B: Backend> ModuleMapper<B> for CastToF32 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !param.is_initialized() || param.dtype() == DType::F32 {
            return param;
        }
        param.map(|t| t.cast(DType::F32))
    }
}

/// Loads a checkpoint in any supported format into `module`, requiring every module
/// parameter to be present with the right shape.
pub fn load_into<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: M,
    path: &Path,
    dialect: &Dialect,
) -> Result<(M, LoadReport), LoadError> {
    let mut module = module;
    if !path.is_file() {
        return Err(LoadError::Open {
            path: path.to_path_buf(),
            message: if path.exists() {
                "not a file".into()
            } else {
                "no such file".into()
            },
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let read_err = |e: String| LoadError::Read {
        path: path.to_path_buf(),
        message: e,
    };
    let remapper = dialect.remapper().map_err(read_err)?;
    let result: ApplyResult = match ext.as_str() {
        "safetensors" => module
            .load_from(
                &mut SafetensorsStore::from_file(path)
                    .with_from_adapter(burn_store::PyTorchToBurnAdapter)
                    .remap(remapper)
                    .allow_partial(true)
                    .validate(false),
            )
            .map_err(|e| e.to_string()),
        // PytorchStore applies the PyTorch adapter itself.
        "pth" | "pt" | "bin" => module
            .load_from(
                &mut PytorchStore::from_file(path)
                    .map_indices_contiguous(false)
                    .remap(remapper)
                    .allow_partial(true)
                    .validate(false),
            )
            .map_err(|e| e.to_string()),
        _ => {
            return Err(LoadError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    }
    .map_err(read_err)?;
    check_result(&module, path, dialect, &result)?;
    let module = module.map(&mut CastToF32);
    let mut unused: Vec<String> = result
        .unused
        .iter()
        .map(|k| dialect.to_file(k))
        .filter(|k| !norm_alias_applied(k, &result, dialect))
        .collect();
    unused.sort();
    Ok((
        module,
        LoadReport {
            applied: result.applied.len(),
            unused,
        },
    ))
}

/// burn-store lists LayerNorm `weight`/`bias` as unused even though the adapter applied them
/// under `gamma`/`beta`; drop those from the report.
fn norm_alias_applied(file_key: &str, result: &ApplyResult, dialect: &Dialect) -> bool {
    let module_key = dialect.to_module(file_key);
    let alias = if let Some(p) = module_key.strip_suffix(".weight") {
        format!("{p}.gamma")
    } else if let Some(p) = module_key.strip_suffix(".bias") {
        format!("{p}.beta")
    } else {
        return false;
    };
    result.applied.contains(&alias)
}

fn check_result<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
    dialect: &Dialect,
    result: &ApplyResult,
) -> Result<(), LoadError> {
    let params = file_params(module, dialect);
    let key_of = |module_path: &str| {
        params
            .iter()
            .find(|p| p.module_path == module_path)
            .map(|p| p.key.clone())
            .unwrap_or_else(|| dialect.to_file(module_path))
    };
    if let Some(err) = result.errors.first() {
        return Err(match err {
            ApplyError::ShapeMismatch {
                path: p,
                expected,
                found,
            } => {
                // Shapes in the error are in module layout; report the file layout.
                let fp = params.iter().find(|fp| fp.module_path == *p);
                let transposed = fp.is_some_and(|fp| fp.transposed);
                let flip = |s: &[usize]| {
                    let mut v = s.to_vec();
                    if transposed {
                        v.reverse();
                    }
                    v
                };
                LoadError::Shape {
                    path: path.to_path_buf(),
                    key: key_of(p),
                    expected: flip(expected.as_slice()),
                    found: flip(found.as_slice()),
                }
            }
            other => {
                let (p, message) = match other {
                    ApplyError::DTypeMismatch {
                        path,
                        expected,
                        found,
                    } => (path, format!("dtype {found:?}, expected {expected:?}")),
                    ApplyError::AdapterError { path, message } => (path, message.clone()),
                    ApplyError::LoadError { path, message } => (path, message.clone()),
                    ApplyError::ShapeMismatch { path, .. } => (path, String::new()),
                };
                LoadError::Tensor {
                    path: path.to_path_buf(),
                    key: key_of(p),
                    message,
                }
            }
        });
    }
    if !result.missing.is_empty() {
        let missing = result
            .missing
            .iter()
            .map(|(p, _)| {
                let fp = params.iter().find(|fp| fp.module_path == *p);
                match fp {
                    Some(fp) => format!("{} {:?}", fp.key, fp.shape),
                    None => dialect.to_file(p),
                }
            })
            .collect();
        return Err(LoadError::Missing {
            path: path.to_path_buf(),
            missing,
        });
    }
    Ok(())
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
