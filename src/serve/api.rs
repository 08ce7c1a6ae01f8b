//! The HTTP API (`/api/...`) and the page. Every failure is a JSON `{"error": "..."}` with a
//! 4xx (the client's fault) or 5xx status; none takes the server down.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use mimo_core::llm::GenerationConfig;
use mimo_core::prompt::VisualPrompt;
use mimo_core::sam::{LABEL_NEGATIVE, LABEL_POSITIVE, PointPrompt, Prompt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::images::{ImageLimits, Store, Upload, decode};
use super::worker::{AnswerEvent, Job, ModelInfo, Task};
use crate::overlay;

/// An error answer: a status and a message for a person.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404: no such image or sample.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 413: the upload or image is too large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
    /// 415: not a format the server reads.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }
    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {}", message.into()),
        )
    }
    /// 504: the model did not answer in time.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the model did not answer in time (--timeout); try again when the server is less \
             busy",
        )
    }
    fn busy(queue: usize) -> Self {
        ApiError {
            retry_after: Some(2),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the model is busy: {queue} request(s) are already waiting (--queue); retry \
                     later"
                ),
            )
        }
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// A bundled sample image.
pub struct Sample {
    /// Its name in `/api/samples/{name}`.
    pub name: &'static str,
    /// What it shows.
    pub title: &'static str,
    /// A question that suits it.
    pub question: &'static str,
    /// PNG bytes.
    pub bytes: &'static [u8],
}

/// The bundled samples (compiled into the binary).
pub const SAMPLES: &[Sample] = &[
    Sample {
        name: "phantom_ct",
        title: "Abdominal CT phantom (synthetic; what the demo model was trained on)",
        question: "Cut out the liver, spleen, right kidney, left kidney and aorta from the image \
                   and display it.",
        bytes: include_bytes!("../../assets/demo/samples/phantom_ct.png"),
    },
    Sample {
        name: "phantom_xray",
        title: "Chest X-ray phantom (synthetic)",
        question: "What is the structure at the marked point, and what is it responsible for?",
        bytes: include_bytes!("../../assets/demo/samples/phantom_xray.png"),
    },
    Sample {
        name: "phantom_fundus",
        title: "Fundus phantom (synthetic)",
        question: "Could you analyze the image and segment the optic disc and optic cup into \
                   separate segments?",
        bytes: include_bytes!("../../assets/demo/samples/phantom_fundus.png"),
    },
    Sample {
        name: "mni152_t1_z95",
        title: "Brain MR, MNI ICBM152 T1 template, axial slice",
        question: "Where is the brain in this image?",
        bytes: include_bytes!("../../assets/samples/mni152_t1_z95.png"),
    },
    Sample {
        name: "abdomen_mr_liver_lesion",
        title: "Abdominal MR with a liver lesion",
        question: "What is the abnormality in the liver?",
        bytes: include_bytes!("../../assets/samples/abdomen_mr_liver_lesion.png"),
    },
];

/// Server settings the handlers need.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Largest upload in bytes.
    pub max_upload_bytes: usize,
    /// Longest image side in pixels.
    pub max_image_side: usize,
    /// Most waiting requests.
    pub queue: usize,
    /// Seconds a request may take, waiting included.
    pub timeout_seconds: u64,
    /// Most tokens an answer may have (also the default).
    pub max_new_tokens: usize,
    /// Longest question in characters.
    pub max_question_chars: usize,
}

/// State shared by the handlers.
pub struct AppState {
    /// The uploads.
    pub store: Store,
    /// The model thread's queue.
    pub jobs: SyncSender<Job>,
    /// What model runs.
    pub info: ModelInfo,
    /// Limits.
    pub limits: Limits,
    /// Whether to print each request (stderr is a terminal).
    pub log_requests: bool,
}

type Shared = Arc<AppState>;

/// The page: plain HTML, CSS and JavaScript, compiled into the binary.
const PAGE: &str = include_str!("page.html");

/// The router: the page and the API.
pub fn router(state: Shared) -> Router {
    let limit = state.limits.max_upload_bytes;
    Router::new()
        .route("/", get(page))
        .route("/api/info", get(info))
        .route("/api/samples/{name}", get(sample))
        .route("/api/images", post(upload))
        .route("/api/images/{id}", get(image_info))
        .route("/api/images/{id}/slices/{k}", get(slice_png))
        .route("/api/segment", post(segment))
        .route("/api/answer", post(answer))
        .fallback(|| async { ApiError::not_found("no such page or API route (see GET /api/info)") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), log))
        .with_state(state)
}

async fn log(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    if state.log_requests {
        eprintln!(
            "{method} {path} -> {} in {:.0} ms",
            res.status().as_u16(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    res
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[derive(Serialize)]
struct SampleInfo {
    name: &'static str,
    title: &'static str,
    question: &'static str,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(flatten)]
    model: &'a ModelInfo,
    limits: &'a Limits,
    samples: Vec<SampleInfo>,
}

async fn info(State(state): State<Shared>) -> Json<serde_json::Value> {
    let info = Info {
        model: &state.info,
        limits: &state.limits,
        samples: SAMPLES
            .iter()
            .map(|s| SampleInfo {
                name: s.name,
                title: s.title,
                question: s.question,
            })
            .collect(),
    };
    Json(serde_json::to_value(&info).unwrap_or_default())
}

async fn sample(Path(name): Path<String>) -> Result<Response, ApiError> {
    let s = SAMPLES.iter().find(|s| s.name == name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no sample `{name}`; there are: {}",
            SAMPLES
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(([(header::CONTENT_TYPE, "image/png")], s.bytes).into_response())
}

#[derive(Serialize)]
struct UploadOut {
    id: String,
    kind: String,
    width: usize,
    height: usize,
    slices: usize,
}

impl From<&Upload> for UploadOut {
    fn from(u: &Upload) -> Self {
        UploadOut {
            id: u.id.clone(),
            kind: u.kind.clone(),
            width: u.width,
            height: u.height,
            slices: u.slices,
        }
    }
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "the upload is larger than {:.1} MiB (--max-upload-mb)",
            limit as f64 / (1 << 20) as f64
        ))
    } else {
        ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
    }
}

async fn upload(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UploadOut>, ApiError> {
    let bytes = body.map_err(|e| body_error(e, state.limits.max_upload_bytes))?;
    let limits = ImageLimits {
        max_side: state.limits.max_image_side,
        max_slices: 2048,
    };
    let decoded = tokio::task::spawn_blocking(move || decode(&bytes, &limits))
        .await
        .map_err(|e| ApiError::internal(format!("decoding failed: {e}")))??;
    let u = state.store.insert(decoded);
    Ok(Json(UploadOut::from(&*u)))
}

async fn image_info(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<UploadOut>, ApiError> {
    Ok(Json(UploadOut::from(&*state.store.get(&id)?)))
}

async fn slice_png(
    State(state): State<Shared>,
    Path((id, k)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let u = state.store.get(&id)?;
    let k: usize = k
        .parse()
        .map_err(|_| ApiError::bad_request(format!("slice `{k}` is not a slice number")))?;
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let img = u.slice(k)?;
        overlay::rgb_png(img.rgb(), img.width(), img.height()).map_err(ApiError::internal)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

fn json_error(e: JsonRejection) -> ApiError {
    ApiError::bad_request(format!("bad JSON request: {}", e.body_text()))
}

/// `[x, y]` or `[x, y, label]` (label 1 = foreground, 0 = background).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PointIn {
    Xy([f64; 2]),
    Xyl([f64; 3]),
}

fn point(p: &PointIn) -> Result<(f64, f64, bool), ApiError> {
    let (x, y, positive) = match *p {
        PointIn::Xy([x, y]) => (x, y, true),
        PointIn::Xyl([x, y, 1.0]) => (x, y, true),
        PointIn::Xyl([x, y, 0.0]) => (x, y, false),
        PointIn::Xyl([_, _, l]) => {
            return Err(ApiError::bad_request(format!(
                "point label {l}: 1 is foreground, 0 background"
            )));
        }
    };
    Ok((x, y, positive))
}

fn inside(x: f64, y: f64, u: &Upload, what: &str) -> Result<(), ApiError> {
    let ok = x.is_finite()
        && y.is_finite()
        && (0.0..=u.width as f64).contains(&x)
        && (0.0..=u.height as f64).contains(&y);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} ({x}, {y}) lies outside the {}x{} image",
            u.width, u.height
        )))
    }
}

fn check_box(b: &[f64; 4], u: &Upload) -> Result<(), ApiError> {
    inside(b[0], b[1], u, "box corner")?;
    inside(b[2], b[3], u, "box corner")?;
    if b[0] > b[2] || b[1] > b[3] {
        return Err(ApiError::bad_request(format!(
            "box {b:?}: give [x0, y0, x1, y1] with the top-left corner first"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentIn {
    image: String,
    #[serde(default)]
    slice: usize,
    #[serde(default)]
    points: Vec<PointIn>,
    #[serde(default, rename = "box")]
    bbox: Option<[f64; 4]>,
    #[serde(default)]
    multimask: bool,
}

fn enqueue(state: &AppState, task: Task) -> Result<(), ApiError> {
    let deadline = Instant::now() + Duration::from_secs(state.limits.timeout_seconds);
    match state.jobs.try_send(Job { deadline, task }) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(ApiError::busy(state.limits.queue)),
        Err(TrySendError::Disconnected(_)) => Err(ApiError::internal("the model thread stopped")),
    }
}

async fn segment(
    State(state): State<Shared>,
    req: Result<Json<SegmentIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = req.map_err(json_error)?;
    let u = state.store.get(&req.image)?;
    if req.points.is_empty() && req.bbox.is_none() {
        return Err(ApiError::bad_request(
            "give at least one point or a box to segment",
        ));
    }
    let mut points = Vec::new();
    for p in &req.points {
        let (x, y, positive) = point(p)?;
        inside(x, y, &u, "point")?;
        points.push(PointPrompt {
            x,
            y,
            label: if positive {
                LABEL_POSITIVE
            } else {
                LABEL_NEGATIVE
            },
        });
    }
    if let Some(b) = &req.bbox {
        check_box(b, &u)?;
    }
    let image = u.slice(req.slice)?;
    let (reply, rx) = oneshot::channel();
    enqueue(
        &state,
        Task::Segment {
            key: format!("{}/{}", u.id, req.slice),
            image,
            prompt: Prompt {
                points,
                bbox: req.bbox,
                mask_input: None,
            },
            multimask: req.multimask,
            reply,
        },
    )?;
    let timeout = Duration::from_secs(state.limits.timeout_seconds);
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(out))) => Ok(Json(out).into_response()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ApiError::internal("the model thread dropped the request")),
        Err(_) => Err(ApiError::timeout()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerIn {
    image: String,
    #[serde(default)]
    slice: usize,
    question: String,
    #[serde(default)]
    points: Vec<PointIn>,
    #[serde(default)]
    boxes: Vec<[f64; 4]>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    seed: u64,
}

async fn answer(
    State(state): State<Shared>,
    headers: HeaderMap,
    req: Result<Json<AnswerIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    if state.info.mode != "mimo" {
        return Err(ApiError::bad_request(
            "this server runs SAM alone (--sam): questions need a MIMO model (--config); use \
             /api/segment",
        ));
    }
    let Json(req) = req.map_err(json_error)?;
    let u = state.store.get(&req.image)?;
    let question = req.question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::bad_request("the question is empty"));
    }
    let limits = &state.limits;
    if question.chars().count() > limits.max_question_chars {
        return Err(ApiError::bad_request(format!(
            "the question has {} characters: at most {} are accepted",
            question.chars().count(),
            limits.max_question_chars
        )));
    }
    let max_new_tokens = req.max_new_tokens.unwrap_or(limits.max_new_tokens);
    if max_new_tokens == 0 || max_new_tokens > limits.max_new_tokens {
        return Err(ApiError::bad_request(format!(
            "max_new_tokens {max_new_tokens}: give 1..={} (--max-new-tokens)",
            limits.max_new_tokens
        )));
    }
    if let Some(t) = req.temperature
        && !(t.is_finite() && t > 0.0 && t <= 10.0)
    {
        return Err(ApiError::bad_request(format!(
            "temperature {t}: give a number in (0, 10], or leave it out for greedy decoding"
        )));
    }
    let mut prompts = Vec::new();
    for p in &req.points {
        let (x, y, positive) = point(p)?;
        inside(x, y, &u, "point")?;
        prompts.push(VisualPrompt::Point { x, y, positive });
    }
    for b in &req.boxes {
        check_box(b, &u)?;
        prompts.push(VisualPrompt::Box {
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        });
    }
    let image = u.slice(req.slice)?;
    let generation = GenerationConfig {
        max_new_tokens,
        do_sample: req.temperature.is_some(),
        temperature: req.temperature.unwrap_or(1.0),
        seed: req.seed,
        ..Default::default()
    };
    let (events, mut rx) = mpsc::unbounded_channel();
    enqueue(
        &state,
        Task::Answer {
            image,
            question,
            prompts,
            generation,
            events,
        },
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(state.limits.timeout_seconds);
    let stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !stream {
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(AnswerEvent::Text(_))) => {}
                Ok(Some(AnswerEvent::Done(a))) => return Ok(Json(*a).into_response()),
                Ok(Some(AnswerEvent::Failed(e))) => return Err(e),
                Ok(None) => return Err(ApiError::internal("the model thread dropped the request")),
                Err(_) => return Err(ApiError::timeout()),
            }
        }
    }
    // Server-sent events: `text` (a piece of the answer), then `answer` (the whole answer, as
    // the JSON reply) or `error` ({"error", "status"}).
    let stream = futures_util::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(AnswerEvent::Text(t))) => {
                return Some((Event::default().event("text").json_data(t), Some(rx)));
            }
            Ok(Some(AnswerEvent::Done(a))) => Event::default().event("answer").json_data(&*a),
            Ok(Some(AnswerEvent::Failed(e))) => error_event(&e),
            Ok(None) => error_event(&ApiError::internal("the model thread dropped the request")),
            Err(_) => error_event(&ApiError::timeout()),
        };
        Some((event, None))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn error_event(e: &ApiError) -> Result<Event, axum::Error> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        status: u16,
    }
    Event::default().event("error").json_data(Body {
        error: e.message(),
        status: e.status().as_u16(),
    })
}
