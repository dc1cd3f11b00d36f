//! Linear probes: per-layer sweeps with held-out metrics and baselines beside them.
//!
//! A labelled dataset is JSONL, one example a line, text or chat messages, a binary
//! label (bool, integer or string; one type per file), optionally a given split, and
//! optionally a group (examples of one group, e.g. a fact and its negation, are kept in
//! one split so that a near-twin with the opposite label is never trained on):
//!
//! ```text
//! {"text": "Lyon is a city in France.", "label": 1}
//! {"messages": [{"role": "user", "content": "..."}], "label": "eval", "split": "test"}
//! {"text": "Lyon is a city in Spain.", "label": 0, "group": "city:Lyon"}
//! ```
//!
//! For every layer: logistic regression (L2, C chosen on validation AUROC) on
//! standardised activations, and difference of means; test AUROC and accuracy with
//! stratified bootstrap 95% CIs; the best layer chosen on validation, never on test.
//! Baselines on the same split: bag-of-words logistic regression on token counts, and
//! prompting (the model's yes/no log-odds for a question about the text).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pragma_model::hooks::HookPoint;
use pragma_model::input::InputRule;
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

mod baselines;
mod features;
mod plot;
mod workflow;

pub use features::{features, store_features, token_features};
pub use plot::plot_svg;
pub use workflow::{
    load_features, read_features, save_features, site_layers, train_to_folder, FeatureMeta,
    FeatureSource, TrainFiles, TrainOutput, FEATURE_META,
};

use baselines::{bag_of_words, prompting};
pub use baselines::{bag_of_words_scores, prompting_scores, BowScores};

use crate::error::{Error, Result};
use crate::linear::{
    accuracy, auroc, bootstrap_metric, fit_diff_means, fit_logistic, FitOptions, Linear, Matrix,
    Standardizer,
};
use crate::stats::XorShift;
use crate::steering::{Position, Side};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

#[derive(Clone, Debug)]
pub struct Example {
    pub input: Side,
    /// 0 or 1 (index into [`Dataset::classes`]).
    pub label: u8,
    pub split: Option<Split>,
    /// Examples sharing a group (e.g. a fact and its negation) stay in one split.
    pub group: Option<String>,
}

impl Example {
    /// The plain text (chat contents joined by newlines).
    pub fn text(&self) -> String {
        match &self.input {
            Side::Text(t) => t.clone(),
            Side::Chat(m) => m
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub examples: Vec<Example>,
    /// Class names; label 1 is `classes[1]` (the positive class).
    pub classes: [String; 2],
    pub sha256: String,
    /// Yes/no question for the prompting baseline, from `NAME.meta.json` when present.
    pub question: Option<String>,
    /// Whether "yes" answers the question for the positive class (false: for the negative
    /// class, e.g. "Is this text in English?" when the positive class is non-English).
    pub yes_is_positive: bool,
}

#[derive(Deserialize)]
struct Row {
    text: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    label: serde_json::Value,
    split: Option<Split>,
    group: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct Meta {
    question: Option<String>,
    positive: Option<serde_json::Value>,
    yes_is_positive: Option<bool>,
    /// Display names of the labels, e.g. {"1": "true", "0": "false"}.
    label_names: Option<HashMap<String, String>>,
}

fn label_key(v: &serde_json::Value) -> Option<(&'static str, String)> {
    match v {
        serde_json::Value::Bool(b) => Some(("bool", b.to_string())),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
            Some(("integer", n.to_string()))
        }
        serde_json::Value::String(s) => Some(("string", s.clone())),
        _ => None,
    }
}

/// Read a labelled dataset; `positive` names the positive class (default: `true`, the
/// larger integer, or the later string in sort order, unless the sidecar
/// `NAME.meta.json` says `{"positive": ...}`).
pub fn read_dataset(path: &Path, positive: Option<&str>) -> Result<Dataset> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|e| Error::Input(format!("{}: not UTF-8: {e}", path.display())))?;
    let meta_path = path.with_extension("meta.json");
    let meta: Meta = match std::fs::read_to_string(&meta_path) {
        Ok(s) => serde_json::from_str(&s)
            .map_err(|e| Error::Input(format!("{}: {e}", meta_path.display())))?,
        Err(_) => Meta::default(),
    };
    let mut rows = Vec::new();
    let mut kind: Option<(&str, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let r: Row = serde_json::from_str(line).map_err(|e| {
            Error::Input(format!(
                "{at}: expected {{\"text\": ... or \"messages\": [...], \"label\": ...}}: {e}"
            ))
        })?;
        let (k, name) = label_key(&r.label).ok_or_else(|| {
            Error::Input(format!(
                "{at}: label {} is not a bool, integer or string",
                r.label
            ))
        })?;
        match kind {
            Some((k0, l0)) if k0 != k => {
                return Err(Error::Input(format!(
                    "{at}: label {} is a {k}, but line {l0} has a {k0} label; use one type for all labels",
                    r.label
                )))
            }
            None => kind = Some((k, i + 1)),
            _ => {}
        }
        let input = match (r.text, r.messages) {
            (Some(t), None) => Side::Text(t),
            (None, Some(m)) => Side::Chat(m),
            _ => {
                return Err(Error::Input(format!(
                    "{at}: expected exactly one of \"text\" and \"messages\""
                )))
            }
        };
        if matches!(&input, Side::Text(t) if t.trim().is_empty()) {
            return Err(Error::Input(format!("{at}: empty text")));
        }
        let group = r.group.map(|g| match g {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        rows.push((input, name, r.split, i + 1, group));
    }
    if rows.is_empty() {
        return Err(Error::Input(format!(
            "{}: no examples found (expected JSONL lines {{\"text\": ..., \"label\": ...}})",
            path.display()
        )));
    }
    let mut names: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    names.sort_by(|a, b| match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
    names.dedup();
    if names.len() != 2 {
        return Err(Error::Input(format!(
            "{}: expected exactly 2 classes for a binary probe, found {}: {:?}",
            path.display(),
            names.len(),
            names.iter().take(10).collect::<Vec<_>>()
        )));
    }
    let pos_name = positive
        .map(str::to_string)
        .or_else(|| meta.positive.as_ref().and_then(label_key).map(|k| k.1))
        .unwrap_or_else(|| names[1].clone());
    let classes = match names.iter().position(|n| *n == pos_name) {
        Some(1) => [names[0].clone(), names[1].clone()],
        Some(_) => [names[1].clone(), names[0].clone()],
        None => {
            return Err(Error::Input(format!(
                "positive class '{pos_name}' is not one of the labels {names:?}"
            )))
        }
    };
    let given = rows.iter().filter(|r| r.2.is_some()).count();
    if given != 0 && given != rows.len() {
        let line = rows
            .iter()
            .find(|r| r.2.is_none())
            .map(|r| r.3)
            .unwrap_or(0);
        return Err(Error::Input(format!(
            "{}:{line}: some examples give a \"split\" and this one does not; give it for all or none",
            path.display()
        )));
    }
    let examples = rows
        .into_iter()
        .map(|(input, name, split, _, group)| Example {
            input,
            label: u8::from(name == classes[1]),
            split,
            group,
        })
        .collect();
    let classes = match &meta.label_names {
        Some(names) => classes.map(|c| names.get(&c).cloned().unwrap_or(c)),
        None => classes,
    };
    Ok(Dataset {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
        examples,
        classes,
        sha256: hex_sha256(&bytes),
        question: meta.question,
        yes_is_positive: meta.yes_is_positive.unwrap_or(true),
    })
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Seeded stratified split into train/validation/test by `fractions` (train, validation;
/// test gets the rest). Errors when a split would miss a class.
pub fn make_splits(labels: &[u8], fractions: (f64, f64), seed: u64) -> Result<Vec<Split>> {
    let mut out = vec![Split::Train; labels.len()];
    let mut rng = XorShift::new(seed, XorShift::SHUFFLE);
    for class in [0u8, 1] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut idx);
        let n = idx.len();
        let n_train = (n as f64 * fractions.0).round() as usize;
        let n_val = (n as f64 * fractions.1).round() as usize;
        if n_train < 1 || n_val < 1 || n_train + n_val >= n {
            return Err(Error::Input(format!(
                "class {class} has {n} examples: too few for a train/validation/test split of \
                 {:.0}/{:.0}/{:.0}% (each split needs at least one of each class; 10+ per class is sensible)",
                fractions.0 * 100.0,
                fractions.1 * 100.0,
                (1.0 - fractions.0 - fractions.1) * 100.0
            )));
        }
        for (k, &i) in idx.iter().enumerate() {
            out[i] = if k < n_train {
                Split::Train
            } else if k < n_train + n_val {
                Split::Validation
            } else {
                Split::Test
            };
        }
    }
    Ok(out)
}

/// Seeded split that keeps every group whole: groups are shuffled and dealt to train,
/// then validation, then test until each holds its fraction of the examples.
pub fn make_group_splits(groups: &[&str], fractions: (f64, f64), seed: u64) -> Vec<Split> {
    let mut order: Vec<&str> = Vec::new();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let e = members.entry(g).or_default();
        if e.is_empty() {
            order.push(g);
        }
        e.push(i);
    }
    XorShift::new(seed, XorShift::SHUFFLE).shuffle(&mut order);
    let n = groups.len() as f64;
    let (t1, t2) = (fractions.0 * n, (fractions.0 + fractions.1) * n);
    let mut out = vec![Split::Test; groups.len()];
    let mut done = 0usize;
    for g in order {
        let s = if (done as f64) < t1 {
            Split::Train
        } else if (done as f64) < t2 {
            Split::Validation
        } else {
            Split::Test
        };
        for &i in &members[g] {
            out[i] = s;
        }
        done += members[g].len();
    }
    out
}

/// The splits of a dataset: given ones; by group when every example names a `group`
/// (so e.g. a statement and its negation never straddle train and test); otherwise
/// [`make_splits`]. Checks both classes are in each.
pub fn splits(ds: &Dataset, fractions: (f64, f64), seed: u64) -> Result<Vec<Split>> {
    let labels: Vec<u8> = ds.examples.iter().map(|e| e.label).collect();
    let groups: Vec<&str> = ds
        .examples
        .iter()
        .filter_map(|e| e.group.as_deref())
        .collect();
    let s = if ds.examples[0].split.is_some() {
        ds.examples.iter().filter_map(|e| e.split).collect()
    } else if groups.len() == ds.examples.len() {
        make_group_splits(&groups, fractions, seed)
    } else {
        make_splits(&labels, fractions, seed)?
    };
    for split in [Split::Train, Split::Validation, Split::Test] {
        for class in [0u8, 1] {
            if !s
                .iter()
                .zip(&labels)
                .any(|(a, &l)| *a == split && l == class)
            {
                return Err(Error::Input(format!(
                    "{}: the {split:?} split has no example of class '{}'",
                    ds.name, ds.classes[class as usize]
                )));
            }
        }
    }
    Ok(s)
}

fn to_matrix(t: &Tensor) -> Result<Matrix> {
    let (n, d) = t.dims2()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(Matrix::new(v.into_iter().map(f64::from).collect(), n, d))
}

/// Test metrics of one scorer, and its validation AUROC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scored {
    pub val_auroc: Option<f64>,
    #[serde(with = "pragma_model::io::json_f64")]
    pub test_auroc: f64,
    #[serde(with = "pragma_model::io::json_f64::pair")]
    pub test_auroc_ci: (f64, f64),
    #[serde(with = "pragma_model::io::json_f64")]
    pub test_accuracy: f64,
    #[serde(with = "pragma_model::io::json_f64::pair")]
    pub test_accuracy_ci: (f64, f64),
    /// The regularisation chosen on validation (logistic models).
    pub c: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerResult {
    pub layer: usize,
    pub logistic: Scored,
    pub diff_means: Scored,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub name: String,
    pub scored: Scored,
    pub note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeReport {
    pub dataset: String,
    pub dataset_sha256: String,
    pub classes: [String; 2],
    pub model: String,
    pub site: String,
    pub position: Position,
    pub n_train: usize,
    pub n_validation: usize,
    pub n_test: usize,
    pub c_grid: Vec<f64>,
    pub layers: Vec<LayerResult>,
    pub best_logistic_layer: usize,
    pub best_diff_means_layer: usize,
    pub baselines: Vec<Baseline>,
    pub features_seconds: f64,
    pub fit_seconds: f64,
    pub baselines_seconds: f64,
}

/// A probe ready to apply: raw-space weights and provenance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeMeta {
    pub model: String,
    pub model_sha256: Option<String>,
    pub d_model: usize,
    /// Full hook name, e.g. `blocks.12.hook_resid_post`.
    pub hook: String,
    pub position: Position,
    /// `logistic` (score = logit; sigmoid gives P(positive)) or `diff-means`
    /// (score = projection minus the midpoint of the class means).
    pub method: String,
    pub c: Option<f64>,
    pub dataset: String,
    pub dataset_sha256: String,
    pub classes: [String; 2],
    pub val_auroc: Option<f64>,
    #[serde(with = "pragma_model::io::json_f64")]
    pub test_auroc: f64,
    #[serde(with = "pragma_model::io::json_f64::pair")]
    pub test_auroc_ci: (f64, f64),
    #[serde(with = "pragma_model::io::json_f64")]
    pub test_accuracy: f64,
    pub pragma_version: String,
    /// How text became token ids for training; scoring builds inputs the same way.
    /// Files without it (pragma < 0.2) prepended BOS.
    #[serde(default)]
    pub input: InputRule,
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub meta: ProbeMeta,
    pub w: Vec<f32>,
    pub b: f32,
}

/// Everything a sweep produces.
pub struct SweepOutput {
    pub report: ProbeReport,
    pub logistic: Probe,
    pub diff_means: Probe,
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub site: String,
    pub layers: Vec<usize>,
    pub position: Position,
    pub c_grid: Vec<f64>,
    pub fractions: (f64, f64),
    pub seed: u64,
    pub bootstrap: usize,
    /// Prompting baseline question (with its answer instruction).
    pub question: Option<String>,
    pub yes: String,
    pub no: String,
    /// How text becomes token ids (features and the prompting baseline).
    pub input: InputRule,
}

/// Score a scorer's test split (and optionally its validation AUROC).
fn score(
    test: (&[f64], &[u8]),
    val: Option<(&[f64], &[u8])>,
    threshold: f64,
    c: Option<f64>,
    reps: usize,
    seed: u64,
) -> Scored {
    let (s, l) = test;
    Scored {
        val_auroc: val.and_then(|(s, l)| auroc(s, l)),
        test_auroc: auroc(s, l).unwrap_or(f64::NAN),
        test_auroc_ci: bootstrap_metric(s, l, reps, seed, |s, l| auroc(s, l).unwrap_or(f64::NAN)),
        test_accuracy: accuracy(s, l, threshold),
        test_accuracy_ci: bootstrap_metric(s, l, reps, seed, |s, l| accuracy(s, l, threshold)),
        c,
    }
}

/// Logistic regression over the C grid, chosen on validation AUROC (ties: the stronger
/// regularisation). Returns the model (standardised space), the scaler and C.
pub fn fit_logistic_cv(
    train: &Matrix,
    y_train: &[u8],
    val: &Matrix,
    y_val: &[u8],
    c_grid: &[f64],
) -> (Linear, Standardizer, f64) {
    let st = Standardizer::fit(train);
    let (xt, xv) = (st.apply(train), st.apply(val));
    let mut grid = c_grid.to_vec();
    grid.sort_by(|a, b| a.total_cmp(b));
    let mut best: Option<(f64, Linear, f64)> = None;
    let mut prev: Option<Linear> = None;
    for &c in &grid {
        // Warm start along the path (small C to large); the optimum does not depend on it.
        let m = fit_logistic(&xt, y_train, c, prev.as_ref(), FitOptions::default());
        let a = auroc(&m.scores(&xv), y_val).unwrap_or(0.0);
        if best.as_ref().is_none_or(|b| a > b.0 + 1e-12) {
            best = Some((a, m.clone(), c));
        }
        prev = Some(m);
    }
    let (_, m, c) = best.unwrap_or((
        0.0,
        Linear {
            w: vec![0.0; train.d],
            b: 0.0,
        },
        1.0,
    ));
    (m, st, c)
}

/// The whole sweep from text: read `cfg.layers`' activations for every example (one
/// forward each, [`features`]), then [`sweep`]. `progress` gets one-line messages. What
/// the Python `Probe.train` runs; [`train_to_folder`] (`pragma probe train`) also reads
/// stored or saved features and writes the run's files.
pub fn train(
    model: &Model,
    ds: &Dataset,
    cfg: &ProbeConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<SweepOutput> {
    let meta = FeatureMeta::new(model, ds, cfg);
    let (feats, secs) = read_features(
        model,
        ds,
        cfg,
        &FeatureSource::Model,
        &meta,
        &mut |_| {},
        progress,
    )?;
    sweep(model, ds, &feats, cfg, secs, progress)
}

/// Train and evaluate probes for every layer, with baselines. `feats` are the per-layer
/// activations from [`features`] (in `cfg.layers` order).
pub fn sweep(
    model: &Model,
    ds: &Dataset,
    feats: &[Tensor],
    cfg: &ProbeConfig,
    features_seconds: f64,
    progress: &mut dyn FnMut(&str),
) -> Result<SweepOutput> {
    let split = splits(ds, cfg.fractions, cfg.seed)?;
    let labels: Vec<u8> = ds.examples.iter().map(|e| e.label).collect();
    let idx = |s: Split| -> Vec<usize> { (0..labels.len()).filter(|&i| split[i] == s).collect() };
    let (tr, va, te) = (idx(Split::Train), idx(Split::Validation), idx(Split::Test));
    let lab = |ix: &[usize]| -> Vec<u8> { ix.iter().map(|&i| labels[i]).collect() };
    let (ytr, yva, yte) = (lab(&tr), lab(&va), lab(&te));
    if feats.len() != cfg.layers.len() {
        return Err(Error::Input(format!(
            "expected features for {} layers, found {}",
            cfg.layers.len(),
            feats.len()
        )));
    }
    for f in feats {
        if f.dim(0)? != labels.len() {
            return Err(Error::Input(format!(
                "features have {} rows for {} examples",
                f.dim(0)?,
                labels.len()
            )));
        }
    }
    progress(&format!(
        "fitting {} layers x ({} C values + diff of means) on {} train / {} validation / {} test",
        cfg.layers.len(),
        cfg.c_grid.len(),
        tr.len(),
        va.len(),
        te.len()
    ));
    let t = std::time::Instant::now();
    let mats: Vec<Matrix> = feats.iter().map(to_matrix).collect::<Result<_>>()?;
    let fitted: Vec<(LayerResult, Linear, Linear)> = cfg
        .layers
        .par_iter()
        .zip(mats.par_iter())
        .map(|(&layer, x)| {
            let (xtr, xva, xte) = (x.select(&tr), x.select(&va), x.select(&te));
            let (m, st, c) = fit_logistic_cv(&xtr, &ytr, &xva, &yva, &cfg.c_grid);
            let raw = m.unstandardize(&st);
            let logistic = score(
                (&raw.scores(&xte), &yte),
                Some((&raw.scores(&xva), &yva)),
                0.0,
                Some(c),
                cfg.bootstrap,
                cfg.seed,
            );
            let dm = fit_diff_means(&xtr, &ytr);
            let diff_means = score(
                (&dm.scores(&xte), &yte),
                Some((&dm.scores(&xva), &yva)),
                0.0,
                None,
                cfg.bootstrap,
                cfg.seed,
            );
            (
                LayerResult {
                    layer,
                    logistic,
                    diff_means,
                },
                raw,
                dm,
            )
        })
        .collect();
    let fit_seconds = t.elapsed().as_secs_f64();
    let best_by = |get: &dyn Fn(&LayerResult) -> Option<f64>| -> usize {
        let mut best = 0;
        for (k, (r, _, _)) in fitted.iter().enumerate() {
            if get(r).unwrap_or(0.0) > get(&fitted[best].0).unwrap_or(0.0) + 1e-12 {
                best = k;
            }
        }
        best
    };
    let bl = best_by(&|r| r.logistic.val_auroc);
    let bd = best_by(&|r| r.diff_means.val_auroc);

    let t = std::time::Instant::now();
    let mut baselines = Vec::new();
    progress("baseline: bag-of-words logistic regression");
    baselines.push(bag_of_words(
        model,
        ds,
        (&tr, &va, &te),
        (&ytr, &yva, &yte),
        cfg,
    )?);
    match &cfg.question {
        Some(q) => {
            progress("baseline: prompting (yes/no log-odds)");
            baselines.push(prompting(model, ds, &te, &yte, q, cfg)?);
        }
        None => progress("no --question given: the prompting baseline is skipped"),
    }
    let baselines_seconds = t.elapsed().as_secs_f64();

    let model_name = model
        .info
        .name
        .clone()
        .unwrap_or_else(|| model.info.spec.clone());
    let probe = |k: usize, lin: &Linear, method: &str, s: &Scored| Probe {
        meta: ProbeMeta {
            model: model_name.clone(),
            model_sha256: None,
            d_model: model.cfg().d_model,
            hook: format!("blocks.{}.{}", cfg.layers[k], cfg.site),
            position: cfg.position,
            method: method.into(),
            c: s.c,
            dataset: ds.name.clone(),
            dataset_sha256: ds.sha256.clone(),
            classes: ds.classes.clone(),
            val_auroc: s.val_auroc,
            test_auroc: s.test_auroc,
            test_auroc_ci: s.test_auroc_ci,
            test_accuracy: s.test_accuracy,
            pragma_version: env!("CARGO_PKG_VERSION").into(),
            input: cfg.input,
        },
        w: lin.w.iter().map(|&v| v as f32).collect(),
        b: lin.b as f32,
    };
    let logistic = probe(bl, &fitted[bl].1, "logistic", &fitted[bl].0.logistic);
    let diff_means = probe(bd, &fitted[bd].2, "diff-means", &fitted[bd].0.diff_means);
    let report = ProbeReport {
        dataset: ds.name.clone(),
        dataset_sha256: ds.sha256.clone(),
        classes: ds.classes.clone(),
        model: model_name,
        site: cfg.site.clone(),
        position: cfg.position,
        n_train: tr.len(),
        n_validation: va.len(),
        n_test: te.len(),
        c_grid: cfg.c_grid.clone(),
        best_logistic_layer: cfg.layers[bl],
        best_diff_means_layer: cfg.layers[bd],
        layers: fitted.into_iter().map(|f| f.0).collect(),
        baselines,
        features_seconds,
        fit_seconds,
        baselines_seconds,
    };
    Ok(SweepOutput {
        report,
        logistic,
        diff_means,
    })
}

impl ProbeReport {
    /// Read a `results.json` written by `pragma probe train`.
    pub fn load(path: &Path) -> Result<ProbeReport> {
        Ok(pragma_model::io::read_json(
            path,
            "a results.json from `pragma probe train`",
        )?)
    }

    fn fmt(s: &Scored) -> (String, String) {
        let one = |v: f64, ci: (f64, f64)| {
            if ci.0.is_finite() && ci.1.is_finite() {
                format!("{v:.3} [{:.3}, {:.3}]", ci.0, ci.1)
            } else {
                format!("{v:.3} (no CI)")
            }
        };
        (
            one(s.test_auroc, s.test_auroc_ci),
            one(s.test_accuracy, s.test_accuracy_ci),
        )
    }

    /// Markdown table: one row per layer, then baselines; best layers marked.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Probes on `{}` ({} train / {} validation / {} test; positive class '{}'), \
             `blocks.L.{}` at position '{:?}'. Test AUROC and accuracy with stratified bootstrap \
             95% CIs; best layer (*) chosen on validation AUROC.\n\n\
             | layer | logistic AUROC | logistic acc | C | diff-means AUROC | diff-means acc |\n\
             |---|---|---|---|---|---|\n",
            self.dataset,
            self.n_train,
            self.n_validation,
            self.n_test,
            self.classes[1],
            self.site,
            self.position
        );
        for r in &self.layers {
            let (la, lc) = Self::fmt(&r.logistic);
            let (da, dc) = Self::fmt(&r.diff_means);
            let mark = |b: bool| if b { "*" } else { "" };
            s.push_str(&format!(
                "| {} | {la}{} | {lc} | {:.0e} | {da}{} | {dc} |\n",
                r.layer,
                mark(r.layer == self.best_logistic_layer),
                r.logistic.c.unwrap_or(f64::NAN),
                mark(r.layer == self.best_diff_means_layer),
            ));
        }
        s.push_str("\n| baseline | test AUROC | test accuracy | note |\n|---|---|---|---|\n");
        for b in &self.baselines {
            let (a, c) = Self::fmt(&b.scored);
            s.push_str(&format!("| {} | {a} | {c} | {} |\n", b.name, b.note));
        }
        s
    }

    /// Short summary: best layers and baselines.
    pub fn summary(&self) -> String {
        let at = |l: usize| self.layers.iter().find(|r| r.layer == l);
        let mut s = String::new();
        if let Some(r) = at(self.best_logistic_layer) {
            s.push_str(&format!(
                "best logistic: layer {} test AUROC {}\n",
                r.layer,
                Self::fmt(&r.logistic).0
            ));
        }
        if let Some(r) = at(self.best_diff_means_layer) {
            s.push_str(&format!(
                "best diff-means: layer {} test AUROC {}\n",
                r.layer,
                Self::fmt(&r.diff_means).0
            ));
        }
        for b in &self.baselines {
            s.push_str(&format!(
                "baseline {}: test AUROC {}\n",
                b.name,
                Self::fmt(&b.scored).0
            ));
        }
        s
    }
}

impl Probe {
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = vec![
            (
                "w".to_string(),
                Tensor::from_vec(self.w.clone(), self.w.len(), &Device::Cpu)?,
            ),
            (
                "b".to_string(),
                Tensor::from_vec(vec![self.b], 1, &Device::Cpu)?,
            ),
        ];
        for (name, t) in &tensors {
            pragma_model::io::ensure_finite(t, &format!("{}: probe {name}", path.display()))?;
        }
        let mut meta = HashMap::new();
        meta.insert(
            "pragma_probe".to_string(),
            serde_json::to_string(&self.meta).map_err(|e| Error::Input(e.to_string()))?,
        );
        pragma_model::io::save_safetensors(path, &tensors, meta)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Probe> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        let bad = |m: String| Error::Input(format!("{}: {m}", path.display()));
        let (_, st_meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta_json = st_meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("pragma_probe"))
            .ok_or_else(|| {
                bad("no pragma_probe metadata; expected a file from `pragma probe train`".into())
            })?;
        let meta: ProbeMeta =
            serde_json::from_str(meta_json).map_err(|e| bad(format!("probe metadata: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let get = |name: &str| -> Result<Vec<f32>> {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor '{name}'")))?;
            if v.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!(
                    "tensor '{name}' is {:?}, expected F32",
                    v.dtype()
                )));
            }
            Ok(v.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let w = get("w")?;
        let b = get("b")?;
        if w.len() != meta.d_model || b.len() != 1 {
            return Err(bad(format!(
                "expected w of {} values and one b, found {} and {}",
                meta.d_model,
                w.len(),
                b.len()
            )));
        }
        Ok(Probe { meta, w, b: b[0] })
    }

    /// The hook this probe reads, checked against `model`.
    pub fn hook_point(&self, model: &Model) -> Result<HookPoint> {
        if self.meta.d_model != model.cfg().d_model {
            return Err(Error::Input(format!(
                "probe was trained on d_model {} ({}), this model has d_model {}",
                self.meta.d_model,
                self.meta.model,
                model.cfg().d_model
            )));
        }
        HookPoint::parse(&self.meta.hook, model.cfg().n_layers).map_err(Error::from)
    }

    /// Score of each row of `acts: [t, d]`. With `Position::Mean` each row's score uses the
    /// running mean of the rows so far (what the probe would see for that prefix).
    pub fn score_rows(&self, acts: &Tensor) -> Result<Vec<f64>> {
        let rows: Vec<Vec<f32>> = acts.to_dtype(DType::F32)?.to_vec2()?;
        let mut out = Vec::with_capacity(rows.len());
        let mut sum = vec![0.0f64; self.w.len()];
        for (k, r) in rows.iter().enumerate() {
            let s = match self.meta.position {
                Position::Last => r
                    .iter()
                    .zip(&self.w)
                    .map(|(a, w)| (*a as f64) * (*w as f64))
                    .sum::<f64>(),
                Position::Mean | Position::Answer => {
                    for (acc, a) in sum.iter_mut().zip(r) {
                        *acc += *a as f64;
                    }
                    sum.iter()
                        .zip(&self.w)
                        .map(|(a, w)| a / (k + 1) as f64 * (*w as f64))
                        .sum::<f64>()
                }
            };
            out.push(s + self.b as f64);
        }
        Ok(out)
    }

    /// Probability of the positive class for a logistic score (None for diff-means).
    pub fn probability(&self, score: f64) -> Option<f64> {
        (self.meta.method == "logistic").then(|| 1.0 / (1.0 + (-score).exp()))
    }
}
