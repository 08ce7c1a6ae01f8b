//! A small client for OpenAI-compatible chat-completions endpoints (OpenAI, Azure-style
//! proxies, vLLM, llama.cpp's server, Ollama's `/v1`), used to generate Perspective III/IV
//! questions and answers.
//!
//! - Every answered request is kept in an on-disk cache keyed by the SHA-256 of the request
//!   body (model, messages, sampling settings, seed), so an interrupted run resumes without
//!   asking again and a rerun is reproducible.
//! - Transport errors, 408, 409, 429 and 5xx are retried with exponential back-off (a
//!   `Retry-After` header in seconds is honoured, capped at the maximum back-off). Other
//!   statuses (bad key, unknown model, bad request) are fatal: retrying cannot help.
//! - The key is read from an environment variable and never written anywhere.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use mimo_core::fsutil::write_atomic;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Connection and retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSettings {
    /// Base URL up to the API version, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:8000/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Model name sent in each request.
    pub model: String,
    /// Bearer key (`None`: no `Authorization` header, for local servers).
    pub api_key: Option<String>,
    /// Sampling temperature.
    pub temperature: f64,
    /// `max_tokens` of each completion.
    pub max_tokens: usize,
    /// Ask for `response_format: {"type": "json_object"}` (not every server supports it).
    pub json_mode: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first try.
    pub max_retries: usize,
    /// First back-off; doubles each retry.
    pub initial_backoff: Duration,
    /// Largest back-off (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Cache folder.
    pub cache: PathBuf,
}

/// Why a request gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// Retrying cannot help (authentication, unknown model, malformed request): stop the run.
    #[error("the endpoint {url} refused the request with HTTP {status}: {body}")]
    Fatal {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the response body (the server's explanation).
        body: String,
    },
    /// Still failing after every retry.
    #[error("no answer from {url} after {tries} tries; last error: {last}")]
    Exhausted {
        /// The URL.
        url: String,
        /// Tries made.
        tries: usize,
        /// The last error.
        last: String,
    },
    /// A 200 response without `choices[0].message.content`.
    #[error("the endpoint's response has no choices[0].message.content: {0}")]
    NoContent(String),
    /// The cache could not be written.
    #[error("cache {path}: {message}")]
    Cache {
        /// The file.
        path: String,
        /// The reason.
        message: String,
    },
}

/// Counters shared by all threads of a run.
#[derive(Debug, Default)]
pub struct ChatStats {
    /// HTTP requests sent (including retried ones).
    pub requests: AtomicUsize,
    /// Retries (requests after a retryable failure).
    pub retries: AtomicUsize,
    /// Answers taken from the cache.
    pub cached: AtomicUsize,
}

/// A cache entry on disk.
#[derive(Serialize, Deserialize)]
struct CacheEntry {
    request: Value,
    content: String,
}

/// The client (cheap to share between threads).
pub struct ChatClient {
    settings: ChatSettings,
    agent: ureq::Agent,
    /// Counters.
    pub stats: ChatStats,
}

fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

impl ChatClient {
    /// A client with `settings`.
    pub fn new(settings: ChatSettings) -> Self {
        let agent = ureq::AgentBuilder::new().timeout(settings.timeout).build();
        Self {
            settings,
            agent,
            stats: ChatStats::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ChatSettings {
        &self.settings
    }

    /// The request body for `messages` with `seed` (sent as OpenAI's `seed`; it also keeps
    /// the cache entries of different attempts apart).
    pub fn request_body(&self, messages: &[Message], seed: u64) -> Value {
        let s = &self.settings;
        let mut body = json!({
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            // Many servers read the seed as a signed 64-bit integer.
            "seed": seed >> 1,
        });
        if s.json_mode {
            body["response_format"] = json!({"type": "json_object"});
        }
        body
    }

    /// The cache file of a request body.
    pub fn cache_path(&self, body: &Value) -> PathBuf {
        let digest = Sha256::digest(body.to_string().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.settings
            .cache
            .join(&hex[..2])
            .join(format!("{hex}.json"))
    }

    /// The completion text for `messages`: from the cache when present, else from the
    /// endpoint (then cached).
    pub fn complete(&self, messages: &[Message], seed: u64) -> Result<String, ChatError> {
        let body = self.request_body(messages, seed);
        let path = self.cache_path(&body);
        if let Some(content) = read_cache(&path, &body) {
            self.stats.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(content);
        }
        let content = self.send(&body)?;
        let entry = CacheEntry {
            request: body,
            content: content.clone(),
        };
        let text = serde_json::to_string(&entry).map_err(|e| ChatError::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes()).map_err(|e| ChatError::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(content)
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.settings.base_url.trim_end_matches('/')
        )
    }

    fn send(&self, body: &Value) -> Result<String, ChatError> {
        let s = &self.settings;
        let url = self.url();
        let mut backoff = s.initial_backoff;
        let mut last = String::new();
        for attempt in 0..=s.max_retries {
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = self.agent.post(&url);
            if let Some(k) = &s.api_key {
                req = req.set("Authorization", &format!("Bearer {k}"));
            }
            let mut wait = backoff;
            match req.send_json(body) {
                Ok(resp) => {
                    let text = resp
                        .into_string()
                        .map_err(|e| ChatError::NoContent(e.to_string()));
                    match text {
                        Ok(text) => return content_of(&text),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let retry_after = resp
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|v| v.is_finite() && *v >= 0.0);
                    let text = clip(&resp.into_string().unwrap_or_default(), 300);
                    if !(code == 408 || code == 409 || code == 429 || code >= 500) {
                        return Err(ChatError::Fatal {
                            url,
                            status: code,
                            body: text,
                        });
                    }
                    if let Some(ra) = retry_after {
                        wait = Duration::from_secs_f64(ra).min(s.max_backoff);
                    }
                    last = format!("HTTP {code}: {text}");
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < s.max_retries {
                std::thread::sleep(wait);
                backoff = (backoff * 2).min(s.max_backoff);
            }
        }
        Err(ChatError::Exhausted {
            url,
            tries: s.max_retries + 1,
            last,
        })
    }
}

fn read_cache(path: &Path, body: &Value) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    // A hash collision or a hand-edited file: ask again.
    (entry.request == *body).then_some(entry.content)
}

/// `choices[0].message.content` of a chat-completions response.
fn content_of(text: &str) -> Result<String, ChatError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ChatError::NoContent(format!("{e}: {}", clip(text, 200))))?;
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ChatError::NoContent(clip(text, 200)))
}
