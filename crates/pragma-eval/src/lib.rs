//! pragma-eval: the proxy-task benchmark. Which technique wins on which task, next to
//! dumb baselines, over split seeds, with confidence intervals.
//!
//! Fourth stage of the data flow (model -> store -> methods -> **eval**): a suite
//! ([`suite::Suite`], a small TOML file) lists tasks; each task runs every technique of
//! its family over several split seeds; each (task, technique, seed) result is a cached
//! cell ([`run::Cell`]) so an interrupted run resumes and a re-run computes only what is
//! new; [`report::Report`] ranks the techniques per task with 95% intervals and paired
//! tests ([`stats`]), and sums each family up in one line.
//!
//! Families: concept detection ([`detection`], AxBench's protocol: probe, difference of
//! means, PCA, SAE best latent, SAE sparse probes, prompting, bag-of-words, random), and
//! hypothesis generation on a planted difference ([`planted`]: SAE latent frequencies,
//! n-grams, difference of means through the unembedding), concept steering ([`steering`],
//! judge-free AxBench) and the evaluation-awareness study as one row.
//!
//! ```no_run
//! use pragma_eval::{run, suite::Suite};
//! let model = pragma_model::Model::load("smollm2-135m-instruct", &mut |_| {})?;
//! let suite = Suite::load(&Suite::write_default(std::path::Path::new("out/suite"))?)?;
//! let cfg = run::RunConfig {
//!     suite,
//!     out: "out".into(),
//!     bootstrap: 1000,
//!     yes: false,
//!     // No SAE passed: train the preset one (or reuse it from out/sae-preset/).
//!     sae_preset: Some(pragma_methods::sae::preset::Preset::default()),
//!     sae_other_model: false,
//! };
//! let res = run::run(&model, None, &cfg, &mut |_| {})?;
//! println!("{}", res.report.markdown());
//! # Ok::<(), pragma_methods::Error>(())
//! ```

pub mod detection;
pub mod planted;
pub mod report;
pub mod run;
pub mod stats;
pub mod steering;
pub mod suite;

pub use pragma_methods::{Error, Result};
