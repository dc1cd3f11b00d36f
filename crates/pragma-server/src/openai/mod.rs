//! An OpenAI-compatible API over a loaded model, with per-request steering:
//! `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (OpenAI's
//! request and response shapes, streaming as server-sent events ending in `[DONE]`),
//! the registry of named vectors, `GET /v1/pragma/vectors` and
//! `DELETE /v1/pragma/vectors/{name}`, and the model thread's counters,
//! `GET /v1/pragma/stats`.
//!
//! One extra field in a request body, `"pragma": {"steer": [{"vector": NAME, "scale": S,
//! "layers": [...], "positions": "from:1", "op": "add"}], "monitor": [PROBE, ...]}`,
//! applies registered vectors to that request only and scores each generated token with
//! registered probes; the response's `pragma` field echoes it, with `monitor_scores`
//! (the last streamed chunk carries it when streaming). `GET /v1/pragma/probes` lists
//! the probes. With the official `openai` client it goes
//! in `extra_body`. Requests are decoded on the model's thread ([`engine`]), batched with
//! others that asked for the same interventions; each batch carries its own hooks, so
//! steering cannot leak between requests.
//!
//! Errors are OpenAI's error object with 400 (bad request, checked before any compute),
//! 404 (unknown route or vector) or 500.

mod engine;
mod plan;
mod registry;
pub mod types;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use pragma_methods::sae::Sae;
use pragma_methods::steering::SteeringVector;
pub use pragma_model::input::Prompt;
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use serde_json::{json, Value};

use engine::{Engine, Event, Job};
use plan::{plan, Plan};
use registry::*;
use types::*;

/// The API's state: the model, its thread, and the named vectors.
#[derive(Clone)]
pub struct OpenAi {
    model: Arc<Model>,
    /// The id `/v1/models` lists and responses carry.
    model_id: String,
    engine: Engine,
    vectors: Arc<RwLock<BTreeMap<String, SteeringVector>>>,
    /// Probes a request may ask to monitor its tokens with, by name.
    probes: Arc<BTreeMap<String, Arc<pragma_methods::probe::Probe>>>,
    /// SAEs a request may read latents from (`pragma.sae_latents`) or steer along
    /// (`"vector": "sae:NAME:LATENT"`), by name.
    saes: Arc<BTreeMap<String, Arc<Sae>>>,
    /// Bumped on every registry change, part of a batch key: a name that meant another
    /// vector when a request was planned never shares a batch with it.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Largest `max_tokens` a request may ask for.
    max_tokens_limit: usize,
}

impl OpenAi {
    /// Start the model thread, which decodes up to `max_batch` requests with the same
    /// interventions together. `vectors` are the registered steering vectors by name.
    pub fn new(
        model: Arc<Model>,
        model_id: String,
        vectors: Vec<(String, SteeringVector)>,
        max_tokens_limit: usize,
        max_batch: usize,
    ) -> Self {
        Self::with_probes(
            model,
            model_id,
            vectors,
            Vec::new(),
            max_tokens_limit,
            max_batch,
        )
    }

    /// As [`Self::new`], with probes for the body's `pragma.monitor`.
    pub fn with_probes(
        model: Arc<Model>,
        model_id: String,
        vectors: Vec<(String, SteeringVector)>,
        probes: Vec<(String, pragma_methods::probe::Probe)>,
        max_tokens_limit: usize,
        max_batch: usize,
    ) -> Self {
        OpenAi {
            probes: Arc::new(probes.into_iter().map(|(n, p)| (n, Arc::new(p))).collect()),
            saes: Arc::new(BTreeMap::new()),
            engine: Engine::start(model.clone(), max_batch),
            model,
            model_id,
            vectors: Arc::new(RwLock::new(vectors.into_iter().collect())),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            max_tokens_limit,
        }
    }
}

impl OpenAi {
    /// Register SAEs by name (`--sae NAME=DIR`).
    pub fn with_saes(mut self, saes: Vec<(String, Sae)>) -> Self {
        self.saes = Arc::new(saes.into_iter().map(|(n, s)| (n, Arc::new(s))).collect());
        self
    }
}

/// The `/v1` routes.
pub fn routes(api: OpenAi) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/pragma/vectors", get(list_vectors).post(add_vector))
        .route("/v1/pragma/saes", get(list_saes))
        .route("/v1/pragma/vectors/{name}", delete(delete_vector))
        .route("/v1/pragma/stats", get(stats))
        .route("/v1/pragma/probes", get(list_probes))
        .with_state(api)
}

/// An error as OpenAI sends it.
pub struct ApiError(
    pub(super) StatusCode,
    pub(super) String,
    pub(super) Option<&'static str>,
);

impl ApiError {
    pub(super) fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into(), None)
    }
    pub(super) fn param(msg: impl Into<String>, param: &'static str) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into(), Some(param))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.0 {
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.1,
                kind,
                param: self.2.map(str::to_string),
                code: None,
            },
        };
        (self.0, Json(body)).into_response()
    }
}

/// OpenAI's error object for a route that does not exist under `/v1`.
pub fn not_found() -> Response {
    ApiError(StatusCode::NOT_FOUND, "no such route".into(), None).into_response()
}

/// A seed for a request that gave none: the clock and a counter, mixed.
pub(super) fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = t ^ N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}{:04x}",
        now(),
        N.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

async fn models(State(api): State<OpenAi>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": api.model_id, "object": "model", "created": 0, "owned_by": "pragma"}],
    }))
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

/// Queue a plan; the receiver of its events.
fn submit(
    api: &OpenAi,
    p: &Plan,
    logprobs: Option<usize>,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        prompt: p.prompt.clone(),
        opts: p.opts.clone(),
        hooks: p.hooks.clone(),
        // Equal steering specs build equal hooks (the registry is read when planning,
        // and a vector deleted meanwhile only refuses later requests).
        key: format!(
            "{}@{}",
            serde_json::to_string(&p.echo).unwrap_or_default(),
            p.generation
        ),
        stop: p.stop.clone(),
        logprobs,
        reads: p.reads.clone(),
        events: tx,
    };
    if !api.engine.submit(job) {
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model thread stopped".into(),
            None,
        ));
    }
    Ok(rx)
}

/// Wait for a whole answer.
/// A whole answer: text, log-probabilities, finish reason, tokens, readouts.
type Answer = (String, Vec<TokenLogprob>, &'static str, usize, Readouts);

async fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Result<Answer, ApiError> {
    let (mut text, mut lps) = (String::new(), Vec::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text: t, logprobs } => {
                text.push_str(&t);
                lps.extend(logprobs);
            }
            Event::Done {
                finish_reason,
                completion_tokens,
                readouts,
            } => return Ok((text, lps, finish_reason, completion_tokens, readouts)),
            Event::Error(e) => {
                return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e, None));
            }
        }
    }
    Err(ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the model thread ended the request without an answer".into(),
        None,
    ))
}

/// The response's `pragma` field: what was applied, and what was read (the monitors'
/// scores, captures, SAE latents).
fn pragma_echo(echo: &PragmaExt, readouts: &Readouts) -> Value {
    let mut v = serde_json::to_value(echo).unwrap_or(Value::Null);
    if let (Some(obj), Ok(Value::Object(r))) = (v.as_object_mut(), serde_json::to_value(readouts)) {
        obj.extend(r);
    }
    v
}

/// The chunks that end a stream: the last choice chunk, carrying the `pragma` echo and
/// the monitors' scores, and with `stream_options.include_usage` a chunk like it with no
/// choices and the usage.
fn closing(
    mut last: Value,
    echo: &PragmaExt,
    readouts: &Readouts,
    usage: Option<Usage>,
) -> Vec<Value> {
    let usage_chunk = usage.map(|u| {
        let mut c = last.clone();
        c["choices"] = json!([]);
        c["usage"] = json!(u);
        c
    });
    last["pragma"] = pragma_echo(echo, readouts);
    std::iter::once(last).chain(usage_chunk).collect()
}

/// An error after the stream began (its status line is already sent).
fn stream_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error"}})
}

fn usage(prompt: usize, completion: usize) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
}

/// POST bodies must say they are JSON: a web page cannot then start generation with a
/// "simple" cross-site `text/plain` request, which browsers send without asking.
pub(super) fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type '{ct}': expected application/json"),
            None,
        ));
    }
    Ok(())
}

async fn chat(
    State(api): State<OpenAi>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req: ChatRequest = parse(&body)?;
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::param(
            "tools: pragma serves no tool calls yet; send the request without tools",
            "tools",
        ));
    }
    if req.messages.is_empty() {
        return Err(ApiError::param(
            "messages: expected at least one",
            "messages",
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(ApiError::param(
                format!(
                    "messages: role '{}': expected system, developer, user or assistant",
                    m.role
                ),
                "messages",
            ));
        }
        let content = match &m.content {
            Some(c) => c.text().map_err(|e| ApiError::param(e, "messages"))?,
            None => String::new(),
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            &m.role
        };
        messages.push(ChatMessage::new(role, &content));
    }
    let top = if req.logprobs.unwrap_or(false) {
        let k = req.top_logprobs.unwrap_or(0);
        if k > 20 {
            return Err(ApiError::param(
                "top_logprobs: expected 0 to 20",
                "top_logprobs",
            ));
        }
        Some(k)
    } else {
        None
    };
    let p = plan(
        &api,
        Ok(Prompt::chat(&messages)),
        req.max_completion_tokens.or(req.max_tokens),
        api.max_tokens_limit.min(512),
        req.temperature,
        req.top_p,
        req.seed,
        req.stop.as_ref(),
        req.n,
        req.pragma.as_ref(),
    )?;
    let rx = submit(&api, &p, top)?;
    let (id, created, n_prompt) = (request_id("chatcmpl"), now(), p.prompt.len());
    let echo = p.echo.clone();
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream(rx, move |ev, first| {
            let chunk = |delta: Value, finish: Value, lp: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created,
                       "model": api.model_id, "choices": [{"index": 0, "delta": delta,
                       "logprobs": lp, "finish_reason": finish}]})
            };
            match ev {
                Event::Delta { text, logprobs } => {
                    let mut delta = json!({"content": text});
                    if first {
                        delta["role"] = json!("assistant");
                    }
                    let lp = if top.is_some() {
                        json!({"content": logprobs})
                    } else {
                        Value::Null
                    };
                    vec![chunk(delta, Value::Null, lp)]
                }
                Event::Done {
                    finish_reason,
                    completion_tokens,
                    readouts,
                } => {
                    let last = chunk(json!({}), json!(finish_reason), Value::Null);
                    let usage = include_usage.then(|| usage(n_prompt, completion_tokens));
                    closing(last, &echo, &readouts, usage)
                }
                Event::Error(e) => vec![stream_error(&e)],
            }
        }));
    }
    let (text, lps, finish, n_completion, readouts) = collect(rx).await?;
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": api.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": top.map(|_| json!({"content": lps})), "finish_reason": finish}],
        "usage": usage(n_prompt, n_completion),
        "pragma": pragma_echo(&p.echo, &readouts),
    }))
    .into_response())
}

async fn completions(
    State(api): State<OpenAi>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req: CompletionRequest = parse(&body)?;
    if req.prompt.count() != 1 {
        return Err(ApiError::param(
            format!(
                "prompt: an array of {} prompts; pragma answers one prompt per request (send them \
                 as separate requests: they are batched together)",
                req.prompt.count()
            ),
            "prompt",
        ));
    }
    if req.logprobs.is_some_and(|k| k > 5) {
        return Err(ApiError::param("logprobs: expected 0 to 5", "logprobs"));
    }
    let p = plan(
        &api,
        req.prompt.one(),
        req.max_tokens,
        16, // OpenAI's default for completions
        req.temperature,
        req.top_p,
        req.seed,
        req.stop.as_ref(),
        req.n,
        req.pragma.as_ref(),
    )?;
    let rx = submit(&api, &p, req.logprobs)?;
    let (id, created, n_prompt) = (request_id("cmpl"), now(), p.prompt.len());
    let echo = p.echo.clone();
    let want_lp = req.logprobs.is_some();
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream(rx, move |ev, _| {
            let chunk = |text: String, finish: Value, lp: Value| {
                json!({"id": id, "object": "text_completion", "created": created,
                       "model": api.model_id, "choices": [{"index": 0, "text": text,
                       "logprobs": lp, "finish_reason": finish}]})
            };
            match ev {
                Event::Delta { text, logprobs } => {
                    let lp = if want_lp {
                        completion_logprobs(&logprobs)
                    } else {
                        Value::Null
                    };
                    vec![chunk(text, Value::Null, lp)]
                }
                Event::Done {
                    finish_reason,
                    completion_tokens,
                    readouts,
                } => {
                    let last = chunk(String::new(), json!(finish_reason), Value::Null);
                    let usage = include_usage.then(|| usage(n_prompt, completion_tokens));
                    closing(last, &echo, &readouts, usage)
                }
                Event::Error(e) => vec![stream_error(&e)],
            }
        }));
    }
    let (text, lps, finish, n_completion, readouts) = collect(rx).await?;
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": api.model_id,
        "choices": [{"index": 0, "text": text,
                     "logprobs": if want_lp { completion_logprobs(&lps) } else { Value::Null },
                     "finish_reason": finish}],
        "usage": usage(n_prompt, n_completion),
        "pragma": pragma_echo(&p.echo, &readouts),
    }))
    .into_response())
}

/// The legacy Completions `logprobs` shape: parallel arrays and a token -> logprob map.
fn completion_logprobs(lps: &[TokenLogprob]) -> Value {
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(lps.len());
    for l in lps {
        offsets.push(offset);
        offset += l.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| {
            l.top_logprobs.as_ref().map(|t| t.iter().map(|x| (x.token.clone(), json!(x.logprob)))
                .collect::<serde_json::Map<_, _>>())
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Server-sent events: one `data:` line per chunk `render` makes of each event, then
/// `data: [DONE]`. Dropping the response (a client that left) drops the receiver, and
/// the model thread stops at its next token.
fn stream(
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    render: impl FnMut(Event, bool) -> Vec<Value> + Send + 'static,
) -> Response {
    let s = futures_util::stream::unfold(
        (rx, render, true, false),
        |(mut rx, mut render, first, done)| async move {
            if done {
                return None;
            }
            match rx.recv().await {
                Some(ev) => {
                    let last = matches!(ev, Event::Done { .. } | Event::Error(_));
                    let chunks = render(ev, first);
                    let mut events: Vec<Result<SseEvent, Infallible>> = chunks
                        .into_iter()
                        .map(|c| Ok(SseEvent::default().data(c.to_string())))
                        .collect();
                    if last {
                        events.push(Ok(SseEvent::default().data("[DONE]")));
                    }
                    Some((
                        futures_util::stream::iter(events),
                        (rx, render, false, last),
                    ))
                }
                None => None,
            }
        },
    );
    use futures_util::StreamExt;
    // Comments every 15 s keep a request queued behind a long batch from timing out.
    Sse::new(s.flatten())
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}
