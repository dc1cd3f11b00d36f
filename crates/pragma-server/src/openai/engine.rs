//! The model's thread. Queued requests that carry the same interventions (the same
//! `pragma` field, e.g. none) are decoded together, up to `max_batch` rows, in one
//! batched forward per step; each batch's hooks are the ones its requests asked for, so
//! nothing a request sets can reach a request that did not ask for the same (hooks are
//! values passed into one call; the model holds no state between calls). Tokens stream
//! back over a channel as they are chosen; a request whose receiver is gone stops at
//! its next token. A new batch forms when the running one ends (no joining mid-decode
//! yet).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use pragma_model::generate::{generate_rows, GenerateOptions, RowEvent, RowOptions, StopReason};
use pragma_model::hooks::Hooks;
use pragma_model::Model;
use tokio::sync::mpsc::UnboundedSender;

use pragma_methods::probe::Probe;
use pragma_model::hooks::HookPoint;
use pragma_model::llama::Logits;

use super::types::{MonitorScore, TokenLogprob, TopLogprob};

/// Probes to score a request's generated tokens with, by name.
pub(crate) type Monitors = Vec<(String, Arc<Probe>, HookPoint)>;

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
    pub monitors: Monitors,
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
        /// Per-token probe scores, by probe name, when the request asked.
        monitor: Vec<(String, Vec<MonitorScore>)>,
    },
    Error(String),
}

/// Counters of the model thread, for `/v1/pragma/stats`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicUsize,
    pub batches: AtomicUsize,
    pub max_rows: AtomicUsize,
}

/// A handle on the model thread.
#[derive(Clone)]
pub(crate) struct Engine {
    tx: Arc<Mutex<mpsc::Sender<Job>>>,
    pub stats: Arc<Stats>,
}

impl Engine {
    /// Start the model thread, batching up to `max_batch` requests.
    pub fn start(model: Arc<Model>, max_batch: usize) -> Engine {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("pragma-engine".into())
            .spawn(move || {
                let mut waiting: VecDeque<Job> = VecDeque::new();
                loop {
                    if waiting.is_empty() {
                        match rx.recv() {
                            Ok(j) => waiting.push_back(j),
                            Err(_) => return,
                        }
                    }
                    while let Ok(j) = rx.try_recv() {
                        waiting.push_back(j);
                    }
                    waiting.retain(|j| !j.events.is_closed()); // clients that left
                    let Some(first) = waiting.pop_front() else {
                        continue;
                    };
                    let ctx = model.cfg().context_length;
                    // Rows are left-padded to the longest prompt: a job joins only if
                    // every row still has room for its max_tokens.
                    let fits = |b: &[Job], j: &Job| {
                        let longest = b.iter().chain([j]).map(|x| x.prompt.len()).max();
                        let most = b.iter().chain([j]).map(|x| x.opts.max_tokens).max();
                        longest.unwrap_or(0) + most.unwrap_or(0) <= ctx
                    };
                    let mut batch = vec![first];
                    let mut rest = VecDeque::new();
                    while let Some(j) = waiting.pop_front() {
                        if batch.len() < max_batch.max(1)
                            && j.key == batch[0].key
                            && fits(&batch, &j)
                        {
                            batch.push(j);
                        } else {
                            rest.push_back(j);
                        }
                    }
                    waiting = rest;
                    st.requests.fetch_add(batch.len(), Ordering::Relaxed);
                    st.batches.fetch_add(1, Ordering::Relaxed);
                    st.max_rows.fetch_max(batch.len(), Ordering::Relaxed);
                    run(&model, batch);
                }
            })
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

/// One request's decoding state: its text so far, what was sent, its stop strings.
struct Row {
    job: Job,
    kept: Vec<u32>,
    sent: usize,
    pending_lp: Vec<TokenLogprob>,
    hit_stop_string: bool,
    /// Its end was reported.
    done: bool,
}

impl Row {
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
        let text = model.tokenizer.decode(&self.kept).unwrap_or_default();
        if let Some(at) = job.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            if at > self.sent {
                let _ = job.events.send(Event::Delta {
                    text: text[self.sent..at].to_string(),
                    logprobs: std::mem::take(&mut self.pending_lp),
                });
            }
            self.hit_stop_string = true;
            return false;
        }
        // Hold back a tail that could begin a stop string, and an incomplete character
        // (decoded as U+FFFD).
        let mut upto = text.trim_end_matches('\u{FFFD}').len();
        let longest = job.stop.iter().map(String::len).max().unwrap_or(0);
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
    fn finish(&mut self, model: &Model, hooks: &Hooks, tokens: &[u32], why: StopReason) {
        if self.done {
            return;
        }
        self.done = true;
        let n_tokens = tokens.len();
        let monitor = match score_monitors(model, hooks, &self.job, tokens) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.job.events.send(Event::Error(e));
                return;
            }
        };
        if !self.hit_stop_string {
            let text = model.tokenizer.decode(&self.kept).unwrap_or_default();
            if text.len() > self.sent || !self.pending_lp.is_empty() {
                let _ = self.job.events.send(Event::Delta {
                    text: text.get(self.sent..).unwrap_or_default().to_string(),
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
            monitor,
        });
    }
}

/// Score every generated token with the job's probes: one forward over the prompt and
/// the completion under the request's hooks, capturing each probe's hook. Scores run
/// from position 1 when it is a BOS (the probe never saw the sink), as in
/// `pragma generate --monitor`; the generated positions are returned.
fn score_monitors(
    model: &Model,
    hooks: &Hooks,
    job: &Job,
    tokens: &[u32],
) -> Result<Vec<(String, Vec<MonitorScore>)>, String> {
    if job.monitors.is_empty() || tokens.is_empty() || job.events.is_closed() {
        return Ok(job
            .monitors
            .iter()
            .map(|(n, _, _)| (n.clone(), Vec::new()))
            .collect());
    }
    let mut ids = job.prompt.clone();
    ids.extend(tokens);
    let mut h = hooks.clone();
    for (_, _, p) in &job.monitors {
        h.capture(*p);
    }
    // The prompt, then the completion, as decoding saw them: positions such as
    // `generated` count from the prompt's end.
    let dev = model.device();
    let mut kv = pragma_model::llama::KvCache::new(model.cfg().n_layers, vec![0]);
    let mut cache = pragma_model::hooks::Cache::new(vec![0]);
    for part in [&job.prompt[..], tokens] {
        let t = candle_core::Tensor::new(part, dev)
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| e.to_string())?;
        model
            .transformer
            .forward_step(&t, &mut kv, &h, Logits::None, &mut cache)
            .map_err(|e| e.to_string())?;
    }
    let skip = pragma_methods::steering::sink_len(model, &ids);
    let n_prompt = job.prompt.len();
    let mut out = Vec::new();
    for (name, probe, point) in &job.monitors {
        let acts = cache.get_row(*point, 0).map_err(|e| e.to_string())?; // [t, d]
        let t = acts.dim(0).map_err(|e| e.to_string())?;
        let rows = acts.narrow(0, skip, t - skip).map_err(|e| e.to_string())?;
        let scores = probe.score_rows(&rows).map_err(|e| e.to_string())?;
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
        out.push((name.clone(), per_token));
    }
    Ok(out)
}

/// Decode a batch of jobs with equal hooks together; a panic becomes an error for the
/// batch, and the model thread goes on.
fn run(model: &Model, jobs: Vec<Job>) {
    let senders: Vec<UnboundedSender<Event>> = jobs.iter().map(|j| j.events.clone()).collect();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_batch(model, jobs)));
    if r.is_err() {
        for s in senders {
            let _ = s.send(Event::Error("internal error while decoding".into()));
        }
    }
}

fn run_batch(model: &Model, jobs: Vec<Job>) {
    let prompts: Vec<Vec<u32>> = jobs.iter().map(|j| j.prompt.clone()).collect();
    let opts: Vec<RowOptions> = jobs
        .iter()
        .map(|j| RowOptions {
            max_tokens: j.opts.max_tokens,
            sampling: j.opts.sampling.clone(),
            item: 0,
        })
        .collect();
    let hooks = jobs[0].hooks.clone();
    let stop_tokens = jobs[0].opts.stop_tokens.clone();
    let mut rows: Vec<Row> = jobs
        .into_iter()
        .map(|job| Row {
            job,
            kept: Vec::new(),
            sent: 0,
            pending_lp: Vec::new(),
            hit_stop_string: false,
            done: false,
        })
        .collect();
    let result = generate_rows(
        &model.transformer,
        &prompts,
        &opts,
        &stop_tokens,
        &hooks,
        |r, e| match e {
            RowEvent::Token(tok, logits) => rows[r].on_token(model, tok, logits),
            RowEvent::End(why, tokens) => {
                // Each row's answer ends as soon as the row does.
                rows[r].finish(model, &hooks, tokens, why);
                true
            }
        },
    );
    match result {
        Ok(ends) => {
            for (row, (tokens, why)) in rows.iter_mut().zip(ends) {
                row.finish(model, &hooks, &tokens, why);
            }
        }
        Err(e) => {
            for row in rows {
                let _ = row.job.events.send(Event::Error(e.to_string()));
            }
        }
    }
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
