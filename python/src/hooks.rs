//! Interventions for one call, with no global state: `add`, `ablate`, `zero`, `replace`,
//! `patch` and `custom` build [`Hook`] values that a call takes in `hooks=[...]`
//! (TransformerLens' `run_with_hooks(fwd_hooks=...)`, as values). A steering vector's or
//! an SAE latent's `hook(...)` builds one too. Each is resolved against the model at the
//! call ([`build_hooks`]), so a bad name is an error before any compute.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pragma_methods::sae::{Sae, Splice};
use pragma_methods::steering::{Operator, SteeringVector};
use pragma_model::hooks::{Action, HookFn, HookPoint, Hooks, Positions, SiteInfo};
use pyo3::prelude::*;

use crate::{err, to_numpy, PragmaError};

/// One edit at one hook point.
#[derive(Clone)]
pub(crate) enum Edit {
    Add {
        value: Arr,
        scale: f32,
    },
    Ablate(Arr),
    Replace(Arr),
    Patch(Arr),
    Zero,
    Custom(Arc<Py<PyAny>>),
    Steer {
        vector: Arc<SteeringVector>,
        op: Operator,
        scale: f32,
        layers: Option<Vec<usize>>,
    },
    Splice {
        sae: Arc<Sae>,
        splice: Splice,
    },
}

/// A float32 array copied out of numpy: values in C order and the shape.
#[derive(Clone)]
pub(crate) struct Arr {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Arr {
    pub fn tensor(&self, device: &candle_core::Device) -> PyResult<Tensor> {
        Tensor::from_vec(self.values.clone(), self.shape.clone(), device).map_err(err)
    }
}

/// Any array-like (numpy array, list) as float32 in C order: one copy.
pub(crate) fn arr(values: &Bound<'_, PyAny>) -> PyResult<Arr> {
    let np = values.py().import("numpy")?;
    let a = np
        .call_method1("ascontiguousarray", (values, "float32"))
        .map_err(|e| PragmaError::new_err(format!("expected a numeric array: {e}")))?;
    let a: PyReadonlyArrayDyn<f32> = a.extract()?;
    Ok(Arr {
        values: a.as_slice().map_err(err)?.to_vec(),
        shape: a.shape().to_vec(),
    })
}

#[derive(Clone)]
pub(crate) struct Entry {
    /// TransformerLens hook name (unused for `Steer`, which knows its layers).
    name: String,
    edit: Edit,
    positions: String,
}

/// One or more interventions for one call: built by `add`, `ablate`, `zero`, `replace`,
/// `patch`, `custom`, `SteeringVector.hook` or `SAE.hook`, passed as `hooks=[...]`
/// (several in a list run in order; at one site, in the order given).
#[pyclass(module = "pragma_interp._native", frozen)]
#[derive(Clone)]
pub struct Hook {
    pub(crate) entries: Vec<Entry>,
    repr: String,
}

#[pymethods]
impl Hook {
    fn __repr__(&self) -> String {
        self.repr.clone()
    }
}

impl Hook {
    pub(crate) fn one(name: &str, edit: Edit, positions: &str, repr: String) -> Hook {
        Hook {
            entries: vec![Entry {
                name: name.into(),
                edit,
                positions: positions.into(),
            }],
            repr,
        }
    }

    pub(crate) fn steer(
        vector: Arc<SteeringVector>,
        op: Operator,
        scale: f32,
        layers: Option<Vec<usize>>,
        positions: &str,
    ) -> Hook {
        let repr = format!(
            "pragma_interp.SteeringVector(layers={:?}).hook(scale={scale}, op={op:?}, positions={positions:?})",
            vector.meta.layers
        );
        Hook::one(
            "",
            Edit::Steer {
                vector,
                op,
                scale,
                layers,
            },
            positions,
            repr,
        )
    }
}

fn repr(kind: &str, name: &str, a: Option<&Arr>, extra: &str, positions: &str) -> String {
    let shape = a
        .map(|a| format!(", shape={:?}", a.shape))
        .unwrap_or_default();
    format!("pragma_interp.{kind}({name:?}{shape}{extra}, positions={positions:?})")
}

/// `x += scale * vector` at hook `name`, at `positions`. `vector` broadcasts over the
/// activation's trailing axes (a steering vector is `[d_model]`).
///
/// positions: `all`, `last`, `generated`, `last-prompt+generated`, `from:N`, `N..M`, `N`
/// (token positions counted from the first real token of each row).
#[pyfunction]
#[pyo3(signature = (name, vector, scale = 1.0, positions = "all"))]
pub fn add(name: &str, vector: &Bound<'_, PyAny>, scale: f32, positions: &str) -> PyResult<Hook> {
    let a = arr(vector)?;
    let r = repr(
        "add",
        name,
        Some(&a),
        &format!(", scale={scale}"),
        positions,
    );
    Ok(Hook::one(name, Edit::Add { value: a, scale }, positions, r))
}

/// Remove the component along `direction` (normalised here) over the last axis:
/// `x -= (x . u) u` (directional ablation, Arditi et al. 2024).
#[pyfunction]
#[pyo3(signature = (name, direction, positions = "all"))]
pub fn ablate(name: &str, direction: &Bound<'_, PyAny>, positions: &str) -> PyResult<Hook> {
    let a = arr(direction)?;
    let r = repr("ablate", name, Some(&a), "", positions);
    Ok(Hook::one(name, Edit::Ablate(a), positions, r))
}

/// Set the activation at hook `name` to zero (zero-ablation).
#[pyfunction]
#[pyo3(signature = (name, positions = "all"))]
pub fn zero(name: &str, positions: &str) -> Hook {
    Hook::one(
        name,
        Edit::Zero,
        positions,
        repr("zero", name, None, "", positions),
    )
}

/// Set the activation at hook `name` to `value`, broadcast over positions (e.g. a mean
/// over a dataset: mean-ablation).
#[pyfunction]
#[pyo3(signature = (name, value, positions = "all"))]
pub fn replace(name: &str, value: &Bound<'_, PyAny>, positions: &str) -> PyResult<Hook> {
    let a = arr(value)?;
    let r = repr("replace", name, Some(&a), "", positions);
    Ok(Hook::one(name, Edit::Replace(a), positions, r))
}

/// Activation patching: take the activation at hook `name` from another run, e.g.
/// `patch(name, clean_cache[name], positions="5")`. `source` has the cached layout,
/// `[batch, pos, ...]` (`[batch, heads, q, k]` for patterns), indexed by absolute
/// position, so it must come from an input padded the same way.
#[pyfunction]
#[pyo3(signature = (name, source, positions = "all"))]
pub fn patch(name: &str, source: &Bound<'_, PyAny>, positions: &str) -> PyResult<Hook> {
    let a = arr(source)?;
    let r = repr("patch", name, Some(&a), "", positions);
    Ok(Hook::one(name, Edit::Patch(a), positions, r))
}

/// A Python function as a hook: `fn(activation, hook) -> array or None`, called with the
/// activation as a float32 numpy array (`[batch, pos, ...]`, the positions of this
/// forward) and a `HookContext` (`hook.name`, `hook.layer`, `hook.offset`: the absolute
/// position of the first column). Return an array of the same shape, or None to keep the
/// (possibly edited in place) array. Only `positions` take the result. Costs two copies
/// of the activation and a trip through the interpreter per call of the site.
#[pyfunction]
#[pyo3(signature = (name, function, positions = "all"))]
pub fn custom(name: &str, function: Py<PyAny>, positions: &str) -> Hook {
    let r = repr("custom", name, None, "", positions);
    Hook::one(name, Edit::Custom(Arc::new(function)), positions, r)
}

/// Where a custom hook is called: the hook's name and layer, and the absolute position
/// of the activation's first column (nonzero while generating with a KV cache).
#[pyclass(module = "pragma_interp._native", frozen, get_all)]
pub struct HookContext {
    name: String,
    layer: Option<usize>,
    offset: usize,
}

#[pymethods]
impl HookContext {
    fn __repr__(&self) -> String {
        format!("HookContext(name={:?}, offset={})", self.name, self.offset)
    }
}

/// The first exception a custom hook raised during a call, re-raised after it.
pub(crate) type ErrorSlot = Arc<Mutex<Option<PyErr>>>;

fn custom_fn(point: HookPoint, f: Arc<Py<PyAny>>, errors: ErrorSlot) -> HookFn {
    Arc::new(move |x: &Tensor, info: &SiteInfo| {
        Python::with_gil(|py| {
            let call = || -> PyResult<Tensor> {
                let a = to_numpy(py, x)?;
                let ctx = HookContext {
                    name: point.to_string(),
                    layer: point.layer(),
                    offset: info.offset,
                };
                let out = f.call1(py, (a.clone(), ctx))?;
                let out = if out.is_none(py) {
                    a
                } else {
                    out.into_bound(py)
                };
                let y = arr(&out)?;
                if y.shape != x.dims() {
                    return Err(PragmaError::new_err(format!(
                        "custom hook at {point} returned shape {:?}, expected {:?}",
                        y.shape,
                        x.dims()
                    )));
                }
                y.tensor(x.device())?.to_dtype(x.dtype()).map_err(err)
            };
            call().map_err(|e| {
                let msg = e.to_string();
                let mut slot = errors.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
                candle_core::Error::Msg(format!("custom hook at {point}: {msg}"))
            })
        })
    })
}

/// The interventions of a call, in order, against `model`; bad names, positions or
/// shapes are errors here, before any compute. Exceptions raised by custom hooks during
/// the call land in the returned slot.
pub(crate) fn build_hooks(
    model: &pragma_model::Model,
    specs: &[Hook],
) -> PyResult<(Hooks, ErrorSlot)> {
    let n_layers = model.cfg().n_layers;
    let dev = model.device();
    let errors: ErrorSlot = Arc::new(Mutex::new(None));
    let mut hooks = Hooks::new();
    for e in specs.iter().flat_map(|h| &h.entries) {
        let positions = Positions::parse(&e.positions).map_err(err)?;
        if let Edit::Steer {
            vector,
            op,
            scale,
            layers,
        } = &e.edit
        {
            let h = vector
                .hooks(model, *op, *scale, layers.as_deref(), positions)
                .map_err(err)?;
            hooks.extend(&h);
            continue;
        }
        if let Edit::Splice { sae, splice } = &e.edit {
            let h = splice
                .hooks(sae.clone(), n_layers, positions)
                .map_err(err)?;
            hooks.extend(&h);
            continue;
        }
        let point = HookPoint::parse(&e.name, n_layers).map_err(err)?;
        let action = match &e.edit {
            Edit::Add { value, scale } => Action::Add {
                vector: value.tensor(dev)?,
                scale: *scale,
            },
            Edit::Ablate(a) => Action::ProjectOut {
                direction: a.tensor(dev)?,
            },
            Edit::Replace(a) => Action::Replace {
                value: a.tensor(dev)?,
            },
            Edit::Patch(a) => Action::Patch {
                source: a.tensor(dev)?,
            },
            Edit::Zero => Action::Zero,
            Edit::Custom(f) => Action::Custom(custom_fn(point, f.clone(), errors.clone())),
            Edit::Steer { .. } | Edit::Splice { .. } => continue, // applied above
        };
        hooks.push(point, action, positions);
    }
    hooks.validate(n_layers).map_err(err)?;
    Ok((hooks, errors))
}

/// A call's result, or the exception a custom hook raised in it (which caused the error).
pub(crate) fn raise_hook_error<T>(
    r: Result<T, impl std::fmt::Display>,
    slot: &ErrorSlot,
) -> PyResult<T> {
    let first = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (r, first) {
        (Err(_), Some(e)) => Err(e),
        (r, _) => r.map_err(err),
    }
}
