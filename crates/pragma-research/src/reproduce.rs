//! Did a rerun reproduce its run? Headline metrics read from a workflow's result files,
//! and the comparison of a run's record with its rerun's: artifacts (byte-identical, equal
//! but for timing fields, or different) and metrics (identical, inside the recorded 95%
//! CI, or different). The front end runs the rerun; this module judges it.

use std::path::Path;

use serde::Serialize;

use crate::runs::{Artifact, Run};

/// The result file a workflow writes under its `--out` folder, whose contents
/// [`headline_of`] reads: `None` for workflows that write none (their front end passes
/// the result itself, e.g. `patch` and `transcripts diff`) or write something else.
pub fn result_file(workflow: &str) -> Option<&'static str> {
    Some(match workflow {
        "probe train" => "results.json",
        "sae train" => "log.jsonl",
        "sae eval" => "eval.json",
        "steer sweep" => "sweep.json",
        "steer study" => "study.json",
        "eval run" => "report.json",
        "checkin" => "checkin.json",
        _ => return None,
    })
}

/// The headline metrics of a run whose result file (see [`result_file`]) lies under
/// `out`; `Null` when the workflow has none or the file is missing or unreadable. For
/// `log.jsonl` (SAE training) the last line is the result.
pub fn headline(workflow: &str, out: &Path) -> serde_json::Value {
    let Some(file) = result_file(workflow) else {
        return serde_json::Value::Null;
    };
    let text = std::fs::read_to_string(out.join(file)).unwrap_or_default();
    let text = if file.ends_with(".jsonl") {
        text.lines().last().unwrap_or_default().to_string()
    } else {
        text
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(r) => headline_of(workflow, &r),
        Err(_) => serde_json::Value::Null,
    }
}

/// The few numbers that say most about a workflow's result (its result file's JSON, or
/// the result a front end serialised), as a flat object; a number `X` with a 95% CI has
/// it beside it as `X_ci = [lo, hi]`, which [`compare_metrics`] uses on rerun.
///
/// - `probe train` (`results.json`): the best logistic layer, its test AUROC and CI,
///   the baselines' test AUROCs.
/// - `sae train` (the last `log.jsonl` line): step, FVU, L0, dead fraction.
/// - `sae eval` (`eval.json`): FVU, explained variance, cosine, L0, dead fraction, and
///   with a model the CE loss score, delta CE and KL score (SAEBench names).
/// - `steer train` (the vector's meta): each layer's vector norm, `norm_L{layer}`.
/// - `steer sweep` (`sweep.json`): the unsteered log-odds with its CI; the point that
///   moves the log-odds most (layer, scale, log-odds with CI, KL) and its random control.
/// - `steer study` (`study.json`): the chosen layer and scale, the eval - deploy gap,
///   each arm's effect with its CI, and the vector minus random control.
/// - `eval run` (`report.json`): per family, the best technique, its mean and its margin
///   over the runner-up with the CI.
/// - `patch` (the `PatchResult`): clean and corrupt metric; per hook, the strongest
///   normalised cell and where it is.
/// - `transcripts diff` (the `DiffResult`): per family the discoveries each way and
///   the top hypothesis's log-odds, q and held-out AUROC.
/// - `checkin` (`checkin.json`): every technique and baseline's score with its CI, as
///   `TASK/NAME`.
///
/// `Null` for other workflows.
pub fn headline_of(workflow: &str, r: &serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut m = Map::new();
    let mut put = |k: String, v: Value| {
        m.insert(k, v);
    };
    let pair = |lo: &Value, hi: &Value| json!([lo, hi]);
    match workflow {
        "probe train" => {
            let best = r["best_logistic_layer"].clone();
            let layer = r["layers"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["layer"] == best).cloned())
                .unwrap_or_default();
            let baselines: Option<Vec<Value>> = r["baselines"].as_array().map(|bs| {
                bs.iter()
                    .map(|b| json!({"name": b["name"], "test_auroc": b["scored"]["test_auroc"]}))
                    .collect()
            });
            put("best_logistic_layer".into(), best);
            put("test_auroc".into(), layer["logistic"]["test_auroc"].clone());
            put(
                "test_auroc_ci".into(),
                layer["logistic"]["test_auroc_ci"].clone(),
            );
            put("baselines".into(), json!(baselines));
        }
        "sae train" => {
            for k in ["step", "fvu", "l0", "dead_fraction"] {
                put(k.into(), r[k].clone());
            }
        }
        "sae eval" => {
            let rec = &r["reconstruction"];
            for k in ["fvu", "explained_variance", "cosine", "l0", "dead_fraction"] {
                put(k.into(), rec[k].clone());
            }
            if r["loss"].is_object() {
                for k in ["ce_loss_score", "delta_ce", "kl_score"] {
                    put(k.into(), r["loss"][k].clone());
                }
            }
        }
        "steer train" => {
            let layers = r["layers"].as_array().cloned().unwrap_or_default();
            let norms = r["norms"].as_array().cloned().unwrap_or_default();
            for (l, n) in layers.iter().zip(&norms) {
                put(format!("norm_L{l}"), n.clone());
            }
        }
        "steer sweep" => {
            let base = r["baseline"].as_f64().unwrap_or(0.0);
            put("baseline_logodds".into(), r["baseline"].clone());
            put("baseline_logodds_ci".into(), r["baseline_ci"].clone());
            let points = r["points"].as_array().cloned().unwrap_or_default();
            let moved = |p: &Value| (p["logodds"].as_f64().unwrap_or(base) - base).abs();
            if let Some(best) = points
                .iter()
                .filter(|p| p["control"] == false)
                .max_by(|a, b| moved(a).total_cmp(&moved(b)))
            {
                put("best_layer".into(), best["layer"].clone());
                put("best_scale".into(), best["scale"].clone());
                put("best_logodds".into(), best["logodds"].clone());
                put("best_logodds_ci".into(), best["logodds_ci"].clone());
                put("best_kl".into(), best["kl"].clone());
                if let Some(c) = points.iter().find(|p| {
                    p["control"] == true
                        && p["layer"] == best["layer"]
                        && p["scale"] == best["scale"]
                }) {
                    put("control_logodds".into(), c["logodds"].clone());
                    put("control_logodds_ci".into(), c["logodds_ci"].clone());
                }
            }
        }
        "steer study" => {
            put("best_layer".into(), r["best_layer"].clone());
            put("best_scale".into(), r["best_scale"].clone());
            put("gap".into(), r["gap"]["mean"].clone());
            put("gap_ci".into(), r["gap"]["ci"].clone());
            for a in r["arms"].as_array().into_iter().flatten() {
                let name = a["name"].as_str().unwrap_or("arm").replace(['-', ' '], "_");
                put(format!("{name}_effect"), a["effect"]["mean"].clone());
                put(format!("{name}_effect_ci"), a["effect"]["ci"].clone());
            }
            put(
                "vector_minus_control".into(),
                r["vector_minus_control"]["mean"].clone(),
            );
            put(
                "vector_minus_control_ci".into(),
                r["vector_minus_control"]["ci"].clone(),
            );
        }
        "eval run" => {
            // Per family: the technique with the highest mean, and its margin over the
            // runner-up with the bootstrap CI over tasks.
            for f in r["families"].as_array().into_iter().flatten() {
                let fam = f["family"].as_str().unwrap_or("family").replace('-', "_");
                if let Some(best) = f["techniques"].as_array().and_then(|t| t.first()) {
                    put(format!("{fam}_best"), best[0].clone());
                    put(format!("{fam}_best_mean"), best[1].clone());
                }
                if f["margin"].is_object() {
                    put(format!("{fam}_margin"), f["margin"]["mean"].clone());
                    put(
                        format!("{fam}_margin_ci"),
                        pair(&f["margin"]["lo"], &f["margin"]["hi"]),
                    );
                }
            }
        }
        "patch" => {
            put("clean_metric".into(), r["clean_metric"].clone());
            put("corrupt_metric".into(), r["corrupt_metric"].clone());
            for g in r["grids"].as_array().into_iter().flatten() {
                let hook = g["hook"].as_str().unwrap_or("hook").to_string();
                let mut top: Option<(usize, usize, f64)> = None;
                for (l, row) in g["normalized"].as_array().into_iter().flatten().enumerate() {
                    for (c, v) in row.as_array().into_iter().flatten().enumerate() {
                        let v = v.as_f64().unwrap_or(0.0);
                        if top.is_none_or(|t| v.abs() > t.2.abs()) {
                            top = Some((l, c, v));
                        }
                    }
                }
                if let Some((l, c, v)) = top {
                    put(format!("{hook}_top"), json!(v));
                    put(format!("{hook}_top_layer"), json!(l));
                    put(format!("{hook}_top_column"), g["columns"][c].clone());
                }
            }
        }
        "transcripts diff" => {
            for f in r["families"].as_array().into_iter().flatten() {
                let fam = f["name"]
                    .as_str()
                    .unwrap_or("family")
                    .replace(['-', ' '], "_");
                put(format!("{fam}_discoveries_a"), f["discoveries"][0].clone());
                put(format!("{fam}_discoveries_b"), f["discoveries"][1].clone());
                let top = f["more_in_b"]
                    .as_array()
                    .into_iter()
                    .chain(f["more_in_a"].as_array())
                    .flatten()
                    .min_by(|a, b| {
                        let q = |h: &Value| h["q"].as_f64().unwrap_or(1.0);
                        q(a).total_cmp(&q(b))
                    });
                if let Some(h) = top {
                    put(format!("{fam}_top"), h["name"].clone());
                    put(format!("{fam}_top_log_odds"), h["log_odds"].clone());
                    put(format!("{fam}_top_q"), h["q"].clone());
                    put(
                        format!("{fam}_top_heldout_auroc"),
                        h["heldout_auroc"].clone(),
                    );
                }
            }
        }
        // Check-ins (`checkin.json`, the latest, in the eval folder): each technique and
        // baseline's score with its CI, as `TASK/NAME`.
        "checkin" => {
            for p in r["proxies"].as_array().into_iter().flatten() {
                let task = p["task"].as_str().unwrap_or("task");
                for e in p["evidence"].as_array().into_iter().flatten() {
                    let key = format!("{task}/{}", e["name"].as_str().unwrap_or("?"));
                    put(
                        format!("{key}_ci"),
                        pair(&e["score"]["lo"], &e["score"]["hi"]),
                    );
                    put(key, e["score"]["mean"].clone());
                }
            }
        }
        _ => return Value::Null,
    }
    Value::Object(m)
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

/// Keys a rerun changes by design, besides timings: when and as which run and check-in
/// it ran, where its cells went, and how many were cached (a check-in's `checkin.json`).
pub const BOOKKEEPING: &[&str] = &[
    "at", "at_utc", "run_id", "number", "eval_dir", "computed", "cached", "rerun_of",
];

/// Whether two JSON files are equal once every key ending in `seconds` (the timings a
/// result file records) and every [`BOOKKEEPING`] key is removed.
pub fn json_equal_but_timings(a: &Path, b: &Path) -> bool {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.ends_with("seconds") && !BOOKKEEPING.contains(&k.as_str()));
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

/// Runs side by side, the first as the base: what `pragma runs compare` prints.
#[derive(Clone, Debug, Serialize)]
pub struct RunComparison {
    /// The run ids, in the order given.
    pub ids: Vec<i64>,
    /// Per run: workflow, start (UTC, to the minute), pragma version, status.
    pub runs: Vec<RunSummary>,
    /// Per later run: the command-line arguments it has that the base lacks, and the reverse
    /// (argv[0], the binary's path, left out).
    pub arguments: Vec<ArgumentDiff>,
    /// Inputs recorded by both the base and a later run whose sha256 differ.
    pub changed_inputs: Vec<ChangedInput>,
    /// Every top-level numeric headline metric of any run, by name.
    pub metrics: Vec<MetricRow>,
}

/// One run's line in a [`RunComparison`].
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub workflow: String,
    pub started_utc: String,
    pub pragma_version: String,
    pub status: String,
}

/// The arguments of run `id` that differ from the base run's.
#[derive(Clone, Debug, Serialize)]
pub struct ArgumentDiff {
    pub id: i64,
    pub base: i64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// An input file whose sha256 differs between the base run and run `id`.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedInput {
    pub path: String,
    pub base: i64,
    pub id: i64,
}

/// One metric across the runs: its value per run (`None` where a run lacks it) and the
/// change from the base (`None` for the base itself or where either lacks it).
#[derive(Clone, Debug, Serialize)]
pub struct MetricRow {
    pub name: String,
    pub values: Vec<Option<f64>>,
    pub deltas: Vec<Option<f64>>,
}

/// Compare `runs` (at least one; the first is the base): arguments, changed inputs, and
/// every numeric headline metric with its change from the base.
pub fn compare_runs(runs: &[Run]) -> RunComparison {
    let Some(base) = runs.first() else {
        return RunComparison {
            ids: vec![],
            runs: vec![],
            arguments: vec![],
            changed_inputs: vec![],
            metrics: vec![],
        };
    };
    let metric_sets: Vec<Vec<(String, f64)>> = runs.iter().map(|r| numbers(&r.metrics)).collect();
    let mut names: Vec<String> = metric_sets
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names.dedup();
    let get = |set: &[(String, f64)], n: &str| set.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let metrics = names
        .into_iter()
        .map(|name| {
            let values: Vec<Option<f64>> = metric_sets.iter().map(|s| get(s, &name)).collect();
            let b = values[0];
            let deltas = values
                .iter()
                .enumerate()
                .map(|(i, v)| match (i, v, b) {
                    (0, _, _) => None,
                    (_, Some(v), Some(b)) => Some(v - b),
                    _ => None,
                })
                .collect();
            MetricRow {
                name,
                values,
                deltas,
            }
        })
        .collect();
    let args = |r: &Run| r.argv[r.argv.len().min(1)..].to_vec();
    let base_args = args(base);
    let mut arguments = Vec::new();
    let mut changed_inputs = Vec::new();
    for r in &runs[1..] {
        let a = args(r);
        arguments.push(ArgumentDiff {
            id: r.id,
            base: base.id,
            added: a
                .iter()
                .filter(|x| !base_args.contains(x))
                .cloned()
                .collect(),
            removed: base_args
                .iter()
                .filter(|x| !a.contains(x))
                .cloned()
                .collect(),
        });
        for input in &r.inputs {
            if base
                .inputs
                .iter()
                .any(|b| b.path == input.path && b.sha256 != input.sha256)
            {
                changed_inputs.push(ChangedInput {
                    path: input.path.clone(),
                    base: base.id,
                    id: r.id,
                });
            }
        }
    }
    RunComparison {
        ids: runs.iter().map(|r| r.id).collect(),
        runs: runs
            .iter()
            .map(|r| RunSummary {
                id: r.id,
                workflow: r.workflow.clone(),
                started_utc: r.started_utc.chars().take(16).collect(),
                pragma_version: r.pragma_version.clone(),
                status: r.status.clone(),
            })
            .collect(),
        arguments,
        changed_inputs,
        metrics,
    }
}
