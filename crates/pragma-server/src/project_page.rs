//! The research project page (`/project`) and its JSON twin (`/api/project`): the
//! project file (north star, time box, rule, proxy tasks), every check-in's verdicts, a
//! plot per proxy task of each technique's score with its 95% CI across check-ins, the
//! latest check-in's evidence tables, and the latest recorded runs. Read from the
//! project's runs database at each request, so a new check-in shows on reload.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup, PreEscaped};
use pragma_research::checkin::{project_key, Checkin, Role};
use pragma_research::project::{Project, Standing};
use pragma_research::runs::{Filter, Run, RunDb};

use crate::pages::{page, Fail};
use crate::Shared;

/// The project, its check-ins (oldest first) and its latest runs (newest first).
fn load(s: &Shared) -> Result<(Project, Vec<Checkin>, Vec<Run>), Fail> {
    let path = s.project.as_ref().ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            "no research project: start the server in a project folder (one with a \
             pragma.toml) or pass --project FILE"
                .into(),
        )
    })?;
    let fail = |e: pragma_research::Error| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let p = Project::load(path).map_err(fail)?;
    let db = RunDb::open(&RunDb::default_path(p.dir())).map_err(fail)?;
    let checkins = db.checkins(&project_key(&p, &db)).map_err(fail)?;
    let runs = db
        .list(&Filter {
            limit: Some(20),
            ..Filter::default()
        })
        .map_err(fail)?;
    Ok((p, checkins, runs))
}

fn standing(s: Standing) -> (&'static str, &'static str) {
    match s {
        Standing::Ahead => ("ahead", "ahead"),
        Standing::WithinNoise => ("within noise", "noise"),
        Standing::Behind => ("behind", "behind"),
    }
}

fn score(s: &pragma_research::Score) -> String {
    format!("{:.3} [{:.3}, {:.3}]", s.mean, s.lo, s.hi)
}

/// Each technique's and baseline's score (point and 95% CI) across check-ins, as an
/// inline SVG: x the check-in number, y the score.
fn trend(task: &str, checkins: &[Checkin]) -> Markup {
    let series: Vec<(usize, &str, Role, &pragma_research::Score)> = checkins
        .iter()
        .flat_map(|c| {
            c.proxies
                .iter()
                .filter(|p| p.task == task)
                .flat_map(move |p| {
                    p.evidence
                        .iter()
                        .filter(|e| e.role != Role::Other)
                        .map(move |e| (c.number, e.name.as_str(), e.role, &e.score))
                })
        })
        .collect();
    let mut names: Vec<(&str, Role)> = Vec::new();
    for (_, n, r, _) in &series {
        if !names.iter().any(|(m, _)| m == n) {
            names.push((n, *r));
        }
    }
    let (lo, hi) = series
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), (_, _, _, s)| {
            (a.min(s.lo), b.max(s.hi))
        });
    if series.is_empty() || !lo.is_finite() || !hi.is_finite() {
        return html! {};
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let n = checkins.len().max(1);
    let (w, h, left, top, bottom) = (560.0, 220.0, 56.0, 12.0, 28.0);
    let center = |i: usize| left + (w - left - 12.0) / n as f64 * (i as f64 - 0.5);
    let x = |i: usize, k: usize| center(i) + (k as f64 + 0.5 - names.len() as f64 / 2.0) * 9.0;
    let y = |v: f64| top + (hi - v) / (hi - lo) * (h - top - bottom);
    const COLORS: &[&str] = &[
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
    ];
    let mut svg = format!(
        "<svg class=\"trend\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#999\"/>",
        h - bottom
    );
    for v in [lo + pad, (lo + hi) / 2.0, hi - pad] {
        svg += &format!(
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v:.2}</text>\
             <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            left - 4.0,
            y(v) + 3.0,
            y(v),
            w - 12.0,
            y(v)
        );
    }
    for c in checkins {
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">#{}</text>",
            center(c.number),
            h - 10.0,
            c.number
        );
    }
    for (k, (name, role)) in names.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let dash = if *role == Role::Baseline {
            " stroke-dasharray=\"3 2\""
        } else {
            ""
        };
        for (i, _, _, s) in series.iter().filter(|(_, m, _, _)| m == name) {
            let cx = x(*i, k);
            svg += &format!(
                "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"{color}\"{dash}/>\
                 <circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} #{i}: {}</title></circle>",
                y(s.lo),
                y(s.hi),
                y(s.mean),
                maud::html! { (name) }.into_string(),
                score(s)
            );
        }
    }
    svg += "</svg>";
    html! {
        (PreEscaped(svg))
        p class="legend" {
            @for (k, (name, role)) in names.iter().enumerate() {
                span style={ "color:" (COLORS[k % COLORS.len()]) } { "● " (name) }
                @if *role == Role::Baseline { span class="muted" { " (baseline)" } }
                " "
            }
        }
    }
}

pub(crate) async fn project_page(State(s): State<Shared>) -> Result<Markup, Fail> {
    let (p, checkins, runs) = load(&s)?;
    let today = pragma_research::project::today();
    let tasks: Vec<&str> = p.proxies.iter().map(|x| x.task.as_str()).collect();
    Ok(page(
        "project",
        html! {
            table id="project" {
                tr { th { "north star" } td { (p.north_star) } }
                tr { th { "time box" } td { (p.time_box) " (" (p.time_box_day - today) " days left)" } }
                tr { th { "decision rule" } td { (p.decision_rule) ": ahead when the technique's 95% CI lies above the best baseline's" } }
                @for x in &p.proxies {
                    tr { th { "proxy task" } td { b { (x.task) } ": " (x.techniques.join(", ")) " vs " (x.baselines.join(", ")) } }
                }
            }
            h2 { "Check-ins" }
            @if checkins.is_empty() {
                p { "No check-ins yet: run " code { "pragma checkin" } " in the project folder." }
            } @else {
                table id="checkins" {
                    tr { th { "#" } th { "date (UTC)" } th { "says" } th { "verdicts" } }
                    @for c in checkins.iter().rev() {
                        tr {
                            td { (c.number) }
                            td { (c.at_utc) }
                            td { (c.says) }
                            td {
                                @for x in &c.proxies {
                                    @for v in &x.verdicts {
                                        @let (word, class) = standing(v.verdict.standing);
                                        span class={ "verdict " (class) } title=(v.verdict.says) {
                                            (x.task) " / " (v.technique) ": " (word)
                                        }
                                        " "
                                    }
                                }
                            }
                        }
                    }
                }
                @for t in &tasks {
                    @let metric = checkins.iter().rev().flat_map(|c| &c.proxies).find(|x| x.task == *t).map(|x| x.metric.as_str()).unwrap_or("");
                    h3 { (t) " across check-ins: " (metric) ", point and 95% CI" }
                    (trend(t, &checkins))
                }
                @if let Some(c) = checkins.last() {
                    h2 { "Check-in " (c.number) " in full" }
                    p { b { (c.says) } }
                    @for x in &c.proxies {
                        h3 { (x.task) " (" (x.family) "): " (x.metric) }
                        table class="evidence" {
                            tr { th { "" } th { "role" } th { "score [95% CI]" } th { "previous check-in" } }
                            @for e in &x.evidence {
                                tr {
                                    td { (e.name) }
                                    td { @match e.role { Role::Technique => { "technique" } Role::Baseline => { "baseline" } Role::Other => {} } }
                                    td { (score(&e.score)) }
                                    td class="muted" {
                                        @match &e.previous {
                                            Some(prev) if prev == &e.score => { "same" }
                                            Some(prev) => { (format!("{} ({:+.3})", score(prev), e.score.mean - prev.mean)) }
                                            None => { "-" }
                                        }
                                    }
                                }
                            }
                        }
                        ul {
                            @for v in &x.verdicts {
                                @let (_, class) = standing(v.verdict.standing);
                                li class={ "verdict " (class) } { (v.verdict.says) }
                            }
                        }
                    }
                    p class="muted" {
                        @if let Some(id) = c.run_id { "Rests on run " (id) " (" code { "pragma runs show " (id) } "); " }
                        "eval cells in " (c.eval_dir) " (" (c.computed) " computed, " (c.cached) " cached)."
                    }
                }
            }
            h2 { "Latest runs" }
            table id="runs" {
                tr { th { "id" } th { "started (UTC)" } th { "workflow" } th { "status" } th { "seconds" } }
                @for r in &runs {
                    tr {
                        td { (r.id) }
                        td { (r.started_utc) }
                        td { (r.workflow) }
                        td { (r.status) }
                        td { @if let Some(sec) = r.seconds { (format!("{sec:.1}")) } }
                    }
                }
            }
        },
    ))
}

pub(crate) async fn api_project(State(s): State<Shared>) -> Result<Response, Fail> {
    let (p, checkins, runs) = load(&s)?;
    Ok(Json(serde_json::json!({"project": p, "checkins": checkins, "runs": runs})).into_response())
}
