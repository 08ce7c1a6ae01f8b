//! `mimo infer`: ask MIMO a question about a scan, with optional points and boxes, and get
//! the answer with a mask for every grounded phrase.

use std::path::{Path, PathBuf};

use clap::Args;
use mimo_core::fsutil::write_atomic;
use mimo_core::llm::GenerationConfig;
use mimo_core::loader::LoadOptions;
use mimo_core::mimo::{AnswerRequest, GroundedAnswer, MimoConfig};
use mimo_core::prompt::VisualPrompt;
use mimo_data::rle::Rle;
use serde::Serialize;

use crate::backend::{self, Backend};
use crate::overlay;
use crate::segment::read_image;

/// Arguments of `mimo infer`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Coordinates are in pixels of the original image (x = column, y = row). Prompts are optional.

Outputs in --out: answer.json (text, the raw answer with its <p>..</p><SEG> markup, each
grounded phrase with its character span, predicted IoU and mask as COCO RLE),
overlay.png (each phrase's mask in its colour, a legend, the prompts drawn) and
mask_<k>.png (one binary mask per phrase, white = foreground).

Example (tiny model with RANDOM weights: the pipeline is real, the answer is noise):
  mimo infer --config configs/mimo/mimo-tiny.ron --image assets/samples/mni152_t1_z95.png \\
      --point 98,110 --box 30,30,170,200 --question \"What is marked here?\" --out out/infer

Real weights: set `weights` (and `tokenizer`) in a copy of configs/mimo/mimo-7b.ron, and
pass the directory a training run wrote as --checkpoint.")]
pub struct InferArgs {
    /// MIMO model file (RON), e.g. configs/mimo/mimo-7b.ron.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A trained checkpoint directory (adapter/ and trained.safetensors); overrides the
    /// config's `weights.adapter` and `weights.trained`.
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Input image (PNG, JPEG, BMP or TIFF; grey images are converted to RGB).
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// A point X,Y with optional LABEL (1 = foreground, default; 0 = background).
    /// Repeatable.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", value_parser = parse_point)]
    points: Vec<VisualPrompt>,
    /// A box X0,Y0,X1,Y1 (top-left, bottom-right corners). Repeatable.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box)]
    boxes: Vec<VisualPrompt>,
    /// The question.
    #[arg(long, value_name = "TEXT")]
    question: String,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Most tokens generated.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sample with this temperature instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight and activation dtype: f32, or bf16/f16 (how the 7B model runs on a GPU; the
    /// checkpoints are then read straight into that dtype).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

fn numbers(s: &str, what: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{what} `{s}`: `{v}` is not a number"))
        })
        .collect()
}

fn parse_point(s: &str) -> Result<VisualPrompt, String> {
    let v = numbers(s, "point")?;
    let positive = match v.as_slice() {
        [_, _] => true,
        [_, _, l] if *l == 1.0 => true,
        [_, _, l] if *l == 0.0 => false,
        [_, _, _] => {
            return Err(format!(
                "point `{s}`: LABEL must be 1 (foreground) or 0 (background)"
            ));
        }
        _ => return Err(format!("point `{s}`: expected X,Y or X,Y,LABEL")),
    };
    Ok(VisualPrompt::Point {
        x: v[0],
        y: v[1],
        positive,
    })
}

fn parse_box(s: &str) -> Result<VisualPrompt, String> {
    match numbers(s, "box")?.as_slice() {
        [x0, y0, x1, y1] if x0 <= x1 && y0 <= y1 => Ok(VisualPrompt::Box {
            x0: *x0,
            y0: *y0,
            x1: *x1,
            y1: *y1,
        }),
        [_, _, _, _] => Err(format!(
            "box `{s}`: X0,Y0 must be the top-left and X1,Y1 the bottom-right corner"
        )),
        _ => Err(format!("box `{s}`: expected X0,Y0,X1,Y1")),
    }
}

#[derive(Serialize)]
struct SegmentJson {
    phrase: Option<String>,
    char_span: Option<(usize, usize)>,
    predicted_iou: f32,
    area: u64,
    mask_png: String,
    rle: Rle,
}

#[derive(Serialize)]
struct AnswerJson<'a> {
    image: String,
    width: usize,
    height: usize,
    question: &'a str,
    prompts: &'a [VisualPrompt],
    text: &'a str,
    raw: &'a str,
    finish: String,
    segments: Vec<SegmentJson>,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Runs `mimo infer`.
pub fn run(args: InferArgs) -> Result<(), String> {
    if args.question.trim().is_empty() {
        return Err("--question is empty".into());
    }
    let mut config = MimoConfig::load(&args.config).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.checkpoint {
        crate::eval::apply_run_switches(dir, &mut config)?;
        config = config.with_checkpoint(dir).map_err(|e| e.to_string())?;
    }
    let image = read_image(&args.image)?;
    let prompts: Vec<VisualPrompt> = args.points.iter().chain(&args.boxes).copied().collect();
    // Bad prompts are rejected before the (slow) model load.
    if let Some(p) = prompts
        .iter()
        .find(|p| !p.inside(image.width(), image.height()))
    {
        return Err(format!(
            "prompt {p:?} lies outside the {}x{} image {}",
            image.width(),
            image.height(),
            args.image.display()
        ));
    }
    let base = args.config.parent().unwrap_or(Path::new("."));
    let dtype = backend::parse_dtype(&args.dtype)?;
    let device = backend::device();
    eprintln!(
        "building MIMO from {} on {}",
        args.config.display(),
        backend::NAME
    );
    let built = config
        .build::<Backend>(base, LoadOptions::new(&device).with_dtype(dtype))
        .map_err(|e| e.to_string())?;
    crate::malloc::release_free_memory();
    if !built.random_parts.is_empty() {
        eprintln!(
            "note: no weights for {} (randomly initialised): the answer is not meaningful",
            built.random_parts.join(", ")
        );
    }
    for (part, keys) in &built.unused {
        eprint!("{part}: ");
        backend::note_unused(keys);
    }
    let tok = built.tokenizer.as_ref().ok_or(
        "the model file names no tokenizer and the LLM folder has no tokenizer.json: set `tokenizer`",
    )?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        do_sample: args.temperature.is_some(),
        temperature: args.temperature.unwrap_or(1.0),
        eos_token_id: vec![tok.ids().eos],
        pad_token_id: tok.ids().pad(),
        seed: args.seed,
        ..Default::default()
    };
    eprintln!("question: {}", args.question);
    eprint!("answer: ");
    let answer = built
        .model
        .answer(
            tok,
            &built.template,
            AnswerRequest {
                image: &image,
                question: &args.question,
                prompts: &prompts,
            },
            &cfg,
            &mut |t| eprint!("{t}"),
        )
        .map_err(|e| e.to_string())?;
    eprintln!();
    report(&args, &image, &prompts, &answer)
}

fn report(
    args: &InferArgs,
    image: &mimo_core::Image,
    prompts: &[VisualPrompt],
    answer: &GroundedAnswer,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let (w, h) = (image.width(), image.height());
    println!("{}", answer.text);
    let mut segments = Vec::new();
    let mut labels = Vec::new();
    for (k, s) in answer.segments.iter().enumerate() {
        let name = format!("mask_{k}.png");
        write(&args.out.join(&name), &overlay::mask_png(&s.mask, w, h)?)?;
        let area = s.mask.iter().filter(|&&v| v).count() as u64;
        let phrase = s.phrase.clone().unwrap_or_else(|| "(no phrase)".into());
        println!(
            "  [{k}] {phrase}: {area} px, predicted IoU {:.3} -> {}",
            s.score,
            args.out.join(&name).display()
        );
        labels.push(format!("{k}: {phrase}"));
        segments.push(SegmentJson {
            phrase: s.phrase.clone(),
            char_span: s.char_span,
            predicted_iou: s.score,
            area,
            mask_png: name,
            rle: Rle::encode(&s.mask, h, w),
        });
    }
    if answer.segments.is_empty() {
        println!("  (no grounded phrase: the answer has no <SEG>)");
    }
    let masks: Vec<Vec<bool>> = answer.segments.iter().map(|s| s.mask.clone()).collect();
    let mut points = Vec::new();
    let mut boxes = Vec::new();
    for p in prompts {
        match *p {
            VisualPrompt::Point { x, y, positive } => points.push(([x, y], positive)),
            VisualPrompt::Box { x0, y0, x1, y1 } => boxes.push([x0, y0, x1, y1]),
        }
    }
    let png = overlay::grounded_overlay_png(image.rgb(), w, h, &masks, &labels, &points, &boxes)?;
    let overlay_path = args.out.join("overlay.png");
    write(&overlay_path, &png)?;
    let json = AnswerJson {
        image: args.image.display().to_string(),
        width: w,
        height: h,
        question: &args.question,
        prompts,
        text: &answer.text,
        raw: &answer.raw,
        finish: format!("{:?}", answer.finish),
        segments,
    };
    let json_path = args.out.join("answer.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    write(&json_path, text.as_bytes())?;
    eprintln!(
        "wrote {}, {} and {} mask PNG(s)",
        json_path.display(),
        overlay_path.display(),
        answer.segments.len()
    );
    Ok(())
}
