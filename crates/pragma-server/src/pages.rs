//! Handlers: HTML pages and their JSON twins. Every value from the database is untrusted
//! and goes through maud's escaping; bad query parameters are 400s (axum's extractors),
//! unknown names 404s with the reason.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use maud::{html, Markup, DOCTYPE};
use pragma_transcripts::db::{Db, Filter};
use pragma_transcripts::diff::{decode_context, diff, DiffConfig, DiffResult};
use serde::Deserialize;

use crate::Shared;

/// An error page or JSON error with its status.
pub(crate) struct Fail(pub StatusCode, pub String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, page("error", html! { p { (self.1) } })).into_response()
    }
}

fn not_found(e: impl std::fmt::Display) -> Fail {
    Fail(StatusCode::NOT_FOUND, e.to_string())
}

fn bad(e: impl std::fmt::Display) -> Fail {
    Fail(StatusCode::BAD_REQUEST, e.to_string())
}

/// Errors from the library: unknown names are 404, other input errors 400.
fn lib(e: pragma_transcripts::Error) -> Fail {
    let m = e.to_string();
    if m.starts_with("no ") {
        not_found(m)
    } else {
        bad(m)
    }
}

fn with_db<T>(s: &Shared, f: impl FnOnce(&Db) -> Result<T, Fail>) -> Result<T, Fail> {
    // A handler that panicked while holding the lock left nothing half-written (the
    // pages only read, and SQLite keeps its own transactions): keep serving.
    let db = s.db.lock().unwrap_or_else(|e| e.into_inner());
    f(&db)
}

pub(crate) fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "pragma: " (title) }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header { a href="/" { "pragma" } a href="/diff" { "diff" } a href="/steer" { "steer" } a href="/project" { "project" } }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub(crate) async fn index(State(s): State<Shared>) -> Result<Markup, Fail> {
    let cs = with_db(&s, |db| db.collections().map_err(lib))?;
    Ok(page(
        "collections",
        html! {
            @if cs.is_empty() {
                p { "No collections yet: " code { "pragma transcripts import FILE --collection NAME" } }
            }
            table id="collections" {
                tr { th { "collection" } th { "runs" } th { "transcripts" } th { "messages" } th { "imported" } }
                @for c in &cs {
                    tr {
                        td { a href={ "/c/" (c.name) } { (c.name) } }
                        td { (c.runs) } td { (c.transcripts) } td { (c.messages) }
                        td class="muted" { @for (f, fmt, n) in &c.imports { (f) " (" (fmt) ", " (n) ")" br; } }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_collections(State(s): State<Shared>) -> Result<Response, Fail> {
    let cs = with_db(&s, |db| db.collections().map_err(lib))?;
    Ok(Json(cs).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    q: Option<String>,
    /// A run filter, as the CLI's `--where`.
    #[serde(rename = "where")]
    filter: Option<String>,
    role: Option<String>,
    #[serde(default)]
    page: usize,
}

const PAGE: usize = 50;

pub(crate) async fn collection(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, Fail> {
    let query = q.q.clone().unwrap_or_default();
    let filters: Vec<Filter> = match q.filter.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => vec![Filter::parse(f).map_err(lib)?],
        None => Vec::new(),
    };
    let role = match q.role.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => Some(pragma_transcripts::model::Role::parse(r).ok_or_else(|| {
            bad(format!(
                "role '{r}': expected system, user, assistant or tool"
            ))
        })?),
        None => None,
    };
    let (hits, list) = with_db(&s, |db| {
        if query.trim().is_empty() {
            Ok((
                None,
                db.transcript_list(&name, q.page * PAGE, PAGE)
                    .map_err(lib)?,
            ))
        } else {
            let hits = db.search(&name, &query, &filters, role, 100).map_err(lib)?;
            let with_t = hits
                .into_iter()
                .map(|h| Ok((db.transcript_of_message(h.message_id).map_err(lib)?, h)))
                .collect::<Result<Vec<_>, Fail>>()?;
            Ok((Some(with_t), Vec::new()))
        }
    })?;
    Ok(page(
        &name,
        html! {
            p { a href={ "/c/" (name) "/outliers" } { "outliers" } " · " a href={ "/c/" (name) "/clusters" } { "clusters" } }
            form method="get" id="search" {
                input type="text" name="q" value=(query) placeholder="search messages (FTS5)";
                " " input type="text" name="where" value=(q.filter.clone().unwrap_or_default()) placeholder="filter: model=x, score.reward>0.5";
                " " select name="role" {
                    option value="" { "any role" }
                    @for r in ["system", "user", "assistant", "tool"] {
                        option value=(r) selected[q.role.as_deref() == Some(r)] { (r) }
                    }
                }
                " " button type="submit" { "search" }
            }
            @if let Some(hits) = &hits {
                p class="muted" { (hits.len()) " hits" }
                table id="hits" {
                    tr { th { "run" } th { "message" } th { "role" } th { "match" } }
                    @for (tid, h) in hits {
                        tr {
                            td { a href={ "/t/" (tid) "#m" (h.message) } { (h.run) } }
                            td { "T" (h.transcript) "B" (h.message) }
                            td { (h.role) }
                            td class="snip" { (h.snippet) }
                        }
                    }
                }
            } @else {
                table id="transcripts" {
                    tr { th { "run" } th { "sample" } th { "messages" } th { "first user message" } }
                    @for t in &list {
                        tr {
                            td { a href={ "/t/" (t.id) } { (t.run) } }
                            td { (t.sample_id.clone().unwrap_or_default()) }
                            td { (t.messages) }
                            td class="snip" { (t.first_user) }
                        }
                    }
                }
                p {
                    @if q.page > 0 { a href={ "?page=" (q.page - 1) } { "previous" } " " }
                    @if list.len() == PAGE { a href={ "?page=" (q.page + 1) } { "next" } }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: String,
    #[serde(rename = "where")]
    filter: Option<String>,
    role: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    20
}

pub(crate) async fn api_search(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, Fail> {
    let filters: Vec<Filter> = match q.filter.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => vec![Filter::parse(f).map_err(lib)?],
        None => Vec::new(),
    };
    let role = q
        .role
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| {
            pragma_transcripts::model::Role::parse(r).ok_or_else(|| bad(format!("role '{r}'")))
        })
        .transpose()?;
    let hits = with_db(&s, |db| {
        db.search(&name, &q.q, &filters, role, q.limit.min(1000))
            .map_err(lib)
    })?;
    Ok(Json(hits).into_response())
}

#[derive(Deserialize)]
pub(crate) struct OverlayQuery {
    overlay: Option<String>,
    latent: Option<u32>,
}

/// Background for a value in [-1, 1]: red for positive, blue for negative.
fn colour(x: f32) -> String {
    let a = x.abs().min(1.0);
    if x >= 0.0 {
        format!("background: rgba(230, 57, 70, {:.2})", a * 0.8)
    } else {
        format!("background: rgba(69, 123, 157, {:.2})", a * 0.8)
    }
}

pub(crate) async fn transcript(
    State(s): State<Shared>,
    Path(id): Path<i64>,
    Query(q): Query<OverlayQuery>,
) -> Result<Markup, Fail> {
    let overlay = q.overlay.clone().filter(|o| !o.is_empty());
    let (v, values, latents) = with_db(&s, |db| {
        let v = db.transcript_view(id).map_err(lib)?;
        let is_sae = |n: &str| v.scorers.iter().any(|x| x.name == n && x.kind == "sae");
        let mut latents = match &overlay {
            Some(o) if is_sae(o) => db.top_latents(id, o, 12).map_err(lib)?,
            _ => Vec::new(),
        };
        // A latent asked for by URL is offered even when it is not among the strongest.
        if let (Some(j), false) = (q.latent, latents.is_empty()) {
            if !latents.iter().any(|x| x.0 == j) {
                let vals = db
                    .overlay(id, overlay.as_deref().unwrap_or(""), Some(j))
                    .map_err(lib)?;
                latents.push((j, vals.iter().fold(0f32, |m, v| m.max(*v))));
            }
        }
        let values = match &overlay {
            Some(o) => {
                let latent = q.latent.or_else(|| latents.first().map(|x| x.0));
                Some(
                    db.overlay(id, o, if is_sae(o) { latent } else { None })
                        .map_err(lib)?,
                )
            }
            None => None,
        };
        Ok((v, values, latents))
    })?;
    let scale = values
        .as_ref()
        .map(|x| x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6))
        .unwrap_or(1.0);
    let tok = s.tokenizer.clone();
    let piece = |id: u32| -> String {
        tok.as_ref()
            .and_then(|t| t.decode(&[id]).ok())
            .unwrap_or_else(|| format!("<{id}>"))
    };
    let chosen_latent = q.latent.or_else(|| latents.first().map(|x| x.0));
    Ok(page(
        &format!("{} / {}", v.collection, v.run),
        html! {
            p class="muted" {
                a href={ "/c/" (v.collection) } { (v.collection) } " · run " (v.run)
                @if let Some(sid) = &v.sample_id { " · sample " (sid) }
                @if let Some(e) = v.epoch { " · epoch " (e) }
                @if !v.scores.is_empty() { " · scores " (serde_json::Value::Object(v.scores.clone())) }
            }
            @if !v.metadata.is_empty() {
                p class="muted" { "metadata " (serde_json::Value::Object(v.metadata.clone())) }
            }
            form method="get" id="overlay-form" {
                "overlay: "
                select name="overlay" id="overlay" data-autosubmit {
                    option value="" { "none" }
                    @for sc in &v.scorers {
                        option value=(sc.name) selected[overlay.as_deref() == Some(sc.name.as_str())] { (sc.name) }
                    }
                }
                @if !latents.is_empty() {
                    " latent: "
                    select name="latent" id="latent" data-autosubmit {
                        @for (j, a) in &latents {
                            option value=(j) selected[chosen_latent == Some(*j)] { (j) " (max " (format!("{a:.2}")) ")" }
                        }
                    }
                }
                " " button type="submit" { "show" }
                @if let (Some(o), Some(j), false) = (&overlay, chosen_latent, latents.is_empty()) {
                    " " a id="feature-link" href={ "/feature/" (o) "/" (j) } { "latent " (j) "'s page" }
                }
                @if v.scorers.is_empty() {
                    span class="muted" { " (not scored: pragma transcripts score " (v.collection) " --probe/--sae/--vector)" }
                }
            }
            @for (i, m) in v.transcript.messages.iter().enumerate() {
                div class={ "msg " (m.role.name()) } id={ "m" (i) } {
                    div class="role" { "T" (v.index) "B" (i) " " (m.role.name())
                        @if let Some(n) = &m.name { " (" (n) ")" } }
                    @match (&values, &v.tokens, v.spans.iter().find(|sp| sp.message == i)) {
                        (Some(vals), Some(ids), Some(sp)) => {
                            @for t in sp.start..sp.end.min(ids.len()) {
                                @let x = vals.get(t).copied().unwrap_or(0.0);
                                span class="tok" style=(colour(x / scale)) title=(format!("{x:.3}")) data-v=(format!("{x}")) { (piece(ids[t])) }
                            }
                        }
                        _ => {
                            @if let Some(r) = &m.reasoning { div class="muted" { "reasoning: " (r) } }
                            (m.content)
                            @for c in &m.tool_calls { div class="muted" { "→ " (c.function) "(" (c.arguments) ")" } }
                        }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_transcript(
    State(s): State<Shared>,
    Path(id): Path<i64>,
) -> Result<Response, Fail> {
    let v = with_db(&s, |db| db.transcript_view(id).map_err(lib))?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
pub(crate) struct DiffQuery {
    a: Option<String>,
    b: Option<String>,
    sae: Option<String>,
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    10
}

fn run_diff(s: &Shared, q: &DiffQuery) -> Result<Option<DiffResult>, Fail> {
    let (Some(a), Some(b)) = (
        q.a.as_deref().filter(|x| !x.is_empty()),
        q.b.as_deref().filter(|x| !x.is_empty()),
    ) else {
        return Ok(None);
    };
    let mut cfg = DiffConfig::new(a, b);
    cfg.top = q.top.min(100);
    cfg.sae = q.sae.clone().filter(|x| !x.is_empty());
    let mut r = with_db(s, |db| diff(db, &cfg).map_err(lib))?;
    if let Some(t) = &s.tokenizer {
        for f in &mut r.families {
            for h in f.more_in_a.iter_mut().chain(f.more_in_b.iter_mut()) {
                for e in &mut h.examples {
                    e.text = decode_context(t, &e.text);
                }
            }
        }
    }
    Ok(Some(r))
}

pub(crate) async fn diff_page(
    State(s): State<Shared>,
    Query(q): Query<DiffQuery>,
) -> Result<Markup, Fail> {
    let names = with_db(&s, |db| db.collection_names().map_err(lib))?;
    let r = run_diff(&s, &q)?;
    Ok(page(
        "diff",
        html! {
            form method="get" id="diff-form" {
                "A " select name="a" { @for n in &names { option value=(n) selected[q.a.as_deref() == Some(n.as_str())] { (n) } } }
                " B " select name="b" { @for n in &names { option value=(n) selected[q.b.as_deref() == Some(n.as_str())] { (n) } } }
                " " button type="submit" { "compare" }
            }
            @if let Some(r) = &r {
                p class="muted" {
                    (r.units.0) " vs " (r.units.1) " transcripts; "
                    @match r.paired { Some(n) => { (n) " paired by sample id and epoch (sign test)" } None => { "unpaired (Fisher exact test)" } }
                    "; hypotheses found on " (r.discovery_units.0) " + " (r.discovery_units.1) ", checked on the rest"
                }
                @if let Some(n) = &r.note { p class="muted" { (n) } }
                @for f in &r.families {
                    @for (dir, hs, disc) in [(format!("more in {}", r.b), &f.more_in_b, f.discoveries.0), (format!("more in {}", r.a), &f.more_in_a, f.discoveries.1)] {
                        h2 { (f.name) ": " (dir) }
                        p class="muted" { (f.tested) " tested, " (disc) " discoveries at FDR 0.05" }
                        table class="diff" {
                            tr { th { "hypothesis" } th { (r.a) } th { (r.b) } th { "p" } th { "q" } th { "held-out AUROC" } th { "examples" } }
                            @for h in hs {
                                tr {
                                    td { (h.name) }
                                    td { (format!("{:.1}%", 100.0 * h.rate_a)) }
                                    td { (format!("{:.1}%", 100.0 * h.rate_b)) }
                                    td { (format!("{:.1e}", h.p)) }
                                    td { (format!("{:.1e}", h.q)) }
                                    td { (h.heldout_auroc.map_or("-".to_string(), |v| format!("{v:.2}"))) }
                                    td class="snip" { @for e in &h.examples { (e.side) ": " (e.text) br; } }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_diff(
    State(s): State<Shared>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, Fail> {
    match run_diff(&s, &q)? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(bad("pass a and b: /api/diff?a=COLLECTION&b=COLLECTION")),
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    key: String,
}

/// Sets the API key cookie (checked by the guard on every other request).
pub(crate) async fn login(Query(q): Query<LoginQuery>) -> Response {
    let cookie = format!(
        "pragma_key={}; HttpOnly; SameSite=Strict; Path=/",
        q.key.replace([';', '\r', '\n', ' '], "")
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[derive(Deserialize)]
pub(crate) struct OutlierQuery {
    scorer: Option<String>,
    #[serde(default)]
    pool: Option<String>,
    #[serde(default)]
    messages: bool,
    #[serde(default = "default_top")]
    top: usize,
}

fn run_outliers(
    s: &Shared,
    name: &str,
    q: &OutlierQuery,
) -> Result<
    (
        Vec<String>,
        Option<Vec<pragma_transcripts::analysis::Outlier>>,
    ),
    Fail,
> {
    use pragma_transcripts::analysis::{outliers, Pool};
    let pool = match q.pool.as_deref().unwrap_or("max") {
        "mean" => Pool::Mean,
        "max" => Pool::Max,
        p => return Err(bad(format!("pool '{p}': expected mean or max"))),
    };
    with_db(s, |db| {
        let cid = db.collection_id_pub(name).map_err(lib)?;
        let mut st = db
            .conn()
            .prepare("SELECT name FROM scorers WHERE collection_id = ?1 ORDER BY id")
            .map_err(|e| lib(e.into()))?;
        let scorers: Vec<String> = st
            .query_map([cid], |r| r.get(0))
            .and_then(|it| it.collect())
            .map_err(|e| lib(e.into()))?;
        let o = match q.scorer.as_deref().filter(|x| !x.is_empty()) {
            Some(sc) => {
                Some(outliers(db, name, sc, pool, q.messages, q.top.min(500)).map_err(lib)?)
            }
            None => None,
        };
        Ok((scorers, o))
    })
}

pub(crate) async fn outliers_page(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<OutlierQuery>,
) -> Result<Markup, Fail> {
    let (scorers, o) = run_outliers(&s, &name, &q)?;
    Ok(page(
        &format!("{name}: outliers"),
        html! {
            form method="get" id="outliers-form" {
                "scorer " select name="scorer" {
                    @for sc in &scorers { option value=(sc) selected[q.scorer.as_deref() == Some(sc.as_str())] { (sc) } }
                }
                " pool " select name="pool" {
                    @for p in ["max", "mean"] { option value=(p) selected[q.pool.as_deref() == Some(p)] { (p) } }
                }
                " " button type="submit" { "find" }
            }
            @if let Some(o) = &o {
                table id="outliers" {
                    tr { th { "run" } th { "message" } th { "why" } }
                    @for x in o {
                        tr {
                            td { a href={ "/t/" (x.transcript_id) @if let Some(m) = x.message { "#m" (m) } } { (x.run) } }
                            td { (x.message.map(|m| format!("B{m}")).unwrap_or_default()) }
                            td { (x.reason) }
                        }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_outliers(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<OutlierQuery>,
) -> Result<Response, Fail> {
    match run_outliers(&s, &name, &q)?.1 {
        Some(o) => Ok(Json(o).into_response()),
        None => Err(bad("pass scorer=NAME")),
    }
}

#[derive(Deserialize)]
pub(crate) struct ClusterQuery {
    sae: Option<String>,
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    8
}

fn run_clusters(
    s: &Shared,
    name: &str,
    q: &ClusterQuery,
) -> Result<pragma_transcripts::analysis::Clustering, Fail> {
    if q.k > 100 {
        return Err(bad(format!("k = {}: at most 100", q.k)));
    }
    with_db(s, |db| {
        pragma_transcripts::analysis::clusters(
            db,
            name,
            q.sae.as_deref().filter(|x| !x.is_empty()),
            q.k,
            0,
        )
        .map_err(lib)
    })
}

pub(crate) async fn clusters_page(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<ClusterQuery>,
) -> Result<Markup, Fail> {
    let c = run_clusters(&s, &name, &q)?;
    let fmt = |v: &[(String, f64, f64)]| {
        v.iter()
            .map(|(w, sh, l)| format!("{w} ({:.0}%, x{l:.1})", 100.0 * sh))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(page(
        &format!("{name}: clusters"),
        html! {
            p class="muted" { (c.clusters.len()) " clusters on " (c.features) " (k-means, cosine)" }
            table id="clusters" {
                tr { th { "size" } th { "over-represented" } th { "words" } th { "examples" } }
                @for cl in &c.clusters {
                    tr {
                        td { (cl.size) }
                        td { (fmt(&cl.top)) }
                        td { (fmt(&cl.words)) }
                        td { @for (tid, run) in &cl.examples { a href={ "/t/" (tid) } { (run) } " " } }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_clusters(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<ClusterQuery>,
) -> Result<Response, Fail> {
    Ok(Json(run_clusters(&s, &name, &q)?).into_response())
}

#[derive(Deserialize)]
pub(crate) struct FeatureQuery {
    #[serde(default = "default_feature_top")]
    top: usize,
}

fn default_feature_top() -> usize {
    25
}

fn latent_page(
    s: &Shared,
    scorer: &str,
    latent: u32,
    top: usize,
) -> Result<pragma_transcripts::view::LatentPage, Fail> {
    with_db(s, |db| {
        db.latent_page(scorer, latent, top.min(200)).map_err(lib)
    })
}

/// An activation histogram as inline SVG (server-made: no script).
fn histogram_svg(h: &[(f32, u64)]) -> Markup {
    let max = h.iter().map(|x| x.1).max().unwrap_or(1).max(1) as f64;
    let (w, ht) = (400.0, 100.0);
    let bw = w / h.len().max(1) as f64;
    html! {
        svg width=(w) height=(ht + 20.0) xmlns="http://www.w3.org/2000/svg" role="img" {
            @for (i, (lo, n)) in h.iter().enumerate() {
                @let bh = ht * (*n as f64) / max;
                rect x=(i as f64 * bw) y=(ht - bh) width=(bw - 1.0) height=(bh) fill="#e63946" {
                    title { (format!("{lo:.2}: {n}")) }
                }
            }
            text x="0" y=(ht + 15.0) font-size="11" { "0" }
            text x=(w - 40.0) y=(ht + 15.0) font-size="11" {
                (format!("{:.2}", h.last().map_or(0.0, |x| x.0 * h.len() as f32 / (h.len() as f32 - 1.0).max(1.0))))
            }
        }
    }
}

pub(crate) async fn feature(
    State(s): State<Shared>,
    Path((scorer, latent)): Path<(String, u32)>,
    Query(q): Query<FeatureQuery>,
) -> Result<Markup, Fail> {
    let p = latent_page(&s, &scorer, latent, q.top)?;
    // The logit table, when the SAE behind this scorer was given to the server.
    let logits = match &s.playground {
        Some(pg) => match pg.saes.iter().find(|(n, _)| *n == scorer) {
            Some((_, sae)) => Some(
                pragma_methods::sae::latent_logits(sae, &pg.model, latent as usize, 10)
                    .map_err(bad)?,
            ),
            None => None,
        },
        None => None,
    };
    let tok = s.tokenizer.clone();
    let dec = |ids: &[u32]| -> String {
        match &tok {
            Some(t) => t.decode(ids).unwrap_or_default(),
            None => ids.iter().map(|i| format!("<{i}>")).collect(),
        }
    };
    Ok(page(
        &format!("{scorer} latent {latent}"),
        html! {
            p class="muted" {
                "among the stored top latents of " (p.fires) " of " (p.tokens) " scored tokens ("
                (format!("{:.3}%", 100.0 * p.fires as f64 / p.tokens.max(1) as f64)) ")"
            }
            h2 { "activations" }
            (histogram_svg(&p.histogram))
            @if let Some((top, bottom)) = &logits {
                h2 { "logits (W_U · W_dec)" }
                table id="feature-logits" {
                    tr { th { "promoted" } th { "" } th { "suppressed" } th { "" } }
                    @for (a, b) in top.iter().zip(bottom) {
                        tr {
                            td { (dec(&[a.0])) } td { (format!("{:+.2}", a.1)) }
                            td { (dec(&[b.0])) } td { (format!("{:+.2}", b.1)) }
                        }
                    }
                }
            } @else {
                p class="muted" { "(logit table: start the server with --sae NAME=DIR for this scorer)" }
            }
            h2 { "strongest activations" }
            table id="feature-top" {
                tr { th { "activation" } th { "context" } th { "transcript" } }
                @for h in &p.top {
                    tr {
                        td { (format!("{:.3}", h.activation)) }
                        td class="snip" { (dec(&h.before)) b class="tok" style="background: rgba(230, 57, 70, 0.8)" { (dec(&[h.at])) } (dec(&h.after)) }
                        td { a href={ "/t/" (h.transcript_id) "?overlay=" (scorer) "&latent=" (latent) } { (h.collection) " / " (h.run) } }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_feature(
    State(s): State<Shared>,
    Path((scorer, latent)): Path<(String, u32)>,
    Query(q): Query<FeatureQuery>,
) -> Result<Response, Fail> {
    Ok(Json(latent_page(&s, &scorer, latent, q.top)?).into_response())
}

#[derive(Deserialize)]
pub(crate) struct SteerQuery {
    prompt: Option<String>,
    vector: Option<String>,
    /// One of the vector's layers, or empty for all of them.
    layer: Option<String>,
    #[serde(default = "default_scale")]
    scale: f32,
    #[serde(default = "default_op")]
    op: String,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
}

fn default_scale() -> f32 {
    4.0
}
fn default_op() -> String {
    "add".into()
}
fn default_max_tokens() -> usize {
    48
}

async fn run_steer(
    s: &Shared,
    q: &SteerQuery,
) -> Result<Option<pragma_methods::steering::SideBySide>, Fail> {
    let Some(pg) = &s.playground else {
        return Err(bad(
            "the steering playground needs a model and vectors: pragma serve --vector NAME=FILE",
        ));
    };
    let (Some(prompt), Some(name)) = (
        q.prompt.clone().filter(|p| !p.trim().is_empty()),
        q.vector.clone().filter(|v| !v.is_empty()),
    ) else {
        return Ok(None);
    };
    if prompt.len() > 4000 || q.max_tokens > 256 {
        return Err(bad("prompt over 4000 characters or max_tokens over 256"));
    }
    let op = pragma_methods::steering::Operator::parse(&q.op).map_err(bad)?;
    let layer: Option<usize> = match q.layer.as_deref().filter(|l| !l.is_empty()) {
        Some(l) => Some(
            l.parse()
                .map_err(|_| bad(format!("layer '{l}': expected a number")))?,
        ),
        None => None,
    };
    let vector = pg
        .vectors
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| not_found(format!("no vector '{name}'")))?;
    if let Some(l) = layer {
        if !vector.meta.layers.contains(&l) {
            return Err(bad(format!(
                "layer {l} is not in '{name}' (layers {:?})",
                vector.meta.layers
            )));
        }
    }
    let model = pg.model.clone();
    let (scale, max_tokens) = (q.scale, q.max_tokens);
    let r = tokio::task::spawn_blocking(move || {
        let layers = layer.map(|l| vec![l]);
        pragma_methods::steering::side_by_side(
            &model,
            &prompt,
            &vector,
            op,
            scale,
            layers.as_deref(),
            max_tokens,
        )
    })
    .await
    .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(bad)?;
    Ok(Some(r))
}

pub(crate) async fn steer_page(
    State(s): State<Shared>,
    Query(q): Query<SteerQuery>,
) -> Result<Markup, Fail> {
    let vectors: Vec<(String, Vec<usize>)> = s
        .playground
        .as_ref()
        .map(|p| {
            p.vectors
                .iter()
                .map(|(n, v)| (n.clone(), v.meta.layers.clone()))
                .collect()
        })
        .unwrap_or_default();
    let r = if s.playground.is_some() {
        run_steer(&s, &q).await?
    } else {
        None
    };
    Ok(page(
        "steering playground",
        html! {
            @if vectors.is_empty() {
                p { "No steering vectors: start the server with " code { "pragma serve --vector NAME=FILE" } " (from " code { "pragma steer train" } ")." }
            } @else {
                form method="get" id="steer-form" {
                    p { textarea name="prompt" rows="3" cols="80" placeholder="a prompt (one user turn)" { (q.prompt.clone().unwrap_or_default()) } }
                    "vector " select name="vector" {
                        @for (n, _) in &vectors { option value=(n) selected[q.vector.as_deref() == Some(n.as_str())] { (n) } }
                    }
                    " layer " select name="layer" {
                        option value="" { "all" }
                        @for l in vectors.iter().flat_map(|v| v.1.iter()).collect::<std::collections::BTreeSet<_>>() {
                            option value=(l) selected[q.layer.as_deref() == Some(l.to_string().as_str())] { (l) }
                        }
                    }
                    " scale " input type="text" name="scale" size="5" value=(q.scale);
                    " op " select name="op" {
                        @for o in ["add", "ablate", "ablate-add"] { option value=(o) selected[q.op == o] { (o) } }
                    }
                    " " button type="submit" { "generate" }
                }
            }
            @if let Some(r) = &r {
                table id="steer-result" {
                    tr { th { "unsteered" } th { "steered (layers " (format!("{:?}", r.layers)) ", scale " (r.scale) ")" } }
                    tr { td class="msg assistant" id="unsteered" { (r.unsteered) } td class="msg assistant" id="steered" { (r.steered) } }
                }
            }
        },
    ))
}

pub(crate) async fn api_steer(
    State(s): State<Shared>,
    Query(q): Query<SteerQuery>,
) -> Result<Response, Fail> {
    match run_steer(&s, &q).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(bad("pass prompt and vector")),
    }
}
