//! `mimo heldout`: held-out benchmarks in their distributed formats to evaluation records.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use mimo_bench::heldout::{
    read_multiple_choice, read_pathvqa, read_seg_folder, read_slake, read_vqa_rad,
};
use mimo_core::fsutil::write_atomic;

/// Benchmark format.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// VQA-RAD `VQA_RAD Dataset Public.json` (test questions).
    VqaRad,
    /// SLAKE `test.json` (English questions).
    Slake,
    /// PathVQA test questions as JSON (`image`, `question`, `answer`); yes/no are closed.
    Pathvqa,
    /// HuatuoGPT-Vision-style multiple-choice JSON (`question`, `options`, `answer`, `dataset`).
    Choice,
    /// A segmentation folder: --input images, --masks masks with the same file stems.
    Seg,
}

/// Arguments of `mimo heldout`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Writes records that `mimo score` reads: VQA questions as `vqa` records (closed questions are
scored, open ones kept for completeness), segmentation images as `heldout_seg` records (add
--with-box for the \"with bbox\" setting: the mask's bounding box becomes the prompt). Image
paths are written absolute (VQA images under --images), so `mimo eval RUN --records OUT` finds
them wherever OUT is. Run the model on the records with `mimo eval`, or produce predictions
another way and run `mimo score`.")]
pub struct HeldoutArgs {
    /// Input format.
    #[arg(value_enum)]
    kind: Kind,
    /// The benchmark file (or the image folder for `seg`).
    #[arg(long)]
    input: PathBuf,
    /// Mask folder (`seg`).
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Benchmark name in the tables (`seg`, and `choice` entries without `dataset`).
    #[arg(long, default_value = "held-out")]
    source: String,
    /// Label of the segmented structure (`seg`).
    #[arg(long, default_value = "lesion")]
    label: String,
    /// Give the mask's bounding box as the prompt (`seg`).
    #[arg(long)]
    with_box: bool,
    /// Folder the benchmark's image names are relative to (VQA kinds; default: the folder
    /// of --input). VQA-RAD: `VQA_RAD Image Folder`; SLAKE: `imgs`; PathVQA: its test images.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Output records JSONL.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `mimo heldout`.
pub fn run(args: HeldoutArgs) -> Result<(), String> {
    let records = match args.kind {
        Kind::VqaRad => read_vqa_rad(&args.input),
        Kind::Slake => read_slake(&args.input),
        Kind::Pathvqa => read_pathvqa(&args.input),
        Kind::Choice => read_multiple_choice(&args.input, &args.source),
        Kind::Seg => {
            let masks = args.masks.as_ref().ok_or("`seg` needs --masks DIR")?;
            read_seg_folder(&args.input, masks, &args.source, &args.label, args.with_box)
        }
    }
    .map_err(|e| e.to_string())?;
    // Absolute image paths: evaluation resolves relative ones against the records' folder.
    let images = match (&args.kind, &args.images) {
        // Already joined to --input (relative to the working directory).
        (Kind::Seg, _) => std::env::current_dir().map_err(|e| e.to_string())?,
        (_, Some(dir)) => dir.clone(),
        (_, None) => match args.input.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let images = std::path::absolute(&images).map_err(|e| format!("{}: {e}", images.display()))?;
    let mut records = records;
    let mut missing = 0;
    for r in &mut records {
        r.image = images.join(&r.image).display().to_string();
        missing += usize::from(!Path::new(&r.image).is_file());
    }
    if missing > 0 {
        eprintln!(
            "warning: {missing} of {} images are not under {} (give the benchmark's image \
             folder with --images before evaluating)",
            records.len(),
            images.display()
        );
    }
    let mut text = String::new();
    for r in &records {
        text.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    write_atomic(&args.out, text.as_bytes()).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let closed = records
        .iter()
        .filter(|r| r.vqa.as_ref().is_some_and(|v| v.answer_type == "closed"))
        .count();
    eprintln!(
        "wrote {} records ({closed} closed questions) to {}",
        records.len(),
        args.out.display()
    );
    Ok(())
}
