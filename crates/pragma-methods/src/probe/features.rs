//! Probe features: activations per layer for a dataset's examples, from the model or
//! from an activation store cached from the same dataset.

use std::path::Path;

use candle_core::Tensor;
use pragma_model::hooks::HookPoint;
use pragma_model::input::InputRule;
use pragma_model::Model;

use super::Dataset;
use crate::error::{Error, Result};
use crate::steering::{read_ids, side_ids, Position};

/// Activations `[n, d]` per layer (f32 tensors) at the position rule.
pub fn features(
    model: &Model,
    ds: &Dataset,
    site: &str,
    layers: &[usize],
    position: Position,
    rule: InputRule,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Tensor>> {
    let n_layers = model.cfg().n_layers;
    let points: Vec<HookPoint> = layers
        .iter()
        .map(|l| HookPoint::parse(&format!("blocks.{l}.{site}"), n_layers).map_err(Error::from))
        .collect::<Result<_>>()?;
    let ids = example_ids(model, ds, rule)?;
    if position == Position::Answer {
        return Err(Error::Input(
            "position 'answer' is for contrastive pairs with a prompt; probes use last or mean"
                .into(),
        ));
    }
    read_ids(model, &ids, None, &points, position, progress)
}

/// Each example's token ids under `rule`, refusing one longer than the model's context.
fn example_ids(model: &Model, ds: &Dataset, rule: InputRule) -> Result<Vec<Vec<u32>>> {
    let ctx = model.cfg().context_length;
    let mut ids = Vec::with_capacity(ds.examples.len());
    for (i, e) in ds.examples.iter().enumerate() {
        let t = side_ids(model, &e.input, rule)?;
        if t.len() > ctx {
            return Err(Error::Input(format!(
                "{}: example {} is {} tokens, longer than the model's context of {ctx}; shorten it",
                ds.name,
                i + 1,
                t.len()
            )));
        }
        ids.push(t);
    }
    Ok(ids)
}

/// Per-document activations `[n, d]` per layer from an activation store cached from
/// this dataset (one document per example, in order), pooled at `position` (last token
/// or mean; the BOS sink never pooled), instead of running the model. The store must be
/// complete, made from `model`, hold whole documents, and hold exactly the ids
/// [`side_ids`] builds for each example under the store's input rule (returned with the
/// features: the probe records it).
pub fn store_features(
    model: &Model,
    dir: &Path,
    ds: &Dataset,
    site: &str,
    layers: &[usize],
    position: Position,
) -> Result<(Vec<Tensor>, InputRule)> {
    let store = pragma_store::reader::Store::open(dir)?;
    let sha = pragma_store::writer::model_sha256(model)?;
    let pool = match position {
        Position::Last => pragma_store::reader::Pool::Last,
        Position::Mean => pragma_store::reader::Pool::Mean,
        Position::Answer => {
            return Err(Error::Input(
                "--store: position 'answer' is for steering pairs; use last or mean".into(),
            ))
        }
    };
    if !store.manifest.complete {
        return Err(Error::Input(format!(
            "--store {}: the store is incomplete ({} documents cached); finish it with the same `pragma cache` command",
            dir.display(),
            store.manifest.n_docs_done
        )));
    }
    if store.manifest.split_docs + store.manifest.truncated_docs > 0 {
        return Err(Error::Input(format!(
            "--store {}: {} documents were split or truncated to the store's context; a probe needs whole texts",
            dir.display(),
            store.manifest.split_docs + store.manifest.truncated_docs
        )));
    }
    let rule = store.manifest.settings.input_rule();
    let sink = model.tokenizer.info.bos;
    // The store must hold exactly the ids this probe would build itself.
    let table = store.tokens()?;
    let mut stored: Vec<Vec<u32>> = vec![Vec::new(); ds.examples.len()];
    for (&d, &t) in table.doc.iter().zip(&table.token) {
        if let Some(v) = stored.get_mut(d as usize) {
            v.push(t);
        }
    }
    for (i, (e, got)) in ds.examples.iter().zip(&stored).enumerate() {
        let want = side_ids(model, &e.input, rule)?;
        if *got != want {
            return Err(Error::Input(format!(
                "--store {}: document {} holds {} tokens that differ from the {} this dataset's \
                 example {} gives; make the store from this dataset with the same model \
                 (pragma cache --data {})",
                dir.display(),
                i,
                got.len(),
                want.len(),
                i + 1,
                ds.name
            )));
        }
    }
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        let hook = format!("blocks.{l}.{site}");
        store.require(&hook, model.cfg().d_model, Some(&sha))?;
        let (docs, x) = store.pooled(&hook, pool, sink)?;
        let want: Vec<u32> = (0..ds.examples.len() as u32).collect();
        if docs != want {
            return Err(Error::Input(format!(
                "--store {}: it holds {} documents, the dataset has {} examples; make the store from this dataset (pragma cache --data {})",
                dir.display(),
                docs.len(),
                ds.examples.len(),
                ds.name
            )));
        }
        out.push(x);
    }
    Ok((out, rule))
}

/// Per-token activations of `point` for every example: one f32 tensor `[t_i, d]` per
/// example, the BOS sink position left out (as every other reader does). For scoring
/// rules that pool over tokens (mean or max of a per-token score, as AxBench does). The
/// forward stops after `point`'s layer.
pub fn token_features(
    model: &Model,
    ds: &Dataset,
    point: HookPoint,
    rule: InputRule,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Tensor>> {
    use pragma_model::hooks::Hooks;
    use pragma_model::llama::{Batch, Logits};
    let ids = example_ids(model, ds, rule)?;
    let mut hooks = Hooks::new();
    hooks.capture(point);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out: Vec<Option<Tensor>> = vec![None; ids.len()];
    let mut done = 0;
    for chunk in order.chunks(16) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let batch = Batch::new(&seqs, model.device())?;
        let (_, cache) = model.transformer.forward(&batch, &hooks, Logits::None)?;
        for (b, &i) in chunk.iter().enumerate() {
            let full = cache.get_row(point, b)?;
            let skip = crate::steering::sink_len(model, &ids[i]);
            let row = full.narrow(0, skip, full.dim(0)? - skip)?;
            out[i] = Some(row.to_dtype(candle_core::DType::F32)?);
        }
        done += chunk.len();
        progress(done);
    }
    Ok(out.into_iter().flatten().collect())
}
