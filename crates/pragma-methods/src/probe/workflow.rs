//! The `pragma probe train` workflow as one library call: where the activations come
//! from (the model, an activation store, or a features file saved by an earlier run),
//! the sweep with its baselines, and every file the run writes. The CLI parses, calls
//! [`train_to_folder`] and presents its [`TrainOutput`]; the Python bindings call
//! [`super::train`], which computes the features and returns the probes in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use pragma_model::hooks::HookPoint;
use pragma_model::input::InputRule;
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use super::{
    features, plot_svg, splits, store_features, sweep, Dataset, ProbeConfig, ProbeReport, Split,
};
use crate::error::{Error, Result};
use crate::steering::Position;

/// The safetensors metadata key of a features file.
pub const FEATURE_META: &str = "pragma_probe_features";

/// Where a sweep's activations come from.
#[derive(Clone, Debug)]
pub enum FeatureSource {
    /// One forward per example ([`features`]).
    Model,
    /// A complete activation store made from this dataset ([`store_features`]).
    Store(PathBuf),
    /// A `features.safetensors` from an earlier run with `save_features`; refused unless
    /// it was saved for the same dataset, model, site, layers, position and input rule.
    File(PathBuf),
}

/// What identifies a features file: a file is reused only when every field matches.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub struct FeatureMeta {
    /// SHA-256 of the dataset file.
    pub dataset_sha256: String,
    /// The model's name (or its spec when it has none).
    pub model: String,
    /// The per-layer site, e.g. `hook_resid_post`.
    pub site: String,
    pub layers: Vec<usize>,
    pub position: Position,
    /// One 0/1 label per example, in dataset order.
    pub labels: Vec<u8>,
    #[serde(default)]
    pub input: InputRule,
}

impl FeatureMeta {
    /// The identity of `cfg`'s features for `ds` on `model`.
    pub fn new(model: &Model, ds: &Dataset, cfg: &ProbeConfig) -> FeatureMeta {
        FeatureMeta {
            dataset_sha256: ds.sha256.clone(),
            model: model
                .info
                .name
                .clone()
                .unwrap_or_else(|| model.info.spec.clone()),
            site: cfg.site.clone(),
            layers: cfg.layers.clone(),
            position: cfg.position,
            labels: ds.examples.iter().map(|e| e.label).collect(),
            input: cfg.input,
        }
    }
}

/// Save per-layer activations `feats` (`[n_examples, d_model]` each, in `meta.layers`
/// order) with `labels` and `split` (0 train, 1 validation, 2 test) as safetensors, for
/// reuse with [`FeatureSource::File`] or for reading from NumPy.
pub fn save_features(
    path: &Path,
    meta: &FeatureMeta,
    feats: &[Tensor],
    split: &[Split],
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = meta
        .layers
        .iter()
        .zip(feats)
        .map(|(l, t)| (format!("blocks.{l}.{}", meta.site), t.clone()))
        .collect();
    let labels: Vec<i64> = meta.labels.iter().map(|&l| l as i64).collect();
    let n = labels.len();
    tensors.push(("labels".into(), Tensor::from_vec(labels, n, &Device::Cpu)?));
    let split: Vec<i64> = split
        .iter()
        .map(|s| match s {
            Split::Train => 0,
            Split::Validation => 1,
            Split::Test => 2,
        })
        .collect();
    tensors.push(("split".into(), Tensor::from_vec(split, n, &Device::Cpu)?));
    let mut m = HashMap::new();
    m.insert(
        FEATURE_META.to_string(),
        serde_json::to_string(meta).map_err(|e| Error::Input(e.to_string()))?,
    );
    pragma_model::io::save_safetensors(path, &tensors, m)?;
    Ok(())
}

/// Read the per-layer activations saved by [`save_features`]. Errors: the file is not
/// safetensors, has no features metadata, or was saved for another dataset, model, site,
/// layers, position or input rule than `want` (both are named).
pub fn load_features(path: &Path, want: &FeatureMeta) -> Result<Vec<Tensor>> {
    let bytes = std::fs::read(path).map_err(|source| pragma_model::Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::Input(format!("{}: not a safetensors file: {e}", path.display())))?;
    let meta: FeatureMeta = st
        .metadata()
        .as_ref()
        .and_then(|m| m.get(FEATURE_META))
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| {
            Error::Input(format!(
                "{}: bad {FEATURE_META} metadata: {e}",
                path.display()
            ))
        })?
        .ok_or_else(|| {
            Error::Input(format!(
                "{}: no {FEATURE_META} metadata; expected a file from --save-features",
                path.display()
            ))
        })?;
    if &meta != want {
        let short = |s: &str| s[..12.min(s.len())].to_string();
        return Err(Error::Input(format!(
            "{}: saved for dataset {} / model {} / site {} / layers {:?} / position {:?} / input ({}), \
             but this run wants dataset {} / model {} / site {} / layers {:?} / position {:?} / input ({})",
            path.display(),
            short(&meta.dataset_sha256),
            meta.model,
            meta.site,
            meta.layers,
            meta.position,
            meta.input.describe(),
            short(&want.dataset_sha256),
            want.model,
            want.site,
            want.layers,
            want.position,
            want.input.describe()
        )));
    }
    let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    want.layers
        .iter()
        .map(|l| {
            let k = format!("blocks.{l}.{}", want.site);
            all.get(&k)
                .cloned()
                .ok_or_else(|| Error::Input(format!("{}: missing {k}", path.display())))
        })
        .collect()
}

/// The site and layers a hook pattern names, for a probe: one residual-width site at
/// every layer it selects (e.g. `blocks.*.hook_resid_post` -> (`hook_resid_post`,
/// `[0, 1, ...]`)). Errors: a site that is not per layer or not `d_model` wide, two
/// sites, or a pattern that selects nothing.
pub fn site_layers(pattern: &str, n_layers: usize) -> Result<(String, Vec<usize>)> {
    let points = HookPoint::resolve_pattern(pattern, n_layers)?;
    let mut site: Option<String> = None;
    let mut layers = Vec::new();
    for p in points {
        let name = p.to_string();
        let (Some(l), Some(rest)) = (
            p.layer(),
            name.split_once('.')
                .and_then(|(_, r)| r.split_once('.'))
                .map(|(_, s)| s.to_string()),
        ) else {
            return Err(Error::Input(format!(
                "--hooks: {name} is not a per-layer hook"
            )));
        };
        if !p.is_model_width() {
            return Err(Error::Input(format!(
                "--hooks: {name} is not a residual-width site; probe e.g. blocks.*.hook_resid_post"
            )));
        }
        match &site {
            Some(s) if *s != rest => {
                return Err(Error::Input(format!(
                    "--hooks: expected one site for all layers, found {s} and {rest}"
                )))
            }
            None => site = Some(rest),
            _ => {}
        }
        layers.push(l);
    }
    let site = site.ok_or_else(|| Error::Input(format!("--hooks '{pattern}' selects nothing")))?;
    Ok((site, layers))
}

/// Where a [`train_to_folder`] run reads its activations and writes its files.
#[derive(Clone, Debug)]
pub struct TrainFiles {
    pub source: FeatureSource,
    /// The output folder (created if missing).
    pub out: PathBuf,
    /// Also write the activations as `features.safetensors`.
    pub save_features: bool,
}

/// `cfg.layers`' activations for every example of `ds` from `source` (`[n_examples,
/// d_model]` per layer, in `cfg.layers` order) and the seconds it took; says how long on
/// `progress`. `meta` is what a features file must match.
pub fn read_features(
    model: &Model,
    ds: &Dataset,
    cfg: &ProbeConfig,
    source: &FeatureSource,
    meta: &FeatureMeta,
    texts_done: &mut dyn FnMut(usize),
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Tensor>, f64)> {
    let t = std::time::Instant::now();
    let feats = match source {
        FeatureSource::File(p) => load_features(p, meta)?,
        FeatureSource::Store(dir) => {
            store_features(model, dir, ds, &cfg.site, &cfg.layers, cfg.position)?.0
        }
        FeatureSource::Model => features(
            model,
            ds,
            &cfg.site,
            &cfg.layers,
            cfg.position,
            cfg.input,
            texts_done,
        )?,
    };
    let secs = t.elapsed().as_secs_f64();
    progress(&format!(
        "activations for {} texts x {} layers in {secs:.1}s",
        ds.examples.len(),
        cfg.layers.len()
    ));
    Ok((feats, secs))
}

/// What [`train_to_folder`] did: the report, and where it wrote what.
pub struct TrainOutput {
    pub report: ProbeReport,
    /// The files written, in the order written (features.safetensors when saved,
    /// probe.safetensors, probe-diff-means.safetensors, report.md, results.json, sweep.svg).
    pub files: Vec<PathBuf>,
}

/// `pragma probe train`: read `cfg.layers`' activations for every example of `ds` from
/// `files.source`, run the [`sweep`] (logistic and difference-of-means probes per layer, the
/// bag-of-words and prompting baselines, bootstrap CIs), and write into `files.out`:
/// `probe.safetensors` (the best logistic probe), `probe-diff-means.safetensors`,
/// `report.md`, `results.json`, `sweep.svg`, and with `files.save_features` the activations
/// as `features.safetensors`. Each file is written atomically. `texts_done(i)` reports
/// forward passes done when the model computes the features; `progress` gets one-line
/// messages. The probes record the model's SHA-256.
///
/// Errors: bad splits (checked before any forward pass), a store or features file that
/// does not match the run, an unwritable `out`.
pub fn train_to_folder(
    model: &Model,
    ds: &Dataset,
    cfg: &ProbeConfig,
    files: &TrainFiles,
    texts_done: &mut dyn FnMut(usize),
    progress: &mut dyn FnMut(&str),
) -> Result<TrainOutput> {
    let (source, out) = (&files.source, files.out.as_path());
    // Check the splits before spending time on the forward passes.
    let split = splits(ds, cfg.fractions, cfg.seed)?;
    let meta = FeatureMeta::new(model, ds, cfg);
    let (feats, features_seconds) =
        read_features(model, ds, cfg, source, &meta, texts_done, progress)?;
    std::fs::create_dir_all(out).map_err(|source| pragma_model::Error::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    if files.save_features {
        let p = out.join("features.safetensors");
        save_features(&p, &meta, &feats, &split)?;
        written.push(p);
    }
    let swept = sweep(model, ds, &feats, cfg, features_seconds, progress)?;
    let sha = pragma_store::writer::model_sha256(model)?;
    for (mut probe, name) in [
        (swept.logistic, "probe.safetensors"),
        (swept.diff_means, "probe-diff-means.safetensors"),
    ] {
        probe.meta.model_sha256 = Some(sha.clone());
        let p = out.join(name);
        probe.save(&p)?;
        written.push(p);
    }
    let report = swept.report;
    let p = out.join("report.md");
    pragma_model::io::write_atomic(&p, report.markdown().as_bytes())?;
    written.push(p);
    let p = out.join("results.json");
    pragma_model::io::write_json(&p, &report)?;
    written.push(p);
    let p = out.join("sweep.svg");
    plot_svg(&report, &p)?;
    written.push(p);
    Ok(TrainOutput {
        report,
        files: written,
    })
}
