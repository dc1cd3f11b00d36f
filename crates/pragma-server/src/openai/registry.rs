//! The registry routes: `GET/POST /v1/pragma/vectors`, `DELETE
//! /v1/pragma/vectors/{name}`, `GET /v1/pragma/probes`, `GET /v1/pragma/saes`, and the
//! model thread's counters, `GET /v1/pragma/stats`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pragma_methods::steering::SteeringVector;
use pragma_model::hooks::HookPoint;
use serde_json::{json, Value};

use super::types::NewVector;
use super::{parse, require_json, ApiError, OpenAi};

/// How many requests and batches the model thread has run, and the largest batch.
pub(super) async fn stats(State(api): State<OpenAi>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &api.engine.stats;
    Json(json!({
        "requests": s.requests.load(Relaxed),
        "batches": s.batches.load(Relaxed),
        "steps": s.steps.load(Relaxed),
        "joined_mid_decode": s.joined_mid_decode.load(Relaxed),
        "max_batch_groups": s.max_groups.load(Relaxed),
        "max_batch_rows": s.max_rows.load(Relaxed),
    }))
}

pub(super) async fn list_probes(State(api): State<OpenAi>) -> Json<Value> {
    let v: Vec<Value> = api
        .probes
        .iter()
        .map(|(name, p)| {
            json!({"name": name, "hook": p.meta.hook, "method": p.meta.method,
                                "classes": p.meta.classes, "model": p.meta.model})
        })
        .collect();
    Json(json!({"object": "list", "data": v}))
}

pub(super) async fn list_vectors(State(api): State<OpenAi>) -> Json<Value> {
    let v = api.vectors.read().map(|v| {
        v.iter()
            .map(|(name, vec)| {
                json!({"name": name, "site": vec.meta.site, "layers": vec.meta.layers,
                       "d_model": vec.meta.d_model, "model": vec.meta.model})
            })
            .collect::<Vec<_>>()
    });
    Json(json!({"object": "list", "data": v.unwrap_or_default()}))
}

pub(super) async fn list_saes(State(api): State<OpenAi>) -> Json<Value> {
    let v: Vec<Value> = api
        .saes
        .iter()
        .map(|(name, s)| {
            json!({"name": name, "hook_name": s.cfg.hook_name, "d_in": s.cfg.d_in,
                   "d_sae": s.cfg.d_sae, "architecture": s.cfg.arch})
        })
        .collect();
    Json(json!({"object": "list", "data": v}))
}

/// `POST /v1/pragma/vectors`: register a vector from its directions (201). 400 on a bad
/// name, layer, width or number; 409 when the name is taken (delete it first).
pub(super) async fn add_vector(
    State(api): State<OpenAi>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req: NewVector = parse(&body)?;
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 64
        && !req.name.starts_with("sae:")
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(ApiError::param(
            format!(
                "name '{}': expected 1 to 64 letters, digits, '.', '_' or '-' (not starting with sae:)",
                req.name
            ),
            "name",
        ));
    }
    let cfg = api.model.cfg();
    HookPoint::parse(&format!("blocks.0.{}", req.site), cfg.n_layers)
        .ok()
        .filter(HookPoint::is_model_width)
        .ok_or_else(|| {
            ApiError::param(
                format!(
                    "site '{}': expected a d_model-wide block site such as hook_resid_post",
                    req.site
                ),
                "site",
            )
        })?;
    if req.directions.is_empty() {
        return Err(ApiError::param(
            "directions: expected at least one layer",
            "directions",
        ));
    }
    let mut layers = Vec::new();
    let mut directions = Vec::new();
    let mut by_layer: Vec<(usize, &Vec<f32>)> = Vec::new();
    for (l, d) in &req.directions {
        let layer: usize = l
            .parse()
            .ok()
            .filter(|&x| x < cfg.n_layers)
            .ok_or_else(|| {
                ApiError::param(
                    format!(
                        "directions: layer '{l}': expected 0 to {}",
                        cfg.n_layers - 1
                    ),
                    "directions",
                )
            })?;
        if d.len() != cfg.d_model || d.iter().any(|x| !x.is_finite()) {
            return Err(ApiError::param(
                format!(
                    "directions[{l}]: expected {} finite numbers (d_model), found {} numbers{}",
                    cfg.d_model,
                    d.len(),
                    if d.iter().any(|x| !x.is_finite()) {
                        " with a non-finite one"
                    } else {
                        ""
                    }
                ),
                "directions",
            ));
        }
        by_layer.push((layer, d));
    }
    by_layer.sort_by_key(|x| x.0);
    let mut norms = Vec::new();
    for (l, d) in by_layer {
        layers.push(l);
        norms.push(d.iter().map(|x| x * x).sum::<f32>().sqrt());
        directions.push(
            candle_core::Tensor::new(d.as_slice(), &candle_core::Device::Cpu)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?,
        );
    }
    let vector = SteeringVector {
        meta: pragma_methods::steering::VectorMeta {
            model: format!("{} (posted to pragma serve)", api.model_id),
            model_sha256: None,
            d_model: cfg.d_model,
            site: req.site.clone(),
            layers: layers.clone(),
            method: pragma_methods::steering::Method::Imported,
            position: pragma_methods::steering::Position::Last,
            pairs_sha256: String::new(),
            n_pairs: 0,
            norms: norms.clone(),
            pragma_version: env!("CARGO_PKG_VERSION").into(),
            input: Default::default(),
        },
        directions,
    };
    let mut vectors = api
        .vectors
        .write()
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "registry".into(), None))?;
    if vectors.contains_key(&req.name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "a vector '{}' is registered: DELETE /v1/pragma/vectors/{} first",
                req.name, req.name
            ),
            Some("name"),
        ));
    }
    api.generation
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    vectors.insert(req.name.clone(), vector);
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": req.name, "site": req.site, "layers": layers, "norms": norms})),
    )
        .into_response())
}

pub(super) async fn delete_vector(
    State(api): State<OpenAi>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = api
        .vectors
        .write()
        .map(|mut v| {
            // Bumped under the write lock, which planning reads under.
            api.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            v.remove(&name).is_some()
        })
        .unwrap_or(false);
    if !removed {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no vector '{name}'"),
            Some("name"),
        ));
    }
    Ok(Json(json!({"name": name, "deleted": true})))
}
