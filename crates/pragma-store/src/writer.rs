//! `pragma cache`: run a model over a corpus and write hook activations to shards.
//!
//! Resumable by construction: batches are made of whole documents, shards close at
//! batch boundaries, each shard is written to a temporary name and renamed, and the
//! manifest is rewritten (atomically) after each shard. A rerun after any interruption
//! skips the documents of the listed shards and re-forms the same batches, so the
//! finished store is byte-identical to an uninterrupted run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::DType;
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::Model;
use sha2::{Digest, Sha256};

use crate::corpus::{Doc, DocReader, Format};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::manifest::*;

/// What to cache and how.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub data: PathBuf,
    pub format: Format,
    pub hooks: Vec<HookPoint>,
    pub out: PathBuf,
    pub ctx: usize,
    pub batch: usize,
    pub dtype: DType,
    /// How documents become token ids (BOS, control tokens in text); recorded in the
    /// manifest's settings.
    pub input: InputRule,
    pub long_docs: LongDocs,
    /// Stop at the first document boundary at or past this many tokens.
    pub max_tokens: Option<u64>,
    /// Documents of the corpus skipped before caching starts (e.g. to cache a held-out
    /// part after the documents another store used). Document ids count from the first
    /// cached document.
    pub skip_docs: u64,
    /// A shard closes at the first document boundary at or past this many tokens;
    /// `None` picks ~128 MiB per shard.
    pub shard_tokens: Option<usize>,
    /// Return (incomplete, resumable) after writing this many shards in this run:
    /// a time-boxed run, and the state a kill leaves right after a shard.
    pub stop_after_shards: Option<usize>,
    /// Run the forwards and captures but write nothing (measures the cost of writing).
    pub dry_run: bool,
    /// Write only part `index` of `count` of the store (a sharded job: see
    /// [`crate::parts`]); `None` writes the whole store.
    pub part: Option<crate::parts::Part>,
}

/// Progress callbacks (the CLI draws a bar; tests ignore them).
pub trait Progress {
    fn start(&mut self, _total_docs: u64, _resumed_docs: u64, _resumed_tokens: u64) {}
    fn batch(&mut self, _docs_done: u64, _tokens_done: u64) {}
}

impl Progress for () {}

pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(Error::Corpus(format!(
            "dtype '{s}': expected f32, f16 or bf16"
        ))),
    }
}

/// One shard being filled.
struct ShardBuf {
    acts: Vec<Vec<u8>>, // per hook, row-major bytes
    doc: Vec<u32>,
    seq: Vec<u32>,
    pos: Vec<u32>,
    token: Vec<u32>,
    first_doc: u64,
    n_docs: u64,
}

impl ShardBuf {
    fn new(n_hooks: usize, first_doc: u64) -> Self {
        Self {
            acts: vec![Vec::new(); n_hooks],
            doc: vec![],
            seq: vec![],
            pos: vec![],
            token: vec![],
            first_doc,
            n_docs: 0,
        }
    }
    fn n_tokens(&self) -> usize {
        self.token.len()
    }
}

/// Hash a file (or a folder's safetensors files in order) for provenance.
pub fn model_sha256(model: &Model) -> Result<String> {
    let p = &model.info.path;
    if p.is_file() {
        return Ok(pragma_model::fetch::sha256_file(p)?);
    }
    let mut h = Sha256::new();
    for f in pragma_model::hf::safetensors_files(p)? {
        h.update(pragma_model::fetch::sha256_file(&f)?.as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Documents -> token sequences, with BOS and long-document handling. Ids come from
/// [`Tokenizer::build_input`](pragma_model::Tokenizer::build_input) exactly as every
/// other command builds them (a conversation ending in a user turn gets the assistant
/// header, as probes, steering and generation give it); a split document's later
/// windows start with the BOS too when the rule adds one.
fn sequences(model: &Model, doc: &Doc, opts: &CacheOptions) -> Result<(Vec<Vec<u32>>, bool)> {
    let prompt = match doc {
        Doc::Text(t) => Prompt::Text(t),
        Doc::Chat(m) => Prompt::chat(m),
    };
    let input = model.tokenizer.build_input(&prompt, opts.input)?;
    let (lead, body) = match input.ids.split_first() {
        Some((&b, rest)) if input.starts_with_bos => (Some(b), rest),
        _ => (None, &input.ids[..]),
    };
    if body.is_empty() {
        return Ok((vec![], false));
    }
    let room = opts.ctx - usize::from(lead.is_some());
    let window = |k: usize, chunk: &[u32]| -> Vec<u32> {
        let lead = if k == 0 || opts.input.bos { lead } else { None };
        lead.into_iter().chain(chunk.iter().copied()).collect()
    };
    if body.len() <= room {
        return Ok((vec![window(0, body)], false));
    }
    Ok(match opts.long_docs {
        LongDocs::Truncate => (vec![window(0, &body[..room])], true),
        LongDocs::Split => (
            body.chunks(room)
                .enumerate()
                .map(|(k, c)| window(k, c))
                .collect(),
            true,
        ),
    })
}

/// Bytes of one token's activation for all hooks.
fn bytes_per_token(hooks: &[HookEntry], dtype: DType) -> usize {
    hooks
        .iter()
        .map(|h| h.shape.iter().product::<usize>())
        .sum::<usize>()
        * dtype.size_in_bytes()
}

fn hook_shape(model: &Model, p: HookPoint) -> Result<Vec<usize>> {
    p.per_token_shape(model.cfg()).ok_or_else(|| {
        Error::Corpus(format!(
            "{p}: attention scores and patterns have no fixed per-token size and cannot be cached; use `pragma trace`"
        ))
    })
}

/// Run the cache job. Returns the final manifest.
pub fn cache(model: &Model, opts: &CacheOptions, progress: &mut dyn Progress) -> Result<Manifest> {
    if opts.shard_tokens == Some(0) {
        return Err(Error::Corpus(
            "expected --shard-tokens >= 1, found 0".into(),
        ));
    }
    if opts.ctx < 2 || opts.batch == 0 {
        return Err(Error::Corpus(format!(
            "expected --ctx >= 2 and --batch >= 1, found ctx {} and batch {}",
            opts.ctx, opts.batch
        )));
    }
    if opts.ctx > model.cfg().context_length {
        return Err(Error::Corpus(format!(
            "--ctx {} exceeds the model's context length {}",
            opts.ctx,
            model.cfg().context_length
        )));
    }
    // First pass over the corpus: checksum and document count (streamed).
    let (data_sha, n_docs) = {
        let mut n = 0u64;
        for d in DocReader::open(&opts.data, opts.format)? {
            d?;
            n += 1;
        }
        if opts.skip_docs >= n && n > 0 {
            return Err(Error::Corpus(format!(
                "--skip-docs {}: {} has only {n} documents",
                opts.skip_docs,
                opts.data.display()
            )));
        }
        (
            pragma_model::fetch::sha256_file(&opts.data)?,
            n - opts.skip_docs,
        )
    };
    if n_docs == 0 {
        return Err(Error::Corpus(format!(
            "{}: no documents found (expected text separated by blank lines, one per line with --lines, or JSONL with \"text\"/\"messages\")",
            opts.data.display()
        )));
    }
    let hooks: Vec<HookEntry> = opts
        .hooks
        .iter()
        .map(|&p| {
            Ok(HookEntry {
                name: p.to_string(),
                shape: hook_shape(model, p)?,
            })
        })
        .collect::<Result<_>>()?;
    let bos = if opts.input.bos {
        model.tokenizer.info.bos
    } else {
        None
    };
    let shard_tokens = opts.shard_tokens.unwrap_or_else(|| {
        ((128usize << 20) / bytes_per_token(&hooks, opts.dtype).max(1)).max(opts.ctx)
    });
    let settings = Settings {
        ctx: opts.ctx,
        batch: opts.batch,
        bos,
        parse_special: opts.input.parse_special,
        long_docs: opts.long_docs,
        max_tokens: opts.max_tokens,
        skip_docs: opts.skip_docs,
        shard_tokens,
        dtype: dtype_name(opts.dtype).into(),
    };
    let cfg = model.cfg();
    let fresh = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        pragma_version: env!("CARGO_PKG_VERSION").into(),
        model: ModelId {
            spec: model.info.spec.clone(),
            name: model.info.name.clone(),
            sha256: model_sha256(model)?,
            arch: cfg.arch.name().into(),
            n_layers: cfg.n_layers,
            d_model: cfg.d_model,
            special_tokens: {
                let mut v: Vec<u32> = model
                    .tokenizer
                    .special_tokens()
                    .iter()
                    .map(|(_, id)| *id)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            },
        },
        hooks,
        settings,
        dataset: Dataset {
            path: opts.data.display().to_string(),
            sha256: data_sha,
            format: opts.format,
            n_docs,
        },
        token_tables: vec!["doc".into(), "seq".into(), "pos".into(), "token".into()],
        shards: vec![],
        n_tokens: 0,
        n_docs_done: 0,
        n_seqs: 0,
        truncated_docs: 0,
        split_docs: 0,
        empty_docs: 0,
        complete: false,
        part: None,
    };

    let loc = Location::parse(&opts.out.to_string_lossy())?;
    if opts.dry_run {
        return run(
            model,
            opts,
            &loc,
            fresh,
            n_docs,
            shard_tokens,
            progress,
            None,
        );
    }
    if let Some(part) = opts.part {
        let man = crate::parts::start_part(model, opts, &loc, &fresh, part, n_docs, shard_tokens)?;
        if man.complete {
            return Ok(man);
        }
        return run(model, opts, &loc, man, n_docs, shard_tokens, progress, None);
    }
    if let Some(dir) = loc.local_dir() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        clean_temporaries(dir)?;
    }
    let man = match Manifest::read_at(&loc, MANIFEST)? {
        Some(old) => {
            check_same_job(&PathBuf::from(loc.url()), &old, &fresh)?;
            verify_shards_at(&loc, &old, true)?;
            old
        }
        None => {
            let not_empty = match loc.local_dir() {
                Some(dir) => std::fs::read_dir(dir)
                    .map_err(|e| Error::io(dir, e))?
                    .next()
                    .is_some(),
                None => !loc.list("")?.is_empty(),
            };
            if not_empty && loc.get(crate::parts::PLAN)?.is_some() {
                return Err(Error::Store {
                    path: PathBuf::from(loc.url()),
                    reason: "this folder holds a sharded job (parts/plan.json): add --shard I/N as its parts did, or merge them with `pragma store finalize`".into(),
                });
            }
            if not_empty {
                return Err(Error::Store {
                    path: PathBuf::from(loc.url()),
                    reason: "folder is not empty and has no manifest.json: expected an empty or new folder".into(),
                });
            }
            fresh.write_at(&loc, MANIFEST)?;
            fresh
        }
    };
    if man.complete {
        return Ok(man);
    }
    run(model, opts, &loc, man, n_docs, shard_tokens, progress, None)
}

/// The shard boundaries a whole-store run of `opts` would write (tokenization only, no
/// forward passes): what sharded jobs split between them.
pub(crate) fn plan_shards(
    model: &Model,
    opts: &CacheOptions,
    fresh: &Manifest,
    n_docs: u64,
    shard_tokens: usize,
) -> Result<Vec<crate::parts::PlanShard>> {
    let mut plan = Vec::new();
    let loc = Location::Local(PathBuf::new());
    run(
        model,
        opts,
        &loc,
        fresh.clone(),
        n_docs,
        shard_tokens,
        &mut (),
        Some(&mut plan),
    )?;
    Ok(plan)
}

/// The caching loop, from wherever the manifest says the job stands.
/// With `plan`, no forward runs and nothing is written: each shard's boundaries are
/// pushed to `plan` instead. In a part's run (`man.part`), shards are named by their
/// index in the whole store and the run ends after the part's last shard.
#[allow(clippy::too_many_arguments)]
fn run(
    model: &Model,
    opts: &CacheOptions,
    loc: &Location,
    mut man: Manifest,
    n_docs: u64,
    shard_tokens: usize,
    progress: &mut dyn Progress,
    mut plan: Option<&mut Vec<crate::parts::PlanShard>>,
) -> Result<Manifest> {
    let planning = plan.is_some();
    let mut capture = Hooks::new();
    for &p in &opts.hooks {
        capture.capture(p);
    }
    progress.start(n_docs, man.n_docs_done, man.n_tokens);
    let mut docs = Tokenized {
        docs: Box::new(
            DocReader::open(&opts.data, opts.format)?
                .skip((opts.skip_docs + man.n_docs_done) as usize),
        ),
        ready: std::collections::VecDeque::new(),
        model,
        opts,
    };
    let mut doc_idx = man.n_docs_done;
    let mut shard = ShardBuf::new(opts.hooks.len(), doc_idx);
    let mut shard_first_seq = man.n_seqs;
    let mut exhausted = false;
    let mut written = 0usize;
    let window_docs = opts.batch * WINDOW_BATCHES;
    while !exhausted {
        // A window of whole documents, run in length-sorted batches (little padding),
        // stored back in corpus order.
        let mut window: Vec<(u32, Vec<u32>)> = Vec::new(); // (doc, ids)
        let mut docs_in_window = 0u64;
        let mut window_tokens = 0usize;
        // A window also closes at the first document boundary where the shard reaches
        // --shard-tokens or the run reaches --max-tokens, so shards (and so resumable
        // work) come at the granularity asked for.
        while docs_in_window < window_docs as u64
            && (docs_in_window == 0
                || (shard.n_tokens() + window_tokens < shard_tokens
                    && opts.max_tokens.is_none_or(|m| {
                        man.n_tokens + ((shard.n_tokens() + window_tokens) as u64) < m
                    })))
        {
            let Some(next) = docs.next() else {
                exhausted = true;
                break;
            };
            let (chunks, long) = next?;
            if chunks.is_empty() {
                man.empty_docs += 1;
            }
            if long {
                match opts.long_docs {
                    LongDocs::Truncate => man.truncated_docs += 1,
                    LongDocs::Split => man.split_docs += 1,
                }
            }
            window_tokens += chunks.iter().map(Vec::len).sum::<usize>();
            window.extend(chunks.into_iter().map(|c| (doc_idx as u32, c)));
            doc_idx += 1;
            docs_in_window += 1;
        }
        let mut order: Vec<usize> = (0..window.len()).collect();
        order.sort_by_key(|&i| window[i].1.len());
        let mut rows: Vec<Option<Vec<Vec<u8>>>> = vec![None; window.len()];
        // Length-sorted groups of at most `batch * ctx` padded tokens: short documents
        // go many to a forward pass, so the matmuls stay large.
        let budget = opts.batch * opts.ctx;
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &i in &order {
            let len = window[i].1.len();
            match groups.last_mut() {
                Some(g) if (g.len() + 1) * len <= budget => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        for group in groups.iter().filter(|_| !planning) {
            let ids: Vec<Vec<u32>> = group.iter().map(|&i| window[i].1.clone()).collect();
            let acts = run_batch(model, &capture, &opts.hooks, opts.dtype, &ids, opts.dry_run)?;
            for (&i, a) in group.iter().zip(acts) {
                rows[i] = Some(a);
            }
        }
        if opts.dry_run {
            man.n_tokens += window_tokens as u64;
        } else {
            for (k, ((doc, ids), acts)) in window.iter().zip(rows).enumerate() {
                for (h, a) in acts.unwrap_or_default().into_iter().enumerate() {
                    shard.acts[h].extend_from_slice(&a);
                }
                for (pos, &tok) in ids.iter().enumerate() {
                    shard.doc.push(*doc);
                    shard.seq.push((man.n_seqs + k as u64) as u32);
                    shard.pos.push(pos as u32);
                    shard.token.push(tok);
                }
            }
        }
        man.n_seqs += window.len() as u64;
        shard.n_docs += docs_in_window;
        let total = man.n_tokens + shard.n_tokens() as u64;
        if opts.max_tokens.is_some_and(|m| total >= m) {
            exhausted = true;
        }
        if !opts.dry_run && (shard.n_tokens() >= shard_tokens || (exhausted && shard.n_docs > 0)) {
            if let Some(plan) = plan.as_deref_mut() {
                plan.push(crate::parts::PlanShard {
                    first_token: man.n_tokens,
                    n_tokens: shard.n_tokens() as u64,
                    first_doc: shard.first_doc,
                    n_docs: shard.n_docs,
                    first_seq: shard_first_seq,
                });
                man.n_tokens += shard.n_tokens() as u64;
                man.n_docs_done += shard.n_docs;
            } else {
                flush(loc, &mut man, &mut shard)?;
                let part_done = man
                    .part
                    .is_some_and(|p| p.first_shard + man.shards.len() >= p.end_shard);
                if part_done {
                    man.complete = true;
                }
                man.write_at(loc, &crate::parts::manifest_name(man.part))?;
                if part_done {
                    return Ok(man);
                }
                written += 1;
            }
            shard = ShardBuf::new(opts.hooks.len(), man.n_docs_done);
            shard_first_seq = man.n_seqs;
            if !exhausted && opts.stop_after_shards.is_some_and(|n| written >= n) {
                return Ok(man);
            }
        }
        progress.batch(doc_idx, man.n_tokens + shard.n_tokens() as u64);
    }
    if opts.dry_run || planning {
        return Ok(man);
    }
    man.complete = true;
    man.write_at(loc, &crate::parts::manifest_name(man.part))?;
    Ok(man)
}

/// Documents in corpus order, tokenized into sequences [`TOKENIZE_AHEAD`] at a time on
/// all cores (the plan of a sharded job is tokenization only, so this is its speed).
struct Tokenized<'a> {
    docs: Box<dyn Iterator<Item = Result<(usize, Doc)>> + 'a>,
    ready: std::collections::VecDeque<Result<(Vec<Vec<u32>>, bool)>>,
    model: &'a Model,
    opts: &'a CacheOptions,
}

/// Documents tokenized per parallel batch.
const TOKENIZE_AHEAD: usize = 2048;

impl Iterator for Tokenized<'_> {
    type Item = Result<(Vec<Vec<u32>>, bool)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() {
            use rayon::prelude::*;
            let batch: Vec<Result<(usize, Doc)>> =
                self.docs.by_ref().take(TOKENIZE_AHEAD).collect();
            let (model, opts) = (self.model, self.opts);
            let out: Vec<Result<(Vec<Vec<u32>>, bool)>> = batch
                .into_par_iter()
                .map(|d| d.and_then(|(_, doc)| sequences(model, &doc, opts)))
                .collect();
            self.ready.extend(out);
        }
        self.ready.pop_front()
    }
}

/// Documents per window, in batches: sorting a window by length keeps padding low.
const WINDOW_BATCHES: usize = 16;

/// Forward one batch; return each sequence's activations (padding dropped) as
/// bytes per hook: `[seq][hook]`. A dry run returns nothing.
fn run_batch(
    model: &Model,
    capture: &Hooks,
    points: &[HookPoint],
    dtype: DType,
    ids: &[Vec<u32>],
    dry_run: bool,
) -> Result<Vec<Vec<Vec<u8>>>> {
    let batch = Batch::new(ids, model.device())?;
    let (_, cache) = model.transformer.forward(&batch, capture, Logits::None)?;
    if dry_run {
        return Ok(vec![Vec::new(); ids.len()]);
    }
    let t = batch.ids.dim(1)?;
    let mut out = vec![Vec::with_capacity(points.len()); ids.len()];
    for &p in points {
        // Refuses values the storage dtype cannot hold (f16 overflows past 65504).
        let x =
            pragma_model::io::cast_checked(&cache.get(p)?, dtype, &p.to_string())?.contiguous()?; // [b, t, ...]
        let w = x.elem_count() / (ids.len() * t) * dtype.size_in_bytes();
        let bytes = pragma_model::io::tensor_le_bytes(&x)?;
        for (b, pad) in batch.pad.iter().enumerate() {
            out[b].push(bytes[(b * t + pad) * w..(b + 1) * t * w].to_vec());
        }
    }
    Ok(out)
}

fn st_dtype(name: &str) -> safetensors::Dtype {
    match name {
        "f16" => safetensors::Dtype::F16,
        "bf16" => safetensors::Dtype::BF16,
        _ => safetensors::Dtype::F32,
    }
}

/// Write the shard to a temporary name, rename it, and record it in the manifest.
fn flush(loc: &Location, man: &mut Manifest, shard: &mut ShardBuf) -> Result<()> {
    let n = shard.n_tokens();
    let index = man.part.map_or(0, |p| p.first_shard) + man.shards.len();
    let file = format!("shard-{index:05}.safetensors");
    let u32_bytes = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let tables = [
        ("doc", u32_bytes(&shard.doc)),
        ("seq", u32_bytes(&shard.seq)),
        ("pos", u32_bytes(&shard.pos)),
        ("token", u32_bytes(&shard.token)),
    ];
    let dt = st_dtype(&man.settings.dtype);
    let mut views = Vec::new();
    for (h, entry) in man.hooks.iter().enumerate() {
        let mut shape = vec![n];
        shape.extend(&entry.shape);
        views.push((
            entry.name.clone(),
            safetensors::tensor::TensorView::new(dt, shape, &shard.acts[h])
                .map_err(|e| Error::Corpus(format!("shard tensor {}: {e}", entry.name)))?,
        ));
    }
    for (name, bytes) in &tables {
        views.push((
            name.to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![n], bytes)
                .map_err(|e| Error::Corpus(format!("shard table {name}: {e}")))?,
        ));
    }
    // One metadata key: safetensors writes several in hash order, which would make
    // the bytes differ between runs.
    let mut meta = HashMap::new();
    meta.insert(
        "pragma".to_string(),
        serde_json::json!({"first_token": man.n_tokens, "first_doc": shard.first_doc}).to_string(),
    );
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Corpus(format!("serialize shard: {e}")))?;
    let sha = format!("{:x}", Sha256::digest(&data));
    loc.put(&file, &data)?;
    man.shards.push(ShardEntry {
        file,
        n_tokens: n as u64,
        first_token: man.n_tokens,
        first_doc: shard.first_doc,
        n_docs: shard.n_docs,
        sha256: sha,
        bytes: data.len() as u64,
    });
    man.n_tokens += n as u64;
    man.n_docs_done += shard.n_docs;
    Ok(())
}

/// Remove temporaries left by an interrupted write.
fn clean_temporaries(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

pub(crate) fn check_same_job(dir: &Path, old: &Manifest, new: &Manifest) -> Result<()> {
    let mismatch = |what: &str, found: String, expected: String| {
        Err(Error::Mismatch {
            path: dir.to_path_buf(),
            what: what.into(),
            expected,
            found,
        })
    };
    if old.model.sha256 != new.model.sha256 {
        return mismatch(
            "model sha256",
            old.model.sha256.clone(),
            new.model.sha256.clone(),
        );
    }
    if old.hooks != new.hooks {
        let names = |m: &Manifest| {
            m.hooks
                .iter()
                .map(|h| h.name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        return mismatch("hooks", names(old), names(new));
    }
    if old.settings != new.settings {
        return mismatch(
            "settings",
            format!("{:?}", old.settings),
            format!("{:?}", new.settings),
        );
    }
    if old.dataset.sha256 != new.dataset.sha256 {
        return mismatch(
            "dataset sha256",
            old.dataset.sha256.clone(),
            new.dataset.sha256.clone(),
        );
    }
    Ok(())
}

/// Check every listed shard's size, and with `sha` its checksum (for a remote store this
/// downloads each shard; without `sha`, only sizes are asked for).
pub fn verify_shards_at(loc: &Location, man: &Manifest, sha: bool) -> Result<()> {
    if let Some(dir) = loc.local_dir() {
        return if sha {
            verify_shards(dir, man)
        } else {
            for s in &man.shards {
                let found = loc.size(&s.file)?;
                if found != Some(s.bytes) {
                    return Err(Error::CorruptShard {
                        file: dir.join(&s.file),
                        reason: match found {
                            None => "missing (listed in the manifest)".into(),
                            Some(b) => format!("expected {} bytes, found {b}", s.bytes),
                        },
                    });
                }
            }
            Ok(())
        };
    }
    for s in &man.shards {
        let path = loc.display_path(&s.file);
        if sha {
            let data = loc.get(&s.file)?.ok_or_else(|| Error::CorruptShard {
                file: path.clone(),
                reason: "missing (listed in the manifest)".into(),
            })?;
            crate::location::check_sha(&path, &data, &s.sha256, s.bytes)?;
        } else {
            match loc.size(&s.file)? {
                Some(b) if b == s.bytes => {}
                found => {
                    return Err(Error::CorruptShard {
                        file: path,
                        reason: match found {
                            None => "missing (listed in the manifest)".into(),
                            Some(b) => format!("expected {} bytes, found {b}", s.bytes),
                        },
                    })
                }
            }
        }
    }
    Ok(())
}

/// Check every listed shard's size and checksum.
pub fn verify_shards(dir: &Path, man: &Manifest) -> Result<()> {
    for s in &man.shards {
        let path = dir.join(&s.file);
        let meta = std::fs::metadata(&path).map_err(|_| Error::CorruptShard {
            file: path.clone(),
            reason: "missing (listed in manifest.json)".into(),
        })?;
        if meta.len() != s.bytes {
            return Err(Error::CorruptShard {
                file: path,
                reason: format!("expected {} bytes, found {}", s.bytes, meta.len()),
            });
        }
        let sha = pragma_model::fetch::sha256_file(&path)?;
        if sha != s.sha256 {
            return Err(Error::CorruptShard {
                file: path,
                reason: format!("sha256 {sha} does not match the manifest's {}", s.sha256),
            });
        }
    }
    Ok(())
}
