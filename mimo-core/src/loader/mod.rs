//! Checkpoint loading, the machinery every model shares: reading
//! `.safetensors` (single or sharded with an HF `index.json`) and PyTorch `.pth`/`.pt`/`.bin`
//! files into a [`Checkpoint`], mapping its tensors through a [`Dialect`] (renames, splits of
//! fused tensors, transposes), typed errors that name the file key and both shapes,
//! unused-key reports, dtype normalisation, and listing a module's parameters under the
//! file's names.
//!
//! Each model owns its dialect beside its code: [`crate::sam::load`] (segment_anything),
//! [`crate::clip::load`] (HF and open_clip), [`crate::llm::load`] (HF LLaMA) and peft's
//! adapter files in [`crate::llm::lora`]. This module imports no model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_store::{
    ApplyError, ApplyResult, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore, TensorSnapshot, TensorSnapshotError,
};

mod pattern;

pub use pattern::PatternDialect;

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
    /// The extension is neither `.pth`/`.pt`/`.bin`, `.safetensors` nor `.index.json`.
    #[error(
        "unknown checkpoint format for {path}: expected .pth, .pt, .bin, .safetensors or a sharded model.safetensors.index.json"
    )]
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
    /// Tensors of the model's own parts that the configuration leaves unused: the config
    /// disagrees with the checkpoint (e.g. fewer layers), which would silently run a cut-down
    /// model.
    #[error("checkpoint {path} does not fit the config: {} of its tensors would be unused: {}{hint}", keys.len(), list(keys))]
    Unused {
        /// The file.
        path: PathBuf,
        /// The unused file keys.
        keys: Vec<String>,
        /// Which config field disagrees, when it can be told.
        hint: String,
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

/// Where and in which float dtype a model is built from its checkpoint.
///
/// Each file tensor is converted to `dtype` as it is read, so a bf16 checkpoint loaded with
/// `dtype: BF16` never exists as f32 (a 7B model takes ~13.5 GB, not ~27 GB), and an f32
/// file loaded as bf16 holds one f32 tensor at a time. A `&B::Device` converts into the
/// default options (f32), so `load_llama(&config, dir, &device)` keeps working.
#[derive(Debug, Clone)]
pub struct LoadOptions<B: Backend> {
    /// The device the parameters are created on.
    pub device: B::Device,
    /// The float dtype of every parameter (f32, bf16 or f16).
    pub dtype: DType,
}

impl<B: Backend> LoadOptions<B> {
    /// f32 parameters on `device`.
    pub fn new(device: &B::Device) -> Self {
        Self {
            device: device.clone(),
            dtype: DType::F32,
        }
    }

    /// The same options with parameters in `dtype`.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
}

impl<B: Backend> From<&B::Device> for LoadOptions<B> {
    fn from(device: &B::Device) -> Self {
        Self::new(device)
    }
}

/// What a successful load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Number of tensors written into the model.
    pub applied: usize,
    /// File keys the model did not use (e.g. another tower of the checkpoint).
    pub unused: Vec<String>,
}

/// The tensors of a checkpoint by file key; data is read when a tensor is applied.
pub struct Checkpoint {
    path: PathBuf,
    tensors: BTreeMap<String, TensorSnapshot>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens `.safetensors`, `.pth`/`.pt`/`.bin` (PyTorch zip or legacy pickle), or an HF
    /// `*.safetensors.index.json` whose shards lie next to it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
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
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let read_err = |p: &Path, e: String| LoadError::Read {
            path: p.to_path_buf(),
            message: e,
        };
        let tensors = if name.ends_with(".index.json") {
            let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e.to_string()))?;
            let index: ShardIndex =
                serde_json::from_str(&text).map_err(|e| read_err(path, e.to_string()))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let shards: BTreeSet<&String> = index.weight_map.values().collect();
            let mut all = BTreeMap::new();
            for shard in shards {
                let shard_path = dir.join(shard);
                if !shard_path.is_file() {
                    return Err(LoadError::Open {
                        path: shard_path,
                        message: format!("shard listed in {} is missing", path.display()),
                    });
                }
                let mut store = SafetensorsStore::from_file(&shard_path);
                let part = store
                    .get_all_snapshots()
                    .map_err(|e| read_err(&shard_path, e.to_string()))?;
                all.extend(part.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            all
        } else if name.ends_with(".safetensors") {
            SafetensorsStore::from_file(path)
                .get_all_snapshots()
                .map_err(|e| read_err(path, e.to_string()))?
                .clone()
        } else if name.ends_with(".pth") || name.ends_with(".pt") || name.ends_with(".bin") {
            PytorchStore::from_file(path)
                .map_indices_contiguous(false)
                .get_all_snapshots()
                .map_err(|e| read_err(path, e.to_string()))?
                .clone()
        } else {
            return Err(LoadError::UnknownFormat {
                path: path.to_path_buf(),
            });
        };
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The file (or index) it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All file keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// One tensor.
    pub fn get(&self, key: &str) -> Option<&TensorSnapshot> {
        self.tensors.get(key)
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// How one family of checkpoints names and lays out its tensors.
///
/// Module paths use PyTorch parameter names (`weight`/`bias` for norms, `[out, in]` linear
/// weights): burn's PyTorch adapter renames and transposes when the tensors are applied.
pub trait Dialect {
    /// Name for messages.
    fn name(&self) -> &str;

    /// The module tensors one file tensor provides (none: the model does not use it).
    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)>;

    /// File key and file-layout shape holding a module parameter given by its PyTorch
    /// path and shape (for error messages and key listings).
    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>);
}

/// A dialect that only renames key prefixes (`(file prefix, module prefix)` pairs).
#[derive(Debug, Clone, Copy)]
pub struct PrefixDialect {
    /// Human-readable name, for messages.
    pub name: &'static str,
    /// Prefix renames, file -> module; the first match applies.
    pub renames: &'static [(&'static str, &'static str)],
}

impl PrefixDialect {
    /// Module path of a file key.
    pub fn to_module(&self, key: &str) -> String {
        rename(key, self.renames.iter().map(|&(f, m)| (f, m)))
    }

    /// File key of a module path.
    pub fn to_file(&self, path: &str) -> String {
        rename(path, self.renames.iter().map(|&(f, m)| (m, f)))
    }
}

impl Dialect for PrefixDialect {
    fn name(&self) -> &str {
        self.name
    }

    fn module_tensors(&self, key: &str, tensor: &TensorSnapshot) -> Vec<(String, TensorSnapshot)> {
        vec![(self.to_module(key), tensor.clone())]
    }

    fn file_param(&self, torch_path: &str, torch_shape: &[usize]) -> (String, Vec<usize>) {
        (self.to_file(torch_path), torch_shape.to_vec())
    }
}

/// Replaces a matching prefix.
pub fn rename<'a>(key: &str, mut pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    match pairs.find(|(from, _)| key.starts_with(from)) {
        Some((from, to)) => format!("{to}{}", &key[from.len()..]),
        None => key.to_string(),
    }
}

/// A lazily transformed copy of a file tensor: rows `start..start + len` of dim 0
/// (splitting fused projections), optionally transposed (2-D only).
pub fn derived_tensor(
    tensor: &TensorSnapshot,
    rows: Option<(usize, usize)>,
    transpose: bool,
) -> TensorSnapshot {
    let mut shape: Vec<usize> = tensor.shape.as_slice().to_vec();
    if let Some((_, len)) = rows {
        shape[0] = len;
    }
    if transpose {
        shape.reverse();
    }
    let source = tensor.clone_data_fn();
    let dtype = tensor.dtype;
    let out_shape = shape.clone();
    let data = Rc::new(move || {
        let data = source()?;
        let elem = data.dtype.size();
        let dims = data.shape.as_slice().to_vec();
        let row: usize = dims[1..].iter().product::<usize>() * elem;
        let bytes = data.as_bytes();
        let bytes = match rows {
            Some((start, len)) => bytes[start * row..(start + len) * row].to_vec(),
            None => bytes.to_vec(),
        };
        let bytes = if transpose {
            let (r, c) = (bytes.len() / row, row / elem);
            let mut t = vec![0u8; bytes.len()];
            for i in 0..r {
                for j in 0..c {
                    let src = (i * c + j) * elem;
                    let dst = (j * r + i) * elem;
                    t[dst..dst + elem].copy_from_slice(&bytes[src..src + elem]);
                }
            }
            t
        } else {
            bytes
        };
        Ok(TensorData::from_bytes_vec(
            bytes,
            out_shape.clone(),
            data.dtype,
        ))
    });
    TensorSnapshot::from_closure(data, dtype, shape.into(), vec![], vec![], ParamId::new())
}

/// One parameter of a module as it appears in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileParam {
    /// The module path (burn naming).
    pub module_path: String,
    /// The checkpoint key holding it.
    pub key: String,
    /// Shape in the checkpoint's layout.
    pub shape: Vec<usize>,
    /// Whether burn stores it transposed relative to PyTorch (linear weights).
    pub transposed: bool,
}

/// Lists a module's parameters under checkpoint names and layouts without initialising any
/// lazy parameter (so a ViT-H can be listed without allocating its weights). A file tensor
/// that feeds several parameters (a fused projection) is listed once per parameter.
pub fn file_params<B: Backend, M: Module<B>>(module: &M, dialect: &dyn Dialect) -> Vec<FileParam> {
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
            if transposed {
                shape.reverse();
            }
            let torch_path = format!("{parent}.{}", torch_leaf(&container, leaf));
            let torch_path = torch_path.trim_start_matches('.');
            let (key, shape) = dialect.file_param(torch_path, &shape);
            FileParam {
                key,
                module_path: path,
                shape,
                transposed,
            }
        })
        .collect()
}

/// PyTorch's name of a burn parameter (`gamma`/`beta` of norms are `weight`/`bias`).
fn torch_leaf<'a>(container: &str, leaf: &'a str) -> &'a str {
    match (container, leaf) {
        ("Struct:LayerNorm" | "Struct:RmsNorm" | "Struct:GroupNorm", "gamma") => "weight",
        ("Struct:LayerNorm" | "Struct:GroupNorm", "beta") => "bias",
        (_, l) => l,
    }
}

/// The largest layer index in keys matching `prefix<N>.`, if any.
pub fn max_layer_index<'a>(keys: impl Iterator<Item = &'a String>, prefix: &str) -> Option<usize> {
    keys.filter_map(|k| {
        k.strip_prefix(prefix)?
            .split('.')
            .next()?
            .parse::<usize>()
            .ok()
    })
    .max()
}

/// Casts every initialised float parameter to one dtype (lazy ones stay lazy).
struct CastInitialized(DType);

impl<B: Backend> ModuleMapper<B> for CastInitialized {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !param.is_initialized() || param.dtype() == self.0 {
            return param;
        }
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// Opens `path` and loads it into `module` with parameters in `dtype`, requiring every
/// module parameter to be present with the right shape.
pub fn load_into<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: M,
    path: &Path,
    dialect: &dyn Dialect,
    dtype: DType,
) -> Result<(M, LoadReport), LoadError> {
    let checkpoint = Checkpoint::open(path)?;
    load_checkpoint(module, &checkpoint, dialect, dtype)
}

/// Loads an opened checkpoint into `module` through `dialect`, parameters in `dtype`.
pub fn load_checkpoint<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: M,
    checkpoint: &Checkpoint,
    dialect: &dyn Dialect,
    dtype: DType,
) -> Result<(M, LoadReport), LoadError> {
    load_checkpoint_partial(module, checkpoint, dialect, &|_| true, dtype)
}

/// Like [`load_checkpoint`], but only the module parameters whose burn path satisfies
/// `required` must be in the file (e.g. the adapter tensors of a LoRA file, whose base
/// weights come from another file).
///
/// Float tensors are converted to `dtype` one at a time as they are read; afterwards every
/// initialised float parameter of the module is in `dtype` (pass the module's own dtype
/// when loading part of an existing model, e.g. an adapter into a bf16 LLM).
pub fn load_checkpoint_partial<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    mut module: M,
    checkpoint: &Checkpoint,
    dialect: &dyn Dialect,
    required: &dyn Fn(&str) -> bool,
    dtype: DType,
) -> Result<(M, LoadReport), LoadError> {
    let float = |d: DType| matches!(d, DType::F64 | DType::F32 | DType::F16 | DType::BF16);
    let mut snapshots = Vec::new();
    // module path (PyTorch naming) -> file key it came from
    let mut source: BTreeMap<String, String> = BTreeMap::new();
    let mut unused = Vec::new();
    for (key, tensor) in &checkpoint.tensors {
        let mapped = dialect.module_tensors(key, tensor);
        if mapped.is_empty() {
            unused.push(key.clone());
        }
        for (module_path, t) in mapped {
            let path_stack: Vec<String> = module_path.split('.').map(String::from).collect();
            // Float tensors take the target dtype as each one is read, so a checkpoint never
            // sits in memory next to a converted copy of itself.
            let (data_fn, tensor_dtype) = if float(t.dtype) && t.dtype != dtype {
                let source = t.clone_data_fn();
                let f: Rc<dyn Fn() -> Result<TensorData, TensorSnapshotError>> =
                    Rc::new(move || Ok(source()?.convert_dtype(dtype)));
                (f, dtype)
            } else {
                (t.clone_data_fn(), t.dtype)
            };
            snapshots.push(TensorSnapshot::from_closure(
                data_fn,
                tensor_dtype,
                t.shape.clone(),
                path_stack,
                vec![],
                ParamId::new(),
            ));
            source.insert(module_path, key.clone());
        }
    }
    let result = module.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    check_result(&module, checkpoint.path(), dialect, &result, required)?;
    let applied: BTreeSet<&str> = result.applied.iter().map(String::as_str).collect();
    let used = |p: &str| {
        applied.contains(p)
            || p.strip_suffix(".weight")
                .is_some_and(|s| applied.contains(format!("{s}.gamma").as_str()))
            || p.strip_suffix(".bias")
                .is_some_and(|s| applied.contains(format!("{s}.beta").as_str()))
    };
    let used_keys: BTreeSet<&String> = source
        .iter()
        .filter(|(p, _)| used(p))
        .map(|(_, k)| k)
        .collect();
    unused.extend(source.values().filter(|k| !used_keys.contains(k)).cloned());
    unused.sort();
    unused.dedup();
    let module = module.map(&mut CastInitialized(dtype));
    Ok((
        module,
        LoadReport {
            applied: result.applied.len(),
            unused,
        },
    ))
}

fn check_result<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
    dialect: &dyn Dialect,
    result: &ApplyResult,
    required: &dyn Fn(&str) -> bool,
) -> Result<(), LoadError> {
    let params = file_params(module, dialect);
    let find = |module_path: &str| params.iter().find(|p| p.module_path == module_path);
    let key_of = |module_path: &str| {
        find(module_path)
            .map(|p| p.key.clone())
            .unwrap_or_else(|| module_path.to_string())
    };
    if let Some(err) = result.errors.first() {
        return Err(match err {
            ApplyError::ShapeMismatch {
                path: p,
                expected,
                found,
            } => {
                // Shapes in the error are in module layout; report the file layout.
                let transposed = find(p).is_some_and(|fp| fp.transposed);
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
    if result.missing.iter().any(|(p, _)| required(p)) {
        let mut missing: Vec<String> = result
            .missing
            .iter()
            .filter(|(p, _)| required(p))
            .map(|(p, _)| match find(p) {
                Some(fp) => format!("{} {:?}", fp.key, fp.shape),
                None => p.clone(),
            })
            .collect();
        missing.dedup();
        return Err(LoadError::Missing {
            path: path.to_path_buf(),
            missing,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
