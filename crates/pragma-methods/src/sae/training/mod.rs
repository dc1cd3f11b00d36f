//! Training an SAE from an activation store (`pragma sae train`): seeded shuffled batches
//! read from the store's shards (never the whole store in memory), the objective of
//! `docs/SAE.md` ([`step`]), Adam with a width-scaled learning rate, warm-up and decay,
//! AuxK on latents dead for `dead_tokens`, BatchTopK's inference threshold, atomic
//! checkpoints, and a resume that is bit-identical to an uninterrupted run.

pub mod step;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pragma_store::{Permutation, Store};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use step::{
    loss_and_grads, loss_and_grads_with, project_decoder_grad, Adam, Objective, Params, StepStats,
};

use super::{Arch, Normalize, Sae, SaeConfig};
use crate::error::{Error, Result};

/// What [`train`] does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub arch: Arch,
    pub d_sae: usize,
    /// Training tokens (the store is cycled, reshuffled each epoch, if it has fewer).
    pub tokens: u64,
    pub batch_tokens: usize,
    /// Adam learning rate; `None` = `2e-4 / sqrt(d_sae / 2^14)`.
    pub lr: Option<f64>,
    pub seed: u64,
    /// AuxK weight α.
    pub aux_alpha: f32,
    /// A latent is dead after this many tokens without firing; `None` = min(10M, tokens / 4).
    pub dead_tokens: Option<u64>,
    /// L1 (relu) or L0 (jumprelu) coefficient λ.
    pub lambda: f32,
    /// Matryoshka inner prefix widths (strictly increasing, below d_sae; topk/batchtopk):
    /// each prefix of the dictionary also reconstructs the input (Bussmann et al. 2025).
    #[serde(default)]
    pub matryoshka: Vec<usize>,
    /// Tokens used to estimate the input scale and `b_dec`'s initial value.
    pub scale_tokens: usize,
    /// Rows whose norm exceeds this multiple of the median norm are left out of training
    /// (secondary attention sinks: a few dozen tokens per 100k whose norms are 30-150x the
    /// median carry most of the variance and would dominate the loss). 0 keeps every row.
    pub outlier_factor: f32,
    /// Steps between checkpoints (and log writes).
    pub checkpoint_every: u64,
    /// Return after this many steps of this run without saving anything more: the state
    /// a kill leaves (tests of resume).
    #[serde(skip)]
    pub stop_after_steps: Option<u64>,
}

impl TrainConfig {
    /// Defaults for `arch` at width `d_sae`.
    pub fn new(arch: Arch, d_sae: usize) -> Self {
        Self {
            arch,
            d_sae,
            tokens: 2_000_000,
            batch_tokens: 4096,
            lr: None,
            seed: 0,
            aux_alpha: 1.0 / 32.0,
            dead_tokens: None,
            // In FVU units: SAELens' relu default (5, against a summed MSE) divided by
            // E||x - μ||² ≈ d_in after scaling; 0.01 for a JumpReLU L0 of a few dozen.
            lambda: match arch {
                Arch::Relu => 0.01,
                Arch::JumpRelu => 0.01,
                _ => 0.0,
            },
            matryoshka: Vec::new(),
            scale_tokens: 65_536,
            outlier_factor: 10.0,
            checkpoint_every: 50,
            stop_after_steps: None,
        }
    }

    pub fn steps(&self) -> u64 {
        (self.tokens / self.batch_tokens.max(1) as u64).max(1)
    }

    /// Learning rate at step `s` (0-based): linear warm-up over the first 1% of steps (at
    /// most 1000), linear decay to 0 over the last 20%.
    pub fn lr_at(&self, s: u64) -> f64 {
        let base = self
            .lr
            .unwrap_or_else(|| 2e-4 / (self.d_sae as f64 / 16384.0).sqrt());
        let total = self.steps();
        let warm = (total / 100).clamp(1, 1000);
        let decay_start = total - total / 5;
        if s < warm {
            base * (s + 1) as f64 / warm as f64
        } else if s >= decay_start && total > decay_start {
            base * (total - s) as f64 / (total - decay_start) as f64
        } else {
            base
        }
    }

    fn dead_after(&self) -> u64 {
        self.dead_tokens
            .unwrap_or_else(|| (self.tokens / 4).min(10_000_000))
    }

    fn validate(&self, d_in: usize) -> Result<()> {
        if let Arch::TopK { k } | Arch::BatchTopK { k } = self.arch {
            if k == 0 || k >= self.d_sae {
                return Err(Error::Input(format!(
                    "--k {k}: expected 0 < k < d_sae ({})",
                    self.d_sae
                )));
            }
        }
        if self.d_sae == 0 || self.batch_tokens == 0 || self.tokens < self.batch_tokens as u64 {
            return Err(Error::Input(format!(
                "expected --d-sae > 0, --batch-tokens > 0 and --tokens >= --batch-tokens, found {}, {} and {}",
                self.d_sae, self.batch_tokens, self.tokens
            )));
        }
        if self.lr.is_some_and(|l| !(l.is_finite() && l > 0.0))
            || !(self.lambda.is_finite() && self.lambda >= 0.0)
            || !(self.aux_alpha.is_finite() && self.aux_alpha >= 0.0)
            || !(self.outlier_factor.is_finite() && self.outlier_factor >= 0.0)
        {
            return Err(Error::Input(format!(
                "expected a finite --lr > 0 and finite --lambda, aux weight and outlier factor >= 0, \
                 found lr {:?}, lambda {}, aux {}, outlier factor {}",
                self.lr, self.lambda, self.aux_alpha, self.outlier_factor
            )));
        }
        if !self.matryoshka.is_empty() {
            let ok = matches!(self.arch, Arch::TopK { .. } | Arch::BatchTopK { .. })
                && self.matryoshka.windows(2).all(|w| w[0] < w[1])
                && self.matryoshka[0] > 0
                && self.matryoshka.last().is_some_and(|&m| m < self.d_sae);
            if !ok {
                return Err(Error::Input(format!(
                    "--matryoshka {:?}: expected strictly increasing widths in 1..{} with \
                     --arch topk or batchtopk",
                    self.matryoshka, self.d_sae
                )));
            }
        }
        if d_in < 2 {
            return Err(Error::Input(format!("d_in {d_in}: expected at least 2")));
        }
        Ok(())
    }
}

/// Where training activations come from: rows of one hook, `width` values each.
pub trait Activations: Sync {
    fn n_tokens(&self) -> u64;
    fn width(&self) -> usize;
    /// Rows `rows` as one `[rows.len() * width]` buffer.
    fn gather(&self, rows: &[u64]) -> Result<Vec<f32>>;
    /// What the data is, for the resume check and the saved SAE's metadata.
    fn describe(&self) -> serde_json::Value;
    /// The hook name the SAE will be saved for.
    fn hook(&self) -> &str;
    /// The row of the underlying data (e.g. the store) behind row `r`, for messages.
    fn source_row(&self, r: u64) -> u64 {
        r
    }
}

/// One hook of an activation store, without the rows of control tokens (BOS and chat
/// markers: attention sinks whose norms are many times the others', which would dominate
/// the input scale and the loss; SAELens' `exclude_special_tokens`).
pub struct StoreHook<'a> {
    pub store: &'a Store,
    pub hook: String,
    /// Store rows of control tokens, ascending: the only per-row state held (8 bytes per
    /// control token, about one per document), so memory does not grow with the store.
    specials: Vec<u64>,
    pub excluded: u64,
}

impl<'a> StoreHook<'a> {
    /// Checks that the store has `hook` and finds the rows of control tokens, one shard
    /// at a time.
    pub fn new(store: &'a Store, hook: &str) -> Result<Self> {
        store.width(hook)?;
        let model_specials = &store.manifest.model.special_tokens;
        let mut specials = Vec::new();
        for s in 0..store.n_shards() {
            let (first, _) = store.shard_span(s);
            for (i, id) in store.shard_token_ids(s)?.into_iter().enumerate() {
                if model_specials.binary_search(&id).is_ok() {
                    specials.push(first + i as u64);
                }
            }
        }
        Ok(Self {
            store,
            hook: hook.to_string(),
            excluded: specials.len() as u64,
            specials,
        })
    }

    /// The store row of ordinary row `r`: `r` plus the control rows before it (the k-th
    /// control row has `specials[k] - k` ordinary rows before it).
    fn store_row(&self, r: u64) -> u64 {
        let (s, mut lo, mut hi) = (&self.specials, 0usize, self.specials.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if s[mid] - mid as u64 <= r {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        r + lo as u64
    }
}

impl Activations for StoreHook<'_> {
    fn n_tokens(&self) -> u64 {
        self.store.n_tokens() - self.excluded
    }
    fn width(&self) -> usize {
        self.store.width(&self.hook).unwrap_or(0)
    }
    fn gather(&self, rows: &[u64]) -> Result<Vec<f32>> {
        let mapped: Vec<u64> = rows.iter().map(|&r| self.store_row(r)).collect();
        Ok(self
            .store
            .gather(&self.hook, &mapped)?
            .flatten_all()?
            .to_vec1()?)
    }
    fn hook(&self) -> &str {
        &self.hook
    }
    fn source_row(&self, r: u64) -> u64 {
        self.store_row(r)
    }
    fn describe(&self) -> serde_json::Value {
        let m = &self.store.manifest;
        serde_json::json!({
            "store": std::fs::canonicalize(&self.store.dir)
                .unwrap_or_else(|_| self.store.dir.clone())
                .display()
                .to_string(),
            "model_name": m.model.name.clone().unwrap_or_else(|| m.model.spec.clone()),
            "model_sha256": m.model.sha256,
            "dataset_path": m.dataset.path,
            "dataset_sha256": m.dataset.sha256,
            "context_size": m.settings.ctx,
            "prepend_bos": m.settings.bos.is_some(),
            "input_rule": m.settings.input_rule(),
            "store_tokens": m.n_tokens,
            "excluded_special_token_rows": self.excluded,
        })
    }
}

/// Everything a checkpoint holds: parameters, optimiser, counters.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub params: Params,
    pub adam: Adam,
    /// Steps done.
    pub step: u64,
    /// Input scale `s` (training sees `s · x`).
    pub scale: f32,
    /// Per latent, tokens since it last fired.
    pub since_fired: Vec<u64>,
    /// Per latent, tokens it fired on (for the sparsity file).
    pub fire_count: Vec<u64>,
    /// Tokens counted in `fire_count`.
    pub counted_tokens: u64,
    /// BatchTopK's inference threshold θ (EMA), once seen.
    pub threshold: Option<f64>,
    /// Rows with a larger raw norm are left out (`outlier_factor` x the median norm).
    pub max_norm: f32,
}

/// One line of the training log (`log.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    pub step: u64,
    pub tokens: u64,
    pub lr: f64,
    pub loss: f64,
    pub fvu: f64,
    pub aux: f64,
    pub sparsity: f64,
    pub l0: f64,
    pub dead_fraction: f64,
    /// Rows of this batch left out as norm outliers.
    #[serde(default)]
    pub outliers: u64,
    pub tokens_per_second: f64,
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainResult {
    pub steps: u64,
    pub tokens: u64,
    pub resumed_from_step: u64,
    pub final_fvu: f64,
    pub final_l0: f64,
    pub dead_fraction: f64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub out: PathBuf,
}

/// Progress reports: one per step.
pub trait Progress {
    fn start(&mut self, _total_steps: u64, _resumed: u64) {}
    fn step(&mut self, _line: &LogLine) {}
    /// Asked after every step: `true` saves a checkpoint and stops with an error that
    /// says how to resume (e.g. Ctrl-C in Python).
    fn interrupted(&mut self) -> bool {
        false
    }
}

impl Progress for () {}

const CHECKPOINT: &str = "checkpoint.safetensors";
const LOG: &str = "log.jsonl";
const CONFIG: &str = "train_config.json";

/// Random unit decoder rows (seeded normal), `W_enc = W_dec^T`, zero `b_enc`.
pub fn init_params(d_in: usize, d_sae: usize, arch: Arch, seed: u64, b_dec: Vec<f32>) -> Params {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5AE_5AE);
    let mut normal = || {
        use rand::Rng;
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    };
    let w_dec: Vec<f32> = (0..d_sae * d_in).map(|_| normal()).collect();
    let mut p = Params {
        d_in,
        d_sae,
        w_enc_t: w_dec.clone(),
        b_enc: vec![0.0; d_sae],
        w_dec,
        b_dec,
        log_threshold: if arch == Arch::JumpRelu {
            vec![(0.001 * (d_in as f32).sqrt()).ln(); d_sae]
        } else {
            Vec::new()
        },
    };
    p.normalize_decoder();
    p.w_enc_t = p.w_dec.clone();
    p
}

/// Rows `rows` as one f32 buffer, refusing non-finite values (naming the rows).
fn read_batch(src: &dyn Activations, rows: &[u64]) -> Result<Vec<f32>> {
    let x = src.gather(rows)?;
    let w = src.width().max(1);
    let bad: Vec<u64> = x
        .chunks(w)
        .zip(rows)
        .filter(|(r, _)| r.iter().any(|v| !v.is_finite()))
        .map(|(_, &row)| src.source_row(row))
        .take(5)
        .collect();
    if !bad.is_empty() {
        return Err(Error::Input(format!(
            "{} has NaN/inf values at rows {bad:?} ({}); an SAE cannot train on them \
             (re-cache the store or drop those documents)",
            src.hook(),
            src.describe()["store"].as_str().unwrap_or("activations")
        )));
    }
    Ok(x)
}

/// The row order of epoch `epoch`: a seeded permutation of all rows, evaluated per
/// position (no per-row memory).
fn epoch_order(n_tokens: u64, seed: u64, epoch: u64) -> Permutation {
    Permutation::new(n_tokens, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch)
}

/// Train (or resume training) an SAE on `hook` of `store`, writing checkpoints, the
/// log and, at the end, a SAELens folder (`cfg.json`, `sae_weights.safetensors`,
/// `sparsity.safetensors`) with the input scale folded in, to `out`.
pub fn train(
    src: &dyn Activations,
    cfg: &TrainConfig,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<(Sae, TrainResult)> {
    let d_in = src.width();
    cfg.validate(d_in)?;
    let n_tokens = src.n_tokens();
    if n_tokens < cfg.batch_tokens as u64 {
        return Err(Error::Input(format!(
            "{}: {n_tokens} tokens, fewer than one batch of {} (--batch-tokens)",
            src.describe()["store"]
                .as_str()
                .unwrap_or("the activations"),
            cfg.batch_tokens
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Input(format!("{}: {e}", out.display())))?;
    let cfg_path = out.join(CONFIG);
    let identity = serde_json::json!({
        "config": cfg,
        "data": src.describe(),
        "hook": src.hook(),
    });
    // Temporaries a kill left mid-write.
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut state = match std::fs::read_to_string(&cfg_path) {
        Ok(text) => {
            let old: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if old != identity {
                let differs: Vec<String> = ["config", "data", "hook"]
                    .iter()
                    .flat_map(|k| {
                        let (a, b) = (&old[*k], &identity[*k]);
                        match (a.as_object(), b.as_object()) {
                            (Some(x), Some(y)) => x
                                .keys()
                                .chain(y.keys())
                                .filter(|f| x.get(*f) != y.get(*f))
                                .map(|f| {
                                    format!(
                                        "{k}.{f}: {} -> {}",
                                        x.get(f).unwrap_or(&serde_json::Value::Null),
                                        y.get(f).unwrap_or(&serde_json::Value::Null)
                                    )
                                })
                                .collect::<Vec<_>>(),
                            _ if a != b => vec![format!("{k}: {a} -> {b}")],
                            _ => vec![],
                        }
                    })
                    .collect();
                return Err(Error::Input(format!(
                    "{}: holds a run with other settings ({}); use another --out or delete it",
                    out.display(),
                    differs.join("; ")
                )));
            }
            match load_checkpoint(&out.join(CHECKPOINT))? {
                Some(s) => s,
                None => fresh_state(src, cfg, d_in)?,
            }
        }
        Err(_) => {
            let used = std::fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if used {
                return Err(Error::Input(format!(
                    "{}: not empty and holds no {CONFIG}; training would overwrite what is there: \
                     use a new or empty --out",
                    out.display()
                )));
            }
            pragma_model::io::write_json(&cfg_path, &identity)?;
            fresh_state(src, cfg, d_in)?
        }
    };
    let obj = Objective {
        arch: cfg.arch,
        aux_alpha: cfg.aux_alpha,
        lambda: cfg.lambda,
        bandwidth: 0.001 * (d_in as f32).sqrt(),
        matryoshka: cfg.matryoshka.clone(),
    };
    let total = cfg.steps();
    let resumed = state.step;
    // Keep only the log lines of steps the checkpoint covers.
    let log_path = out.join(LOG);
    let mut log: Vec<String> = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<LogLine>(l).is_ok_and(|x| x.step <= state.step))
        .map(str::to_string)
        .collect();
    progress.start(total, resumed);
    let b = cfg.batch_tokens;
    let per_epoch = n_tokens / b as u64;
    let mut order_epoch = 0;
    let mut order = epoch_order(n_tokens, cfg.seed, 0);
    let t0 = std::time::Instant::now();
    let dead_after = cfg.dead_after();
    let mut z_buf = Vec::new();
    while state.step < total {
        let s = state.step;
        let (epoch, i) = (s / per_epoch, (s % per_epoch) as usize);
        if epoch != order_epoch {
            order = epoch_order(n_tokens, cfg.seed, epoch);
            order_epoch = epoch;
        }
        let rows: Vec<u64> = order.range((i * b) as u64, ((i + 1) * b) as u64).collect();
        let raw = read_batch(src, &rows)?;
        let mut x = Vec::with_capacity(raw.len());
        for r in raw.chunks(d_in) {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            if state.max_norm <= 0.0 || norm <= state.max_norm {
                x.extend(r.iter().map(|v| v * state.scale));
            }
        }
        let kept = x.len() / d_in;
        let dead: Vec<bool> = state.since_fired.iter().map(|&t| t > dead_after).collect();
        let (mut g, stats) =
            loss_and_grads_with(&state.params, &x, kept, Some(&dead), &obj, &mut z_buf);
        if !stats.loss.is_finite() {
            return Err(Error::Input(format!(
                "the loss diverged (not finite) at step {}; {}: lower --lr and start again with \
                 another --out",
                s + 1,
                if s >= cfg.checkpoint_every {
                    format!(
                        "the checkpoint of step {} is kept in {} (it may lead to the same divergence)",
                        s - s % cfg.checkpoint_every.max(1),
                        out.display()
                    )
                } else {
                    "no checkpoint was written yet".to_string()
                }
            )));
        }
        project_decoder_grad(&state.params, &mut g);
        state.adam.update(&mut state.params, &g, cfg.lr_at(s));
        state.params.normalize_decoder();
        for (j, &c) in stats.fire_counts.iter().enumerate() {
            if c > 0 {
                state.since_fired[j] = 0;
            } else {
                state.since_fired[j] += kept as u64;
            }
        }
        if let Some(m) = stats.min_selected {
            state.threshold = Some(match state.threshold {
                None => m as f64,
                Some(t) => 0.99 * t + 0.01 * m as f64,
            });
        }
        state.step += 1;
        let dead_now = state
            .since_fired
            .iter()
            .filter(|&&t| t > dead_after)
            .count();
        let line = LogLine {
            step: state.step,
            tokens: state.step * b as u64,
            lr: cfg.lr_at(s),
            loss: stats.loss,
            fvu: stats.fvu,
            aux: stats.aux,
            sparsity: stats.sparsity,
            l0: stats.l0,
            dead_fraction: dead_now as f64 / cfg.d_sae as f64,
            outliers: (b - kept) as u64,
            tokens_per_second: (state.step - resumed) as f64 * b as f64
                / t0.elapsed().as_secs_f64().max(1e-9),
        };
        // Firing counts over the last quarter of training give the sparsity file.
        if state.step + total / 4 >= total {
            for (j, &c) in stats.fire_counts.iter().enumerate() {
                state.fire_count[j] += c as u64;
            }
            state.counted_tokens += kept as u64;
        }
        progress.step(&line);
        log.push(serde_json::to_string(&line).unwrap_or_default());
        if cfg
            .stop_after_steps
            .is_some_and(|n| state.step - resumed >= n)
        {
            return Err(Error::Input(format!(
                "stopped after {} steps (stop_after_steps)",
                state.step - resumed
            )));
        }
        let interrupted = progress.interrupted();
        if interrupted || state.step % cfg.checkpoint_every.max(1) == 0 || state.step == total {
            // The log first: a kill between the two leaves extra lines, which a resume drops.
            pragma_model::io::write_atomic(&log_path, (log.join("\n") + "\n").as_bytes())?;
            save_checkpoint(&out.join(CHECKPOINT), &state)?;
        }
        if interrupted {
            return Err(Error::Input(format!(
                "interrupted at step {} of {total}; the checkpoint in {} resumes it (train again with the same output folder)",
                state.step,
                out.display()
            )));
        }
    }
    // BatchTopK's inference threshold, recalibrated on the final weights: the mean over
    // (up to) 16 batches of the smallest activation the batch selection keeps (the EMA
    // still carries the early steps' values).
    if matches!(cfg.arch, Arch::BatchTopK { .. }) && total > resumed {
        let mut mins = Vec::new();
        for i in 0..per_epoch.min(16) as usize {
            let rows: Vec<u64> = order.range((i * b) as u64, ((i + 1) * b) as u64).collect();
            let raw = read_batch(src, &rows)?;
            let x: Vec<f32> = raw
                .chunks(d_in)
                .filter(|r| {
                    state.max_norm <= 0.0
                        || r.iter().map(|v| v * v).sum::<f32>().sqrt() <= state.max_norm
                })
                .flatten()
                .map(|v| v * state.scale)
                .collect();
            let (_, st) =
                loss_and_grads_with(&state.params, &x, x.len() / d_in, None, &obj, &mut z_buf);
            mins.extend(st.min_selected.map(f64::from));
        }
        if !mins.is_empty() {
            state.threshold = Some(mins.iter().sum::<f64>() / mins.len() as f64);
        }
    }
    let sae = to_sae(&state, cfg, src)?;
    let density: Vec<f32> = state
        .fire_count
        .iter()
        .map(|&c| ((c as f64 / state.counted_tokens.max(1) as f64) + 1e-10).log10() as f32)
        .collect();
    sae.save(
        out,
        Some(&Tensor::from_vec(density, cfg.d_sae, &Device::Cpu)?),
    )?;
    plot_log(&log, &out.join("loss.svg"))?;
    let seconds = t0.elapsed().as_secs_f64();
    let dead = state
        .since_fired
        .iter()
        .filter(|&&t| t > dead_after)
        .count();
    // FVU and L0 averaged over the last 20 steps (one batch's FVU moves with the batch).
    let tail: Vec<LogLine> = log
        .iter()
        .rev()
        .take(20)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let avg = |f: fn(&LogLine) -> f64| {
        if tail.is_empty() {
            0.0
        } else {
            tail.iter().map(f).sum::<f64>() / tail.len() as f64
        }
    };
    let result = TrainResult {
        steps: state.step,
        tokens: state.step * b as u64,
        resumed_from_step: resumed,
        final_fvu: avg(|l| l.fvu),
        final_l0: avg(|l| l.l0),
        dead_fraction: dead as f64 / cfg.d_sae as f64,
        seconds,
        tokens_per_second: (state.step - resumed) as f64 * b as f64 / seconds.max(1e-9),
        out: out.to_path_buf(),
    };
    Ok((sae, result))
}

/// Step 0: estimate the input scale `s = sqrt(d_in) / E||x||` and the initial `b_dec`
/// (the mean of `s·x`) on a seeded sample, and initialise the parameters.
fn fresh_state(src: &dyn Activations, cfg: &TrainConfig, d_in: usize) -> Result<TrainState> {
    let n = src.n_tokens();
    let order: Vec<u64> = epoch_order(n, cfg.seed ^ 0x5CA1E, 0)
        .range(0, (cfg.scale_tokens as u64).clamp(1, n))
        .collect();
    let x = read_batch(src, &order)?;
    let norms: Vec<f64> = x
        .chunks(d_in)
        .map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max_norm = (cfg.outlier_factor as f64 * median) as f32;
    let keep: Vec<usize> = (0..norms.len())
        .filter(|&i| max_norm <= 0.0 || norms[i] <= max_norm as f64)
        .collect();
    let rows = keep.len().max(1);
    let mean_norm = keep.iter().map(|&i| norms[i]).sum::<f64>() / rows as f64;
    let scale = ((d_in as f64).sqrt() / mean_norm.max(1e-12)) as f32;
    let mut mean = vec![0f64; d_in];
    for &i in &keep {
        mean.iter_mut()
            .zip(&x[i * d_in..(i + 1) * d_in])
            .for_each(|(m, v)| *m += (*v * scale) as f64);
    }
    let b_dec: Vec<f32> = mean.iter().map(|m| (*m / rows as f64) as f32).collect();
    let mut params = init_params(d_in, cfg.d_sae, cfg.arch, cfg.seed, b_dec);
    if cfg.arch == Arch::JumpRelu {
        // Thresholds from the data: each latent starts firing on ~1% of the sample (a
        // fixed small θ would let half the latents fire on every token, and log θ moves by
        // about one learning rate per step).
        let m = keep.len().min(4096);
        let mut xc = Vec::with_capacity(m * d_in);
        for &i in &keep[..m] {
            xc.extend(
                x[i * d_in..(i + 1) * d_in]
                    .iter()
                    .zip(&params.b_dec)
                    .map(|(v, c)| v * scale - c),
            );
        }
        let n = cfg.d_sae;
        let mut z = vec![0f32; m * n];
        step::matmul_nt(&xc, &params.w_enc_t, m, n, d_in, &mut z);
        let floor = 0.001 * (d_in as f32).sqrt();
        params.log_threshold = (0..n)
            .map(|j| {
                let mut col: Vec<f32> = (0..m).map(|t| z[t * n + j]).collect();
                let q = (m as f64 * 0.99) as usize;
                let (_, v, _) = col.select_nth_unstable_by(q.min(m - 1), f32::total_cmp);
                v.max(floor).ln()
            })
            .collect();
    }
    Ok(TrainState {
        adam: Adam::new(&params),
        params,
        step: 0,
        scale,
        since_fired: vec![0; cfg.d_sae],
        fire_count: vec![0; cfg.d_sae],
        counted_tokens: 0,
        threshold: None,
        max_norm,
    })
}

/// The trained SAE in raw-activation units: the input scale folded into the weights
/// (`W_enc *= s`, `W_dec /= s`, `b_dec /= s`; thresholds act on `z`, which the fold keeps).
pub fn to_sae(state: &TrainState, cfg: &TrainConfig, src: &dyn Activations) -> Result<Sae> {
    let p = &state.params;
    let (d, n, s) = (p.d_in, p.d_sae, state.scale);
    let dev = Device::Cpu;
    let w_enc: Vec<f32> = p.w_enc().into_iter().map(|v| v * s).collect();
    let threshold = match cfg.arch {
        Arch::JumpRelu => Some(Tensor::from_vec(
            p.log_threshold
                .iter()
                .map(|t| t.exp())
                .collect::<Vec<f32>>(),
            n,
            &dev,
        )?),
        Arch::BatchTopK { .. } => Some(Tensor::from_vec(
            vec![state.threshold.unwrap_or(0.0) as f32; n],
            n,
            &dev,
        )?),
        _ => None,
    };
    let mut metadata = src.describe();
    metadata["training_tokens"] = serde_json::json!(state.step * cfg.batch_tokens as u64);
    metadata["input_scale_folded"] = serde_json::json!(s);
    metadata["train_config"] = serde_json::json!(cfg);
    let sae = Sae {
        cfg: SaeConfig {
            arch: cfg.arch,
            d_in: d,
            d_sae: n,
            hook_name: src.hook().to_string(),
            apply_b_dec_to_input: true,
            normalize: Normalize::None,
            rescale_acts_by_decoder_norm: false,
            reshape_hook_z: false,
            model_name: metadata["model_name"].as_str().map(str::to_string),
            metadata,
        },
        w_enc: Tensor::from_vec(w_enc, (d, n), &dev)?,
        b_enc: Tensor::from_vec(p.b_enc.clone(), n, &dev)?,
        w_dec: Tensor::from_vec(
            p.w_dec.iter().map(|v| v / s).collect::<Vec<f32>>(),
            (n, d),
            &dev,
        )?,
        b_dec: Tensor::from_vec(p.b_dec.iter().map(|v| v / s).collect::<Vec<f32>>(), d, &dev)?,
        threshold,
    };
    sae.validate()?;
    Ok(sae)
}

fn save_checkpoint(path: &Path, st: &TrainState) -> Result<()> {
    let dev = Device::Cpu;
    let mut tensors = Vec::new();
    for (prefix, p) in [
        ("param", &st.params),
        ("adam_m", &st.adam.m),
        ("adam_v", &st.adam.v),
    ] {
        for (name, v) in p.parts() {
            tensors.push((
                format!("{prefix}.{name}"),
                Tensor::from_vec(v.clone(), v.len(), &dev)?,
            ));
        }
    }
    for (name, v) in [
        ("since_fired", &st.since_fired),
        ("fire_count", &st.fire_count),
    ] {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        let n = v.len();
        tensors.push((name.to_string(), Tensor::from_vec(v, n, &dev)?));
    }
    let meta = serde_json::json!({
        "d_in": st.params.d_in,
        "d_sae": st.params.d_sae,
        "step": st.step,
        "adam_step": st.adam.step,
        // f32/f64 bit patterns, so a resume continues from exactly these values.
        "scale_bits": st.scale.to_bits(),
        "threshold_bits": st.threshold.map(f64::to_bits),
        "max_norm_bits": st.max_norm.to_bits(),
        "counted_tokens": st.counted_tokens,
    });
    let mut m = HashMap::new();
    m.insert("pragma_sae_checkpoint".to_string(), meta.to_string());
    pragma_model::io::save_safetensors(path, &tensors, m)?;
    Ok(())
}

fn load_checkpoint(path: &Path) -> Result<Option<TrainState>> {
    if !path.exists() {
        return Ok(None);
    }
    let bad = |m: String| Error::Input(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let meta: serde_json::Value = st
        .metadata()
        .as_ref()
        .and_then(|m| m.get("pragma_sae_checkpoint"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("no pragma_sae_checkpoint metadata".into()))?;
    let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| bad(format!("unreadable: {e}")))?;
    let f32s = |k: &str| -> Result<Vec<f32>> {
        Ok(all
            .get(k)
            .ok_or_else(|| bad(format!("missing {k}")))?
            .to_vec1()?)
    };
    let u64s = |k: &str| -> Result<Vec<u64>> {
        Ok(all
            .get(k)
            .ok_or_else(|| bad(format!("missing {k}")))?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|x| x as u64)
            .collect())
    };
    let num = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(format!("no {k}")))
    };
    let (d_in, d_sae) = (num("d_in")? as usize, num("d_sae")? as usize);
    let params = |prefix: &str| -> Result<Params> {
        Ok(Params {
            d_in,
            d_sae,
            w_enc_t: f32s(&format!("{prefix}.w_enc_t"))?,
            b_enc: f32s(&format!("{prefix}.b_enc"))?,
            w_dec: f32s(&format!("{prefix}.w_dec"))?,
            b_dec: f32s(&format!("{prefix}.b_dec"))?,
            log_threshold: f32s(&format!("{prefix}.log_threshold"))?,
        })
    };
    let p = params("param")?;
    let mut adam = Adam::new(&p);
    adam.m = params("adam_m")?;
    adam.v = params("adam_v")?;
    adam.step = num("adam_step")?;
    Ok(Some(TrainState {
        params: p,
        adam,
        step: num("step")?,
        scale: f32::from_bits(num("scale_bits")? as u32),
        since_fired: u64s("since_fired")?,
        fire_count: u64s("fire_count")?,
        counted_tokens: num("counted_tokens")?,
        threshold: meta
            .get("threshold_bits")
            .and_then(|v| v.as_u64())
            .map(f64::from_bits),
        max_norm: f32::from_bits(num("max_norm_bits")? as u32),
    }))
}

/// FVU, L0 and dead fraction by step, from the log's lines.
fn plot_log(lines: &[String], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let log: Vec<LogLine> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if log.is_empty() {
        return Ok(());
    }
    let err = |e: String| Error::Input(format!("plot {}: {e}", path.display()));
    crate::plot::svg_atomic(path, (900, 360), |root| {
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let panels = root.split_evenly((1, 3));
        let x1 = log.last().map_or(1, |l| l.tokens).max(1) as f64;
        type Get = fn(&LogLine) -> f64;
        let series: [(&str, Get); 3] = [
            ("FVU", |l| l.fvu),
            ("L0", |l| l.l0),
            ("dead fraction", |l| l.dead_fraction),
        ];
        for (panel, (name, get)) in panels.iter().zip(series) {
            let ys: Vec<f64> = log.iter().map(get).filter(|v| v.is_finite()).collect();
            let y1 = ys.iter().cloned().fold(0f64, f64::max).max(1e-6) * 1.05;
            let mut chart = ChartBuilder::on(panel)
                .caption(name, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(45)
                .build_cartesian_2d(0f64..x1, 0f64..y1)
                .map_err(|e| err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("tokens")
                .x_labels(4)
                .draw()
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(LineSeries::new(
                    log.iter().map(|l| (l.tokens as f64, get(l))),
                    BLUE.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    })
}
