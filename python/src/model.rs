//! `Model`: a hooked model with numpy in and out (TransformerLens' `HookedTransformer`
//! surface: `to_tokens`, `run_with_cache`, `generate`), `ActivationCache`, and the
//! streaming `Generation` iterator.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use numpy::{PyArray1, PyArrayMethods};
use pragma_methods::probe::Probe as RsProbe;
use pragma_model::generate::{generate_one, item_rng, sample, GenerateOptions, Sampling};
use pragma_model::hooks::{Cache, HookPoint, Hooks};
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, KvCache, Logits};
use pragma_model::tokenizer::ChatMessage;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use rand::rngs::StdRng;

use crate::hooks::{build_hooks, raise_hook_error, ErrorSlot, Hook};
use crate::methods::PyProbe as Probe;
use crate::{err, to_numpy, PragmaError};

/// Activations by TransformerLens hook name: numpy float32, batch axis first, rows
/// left-padded to the longest input (see `attention_mask`).
#[pyclass(module = "pragma_interp._native")]
pub struct ActivationCache {
    names: Vec<String>,
    arrays: Vec<Py<PyAny>>,
    pad: Vec<usize>,
    columns: usize,
}

impl ActivationCache {
    fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

#[pymethods]
impl ActivationCache {
    /// `cache["blocks.5.hook_resid_post"]` or `cache["resid_post", 5]` (TransformerLens'
    /// short names: `resid_pre`, `attn_out`, `pattern`, `z`, `q`, `post`, ...).
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let name: String = if let Ok(t) = key.downcast::<PyTuple>() {
            let short: String = t.get_item(0)?.extract()?;
            let layer: i64 = t.get_item(1)?.extract()?;
            let candidates = [
                format!("blocks.{layer}.hook_{short}"),
                format!("blocks.{layer}.attn.hook_{short}"),
                format!("blocks.{layer}.mlp.hook_{short}"),
                format!("blocks.{layer}.ln1.hook_{short}"),
                format!("blocks.{layer}.ln2.hook_{short}"),
            ];
            candidates
                .into_iter()
                .find(|c| self.find(c).is_some())
                .ok_or_else(|| {
                    PyKeyError::new_err(format!("no cached activation for ({short:?}, {layer})"))
                })?
        } else {
            key.extract()?
        };
        match self.find(&name) {
            Some(i) => Ok(self.arrays[i].clone_ref(py)),
            None => Err(PyKeyError::new_err(format!(
                "{name:?} is not in this cache ({} names; e.g. {:?}); pass it in names_filter",
                self.names.len(),
                self.names.iter().take(3).collect::<Vec<_>>()
            ))),
        }
    }

    fn __contains__(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn __len__(&self) -> usize {
        self.names.len()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        PyList::new(slf.py(), &slf.names)?
            .try_iter()
            .map(|i| i.into_any())
    }

    fn keys(&self) -> Vec<String> {
        self.names.clone()
    }

    fn items<'py>(&self, py: Python<'py>) -> Vec<(String, Py<PyAny>)> {
        self.names
            .iter()
            .zip(&self.arrays)
            .map(|(n, a)| (n.clone(), a.clone_ref(py)))
            .collect()
    }

    /// Left padding of each row (its first real token sits at column `pad[b]`).
    #[getter]
    fn pad(&self) -> Vec<usize> {
        self.pad.clone()
    }

    /// `[batch, pos]` int64: 1 at real tokens, 0 at left padding.
    #[getter]
    fn attention_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let t = self.columns;
        let v: Vec<i64> = self
            .pad
            .iter()
            .flat_map(|&p| (0..t).map(move |c| i64::from(c >= p)))
            .collect();
        Ok(PyArray1::from_vec(py, v)
            .reshape([self.pad.len(), t])?
            .into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "ActivationCache({} hooks, batch {}, pos {})",
            self.names.len(),
            self.pad.len(),
            self.columns
        )
    }
}

/// A hooked model: a .gguf file, a Hugging Face folder or a built-in name
/// (`smollm2-135m-instruct`, fetched on first use).
#[pyclass(module = "pragma_interp._native", subclass, frozen)]
pub struct Model {
    pub(crate) inner: Arc<pragma_model::Model>,
}

impl Model {
    /// Token ids of one input: text (BOS first, as `to_tokens`) or ids.
    fn one_ids(&self, input: &Bound<'_, PyAny>, prepend_bos: bool) -> PyResult<Vec<u32>> {
        if let Ok(text) = input.extract::<String>() {
            return self.to_tokens(&text, prepend_bos);
        }
        let ids: Vec<u32> = input.extract().map_err(|_| {
            PragmaError::new_err(
                "input: expected a string, a list of token ids, or a list of either",
            )
        })?;
        let vocab = self.inner.cfg().vocab_size;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(err(format!(
                "token id {bad} is out of range: the vocabulary has {vocab} tokens"
            )));
        }
        if ids.is_empty() {
            return Err(err("input: expected at least one token, found none"));
        }
        Ok(ids)
    }

    /// One or more inputs: a string or ids is one row; a list of strings or of id lists
    /// (or a 2-D array) is a batch.
    fn rows(&self, input: &Bound<'_, PyAny>, prepend_bos: bool) -> PyResult<Vec<Vec<u32>>> {
        if input.extract::<String>().is_err() {
            if let Ok(items) = input.extract::<Vec<Bound<'_, PyAny>>>() {
                let nested = items.first().is_some_and(|x| {
                    x.extract::<String>().is_ok() || x.extract::<Vec<u32>>().is_ok()
                });
                if nested {
                    return items.iter().map(|x| self.one_ids(x, prepend_bos)).collect();
                }
            }
        }
        Ok(vec![self.one_ids(input, prepend_bos)?])
    }

    fn points(&self, names_filter: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<HookPoint>> {
        let cfg = self.inner.cfg();
        let Some(f) = names_filter else {
            return Ok(HookPoint::all_for(cfg));
        };
        let pats: Vec<String> = match f.extract::<String>() {
            Ok(s) => vec![s],
            Err(_) => f.extract().map_err(|_| {
                PragmaError::new_err(
                    "names_filter: expected a hook name, a pattern, or a list of them",
                )
            })?,
        };
        let mut pts = Vec::new();
        for p in &pats {
            for h in HookPoint::resolve_pattern(p, cfg.n_layers).map_err(err)? {
                if !pts.contains(&h) {
                    pts.push(h);
                }
            }
        }
        Ok(pts)
    }

    /// One batched forward under `hooks` with `captures` added after them.
    fn forward(
        &self,
        py: Python<'_>,
        rows: Vec<Vec<u32>>,
        hooks: (Hooks, ErrorSlot),
        captures: &[HookPoint],
    ) -> PyResult<(Option<Tensor>, Cache, Vec<usize>)> {
        let (mut hooks, errors) = hooks;
        for p in captures {
            hooks.capture(*p);
        }
        let model = self.inner.clone();
        let ctx = model.cfg().context_length;
        if let Some(r) = rows.iter().find(|r| r.len() > ctx) {
            return Err(err(format!(
                "input of {} tokens is longer than the model's context of {ctx}",
                r.len()
            )));
        }
        let out = py.allow_threads(move || {
            let batch = Batch::new(&rows, model.device())?;
            let pad = batch.pad.clone();
            let (l, c) = model.transformer.forward(&batch, &hooks, Logits::All)?;
            Ok::<_, pragma_model::Error>((l, c, pad))
        });
        raise_hook_error(out, &errors)
    }

    fn prompt_ids(&self, prompt: &Bound<'_, PyAny>, chat: bool) -> PyResult<Vec<u32>> {
        if chat {
            let text: String = prompt
                .extract()
                .map_err(|_| PragmaError::new_err("prompt: chat=True expects a string"))?;
            let msgs = [ChatMessage::new("user", &text)];
            return Ok(self
                .inner
                .tokenizer
                .build_input(&Prompt::chat(&msgs), InputRule::default())
                .map_err(err)?
                .ids);
        }
        self.one_ids(prompt, true)
    }
}

fn all_hooks(hooks: Option<Vec<Hook>>, steer: Option<Vec<Hook>>) -> Vec<Hook> {
    let mut v = steer.unwrap_or_default();
    v.extend(hooks.unwrap_or_default());
    v
}

#[pymethods]
impl Model {
    #[new]
    fn new(py: Python<'_>, spec: &str) -> PyResult<Self> {
        let spec = spec.to_string();
        let m = py
            .allow_threads(|| pragma_model::Model::load(&spec, &mut |m| eprintln!("{m}")))
            .map_err(err)?;
        Ok(Model { inner: Arc::new(m) })
    }

    /// Sizes: n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, n_ctx.
    #[getter]
    fn cfg<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.cfg();
        let d = PyDict::new(py);
        d.set_item("n_layers", c.n_layers)?;
        d.set_item("d_model", c.d_model)?;
        d.set_item("n_heads", c.n_heads)?;
        d.set_item("n_kv_heads", c.n_kv_heads)?;
        d.set_item("d_head", c.d_head)?;
        d.set_item("d_mlp", c.d_mlp)?;
        d.set_item("d_vocab", c.vocab_size)?;
        d.set_item("n_ctx", c.context_length)?;
        Ok(d)
    }

    /// Token ids as pragma builds them (BOS first unless `prepend_bos=False`).
    #[pyo3(signature = (text, prepend_bos = true))]
    fn to_tokens(&self, text: &str, prepend_bos: bool) -> PyResult<Vec<u32>> {
        let rule = InputRule {
            bos: prepend_bos,
            ..InputRule::default()
        };
        Ok(self
            .inner
            .tokenizer
            .build_input(&Prompt::Text(text), rule)
            .map_err(err)?
            .ids)
    }

    /// Text of token ids.
    fn to_string(&self, ids: Vec<u32>) -> PyResult<String> {
        self.inner.tokenizer.decode(&ids).map_err(err)
    }

    /// Token ids of `[{"role": ..., "content": ...}]` in the model's chat template.
    #[pyo3(signature = (messages, add_generation_prompt = true))]
    fn apply_chat_template(
        &self,
        messages: &Bound<'_, PyList>,
        add_generation_prompt: bool,
    ) -> PyResult<Vec<u32>> {
        let mut msgs = Vec::new();
        for m in messages.iter() {
            let role: String = m.get_item("role")?.extract()?;
            let content: String = m.get_item("content")?.extract()?;
            msgs.push(ChatMessage::new(&role, &content));
        }
        let prompt = Prompt::Chat {
            messages: &msgs,
            add_generation_prompt,
        };
        Ok(self
            .inner
            .tokenizer
            .build_input(&prompt, InputRule::default())
            .map_err(err)?
            .ids)
    }

    /// Every hook point of this model, TransformerLens names.
    fn hook_names(&self) -> Vec<String> {
        HookPoint::all_for(self.inner.cfg())
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// Logits `[batch, pos, d_vocab]` float32 under `hooks` (TransformerLens'
    /// `run_with_hooks`). `input`: a string, token ids, or a list of either (a batch,
    /// left-padded to the longest).
    #[pyo3(signature = (input, hooks = None, prepend_bos = true))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        hooks: Option<Vec<Hook>>,
        prepend_bos: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rows = self.rows(input, prepend_bos)?;
        let h = build_hooks(&self.inner, hooks.as_deref().unwrap_or(&[]))?;
        let (logits, _, _) = self.forward(py, rows, h, &[])?;
        to_numpy(py, &logits.ok_or_else(|| err("no logits"))?)
    }

    /// `model(input)`: the logits, as `run`.
    #[pyo3(signature = (input, hooks = None, prepend_bos = true))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        hooks: Option<Vec<Hook>>,
        prepend_bos: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, input, hooks, prepend_bos)
    }

    /// Logits `[batch, pos, d_vocab]` and an ActivationCache of `names_filter` (hook
    /// names or wildcard patterns such as `blocks.*.hook_resid_post`; default: every
    /// hook), under `hooks` (captures see the interventions' results). `input` as `run`.
    #[pyo3(signature = (input, names_filter = None, hooks = None, prepend_bos = true))]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        names_filter: Option<&Bound<'py, PyAny>>,
        hooks: Option<Vec<Hook>>,
        prepend_bos: bool,
    ) -> PyResult<(Bound<'py, PyAny>, ActivationCache)> {
        let rows = self.rows(input, prepend_bos)?;
        let points = self.points(names_filter)?;
        let h = build_hooks(&self.inner, hooks.as_deref().unwrap_or(&[]))?;
        let (logits, cache, pad) = self.forward(py, rows, h, &points)?;
        let logits = logits.ok_or_else(|| err("no logits"))?;
        let columns = logits.dim(1).map_err(err)?;
        let mut names = Vec::with_capacity(points.len());
        let mut arrays = Vec::with_capacity(points.len());
        for p in &points {
            let t = cache.get(*p).map_err(err)?;
            names.push(p.to_string());
            arrays.push(to_numpy(py, &t)?.unbind());
        }
        let cache = ActivationCache {
            names,
            arrays,
            pad,
            columns,
        };
        Ok((to_numpy(py, &logits)?, cache))
    }

    /// Seconds of the forward alone (inside Rust: no conversion to numpy) of
    /// `run_with_cache(input, names_filter)`, the best of `reps`; for the overhead
    /// benchmark (`scripts/bench/python_bindings.py`).
    #[pyo3(signature = (input, names_filter = None, reps = 1))]
    fn _forward_seconds(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        names_filter: Option<&Bound<'_, PyAny>>,
        reps: usize,
    ) -> PyResult<f64> {
        let rows = self.rows(input, true)?;
        let points = self.points(names_filter)?;
        let mut hooks = Hooks::new();
        for p in &points {
            hooks.capture(*p);
        }
        let model = self.inner.clone();
        py.allow_threads(move || {
            let mut best = f64::INFINITY;
            for _ in 0..reps.max(1) {
                let t = std::time::Instant::now();
                let batch = Batch::new(&rows, model.device())?;
                let (_l, c) = model.transformer.forward(&batch, &hooks, Logits::All)?;
                for p in &points {
                    c.get(*p)?;
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            Ok::<_, pragma_model::Error>(best)
        })
        .map_err(err)
    }

    /// A continuation of `prompt` (text, or ids; a user message in the chat template with
    /// `chat=True`): greedy at temperature 0, else sampled (`top_p`, `top_k`, `seed`).
    /// `steer` and `hooks` are Hook values applied while generating (`steer` first).
    /// Returns the text; with `stream=True`, an iterator of `Token`s (id, text, and the
    /// `monitor` probes' scores of each token, read where it is the input).
    #[pyo3(signature = (prompt, max_tokens = 32, temperature = 0.0, top_p = 1.0, top_k = 0,
                        seed = 0, chat = false, hooks = None, steer = None, monitor = None,
                        stream = false))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        max_tokens: usize,
        temperature: f64,
        top_p: f64,
        top_k: usize,
        seed: u64,
        chat: bool,
        hooks: Option<Vec<Hook>>,
        steer: Option<Vec<Hook>>,
        monitor: Option<&Bound<'_, PyAny>>,
        stream: bool,
    ) -> PyResult<Py<PyAny>> {
        let specs = all_hooks(hooks, steer);
        let (hooks, errors) = build_hooks(&self.inner, &specs)?;
        let ids = self.prompt_ids(prompt, chat)?;
        let sampling = Sampling {
            temperature,
            top_p,
            top_k,
            seed,
        };
        sampling.validate().map_err(err)?;
        let monitors: Vec<Probe> = match monitor {
            None => vec![],
            Some(m) => match m.extract::<Probe>() {
                Ok(p) => vec![p],
                Err(_) => m.extract().map_err(|_| {
                    PragmaError::new_err("monitor: expected a Probe or a list of Probes")
                })?,
            },
        };
        if stream {
            let g = Generation::start(
                py,
                self.inner.clone(),
                ids,
                hooks,
                errors,
                sampling,
                max_tokens,
                &monitors,
            )?;
            return Ok(Py::new(py, g)?.into_any());
        }
        if !monitors.is_empty() {
            return Err(err(
                "monitor: scores come with each token; pass stream=True and read token.scores",
            ));
        }
        let model = self.inner.clone();
        let opts = GenerateOptions {
            max_tokens,
            sampling,
            stop_tokens: model.tokenizer.info.stop_tokens.clone(),
        };
        let out = py.allow_threads(move || {
            generate_one(&model.transformer, &ids, 0, &opts, &hooks, |_, _| true)
        });
        let (tokens, _) = raise_hook_error(out, &errors)?;
        let stop = &self.inner.tokenizer.info.stop_tokens;
        let kept: Vec<u32> = tokens.into_iter().filter(|t| !stop.contains(t)).collect();
        Ok(self
            .inner
            .tokenizer
            .decode(&kept)
            .map_err(err)?
            .into_pyobject(py)?
            .into_any()
            .unbind())
    }

    fn __repr__(&self) -> String {
        let c = self.inner.cfg();
        format!(
            "pragma_interp.Model({:?}: {} layers, d_model {}, {} heads)",
            self.inner.info.spec, c.n_layers, c.d_model, c.n_heads
        )
    }
}

/// One generated token: its id, its text (the new characters; pieces of a multi-byte
/// character wait for the rest), and each monitor's score (`scores`: the probe's raw
/// score, a logit for logistic probes) and probability (`probs`; logistic probes only).
#[pyclass(module = "pragma_interp._native", frozen, get_all)]
pub struct Token {
    id: u32,
    text: String,
    scores: Py<PyDict>,
    probs: Py<PyDict>,
}

#[pymethods]
impl Token {
    fn __repr__(&self) -> String {
        format!("Token(id={}, text={:?})", self.id, self.text)
    }
}

struct Monitor {
    name: String,
    probe: Arc<RsProbe>,
    point: HookPoint,
    /// Activations at `point` so far (after the attention sink), `[t, d]` each.
    rows: Vec<Tensor>,
}

struct GenState {
    kv: KvCache,
    hooks: Hooks,
    errors: ErrorSlot,
    sampling: Sampling,
    rng: StdRng,
    next: Vec<f32>,
    left: usize,
    monitors: Vec<Monitor>,
}

/// A streaming generation: iterate for `Token`s. Each step samples one token and runs
/// one forward (hooks as given; monitors capture at their hooks). Stop early by leaving
/// the loop; Ctrl-C interrupts between tokens.
#[pyclass(module = "pragma_interp._native")]
pub struct Generation {
    model: Arc<pragma_model::Model>,
    state: Option<GenState>,
    tokens: Vec<u32>,
    shown: usize,
}

impl Generation {
    #[allow(clippy::too_many_arguments)]
    fn start(
        py: Python<'_>,
        model: Arc<pragma_model::Model>,
        ids: Vec<u32>,
        hooks: Hooks,
        errors: ErrorSlot,
        sampling: Sampling,
        max_tokens: usize,
        probes: &[Probe],
    ) -> PyResult<Generation> {
        let mut monitors = Vec::new();
        let mut h = hooks.clone();
        for p in probes {
            let point = p.inner.hook_point(&model).map_err(err)?;
            h.capture(point);
            monitors.push(Monitor {
                name: p.name.clone(),
                probe: p.inner.clone(),
                point,
                rows: Vec::new(),
            });
        }
        let ctx = model.cfg().context_length;
        if ids.len() >= ctx {
            return Err(err(format!(
                "prompt of {} tokens leaves no room in the model's context of {ctx}",
                ids.len()
            )));
        }
        let skip = pragma_methods::steering::sink_len(&model, &ids);
        let m = model.clone();
        let h2 = h.clone();
        let out = py.allow_threads(move || {
            let h = h2;
            let mut kv = KvCache::new(m.cfg().n_layers, vec![0]);
            let mut cache = Cache::new(vec![0]);
            let t = Tensor::new(&ids[..], m.device())?.unsqueeze(0)?;
            let logits = m
                .transformer
                .forward_step(&t, &mut kv, &h, Logits::Last, &mut cache)?;
            Ok::<_, pragma_model::Error>((kv, cache, logits))
        });
        let (kv, cache, logits) = raise_hook_error(out, &errors)?;
        let next = logits
            .ok_or_else(|| err("no logits"))?
            .to_dtype(DType::F32)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_vec1())
            .map_err(err)?;
        for m in &mut monitors {
            let acts = cache.get_row(m.point, 0).map_err(err)?;
            let t = acts.dim(0).map_err(err)?;
            m.rows.push(acts.narrow(0, skip, t - skip).map_err(err)?);
        }
        let rng = item_rng(sampling.seed, 0);
        Ok(Generation {
            model,
            state: (max_tokens > 0).then_some(GenState {
                kv,
                hooks: h,
                errors,
                sampling,
                rng,
                next,
                left: max_tokens,
                monitors,
            }),
            tokens: Vec::new(),
            shown: 0,
        })
    }
}

#[pymethods]
impl Generation {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Token>> {
        let model = self.model.clone();
        let Some(g) = self.state.as_mut() else {
            return Ok(None);
        };
        let tok = sample(&g.next, &g.sampling, &mut g.rng);
        g.left -= 1;
        if model.tokenizer.info.stop_tokens.contains(&tok) {
            self.state = None;
            return Ok(None);
        }
        self.tokens.push(tok);
        let more = g.left > 0 && g.kv.len < model.cfg().context_length;
        if more || !g.monitors.is_empty() {
            let (kv, hooks) = (&mut g.kv, &g.hooks);
            let m = model.clone();
            let out = py.allow_threads(|| {
                let mut cache = Cache::new(vec![0]);
                let t = Tensor::new(&[tok], m.device())?.unsqueeze(0)?;
                let want = if more { Logits::Last } else { Logits::None };
                let l = m
                    .transformer
                    .forward_step(&t, kv, hooks, want, &mut cache)?;
                Ok::<_, pragma_model::Error>((l, cache))
            });
            let (logits, cache) = raise_hook_error(out, &g.errors)?;
            if let Some(l) = logits {
                g.next = l
                    .to_dtype(DType::F32)
                    .and_then(|l| l.flatten_all())
                    .and_then(|l| l.to_vec1())
                    .map_err(err)?;
            }
            for m in &mut g.monitors {
                m.rows.push(cache.get_row(m.point, 0).map_err(err)?);
            }
        }
        let scores = PyDict::new(py);
        let probs = PyDict::new(py);
        for m in &g.monitors {
            let all = Tensor::cat(&m.rows, 0).map_err(err)?;
            let s = *m
                .probe
                .score_rows(&all)
                .map_err(err)?
                .last()
                .unwrap_or(&f64::NAN);
            scores.set_item(&m.name, s)?;
            if let Some(p) = m.probe.probability(s) {
                probs.set_item(&m.name, p)?;
            }
        }
        // The new characters; an incomplete multi-byte character waits (unless last).
        let text = model.tokenizer.decode(&self.tokens).map_err(err)?;
        let piece = if text.ends_with('\u{FFFD}') && more {
            String::new()
        } else {
            let p = text.get(self.shown..).unwrap_or_default().to_string();
            self.shown = text.len();
            p
        };
        if !more {
            self.state = None;
        }
        Ok(Some(Token {
            id: tok,
            text: piece,
            scores: scores.unbind(),
            probs: probs.unbind(),
        }))
    }

    /// Token ids generated so far.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.tokens.clone()
    }
}
