//! `mimo report`: compare evaluation runs as tables and a data-ratio plot.

use std::path::PathBuf;

use clap::Args;
use mimo_bench::report::{load_run, markdown, ratio_figure, ratio_study};
use mimo_core::fsutil::write_atomic;

/// Arguments of `mimo report`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Each RUN_DIR holds the scores.json written by `mimo score --out RUN_DIR`, and optionally a
run.json such as {\"name\": \"MIMO 25%\", \"data_ratio\": 0.25, \"aligner\": true} (`mimo eval`
of a run directory writes it). Writes OUT/report.md (one table per metric: runs x
perspectives, and held-out VQA) and, when runs have a data_ratio, OUT/ratio.png: mIoU, AP50,
F1 per perspective and VQA accuracy against the data ratio, like the paper's Figure 5. Runs
without the aligner (the ablation) are in the tables but not in the figure, and a second run
at a ratio already drawn is left out of it; both are said on stderr.")]
pub struct ReportArgs {
    /// Run folders.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `mimo report`.
pub fn run(args: ReportArgs) -> Result<(), String> {
    let runs = args
        .runs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let md = markdown(&runs);
    let path = args.out.join("report.md");
    write_atomic(&path, md.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    print!("{md}");
    let (drawn, left_out) = ratio_study(&runs);
    for (name, why) in &left_out {
        eprintln!("not in the ratio figure: `{name}`: {why}");
    }
    if !drawn.is_empty() {
        let img = ratio_figure(&runs);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        let path = args.out.join("ratio.png");
        write_atomic(&path, &png).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    } else {
        eprintln!("no run of the ratio study (a data_ratio in run.json): no ratio plot");
    }
    eprintln!("wrote {}", args.out.join("report.md").display());
    Ok(())
}
