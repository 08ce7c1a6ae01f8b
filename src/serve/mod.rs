//! `mimo serve`: a local web app on one model. Open a scan, mark points and boxes, ask a
//! question and see the answer with each grounded phrase's mask, or (SAM alone) click and see
//! the mask at once. The page uses only the JSON API under `/api/`, which scripts can call too.

mod api;
mod images;
mod worker;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use api::{AppState, Limits};
use images::Store;
use worker::ModelSpec;

/// Arguments of `mimo serve`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["config", "sam"])))]
#[command(after_long_help = "\
The page (open the printed URL): pick a bundled sample or open a PNG, JPEG, DICOM or NIfTI
file (a slider walks through a volume's slices); click to mark a point (shift-click: a
background point), drag to draw a box; type a question and press Ask. The answer streams in,
each grounded phrase in the colour of its mask; masks can be toggled and downloaded (PNG), as
can the JSON answer. With --sam, every click or box segments at once (the image embedding is
computed once per image) and the three multimask choices can be shown.

The API (JSON; errors are {\"error\": \"...\"} with a 4xx or 5xx status):
  GET  /api/info                    model, backend, limits, bundled samples
  GET  /api/samples/NAME            a bundled sample image (PNG)
  POST /api/images                  body: the image file's bytes -> {id, kind, width, height, slices}
  GET  /api/images/ID/slices/K      slice K of an upload as PNG (0 for a 2-D image)
  POST /api/segment                 {image, slice?, points?: [[x, y, label?]], box?: [x0, y0, x1, y1],
                                     multimask?} -> {best, masks: [{predicted_iou, area, rle, png}]}
  POST /api/answer                  {image, slice?, question, points?, boxes?: [[x0, y0, x1, y1]],
                                     max_new_tokens?, temperature?, seed?} -> the answer JSON of
                                     `mimo infer`, each mask also as base64 PNG; with
                                     `Accept: text/event-stream`, events `text` then `answer` (or `error`)
Requests wait in a queue of --queue; when it is full the reply is 503 with Retry-After.

Example (the bundled demo model: mimo-tiny trained by `mimo quickstart` on phantoms):
  mimo serve --config configs/mimo/mimo-tiny.ron --checkpoint assets/demo/mimo-tiny-phantom

SAM alone, with real weights you downloaded:
  mimo serve --sam vit_b --checkpoint /path/to/sam_vit_b_01ec64.pth")]
pub struct ServeArgs {
    /// MIMO model file (RON), e.g. configs/mimo/mimo-tiny.ron.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Segment Anything alone: vit_b, vit_l, vit_h or a SamConfig RON file (needs
    /// --checkpoint, the SAM checkpoint file).
    #[arg(long, value_name = "MODEL")]
    sam: Option<String>,
    /// With --config: a trained checkpoint directory (a run's final/); with --sam: the SAM
    /// checkpoint (.pth or .safetensors).
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// Address to listen on. The default serves this machine only; 0.0.0.0 opens it to the
    /// network (there is no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Largest upload in MiB.
    #[arg(long, default_value_t = 64)]
    max_upload_mb: usize,
    /// Longest side of an image (or slice) in pixels.
    #[arg(long, default_value_t = 4096)]
    max_image_side: usize,
    /// Most requests waiting for the model; more get 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Seconds a request may take, waiting in the queue included; then 504.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Most tokens of an answer (also the default when a request gives none).
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Uploads kept in memory (the oldest is dropped first).
    #[arg(long, default_value_t = 32)]
    keep_images: usize,
    /// With --config: weight and activation dtype, f32 or bf16/f16 (how the 7B model runs
    /// on a GPU; checkpoints are read straight into that dtype).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Runs `mimo serve` until interrupted (Ctrl-C).
pub fn run(args: ServeArgs) -> Result<(), String> {
    if args.queue == 0 {
        return Err("--queue must be at least 1".into());
    }
    if args.max_new_tokens == 0 {
        return Err("--max-new-tokens must be at least 1".into());
    }
    let spec = match (&args.config, &args.sam) {
        (Some(config), None) => ModelSpec::Mimo {
            config: config.clone(),
            checkpoint: args.checkpoint.clone(),
            dtype: crate::backend::parse_dtype(&args.dtype)?,
        },
        (None, Some(model)) => ModelSpec::Sam {
            model: model.clone(),
            checkpoint: args
                .checkpoint
                .clone()
                .ok_or("--sam needs --checkpoint, the SAM checkpoint file")?,
        },
        _ => return Err("give either --config (MIMO) or --sam (SAM alone)".into()),
    };
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(args.host.as_str(), args.port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| format!("--host {}: not an address this machine can bind", args.host))?;
    // Bind before the (slow) model load, so a taken port fails at once.
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener: {e}"))?;

    let (jobs, info) = worker::spawn(spec, args.queue)?;
    let state = Arc::new(AppState {
        store: Store::new(args.keep_images),
        jobs,
        info,
        limits: Limits {
            max_upload_bytes: args.max_upload_mb.saturating_mul(1 << 20),
            max_image_side: args.max_image_side,
            queue: args.queue,
            timeout_seconds: args.timeout,
            max_new_tokens: args.max_new_tokens,
            max_question_chars: 2000,
        },
        log_requests: std::io::stderr().is_terminal(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            local.ip().to_string()
        };
        let url = format!("http://{host}:{}/", local.port());
        eprintln!(
            "mimo serve: {} model on {}; open {url} (Ctrl-C stops)",
            state.info.mode, state.info.backend
        );
        // The URL alone on stdout, for scripts and tests.
        println!("{url}");
        let _ = std::io::stdout().flush();
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| format!("server: {e}"))
    })
}
