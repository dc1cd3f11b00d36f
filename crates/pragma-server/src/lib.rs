//! pragma-server: the web UI over a transcript database, and a JSON API behind each page.
//!
//! A front end (model -> store -> methods -> eval -> transcripts -> **front ends**): it
//! parses requests, calls `pragma_transcripts`, and renders. Server-rendered HTML (maud,
//! escaped by construction: transcript text is untrusted), one small script and one
//! stylesheet built into the binary, no CDN; a Content-Security-Policy that allows scripts
//! from this server only. Binds 127.0.0.1 unless told otherwise; any other address needs
//! an API key (`x-api-key` header, or the cookie `/login?key=...` sets).
//!
//! Pages: `/` collections; `/c/{name}` runs and full-text search; `/t/{id}` a transcript
//! with a per-token overlay of any scorer (probe, vector, SAE latent; hover shows the
//! value); `/diff?a=&b=` what distinguishes two collections; `/c/{name}/outliers` and
//! `/c/{name}/clusters`; `/steer` the steering playground (a prompt answered without and
//! with a vector, side by side); `/feature/{scorer}/{latent}` an SAE latent across every scored
//! transcript (strongest activations in context, a histogram); `/project` the research
//! project's check-ins (verdicts, a plot of each technique's score across check-ins, the
//! latest evidence, the latest runs). JSON: `/api/collections`, `/api/c/{name}/search?q=`,
//! `/api/c/{name}/outliers?scorer=`, `/api/c/{name}/clusters?k=&sae=`, `/api/t/{id}`,
//! `/api/diff?a=&b=`, `/api/project`, the same shapes as the CLI's `--json`.
//!
//! With a model, the same server answers OpenAI's API under `/v1` ([`openai`]):
//! chat and text completions with per-request steering, for eval harnesses and the
//! official clients.

pub mod openai;
mod pages;
mod project_page;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pragma_model::Tokenizer;
use pragma_transcripts::db::Db;

/// How to serve.
pub struct ServeConfig {
    pub db: PathBuf,
    pub addr: SocketAddr,
    /// Required when `addr` is not a loopback address.
    pub api_key: Option<String>,
    /// The OpenAI-compatible API (`/v1`), when a model is loaded.
    pub openai: Option<openai::OpenAi>,
    /// A research project file (`pragma.toml`): its check-ins at `/project`.
    pub project: Option<PathBuf>,
}

/// Errors of the server: bad configuration, or I/O at startup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Transcripts(#[from] pragma_transcripts::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) struct AppState {
    pub db: Mutex<Db>,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub api_key: Option<String>,
    pub playground: Option<Playground>,
    pub project: Option<PathBuf>,
}

/// What the pages that run the model need: the model, named steering vectors (the
/// steering playground, `/steer`) and SAEs by scorer name (`sae:NAME`: the logit table of
/// a latent's page).
pub struct Playground {
    pub model: Arc<pragma_model::Model>,
    pub vectors: Vec<(String, pragma_methods::steering::SteeringVector)>,
    pub saes: Vec<(String, pragma_methods::sae::Sae)>,
}

pub(crate) type Shared = Arc<AppState>;

/// Everything the server can serve besides the transcript database, each optional:
/// `App::default()` is the transcripts UI alone.
#[derive(Default)]
pub struct App {
    /// Renders scored tokens as text (without it, token ids).
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// Required of every request when set (see [`ServeConfig::api_key`]).
    pub api_key: Option<String>,
    /// The steering playground (`/steer`).
    pub playground: Option<Playground>,
    /// The OpenAI-compatible API under `/v1`.
    pub openai: Option<openai::OpenAi>,
    /// A research project file (`pragma.toml`) whose check-ins `/project` shows.
    pub project: Option<PathBuf>,
}

/// The router over the transcript database `db` and what `app` adds; for `serve` and
/// for tests (which bind it themselves).
pub fn router(db: Db, app: App) -> Router {
    let App {
        tokenizer,
        api_key,
        playground,
        openai,
        project,
    } = app;
    let state: Shared = Arc::new(AppState {
        db: Mutex::new(db),
        tokenizer,
        api_key,
        playground,
        project,
    });
    let v1 = match openai {
        Some(api) => openai::routes(api),
        None => Router::new(),
    };
    Router::new()
        .route("/", get(pages::index))
        .route("/c/{name}", get(pages::collection))
        .route("/c/{name}/outliers", get(pages::outliers_page))
        .route("/c/{name}/clusters", get(pages::clusters_page))
        .route("/t/{id}", get(pages::transcript))
        .route("/feature/{scorer}/{latent}", get(pages::feature))
        .route("/api/feature/{scorer}/{latent}", get(pages::api_feature))
        .route("/diff", get(pages::diff_page))
        .route("/login", get(pages::login))
        .route("/steer", get(pages::steer_page))
        .route("/api/steer", get(pages::api_steer))
        .route("/project", get(project_page::project_page))
        .route("/api/project", get(project_page::api_project))
        .route("/api/collections", get(pages::api_collections))
        .route("/api/c/{name}/search", get(pages::api_search))
        .route("/api/c/{name}/outliers", get(pages::api_outliers))
        .route("/api/c/{name}/clusters", get(pages::api_clusters))
        .route("/api/t/{id}", get(pages::api_transcript))
        .route("/api/diff", get(pages::api_diff))
        .route(
            "/static/app.css",
            get(|| async { asset("text/css", include_str!("../static/app.css")) }),
        )
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript", include_str!("../static/app.js")) }),
        )
        .fallback(|req: Request| async move {
            if req.uri().path().starts_with("/v1/") {
                openai::not_found()
            } else {
                (StatusCode::NOT_FOUND, "not found").into_response()
            }
        })
        .with_state(state.clone())
        .merge(v1)
        .layer(middleware::from_fn_with_state(state, guard))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Security headers on every response; the API key, when one is set.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let path = req.uri().path().to_string();
        // x-api-key, OpenAI's `Authorization: Bearer KEY`, or the login cookie.
        let given = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                req.headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            })
            .or_else(|| {
                req.headers()
                    .get(header::COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|c| {
                        c.split(';')
                            .filter_map(|kv| kv.trim().split_once('='))
                            .find(|(k, _)| *k == "pragma_key")
                            .map(|(_, v)| v.to_string())
                    })
            });
        let ok = given
            .as_deref()
            .is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes()));
        if path != "/login" && !ok {
            return (
                StatusCode::UNAUTHORIZED,
                "an API key is needed: send x-api-key, or open /login?key=KEY",
            )
                .into_response();
        }
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Byte equality whose time does not depend on where the inputs differ (only on their
/// lengths), so a key cannot be guessed byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serve until Ctrl-C. Errors: a non-loopback address without an API key; the database
/// cannot be opened; the address is taken.
pub fn serve(
    cfg: ServeConfig,
    tokenizer: Option<Arc<Tokenizer>>,
    playground: Option<Playground>,
    ready: &mut dyn FnMut(SocketAddr),
) -> Result<(), Error> {
    if !cfg.addr.ip().is_loopback() && cfg.api_key.is_none() {
        return Err(Error::Input(format!(
            "--bind {}: not a loopback address; anyone who can reach it could read every \
             transcript: pass --api-key KEY (clients send x-api-key; browsers open /login?key=KEY)",
            cfg.addr
        )));
    }
    let db = Db::open(&cfg.db)?;
    let app = router(
        db,
        App {
            tokenizer,
            api_key: cfg.api_key.clone(),
            playground,
            openai: cfg.openai,
            project: cfg.project,
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|e| Error::Input(format!("--bind {}: {e}", cfg.addr)))?;
        ready(listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // Ctrl-C or SIGTERM: stop accepting, let requests in flight finish.
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    match signal(SignalKind::terminate()) {
                        Ok(mut term) => {
                            tokio::select! {
                                _ = tokio::signal::ctrl_c() => {}
                                _ = term.recv() => {}
                            }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                }
                #[cfg(not(unix))]
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
