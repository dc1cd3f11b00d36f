//! `pragma bench`: throughput of the forward pass and decoding, as JSON, for
//! `scripts/bench/run.sh` to compare with llama.cpp and HF transformers measured
//! in the same run on the same machine.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks};
use pragma_model::llama::{Batch, Logits};
use pragma_model::{Model, DEFAULT_MODEL};

#[derive(Args)]
pub struct BenchArgs {
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Sequences per prefill batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence in prefill.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 128)]
    decode: usize,
    /// Timed repetitions (the best is reported; one warm-up run precedes them).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also measure `pragma cache` on this many tokens of the fortunes corpus
    /// (all 30 hook_resid_post, ctx 128, f16), against the same forwards without writing.
    #[arg(long, default_value_t = 0)]
    cache_tokens: u64,
}

/// A deterministic token batch: real text tokenized and repeated to length.
pub fn bench_tokens(model: &Model, batch: usize, seq: usize) -> Result<Vec<Vec<u32>>> {
    let text = "The history of science is the study of the development of science and scientific \
                knowledge, including both the natural and social sciences. Science is a body of \
                empirical, theoretical, and practical knowledge about the natural world, produced by \
                scientists who emphasize the observation, explanation, and prediction of real-world phenomena.";
    let ids = model.tokenizer.encode(text, false)?;
    Ok((0..batch)
        .map(|b| ids.iter().cycle().skip(b * 7).take(seq).copied().collect())
        .collect())
}

fn best_of(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let t_load = std::time::Instant::now();
    let model = Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
    let load_s = t_load.elapsed().as_secs_f64();
    let rss_loaded = peak_rss_mib();
    let seqs = bench_tokens(&model, a.batch, a.seq)?;
    let batch = Batch::new(&seqs, model.device())?;
    let n_tok = (a.batch * a.seq) as f64;
    let tf = &model.transformer;

    let t_plain = best_of(a.reps, || {
        tf.forward(&batch, &Hooks::new(), Logits::Last)?;
        Ok(())
    })?;
    let mut hooks = Hooks::new();
    for p in HookPoint::resolve_pattern("blocks.*.hook_resid_post", model.cfg().n_layers)? {
        hooks.capture(p);
    }
    let t_capture = best_of(a.reps, || {
        let (_, cache) = tf.forward(&batch, &hooks, Logits::Last)?;
        // Materialise the captures as a user would (f32, contiguous).
        for p in cache.points() {
            cache.get(p)?.contiguous()?;
        }
        Ok(())
    })?;

    let prompt = seqs[0][..16.min(a.seq)].to_vec();
    let opts = GenerateOptions {
        max_tokens: a.decode,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let t_prompt = best_of(a.reps, || {
        tf.forward(
            &Batch::single(&prompt, model.device())?,
            &Hooks::new(),
            Logits::Last,
        )?;
        Ok(())
    })?;
    let t_gen = best_of(a.reps.min(2), || {
        generate(
            tf,
            std::slice::from_ref(&prompt),
            &opts,
            &Hooks::new(),
            |_, _| {},
        )?;
        Ok(())
    })?;
    let decode_tps = a.decode as f64 / (t_gen - t_prompt).max(1e-9);

    // Peak RSS of loading + forward + decode, before the cache measurement (which
    // holds a shard buffer and reports its own peak below).
    let rss_forward = peak_rss_mib();
    let (cache_tps, cache_fwd_tps) = if a.cache_tokens > 0 {
        let data = pragma_store::datasets::resolve("fortunes", &mut |m| eprintln!("{m}"))?;
        let dir = std::env::temp_dir().join(format!("pragma-bench-cache-{}", std::process::id()));
        let mut opts = pragma_store::writer::CacheOptions {
            format: pragma_store::corpus::Format::detect(
                &data,
                pragma_store::corpus::TextSplit::Blocks,
            ),
            data,
            hooks: HookPoint::resolve_pattern("blocks.*.hook_resid_post", model.cfg().n_layers)?,
            out: dir.clone(),
            ctx: 128,
            batch: 8,
            dtype: candle_core::DType::F16,
            input: pragma_model::input::InputRule {
                bos: false,
                parse_special: false,
            },
            long_docs: pragma_store::manifest::LongDocs::Truncate,
            max_tokens: Some(a.cache_tokens),
            skip_docs: 0,
            shard_tokens: None,
            stop_after_shards: None,
            dry_run: true,
            part: None,
        };
        let t = Instant::now();
        let fwd = pragma_store::writer::cache(&model, &opts, &mut ())?;
        let fwd_tps = fwd.n_tokens as f64 / t.elapsed().as_secs_f64();
        opts.dry_run = false;
        let t = Instant::now();
        let man = pragma_store::writer::cache(&model, &opts, &mut ())?;
        let tps = man.n_tokens as f64 / t.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&dir);
        (Some(tps), Some(fwd_tps))
    } else {
        (None, None)
    };

    let out = serde_json::json!({
        "cache_tok_s": cache_tps,
        "cache_forward_only_tok_s": cache_fwd_tps,
        "cache_write_cost": cache_tps.zip(cache_fwd_tps).map(|(c, f)| f / c - 1.0),
        "tool": "pragma",
        "load_s": load_s,
        "peak_rss_after_load_mib": rss_loaded,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "prefill_batch": a.batch,
        "prefill_seq": a.seq,
        "prefill_tok_s": n_tok / t_plain,
        "prefill_capture_all_resid_tok_s": n_tok / t_capture,
        "capture_overhead": t_capture / t_plain - 1.0,
        "decode_tokens": a.decode,
        "decode_tok_s": decode_tps,
        "peak_rss_mib": rss_forward,
        "peak_rss_with_cache_mib": if a.cache_tokens > 0 { peak_rss_mib() } else { None },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
