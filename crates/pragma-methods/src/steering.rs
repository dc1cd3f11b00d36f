//! Steering vectors from contrastive pairs.
//!
//! A pairs file is JSONL, one pair a line; each side is text or chat messages:
//!
//! ```text
//! {"positive": "I love this film.", "negative": "I hate this film."}
//! {"positive": [{"role": "user", "content": "..."}], "negative": [{"role": "user", "content": "..."}]}
//! {"prompt": "Are you being tested?\n(A) Yes\n(B) No\nAnswer:", "positive": " (A", "negative": " (B"}
//! ```
//!
//! The third form is Contrastive Activation Addition's A/B answer form: a shared prompt
//! (text or chat messages; a chat prompt gets the assistant header) followed by two answer
//! strings. `--position answer` then reads the mean over the answer's tokens (with a
//! one-token answer such as " A" that is exactly CAA's answer-letter position).
//!
//! For every chosen layer we read one hook (default `hook_resid_post`) at a position
//! rule (last token, or the mean over tokens) for both sides, and reduce the pairs to
//! one direction per layer:
//! - `mean`: mean(positive) - mean(negative) (difference of means, ActAdd/CAA);
//! - `pca-diff`: first principal direction of the paired differences (repeng's
//!   `pca_diff`), signed to agree with the mean difference and scaled to its projection;
//! - `pca-center`: first principal direction of the activations centred on each
//!   pair's mean (repeng's `pca_center`), signed and scaled the same way.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pragma_model::hooks::{Action, HookPoint, Hooks, Positions};
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One side of a pair.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Side {
    Text(String),
    Chat(Vec<ChatMessage>),
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Pair {
    pub positive: Side,
    pub negative: Side,
    /// Shared prompt before two answer strings (CAA's A/B form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Side>,
}

impl Pair {
    pub fn new(positive: Side, negative: Side) -> Self {
        Self {
            positive,
            negative,
            prompt: None,
        }
    }
}

/// Read a pairs file, with line numbers in every error.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let p: Pair = serde_json::from_str(line).map_err(|e| {
            Error::Input(format!(
                "{at}: expected {{\"positive\": text or messages, \"negative\": text or messages}}: {e}"
            ))
        })?;
        if p.positive == p.negative {
            return Err(Error::Input(format!(
                "{at}: positive and negative are identical"
            )));
        }
        if p.prompt.is_some()
            && !(matches!(p.positive, Side::Text(_)) && matches!(p.negative, Side::Text(_)))
        {
            return Err(Error::Input(format!(
                "{at}: with a \"prompt\", positive and negative must be answer strings (e.g. \" (A\")"
            )));
        }
        pairs.push(p);
    }
    if pairs.is_empty() {
        return Err(Error::Input(format!(
            "{}: no pairs found (expected JSONL, one pair a line)",
            path.display()
        )));
    }
    Ok(pairs)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Mean,
    PcaDiff,
    PcaCenter,
    /// Read from a llama.cpp control vector; how it was made is not recorded there.
    Imported,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "mean" => Ok(Method::Mean),
            "pca-diff" | "pca_diff" | "pca" => Ok(Method::PcaDiff),
            "pca-center" | "pca_center" => Ok(Method::PcaCenter),
            _ => Err(Error::Input(format!(
                "method '{s}': expected mean, pca-diff or pca-center"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    Last,
    Mean,
    /// Mean over the answer's tokens (pairs with a shared prompt).
    Answer,
}

impl Position {
    pub fn parse(s: &str) -> Result<Position> {
        match s {
            "last" => Ok(Position::Last),
            "mean" => Ok(Position::Mean),
            "answer" => Ok(Position::Answer),
            _ => Err(Error::Input(format!(
                "position '{s}': expected last, mean or answer"
            ))),
        }
    }
}

/// Provenance stored with a vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorMeta {
    pub model: String,
    pub model_sha256: Option<String>,
    pub d_model: usize,
    /// Site within each block, e.g. `hook_resid_post`.
    pub site: String,
    pub layers: Vec<usize>,
    pub method: Method,
    pub position: Position,
    pub pairs_sha256: String,
    pub n_pairs: usize,
    pub norms: Vec<f32>,
    pub pragma_version: String,
    /// How the pairs' text became token ids; `generate --steer` and the sweep build
    /// their inputs the same way. Files without it (pragma < 0.2) prepended BOS.
    #[serde(default)]
    pub input: InputRule,
}

/// One direction per layer, `[d_model]` each.
#[derive(Clone, Debug)]
pub struct SteeringVector {
    pub meta: VectorMeta,
    pub directions: Vec<Tensor>,
}

/// Token ids for one side, built by [`Tokenizer::build_input`] under `rule` (a
/// conversation ending in a user turn gets the assistant header, so `last` reads the
/// position where the answer would begin).
///
/// [`Tokenizer::build_input`]: pragma_model::Tokenizer::build_input
pub fn side_ids(model: &Model, side: &Side, rule: InputRule) -> Result<Vec<u32>> {
    let prompt = match side {
        Side::Text(t) => Prompt::Text(t),
        Side::Chat(m) => Prompt::chat(m),
    };
    Ok(model.tokenizer.build_input(&prompt, rule)?.ids)
}

/// Activations `[n, d]` per layer for a list of sides (BOS/sink position skipped), in
/// the order given. Sides are run in length-sorted batches to waste little on padding.
pub fn read_sides(
    model: &Model,
    sides: &[&Side],
    points: &[HookPoint],
    pos: Position,
    rule: InputRule,
) -> Result<Vec<Tensor>> {
    let ids: Vec<Vec<u32>> = sides
        .iter()
        .map(|s| side_ids(model, s, rule))
        .collect::<Result<_>>()?;
    read_ids(model, &ids, None, points, pos, &mut |_| {})
}

/// Token ids of one side of a pair and where its answer starts (the prompt's length for
/// the A/B form; otherwise just after a leading BOS).
pub fn pair_side_ids(
    model: &Model,
    prompt: Option<&Side>,
    side: &Side,
    rule: InputRule,
) -> Result<(Vec<u32>, usize)> {
    match (prompt, side) {
        (None, s) => {
            let ids = side_ids(model, s, rule)?;
            let start = sink_len(model, &ids);
            Ok((ids, start))
        }
        (Some(p), Side::Text(answer)) => {
            let mut ids = side_ids(model, p, rule)?;
            let start = ids.len();
            // The answer continues the prompt: no BOS of its own.
            let a = model.tokenizer.encode(answer, rule.parse_special)?;
            if a.is_empty() {
                return Err(Error::Input("an answer string is empty".into()));
            }
            ids.extend(a);
            Ok((ids, start))
        }
        (Some(_), Side::Chat(_)) => Err(Error::Input(
            "with a prompt, each side must be an answer string".into(),
        )),
    }
}

/// As [`read_sides`], from token ids; `progress(done)` after each batch.
pub fn read_ids(
    model: &Model,
    ids: &[Vec<u32>],
    answer_starts: Option<&[usize]>,
    points: &[HookPoint],
    pos: Position,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Tensor>> {
    let ctx = model.cfg().context_length;
    if let Some((i, s)) = ids.iter().enumerate().find(|(_, s)| s.len() > ctx) {
        return Err(Error::Input(format!(
            "text {} is {} tokens, longer than the model's context of {ctx}",
            i + 1,
            s.len()
        )));
    }
    let mut hooks = Hooks::new();
    for &p in points {
        hooks.capture(p);
    }
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut rows: Vec<Vec<Option<Tensor>>> = vec![vec![None; ids.len()]; points.len()];
    let mut done = 0;
    for chunk in order.chunks(16) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let batch = Batch::new(&seqs, model.device())?;
        let (_, cache) = model.transformer.forward(&batch, &hooks, Logits::None)?;
        for (k, &p) in points.iter().enumerate() {
            for (b, &i) in chunk.iter().enumerate() {
                let full = cache.get_row(p, b)?; // [t_b, d]; skip the BOS/sink position
                let skip = sink_len(model, &ids[i]);
                let row = full.narrow(0, skip, full.dim(0)? - skip)?;
                let v = match pos {
                    Position::Last => row.get(row.dim(0)? - 1)?,
                    Position::Mean => row.mean(0)?,
                    Position::Answer => {
                        let start = answer_starts
                            .and_then(|s| s.get(i).copied())
                            .unwrap_or(skip)
                            .clamp(skip, full.dim(0)? - 1);
                        full.narrow(0, start, full.dim(0)? - start)?.mean(0)?
                    }
                };
                rows[k][i] = Some(v.to_dtype(DType::F32)?);
            }
        }
        done += chunk.len();
        progress(done);
    }
    rows.into_iter()
        .map(|v| {
            let v: Vec<Tensor> = v.into_iter().flatten().collect();
            Ok(Tensor::stack(&v, 0)?)
        })
        .collect()
}

/// 1 when `ids` starts with the BOS and has more tokens (position 0 is then an
/// attention sink with outsized activations that readers skip), else 0.
pub fn sink_len(model: &Model, ids: &[u32]) -> usize {
    usize::from(ids.len() > 1 && model.tokenizer.info.bos.is_some_and(|b| ids[0] == b))
}

/// First principal direction of the rows of `x: [n, d]` (not re-centred), by power iteration.
pub fn first_pc(x: &Tensor, init: &Tensor) -> Result<Tensor> {
    let xt = x.t()?.contiguous()?;
    let mut v = (init
        / init
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()?
            .max(1e-12) as f64)?;
    for _ in 0..200 {
        let w = xt.matmul(&x.matmul(&v.unsqueeze(1)?)?)?.squeeze(1)?; // X^T X v
        let n = w.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        if n == 0.0 {
            break;
        }
        v = (w / n as f64)?;
    }
    Ok(v)
}

/// What [`train`] makes: where to read, how to reduce, how to build inputs.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Site within each block, e.g. `hook_resid_post`.
    pub site: String,
    pub layers: Vec<usize>,
    pub method: Method,
    pub position: Position,
    pub input: InputRule,
}

impl TrainConfig {
    /// Difference of means at the last token of `hook_resid_post`, default input rule.
    pub fn new(layers: &[usize]) -> Self {
        Self {
            site: "hook_resid_post".into(),
            layers: layers.to_vec(),
            method: Method::Mean,
            position: Position::Last,
            input: InputRule::default(),
        }
    }
}

/// Train one vector per layer from `pairs`.
pub fn train(
    model: &Model,
    pairs: &[Pair],
    pairs_sha256: &str,
    cfg: &TrainConfig,
) -> Result<SteeringVector> {
    let (site, layers, method, position) =
        (cfg.site.as_str(), &cfg.layers[..], cfg.method, cfg.position);
    let n_layers = model.cfg().n_layers;
    let points: Vec<HookPoint> = layers
        .iter()
        .map(|l| HookPoint::parse(&format!("blocks.{l}.{site}"), n_layers).map_err(Error::from))
        .collect::<Result<_>>()?;
    if points.iter().any(|p| !p.is_model_width()) {
        return Err(Error::Input(format!(
            "site '{site}': expected a residual-width site such as hook_resid_post"
        )));
    }
    if method == Method::Imported {
        return Err(Error::Input(
            "method 'imported' is for vectors read from llama.cpp files, not for training".into(),
        ));
    }
    if position == Position::Answer && pairs.iter().any(|p| p.prompt.is_none()) {
        return Err(Error::Input(
            "position 'answer' needs pairs with a shared \"prompt\" and answer strings (CAA's A/B form)".into(),
        ));
    }
    let read = |side: fn(&Pair) -> &Side| -> Result<Vec<Tensor>> {
        let mut ids = Vec::with_capacity(pairs.len());
        let mut starts = Vec::with_capacity(pairs.len());
        for p in pairs {
            let (i, s) = pair_side_ids(model, p.prompt.as_ref(), side(p), cfg.input)?;
            ids.push(i);
            starts.push(s);
        }
        read_ids(model, &ids, Some(&starts), &points, position, &mut |_| {})
    };
    let a = read(|p| &p.positive)?;
    let b = read(|p| &p.negative)?;
    let mut directions = Vec::with_capacity(points.len());
    for (xa, xb) in a.iter().zip(&b) {
        let mean_diff = (xa.mean(0)? - xb.mean(0)?)?; // [d]
        let dir = match method {
            Method::Mean | Method::Imported => mean_diff,
            Method::PcaDiff | Method::PcaCenter => {
                let x = match method {
                    Method::PcaDiff => (xa - xb)?,
                    _ => {
                        let centre = ((xa + xb)? * 0.5)?;
                        Tensor::cat(&[(xa - &centre)?, (xb - &centre)?], 0)?
                    }
                };
                let u = first_pc(&x, &mean_diff)?;
                // Sign and length: the mean difference's projection on the component.
                let proj = (&mean_diff * &u)?.sum_all()?.to_scalar::<f32>()?;
                (u * proj as f64)?
            }
        };
        directions.push(dir);
    }
    let norms = directions
        .iter()
        .map(|d| Ok(d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?))
        .collect::<Result<Vec<f32>>>()?;
    Ok(SteeringVector {
        meta: VectorMeta {
            model: model
                .info
                .name
                .clone()
                .unwrap_or_else(|| model.info.spec.clone()),
            model_sha256: None,
            d_model: model.cfg().d_model,
            site: site.to_string(),
            layers: layers.to_vec(),
            method,
            position,
            pairs_sha256: pairs_sha256.to_string(),
            n_pairs: pairs.len(),
            norms,
            pragma_version: env!("CARGO_PKG_VERSION").to_string(),
            input: cfg.input,
        },
        directions,
    })
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

impl SteeringVector {
    /// Save as safetensors (`layer.{i}` tensors) with the metadata as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .meta
            .layers
            .iter()
            .zip(&self.directions)
            .map(|(l, d)| (format!("layer.{l}"), d.clone()))
            .collect();
        for (name, t) in &tensors {
            pragma_model::io::ensure_finite(t, &format!("{}: vector {name}", path.display()))?;
        }
        let mut meta = HashMap::new();
        meta.insert(
            "pragma_steering".to_string(),
            serde_json::to_string(&self.meta).unwrap_or_default(),
        );
        pragma_model::io::save_safetensors(path, &tensors, meta)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<SteeringVector> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
            Error::Input(format!("{}: not a safetensors file: {e}", path.display()))
        })?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("pragma_steering").cloned())
            .ok_or_else(|| {
                Error::Input(format!(
                    "{}: no pragma steering metadata (expected a file from `pragma steer train`)",
                    path.display()
                ))
            })?;
        let meta: VectorMeta = serde_json::from_str(&meta_json)
            .map_err(|e| Error::Input(format!("{}: bad steering metadata: {e}", path.display())))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let directions = meta
            .layers
            .iter()
            .map(|l| {
                tensors.get(&format!("layer.{l}")).cloned().ok_or_else(|| {
                    Error::Input(format!("{}: missing tensor layer.{l}", path.display()))
                })
            })
            .collect::<Result<_>>()?;
        Ok(SteeringVector { meta, directions })
    }

    /// Hooks that apply this vector: `op` at each layer (optionally only `layers`),
    /// scaled by `scale`, at `positions`. Checks the model's width and layer count.
    pub fn hooks(
        &self,
        model: &Model,
        op: Operator,
        scale: f32,
        layers: Option<&[usize]>,
        positions: Positions,
    ) -> Result<Hooks> {
        if !scale.is_finite() {
            return Err(Error::Input(format!(
                "scale must be a finite number, found {scale}"
            )));
        }
        let cfg = model.cfg();
        if self.meta.d_model != cfg.d_model {
            return Err(Error::Input(format!(
                "vector was made for d_model {} ({}), this model has d_model {}",
                self.meta.d_model, self.meta.model, cfg.d_model
            )));
        }
        let mut hooks = Hooks::new();
        for (l, d) in self.meta.layers.iter().zip(&self.directions) {
            if layers.is_some_and(|ls| !ls.contains(l)) {
                continue;
            }
            let p = HookPoint::parse(&format!("blocks.{l}.{}", self.meta.site), cfg.n_layers)
                .map_err(|_| {
                    Error::Input(format!(
                        "vector layer {l} is out of range: the model has {} layers",
                        cfg.n_layers
                    ))
                })?;
            if matches!(op, Operator::Ablate | Operator::AblateThenAdd) {
                hooks.push(
                    p,
                    Action::ProjectOut {
                        direction: d.clone(),
                    },
                    positions.clone(),
                );
            }
            if matches!(op, Operator::Add | Operator::AblateThenAdd) {
                hooks.push(
                    p,
                    Action::Add {
                        vector: d.clone(),
                        scale,
                    },
                    positions.clone(),
                );
            }
        }
        if let Some(ls) = layers {
            for l in ls {
                if !self.meta.layers.contains(l) {
                    return Err(Error::Input(format!(
                        "layer {l} is not in this vector (it has layers {:?})",
                        self.meta.layers
                    )));
                }
            }
        }
        Ok(hooks)
    }
}

/// How a vector is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `x + scale * v`
    Add,
    /// Remove the component along `v`.
    Ablate,
    /// Remove the component along `v`, then add `scale * v`.
    AblateThenAdd,
}

impl Operator {
    pub fn parse(s: &str) -> Result<Operator> {
        match s {
            "add" => Ok(Operator::Add),
            "ablate" => Ok(Operator::Ablate),
            "ablate-add" | "ablate-then-add" => Ok(Operator::AblateThenAdd),
            _ => Err(Error::Input(format!(
                "operator '{s}': expected add, ablate or ablate-add"
            ))),
        }
    }
}

/// llama.cpp control vectors (`--control-vector`): a GGUF with
/// `general.architecture = controlvector` and one f32 `direction.{N}` tensor per layer.
/// llama.cpp adds `direction.N` to the output of block N (0-based), i.e. to
/// `blocks.N.hook_resid_post`; block 0's output cannot be steered (N starts at 1).
pub mod llama_cpp {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};

    /// Write `v` (a `hook_resid_post` vector) as a llama.cpp control vector.
    /// Returns the layers written (layer 0 is skipped: llama.cpp has no slot for it).
    pub fn export(v: &SteeringVector, arch: &str, path: &Path) -> Result<Vec<usize>> {
        if v.meta.site != "hook_resid_post" {
            return Err(Error::Input(format!(
                "llama.cpp control vectors steer the residual stream after each block: expected site hook_resid_post, found {}",
                v.meta.site
            )));
        }
        let mut tensors = Vec::new();
        let mut layers = Vec::new();
        for (l, d) in v.meta.layers.iter().zip(&v.directions) {
            if *l == 0 {
                continue;
            }
            tensors.push((
                format!("direction.{l}"),
                QTensor::quantize(&d.to_dtype(DType::F32)?, GgmlDType::F32)?,
            ));
            layers.push(*l);
        }
        if tensors.is_empty() {
            return Err(Error::Input(
                "no exportable layers: llama.cpp cannot steer block 0's output".into(),
            ));
        }
        let meta = [
            (
                "general.architecture",
                Value::String("controlvector".into()),
            ),
            ("controlvector.model_hint", Value::String(arch.into())),
            (
                "controlvector.layer_count",
                Value::I32(tensors.len() as i32),
            ),
        ];
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &meta_refs, &tensor_refs)?;
        pragma_model::io::write_atomic(path, &buf.into_inner())?;
        Ok(layers)
    }

    /// Read a llama.cpp control vector (from `pragma`, repeng or `llama-cvector-generator`).
    pub fn import(path: &Path) -> Result<SteeringVector> {
        let bad = |m: String| Error::Input(format!("{}: {m}", path.display()));
        let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let content = pragma_model::gguf::read_content(&mut f)
            .map_err(|e| bad(format!("not a GGUF file: {e}")))?;
        let size = f.metadata().map_err(|e| bad(e.to_string()))?.len();
        pragma_model::gguf::check_extents(&content, size, path)?;
        match content.metadata.get("general.architecture") {
            Some(Value::String(a)) if a == "controlvector" => {}
            other => {
                return Err(bad(format!(
                    "expected general.architecture = controlvector, found {other:?}"
                )))
            }
        }
        let mut layers: Vec<usize> = content
            .tensor_infos
            .keys()
            .filter_map(|n| n.strip_prefix("direction.").and_then(|i| i.parse().ok()))
            .collect();
        layers.sort_unstable();
        if layers.is_empty() {
            return Err(bad("no direction.N tensors".into()));
        }
        let mut directions = Vec::new();
        for l in &layers {
            let t = content
                .tensor(&mut f, &format!("direction.{l}"), &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
            directions.push(t.flatten_all()?);
        }
        let d_model = directions[0].dim(0)?;
        if directions.iter().any(|d| d.dim(0).ok() != Some(d_model)) {
            return Err(bad("direction tensors have different lengths".into()));
        }
        let norms = directions
            .iter()
            .map(|d| Ok(d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?))
            .collect::<Result<Vec<f32>>>()?;
        let hint = match content.metadata.get("controlvector.model_hint") {
            Some(Value::String(s)) => s.clone(),
            _ => "unknown".into(),
        };
        Ok(SteeringVector {
            meta: VectorMeta {
                model: format!("{hint} (imported from {})", path.display()),
                model_sha256: None,
                d_model,
                site: "hook_resid_post".into(),
                layers,
                method: Method::Imported,
                position: Position::Last,
                pairs_sha256: String::new(),
                n_pairs: 0,
                norms,
                pragma_version: env!("CARGO_PKG_VERSION").into(),
                // Not recorded in llama.cpp files; pragma's default.
                input: InputRule::default(),
            },
            directions,
        })
    }
}

/// A chat prompt answered without and with a steering vector: the steering playground.
#[derive(Clone, Debug, Serialize)]
pub struct SideBySide {
    pub prompt: String,
    pub unsteered: String,
    pub steered: String,
    /// The layers steered and the scale.
    pub layers: Vec<usize>,
    pub scale: f32,
}

/// Answer `prompt` (one user turn, the model's chat template, greedy, at most
/// `max_tokens`) without and with `vector` applied by `op` at `scale` on `layers` (all of
/// the vector's layers when `None`), at every position from 1 on (the attention sink at
/// position 0 is left alone, as `pragma generate --steer` does). Errors: the vector's width
/// or layers do not fit the model; a non-finite scale.
pub fn side_by_side(
    model: &Model,
    prompt: &str,
    vector: &SteeringVector,
    op: Operator,
    scale: f32,
    layers: Option<&[usize]>,
    max_tokens: usize,
) -> Result<SideBySide> {
    use pragma_model::generate::{generate, GenerateOptions, Sampling};
    let ids = model
        .tokenizer
        .build_input(
            &Prompt::chat(&[ChatMessage::new("user", prompt)]),
            vector.meta.input,
        )?
        .ids;
    let hooks = vector.hooks(model, op, scale, layers, Positions::From(1))?;
    let opts = GenerateOptions {
        max_tokens,
        sampling: Sampling::default(),
        stop_tokens: model.tokenizer.info.stop_tokens.clone(),
    };
    let answer = |h: &Hooks| -> Result<String> {
        let g = generate(
            &model.transformer,
            std::slice::from_ref(&ids),
            &opts,
            h,
            |_, _| {},
        )?;
        let mut t = g.tokens.into_iter().next().unwrap_or_default();
        if t.last().is_some_and(|x| opts.stop_tokens.contains(x)) {
            t.pop();
        }
        Ok(model.tokenizer.decode(&t)?)
    };
    Ok(SideBySide {
        prompt: prompt.to_string(),
        unsteered: answer(&Hooks::new())?,
        steered: answer(&hooks)?,
        layers: match layers {
            Some(l) => l.to_vec(),
            None => vector.meta.layers.clone(),
        },
        scale,
    })
}
