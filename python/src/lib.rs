//! The Python module `pragma_interp._native`: pragma's hooked models and methods with
//! numpy in and out. Conversion only: the work is in `pragma_model`, `pragma_store` and
//! `pragma_methods`. The GIL is released during loading, forward passes and training;
//! errors become `PragmaError` with pragma's message (or the exception a Python hook
//! raised).
//!
//! - [`model`]: `Model`, `ActivationCache`, streaming `Generation` and `Token`;
//! - [`hooks`]: per-call interventions (`add`, `ablate`, `zero`, `replace`, `patch`,
//!   `custom`);
//! - [`methods`]: `Store`, `SteeringVector`, `Probe`, `SAE`.

mod hooks;
mod methods;
mod model;

use candle_core::{DType, Tensor};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _native,
    PragmaError,
    PyException,
    "An error from pragma, with its message."
);

pub(crate) fn err(e: impl std::fmt::Display) -> PyErr {
    PragmaError::new_err(e.to_string())
}

/// A tensor as a float32 numpy array of the same shape (one copy out of the tensor; the
/// buffer is handed to numpy without another).
pub(crate) fn to_numpy<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape = t.dims().to_vec();
    let v: Vec<f32> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(err)?;
    Ok(PyArray1::from_vec(py, v).reshape(shape)?.into_any())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<model::ActivationCache>()?;
    m.add_class::<model::Generation>()?;
    m.add_class::<model::Token>()?;
    m.add_class::<hooks::Hook>()?;
    m.add_class::<hooks::HookContext>()?;
    m.add_class::<methods::Store>()?;
    m.add_class::<methods::StoreBatches>()?;
    m.add_class::<methods::SteeringVector>()?;
    m.add_class::<methods::PyProbe>()?;
    m.add_class::<methods::ProbeSweep>()?;
    m.add_class::<methods::Sae>()?;
    m.add_function(wrap_pyfunction!(hooks::add, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::ablate, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::zero, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::replace, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::patch, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::custom, m)?)?;
    m.add("PragmaError", m.py().get_type::<PragmaError>())?;
    Ok(())
}
