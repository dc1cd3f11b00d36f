//! The methods, as thin wrappers over `pragma_store` and `pragma_methods`: `Store`
//! (activation stores), `SteeringVector`, `Probe` (with `Probe.train`'s sweep) and `SAE`.
//! Every computation is a call into the Rust crates; this file converts arguments and
//! results.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use numpy::PyArray1;
use pragma_methods::probe::{self, Probe as RsProbe, ProbeConfig};
use pragma_methods::sae::training::{self as sae_training, LogLine, StoreHook};
use pragma_methods::sae::{Arch, LatentEdit, Sae as RsSae, Splice};
use pragma_methods::steering::{self, Method, Operator, Pair, Position, SteeringVector as RsVec};
use pragma_model::hooks::HookPoint;
use pragma_model::input::InputRule;
use pragma_store::reader::{Pool, Store as RsStore};
use pragma_store::Permutation;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::hooks::{arr, Edit, Hook};
use crate::model::Model;
use crate::{err, to_numpy, PragmaError};

/// A serde value as the Python object `json.loads` gives.
fn to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let s = serde_json::to_string(v).map_err(err)?;
    py.import("json")?.call_method1("loads", (s,))
}

/// `[n, d]` float32 from an array-like `[d]` or `[n, d]` whose last axis is `d`.
fn rows_of(x: &Bound<'_, PyAny>, d: usize, what: &str) -> PyResult<(Tensor, Vec<usize>)> {
    let a = arr(x)?;
    if a.shape.last() != Some(&d) {
        return Err(err(format!(
            "{what}: expected an array whose last axis is {d}, found shape {:?}",
            a.shape
        )));
    }
    let lead = a.shape[..a.shape.len() - 1].to_vec();
    let n = lead.iter().product::<usize>();
    let t = Tensor::from_vec(a.values, (n, d), &Device::Cpu).map_err(err)?;
    Ok((t, lead))
}

/// Layers as a list of ints or a spec string: `'10'`, `'6..20'`, `'10,12'`, `'*'`, `'-1'`.
fn layers_of(x: &Bound<'_, PyAny>, n_layers: usize) -> PyResult<Vec<usize>> {
    if let Ok(v) = x.extract::<Vec<i64>>() {
        return v
            .into_iter()
            .map(|l| {
                let l = if l < 0 { l + n_layers as i64 } else { l };
                (0..n_layers as i64)
                    .contains(&l)
                    .then_some(l as usize)
                    .ok_or_else(|| {
                        err(format!(
                            "layer {l} is out of range: the model has {n_layers} layers"
                        ))
                    })
            })
            .collect();
    }
    let spec: String = x.extract().map_err(|_| {
        PragmaError::new_err("layers: expected a list of ints or a spec such as '6..20'")
    })?;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        for p in HookPoint::resolve_pattern(&format!("blocks.{part}.hook_resid_post"), n_layers)
            .map_err(|_| {
                err(format!(
                    "layers '{part}': expected N, A..B, A..=B or * within 0..{n_layers}"
                ))
            })?
        {
            if let Some(l) = p.layer().filter(|l| !out.contains(l)) {
                out.push(l);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Store

/// An activation store written by `pragma cache`: memory-mapped shards, rows are tokens
/// in corpus order (`0..n_tokens`).
#[pyclass(module = "pragma_interp._native", frozen)]
pub struct Store {
    inner: Arc<RsStore>,
}

#[pymethods]
impl Store {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        Ok(Store {
            inner: Arc::new(RsStore::open(&path).map_err(err)?),
        })
    }

    /// The store's folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir.clone()
    }

    /// Rows (tokens) in the store.
    #[getter]
    fn n_tokens(&self) -> u64 {
        self.inner.n_tokens()
    }

    fn __len__(&self) -> usize {
        self.inner.n_tokens() as usize
    }

    /// The hook names stored, e.g. `['blocks.6.hook_resid_post']`.
    #[getter]
    fn hooks(&self) -> Vec<String> {
        self.inner
            .manifest
            .hooks
            .iter()
            .map(|h| h.name.clone())
            .collect()
    }

    /// `manifest.json` as a dict (model, hooks, settings, dataset, shards).
    #[getter]
    fn manifest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.manifest)
    }

    /// Rows `rows` of `hook`: float32 `[len(rows), width]`.
    fn gather<'py>(
        &self,
        py: Python<'py>,
        hook: &str,
        rows: Vec<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.inner.clone();
        let hook = hook.to_string();
        let t = py
            .allow_threads(move || s.gather(&hook, &rows))
            .map_err(err)?;
        to_numpy(py, &t)
    }

    /// Uniformly shuffled batches of `hook`'s rows, float32 `[batch_size, width]` (the
    /// last may be shorter), seeded; memory is one batch, whatever the store's size.
    #[pyo3(signature = (hook, batch_size = 4096, seed = 0))]
    fn batches(&self, hook: &str, batch_size: usize, seed: u64) -> PyResult<StoreBatches> {
        self.inner.width(hook).map_err(err)?;
        let n = self.inner.n_tokens();
        Ok(StoreBatches {
            store: self.inner.clone(),
            hook: hook.to_string(),
            order: Permutation::new(n, seed),
            batch: batch_size.max(1) as u64,
            next: 0,
        })
    }

    /// Per-token tables of rows `start..end`: a dict of uint32 arrays `doc`, `seq`, `pos`
    /// (position in its sequence) and `token` (id).
    #[pyo3(signature = (start = 0, end = None))]
    fn tokens<'py>(
        &self,
        py: Python<'py>,
        start: u64,
        end: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let t = self
            .inner
            .token_rows(start, end.unwrap_or(self.inner.n_tokens()))
            .map_err(err)?;
        let d = PyDict::new(py);
        d.set_item("doc", PyArray1::from_vec(py, t.doc))?;
        d.set_item("seq", PyArray1::from_vec(py, t.seq))?;
        d.set_item("pos", PyArray1::from_vec(py, t.pos))?;
        d.set_item("token", PyArray1::from_vec(py, t.token))?;
        Ok(d)
    }

    /// The text around row `row`: up to `before` tokens of its sequence, the token in
    /// `[[...]]`, and `after` tokens, decoded with `model`'s tokenizer.
    #[pyo3(signature = (row, model, before = 8, after = 4))]
    fn context(&self, row: u64, model: &Model, before: usize, after: usize) -> PyResult<String> {
        let table = self
            .inner
            .token_rows(0, (row + after as u64 + 1).min(self.inner.n_tokens()))
            .map_err(err)?;
        self.inner
            .context(&table, &model.inner.tokenizer, row, before, after)
            .map_err(err)
    }

    /// One vector per document: its last token's (`pool="last"`) or the mean over its
    /// tokens, leaving out an opening BOS. Returns (document ids, float32 `[n_docs, width]`).
    #[pyo3(signature = (hook, pool = "last"))]
    fn pooled<'py>(
        &self,
        py: Python<'py>,
        hook: &str,
        pool: &str,
    ) -> PyResult<(Vec<u32>, Bound<'py, PyAny>)> {
        let pool = Pool::parse(pool).map_err(err)?;
        let (docs, t) = self
            .inner
            .pooled(hook, pool, self.inner.manifest.settings.bos)
            .map_err(err)?;
        Ok((docs, to_numpy(py, &t)?))
    }

    fn __repr__(&self) -> String {
        format!(
            "pragma_interp.Store({:?}: {} tokens, hooks {:?})",
            self.inner.dir,
            self.inner.n_tokens(),
            self.hooks()
        )
    }
}

/// Iterator of shuffled batches (see `Store.batches`).
#[pyclass(module = "pragma_interp._native")]
pub struct StoreBatches {
    store: Arc<RsStore>,
    hook: String,
    order: Permutation,
    batch: u64,
    next: u64,
}

#[pymethods]
impl StoreBatches {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let n = self.order.len();
        if self.next >= n {
            return Ok(None);
        }
        let rows: Vec<u64> = self
            .order
            .range(self.next, (self.next + self.batch).min(n))
            .collect();
        self.next += self.batch;
        let t = self.store.gather(&self.hook, &rows).map_err(err)?;
        Ok(Some(to_numpy(py, &t)?))
    }

    fn __len__(&self) -> usize {
        self.order.len().div_ceil(self.batch) as usize
    }
}

// ---------------------------------------------------------------------------------------
// Steering vectors

/// One direction per layer (`[d_model]` each) at a residual site, trained from
/// contrastive pairs (difference of means, or PCA of differences: Rimsky et al. 2024,
/// Zou et al. 2023), saved as safetensors with its provenance.
#[pyclass(module = "pragma_interp._native", frozen)]
pub struct SteeringVector {
    inner: Arc<RsVec>,
}

fn pairs_of(pairs: &Bound<'_, PyAny>) -> PyResult<(Vec<Pair>, String)> {
    if let Ok(path) = pairs.extract::<PathBuf>() {
        let p = steering::read_pairs(&path).map_err(err)?;
        return Ok((p, steering::sha256_file(&path).map_err(err)?));
    }
    let json = pairs.py().import("json")?;
    let items: Vec<Bound<'_, PyAny>> = pairs
        .extract()
        .map_err(|_| PragmaError::new_err("pairs: expected a JSONL path or a list of pairs"))?;
    let mut out = Vec::new();
    let mut lines = String::new();
    for (i, item) in items.iter().enumerate() {
        // (positive, negative) tuples, or dicts as in the JSONL files.
        let item = match item.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>() {
            Ok((a, b)) if !item.is_instance_of::<PyDict>() => {
                let d = PyDict::new(item.py());
                d.set_item("positive", a)?;
                d.set_item("negative", b)?;
                d.into_any()
            }
            _ => item.clone(),
        };
        let line: String = json.call_method1("dumps", (&item,))?.extract()?;
        let p: Pair = serde_json::from_str(&line).map_err(|e| {
            err(format!(
                "pairs[{i}]: expected (positive, negative) or {{\"positive\": ..., \"negative\": ...}}: {e}"
            ))
        })?;
        if p.positive == p.negative {
            return Err(err(format!(
                "pairs[{i}]: positive and negative are identical"
            )));
        }
        lines.push_str(&line);
        lines.push('\n');
        out.push(p);
    }
    if out.is_empty() {
        return Err(err("pairs: expected at least one pair, found none"));
    }
    use sha2::Digest;
    Ok((out, format!("{:x}", sha2::Sha256::digest(lines.as_bytes()))))
}

#[pymethods]
impl SteeringVector {
    /// Train on `model` from `pairs` (a JSONL path as `pragma steer train` reads, or a
    /// list of `(positive, negative)` texts or dicts), at `layers` (ints or a spec such
    /// as `'8..14'`) of `site`. `method`: `mean`, `pca-diff`, `pca-center`; `position`:
    /// `last`, `mean`, `answer`.
    #[staticmethod]
    #[pyo3(signature = (model, pairs, layers, site = "hook_resid_post", method = "mean", position = "last"))]
    fn train(
        py: Python<'_>,
        model: &Model,
        pairs: &Bound<'_, PyAny>,
        layers: &Bound<'_, PyAny>,
        site: &str,
        method: &str,
        position: &str,
    ) -> PyResult<Self> {
        let (pairs, sha) = pairs_of(pairs)?;
        let layers = layers_of(layers, model.inner.cfg().n_layers)?;
        let cfg = steering::TrainConfig {
            site: site.to_string(),
            layers,
            method: Method::parse(method).map_err(err)?,
            position: Position::parse(position).map_err(err)?,
            input: InputRule::default(),
        };
        let m = model.inner.clone();
        let v = py
            .allow_threads(move || -> pragma_methods::Result<RsVec> {
                let mut v = steering::train(&m, &pairs, &sha, &cfg)?;
                v.meta.model_sha256 = Some(pragma_store::writer::model_sha256(&m)?);
                Ok(v)
            })
            .map_err(err)?;
        Ok(SteeringVector { inner: Arc::new(v) })
    }

    /// A vector file from `pragma steer train` (or `save`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(SteeringVector {
            inner: Arc::new(RsVec::load(&path).map_err(err)?),
        })
    }

    /// Write as safetensors with provenance (atomic).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(err)
    }

    #[getter]
    fn layers(&self) -> Vec<usize> {
        self.inner.meta.layers.clone()
    }

    /// Provenance: model, site, layers, method, position, pairs' sha256, norms, ...
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.meta)
    }

    /// float32 `[len(layers), d_model]`, in `layers` order.
    #[getter]
    fn directions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let t = Tensor::stack(&self.inner.directions, 0).map_err(err)?;
        to_numpy(py, &t)
    }

    /// The direction at `layer`, float32 `[d_model]`.
    fn direction<'py>(&self, py: Python<'py>, layer: usize) -> PyResult<Bound<'py, PyAny>> {
        let i = self
            .inner
            .meta
            .layers
            .iter()
            .position(|&l| l == layer)
            .ok_or_else(|| {
                err(format!(
                    "layer {layer} is not in this vector (it has layers {:?})",
                    self.inner.meta.layers
                ))
            })?;
        to_numpy(py, &self.inner.directions[i])
    }

    /// A Hook applying this vector, as `pragma generate --steer`: `op` (`add`, `ablate`,
    /// `ablate-add`) at each of its layers (or only `layers`), scaled by `scale`, at
    /// `positions` (default `from:1`: not the attention sink at position 0).
    #[pyo3(signature = (scale = 1.0, layers = None, positions = "from:1", op = "add"))]
    fn hook(
        &self,
        scale: f32,
        layers: Option<Vec<usize>>,
        positions: &str,
        op: &str,
    ) -> PyResult<Hook> {
        let op = Operator::parse(op).map_err(err)?;
        Ok(Hook::steer(
            self.inner.clone(),
            op,
            scale,
            layers,
            positions,
        ))
    }

    fn __repr__(&self) -> String {
        let m = &self.inner.meta;
        format!(
            "pragma_interp.SteeringVector({} at {} layers {:?}, {:?}, {} pairs)",
            m.model, m.site, m.layers, m.method, m.n_pairs
        )
    }
}

// ---------------------------------------------------------------------------------------
// Probes

/// A linear probe on one hook: `score = w . x + b` (a logit for logistic probes).
#[pyclass(module = "pragma_interp._native", frozen, name = "Probe")]
#[derive(Clone)]
pub struct PyProbe {
    pub(crate) inner: Arc<RsProbe>,
    /// The name monitors report it under.
    #[pyo3(get)]
    pub(crate) name: String,
}

/// What `Probe.train` returns: the report (per-layer test AUROC and accuracy with
/// bootstrap CIs, validation AUROC, baselines) and the best layer's probes.
#[pyclass(module = "pragma_interp._native", frozen, get_all)]
pub struct ProbeSweep {
    report: Py<PyAny>,
    logistic: Py<PyProbe>,
    diff_means: Py<PyProbe>,
    markdown: String,
}

#[pymethods]
impl ProbeSweep {
    fn __repr__(&self) -> String {
        self.markdown.clone()
    }
}

#[pymethods]
impl PyProbe {
    /// A probe file from `pragma probe train` (or `save`); `name` defaults to the file stem.
    #[staticmethod]
    #[pyo3(signature = (path, name = None))]
    fn load(path: PathBuf, name: Option<String>) -> PyResult<Self> {
        let p = RsProbe::load(&path).map_err(err)?;
        let name = name.unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "probe".into())
        });
        Ok(PyProbe {
            inner: Arc::new(p),
            name,
        })
    }

    /// Write as safetensors with provenance (atomic).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(err)
    }

    /// Train logistic-regression (C chosen on validation AUROC) and difference-of-means
    /// probes at every layer of `layers` (ints or a spec, default all), with the
    /// prompting and bag-of-words baselines and bootstrap CIs, as `pragma probe train`.
    /// `data`: a labelled JSONL (`{"text" or "messages", "label"}`).
    #[staticmethod]
    #[pyo3(signature = (model, data, layers = None, site = "hook_resid_post", position = "last",
                        c = vec![1e-4, 1e-3, 1e-2, 0.1, 1.0], split = (0.6, 0.2), seed = 0,
                        bootstrap = 1000, question = None, positive = None))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        model: &Model,
        data: PathBuf,
        layers: Option<&Bound<'_, PyAny>>,
        site: &str,
        position: &str,
        c: Vec<f64>,
        split: (f64, f64),
        seed: u64,
        bootstrap: usize,
        question: Option<String>,
        positive: Option<String>,
    ) -> PyResult<ProbeSweep> {
        let n_layers = model.inner.cfg().n_layers;
        let layers = match layers {
            Some(l) => layers_of(l, n_layers)?,
            None => (0..n_layers).collect(),
        };
        if c.is_empty() || c.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(err("c: expected positive numbers"));
        }
        let ds = probe::read_dataset(&data, positive.as_deref()).map_err(err)?;
        probe::splits(&ds, split, seed).map_err(err)?;
        let cfg = ProbeConfig {
            site: site.to_string(),
            layers,
            position: Position::parse(position).map_err(err)?,
            c_grid: c,
            fractions: split,
            seed,
            bootstrap,
            question: question.or(ds.question.clone()),
            yes: "Yes| Yes".into(),
            no: "No| No".into(),
            input: InputRule::default(),
        };
        let m = model.inner.clone();
        let out = py
            .allow_threads(move || probe::train(&m, &ds, &cfg, &mut |_| {}))
            .map_err(err)?;
        let markdown = out.report.markdown();
        let mk = |p: RsProbe, name: &str| {
            Py::new(
                py,
                PyProbe {
                    inner: Arc::new(p),
                    name: name.to_string(),
                },
            )
        };
        Ok(ProbeSweep {
            report: to_py(py, &out.report)?.unbind(),
            logistic: mk(out.logistic, "logistic")?,
            diff_means: mk(out.diff_means, "diff_means")?,
            markdown,
        })
    }

    /// Provenance and test metrics (hook, method, C, dataset sha256, AUROC and its CI).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.meta)
    }

    /// The hook it reads, e.g. `blocks.12.hook_resid_post`.
    #[getter]
    fn hook_name(&self) -> String {
        self.inner.meta.hook.clone()
    }

    /// `w`, float32 `[d_model]` (raw activation space).
    #[getter]
    fn weights<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        PyArray1::from_vec(py, self.inner.w.clone()).into_any()
    }

    #[getter]
    fn bias(&self) -> f32 {
        self.inner.b
    }

    /// Scores of activations `[n, d_model]` (or `[d_model]`): float64 `[n]`. Mean-pooled
    /// probes score each row with the running mean of the rows up to it.
    fn score<'py>(&self, py: Python<'py>, acts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (x, _) = rows_of(acts, self.inner.meta.d_model, "acts")?;
        let s = self.inner.score_rows(&x).map_err(err)?;
        Ok(PyArray1::from_vec(py, s).into_any())
    }

    /// P(positive class) of activations `[n, d_model]`: sigmoid of the logistic score.
    /// Errors for difference-of-means probes (their scores are not logits).
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        acts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (x, _) = rows_of(acts, self.inner.meta.d_model, "acts")?;
        let p = self
            .inner
            .score_rows(&x)
            .map_err(err)?
            .into_iter()
            .map(|s| self.inner.probability(s))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| {
                err(format!(
                    "a {} probe gives scores, not probabilities",
                    self.inner.meta.method
                ))
            })?;
        Ok(PyArray1::from_vec(py, p).into_any())
    }

    fn __repr__(&self) -> String {
        let m = &self.inner.meta;
        format!(
            "pragma_interp.Probe({:?}: {} at {}, test AUROC {:.3})",
            self.name, m.method, m.hook, m.test_auroc
        )
    }
}

// ---------------------------------------------------------------------------------------
// SAEs

/// A sparse autoencoder in SAELens layout (`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`):
/// loaded from a SAELens or sparsify folder, or trained on a store.
#[pyclass(module = "pragma_interp._native", frozen, name = "SAE")]
pub struct Sae {
    inner: Arc<RsSae>,
}

struct TrainProgress {
    every: u64,
    total: u64,
    /// The KeyboardInterrupt (or other signal exception) that stopped training.
    signal: Option<PyErr>,
}

impl sae_training::Progress for TrainProgress {
    fn start(&mut self, total: u64, resumed: u64) {
        self.total = total;
        self.every = (total / 10).max(1);
        if resumed > 0 {
            eprintln!("resuming at step {resumed} of {total}");
        }
    }

    fn step(&mut self, l: &LogLine) {
        if l.step % self.every == 0 || l.step == self.total {
            eprintln!(
                "step {}/{}: fvu {:.4}, l0 {:.1}, dead {:.3}, {:.0} tok/s",
                l.step, self.total, l.fvu, l.l0, l.dead_fraction, l.tokens_per_second
            );
        }
    }

    fn interrupted(&mut self) -> bool {
        if let Err(e) = Python::with_gil(|py| py.check_signals()) {
            self.signal = Some(e);
        }
        self.signal.is_some()
    }
}

#[pymethods]
impl Sae {
    /// A SAELens folder (`cfg.json` + `sae_weights.safetensors`; standard, topk,
    /// jumprelu, batchtopk) or a sparsify folder.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(Sae {
            inner: Arc::new(RsSae::load(&path).map_err(err)?),
        })
    }

    /// Write a SAELens (v6) folder.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path, None).map_err(err)
    }

    /// Train on `hook` of `store` (control tokens left out) into folder `out`
    /// (checkpoints, log.jsonl, then a SAELens folder); rerunning with the same `out`
    /// resumes, also after Ctrl-C or a kill. `architecture`: `topk`, `batchtopk` (with
    /// `k`), `jumprelu`, `relu`. Returns (SAE, result dict: steps, final_fvu, final_l0,
    /// dead_fraction, tokens_per_second, ...).
    #[staticmethod]
    #[pyo3(signature = (store, hook, out, architecture = "topk", d_sae = 4096, k = None,
                        tokens = 2_000_000, batch_tokens = 4096, lr = None, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        py: Python<'py>,
        store: &Store,
        hook: &str,
        out: PathBuf,
        architecture: &str,
        d_sae: usize,
        k: Option<usize>,
        tokens: u64,
        batch_tokens: usize,
        lr: Option<f64>,
        seed: u64,
    ) -> PyResult<(Sae, Bound<'py, PyAny>)> {
        let arch = Arch::parse(architecture, k).map_err(err)?;
        let cfg = sae_training::TrainConfig {
            tokens,
            batch_tokens,
            lr,
            seed,
            ..sae_training::TrainConfig::new(arch, d_sae)
        };
        let s = store.inner.clone();
        let hook = hook.to_string();
        let mut p = TrainProgress {
            every: 1,
            total: 0,
            signal: None,
        };
        let r = py.allow_threads(|| {
            let src = StoreHook::new(&s, &hook)?;
            sae_training::train(&src, &cfg, &out, &mut p)
        });
        let (sae, result) = match (r, p.signal.take()) {
            (Err(e), Some(signal)) => {
                // Ctrl-C: say where the checkpoint is, then raise KeyboardInterrupt.
                eprintln!("{e}");
                return Err(signal);
            }
            (r, _) => r.map_err(err)?,
        };
        Ok((
            Sae {
                inner: Arc::new(sae),
            },
            to_py(py, &result)?,
        ))
    }

    /// Architecture, d_in, d_sae, hook_name, normalisation and metadata.
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.cfg)
    }

    #[getter]
    fn hook_name(&self) -> String {
        self.inner.cfg.hook_name.clone()
    }

    #[getter(W_enc)]
    fn w_enc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_numpy(py, &self.inner.w_enc)
    }

    #[getter(W_dec)]
    fn w_dec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_numpy(py, &self.inner.w_dec)
    }

    #[getter]
    fn b_enc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_numpy(py, &self.inner.b_enc)
    }

    #[getter]
    fn b_dec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_numpy(py, &self.inner.b_dec)
    }

    /// Latent activations (SAELens `encode`): `x [..., d_in]` -> float32 `[..., d_sae]`.
    fn encode<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (rows, lead) = rows_of(x, self.inner.cfg.d_in, "x")?;
        let s = self.inner.clone();
        let f = py.allow_threads(move || s.encode(&rows)).map_err(err)?;
        let mut shape = lead;
        shape.push(self.inner.cfg.d_sae);
        to_numpy(py, &f.reshape(shape).map_err(err)?)
    }

    /// Reconstruction (SAELens `decode`): `f [..., d_sae]` -> float32 `[..., d_in]`.
    fn decode<'py>(&self, py: Python<'py>, f: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (rows, lead) = rows_of(f, self.inner.cfg.d_sae, "f")?;
        let s = self.inner.clone();
        let out = py.allow_threads(move || s.decode(&rows)).map_err(err)?;
        let mut shape = lead;
        shape.push(self.inner.cfg.d_in);
        to_numpy(py, &out.reshape(shape).map_err(err)?)
    }

    /// `decode(encode(x))` with any input normalisation undone, shaped like `x`.
    fn forward<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (rows, lead) = rows_of(x, self.inner.cfg.d_in, "x")?;
        let s = self.inner.clone();
        let (_, out) = py
            .allow_threads(move || s.forward_with(&rows, &|f| Ok(f.clone())))
            .map_err(err)?;
        let mut shape = lead;
        shape.push(self.inner.cfg.d_in);
        to_numpy(py, &out.reshape(shape).map_err(err)?)
    }

    /// A Hook splicing this SAE into the forward pass at its hook: the activation becomes
    /// the reconstruction, with latents edited (`add={latent: value}`: steering along
    /// `W_dec[latent]`; `clamp={latent: value}`, 0 ablates) and, with `keep_error=True`,
    /// the error term kept (so without edits nothing changes).
    #[pyo3(signature = (add = None, clamp = None, keep_error = true, positions = "from:1"))]
    fn hook(
        &self,
        add: Option<std::collections::BTreeMap<usize, f32>>,
        clamp: Option<std::collections::BTreeMap<usize, f32>>,
        keep_error: bool,
        positions: &str,
    ) -> Hook {
        let mut edits: Vec<LatentEdit> = add
            .unwrap_or_default()
            .into_iter()
            .map(|(latent, value)| LatentEdit::Add { latent, value })
            .collect();
        edits.extend(
            clamp
                .unwrap_or_default()
                .into_iter()
                .map(|(latent, value)| LatentEdit::Clamp { latent, value }),
        );
        let repr = format!(
            "pragma_interp.SAE({}).hook(edits={edits:?}, keep_error={keep_error}, positions={positions:?})",
            self.inner.cfg.hook_name
        );
        Hook::one(
            &self.inner.cfg.hook_name,
            Edit::Splice {
                sae: self.inner.clone(),
                splice: Splice { keep_error, edits },
            },
            positions,
            repr,
        )
    }

    fn __repr__(&self) -> String {
        let c = &self.inner.cfg;
        format!(
            "pragma_interp.SAE({} at {}, d_in {}, d_sae {})",
            c.arch.name(),
            c.hook_name,
            c.d_in,
            c.d_sae
        )
    }
}
