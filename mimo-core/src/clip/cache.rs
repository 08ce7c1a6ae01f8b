//! A feature cache for the frozen CLIP tower: features of a dataset's images computed once
//! and stored in safetensors shards keyed by the SHA-256 of the image file, so training
//! reads them instead of re-running the encoder.
//!
//! Layout of a cache directory:
//! - `manifest.json`: what produced the features (model config, checkpoint, feature
//!   selection, pre-processing); opening a cache with another manifest is an error, so
//!   features of different models never mix;
//! - `index.json`: image key -> shard file;
//! - `shard-NNNNN.safetensors`: one f32 tensor `[tokens, hidden]` per image key.
//!
//! Every file is written to a temporary name and renamed, so an interrupted run leaves a
//! valid cache that the next run completes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ClipVision, ClipVisionConfig};
use crate::fsutil::write_atomic;
use crate::imageops::Image;

/// What [`FeatureCache::fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FillReport {
    /// Images whose features were computed.
    pub computed: usize,
    /// Images already in the cache (same bytes).
    pub cached: usize,
}

/// What produced the cached features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// The tower's configuration (feature selection and pre-processing included).
    pub config: ClipVisionConfig,
    /// The checkpoint file name and its size in bytes (a cheap identity check).
    pub checkpoint: String,
    /// `[tokens, hidden]` of one image's features.
    pub feature_shape: [usize; 2],
}

impl CacheManifest {
    /// The manifest of `config`'s features computed with the checkpoint file `checkpoint`
    /// (identified by file name and size).
    pub fn for_checkpoint(
        config: &ClipVisionConfig,
        checkpoint: impl AsRef<Path>,
    ) -> Result<Self, CacheError> {
        let checkpoint = checkpoint.as_ref();
        let size = std::fs::metadata(checkpoint)
            .map_err(|e| io_err(checkpoint, e))?
            .len();
        let name = checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let grid = config.grid();
        let cls = config.select.feature == super::SelectFeature::ClsPatch;
        Ok(Self {
            config: config.clone(),
            checkpoint: format!("{name} ({size} bytes)"),
            feature_shape: [grid * grid + usize::from(cls), config.hidden_size],
        })
    }
}

impl CacheManifest {
    /// The manifest of features computed by `tower` itself, identified by a SHA-256 of its
    /// weights: for towers that come from no single checkpoint file (randomly initialised,
    /// or with trained weights from a run's files).
    pub fn for_weights<B: burn::tensor::backend::Backend>(
        config: &ClipVisionConfig,
        tower: &ClipVision<B>,
    ) -> Self {
        use burn::module::Module;
        struct Hash(Sha256);
        impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Hash {
            fn visit_float<const D: usize>(
                &mut self,
                param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
            ) {
                let data = param.val().into_data().convert::<f32>();
                self.0.update(data.as_bytes());
            }
        }
        let mut h = Hash(Sha256::new());
        tower.visit(&mut h);
        let digest: String = h.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let grid = config.grid();
        let cls = config.select.feature == super::SelectFeature::ClsPatch;
        Self {
            config: config.clone(),
            checkpoint: format!("weights sha256:{digest}"),
            feature_shape: [grid * grid + usize::from(cls), config.hidden_size],
        }
    }
}

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing a file failed.
    #[error("feature cache {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
    /// The directory holds features of another model or configuration.
    #[error(
        "feature cache {dir} was made with another model or configuration; use a new directory (existing: {existing}, requested: {requested})"
    )]
    Mismatch {
        /// The cache directory.
        dir: PathBuf,
        /// The stored manifest, as JSON.
        existing: String,
        /// The requested manifest, as JSON.
        requested: String,
    },
    /// An image could not be read.
    #[error(transparent)]
    Image(#[from] crate::imageops::ImageError),
    /// A feature of the wrong size was inserted.
    #[error("feature for {key} has {got} values, the cache holds [{}, {}]", shape[0], shape[1])]
    Shape {
        /// Image key.
        key: String,
        /// Values given.
        got: usize,
        /// Expected shape.
        shape: [usize; 2],
    },
}

/// The cache key of an image file: SHA-256 of its bytes, hex.
pub fn image_key(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An open feature cache.
#[derive(Debug)]
pub struct FeatureCache {
    dir: PathBuf,
    manifest: CacheManifest,
    index: BTreeMap<String, String>,
    pending: Vec<(String, Vec<f32>)>,
    shard_size: usize,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl FeatureCache {
    /// Computes the features of every image file not yet cached (by content), `batch`
    /// images per forward pass, and flushes; `progress(done, total)` is called after each
    /// batch. An image that cannot be read is an error naming the file.
    pub fn fill<B: burn::tensor::backend::Backend>(
        &mut self,
        tower: &ClipVision<B>,
        images: &[PathBuf],
        batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<FillReport, CacheError> {
        let mut report = FillReport::default();
        let mut done = 0;
        for chunk in images.chunks(batch.max(1)) {
            let mut todo = Vec::new();
            for path in chunk {
                let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
                let key = image_key(&bytes);
                if self.contains(&key) || todo.iter().any(|(k, _)| *k == key) {
                    report.cached += 1;
                    continue;
                }
                let image = Image::decode(&bytes).map_err(|e| match e {
                    crate::imageops::ImageError::File { message, .. } => io_err(path, message),
                    other => other.into(),
                })?;
                todo.push((key, image));
            }
            if !todo.is_empty() {
                let refs: Vec<&Image> = todo.iter().map(|(_, img)| img).collect();
                let values = tower
                    .image_features(&refs)
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| io_err(&self.dir, format!("reading features: {e:?}")))?;
                let per = values.len() / todo.len();
                for ((key, _), feats) in todo.into_iter().zip(values.chunks(per)) {
                    self.insert(key, feats.to_vec())?;
                    report.computed += 1;
                }
            }
            done += chunk.len();
            progress(done, images.len());
        }
        self.flush()?;
        Ok(report)
    }

    /// Opens the cache in `dir`, creating it if needed; an existing cache must have been made
    /// with the same manifest. Features are written in shards of `shard_size` images.
    pub fn open(
        dir: impl AsRef<Path>,
        manifest: CacheManifest,
        shard_size: usize,
    ) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let manifest_path = dir.join("manifest.json");
        let index_path = dir.join("index.json");
        if manifest_path.exists() {
            let text =
                std::fs::read_to_string(&manifest_path).map_err(|e| io_err(&manifest_path, e))?;
            let existing: CacheManifest =
                serde_json::from_str(&text).map_err(|e| io_err(&manifest_path, e))?;
            if existing != manifest {
                return Err(CacheError::Mismatch {
                    dir,
                    existing: text,
                    requested: serde_json::to_string(&manifest).unwrap_or_default(),
                });
            }
        } else {
            let text =
                serde_json::to_string_pretty(&manifest).map_err(|e| io_err(&manifest_path, e))?;
            write_atomic(&manifest_path, text.as_bytes()).map_err(|e| io_err(&manifest_path, e))?;
        }
        let index = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| io_err(&index_path, e))?;
            serde_json::from_str(&text).map_err(|e| io_err(&index_path, e))?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            dir,
            manifest,
            index,
            pending: Vec::new(),
            shard_size: shard_size.max(1),
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &CacheManifest {
        &self.manifest
    }

    /// Number of cached images (flushed and pending).
    pub fn len(&self) -> usize {
        self.index.len() + self.pending.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether features for `key` are cached.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key) || self.pending.iter().any(|(k, _)| k == key)
    }

    /// Adds an image's features (`[tokens, hidden]`, row-major); full shards are written.
    pub fn insert(&mut self, key: String, features: Vec<f32>) -> Result<(), CacheError> {
        let [t, d] = self.manifest.feature_shape;
        if features.len() != t * d {
            return Err(CacheError::Shape {
                key,
                got: features.len(),
                shape: self.manifest.feature_shape,
            });
        }
        if !self.contains(&key) {
            self.pending.push((key, features));
        }
        if self.pending.len() >= self.shard_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes pending features as a new shard and updates the index.
    pub fn flush(&mut self) -> Result<(), CacheError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = (0..)
            .find(|i| !self.dir.join(format!("shard-{i:05}.safetensors")).exists())
            .unwrap_or(0);
        let name = format!("shard-{n:05}.safetensors");
        let path = self.dir.join(&name);
        let shape = self.manifest.feature_shape.to_vec();
        let bytes: Vec<(String, Vec<u8>)> = self
            .pending
            .iter()
            .map(|(k, f)| (k.clone(), f.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| io_err(&path, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let data = safetensors::serialize(views, None).map_err(|e| io_err(&path, e))?;
        write_atomic(&path, &data).map_err(|e| io_err(&path, e))?;
        for (k, _) in self.pending.drain(..) {
            self.index.insert(k, name.clone());
        }
        let index_path = self.dir.join("index.json");
        let text = serde_json::to_string(&self.index).map_err(|e| io_err(&index_path, e))?;
        write_atomic(&index_path, text.as_bytes()).map_err(|e| io_err(&index_path, e))
    }

    /// The cached features of `key` (`[tokens, hidden]` row-major), if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<f32>>, CacheError> {
        if let Some((_, f)) = self.pending.iter().find(|(k, _)| k == key) {
            return Ok(Some(f.clone()));
        }
        let Some(shard) = self.index.get(key) else {
            return Ok(None);
        };
        // Only the header and this image's bytes are read: a shard holds hundreds of
        // images (≈ 1.3 MB each for ViT-H).
        use std::io::{Read, Seek, SeekFrom};
        let path = self.dir.join(shard);
        let (header, data_start) =
            crate::fsutil::safetensors_header(&path).map_err(|e| io_err(&path, e))?;
        let entry = header.get(key).ok_or_else(|| {
            io_err(
                &path,
                format!("the index names {key} but the shard lacks it"),
            )
        })?;
        let offsets: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        let [t, d] = self.manifest.feature_shape;
        if entry.get("dtype").and_then(|v| v.as_str()) != Some("F32")
            || offsets.len() != 2
            || offsets[1].saturating_sub(offsets[0]) != (t * d * 4) as u64
        {
            return Err(io_err(
                &path,
                format!("tensor {key} is not f32 [{t}, {d}] as the manifest says"),
            ));
        }
        let mut f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
        f.seek(SeekFrom::Start(data_start + offsets[0]))
            .map_err(|e| io_err(&path, e))?;
        let mut bytes = vec![0u8; t * d * 4];
        f.read_exact(&mut bytes).map_err(|e| io_err(&path, e))?;
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

impl FeatureCache {
    /// The cached features of a batch of images as the `[N, tokens, hidden]` tensor MIMO
    /// reads (`mimo::ClipInput::Features`); an image that is not cached is an error naming
    /// its key.
    pub fn batch<B: burn::tensor::backend::Backend>(
        &self,
        keys: &[String],
        device: &B::Device,
    ) -> Result<burn::tensor::Tensor<B, 3>, CacheError> {
        let [t, d] = self.manifest.feature_shape;
        let mut data = Vec::with_capacity(keys.len() * t * d);
        for key in keys {
            let f = self.get(key)?.ok_or_else(|| CacheError::Io {
                path: self.dir.clone(),
                message: format!("no cached features for image {key} (run mimo clip-cache)"),
            })?;
            data.extend(f);
        }
        Ok(burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(data, [keys.len(), t, d]),
            device,
        ))
    }
}

impl Drop for FeatureCache {
    fn drop(&mut self) {
        // Best effort: an explicit `flush` reports errors.
        let _ = self.flush();
    }
}
