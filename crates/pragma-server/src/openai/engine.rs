//! The model's thread: requests are queued and decoded one at a time, each with its own
//! hooks, so nothing a request sets can reach another (hooks are values passed into one
//! call; the model holds no state between calls). Tokens stream back over a channel as
//! they are chosen; a request whose receiver is gone stops at the next token.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use pragma_model::generate::{generate_one, GenerateOptions, StopReason};
use pragma_model::hooks::Hooks;
use pragma_model::Model;
use tokio::sync::mpsc::UnboundedSender;

use super::types::{TokenLogprob, TopLogprob};

/// One request for the model thread.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub hooks: Hooks,
    /// Stop strings: generation ends before the first of them, which is not returned.
    pub stop: Vec<String>,
    /// Log-probabilities: `Some(k)` with the top `k` alternatives per token.
    pub logprobs: Option<usize>,
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
    },
    Error(String),
}

/// A handle on the model thread.
#[derive(Clone)]
pub(crate) struct Engine {
    tx: Arc<Mutex<mpsc::Sender<Job>>>,
}

impl Engine {
    /// Start the model thread.
    pub fn start(model: Arc<Model>) -> Engine {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pragma-engine".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    if job.events.is_closed() {
                        continue; // the client left while queued
                    }
                    run(&model, job);
                }
            })
            .expect("spawn the model thread");
        Engine {
            tx: Arc::new(Mutex::new(tx)),
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

fn run(model: &Model, job: Job) {
    let tk = &model.tokenizer;
    let stop_ids = job.opts.stop_tokens.clone();
    let mut kept: Vec<u32> = Vec::new(); // generated tokens, stop tokens excluded
    let mut sent = 0usize; // bytes of the decoded text already sent
    let mut pending_lp: Vec<TokenLogprob> = Vec::new();
    let mut hit_stop_string = false;
    let longest_stop = job.stop.iter().map(String::len).max().unwrap_or(0);
    let events = job.events.clone();
    let result = generate_one(
        &model.transformer,
        &job.prompt,
        0,
        &job.opts,
        &job.hooks,
        |tok, logits| {
            if events.is_closed() {
                return false;
            }
            if stop_ids.contains(&tok) {
                return true; // generate_one ends on it
            }
            if let Some(k) = job.logprobs {
                pending_lp.push(logprob_of(model, tok, logits, k));
            }
            kept.push(tok);
            let text = tk.decode(&kept).unwrap_or_default();
            if let Some(at) = job.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                if at > sent {
                    let _ = events.send(Event::Delta {
                        text: text[sent..at].to_string(),
                        logprobs: std::mem::take(&mut pending_lp),
                    });
                }
                hit_stop_string = true;
                return false;
            }
            // Hold back a tail that could begin a stop string, and an incomplete
            // character (decoded as U+FFFD).
            let mut upto = text.len();
            if text.ends_with('\u{FFFD}') {
                upto = text.trim_end_matches('\u{FFFD}').len();
            }
            if longest_stop > 1 {
                let floor = upto.saturating_sub(longest_stop - 1);
                if let Some(start) = (floor..upto)
                    .filter(|&i| text.is_char_boundary(i))
                    .find(|&i| job.stop.iter().any(|s| s.starts_with(&text[i..upto])))
                {
                    upto = start;
                }
            }
            if upto > sent && text.is_char_boundary(upto) {
                let _ = events.send(Event::Delta {
                    text: text[sent..upto].to_string(),
                    logprobs: std::mem::take(&mut pending_lp),
                });
                sent = upto;
            }
            true
        },
    );
    match result {
        Ok((tokens, why)) => {
            if !hit_stop_string {
                // Flush what was held back.
                let text = tk.decode(&kept).unwrap_or_default();
                if text.len() > sent || !pending_lp.is_empty() {
                    let _ = events.send(Event::Delta {
                        text: text.get(sent..).unwrap_or_default().to_string(),
                        logprobs: std::mem::take(&mut pending_lp),
                    });
                }
            }
            let finish_reason = match why {
                StopReason::StopToken => "stop",
                StopReason::Caller => "stop",
                StopReason::MaxTokens | StopReason::Context => "length",
            };
            let _ = events.send(Event::Done {
                finish_reason,
                completion_tokens: tokens.len(),
            });
        }
        Err(e) => {
            let _ = events.send(Event::Error(e.to_string()));
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
    let top = (k > 0).then(|| {
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
