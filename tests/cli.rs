//! End-to-end tests of the `mimo` binary: the README's main command and its errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "cli/module_graph.rs"]
mod module_graph;
#[path = "cli/serve.rs"]
mod serve;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn mimo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mimo"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run mimo")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory under the target dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mimo-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, f: &str) -> String {
        self.0.join(f).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MODEL: &str = "mimo-core/fixtures/sam/tiny_a.ron";
const CKPT: &str = "mimo-core/fixtures/sam/tiny_a.safetensors";
const IMAGE: &str = "assets/samples/mni152_t1_z95.png"; // 197 x 233

fn segment_with(model: &str, checkpoint: &str, extra: &[&str]) -> Output {
    let mut args = vec!["segment", "--model", model, "--checkpoint", checkpoint];
    args.extend_from_slice(extra);
    mimo(&args)
}

fn segment(extra: &[&str]) -> Output {
    segment_with(MODEL, CKPT, extra)
}

#[test]
fn segment_writes_mask_overlay_and_json() {
    let dir = TempDir::new("ok");
    let (mask, overlay, json) = (dir.path("m.png"), dir.path("o.png"), dir.path("m.json"));
    let o = segment(&[
        "--image",
        IMAGE,
        "--point",
        "98,110",
        "--point",
        "20,20,0",
        "--box",
        "30,30,170,200",
        "--out",
        &mask,
        "--overlay",
        &overlay,
        "--json",
        &json,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let m = image::open(&mask).unwrap().to_luma8();
    assert_eq!(m.dimensions(), (197, 233));
    assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    let fg = m.pixels().filter(|p| p.0[0] == 255).count() as u64;
    let ov = image::open(&overlay).unwrap().to_rgb8();
    assert_eq!(ov.dimensions(), (197, 233));

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["width"], 197);
    assert_eq!(v["height"], 233);
    let masks = v["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 1);
    assert_eq!(masks[0]["rle"]["size"], serde_json::json!([233, 197]));
    assert_eq!(masks[0]["area"].as_u64().unwrap(), fg);
    let rle: mimo_data::rle::Rle = serde_json::from_value(masks[0]["rle"].clone()).unwrap();
    let decoded = rle.decode().unwrap();
    let png: Vec<bool> = m.pixels().map(|p| p.0[0] == 255).collect();
    assert_eq!(decoded, png, "RLE in the JSON equals the PNG mask");
    assert!(masks[0]["predicted_iou"].is_number());
}

#[test]
fn multimask_lists_three_masks() {
    let dir = TempDir::new("multi");
    let o = segment(&[
        "--image",
        IMAGE,
        "--point",
        "98,110",
        "--multimask",
        "--out",
        &dir.path("m.png"),
        "--json",
        &dir.path("m.json"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("m.json")).unwrap()).unwrap();
    assert_eq!(v["masks"].as_array().unwrap().len(), 3);
    assert!(v["best"].as_u64().unwrap() < 3);
}

fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure, got success");
    let e = stderr(o);
    assert!(e.contains(needle), "stderr lacks {needle:?}:\n{e}");
    assert!(!e.contains("panicked"), "panicked:\n{e}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = TempDir::new("bad");
    let out = dir.path("m.png");
    fails_with(
        &segment(&["--image", "nope.png", "--point", "1,1", "--out", &out]),
        "nope.png",
    );
    let corrupt = dir.path("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    fails_with(
        &segment(&["--image", &corrupt, "--point", "1,1", "--out", &out]),
        "corrupt.png",
    );
    fails_with(
        &segment(&["--image", IMAGE, "--box", "10,10,300,40", "--out", &out]),
        "x0 <= x1 <= 197",
    );
    fails_with(
        &segment(&["--image", IMAGE, "--box", "50,10,40,40", "--out", &out]),
        "x0 <= x1",
    );
    fails_with(
        &segment(&["--image", IMAGE, "--point", "500,10", "--out", &out]),
        "x must be in [0, 197]",
    );
    fails_with(&segment(&["--image", IMAGE, "--out", &out]), "--point");
    fails_with(
        &segment(&["--image", IMAGE, "--point", "1,1,7", "--out", &out]),
        "LABEL",
    );
    let point = ["--image", IMAGE, "--point", "1,1", "--out", &out];
    fails_with(&segment_with("vit_q", CKPT, &point), "vit_b, vit_l, vit_h");
    // A checkpoint of another configuration names the offending key and both shapes.
    let o = segment_with(MODEL, "mimo-core/fixtures/sam/tiny_b.safetensors", &point);
    fails_with(&o, "key `");
    assert!(stderr(&o).contains("expects"), "{}", stderr(&o));
    assert!(!Path::new(&out).exists(), "no output after a failure");
}

#[test]
fn help_explains_the_commands() {
    let o = mimo(&["segment", "--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for word in ["--checkpoint", "--box", "--multimask", "RANDOM", "COCO RLE"] {
        assert!(text.contains(word), "help lacks {word}:\n{text}");
    }
}

/// The README's commands are the contract: each one must be run verbatim by CI.
#[test]
fn every_readme_command_is_run_by_ci() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let mut in_block = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if in_block && !line.trim().is_empty() {
            commands.push(line.trim().to_string());
        }
    }
    assert!(commands.len() >= 2, "README lost its commands");
    for c in commands {
        assert!(
            ci.lines().any(|l| l.trim() == c),
            "README command not in .ci/run: {c}"
        );
    }
}

#[test]
fn clip_cache_computes_once_and_refuses_another_model() {
    let dir = TempDir::new("clip-cache");
    let out = dir.path("cache");
    let run = |model: &str| {
        mimo(&[
            "clip-cache",
            "--model",
            model,
            "--checkpoint",
            "mimo-core/fixtures/clip/hf_tiny_clipmodel.safetensors",
            "--images",
            "assets/samples",
            "--out",
            &out,
            "--batch",
            "3",
            "--shard-size",
            "2",
        ])
    };
    let o = run("mimo-core/fixtures/clip/hf_tiny.ron");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("4 image(s) computed, 0 already cached"),
        "{}",
        stderr(&o)
    );
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("cache/index.json")).unwrap())
            .unwrap();
    assert_eq!(index.as_object().unwrap().len(), 4);
    let o = run("mimo-core/fixtures/clip/hf_tiny.ron");
    assert!(
        stderr(&o).contains("0 image(s) computed, 4 already cached"),
        "{}",
        stderr(&o)
    );
    // Another configuration must not write into this cache.
    let other = dir.path("other.ron");
    let text = std::fs::read_to_string(root().join("mimo-core/fixtures/clip/hf_tiny.ron")).unwrap();
    std::fs::write(
        &other,
        text.replace(
            "projection_dim: Some(32),",
            "projection_dim: Some(32),\n    select: (layer: -1, feature: patch),",
        ),
    )
    .unwrap();
    fails_with(&run(&other), "another model or configuration");
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn generate_streams_greedy_tokens_and_applies_adapters() {
    use mimo_core::tokenizer::MimoTokenizer;
    // The tiny chat model's greedy answer, as transformers generated it (ids in io.safetensors).
    let io = std::fs::read(root().join("mimo-core/fixtures/llm/chat/io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&io).unwrap();
    let g = st.tensor("generated").unwrap();
    let ids: Vec<u32> = g.data()[..g.shape()[1] * 8]
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let tok = MimoTokenizer::from_file(root().join("mimo-core/fixtures/llm/chat")).unwrap();
    let want = tok.decode(&ids, true).unwrap();
    let o = mimo(&[
        "generate",
        "--model",
        "mimo-core/fixtures/llm/chat",
        "--prompt",
        "Where is the liver?",
        "--max-new-tokens",
        "12",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim_end_matches('\n'), want);
    assert!(stderr(&o).contains("finished by Length"));

    // A peft adapter, plain and merged, gives the same text; the tokenizer's added tokens
    // grow the 96-row test model.
    let run = |merge: bool| {
        let mut a = vec![
            "generate",
            "--model",
            "mimo-core/fixtures/llm/mha",
            "--tokenizer",
            "mimo-core/fixtures/tokenizer/tokenizer.json",
            "--adapter",
            "mimo-core/fixtures/llm/lora/peft_qv",
            "--prompt",
            "hello",
            "--prompt",
            "a longer second prompt",
            "--max-new-tokens",
            "5",
            "--template",
            "none",
        ];
        if merge {
            a.push("--merge");
        }
        mimo(&a)
    };
    let (plain, merged) = (run(false), run(true));
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(stderr(&plain).contains("adapter") && stderr(&plain).contains("adding"));
    assert_eq!(stdout(&plain), stdout(&merged));
    assert!(stdout(&plain).contains("### 2 a longer second prompt"));
}

#[test]
fn generate_rejects_bad_flags_clearly() {
    let chat = "mimo-core/fixtures/llm/chat";
    fails_with(
        &mimo(&[
            "generate", "--model", chat, "--prompt", "x", "--top-p", "1.5",
        ]),
        "--top-p",
    );
    fails_with(
        &mimo(&["generate", "--model", "nope", "--prompt", "x"]),
        "not a directory",
    );
    fails_with(
        &mimo(&[
            "generate",
            "--model",
            chat,
            "--prompt",
            "x",
            "--template",
            "alpaca",
        ]),
        "vicuna_v1, llava_v1 or none",
    );
    fails_with(
        &mimo(&[
            "generate",
            "--model",
            chat,
            "--prompt",
            "x",
            "--adapter",
            "mimo-core/fixtures/llm/lora/peft_qv",
        ]),
        "v_proj.lora_B.weight",
    );
    fails_with(
        &mimo(&[
            "generate", "--model", chat, "--prompt", "x", "--dtype", "f8",
        ]),
        "use f32, bf16 or f16",
    );
}

/// `mimo generate --dtype bf16` reads the weights in bf16 and answers.
#[test]
fn generate_runs_in_bf16() {
    let out = mimo(&[
        "generate",
        "--model",
        "mimo-core/fixtures/llm/chat",
        "--prompt",
        "Where is the liver?",
        "--max-new-tokens",
        "4",
        "--dtype",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("[1] "), "{}", stderr(&out));
}

/// `mimo score` on the hand-checked predictions of `mimo-bench/fixtures/eval`.
fn score_fixture(out: &str) -> Output {
    mimo(&[
        "score",
        "--predictions",
        "mimo-bench/fixtures/eval/predictions.jsonl",
        "--records",
        "mimo-bench/fixtures/eval/records.jsonl",
        "--split",
        "test",
        "--out",
        out,
    ])
}

#[test]
fn score_writes_the_tables_and_names_bad_lines() {
    let dir = TempDir::new("score");
    let out = dir.path("eval");
    let o = score_fixture(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(Path::new(&out).join("tables.md")).unwrap();
    assert!(md.contains("| P1 | mIoU | 0.750 | 0.639 |"), "{md}");
    assert!(Path::new(&out).join("tables.csv").is_file());
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("scores.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["missing_predictions"], 1);

    let bad = dir.path("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"r1\", \"answer\": \"x\"}\n{\"id\": 3}\n").unwrap();
    fails_with(
        &mimo(&[
            "score",
            "--predictions",
            &bad,
            "--records",
            "mimo-bench/fixtures/eval/records.jsonl",
            "--out",
            &out,
        ]),
        "bad.jsonl:2",
    );
    fails_with(
        &mimo(&[
            "score",
            "--predictions",
            &bad,
            "--records",
            "mimo-bench/fixtures/eval/records.jsonl",
            "--meteor",
            "java",
            "--out",
            &out,
        ]),
        "--meteor-jar",
    );
}

#[test]
fn heldout_records_feed_the_scorer() {
    let dir = TempDir::new("heldout");
    let records = dir.path("slake.jsonl");
    let o = mimo(&[
        "heldout",
        "slake",
        "--input",
        "mimo-bench/fixtures/heldout/slake_sample.json",
        "--out",
        &records,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds = dir.path("preds.jsonl");
    std::fs::write(
        &preds,
        "{\"id\": \"slake/11934\", \"answer\": \"No, it does not.\"}\n",
    )
    .unwrap();
    let out = dir.path("eval");
    let o = mimo(&[
        "score",
        "--predictions",
        &preds,
        "--records",
        &records,
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("| SLAKE | accuracy % | 100.000 | 57.000 |"),
        "{}",
        stdout(&o)
    );
    fails_with(
        &mimo(&["heldout", "seg", "--input", "x", "--out", &records]),
        "--masks",
    );
}

#[test]
fn report_compares_runs_and_plots_the_ratio() {
    let dir = TempDir::new("report");
    let mut runs = Vec::new();
    for ratio in ["0.25", "0.5", "1"] {
        let run = dir.path(&format!("run{ratio}"));
        let o = score_fixture(&run);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(
            Path::new(&run).join("run.json"),
            format!("{{\"name\": \"MIMO {ratio}\", \"data_ratio\": {ratio}}}"),
        )
        .unwrap();
        runs.push(run);
    }
    let out = dir.path("report");
    let mut args = vec!["report"];
    args.extend(runs.iter().map(String::as_str));
    args.extend(["--out", &out]);
    let o = mimo(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("| MIMO 0.5 | 0.750 | 0.000 |"),
        "{}",
        stdout(&o)
    );
    let png = image::open(Path::new(&out).join("ratio.png")).unwrap();
    assert_eq!((png.width(), png.height()), (960, 680));
    fails_with(&mimo(&["report", "nope", "--out", &out]), "scores.json");
}

#[test]
fn data_build_stats_and_show() {
    let dir = TempDir::new("data");
    let out = dir.path("ds");
    let o = mimo(&[
        "data",
        "build",
        "configs/data/quickstart.ron",
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("76 images"), "{}", stdout(&o));
    let records = Path::new(&out).join("records.jsonl");
    let o = mimo(&["data", "stats", records.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("304 records") && stdout(&o).contains("optic disc"));
    let png = dir.path("show.png");
    let o = mimo(&[
        "data",
        "show",
        records.to_str().unwrap(),
        "phantom-ct/000001/P2",
        "--out",
        &png,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("gpt: ") && stdout(&o).contains("<SEG>"));
    assert_eq!(image::open(&png).unwrap().width(), 128);
    fails_with(
        &mimo(&[
            "data",
            "show",
            records.to_str().unwrap(),
            "nope",
            "--out",
            &png,
        ]),
        "no record `nope`",
    );
    let bad = dir.path("bad.ron");
    std::fs::write(
        &bad,
        "(name: \"x\", seed: 1, sources: [], splits: (train: 0.5, val: 0.1, test: 0.1))",
    )
    .unwrap();
    fails_with(&mimo(&["data", "build", &bad, "--out", &out]), "splits");
}

/// A build killed part-way (SIGKILL) and run again ends with the same records as an
/// uninterrupted build, and nothing half-written is left behind.
#[test]
fn data_build_resumes_after_kill() {
    let dir = TempDir::new("resume");
    let cfg = dir.path("ds.ron");
    std::fs::write(
        &cfg,
        "(name: \"resume\", seed: 3, sources: [Phantom(name: \"ct\", style: Ct, count: 160, size: 96, volumes: 20)], perspectives: [P1, P2, P3, P4])",
    )
    .unwrap();
    let (killed, fresh) = (dir.path("killed"), dir.path("fresh"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mimo"))
        .args(["data", "build", &cfg, "--out", &killed])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let images = Path::new(&killed).join("images/ct");
    let start = std::time::Instant::now();
    while std::fs::read_dir(&images).map(|d| d.count()).unwrap_or(0) < 10
        && start.elapsed().as_secs() < 60
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let written = std::fs::read_dir(&images).map(|d| d.count()).unwrap_or(0);
    let records = Path::new(&killed).join("records.jsonl");
    println!(
        "killed after {written} images; records written: {}",
        records.exists()
    );
    // No temporary file is left as a finished output.
    for e in std::fs::read_dir(&images).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            image::open(&p).unwrap_or_else(|e| panic!("{}: half-written image: {e}", p.display()));
        }
    }
    let o = mimo(&["data", "build", &cfg, "--out", &killed]);
    assert!(o.status.success(), "{}", stderr(&o));
    let leftovers: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let o = mimo(&["data", "build", &cfg, "--out", &fresh]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&records).unwrap(),
        std::fs::read(Path::new(&fresh).join("records.jsonl")).unwrap(),
        "resumed build differs from a fresh one"
    );
}

const MIMO_TINY: &str = "configs/mimo/mimo-tiny.ron";

fn infer(out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "infer",
        "--config",
        MIMO_TINY,
        "--question",
        "What is marked here?",
        "--out",
        out,
        "--max-new-tokens",
        "8",
    ];
    args.extend_from_slice(extra);
    mimo(&args)
}

#[test]
fn infer_answers_with_json_and_overlay() {
    let dir = TempDir::new("infer");
    let out = dir.path("o");
    let o = infer(
        &out,
        &[
            "--image",
            IMAGE,
            "--point",
            "98,110",
            "--point",
            "20,20,0",
            "--box",
            "30,30,170,200",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("o/answer.json")).unwrap())
            .unwrap();
    assert_eq!(json["width"], 197);
    assert_eq!(json["prompts"].as_array().unwrap().len(), 3);
    assert!(json["raw"].is_string() && json["segments"].is_array());
    let overlay = image::open(dir.0.join("o/overlay.png")).unwrap();
    // Scaled up so the short side is at least 384 px.
    assert!(overlay.width() >= 384, "{}", overlay.width());
    assert!(
        stderr(&o).contains("randomly initialised"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn infer_rejects_bad_input_clearly() {
    let dir = TempDir::new("infer-bad");
    let out = dir.path("o");
    fails_with(&infer(&out, &["--image", "nope.png"]), "nope.png");
    fails_with(
        &infer(&out, &["--image", IMAGE, "--point", "300,10"]),
        "outside the 197x233 image",
    );
    fails_with(
        &infer(&out, &["--image", IMAGE, "--box", "50,50,10,10"]),
        "top-left",
    );
    fails_with(
        &infer(&out, &["--image", IMAGE, "--checkpoint", "assets"]),
        "not a MIMO checkpoint directory",
    );
    let o = mimo(&[
        "infer",
        "--config",
        "configs/sam/vit_b.ron",
        "--image",
        IMAGE,
        "--question",
        "q",
        "--out",
        &out,
    ]);
    fails_with(&o, "configs/sam/vit_b.ron");
}

#[test]
fn data_build_that_produces_nothing_fails() {
    let dir = TempDir::new("empty-build");
    let ron = dir.path("d.ron");
    std::fs::write(
        &ron,
        r#"(name: "d", seed: 1, sources: [Folder(name: "f", images: "/nonexistent/images",
            masks: "/nonexistent/masks", modality: "CT", labels: {1: "liver"}, volume_separator: None)],
            perspectives: [P1], splits: (train: 1.0, val: 0.0, test: 0.0), box_jitter: 0.1,
            point_share: 0.5, point_mode: Interior)"#,
    )
    .unwrap();
    let o = mimo(&["data", "build", &ron, "--out", &dir.path("out")]);
    fails_with(&o, "no record");
    fails_with(&o, "/nonexistent/images");
    // JSON where a RON model file is expected says so.
    let o = mimo(&[
        "segment",
        "--model",
        "mimo-core/fixtures/llm/chat/config.json",
        "--checkpoint",
        CKPT,
        "--image",
        IMAGE,
        "--point",
        "5,5",
        "--out",
        &dir.path("m.png"),
    ]);
    fails_with(&o, "this is JSON");
}

#[test]
fn config_smaller_than_its_checkpoint_fails() {
    let dir = TempDir::new("cut-down");
    let text = std::fs::read_to_string(root().join("mimo-core/fixtures/sam/tiny_b.ron")).unwrap();
    let cut = text
        .replace("depth: 4,", "depth: 2,")
        .replace("global_attn_indexes: [1, 3]", "global_attn_indexes: [1]");
    assert_ne!(cut, text);
    let ron = dir.path("cut.ron");
    std::fs::write(&ron, cut).unwrap();
    let o = segment_with(
        &ron,
        "mimo-core/fixtures/sam/tiny_b.safetensors",
        &[
            "--image",
            IMAGE,
            "--point",
            "5,5",
            "--out",
            &dir.path("m.png"),
        ],
    );
    fails_with(&o, "image_encoder.depth");
}

/// The trained parameters of a run's final checkpoint (adapter + trained parts + extra), by
/// file and tensor name.
fn final_tensors(run: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let dir = Path::new(run).join("final");
    for f in [
        "trained.safetensors",
        "extra.safetensors",
        "adapter/adapter_model.safetensors",
    ] {
        let Ok(bytes) = std::fs::read(dir.join(f)) else {
            continue;
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (k, v) in st.tensors() {
            out.insert(format!("{f}:{k}"), v.data().to_vec());
        }
    }
    out
}

/// Builds the phantom dataset into `dir/data` and writes `dir/exp.ron`: tiny_phantom on it,
/// with `rest` (more experiment fields) overriding.
fn tiny_experiment(dir: &TempDir, name: &str, rest: &str) -> (String, String) {
    let data = dir.path("data");
    let o = mimo(&[
        "data",
        "build",
        "configs/data/quickstart.ron",
        "--out",
        &data,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let exp = dir.path("exp.ron");
    std::fs::write(
        &exp,
        format!(
            "(name: \"{name}\", base: Some(\"{}\"), data: (records: Some(\"{data}/records.jsonl\"), build: None), \
             validation: (batch_size: 4, max_samples: Some(4)), {rest})",
            root().join("experiments/tiny_phantom.ron").display(),
        ),
    )
    .unwrap();
    (data, exp)
}

#[test]
fn training_resumed_after_sigkill_equals_an_uninterrupted_run() {
    let dir = TempDir::new("train-kill");
    let (_, exp) = tiny_experiment(
        &dir,
        "kill",
        "stages: [(name: \"g\", epochs: 3, samples_per_epoch: Some(24))], \
         checkpoint: (every_steps: Some(2), keep_last: 2)",
    );
    let (killed, fresh) = (dir.path("killed"), dir.path("fresh"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mimo"))
        .args(["train", &exp, "--out", &killed, "--no-dashboard"])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill (SIGKILL) once step 5 is logged: the newest checkpoint is step 4, so the resumed
    // run must redo step 5 (18 steps in all).
    let csv = Path::new(&killed).join("train.csv");
    let logged = || {
        std::fs::read_to_string(&csv)
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while logged() < 5 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let steps = std::fs::read_to_string(Path::new(&killed).join("train.csv"))
        .map(|t| t.lines().count().saturating_sub(1))
        .unwrap_or(0);
    println!("killed after {steps} optimiser steps");
    assert!(
        !Path::new(&killed).join("final").exists(),
        "the run finished before the kill; the test needs a slower kill point"
    );
    let o = mimo(&["train", "--resume", &killed, "--no-dashboard"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mimo(&["train", &exp, "--out", &fresh, "--no-dashboard"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (final_tensors(&killed), final_tensors(&fresh));
    assert!(a.len() > 10, "{} tensors", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(differ.is_empty(), "resumed run differs in {differ:?}");
    // The metric log has each step once.
    let csv = std::fs::read_to_string(Path::new(&killed).join("train.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 18);
    // Each finished `mimo train` drew the run's curves (a 2x2 panel PNG).
    for run in [&killed, &fresh] {
        let png = image::open(Path::new(run).join("curves.png")).unwrap();
        assert_eq!((png.width(), png.height()), (1120, 680), "{run}");
    }
}

/// A free TCP port on this machine (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_nodes_train_like_one_node_with_accumulation() {
    let dir = TempDir::new("train-nodes");
    let stages = "stages: [(name: \"g\", epochs: 1, samples_per_epoch: Some(16))], \
                  checkpoint: (every_steps: Some(2), keep_last: 2)";
    let (_, one) = tiny_experiment(
        &dir,
        "nodes",
        &format!("{stages}, batch: (global: 4, per_device: 2, accumulation: Some(2))"),
    );
    let two = dir.path("two.ron");
    std::fs::write(
        &two,
        std::fs::read_to_string(&one)
            .unwrap()
            .replace("accumulation: Some(2))", "nodes: 2)"),
    )
    .unwrap();
    // Without its place in the run, a node of a 2-node experiment refuses to start.
    let o = mimo(&["train", &two, "--out", &dir.path("lone")]);
    fails_with(&o, "batch.nodes");
    let nodes_at = format!(
        "ws://127.0.0.1:{},ws://127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let o = mimo(&[
        "train",
        &two,
        "--out",
        &dir.path("bad"),
        "--node-rank",
        "2",
        "--nodes-at",
        &nodes_at,
    ]);
    fails_with(&o, "rank 2 is out of range");
    // Two processes, each with half of every global batch, against one process that
    // accumulates the same two micro-batches.
    let node = |rank: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_mimo"))
            .args([
                "train",
                &two,
                "--out",
                out,
                "--no-dashboard",
                "--node-rank",
                rank,
                "--nodes-at",
                &nodes_at,
            ])
            .current_dir(root())
            .output()
            .unwrap()
    };
    let (n0, n1) = (dir.path("n0"), dir.path("n1"));
    let (o0, o1) = std::thread::scope(|s| {
        let a = s.spawn(|| node("0", &n0));
        let b = s.spawn(|| node("1", &n1));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(o0.status.success(), "{}", stderr(&o0));
    assert!(o1.status.success(), "{}", stderr(&o1));
    let single = dir.path("single");
    let o = mimo(&["train", &one, "--out", &single, "--no-dashboard"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b, c) = (
        final_tensors(&n0),
        final_tensors(&n1),
        final_tensors(&single),
    );
    assert!(a.len() > 10, "{} tensors", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(differ.is_empty(), "the two nodes differ in {differ:?}");
    // Gradients summed in the same order as accumulation: the same bits.
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != c[*k]).collect();
    assert!(
        differ.is_empty(),
        "two nodes and one node differ in {differ:?}"
    );
    // The metric rows are the whole global batch's on every node (the statistics travel as
    // f32, hence the tolerance).
    let rows = |run: &str| {
        std::fs::read_to_string(Path::new(run).join("train.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let (r2, r1) = (rows(&n0), rows(&single));
    assert_eq!(r2.len(), 4);
    assert_eq!(r2.len(), r1.len());
    for (x, y) in r2.iter().zip(&r1) {
        assert_eq!(x[..4], y[..4]);
        // loss … grad_norm; the last column is the step's time.
        for (p, q) in x[4..x.len() - 1].iter().zip(&y[4..y.len() - 1]) {
            match (p.parse::<f64>(), q.parse::<f64>()) {
                (Ok(p), Ok(q)) => assert!((p - q).abs() <= 1e-4 * q.abs().max(1.0), "{x:?} {y:?}"),
                _ => assert_eq!(p, q),
            }
        }
    }
}

#[test]
fn train_rejects_bad_experiments_and_existing_runs() {
    let dir = TempDir::new("train-bad");
    let exp = dir.path("bad.ron");
    std::fs::write(
        &exp,
        format!(
            "(name: \"bad\", base: Some(\"{}\"), batch: (global: 10, per_device: 4))",
            root().join("experiments/tiny_phantom.ron").display()
        ),
    )
    .unwrap();
    let o = mimo(&["train", &exp, "--out", &dir.path("run")]);
    fails_with(&o, "batch.global");
    fails_with(&o, "bad.ron");
    assert!(
        !Path::new(&dir.path("run")).exists(),
        "no run directory for a bad file"
    );
    // A model file that does not exist: refused naming the field, before any work.
    let exp = dir.path("no_model.ron");
    std::fs::write(
        &exp,
        format!(
            "(name: \"no_model\", base: Some(\"{}\"), model: \"nope.ron\")",
            root().join("experiments/tiny_phantom.ron").display()
        ),
    )
    .unwrap();
    let o = mimo(&["train", &exp, "--out", &dir.path("run2")]);
    fails_with(&o, "experiment field `model`");
    fails_with(&o, "no_model.ron");
    assert!(!Path::new(&dir.path("run2")).exists());
    std::fs::create_dir_all(dir.path("taken")).unwrap();
    // An earlier run's metric log: a refused run must not draw its curves.
    std::fs::write(
        dir.path("taken/train.csv"),
        "stage,epoch,step,lr,loss\ng,1,1,0.001,2.0\n",
    )
    .unwrap();
    let o = mimo(&[
        "train",
        "experiments/tiny_phantom.ron",
        "--out",
        &dir.path("taken"),
    ]);
    fails_with(&o, "already exists");
    assert!(
        !Path::new(&dir.path("taken/curves.png")).exists(),
        "nothing is drawn into another run's directory"
    );
    let o = mimo(&["train", "--resume", &dir.path("nothing")]);
    fails_with(&o, "not a run directory");
    // A backend this binary was built without: refused before any work, saying which
    // cargo feature builds it.
    if !cfg!(feature = "cuda") {
        let o = mimo(&[
            "train",
            "experiments/tiny_phantom.ron",
            "--backend",
            "cuda",
            "--out",
            &dir.path("cuda"),
        ]);
        fails_with(&o, "without the `cuda` cargo feature");
        fails_with(&o, "--features cuda");
        assert!(!Path::new(&dir.path("cuda")).exists());
    }
}

#[test]
fn eval_tables_equal_scoring_its_predictions_by_hand() {
    let dir = TempDir::new("eval-score");
    // The "w/o Aligner" ablation: the experiment turns off the model file's aligner, and
    // evaluation must build the model the run trained.
    let (data, exp) = tiny_experiment(
        &dir,
        "tiny_eval",
        "stages: [(name: \"g\", epochs: 1, samples_per_epoch: Some(8))], aligner: Some(false), \
         checkpoint: (every_steps: Some(1), keep_last: 1)",
    );
    // Six test records in a file of their own (images stay relative to the data folder).
    let all = std::fs::read_to_string(Path::new(&data).join("records.jsonl")).unwrap();
    let six: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("\"split\":\"test\""))
        .take(6)
        .collect();
    assert_eq!(six.len(), 6);
    let records = Path::new(&data).join("six.jsonl");
    std::fs::write(&records, six.join("\n") + "\n").unwrap();
    let run = dir.path("run");
    let o = mimo(&["train", &exp, "--out", &run, "--no-dashboard"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ev, sc) = (dir.path("eval"), dir.path("score"));
    let records = records.display().to_string();
    let o = mimo(&[
        "eval",
        &run,
        "--records",
        &records,
        "--split",
        "test",
        "--out",
        &ev,
        "--max-new-tokens",
        "24",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds = Path::new(&ev).join("predictions.jsonl");
    assert_eq!(std::fs::read_to_string(&preds).unwrap().lines().count(), 6);
    let o = mimo(&[
        "score",
        "--predictions",
        &preds.display().to_string(),
        "--records",
        &records,
        "--split",
        "test",
        "--out",
        &sc,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["scores.json", "tables.md", "tables.csv"] {
        assert_eq!(
            std::fs::read_to_string(Path::new(&ev).join(f)).unwrap(),
            std::fs::read_to_string(Path::new(&sc).join(f)).unwrap(),
            "{f}"
        );
    }
    // The run's name and data ratio travel to the report.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&ev).join("run.json")).unwrap())
            .unwrap();
    assert_eq!(info["name"], "tiny_eval (w/o aligner)");
    assert_eq!(info["aligner"], false);
    assert_eq!(info["data_ratio"], 1.0);
    // A second eval skips what is done (resumable) and gives the same file.
    let before = std::fs::read_to_string(&preds).unwrap();
    let o = mimo(&[
        "eval",
        &run,
        "--records",
        &records,
        "--split",
        "test",
        "--out",
        &ev,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&preds).unwrap(), before);
    // A step checkpoint of the run: built as the run trained it, without --config.
    let step = std::fs::read_dir(Path::new(&run).join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .expect("a step checkpoint")
        .display()
        .to_string();
    let ev_step = dir.path("eval-step");
    let eval_step = |out: &str| {
        mimo(&[
            "eval",
            &step,
            "--records",
            &records,
            "--out",
            out,
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
        ])
    };
    let o = eval_step(&ev_step);
    assert!(o.status.success(), "{}", stderr(&o));
    // Resuming into a folder of another model's predictions is refused.
    fails_with(&eval_step(&ev), "holds predictions of another model");
    // `mimo infer` with the model file and the run's final/ builds the run's model too.
    let final_dir = Path::new(&run).join("final").display().to_string();
    let o = infer(
        &dir.path("infer"),
        &["--image", IMAGE, "--checkpoint", &final_dir],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Held-out segmentation records from `mimo heldout` (absolute image paths, a question
    // from the templates) evaluate from anywhere.
    let heldout = dir.path("heldout/seg.jsonl");
    let o = mimo(&[
        "heldout",
        "seg",
        "--input",
        "mimo-bench/fixtures/heldout/seg/images",
        "--masks",
        "mimo-bench/fixtures/heldout/seg/masks",
        "--with-box",
        "--out",
        &heldout,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev_heldout = dir.path("eval-heldout");
    let o = mimo(&[
        "eval",
        &run,
        "--records",
        &heldout,
        "--out",
        &ev_heldout,
        "--max-new-tokens",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds = std::fs::read_to_string(Path::new(&ev_heldout).join("predictions.jsonl")).unwrap();
    assert_eq!(preds.lines().count(), 2, "{preds}");
}

/// `bench load --checkpoint` loads a SAM checkpoint in fresh processes and reports both
/// dtypes with the weights' size; without `--model`, or with a missing file, it says so.
#[test]
fn bench_load_measures_a_sam_checkpoint() {
    let o = mimo(&[
        "bench",
        "load",
        "--model",
        "mimo-core/fixtures/sam/tiny_a.ron",
        "--checkpoint",
        "mimo-core/fixtures/sam/tiny_a.pth",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("load as f32") && out.contains("load as bf16"),
        "{out}"
    );
    let o = mimo(&[
        "bench",
        "load",
        "--checkpoint",
        "mimo-core/fixtures/sam/tiny_a.pth",
    ]);
    fails_with(&o, "--checkpoint needs --model");
    let o = mimo(&[
        "bench",
        "load",
        "--model",
        "vit_h",
        "--checkpoint",
        "no/such.pth",
    ]);
    fails_with(&o, "no such file");
}

/// `bench mimo` times the step as the 24 GB experiment trains it (only the added token rows,
/// decoder layers recomputed, bf16 frozen parts): fewer trained parameters than LISA's whole
/// token matrices, less kept for the backward than with the layers' activations kept; an
/// unknown `--token-rows` or `--checkpointing` is refused.
#[test]
fn bench_mimo_times_the_24gb_setting() {
    let dir = TempDir::new("bench-mimo");
    let trained = |extra: &[&str], name: &str| {
        let json = dir.path(name);
        let mut args = vec![
            "bench",
            "mimo",
            "--runs",
            "1",
            "--text-len",
            "32",
            "--json",
            &json,
        ];
        args.extend_from_slice(extra);
        let o = mimo(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("kept for the backward"), "{out}");
        let line = out
            .lines()
            .find(|l| l.contains("trainable parameters"))
            .unwrap_or_else(|| panic!("{out}"));
        let n = line
            .split(", ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{line}"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let mem = |k: &str| {
            v["memory"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k}: {v}"))
        };
        (
            n,
            [
                mem("before_bytes"),
                mem("graph_bytes"),
                mem("after_step_bytes"),
            ],
        )
    };
    let (whole, [_, w_graph, w_after]) = trained(&["--token-rows", "whole"], "whole.json");
    let (new, _) = trained(
        &[
            "--token-rows",
            "new",
            "--checkpointing",
            "decoder_layers",
            "--dtype",
            "bf16",
            "--mixed",
        ],
        "new.json",
    );
    assert!(new < whole, "new rows {new} vs whole {whole}");
    // Split token rows keep hardly more for the backward than whole matrices (they kept a
    // concatenated copy of both matrices: +125 MiB here). mimo-tiny with a LLaMA of 32000
    // tokens, where the matrices are 62.5 MiB each.
    let model = dir.path("mid.ron");
    std::fs::write(
        &model,
        std::fs::read_to_string(root().join(MIMO_TINY))
            .unwrap()
            .replace("\"../", &format!("\"{}/configs/", root().display()))
            .replace(
                "llm: \"tiny\"",
                &format!(
                    "llm: \"{}\"",
                    root().join("configs/llm/mid_512x4.json").display()
                ),
            ),
    )
    .unwrap();
    let graph = |rows: &str, extra: &[&str]| {
        let json = dir.path(&format!("mid_{rows}{}.json", extra.join("_")));
        let mut args = vec![
            "bench",
            "mimo",
            "--model",
            &model,
            "--runs",
            "1",
            "--text-len",
            "32",
            "--token-rows",
            rows,
            "--json",
            &json,
        ];
        args.extend_from_slice(extra);
        let o = mimo(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v["memory"]["graph_bytes"].as_u64().unwrap()
    };
    let (split_kept, whole_kept) = (graph("new", &[]), graph("whole", &[]));
    assert!(
        split_kept as f64 <= whole_kept as f64 * 1.05,
        "split rows keep {split_kept} bytes for the backward, whole matrices {whole_kept}"
    );
    // Recomputing the decoder layers keeps their inputs only (here the head's logits over
    // 32000 tokens are most of what remains: 23.9 against 31.9 MB on the AMD EPYC machine).
    let layers_kept = graph("new", &["--checkpointing", "decoder_layers"]);
    println!("kept for the backward: {split_kept} bytes, decoder layers recomputed {layers_kept}");
    assert!(
        (layers_kept as f64) < split_kept as f64 * 0.85,
        "recomputed layers keep {layers_kept} bytes, kept layers {split_kept}"
    );
    // The counted heap: the forward keeps a graph, and AdamW keeps two f32 moments per
    // trained parameter.
    assert!(w_graph > 0);
    assert!(
        w_after >= 8 * whole,
        "{w_after} bytes after the step, {whole} trained"
    );
    let o = mimo(&["bench", "mimo", "--token-rows", "some"]);
    fails_with(&o, "unknown --token-rows `some`");
    let o = mimo(&["bench", "mimo", "--checkpointing", "layers"]);
    fails_with(
        &o,
        "--checkpointing layers: use `balanced` or `decoder_layers`",
    );
}
