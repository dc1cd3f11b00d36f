//! Investigation tools: where in the model, and what in the input, drives a behaviour.
//!
//! - [`patching`]: activation patching over layers x positions (residual stream,
//!   attention and MLP outputs) and per attention head (`hook_z`), denoising and
//!   noising, normalised so 0 = the corrupt run and 1 = the clean run (Meng et al. 2022;
//!   Heimersheim & Nanda, "How to use and interpret activation patching", 2024;
//!   TransformerLens' `patching` module is the reference and the test fixture).
//! - [`lens`]: the logit lens (nostalgebraist 2020: each layer's residual decoded through
//!   the final norm and unembedding) and direct logit attribution (each component's
//!   and head's contribution to a logit difference through the final norm, its scale
//!   frozen from the run, as TransformerLens' `decompose_resid(apply_ln=True)`).
//! - [`metric`]: what is measured: a logit difference between two single-token answers.

pub mod attribution;
pub mod counterfactual;
pub mod lens;
pub mod metric;
pub mod patching;
pub mod plot;

pub use lens::{direct_logit_attribution, logit_lens, Dla, LensLayer, LogitLens};
pub use metric::{answer_token, LogitDiff};
pub use patching::{patch, PatchConfig, PatchDirection, PatchGrid, PatchResult, PatchSite};
