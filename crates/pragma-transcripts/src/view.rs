//! What front ends show of one transcript: its run, messages, token ids and spans, the
//! scorers that scored it, and per-token overlays (a probe's or vector's values, or one SAE
//! latent's activations).

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::Transcript;
use crate::score::{read_f32_blob, read_sparse_blob};
use crate::spans::MessageSpan;

#[derive(Clone, Debug, Serialize)]
pub struct ScorerInfo {
    pub name: String,
    pub kind: String,
}

/// A transcript in a collection's list.
#[derive(Clone, Debug, Serialize)]
pub struct TranscriptRow {
    pub id: i64,
    pub run: String,
    pub sample_id: Option<String>,
    /// The first user message, cut to 160 characters.
    pub first_user: String,
    pub messages: i64,
}

/// One transcript and its context.
#[derive(Clone, Debug, Serialize)]
pub struct TranscriptView {
    pub id: i64,
    pub collection: String,
    pub run: String,
    pub sample_id: Option<String>,
    pub epoch: Option<i64>,
    pub metadata: Map<String, Value>,
    pub scores: Map<String, Value>,
    /// Index of this transcript in its run.
    pub index: i64,
    pub transcript: Transcript,
    /// Token ids the model read (after `score`), and each message's span in them.
    pub tokens: Option<Vec<u32>>,
    pub spans: Vec<MessageSpan>,
    /// Scorers that scored this transcript.
    pub scorers: Vec<ScorerInfo>,
}

fn obj(s: String) -> Map<String, Value> {
    match serde_json::from_str(&s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Db {
    /// A transcript by its id. Errors: no such transcript.
    pub fn transcript_view(&self, id: i64) -> Result<TranscriptView> {
        let c = self.conn();
        let head = c
            .query_row(
                "SELECT col.name, r.id, r.key, r.sample_id, r.epoch, r.metadata, r.scores, t.idx, t.name, t.metadata \
                 FROM transcripts t JOIN runs r ON t.run_id = r.id JOIN collections col ON r.collection_id = col.id \
                 WHERE t.id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, String>(9)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| Error::Input(format!("no transcript {id}")))?;
        let (collection, rid, key, sample_id, epoch, meta, scores, index, tname, tmeta) = head;
        let run = self
            .runs(&collection, &[])?
            .into_iter()
            .find(|(i, _)| *i == rid)
            .map(|(_, r)| r)
            .ok_or_else(|| Error::Input(format!("no transcript {id}")))?;
        let mut transcript = run
            .transcripts
            .into_iter()
            .nth(index as usize)
            .unwrap_or_default();
        transcript.name = tname;
        transcript.metadata = obj(tmeta);
        let tok: Option<(Vec<u8>, String)> = c
            .query_row(
                "SELECT ids, spans FROM transcript_tokens WHERE transcript_id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (tokens, spans) = match tok {
            Some((b, s)) => (
                Some(
                    b.chunks_exact(4)
                        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                        .collect(),
                ),
                serde_json::from_str(&s).unwrap_or_default(),
            ),
            None => (None, Vec::new()),
        };
        let mut st = c.prepare(
            "SELECT s.name, s.kind FROM token_scores ts JOIN scorers s ON s.id = ts.scorer_id \
             WHERE ts.transcript_id = ?1 ORDER BY s.id",
        )?;
        let scorers = st
            .query_map(params![id], |r| {
                Ok(ScorerInfo {
                    name: r.get(0)?,
                    kind: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(TranscriptView {
            id,
            collection,
            run: key,
            sample_id,
            epoch,
            metadata: obj(meta),
            scores: obj(scores),
            index,
            transcript,
            tokens,
            spans,
            scorers,
        })
    }

    /// Per-token values of `scorer` on a transcript: a probe's or vector's values, or for
    /// an SAE the activation of `latent` (0 where it is not among a token's top latents).
    /// Errors: the scorer did not score it; an SAE scorer without a latent.
    pub fn overlay(&self, transcript: i64, scorer: &str, latent: Option<u32>) -> Result<Vec<f32>> {
        type Blobs = (Option<Vec<u8>>, Option<Vec<u8>>);
        let row: Option<Blobs> = self
            .conn()
            .query_row(
                "SELECT ts.dense, ts.sparse FROM token_scores ts JOIN scorers s ON s.id = ts.scorer_id \
                 WHERE ts.transcript_id = ?1 AND s.name = ?2",
                params![transcript, scorer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Err(Error::Input(format!(
                "scorer '{scorer}' has not scored transcript {transcript}"
            ))),
            Some((Some(d), _)) => Ok(read_f32_blob(&d)),
            Some((None, Some(s))) => {
                let j = latent.ok_or_else(|| {
                    Error::Input(format!("scorer '{scorer}' is an SAE: choose a latent"))
                })?;
                Ok(read_sparse_blob(&s)
                    .into_iter()
                    .map(|r| r.iter().find(|x| x.0 == j).map_or(0.0, |x| x.1))
                    .collect())
            }
            Some((None, None)) => Ok(Vec::new()),
        }
    }

    /// The SAE scorer's strongest latents in a transcript (max over tokens), best first.
    pub fn top_latents(&self, transcript: i64, scorer: &str, k: usize) -> Result<Vec<(u32, f32)>> {
        let pooled: Option<Option<Vec<u8>>> = self
            .conn()
            .query_row(
                "SELECT ts.pooled FROM token_scores ts JOIN scorers s ON s.id = ts.scorer_id \
                 WHERE ts.transcript_id = ?1 AND s.name = ?2",
                params![transcript, scorer],
                |r| r.get(0),
            )
            .optional()?;
        let mut v = pooled
            .flatten()
            .map(|b| read_sparse_blob(&b).into_iter().next().unwrap_or_default())
            .unwrap_or_default();
        v.truncate(k);
        Ok(v)
    }

    /// A page of a collection's transcripts, in import order.
    pub fn transcript_list(
        &self,
        collection: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<TranscriptRow>> {
        let cid = self.collection_id_pub(collection)?;
        let mut st = self.conn().prepare(
            "SELECT t.id, r.key, r.sample_id, \
               coalesce((SELECT substr(m.content, 1, 160) FROM messages m WHERE m.transcript_id = t.id \
                         AND m.role = 'user' ORDER BY m.idx LIMIT 1), ''), \
               (SELECT count(*) FROM messages m WHERE m.transcript_id = t.id) \
             FROM transcripts t JOIN runs r ON t.run_id = r.id WHERE r.collection_id = ?1 \
             ORDER BY t.id LIMIT ?2 OFFSET ?3",
        )?;
        let v = st
            .query_map(params![cid, limit as i64, offset as i64], |r| {
                Ok(TranscriptRow {
                    id: r.get(0)?,
                    run: r.get(1)?,
                    sample_id: r.get(2)?,
                    first_user: r.get(3)?,
                    messages: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The transcript id a search hit's message belongs to.
    pub fn transcript_of_message(&self, message_id: i64) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT transcript_id FROM messages WHERE id = ?1",
            params![message_id],
            |r| r.get(0),
        )?)
    }
}

/// One place a latent fired.
#[derive(Clone, Debug, Serialize)]
pub struct LatentHit {
    pub transcript_id: i64,
    pub collection: String,
    pub run: String,
    /// Token index in the transcript's ids.
    pub token: usize,
    pub activation: f32,
    /// Token ids before, at and after the hit (decoded by front ends).
    pub before: Vec<u32>,
    pub at: u32,
    pub after: Vec<u32>,
}

/// A latent across every transcript an SAE scorer of this name scored (any collection):
/// its strongest activations with context, how often it is among a token's top latents,
/// and a histogram of its activations.
#[derive(Clone, Debug, Serialize)]
pub struct LatentPage {
    pub scorer: String,
    pub latent: u32,
    /// Tokens scored, and tokens where the latent is among the stored top latents.
    pub tokens: u64,
    pub fires: u64,
    /// Strongest first.
    pub top: Vec<LatentHit>,
    /// (bin lower edge, count) over its activations, 20 equal bins.
    pub histogram: Vec<(f32, u64)>,
}

impl Db {
    /// The page of `latent` of the SAE scorer `scorer` (see [`LatentPage`]). Errors: no
    /// SAE scorer of that name.
    pub fn latent_page(&self, scorer: &str, latent: u32, top: usize) -> Result<LatentPage> {
        let mut st = self.conn().prepare(
            "SELECT ts.transcript_id, c.name, r.key, ts.sparse, tt.ids FROM token_scores ts \
             JOIN scorers s ON s.id = ts.scorer_id JOIN transcripts t ON t.id = ts.transcript_id \
             JOIN runs r ON r.id = t.run_id JOIN collections c ON c.id = r.collection_id \
             JOIN transcript_tokens tt ON tt.transcript_id = ts.transcript_id \
             WHERE s.name = ?1 AND s.kind = 'sae'",
        )?;
        let rows = st
            .query_map(params![scorer], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Err(Error::Input(format!(
                "no transcripts scored by an SAE scorer named '{scorer}'"
            )));
        }
        let (mut tokens, mut fires) = (0u64, 0u64);
        let mut acts: Vec<f32> = Vec::new();
        let mut hits: Vec<LatentHit> = Vec::new();
        for (tid, col, run, sparse, ids) in rows {
            let ids: Vec<u32> = ids
                .chunks_exact(4)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect();
            let mut per_tok = sparse.map(|b| read_sparse_blob(&b)).unwrap_or_default();
            // One row per token id (rows past the ids would point at no token).
            per_tok.truncate(ids.len());
            tokens += per_tok.len() as u64;
            for (t, row) in per_tok.iter().enumerate() {
                if let Some(&(_, a)) = row.iter().find(|x| x.0 == latent) {
                    fires += 1;
                    acts.push(a);
                    hits.push(LatentHit {
                        transcript_id: tid,
                        collection: col.clone(),
                        run: run.clone(),
                        token: t,
                        activation: a,
                        before: ids[t.saturating_sub(12)..t.min(ids.len())].to_vec(),
                        at: ids.get(t).copied().unwrap_or(0),
                        after: ids[(t + 1).min(ids.len())..(t + 5).min(ids.len())].to_vec(),
                    });
                }
            }
            // Keep memory bounded: only the strongest hits survive between transcripts.
            if hits.len() > 4 * top.max(1) {
                hits.sort_by(|a, b| b.activation.total_cmp(&a.activation));
                hits.truncate(top.max(1));
            }
        }
        hits.sort_by(|a, b| b.activation.total_cmp(&a.activation));
        hits.truncate(top);
        let max = acts.iter().copied().fold(0f32, f32::max);
        let bins = 20usize;
        let mut histogram: Vec<(f32, u64)> = (0..bins)
            .map(|i| (max * i as f32 / bins as f32, 0))
            .collect();
        for a in &acts {
            let i = if max > 0.0 {
                ((a / max) * bins as f32).floor() as usize
            } else {
                0
            };
            histogram[i.min(bins - 1)].1 += 1;
        }
        Ok(LatentPage {
            scorer: scorer.to_string(),
            latent,
            tokens,
            fires,
            top: hits,
            histogram,
        })
    }
}
