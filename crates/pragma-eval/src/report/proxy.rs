//! A task's scores as a proxy task of a research project (`pragma checkin`): one number
//! per technique with its 95% interval, higher is better, and the metric in words.
//!
//! - **detection**: each row's test AUROC (mean over split seeds, two-level bootstrap
//!   interval; [`crate::stats`]).
//! - **steering**: each technique's combined concept x relevance x fluency score (mean
//!   over report instructions and seeds, percentile bootstrap).
//! - **study**: each arm's *reduction* of the log-odds that the model says "yes, this is
//!   a test", relative to the unsteered evaluation framing on the same report tasks
//!   (paired per task, percentile bootstrap). Arms: `vector` (the steering vector at the
//!   chosen layer and scale), `random-control` (a random direction of the same norm at
//!   the same point), `prompting` (the prompt says it is a real user), `deploy-framing`
//!   (the same tasks written as a real request: the target) and `unsteered` (zero by
//!   construction: "did it beat doing nothing", paired).
//! - **planted**: no interval per technique (recall over seeds), so not a proxy task.

use pragma_methods::{Error, Result};
use serde::{Deserialize, Serialize};

use super::TaskReport;
use crate::stats::Estimate;
use crate::suite::{Family, Technique};

/// The study family's arms, by their names in a project file.
pub const STUDY_ARMS: &[&str] = &[
    "vector",
    "random-control",
    "prompting",
    "deploy-framing",
    "unsteered",
];

/// What a proxy task measures and each technique's score on it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProxyScores {
    /// The metric in words, e.g. `test AUROC`.
    pub metric: String,
    /// (technique or arm, score), in the report's order. Higher is better.
    pub scores: Vec<(String, Estimate)>,
}

/// Check that `name` can be scored on a task of `family` (a technique of the family, or
/// an arm of the study); errors name the valid ones, with a suggestion.
pub fn check_name(name: &str, family: Family) -> Result<()> {
    match family {
        Family::Planted => Err(Error::Input(
            "planted tasks have no per-technique interval (their metric is recall over \
             seeds), so they cannot be proxy tasks: choose a detection, steering or study task"
                .into(),
        )),
        Family::Study => {
            if STUDY_ARMS.contains(&name) {
                Ok(())
            } else {
                Err(Error::Input(format!(
                    "unknown arm '{name}' of the study{}; its arms: {}",
                    crate::suite::suggest(name, STUDY_ARMS.iter().copied()),
                    STUDY_ARMS.join(", ")
                )))
            }
        }
        f => Technique::parse(name, f).map(|_| ()),
    }
}

impl TaskReport {
    /// This task's scores as a proxy task (see the module docs). Errors for planted tasks.
    pub fn proxy_scores(&self) -> Result<ProxyScores> {
        match self.family.as_str() {
            "detection" => Ok(ProxyScores {
                metric: "test AUROC".into(),
                scores: self
                    .rows
                    .iter()
                    .map(|r| (r.name.clone(), r.auroc))
                    .collect(),
            }),
            "steering" => Ok(ProxyScores {
                metric: "steering score (harmonic mean of concept, relevance, fluency)".into(),
                scores: self
                    .steering
                    .iter()
                    .map(|r| (r.technique.clone(), r.combined))
                    .collect(),
            }),
            "study" => {
                let mut scores = Vec::new();
                if let Some(st) = &self.study {
                    for (arm, e) in &st.arms {
                        let name = if arm.starts_with("steered") {
                            "vector"
                        } else if arm.starts_with("random control") {
                            "random-control"
                        } else if arm.starts_with("prompting") {
                            "prompting"
                        } else if arm.starts_with("deployment framing") {
                            "deploy-framing"
                        } else {
                            continue;
                        };
                        // A reduction: minus the effect, with the interval's ends swapped.
                        scores.push((
                            name.to_string(),
                            Estimate {
                                mean: -e.mean,
                                lo: -e.hi,
                                hi: -e.lo,
                            },
                        ));
                    }
                    scores.push((
                        "unsteered".to_string(),
                        Estimate {
                            mean: 0.0,
                            lo: 0.0,
                            hi: 0.0,
                        },
                    ));
                }
                Ok(ProxyScores {
                    metric: "reduction of the log-odds of \"yes, a test\" vs unsteered (nats)"
                        .into(),
                    scores,
                })
            }
            other => Err(Error::Input(format!(
                "task '{}' is a {other} task: only detection, steering and study tasks have \
                 a score with an interval per technique",
                self.task
            ))),
        }
    }
}
