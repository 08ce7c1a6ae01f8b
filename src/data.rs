//! `mimo data`: build a MIMOSeg-style dataset, summarise records, look at one record.

use std::path::PathBuf;

use burn::data::dataset::Dataset;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mimo_core::fsutil::write_atomic;
use mimo_data::batch::RecordsDataset;
use mimo_data::build::{DatasetConfig, Stage, build};
use mimo_data::record::{PromptKind, Record, RecordStats, read_jsonl};

use crate::overlay::overlay_masks_png;

/// Arguments of `mimo data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Build a dataset from a DATASET.ron (sources, perspectives, splits, prompt sampling).
    #[command(after_long_help = "\
Writes OUT/records.jsonl (one record per sample and perspective: image, size, modality,
source, volume, split, visual prompts, conversation with <p>label</p><SEG> answers, masks as
COCO RLE), OUT/images/ and OUT/build.json (counts and every skipped input with its reason).
Deterministic for a seed; rerunning an interrupted build reuses the images already written
and ends with the same records. See configs/data/quickstart.ron.

Perspective III/IV come from the built-in generator over the knowledge base, or, with
`qa_endpoint: Some((model: \"gpt-4o\", ...))` in the file, from any OpenAI-compatible
chat endpoint (configs/data/endpoint.ron). The key is read from $OPENAI_API_KEY (or the
variable named by `api_key_env`); $MIMO_QA_BASE_URL and $MIMO_QA_MODEL override the file.
Replies are cached in OUT/qa-cache by request hash, so an interrupted build resumes without
asking again; build.json counts requests, retries, cache hits and rejected generations.")]
    Build {
        /// The dataset description (RON).
        config: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Threads reading inputs and writing images (default: the file's `workers`, else
        /// every core); the records do not depend on it.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Counts per perspective, split, modality, source and label.
    Stats {
        /// records.jsonl
        records: PathBuf,
    },
    /// Draw one record's masks and prompts on its image and print its conversation.
    Show {
        /// records.jsonl (images are found relative to its folder).
        records: PathBuf,
        /// Record id.
        id: String,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `mimo data`.
pub fn run(args: DataArgs) -> Result<(), String> {
    match args.command {
        DataCommand::Build {
            config,
            out,
            workers,
        } => {
            let mut cfg = DatasetConfig::load(&config).map_err(|e| e.to_string())?;
            if let Some(w) = workers {
                if w == 0 {
                    return Err("--workers must be at least 1".into());
                }
                cfg.workers = Some(w);
            }
            let bar = ProgressBar::new(0);
            let style = |what: &str| {
                ProgressStyle::with_template(&format!(
                    "{{bar:30}} {{pos}}/{{len}} {what}, {{elapsed}} elapsed, eta {{eta}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
            };
            bar.set_style(style("inputs"));
            let mut stage = Stage::Inputs;
            let s = build(&cfg, &out, &mut |st, done, total| {
                if st != stage {
                    stage = st;
                    bar.reset();
                    bar.set_style(style("P-III/P-IV questions from the chat endpoint"));
                }
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            println!(
                "{}: {} images ({} reused from an earlier run), records {:?}, splits {:?}",
                cfg.name, s.images, s.reused_images, s.records, s.splits
            );
            if let Some(q) = &s.qa {
                println!(
                    "chat endpoint ({}): {} of {} questions accepted, {} left out; {} requests \
                     ({} retries), {} replies from the cache; rejected generations {:?}",
                    q.model,
                    q.accepted,
                    q.jobs,
                    q.failed,
                    q.requests,
                    q.retries,
                    q.cached,
                    q.rejected
                );
            }
            if !s.skipped.is_empty() {
                println!("skipped {} input(s):", s.skipped.len());
                for k in &s.skipped {
                    println!("  {}: {}", k.path, k.reason);
                }
            }
            println!("wrote {}/records.jsonl, images/, build.json", out.display());
            Ok(())
        }
        DataCommand::Stats { records } => {
            let rs: Vec<Record> = read_jsonl(&records).map_err(|e| e.to_string())?;
            let stats = RecordStats::of(&rs);
            println!("{} records in {}", stats.records, records.display());
            for (name, counts) in stats.tables {
                println!("\n{name}:");
                for (k, v) in counts {
                    println!("  {k:<24} {v}");
                }
            }
            Ok(())
        }
        DataCommand::Show { records, id, out } => {
            let rs: Vec<Record> = read_jsonl(&records).map_err(|e| e.to_string())?;
            let r = rs
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| format!("no record `{id}` in {}", records.display()))?;
            let base = records
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf();
            let sample = RecordsDataset::from_records(vec![r.clone()], base)
                .get(0)
                .ok_or("record vanished")?;
            if let Some(e) = sample.error {
                return Err(e);
            }
            let ([h, w], masks) = (sample.size, sample.masks);
            let rgb = sample.rgb;
            let points: Vec<[f64; 2]> = r
                .prompts
                .iter()
                .filter(|p| p.kind == PromptKind::Point)
                .map(|p| [p.coords[0], p.coords[1]])
                .collect();
            let boxes: Vec<[f64; 4]> = r
                .prompts
                .iter()
                .filter(|p| p.kind == PromptKind::Box)
                .map(|p| [p.coords[0], p.coords[1], p.coords[2], p.coords[3]])
                .collect();
            let png = overlay_masks_png(&rgb, w, h, &masks, &points, &boxes)?;
            write_atomic(&out, &png).map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "{} ({}, {}, {} split, {:?})",
                r.id, r.modality, r.source, r.split, r.perspective
            );
            for (k, m) in r.masks.iter().enumerate() {
                println!(
                    "  mask {}: {} ({} px)",
                    k + 1,
                    m.label,
                    m.rle.area().unwrap_or(0)
                );
            }
            for t in &r.turns {
                println!("{}: {}", t.from, t.value);
            }
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}
