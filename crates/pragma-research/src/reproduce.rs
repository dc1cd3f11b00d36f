//! Did a rerun reproduce its run? Headline metrics read from a workflow's result files,
//! and the comparison of a run's record with its rerun's: artifacts (byte-identical, equal
//! but for timing fields, or different) and metrics (identical, inside the recorded 95%
//! CI, or different). The front end runs the rerun; this module judges it.

use std::path::Path;

use serde::Serialize;

use crate::runs::{Artifact, Run};

/// The few numbers a workflow's result files under `out` say most about it: probe
/// sweeps (`results.json`): the best logistic layer, its test AUROC and CI, the
/// baselines' AUROCs; SAE training (`log.jsonl`): the last step's FVU, L0 and dead
/// fraction; eval runs (`report.json`): per family, the best technique, its mean and its
/// margin over the runner-up with the CI; check-ins (`checkin.json`): every score with its CI. `Null` for other workflows (none recorded yet).
pub fn headline(workflow: &str, out: &Path) -> serde_json::Value {
    let read = |f: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).ok()?).ok()
    };
    match workflow {
        "probe train" => read("results.json")
            .map(|r| {
                let best = r["best_logistic_layer"].clone();
                let layer = r["layers"]
                    .as_array()
                    .and_then(|ls| ls.iter().find(|l| l["layer"] == best).cloned())
                    .unwrap_or_default();
                let baselines: Option<Vec<serde_json::Value>> = r["baselines"].as_array().map(|bs| {
                    bs.iter()
                        .map(|b| serde_json::json!({"name": b["name"], "test_auroc": b["scored"]["test_auroc"]}))
                        .collect()
                });
                serde_json::json!({
                    "best_logistic_layer": best,
                    "test_auroc": layer["logistic"]["test_auroc"],
                    "test_auroc_ci": layer["logistic"]["test_auroc_ci"],
                    "baselines": baselines,
                })
            })
            .unwrap_or_default(),
        "sae train" => std::fs::read_to_string(out.join("log.jsonl"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .last()
                    .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            })
            .map(|l| {
                serde_json::json!({"step": l["step"], "fvu": l["fvu"], "l0": l["l0"], "dead_fraction": l["dead_fraction"]})
            })
            .unwrap_or_default(),
        "eval run" => read("report.json")
            .map(|r| {
                // Per family: the technique with the highest mean, and its margin over the
                // runner-up with the bootstrap CI over tasks.
                let mut m = serde_json::Map::new();
                for f in r["families"].as_array().into_iter().flatten() {
                    let fam = f["family"].as_str().unwrap_or("family").replace('-', "_");
                    if let Some(best) = f["techniques"].as_array().and_then(|t| t.first()) {
                        m.insert(format!("{fam}_best"), best[0].clone());
                        m.insert(format!("{fam}_best_mean"), best[1].clone());
                    }
                    if f["margin"].is_object() {
                        m.insert(format!("{fam}_margin"), f["margin"]["mean"].clone());
                        m.insert(
                            format!("{fam}_margin_ci"),
                            serde_json::json!([f["margin"]["lo"], f["margin"]["hi"]]),
                        );
                    }
                }
                serde_json::Value::Object(m)
            })
            .unwrap_or_default(),
        // Check-ins (`checkin.json`, the latest, in the eval folder): each technique and
        // baseline's score with its CI, as `TASK/NAME`.
        "checkin" => read("checkin.json")
            .map(|c| {
                let mut m = serde_json::Map::new();
                for p in c["proxies"].as_array().into_iter().flatten() {
                    let task = p["task"].as_str().unwrap_or("task");
                    for e in p["evidence"].as_array().into_iter().flatten() {
                        let key = format!("{task}/{}", e["name"].as_str().unwrap_or("?"));
                        m.insert(format!("{key}_ci"), serde_json::json!([e["score"]["lo"], e["score"]["hi"]]));
                        m.insert(key, e["score"]["mean"].clone());
                    }
                }
                serde_json::Value::Object(m)
            })
            .unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// Numeric entries of a metrics object, as `(name, value)` (top level only).
pub fn numbers(v: &serde_json::Value) -> Vec<(String, f64)> {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter_map(|(k, x)| x.as_f64().map(|f| (k.clone(), f)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether two JSON files are equal once every key ending in `seconds` is removed (the
/// timings a result file records).
pub fn json_equal_but_timings(a: &Path, b: &Path) -> bool {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.ends_with("seconds"));
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(xs) => xs.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let read = |p: &Path| -> Option<serde_json::Value> {
        let mut v = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        strip(&mut v);
        Some(v)
    };
    a.extension().is_some_and(|e| e == "json") && read(a).is_some_and(|x| Some(x) == read(b))
}

/// A run's artifacts against the same relative names under a rerun's output folder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArtifactCheck {
    pub total: usize,
    pub identical: usize,
    /// JSON files equal once their `*seconds` fields are removed.
    pub equal_but_timings: Vec<String>,
    pub different: Vec<String>,
}

/// Compare `run`'s artifacts under `old_root` with the files of the same relative names
/// under `new_root`.
pub fn compare_artifacts(run: &Run, old_root: &Path, new_root: &Path) -> ArtifactCheck {
    let mut c = ArtifactCheck {
        total: run.artifacts.len(),
        ..ArtifactCheck::default()
    };
    for a in &run.artifacts {
        let Ok(rel) = Path::new(&a.path).strip_prefix(old_root) else {
            continue;
        };
        let now = Artifact::of(&new_root.join(rel));
        if now
            .as_ref()
            .is_some_and(|n| n.sha256 == a.sha256 && n.bytes == a.bytes)
        {
            c.identical += 1;
        } else if json_equal_but_timings(Path::new(&a.path), &new_root.join(rel)) {
            c.equal_but_timings.push(rel.display().to_string());
        } else {
            c.different.push(rel.display().to_string());
        }
    }
    c
}

/// One headline metric of a run against its rerun.
#[derive(Clone, Debug, Serialize)]
pub struct MetricCheck {
    pub name: String,
    pub recorded: f64,
    pub now: f64,
    /// The recorded 95% CI (`<name>_ci`), when the metric has one.
    pub ci: Option<(f64, f64)>,
    /// Identical (to 1e-12 relative) or inside the recorded CI.
    pub reproduced: bool,
    pub says: String,
}

/// Compare the headline metrics of a run (`recorded`) and its rerun (`now`).
pub fn compare_metrics(recorded: &serde_json::Value, now: &serde_json::Value) -> Vec<MetricCheck> {
    let fresh = numbers(now);
    numbers(recorded)
        .into_iter()
        .filter_map(|(name, v)| {
            let w = fresh.iter().find(|(n, _)| *n == name)?.1;
            let ci = recorded[format!("{name}_ci")]
                .as_array()
                .and_then(|c| Some((c.first()?.as_f64()?, c.get(1)?.as_f64()?)));
            let (reproduced, says) = if (v - w).abs() <= 1e-12 * v.abs().max(1.0) {
                (true, "identical".to_string())
            } else if let Some((lo, hi)) = ci.filter(|(lo, hi)| (*lo..=*hi).contains(&w)) {
                (
                    true,
                    format!("within the recorded 95% CI [{lo:.4}, {hi:.4}]"),
                )
            } else {
                (false, "DIFFERS".to_string())
            };
            Some(MetricCheck {
                name,
                recorded: v,
                now: w,
                ci,
                reproduced,
                says,
            })
        })
        .collect()
}
