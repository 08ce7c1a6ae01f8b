//! `mimo clip-cache`: precompute the frozen CLIP tower's features of a folder of images.

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mimo_core::Image;
use mimo_core::clip::cache::{CacheManifest, FeatureCache, image_key};
use mimo_core::clip::{ClipVisionConfig, SelectFeature};
use mimo_core::config::ModelConfig;
use mimo_core::loader;

use crate::backend::{self, Backend};

/// Arguments of `mimo clip-cache`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Images are found recursively (PNG, JPEG) and keyed by the SHA-256 of their bytes, so a
rerun only computes new images and an interrupted run resumes. A cache directory belongs to
one model configuration and checkpoint; another one is refused.

Example (tiny tower with RANDOM weights from the test fixtures):
  mimo clip-cache --model mimo-core/fixtures/clip/hf_tiny.ron \\
      --checkpoint mimo-core/fixtures/clip/hf_tiny_clipmodel.safetensors \\
      --images assets/samples --out out/clip-cache")]
pub struct ClipCacheArgs {
    /// Model: vit_l14, vit_l14_336, vit_h14, a ClipVisionConfig RON file, or an HF model
    /// directory / config.json (e.g. a downloaded openai/clip-vit-large-patch14-336).
    #[arg(long, value_name = "vit_l14|vit_l14_336|vit_h14|CONFIG.ron")]
    model: String,
    /// HF (CLIPModel/CLIPVisionModel) or open_clip checkpoint: .safetensors, a sharded
    /// model.safetensors.index.json, .pth/.bin, or a model directory holding one.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// Folder of images (searched recursively).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Cache directory (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Images per safetensors shard.
    #[arg(long, default_value_t = 256)]
    shard_size: usize,
}

fn find_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            find_images(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs `mimo clip-cache`.
pub fn run(args: ClipCacheArgs) -> Result<(), String> {
    let config = ClipVisionConfig::from_name_or_file(&args.model).map_err(|e| e.to_string())?;
    let mut images = Vec::new();
    find_images(&args.images, &mut images)?;
    images.sort();
    if images.is_empty() {
        return Err(format!(
            "no PNG or JPEG images under {}",
            args.images.display()
        ));
    }
    let size = std::fs::metadata(&args.checkpoint)
        .map_err(|e| format!("cannot open checkpoint {}: {e}", args.checkpoint.display()))?
        .len();
    let name = args
        .checkpoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let grid = config.grid();
    let tokens = grid * grid + usize::from(config.select.feature == SelectFeature::ClsPatch);
    let manifest = CacheManifest {
        config: config.clone(),
        checkpoint: format!("{name} ({size} bytes)"),
        feature_shape: [tokens, config.hidden_size],
    };
    let mut cache =
        FeatureCache::open(&args.out, manifest, args.shard_size).map_err(|e| e.to_string())?;

    let device = backend::device();
    backend::announce_load(&args.checkpoint, &args.model);
    let (tower, report) = loader::clip::load_clip::<Backend>(&config, &args.checkpoint, &device)
        .map_err(|e| e.to_string())?;
    backend::note_unused(&report.unused);

    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images, {elapsed} elapsed, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut computed, mut cached) = (0usize, 0usize);
    for chunk in images.chunks(args.batch.max(1)) {
        let mut todo = Vec::new();
        for path in chunk {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
            let key = image_key(&bytes);
            if cache.contains(&key) {
                cached += 1;
                continue;
            }
            let img = image::load_from_memory(&bytes)
                .map_err(|e| format!("cannot decode image {}: {e}", path.display()))?
                .to_rgb8();
            todo.push((key, img));
        }
        if !todo.is_empty() {
            let batch = todo
                .iter()
                .map(|(_, img)| {
                    Image::new(
                        img.width() as usize,
                        img.height() as usize,
                        img.as_raw().clone(),
                    )
                    .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let values = tower
                .image_features(&batch.iter().collect::<Vec<_>>())
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| format!("reading features: {e:?}"))?;
            let per = values.len() / todo.len();
            for ((key, _), feats) in todo.into_iter().zip(values.chunks(per)) {
                cache
                    .insert(key, feats.to_vec())
                    .map_err(|e| e.to_string())?;
                computed += 1;
            }
        }
        bar.inc(chunk.len() as u64);
    }
    cache.flush().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "{computed} image(s) computed, {cached} already cached; {} in {}",
        cache.len(),
        args.out.display()
    );
    Ok(())
}
