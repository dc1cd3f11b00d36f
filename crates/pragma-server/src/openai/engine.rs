//! The model's thread: continuous batching on [`Decoder`]. Between decode steps, queued
//! requests join the running batch (first come, first served, up to `max_batch` rows
//! and while every row keeps room in the context), each group of requests with the same
//! interventions (the same `pragma` field) prefilled together under its own hooks. Every
//! step is one batched forward over all live rows, steered and unsteered alike, each
//! row under its own group's hooks only ([`pragma_model::hooks::Hooks::for_rows`]): what
//! a request sets cannot reach another (hooks are values passed into one call; the
//! model holds no state between calls). Tokens stream back over a channel as they are
//! chosen; a request whose receiver is gone stops at its next token and frees its row.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use pragma_model::decode::Decoder;
use pragma_model::generate::{GenerateOptions, RowEvent, RowOptions, StopReason};
use pragma_model::hooks::Hooks;
use pragma_model::Model;
use tokio::sync::mpsc::UnboundedSender;

use pragma_methods::probe::Probe;
use pragma_methods::sae::Sae;
use pragma_model::hooks::HookPoint;
use pragma_model::llama::Logits;

use super::types::{
    Capture, LatentActivation, MonitorScore, Readouts, TokenLatents, TokenLogprob, TopLogprob,
};

/// What to read from a request's own forward at its generated tokens.
#[derive(Clone, Default)]
pub(crate) struct Reads {
    /// Probes to score with, by name, at their hooks.
    pub monitors: Vec<(String, Arc<Probe>, HookPoint)>,
    /// Hooks whose activations to return.
    pub captures: Vec<HookPoint>,
    /// SAEs (by name, at their hooks) whose `top_k` latents to return.
    pub saes: Vec<(String, Arc<Sae>, HookPoint, usize)>,
}

impl Reads {
    fn is_empty(&self) -> bool {
        self.monitors.is_empty() && self.captures.is_empty() && self.saes.is_empty()
    }
}

/// One request for the model thread.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub hooks: Hooks,
    /// Requests with equal keys have equal hooks and may share a batch.
    pub key: String,
    /// Stop strings: generation ends before the first of them, which is not returned.
    pub stop: Vec<String>,
    /// Log-probabilities: `Some(k)` with the top `k` alternatives per token.
    pub logprobs: Option<usize>,
    pub reads: Reads,
    pub events: UnboundedSender<Event>,
}

/// What the model thread sends back for a job.
#[derive(Debug)]
pub(crate) enum Event {
    /// New text (held back while it could be the start of a stop string or an
    /// incomplete UTF-8 character), with its tokens' log-probabilities when asked.
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// The end: OpenAI's `finish_reason` and the number of generated tokens.
    Done {
        finish_reason: &'static str,
        completion_tokens: usize,
        /// Per-token probe scores, activations and SAE latents the request asked for.
        readouts: Readouts,
    },
    Error(String),
}

/// Counters of the model thread, for `/v1/pragma/stats`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicUsize,
    /// Prefills: groups of requests that joined together.
    pub batches: AtomicUsize,
    /// Batched decode steps.
    pub steps: AtomicUsize,
    /// Requests that joined while other rows were mid-decode.
    pub joined_mid_decode: AtomicUsize,
    /// The most rows, and the most distinct interventions, in one decode step.
    pub max_rows: AtomicUsize,
    pub max_groups: AtomicUsize,
}

/// A handle on the model thread.
#[derive(Clone)]
pub(crate) struct Engine {
    tx: Arc<Mutex<mpsc::Sender<Job>>>,
    pub stats: Arc<Stats>,
}

impl Engine {
    /// Start the model thread, decoding up to `max_batch` requests at once.
    pub fn start(model: Arc<Model>, max_batch: usize) -> Engine {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("pragma-engine".into())
            .spawn(move || serve_jobs(&model, max_batch.max(1), &rx, &st))
            .expect("spawn the model thread");
        Engine {
            tx: Arc::new(Mutex::new(tx)),
            stats,
        }
    }

    /// Queue a job; false when the model thread is gone.
    pub fn submit(&self, job: Job) -> bool {
        self.tx
            .lock()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false)
    }
}

/// The model thread's loop: admit queued jobs between steps, step, repeat; block when
/// there is nothing to do. Returns when every [`Engine`] handle is gone.
fn serve_jobs(model: &Model, max_batch: usize, rx: &mpsc::Receiver<Job>, st: &Stats) {
    let mut dec = Decoder::new(&model.transformer, model.tokenizer.info.stop_tokens.clone());
    let mut rows: HashMap<u64, Row> = HashMap::new();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut next_id = 0u64;
    loop {
        if dec.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            waiting.push_back(j);
        }
        waiting.retain(|j| !j.events.is_closed()); // clients that left
                                                   // First come, first served: admit from the front while rows and context allow.
        let mut admitted: Vec<Job> = Vec::new();
        let (mut lens, mut budgets) = (Vec::new(), Vec::new());
        while dec.len() + admitted.len() < max_batch {
            let Some(j) = waiting.front() else { break };
            lens.push(j.prompt.len());
            budgets.push(j.opts.max_tokens);
            if !dec.has_room(&lens, &budgets) {
                break;
            }
            admitted.extend(waiting.pop_front());
        }
        if !admitted.is_empty() {
            let mid = !dec.is_empty();
            st.requests.fetch_add(admitted.len(), Ordering::Relaxed);
            if mid {
                st.joined_mid_decode
                    .fetch_add(admitted.len(), Ordering::Relaxed);
            }
            join_groups(&mut dec, &mut rows, &mut next_id, admitted, st);
        }
        if dec.is_empty() {
            continue;
        }
        st.steps.fetch_add(1, Ordering::Relaxed);
        st.max_rows.fetch_max(dec.len(), Ordering::Relaxed);
        st.max_groups.fetch_max(dec.groups(), Ordering::Relaxed);
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dec.step(|id, e| {
                let Some(row) = rows.get_mut(&id) else {
                    return false;
                };
                match e {
                    RowEvent::Token(tok, logits) => row.on_token(model, tok, logits),
                    RowEvent::End(why, tokens) => {
                        // Each row's answer ends as soon as the row does.
                        if let Some(mut row) = rows.remove(&id) {
                            row.finish(model, tokens, why);
                        }
                        true
                    }
                }
            })
        }));
        let failed = match stepped {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("internal error while decoding".to_string()),
        };
        if let Some(e) = failed {
            dec.clear();
            for (_, row) in rows.drain() {
                let _ = row.job.events.send(Event::Error(e.clone()));
            }
        }
    }
}

/// Prefill admitted jobs, one group per distinct `pragma` field, and add them to the
/// running batch; a group that fails gets its error, the rest go on.
fn join_groups(
    dec: &mut Decoder,
    rows: &mut HashMap<u64, Row>,
    next_id: &mut u64,
    jobs: Vec<Job>,
    st: &Stats,
) {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for j in jobs {
        match groups.iter_mut().find(|g| g[0].key == j.key) {
            Some(g) => g.push(j),
            None => groups.push(vec![j]),
        }
    }
    for group in groups {
        st.batches.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<u64> = (0..group.len() as u64).map(|i| *next_id + i).collect();
        *next_id += group.len() as u64;
        let prompts: Vec<Vec<u32>> = group.iter().map(|j| j.prompt.clone()).collect();
        let opts: Vec<RowOptions> = group
            .iter()
            .map(|j| RowOptions {
                max_tokens: j.opts.max_tokens,
                sampling: j.opts.sampling.clone(),
                item: 0,
            })
            .collect();
        let (key, hooks) = (group[0].key.clone(), group[0].hooks.clone());
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dec.join(&key, &hooks, &ids, &prompts, &opts)
        }));
        let failed = match joined {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("internal error while prefilling".to_string()),
        };
        for (id, job) in ids.into_iter().zip(group) {
            match &failed {
                Some(e) => {
                    let _ = job.events.send(Event::Error(e.clone()));
                }
                None => {
                    rows.insert(id, Row::new(job));
                }
            }
        }
    }
}

/// One request's decoding state: its text so far (detokenized incrementally), what was
/// sent, its stop strings.
struct Row {
    job: Job,
    kept: Vec<u32>,
    /// The text of `kept[..read]`.
    text: String,
    /// Incremental detokenization (as vLLM's `detokenize_incrementally`): new text is
    /// `decode(kept[prefix..])` minus `decode(kept[prefix..read])`, so a token is decoded
    /// a bounded number of times and a character split across tokens waits until whole.
    prefix: usize,
    read: usize,
    sent: usize,
    pending_lp: Vec<TokenLogprob>,
    hit_stop_string: bool,
    /// Its end was reported.
    done: bool,
}

impl Row {
    fn new(job: Job) -> Row {
        Row {
            job,
            kept: Vec::new(),
            text: String::new(),
            prefix: 0,
            read: 0,
            sent: 0,
            pending_lp: Vec::new(),
            hit_stop_string: false,
            done: false,
        }
    }

    /// Extend `text` with the tokens decoded since the last call. With `flush`, an
    /// incomplete character at the end is taken as it is (U+FFFD).
    fn detokenize(&mut self, model: &Model, flush: bool) {
        let tk = &model.tokenizer;
        let prev = tk
            .decode(&self.kept[self.prefix..self.read])
            .unwrap_or_default();
        let full = tk.decode(&self.kept[self.prefix..]).unwrap_or_default();
        if full.ends_with('\u{FFFD}') && !flush {
            return; // a character still being spelled out in bytes
        }
        match full.strip_prefix(prev.as_str()) {
            Some(new) => self.text.push_str(new),
            // Decoding a suffix changed its start: decode everything once.
            None => self.text = tk.decode(&self.kept).unwrap_or_default(),
        }
        // The next window starts at a clean character boundary; decoders that treat a
        // sequence's first token specially (SentencePiece drops its leading space) do so
        // in both decodes, which cancels.
        self.prefix = self.read;
        self.read = self.kept.len();
    }

    /// A new token; whether to go on.
    fn on_token(&mut self, model: &Model, tok: u32, logits: &[f32]) -> bool {
        let job = &self.job;
        if job.events.is_closed() {
            return false;
        }
        if job.opts.stop_tokens.contains(&tok) {
            return true; // the decoder ends the row on it
        }
        if let Some(k) = job.logprobs {
            self.pending_lp.push(logprob_of(model, tok, logits, k));
        }
        self.kept.push(tok);
        self.detokenize(model, false);
        let job = &self.job;
        let text = &self.text;
        let longest = job.stop.iter().map(String::len).max().unwrap_or(0);
        // A stop string can only begin within `longest` bytes before the unsent text.
        let mut from = self.sent.saturating_sub(longest);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(at) = job
            .stop
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()).map(|i| i + from))
            .min()
        {
            if at > self.sent {
                let _ = job.events.send(Event::Delta {
                    text: text[self.sent..at].to_string(),
                    logprobs: std::mem::take(&mut self.pending_lp),
                });
            }
            self.hit_stop_string = true;
            return false;
        }
        // Hold back a tail that could begin a stop string.
        let mut upto = text.len();
        if longest > 1 {
            let floor = upto.saturating_sub(longest - 1);
            if let Some(start) = (floor..upto)
                .filter(|&i| text.is_char_boundary(i))
                .find(|&i| job.stop.iter().any(|s| s.starts_with(&text[i..upto])))
            {
                upto = start;
            }
        }
        if upto > self.sent {
            let _ = job.events.send(Event::Delta {
                text: text[self.sent..upto].to_string(),
                logprobs: std::mem::take(&mut self.pending_lp),
            });
            self.sent = upto;
        }
        true
    }

    /// Flush what was held back and report the end, with the monitors' scores.
    fn finish(&mut self, model: &Model, tokens: &[u32], why: StopReason) {
        if self.done {
            return;
        }
        self.done = true;
        let n_tokens = tokens.len();
        let readouts = match read_activations(model, &self.job, tokens) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.job.events.send(Event::Error(e));
                return;
            }
        };
        if !self.hit_stop_string {
            self.detokenize(model, true);
            if self.text.len() > self.sent || !self.pending_lp.is_empty() {
                let _ = self.job.events.send(Event::Delta {
                    text: self.text.get(self.sent..).unwrap_or_default().to_string(),
                    logprobs: std::mem::take(&mut self.pending_lp),
                });
            }
        }
        let finish_reason = match why {
            StopReason::StopToken | StopReason::Caller => "stop",
            StopReason::MaxTokens | StopReason::Context => "length",
        };
        let _ = self.job.events.send(Event::Done {
            finish_reason,
            completion_tokens: n_tokens,
            readouts,
        });
    }
}
/// Read what the job asked for at every generated token: one forward over the prompt and
/// the completion under the request's hooks, capturing the hooks needed, then probe
/// scores, activations and SAE latents at the generated positions (where each token is
/// the input, as `pragma generate --monitor`). Probe scores skip a BOS (the probe never
/// saw the sink).
fn read_activations(model: &Model, job: &Job, tokens: &[u32]) -> Result<Readouts, String> {
    let reads = &job.reads;
    let mut out = Readouts::default();
    if reads.is_empty() || tokens.is_empty() || job.events.is_closed() {
        for (n, _, _) in &reads.monitors {
            out.monitor_scores.insert(n.clone(), Vec::new());
        }
        return Ok(out);
    }
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut ids = job.prompt.clone();
    ids.extend(tokens);
    let mut h = job.hooks.clone();
    let points = reads
        .monitors
        .iter()
        .map(|m| m.2)
        .chain(reads.captures.iter().copied())
        .chain(reads.saes.iter().map(|s| s.2));
    for p in points {
        h.capture(p);
    }
    // The prompt, then the completion, as decoding saw them: positions such as
    // `generated` count from the prompt's end.
    let dev = model.device();
    let mut kv = pragma_model::llama::KvCache::new(model.cfg().n_layers, vec![0]);
    let mut cache = pragma_model::hooks::Cache::new(vec![0]);
    for part in [&job.prompt[..], tokens] {
        let t = candle_core::Tensor::new(part, dev)
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| err(&e))?;
        model
            .transformer
            .forward_step(&t, &mut kv, &h, Logits::None, &mut cache)
            .map_err(|e| err(&e))?;
    }
    let n_prompt = job.prompt.len();
    let names: Vec<String> = ids[n_prompt..]
        .iter()
        .map(|&t| model.tokenizer.token_str(t))
        .collect();
    // `[n_generated, d]` at a hook.
    let generated = |point: HookPoint| -> Result<candle_core::Tensor, String> {
        let acts = cache.get_row(point, 0).map_err(|e| err(&e))?;
        acts.narrow(0, n_prompt, tokens.len()).map_err(|e| err(&e))
    };
    let skip = pragma_methods::steering::sink_len(model, &ids);
    for (name, probe, point) in &reads.monitors {
        let acts = cache.get_row(*point, 0).map_err(|e| err(&e))?; // [t, d]
        let t = acts.dim(0).map_err(|e| err(&e))?;
        let rows = acts.narrow(0, skip, t - skip).map_err(|e| err(&e))?;
        let scores = probe.score_rows(&rows).map_err(|e| err(&e))?;
        let per_token = scores
            .iter()
            .enumerate()
            .filter(|(k, _)| k + skip >= n_prompt)
            .map(|(k, &score)| MonitorScore {
                token: model.tokenizer.token_str(ids[k + skip]),
                score,
                probability: probe.probability(score),
            })
            .collect();
        out.monitor_scores.insert(name.clone(), per_token);
    }
    for point in &reads.captures {
        let values = generated(*point)?
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(|e| err(&e))?;
        out.captures.insert(
            point.to_string(),
            Capture {
                tokens: names.clone(),
                values,
            },
        );
    }
    for (name, sae, point, k) in &reads.saes {
        let x = generated(*point)?
            .to_dtype(candle_core::DType::F32)
            .map_err(|e| err(&e))?;
        let z: Vec<Vec<f32>> = sae
            .encode(&x)
            .and_then(|z| Ok(z.to_vec2::<f32>()?))
            .map_err(|e| err(&e))?;
        let per_token = z
            .iter()
            .zip(&names)
            .map(|(row, tok)| {
                let mut idx: Vec<usize> = (0..row.len()).filter(|&i| row[i] > 0.0).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                idx.truncate(*k);
                TokenLatents {
                    token: tok.clone(),
                    latents: idx
                        .into_iter()
                        .map(|i| LatentActivation {
                            index: i,
                            activation: row[i],
                        })
                        .collect(),
                }
            })
            .collect();
        out.sae_latents.insert(name.clone(), per_token);
    }
    Ok(out)
}

/// The sampled token's log-probability under the model (raw logits, before temperature)
/// and the `k` most likely tokens'.
fn logprob_of(model: &Model, tok: u32, logits: &[f32], k: usize) -> TokenLogprob {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    let entry = |id: u32| {
        let s = model.tokenizer.token_str(id);
        (s.clone(), logits[id as usize] - lse, s.into_bytes())
    };
    let (token, logprob, bytes) = entry(tok);
    // Chat asks for `top_logprobs: []` when it wants none.
    let top = Some({
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
            logits[b].total_cmp(&logits[a])
        });
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.into_iter()
            .map(|i| {
                let (token, logprob, bytes) = entry(i as u32);
                TopLogprob {
                    token,
                    logprob,
                    bytes,
                }
            })
            .collect()
    });
    TokenLogprob {
        token,
        logprob,
        bytes,
        top_logprobs: top,
    }
}
