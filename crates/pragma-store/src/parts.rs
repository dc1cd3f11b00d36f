//! Sharded caching jobs: one store written by N independent processes (array jobs of
//! Slurm, Kubernetes Indexed Jobs, Ray tasks), then merged.
//!
//! A whole-store run closes a shard at a document boundary once it holds `shard_tokens`
//! tokens, and those boundaries depend only on token counts. So each part first computes
//! them (tokenization only; the first part to finish writes them to `parts/plan.json`,
//! later parts read that file) and then runs the whole-store loop over its contiguous
//! range of shards, starting from exactly the state a single machine would have there:
//! the same windows, the same batches, the same bytes, under the same shard names. Its
//! progress is its own manifest, `parts/part-IIIII-of-NNNNN.json`, written after each
//! shard as a whole store's is, so a killed part resumes and a finished one is a no-op.
//! [`finalize`] checks the parts against the plan and each other and writes
//! `manifest.json`; it is idempotent and safe to run twice or concurrently (it writes the
//! same bytes).

use std::path::PathBuf;

use pragma_model::Model;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::location::Location;
use crate::manifest::{Manifest, PartInfo, ShardEntry, MANIFEST};
use crate::writer::CacheOptions;

pub const PLAN: &str = "parts/plan.json";

/// Part `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl Part {
    /// `I/N`, or `auto/N` with I from the environment ([`array_index`]).
    pub fn parse(spec: &str) -> Result<Part> {
        let bad = |m: String| Error::Invalid(format!("--shard '{spec}': {m}"));
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| bad("expected I/N (e.g. 3/16) or auto/N".into()))?;
        let count: usize = n
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| bad(format!("expected a part count N >= 1, found '{n}'")))?;
        let index = array_index(i, count).map_err(|e| bad(e.to_string()))?;
        Ok(Part { index, count })
    }

    /// Shards `a..b` of `n` for this part: contiguous, sizes differing by at most one.
    pub fn range(&self, n: usize) -> (usize, usize) {
        (
            self.index * n / self.count,
            (self.index + 1) * n / self.count,
        )
    }
}

/// An array job's index: a number, or `auto` for the first of `SLURM_ARRAY_TASK_ID`
/// (Slurm array jobs), `JOB_COMPLETION_INDEX` (Kubernetes Indexed Jobs) and
/// `PRAGMA_SHARD_INDEX` that is set; it must be below `count`.
pub fn array_index(spec: &str, count: usize) -> Result<usize> {
    let index: usize = if spec.trim() == "auto" {
        let vars = [
            "SLURM_ARRAY_TASK_ID",
            "JOB_COMPLETION_INDEX",
            "PRAGMA_SHARD_INDEX",
        ];
        let (var, v) = vars
            .iter()
            .find_map(|v| std::env::var(v).ok().map(|x| (*v, x)))
            .ok_or_else(|| {
                Error::Corpus(format!("index auto: none of {} is set", vars.join(", ")))
            })?;
        v.trim()
            .parse()
            .map_err(|_| Error::Invalid(format!("index auto: {var}='{v}' is not a number")))?
    } else {
        spec.trim().parse().map_err(|_| {
            Error::Invalid(format!(
                "expected an index (0, 1, ...) or auto, found '{spec}'"
            ))
        })?
    };
    if index >= count {
        return Err(Error::Invalid(format!(
            "index {index} is out of range 0..{count} (array tasks count from 0: --array=0-{})",
            count.saturating_sub(1)
        )));
    }
    Ok(index)
}

/// One shard a whole-store run would write: where it starts and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanShard {
    pub first_token: u64,
    pub n_tokens: u64,
    pub first_doc: u64,
    pub n_docs: u64,
    /// The sequence counter at the shard's first row.
    pub first_seq: u64,
}

/// `parts/plan.json`: the job it plans (model, hooks, settings, dataset) and its shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub job: Manifest,
    pub shards: Vec<PlanShard>,
}

/// The manifest file a run writes: `manifest.json`, or a part's.
pub fn manifest_name(part: Option<PartInfo>) -> String {
    match part {
        None => MANIFEST.to_string(),
        Some(p) => part_name(p.index, p.count),
    }
}

fn part_name(index: usize, count: usize) -> String {
    format!("parts/part-{index:05}-of-{count:05}.json")
}

/// The settings fields that differ, as `name: a vs b`.
fn settings_diff(a: &crate::manifest::Settings, b: &crate::manifest::Settings) -> String {
    let (a, b) = (
        serde_json::to_value(a).unwrap_or_default(),
        serde_json::to_value(b).unwrap_or_default(),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "settings differ".into();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} vs {}", b.get(k).cloned().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn same_job(a: &Manifest, b: &Manifest) -> Option<String> {
    if a.model.sha256 != b.model.sha256 {
        return Some(format!(
            "model sha256 {} vs {}",
            a.model.sha256, b.model.sha256
        ));
    }
    if a.hooks != b.hooks {
        return Some("hooks differ".into());
    }
    if a.settings != b.settings {
        return Some(format!(
            "settings {}",
            settings_diff(&a.settings, &b.settings)
        ));
    }
    if a.dataset.sha256 != b.dataset.sha256 {
        return Some(format!(
            "dataset sha256 {} vs {}",
            a.dataset.sha256, b.dataset.sha256
        ));
    }
    None
}

/// The job's plan: read from `parts/plan.json`, or computed and written there.
fn plan(
    model: &Model,
    opts: &CacheOptions,
    loc: &Location,
    fresh: &Manifest,
    n_docs: u64,
    shard_tokens: usize,
) -> Result<Plan> {
    if let Some(bytes) = loc.get(PLAN)? {
        let p: Plan = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
            path: loc.display_path(PLAN),
            reason: format!("not a valid plan: {e}"),
        })?;
        if let Some(why) = same_job(&p.job, fresh) {
            return Err(Error::Store {
                path: loc.display_path(PLAN),
                reason: format!(
                    "planned for another job ({why}); every part must use the same model, hooks, settings and data; use another --out"
                ),
            });
        }
        return Ok(p);
    }
    let shards = crate::writer::plan_shards(model, opts, fresh, n_docs, shard_tokens)?;
    let p = Plan {
        job: fresh.clone(),
        shards,
    };
    // Every part computes the same plan; concurrent writers write the same bytes.
    let text = serde_json::to_string_pretty(&p).unwrap_or_default();
    loc.put(PLAN, text.as_bytes())?;
    Ok(p)
}

/// The manifest a part's run starts from: its own (resuming, checked against this job
/// and its shards' sizes) or a new one at the plan's state where its shards begin.
pub(crate) fn start_part(
    model: &Model,
    opts: &CacheOptions,
    loc: &Location,
    fresh: &Manifest,
    part: Part,
    n_docs: u64,
    shard_tokens: usize,
) -> Result<Manifest> {
    let others: Vec<usize> = loc
        .list("parts")?
        .iter()
        .filter_map(|n| n.strip_suffix(".json")?.rsplit_once("-of-")?.1.parse().ok())
        .filter(|&n: &usize| n != part.count)
        .collect();
    if let Some(n) = others.first() {
        return Err(Error::Invalid(format!(
            "{} holds a job split into {n} parts; use --shard I/{n} (every part of a job uses the same N), or another --out",
            loc.url()
        )));
    }
    let plan = plan(model, opts, loc, fresh, n_docs, shard_tokens)?;
    let (a, b) = part.range(plan.shards.len());
    let name = part_name(part.index, part.count);
    if let Some(old) = Manifest::read_at(loc, &name)? {
        if let Some(why) = same_job(&old, fresh) {
            return Err(Error::Mismatch {
                path: loc.display_path(&name),
                what: "job".into(),
                expected: "this run's model, hooks, settings and dataset".into(),
                found: why,
            });
        }
        crate::writer::verify_shards_at(loc, &old, false)?;
        return Ok(old);
    }
    let mut m = fresh.clone();
    let start = plan.shards.get(a);
    let end = plan.shards.last();
    m.n_tokens = start.map_or_else(
        || end.map_or(0, |s| s.first_token + s.n_tokens),
        |s| s.first_token,
    );
    m.n_docs_done = start.map_or_else(
        || end.map_or(0, |s| s.first_doc + s.n_docs),
        |s| s.first_doc,
    );
    m.n_seqs = start.map_or(0, |s| s.first_seq);
    m.part = Some(PartInfo {
        index: part.index,
        count: part.count,
        first_shard: a,
        end_shard: b,
    });
    m.complete = a == b;
    m.write_at(loc, &name)?;
    Ok(m)
}

/// One part's state, as `pragma store info` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PartStatus {
    pub index: usize,
    pub count: usize,
    /// Shards written so far, of `shards_planned`.
    pub shards_done: usize,
    pub shards_planned: usize,
    pub tokens_done: u64,
    pub complete: bool,
    /// No part manifest yet (the array task has not started).
    pub missing: bool,
}

/// Progress of a sharded job: the plan and every part's state (for `count` parts: the
/// count the part manifests found use).
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    pub url: String,
    pub shards_planned: usize,
    pub tokens_planned: u64,
    pub parts: Vec<PartStatus>,
    pub finalized: bool,
}

impl JobStatus {
    /// Indexes of the parts not complete.
    pub fn unfinished(&self) -> Vec<usize> {
        self.parts
            .iter()
            .filter(|p| !p.complete)
            .map(|p| p.index)
            .collect()
    }
}

/// The part manifests of the job at `loc` (all must agree on N).
fn read_parts(loc: &Location) -> Result<(Plan, usize, Vec<Option<Manifest>>)> {
    let plan: Plan = match loc.get(PLAN)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Store {
            path: loc.display_path(PLAN),
            reason: format!("not a valid plan: {e}"),
        })?,
        None => {
            return Err(Error::Store {
                path: PathBuf::from(loc.url()),
                reason: format!(
                    "no {PLAN}: not a sharded job (start one with `pragma cache ... --shard I/N`)"
                ),
            })
        }
    };
    let names = loc.list("parts")?;
    let mut counts: Vec<usize> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".json")?.rsplit_once("-of-")?.1.parse().ok())
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let count = match counts[..] {
        [n] => n,
        [] => {
            return Err(Error::Store {
                path: PathBuf::from(loc.url()),
                reason: "no part manifests under parts/ yet: no part has started".into(),
            })
        }
        _ => {
            return Err(Error::Store {
                path: PathBuf::from(loc.url()),
                reason: format!(
                    "parts of jobs split {counts:?} ways are mixed under parts/; keep one split (delete the others' part files)"
                ),
            })
        }
    };
    let mut parts = Vec::with_capacity(count);
    for i in 0..count {
        parts.push(Manifest::read_at(loc, &part_name(i, count))?);
    }
    Ok((plan, count, parts))
}

/// Where a sharded job stands.
pub fn status(loc: &Location) -> Result<JobStatus> {
    let (plan, count, parts) = read_parts(loc)?;
    let finalized = Manifest::read_at(loc, MANIFEST)?.is_some_and(|m| m.complete);
    let parts = parts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = Part { index: i, count }.range(plan.shards.len());
            PartStatus {
                index: i,
                count,
                shards_done: m.as_ref().map_or(0, |m| m.shards.len()),
                shards_planned: b - a,
                tokens_done: m
                    .as_ref()
                    .map_or(0, |m| m.shards.iter().map(|s| s.n_tokens).sum()),
                complete: m.as_ref().is_some_and(|m| m.complete),
                missing: m.is_none(),
            }
        })
        .collect();
    Ok(JobStatus {
        url: loc.url(),
        shards_planned: plan.shards.len(),
        tokens_planned: plan.shards.iter().map(|s| s.n_tokens).sum(),
        parts,
        finalized,
    })
}

/// What [`finalize`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Finalized {
    pub parts: usize,
    pub shards: usize,
    pub n_tokens: u64,
    /// `manifest.json` was already there, equal to the merge: nothing written.
    pub already: bool,
    pub seconds: f64,
}

/// Merge a sharded job's parts into `manifest.json`. Refuses when a part is missing or
/// incomplete (naming the indexes to rerun), when parts come from another model, hooks,
/// settings or dataset than the plan, when their shards do not cover the plan exactly,
/// or when a shard's size differs from its part's record (`verify`: also its sha256,
/// which reads every shard). Idempotent: an existing equal `manifest.json` is left alone.
pub fn finalize(loc: &Location, verify: bool) -> Result<Finalized> {
    let t0 = std::time::Instant::now();
    let (plan, count, parts) = read_parts(loc)?;
    let bad = |reason: String| Error::Store {
        path: PathBuf::from(loc.url()),
        reason,
    };
    let unfinished: Vec<String> = parts
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.as_ref().is_some_and(|m| m.complete))
        .map(|(i, m)| {
            format!(
                "{i} ({})",
                if m.is_some() {
                    "incomplete"
                } else {
                    "not started"
                }
            )
        })
        .collect();
    if !unfinished.is_empty() {
        return Err(bad(format!(
            "{} of {count} parts are not complete: {}; rerun those array indexes, then finalize again",
            unfinished.len(),
            unfinished.join(", ")
        )));
    }
    let parts: Vec<Manifest> = parts.into_iter().flatten().collect();
    let mut shards: Vec<ShardEntry> = Vec::new();
    for (i, m) in parts.iter().enumerate() {
        if let Some(why) = same_job(m, &plan.job) {
            return Err(bad(format!(
                "part {i} was made by another job than the plan's: {why}"
            )));
        }
        shards.extend(m.shards.iter().cloned());
    }
    if shards.len() != plan.shards.len() {
        return Err(bad(format!(
            "the parts hold {} shards, the plan has {}",
            shards.len(),
            plan.shards.len()
        )));
    }
    for (k, (s, p)) in shards.iter().zip(&plan.shards).enumerate() {
        let want = format!("shard-{k:05}.safetensors");
        if s.file != want
            || s.first_token != p.first_token
            || s.n_tokens != p.n_tokens
            || s.first_doc != p.first_doc
            || s.n_docs != p.n_docs
        {
            return Err(bad(format!(
                "shard {k} ({}) does not match the plan ({want}: tokens {}+{}, docs {}+{})",
                s.file, p.first_token, p.n_tokens, p.first_doc, p.n_docs
            )));
        }
    }
    let mut m = plan.job.clone();
    m.shards = shards;
    m.n_tokens = m.shards.iter().map(|s| s.n_tokens).sum();
    m.n_docs_done = m.shards.iter().map(|s| s.n_docs).sum();
    m.n_seqs = parts.iter().map(|p| p.n_seqs).max().unwrap_or(0);
    m.truncated_docs = parts.iter().map(|p| p.truncated_docs).sum();
    m.split_docs = parts.iter().map(|p| p.split_docs).sum();
    m.empty_docs = parts.iter().map(|p| p.empty_docs).sum();
    m.complete = true;
    m.part = None;
    crate::writer::verify_shards_at(loc, &m, verify)?;
    let done = |already| Finalized {
        parts: count,
        shards: m.shards.len(),
        n_tokens: m.n_tokens,
        already,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if let Some(old) = Manifest::read_at(loc, MANIFEST)? {
        if old == m {
            return Ok(done(true));
        }
        return Err(bad(format!(
            "{MANIFEST} exists and differs from the merge of the parts ({} shards, {} tokens there); \
             it belongs to another job: finalize into an empty location",
            old.shards.len(),
            old.n_tokens
        )));
    }
    m.write_at(loc, MANIFEST)?;
    Ok(done(false))
}
