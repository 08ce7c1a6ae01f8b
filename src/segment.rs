//! `mimo segment`: promptable segmentation with Segment Anything.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend as _;
use clap::Args;
use mimo_core::Image;
use mimo_core::config::ModelConfig;
use mimo_core::fsutil::write_atomic;
use mimo_core::sam::{LABEL_NEGATIVE, LABEL_POSITIVE, PointPrompt, Prompt, SamConfig};
use mimo_data::rle::Rle;
use serde::Serialize;

use crate::backend::{self, Backend};
use crate::overlay;

/// Arguments of `mimo segment`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Coordinates are in pixels of the original image (x = column, y = row).
At least one --point or a --box is required.

Example (bundled tiny model with RANDOM weights, so the mask is meaningless):
  mimo segment --model mimo-core/fixtures/sam/tiny_a.ron \\
      --checkpoint mimo-core/fixtures/sam/tiny_a.safetensors \\
      --image assets/samples/mni152_t1_z95.png --point 98,110 --box 40,40,160,190 \\
      --out out/mask.png --overlay out/overlay.png --json out/mask.json

Real weights: download sam_vit_b_01ec64.pth (or vit_l / vit_h) yourself and pass
--model vit_b --checkpoint /path/to/sam_vit_b_01ec64.pth.")]
pub struct SegmentArgs {
    /// SAM checkpoint: a segment_anything state dict (.pth) or the same as .safetensors.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// Model: vit_b, vit_l, vit_h, or a SamConfig RON file.
    #[arg(long, value_name = "vit_b|vit_l|vit_h|CONFIG.ron")]
    model: String,
    /// Input image (PNG or JPEG; grey images are converted to RGB).
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// A click: X,Y with optional LABEL (1 = foreground, default; 0 = background). Repeatable.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", value_parser = parse_point)]
    points: Vec<PointPrompt>,
    /// A box X0,Y0,X1,Y1 (top-left, bottom-right corners).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box)]
    bbox: Option<[f64; 4]>,
    /// Predict three candidate masks instead of one; --out gets the one with the highest
    /// predicted IoU, the JSON lists all three.
    #[arg(long)]
    multimask: bool,
    /// Output mask PNG (white = foreground), the size of the input image.
    #[arg(long, value_name = "MASK.png")]
    out: PathBuf,
    /// Also write the image with the mask and prompts drawn on it.
    #[arg(long, value_name = "OVERLAY.png")]
    overlay: Option<PathBuf>,
    /// Also write the masks as COCO RLE (pycocotools format) with their predicted IoU.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
}

fn numbers(s: &str, what: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("{what} `{s}`: `{v}` is not a number"))
        })
        .collect()
}

fn parse_point(s: &str) -> Result<PointPrompt, String> {
    let v = numbers(s, "point")?;
    let label = match v.len() {
        2 => LABEL_POSITIVE,
        3 if v[2] == 1.0 => LABEL_POSITIVE,
        3 if v[2] == 0.0 => LABEL_NEGATIVE,
        3 => {
            return Err(format!(
                "point `{s}`: LABEL must be 1 (foreground) or 0 (background)"
            ));
        }
        _ => return Err(format!("point `{s}`: expected X,Y or X,Y,LABEL")),
    };
    Ok(PointPrompt {
        x: v[0],
        y: v[1],
        label,
    })
}

fn parse_box(s: &str) -> Result<[f64; 4], String> {
    let v = numbers(s, "box")?;
    match v.as_slice() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        _ => Err(format!("box `{s}`: expected X0,Y0,X1,Y1")),
    }
}

/// Reads an image file into RGB; the error names the file.
pub fn read_image(path: &Path) -> Result<Image, String> {
    Image::open(path).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct MaskJson {
    rle: Rle,
    predicted_iou: f32,
    area: u64,
}

#[derive(Serialize)]
struct OutputJson {
    image: String,
    width: usize,
    height: usize,
    model: String,
    points: Vec<[f64; 3]>,
    #[serde(rename = "box")]
    bbox: Option<[f64; 4]>,
    best: usize,
    masks: Vec<MaskJson>,
}

/// Runs `mimo segment`.
pub fn run(args: SegmentArgs) -> Result<(), String> {
    if args.points.is_empty() && args.bbox.is_none() {
        return Err("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1".into());
    }
    let config = SamConfig::from_name_or_file(&args.model).map_err(|e| e.to_string())?;
    let image = read_image(&args.image)?;
    let prompt = Prompt {
        points: args.points.clone(),
        bbox: args.bbox,
        mask_input: None,
    };
    // Reject bad prompts before the (slow) model load.
    prompt
        .validate(image.width(), image.height(), config.low_res_size())
        .map_err(|e| e.to_string())?;

    let device = backend::device();
    backend::announce_load(&args.checkpoint, &args.model);
    let (sam, report) =
        mimo_core::sam::load::load_sam::<Backend>(&config, &args.checkpoint, &device)
            .map_err(|e| e.to_string())?;
    crate::malloc::release_free_memory();
    backend::note_unused(&report.unused);
    eprintln!(
        "embedding {}x{} image at {} px",
        image.width(),
        image.height(),
        sam.img_size()
    );
    let started = std::time::Instant::now();
    let embedding = sam.embed_image_with_progress(&image, |done, total| {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let width = 30 * done / total.max(1);
            eprint!(
                "\r  image encoder [{}{}] {done}/{total} blocks, {:.1} s",
                "#".repeat(width),
                " ".repeat(30 - width),
                started.elapsed().as_secs_f64()
            );
            if done == total {
                eprintln!();
            }
        }
    });
    let pred = sam
        .predict(&embedding, &prompt, args.multimask)
        .map_err(|e| e.to_string())?;
    Backend::sync(&device).map_err(|e| format!("backend error: {e:?}"))?;

    let (w, h) = (image.width(), image.height());
    let host = pred.to_host()?;
    let (ious, best) = (&host.ious, host.best);
    let mask_of = |k: usize| host.mask(k);

    let best_mask = mask_of(best);
    let png = overlay::mask_png(best_mask, w, h)?;
    write_atomic(&args.out, &png).map_err(|e| format!("writing {}: {e}", args.out.display()))?;
    let area = best_mask.iter().filter(|&&v| v).count();
    eprintln!(
        "wrote {} (mask {} of {}, predicted IoU {:.3}, {} px foreground)",
        args.out.display(),
        best,
        ious.len(),
        ious[best],
        area
    );
    if let Some(path) = &args.overlay {
        let png = overlay::overlay_png(&image, best_mask, &prompt)?;
        write_atomic(path, &png).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        let out = OutputJson {
            image: args.image.display().to_string(),
            width: w,
            height: h,
            model: args.model.clone(),
            points: prompt
                .points
                .iter()
                .map(|p| [p.x, p.y, p.label as f64])
                .collect(),
            bbox: prompt.bbox,
            best,
            masks: (0..ious.len())
                .map(|k| {
                    let m = mask_of(k);
                    MaskJson {
                        rle: Rle::encode(m, h, w),
                        predicted_iou: ious[k],
                        area: m.iter().filter(|&&v| v).count() as u64,
                    }
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
        write_atomic(path, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
