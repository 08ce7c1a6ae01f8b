//! `mimo score`: the paper's metrics and tables from a predictions file and the records.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mimo_bench::eval::{MeteorMode, Prediction, csv, markdown, score};
use mimo_core::fsutil::write_atomic;
use mimo_data::record::{Record, Split, read_jsonl};

/// Which METEOR implementation.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Meteor {
    /// Not computed.
    Off,
    /// nltk-compatible METEOR, WordNet from --wordnet.
    Nltk,
    /// pycocoevalcap's METEOR 1.5 (the papers' number) through --meteor-jar and Java.
    Java,
}

/// Arguments of `mimo score`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
PREDICTIONS is JSONL, one object per record: {\"id\", \"answer\" (text with <p>..</p><SEG>
markup), \"masks\": [{\"rle\": COCO RLE at the image size, \"score\"}] in <SEG> order,
\"choice\": option letter (optional)}. Any model's outputs can be scored this way.

Writes OUT/tables.md, OUT/tables.csv and OUT/scores.json: Table 1 (mIoU, AP50, F1 per
perspective), Table 2 (ROUGE-L, BLEU-4, METEOR), held-out segmentation (without / with a
box) and held-out VQA accuracy, each beside the paper's MIMO number where the row matches.
The metric definitions follow the reference implementations (LISA gIoU, pycocotools AP50,
pycocoevalcap BLEU/ROUGE-L, LLaVA-Med / HuatuoGPT-Vision VQA rules); tables say which METEOR
was used: nltk's and pycocoevalcap's Java METEOR 1.5 give different values.")]
pub struct ScoreArgs {
    /// Predictions JSONL.
    #[arg(long)]
    predictions: PathBuf,
    /// MIMOSeg records JSONL (ground truth).
    #[arg(long)]
    records: PathBuf,
    /// Score only records of this split (all when omitted).
    #[arg(long)]
    split: Option<Split>,
    /// METEOR implementation.
    #[arg(long, value_enum, default_value = "off")]
    meteor: Meteor,
    /// WordNet 3.0 database folder for `--meteor nltk` (Debian's wordnet-base).
    #[arg(long, default_value = "/usr/share/wordnet")]
    wordnet: PathBuf,
    /// meteor-1.5.jar for `--meteor java` (e.g. the one inside the pycocoevalcap package).
    #[arg(long)]
    meteor_jar: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `mimo score`.
pub fn run(args: ScoreArgs) -> Result<(), String> {
    let meteor = match args.meteor {
        Meteor::Off => MeteorMode::Off,
        Meteor::Nltk => MeteorMode::Nltk(args.wordnet.clone()),
        Meteor::Java => MeteorMode::Java(
            args.meteor_jar
                .clone()
                .ok_or("--meteor java needs --meteor-jar PATH/meteor-1.5.jar")?,
        ),
    };
    let records: Vec<Record> = read_jsonl(&args.records).map_err(|e| e.to_string())?;
    let preds: Vec<Prediction> = read_jsonl(&args.predictions).map_err(|e| e.to_string())?;
    let known: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let unknown = preds
        .iter()
        .filter(|p| !known.contains(p.id.as_str()))
        .count();
    if unknown > 0 {
        eprintln!("note: {unknown} prediction(s) have ids that are not in the records; ignored");
    }
    let s = score(&records, &preds, args.split, &meteor).map_err(|e| e.to_string())?;
    write_tables(&s, &args.out)?;
    Ok(())
}

/// Writes `tables.md`, `tables.csv` and `scores.json` into `out` and prints the tables.
pub fn write_tables(s: &mimo_bench::eval::Scores, out: &std::path::Path) -> Result<(), String> {
    let md = markdown(s);
    let json = serde_json::to_string_pretty(s).map_err(|e| e.to_string())?;
    for (name, text) in [
        ("tables.md", md.as_str()),
        ("tables.csv", &csv(s)),
        ("scores.json", &json),
    ] {
        let path = out.join(name);
        write_atomic(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    print!("{md}");
    eprintln!("wrote {}/tables.md, tables.csv, scores.json", out.display());
    Ok(())
}
