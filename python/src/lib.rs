//! The Python module `pragma_interp._native`: pragma's hooked models with numpy in and
//! out. Conversion only; the work is in `pragma_model`. The GIL is released during
//! loading and forward passes; errors become `PragmaError` with pragma's message.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use numpy::{PyArray1, PyArrayMethods};
use pragma_model::generate::{generate_one, GenerateOptions, Sampling};
use pragma_model::hooks::{Action, HookPoint, Hooks, Positions};
use pragma_model::input::{InputRule, Prompt};
use pragma_model::llama::{Batch, Logits};
use pragma_model::tokenizer::ChatMessage;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

create_exception!(
    _native,
    PragmaError,
    PyException,
    "An error from pragma, with its message."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    PragmaError::new_err(e.to_string())
}

/// A tensor as a float32 numpy array of the same shape (one copy).
fn to_numpy<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape = t.dims().to_vec();
    let v: Vec<f32> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(err)?;
    Ok(PyArray1::from_vec(py, v).reshape(shape)?.into_any())
}

/// One intervention for one call: built by `add`, `ablate`, `zero` or `replace`, passed
/// in a call's `hooks=[...]` (no global state).
#[pyclass(module = "pragma_interp._native", frozen)]
#[derive(Clone)]
struct Hook {
    name: String,
    kind: &'static str,
    values: Vec<f32>,
    shape: Vec<usize>,
    scale: f32,
    positions: String,
}

#[pymethods]
impl Hook {
    fn __repr__(&self) -> String {
        format!(
            "pragma_interp.{}({:?}, shape={:?}, scale={}, positions={:?})",
            self.kind, self.name, self.shape, self.scale, self.positions
        )
    }
}

fn array(values: &Bound<'_, PyAny>) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let a = values
        .call_method1("astype", ("float32",))
        .map_err(|_| PragmaError::new_err("expected a numpy array"))?;
    let shape: Vec<usize> = a.getattr("shape")?.extract()?;
    let flat: Vec<f32> = a.call_method0("ravel")?.call_method0("tolist")?.extract()?;
    Ok((flat, shape))
}

fn hook(
    name: &str,
    kind: &'static str,
    v: (Vec<f32>, Vec<usize>),
    scale: f32,
    positions: &str,
) -> Hook {
    Hook {
        name: name.into(),
        kind,
        values: v.0,
        shape: v.1,
        scale,
        positions: positions.into(),
    }
}

/// `x += scale * vector` at hook `name` (e.g. a steering vector `[d_model]`), at
/// `positions` (`all`, `last`, `generated`, `from:N`, `N..M`, `N`).
#[pyfunction]
#[pyo3(signature = (name, vector, scale = 1.0, positions = "all"))]
fn add(name: &str, vector: &Bound<'_, PyAny>, scale: f32, positions: &str) -> PyResult<Hook> {
    Ok(hook(name, "add", array(vector)?, scale, positions))
}

/// Remove the component along `direction` (normalised): `x -= (x . u) u`.
#[pyfunction]
#[pyo3(signature = (name, direction, positions = "all"))]
fn ablate(name: &str, direction: &Bound<'_, PyAny>, positions: &str) -> PyResult<Hook> {
    Ok(hook(name, "ablate", array(direction)?, 1.0, positions))
}

/// Set the activation at hook `name` to zero.
#[pyfunction]
#[pyo3(signature = (name, positions = "all"))]
fn zero(name: &str, positions: &str) -> Hook {
    hook(name, "zero", (vec![], vec![]), 1.0, positions)
}

/// Set the activation at hook `name` to `value` (broadcast over positions, e.g. a mean).
#[pyfunction]
#[pyo3(signature = (name, value, positions = "all"))]
fn replace(name: &str, value: &Bound<'_, PyAny>, positions: &str) -> PyResult<Hook> {
    Ok(hook(name, "replace", array(value)?, 1.0, positions))
}

/// The interventions of a call, in order; bad names or positions are errors.
fn build_hooks(model: &pragma_model::Model, specs: &[Hook]) -> PyResult<Hooks> {
    let n_layers = model.cfg().n_layers;
    let mut hooks = Hooks::new();
    for h in specs {
        let point = HookPoint::parse(&h.name, n_layers).map_err(err)?;
        let positions = Positions::parse(&h.positions).map_err(err)?;
        let tensor =
            || Tensor::from_vec(h.values.clone(), h.shape.clone(), model.device()).map_err(err);
        let action = match h.kind {
            "add" => Action::Add {
                vector: tensor()?,
                scale: h.scale,
            },
            "ablate" => Action::ProjectOut {
                direction: tensor()?,
            },
            "replace" => Action::Replace { value: tensor()? },
            _ => Action::Zero,
        };
        hooks.push(point, action, positions);
    }
    Ok(hooks)
}

/// Activations by TransformerLens hook name, numpy float32, batch axis first.
#[pyclass(module = "pragma_interp._native")]
struct ActivationCache {
    names: Vec<String>,
    arrays: Vec<Py<PyAny>>,
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
                    pyo3::exceptions::PyKeyError::new_err(format!(
                        "no cached activation for ({short:?}, {layer})"
                    ))
                })?
        } else {
            key.extract()?
        };
        match self.find(&name) {
            Some(i) => Ok(self.arrays[i].clone_ref(py)),
            None => Err(pyo3::exceptions::PyKeyError::new_err(format!(
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

    fn keys(&self) -> Vec<String> {
        self.names.clone()
    }
}

/// A hooked model: a .gguf file, a Hugging Face folder or a built-in name.
#[pyclass(module = "pragma_interp._native")]
struct Model {
    inner: Arc<pragma_model::Model>,
}

impl Model {
    fn ids(&self, input: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
        if let Ok(text) = input.extract::<String>() {
            return self.to_tokens(&text, true);
        }
        let ids: Vec<u32> = input
            .extract()
            .map_err(|_| PragmaError::new_err("input: expected a string or a list of token ids"))?;
        let vocab = self.inner.cfg().vocab_size;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(err(format!(
                "token id {bad} is out of range: the vocabulary has {vocab} tokens"
            )));
        }
        Ok(ids)
    }
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

    /// Logits `[1, pos, d_vocab]` and an ActivationCache of `names_filter` (hook names or
    /// wildcard patterns such as `blocks.*.hook_resid_post`; default: every hook).
    #[pyo3(signature = (input, names_filter = None, hooks = None))]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        names_filter: Option<&Bound<'py, PyAny>>,
        hooks: Option<Vec<Hook>>,
    ) -> PyResult<(Bound<'py, PyAny>, ActivationCache)> {
        let ids = self.ids(input)?;
        let n_layers = self.inner.cfg().n_layers;
        let points: Vec<HookPoint> = match names_filter {
            None => HookPoint::all_for(self.inner.cfg()),
            Some(f) => {
                let pats: Vec<String> = match f.extract::<String>() {
                    Ok(s) => vec![s],
                    Err(_) => f.extract()?,
                };
                let mut pts = Vec::new();
                for p in &pats {
                    for h in HookPoint::resolve_pattern(p, n_layers).map_err(err)? {
                        if !pts.contains(&h) {
                            pts.push(h);
                        }
                    }
                }
                pts
            }
        };
        // Interventions first, so a capture at the same hook sees their result.
        let mut hooks = build_hooks(&self.inner, hooks.as_deref().unwrap_or(&[]))?;
        for p in &points {
            hooks.capture(*p);
        }
        let model = self.inner.clone();
        let (logits, cache) = py
            .allow_threads(move || {
                let batch = Batch::single(&ids, model.device())?;
                model.transformer.forward(&batch, &hooks, Logits::All)
            })
            .map_err(err)?;
        let logits = logits.ok_or_else(|| err("no logits"))?;
        let mut names = Vec::with_capacity(points.len());
        let mut arrays = Vec::with_capacity(points.len());
        for p in &points {
            let t = cache.get(*p).map_err(err)?;
            names.push(p.to_string());
            arrays.push(to_numpy(py, &t)?.unbind());
        }
        Ok((to_numpy(py, &logits)?, ActivationCache { names, arrays }))
    }

    /// Greedy (temperature 0) or sampled continuation of `prompt` (a user message in the
    /// chat template with `chat=True`), as text.
    #[pyo3(signature = (prompt, max_tokens = 32, temperature = 0.0, seed = 0, chat = false, hooks = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: f64,
        seed: u64,
        chat: bool,
        hooks: Option<Vec<Hook>>,
    ) -> PyResult<String> {
        let hooks = build_hooks(&self.inner, hooks.as_deref().unwrap_or(&[]))?;
        let ids = if chat {
            let msgs = [ChatMessage::new("user", prompt)];
            self.inner
                .tokenizer
                .build_input(&Prompt::chat(&msgs), InputRule::default())
                .map_err(err)?
                .ids
        } else {
            self.to_tokens(prompt, true)?
        };
        let model = self.inner.clone();
        let opts = GenerateOptions {
            max_tokens,
            sampling: Sampling {
                temperature,
                seed,
                ..Sampling::default()
            },
            stop_tokens: model.tokenizer.info.stop_tokens.clone(),
        };
        let (tokens, _) = py
            .allow_threads(move || {
                generate_one(&model.transformer, &ids, 0, &opts, &hooks, |_, _| true)
            })
            .map_err(err)?;
        let stop = &self.inner.tokenizer.info.stop_tokens;
        let kept: Vec<u32> = tokens.into_iter().filter(|t| !stop.contains(t)).collect();
        self.inner.tokenizer.decode(&kept).map_err(err)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<ActivationCache>()?;
    m.add_class::<Hook>()?;
    m.add_function(wrap_pyfunction!(add, m)?)?;
    m.add_function(wrap_pyfunction!(ablate, m)?)?;
    m.add_function(wrap_pyfunction!(zero, m)?)?;
    m.add_function(wrap_pyfunction!(replace, m)?)?;
    m.add("PragmaError", m.py().get_type::<PragmaError>())?;
    Ok(())
}
