//! `mimo clip-cache`: precompute the frozen CLIP tower's features of a folder of images.

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mimo_core::clip::ClipVisionConfig;
use mimo_core::clip::cache::{CacheManifest, FeatureCache};
use mimo_core::config::ModelConfig;

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
    let manifest =
        CacheManifest::for_checkpoint(&config, &args.checkpoint).map_err(|e| e.to_string())?;
    let mut cache =
        FeatureCache::open(&args.out, manifest, args.shard_size).map_err(|e| e.to_string())?;

    let device = backend::device();
    backend::announce_load(&args.checkpoint, &args.model);
    let (tower, report) =
        mimo_core::clip::load::load_clip::<Backend>(&config, &args.checkpoint, &device)
            .map_err(|e| e.to_string())?;
    crate::malloc::release_free_memory();
    backend::note_unused(&report.unused);

    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images, {elapsed} elapsed, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let filled = cache
        .fill(&tower, &images, args.batch, &mut |done, _| {
            bar.set_position(done as u64)
        })
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "{} image(s) computed, {} already cached; {} in {}",
        filled.computed,
        filled.cached,
        cache.len(),
        args.out.display()
    );
    Ok(())
}
