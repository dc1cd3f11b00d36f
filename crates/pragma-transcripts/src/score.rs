//! Scoring a collection with the model's internals: one forward per transcript (under the
//! model's chat template, [`crate::spans`]), and per token a probe's score, a steering
//! vector's projection, or an SAE's top latents; pooled per message (mean and max) and per
//! transcript. Results go to the database beside the transcripts, keyed by scorer, so a
//! killed run resumes where it stopped (transcripts are committed in batches; one already
//! scored by every scorer is skipped).

use std::time::Instant;

use candle_core::{DType, Tensor};
use pragma_methods::probe::Probe;
use pragma_methods::sae::Sae;
use pragma_methods::steering::SteeringVector;
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::llama::{Batch, Logits};
use pragma_model::Model;
use rusqlite::params;
use serde::Serialize;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::spans::token_spans;

/// What a scorer reads from a transcript's tokens.
pub enum ScorerKind {
    /// A linear probe (`pragma probe train`): its per-token score (`Probe::score_rows`).
    Probe(Probe),
    /// A steering vector's direction at one layer: each token's projection on its unit
    /// direction (`h · v / |v|`).
    Vector {
        vector: SteeringVector,
        layer: usize,
    },
    /// An SAE: each token's `top_k` latents (index, activation); pooled per message and
    /// transcript by max over tokens, every latent that fires.
    Sae { sae: Sae, top_k: usize },
}

/// A named scorer.
pub struct Scorer {
    /// The name shown in outputs and the UI (`probe:NAME`, `vector:NAME@L`, `sae:NAME`).
    pub name: String,
    pub kind: ScorerKind,
}

impl Scorer {
    /// The hook the scorer reads, checked against the model.
    pub fn hook(&self, model: &Model) -> Result<HookPoint> {
        let n = model.cfg().n_layers;
        Ok(match &self.kind {
            ScorerKind::Probe(p) => p.hook_point(model)?,
            ScorerKind::Vector { vector, layer } => {
                if vector.meta.d_model != model.cfg().d_model {
                    return Err(Error::Input(format!(
                        "{}: the vector has d_model {}, the model {}",
                        self.name,
                        vector.meta.d_model,
                        model.cfg().d_model
                    )));
                }
                HookPoint::parse(&format!("blocks.{layer}.{}", vector.meta.site), n)?
            }
            ScorerKind::Sae { sae, .. } => {
                let p = sae.hook_point(n)?;
                let width: usize = p
                    .per_token_shape(model.cfg())
                    .map(|s| s.iter().product())
                    .unwrap_or(0);
                if width != sae.cfg.d_in {
                    return Err(Error::Input(format!(
                        "{}: the SAE reads d_in = {} at {}, this model's has width {width}",
                        self.name, sae.cfg.d_in, sae.cfg.hook_name
                    )));
                }
                p
            }
        })
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            ScorerKind::Probe(_) => "probe",
            ScorerKind::Vector { .. } => "vector",
            ScorerKind::Sae { .. } => "sae",
        }
    }
}

/// What `score` did.
#[derive(Clone, Debug, Serialize)]
pub struct ScoreResult {
    pub collection: String,
    pub scorers: Vec<String>,
    pub transcripts: u64,
    /// Transcripts skipped because every scorer had scored them before.
    pub skipped: u64,
    pub tokens: u64,
    /// Transcripts longer than the model's context: scored up to it, later messages not.
    pub truncated: u64,
    /// Forward passes run (fewer than transcripts when they were batched).
    pub passes: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Per-token values of one scorer over one transcript.
enum Values {
    Dense(Vec<f32>),
    /// Per token: (latent, activation), strongest first.
    Sparse(Vec<Vec<(u32, f32)>>),
}

/// Encode dense per-token values (the inverse of [`read_f32_blob`]).
pub fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Encode per-token sparse latents (the inverse of [`read_sparse_blob`]).
pub fn sparse_blob(rows: &[Vec<(u32, f32)>]) -> Vec<u8> {
    // Per token: count (u16), then (u32 latent, f32 value) pairs.
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(&(r.len() as u16).to_le_bytes());
        for (j, v) in r {
            out.extend_from_slice(&j.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Decode a dense score blob.
pub fn read_f32_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Decode a sparse latent blob: per token, (latent, activation) pairs.
pub fn read_sparse_blob(b: &[u8]) -> Vec<Vec<(u32, f32)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= b.len() {
        let n = u16::from_le_bytes([b[i], b[i + 1]]) as usize;
        i += 2;
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            if i + 8 > b.len() {
                break;
            }
            let j = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let v = f32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
            row.push((j, v));
            i += 8;
        }
        out.push(row);
    }
    out
}

/// Transcripts committed per transaction (the most a kill loses), and the window sorted by
/// length into forward passes.
const COMMIT: usize = 64;

/// How `score` runs the model.
#[derive(Clone, Debug)]
pub struct ScoreOptions {
    /// Padded tokens per forward pass: transcripts are sorted by length within a window
    /// of 64 and grouped while `count x longest <= batch_tokens` (a longer one runs
    /// alone), as the activation cache groups documents. 1 runs them one at a time.
    pub batch_tokens: usize,
}

impl Default for ScoreOptions {
    /// 1024: the cache's default pass (`--batch 8 --ctx 128`).
    fn default() -> Self {
        ScoreOptions { batch_tokens: 1024 }
    }
}

/// Score every transcript of `collection` with `scorers`. `progress(done, total)` after
/// each forward pass.
///
/// Batched passes give the same values as one transcript at a time (left padding is
/// masked; tested to 1e-4).
///
/// Errors: no such collection; a scorer for another model width or a hook the model lacks;
/// a scorer name used before on the collection with another definition or model.
pub fn score(
    db: &mut Db,
    model: &Model,
    collection: &str,
    scorers: &[Scorer],
    opts: &ScoreOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ScoreResult> {
    let t0 = Instant::now();
    if scorers.is_empty() {
        return Err(Error::Input(
            "nothing to score with: pass --probe, --vector or --sae".into(),
        ));
    }
    let hooks_of: Vec<HookPoint> = scorers
        .iter()
        .map(|s| s.hook(model))
        .collect::<Result<_>>()?;
    let model_sha = pragma_store::writer::model_sha256(model)?;
    let ids = db.scorer_ids(collection, scorers, &model_sha)?;
    let todo = db.unscored_transcripts(collection, &ids)?;
    let total = db.transcript_count(collection)?;
    let skipped = total - todo.len() as u64;
    let mut hooks = Hooks::new();
    for p in &hooks_of {
        hooks.capture(*p);
    }
    let (mut done, mut tokens, mut truncated) = (skipped, 0u64, 0u64);
    progress(done, total);
    let ctx = model.cfg().context_length;
    let mut passes = 0u64;
    for chunk in todo.chunks(COMMIT) {
        // Token ids and spans (cut at the context) of each transcript of the window.
        let mut toks = Vec::with_capacity(chunk.len());
        for (_, transcript) in chunk {
            let (ids_t, spans) = token_spans(&model.tokenizer, transcript)?;
            let n = ids_t.len().min(ctx);
            if n < ids_t.len() {
                truncated += 1;
            }
            let spans: Vec<_> = spans
                .into_iter()
                .filter(|sp| sp.start < n)
                .map(|mut sp| {
                    sp.end = sp.end.min(n);
                    sp
                })
                .collect();
            toks.push((ids_t[..n].to_vec(), spans));
        }
        let mut order: Vec<usize> = (0..chunk.len()).collect();
        order.sort_by_key(|&i| toks[i].0.len());
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &i in &order {
            let len = toks[i].0.len();
            match groups.last_mut() {
                Some(g) if (g.len() + 1) * len <= opts.batch_tokens.max(1) => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        let mut values: Vec<Option<Vec<Values>>> = (0..chunk.len()).map(|_| None).collect();
        for g in &groups {
            let seqs: Vec<Vec<u32>> = g.iter().map(|&i| toks[i].0.clone()).collect();
            let batch = Batch::new(&seqs, model.device())?;
            let (_, cache) = model.transformer.forward(&batch, &hooks, Logits::None)?;
            passes += 1;
            for (row, &i) in g.iter().enumerate() {
                let mut v = Vec::with_capacity(scorers.len());
                for (s, p) in scorers.iter().zip(&hooks_of) {
                    let acts = cache.get_row(*p, row)?.to_dtype(DType::F32)?; // [n, d]
                    v.push(scorer_values(s, &acts)?);
                }
                tokens += toks[i].0.len() as u64;
                values[i] = Some(v);
            }
            done += g.len() as u64;
            progress(done, total);
        }
        let rows: Vec<Scored> = chunk
            .iter()
            .zip(toks)
            .zip(values)
            .map(|((&(tid, _), (ids, spans)), v)| (tid, ids, spans, v.unwrap_or_default()))
            .collect();
        db.write_scores(&ids, &rows)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(ScoreResult {
        collection: collection.to_string(),
        scorers: scorers.iter().map(|s| s.name.clone()).collect(),
        transcripts: total - skipped,
        skipped,
        tokens,
        truncated,
        passes,
        seconds,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
    })
}

fn scorer_values(s: &Scorer, acts: &Tensor) -> Result<Values> {
    Ok(match &s.kind {
        ScorerKind::Probe(p) => {
            Values::Dense(p.score_rows(acts)?.into_iter().map(|x| x as f32).collect())
        }
        ScorerKind::Vector { vector, layer } => {
            let k = vector
                .meta
                .layers
                .iter()
                .position(|l| l == layer)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "{}: layer {layer} is not in the vector (layers {:?})",
                        s.name, vector.meta.layers
                    ))
                })?;
            let v = vector.directions[k].to_dtype(DType::F32)?;
            let norm = v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?.max(1e-12);
            let proj = acts.matmul(&(v / norm as f64)?.unsqueeze(1)?)?.squeeze(1)?;
            Values::Dense(proj.to_vec1()?)
        }
        ScorerKind::Sae { sae, top_k } => {
            let f: Vec<Vec<f32>> = sae.encode(acts)?.to_vec2()?;
            Values::Sparse(
                f.into_iter()
                    .map(|row| {
                        let mut nz: Vec<(u32, f32)> = row
                            .into_iter()
                            .enumerate()
                            .filter(|(_, x)| *x > 0.0)
                            .map(|(j, x)| (j as u32, x))
                            .collect();
                        nz.sort_by(|a, b| b.1.total_cmp(&a.1));
                        nz.truncate(*top_k);
                        nz
                    })
                    .collect(),
            )
        }
    })
}

/// One scored transcript, as `score` hands it to the database.
type Scored = (i64, Vec<u32>, Vec<crate::spans::MessageSpan>, Vec<Values>);

impl Db {
    /// Register (or find) the scorers of a collection; a name reused with another
    /// definition is refused.
    fn scorer_ids(
        &mut self,
        collection: &str,
        scorers: &[Scorer],
        model_sha: &str,
    ) -> Result<Vec<i64>> {
        let cid = self.collection_id_pub(collection)?;
        let mut out = Vec::new();
        for s in scorers {
            let spec = serde_json::json!({
                "kind": s.kind_name(),
                "model_sha256": model_sha,
                "definition": match &s.kind {
                    ScorerKind::Probe(p) => serde_json::json!({"hook": p.meta.hook, "w": p.w.iter().take(8).collect::<Vec<_>>(), "b": p.b}),
                    ScorerKind::Vector { vector, layer } => serde_json::json!({"layer": layer, "pairs_sha256": vector.meta.pairs_sha256, "method": format!("{:?}", vector.meta.method)}),
                    ScorerKind::Sae { sae, top_k } => serde_json::json!({"hook": sae.cfg.hook_name, "d_sae": sae.cfg.d_sae, "top_k": top_k, "b_dec": sae.b_dec.to_vec1::<f32>().map(|v| v.into_iter().take(8).collect::<Vec<_>>()).unwrap_or_default()}),
                },
            })
            .to_string();
            let found: Option<(i64, String)> = self
                .conn()
                .query_row(
                    "SELECT id, spec FROM scorers WHERE collection_id = ?1 AND name = ?2",
                    params![cid, s.name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok();
            match found {
                Some((id, old)) if old == spec => out.push(id),
                Some(_) => {
                    return Err(Error::Input(format!(
                        "scorer '{}' was used on '{collection}' with another definition (or \
                         model): give it another name",
                        s.name
                    )))
                }
                None => {
                    self.conn().execute(
                        "INSERT INTO scorers(collection_id, name, kind, spec) VALUES (?1, ?2, ?3, ?4)",
                        params![cid, s.name, s.kind_name(), spec],
                    )?;
                    out.push(self.conn().last_insert_rowid());
                }
            }
        }
        Ok(out)
    }

    /// Transcripts of a collection that some scorer in `ids` has not scored, in order.
    fn unscored_transcripts(
        &self,
        collection: &str,
        ids: &[i64],
    ) -> Result<Vec<(i64, crate::model::Transcript)>> {
        let all = self.transcripts_of(collection)?;
        let mut st = self.conn().prepare(
            "SELECT count(*) FROM token_scores WHERE transcript_id = ?1 AND scorer_id = ?2",
        )?;
        let mut out = Vec::new();
        for (tid, t) in all {
            let mut missing = false;
            for &s in ids {
                let n: i64 = st.query_row(params![tid, s], |r| r.get(0))?;
                if n == 0 {
                    missing = true;
                    break;
                }
            }
            if missing {
                out.push((tid, t));
            }
        }
        Ok(out)
    }

    fn write_scores(&mut self, scorer_ids: &[i64], rows: &[Scored]) -> Result<()> {
        let tx = self.conn_mut().transaction()?;
        {
            let mut tok = tx.prepare(
                "INSERT OR REPLACE INTO transcript_tokens(transcript_id, ids, spans) VALUES (?1, ?2, ?3)",
            )?;
            let mut ts = tx.prepare(
                "INSERT OR REPLACE INTO token_scores(transcript_id, scorer_id, dense, sparse, mean, max, pooled) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ms = tx.prepare(
                "INSERT OR REPLACE INTO message_scores(message_id, scorer_id, mean, max, latents) \
                 VALUES ((SELECT id FROM messages WHERE transcript_id = ?1 AND idx = ?2), ?3, ?4, ?5, ?6)",
            )?;
            for (tid, ids, spans, values) in rows {
                let id_bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
                tok.execute(params![
                    tid,
                    id_bytes,
                    serde_json::to_string(spans).unwrap_or_default()
                ])?;
                for (&sid, v) in scorer_ids.iter().zip(values) {
                    match v {
                        Values::Dense(x) => {
                            let (m, mx) = pool(x);
                            ts.execute(params![
                                tid,
                                sid,
                                f32_blob(x),
                                Option::<Vec<u8>>::None,
                                m,
                                mx,
                                Option::<Vec<u8>>::None
                            ])?;
                            for sp in spans {
                                let (a, b) = (sp.start.min(x.len()), sp.end.min(x.len()));
                                if a < b {
                                    let (m, mx) = pool(&x[a..b]);
                                    ms.execute(params![
                                        tid,
                                        sp.message as i64,
                                        sid,
                                        m,
                                        mx,
                                        Option::<Vec<u8>>::None
                                    ])?;
                                }
                            }
                        }
                        Values::Sparse(rowsv) => {
                            let whole = max_pool(rowsv);
                            ts.execute(params![
                                tid,
                                sid,
                                Option::<Vec<u8>>::None,
                                sparse_blob(rowsv),
                                Option::<f64>::None,
                                Option::<f64>::None,
                                sparse_blob(&[whole])
                            ])?;
                            for sp in spans {
                                let (a, b) = (sp.start.min(rowsv.len()), sp.end.min(rowsv.len()));
                                if a < b {
                                    let m = max_pool(&rowsv[a..b]);
                                    ms.execute(params![
                                        tid,
                                        sp.message as i64,
                                        sid,
                                        Option::<f64>::None,
                                        Option::<f64>::None,
                                        sparse_blob(&[m])
                                    ])?;
                                }
                            }
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn pool(x: &[f32]) -> (Option<f64>, Option<f64>) {
    if x.is_empty() {
        return (None, None);
    }
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
    let mx = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    (Some(m), Some(mx))
}

/// Max over tokens of each latent that fires, strongest first.
pub fn max_pool(rows: &[Vec<(u32, f32)>]) -> Vec<(u32, f32)> {
    let mut m: std::collections::HashMap<u32, f32> = Default::default();
    for r in rows {
        for &(j, v) in r {
            let e = m.entry(j).or_insert(0.0);
            *e = e.max(v);
        }
    }
    let mut v: Vec<(u32, f32)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}
