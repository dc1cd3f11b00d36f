//! pragma-methods: interpretability methods on hooked models.
//!
//! Third stage of the data flow (model -> activations -> **methods**). So far:
//! [`steering`] vectors from contrastive pairs (difference of means, PCA), applied
//! with the model's hooks (add, ablate, ablate-then-add); [`sweep`]s over layers and
//! scales with random controls; a case [`study`] with held-out tasks and baselines.
//!
//! ```no_run
//! use pragma_methods::steering::*;
//! use pragma_model::{Model, hooks::Positions};
//! let model = Model::load("smollm2-135m-instruct", &mut |_| {})?;
//! let pairs = read_pairs(std::path::Path::new("pairs.jsonl"))?;
//! // Difference of means at the last token of hook_resid_post; BOS first, contents literal.
//! let v = train(&model, &pairs, "sha", &TrainConfig::new(&[10, 12]))?;
//! let hooks = v.hooks(&model, Operator::Add, 0.3, None, Positions::From(1))?;
//! # Ok::<(), pragma_methods::Error>(())
//! ```

pub mod error;
pub mod investigate;
pub mod linear;
mod plot;
pub mod probe;
pub mod sae;
pub mod stats;
pub mod steering;
pub mod study;
pub mod sweep;

pub use error::{Error, Result};
