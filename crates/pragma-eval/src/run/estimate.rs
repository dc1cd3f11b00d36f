//! The time estimate printed before a run starts.

use super::*;

/// Seconds the to-do cells should take: token throughput of the forward up to the hook
/// measured on a few examples, the prompting forwards (whole model, test examples of
/// every seed), and the SAE encoder's FLOPs at 20 GFLOP/s.
pub(super) fn estimate(
    model: &Model,
    point: HookPoint,
    suite: &Suite,
    datasets: &[Dataset],
    todo: &[Todo],
    sae_dims: Option<(usize, usize)>,
) -> Result<(f64, f64)> {
    let first = &datasets[todo[0].task];
    let mut probe = first.clone();
    probe.examples.truncate(32);
    let t = Instant::now();
    let acts = token_features(model, &probe, point, Default::default(), &mut |_| {})?;
    let toks: usize = acts.iter().map(|a| a.dim(0).unwrap_or(0) + 1).sum();
    let tps = toks as f64 / t.elapsed().as_secs_f64().max(1e-6);
    let n_layers = model.cfg().n_layers as f64;
    let depth = (point.layer().unwrap_or(0) + 1) as f64;
    let mut secs = 0.0;
    for (ti, ds) in datasets.iter().enumerate() {
        let mine: Vec<&Todo> = todo.iter().filter(|t| t.task == ti).collect();
        if mine.is_empty() {
            continue;
        }
        // ~ tokens per example, from the characters (4 per token).
        let tokens: f64 = ds
            .examples
            .iter()
            .map(|e| e.text().len() as f64 / 4.0 + 2.0)
            .sum();
        if suite.tasks[ti].study.is_some() {
            // One study: ~210 s on 2 cores for the default 8 layers x 6 scales.
            secs += 220.0;
            continue;
        }
        if let Some(st) = &suite.tasks[ti].steering {
            // Greedy generations: references, and per technique and seed the factor sweep on
            // half the instructions and the report half; ~0.05 s per generated token row.
            let gens: f64 = mine
                .iter()
                .map(|t| {
                    let per = if t.tech == Technique::Prompt {
                        1.0
                    } else {
                        st.factors.len() as f64 + 1.0
                    };
                    per * st.instructions.len() as f64 / 2.0
                })
                .sum::<f64>()
                + st.instructions.len() as f64 * suite.seeds as f64;
            secs += tokens / tps + gens * (st.max_new_tokens as f64 * 0.01 + 0.3);
            continue;
        }
        if let Some(spec) = &suite.tasks[ti].planted {
            // The base documents plus, per seed, the planted B documents and held-out copies.
            let per_doc = tokens / ds.examples.len().max(1) as f64;
            let planted = spec.rates.iter().copied().fold(0.0, f64::max) * spec.items as f64
                + spec.heldout as f64;
            secs += (tokens + per_doc * planted * suite.seeds as f64) / tps;
        } else if mine.iter().any(|t| t.tech.pooled()) {
            secs += tokens / tps;
        }
        if mine.iter().any(|t| t.tech == Technique::Prompt) {
            let test_share = 1.0 - (suite.fractions.0 + suite.fractions.1);
            let union = 1.0 - (1.0 - test_share).powi(suite.seeds as i32);
            secs += (tokens + 15.0 * ds.examples.len() as f64) * union / (tps * depth / n_layers);
        }
        if let Some((d_in, d_sae)) = sae_dims.filter(|_| mine.iter().any(|t| t.tech.needs_sae())) {
            secs += tokens * 2.0 * (d_in * d_sae) as f64 / 20e9;
        }
        secs += 0.3 * mine.len() as f64;
    }
    Ok((secs, tps))
}
