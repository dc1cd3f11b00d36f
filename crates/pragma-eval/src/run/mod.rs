//! `pragma eval run`: the grid of tasks x techniques x seeds, one cached cell per
//! (task, technique, seed) under `OUT/cells/`, so an interrupted run resumes and a re-run
//! computes only what is new.
//!
//! A cell's key is the SHA-256 of everything its result depends on (benchmark version,
//! dataset bytes and subsample, model, hook, technique, seed, split fractions, SAE
//! weights); a cell whose key differs from the current one is recomputed, never reused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pragma_methods::probe::{read_dataset, token_features, Dataset};
use pragma_methods::sae::preset::{Preset, Stage as PresetStage};
use pragma_methods::sae::Sae;
use pragma_methods::stats::XorShift;
use pragma_methods::{Error, Result};
use pragma_model::hooks::HookPoint;
use pragma_model::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::detection::{self, Inputs, Pooling, PromptCache, SeedSplit};
use crate::report::Report;
use crate::suite::{Suite, Task, Technique};

mod estimate;
mod plan;
use estimate::estimate;
pub use plan::check_sae;
use plan::{plan_cells, Planned};

/// Bumped when a technique's definition changes: old cells are then recomputed.
pub const CELL_VERSION: u32 = 2;

/// One technique's pooled test scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolScores {
    pub pooling: Pooling,
    /// Validation AUROC under this pooling (the report picks each seed's pooling on it).
    #[serde(default)]
    pub val_auroc: Option<f64>,
    #[serde(with = "pragma_model::io::json_f64::vec")]
    pub scores: Vec<f64>,
    #[serde(with = "pragma_model::io::json_f64")]
    pub auroc: f64,
}

/// One cached result: a technique on a task for one split seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub key: String,
    pub task: String,
    pub technique: String,
    pub seed: u64,
    /// Test example indices (into the task's subsampled dataset) and their labels.
    pub test: Vec<usize>,
    pub labels: Vec<u8>,
    pub results: Vec<PoolScores>,
    pub val_auroc: Option<f64>,
    /// What the technique chose on train/validation.
    pub choice: String,
    pub seconds: f64,
    /// The planted family's results, per rate (detection cells: none).
    #[serde(default)]
    pub planted: Option<Vec<crate::planted::RateResult>>,
    /// The steering family's result (other cells: none).
    #[serde(default)]
    pub steering: Option<crate::steering::SteerResult>,
    /// The study family's result (other cells: none).
    #[serde(default)]
    pub study: Option<pragma_methods::study::Study>,
}

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub suite: Suite,
    pub out: PathBuf,
    /// Bootstrap replicates of the report's intervals.
    pub bootstrap: usize,
    /// Run even when the time estimate exceeds the suite's budget.
    pub yes: bool,
    /// Without an SAE given, train (or reuse) this recipe for the SAE techniques; `None`
    /// lists them as not run.
    pub sae_preset: Option<Preset>,
    /// Accept an SAE whose metadata names other model weights.
    pub sae_other_model: bool,
}

/// Progress events, for a front end to show.
pub enum Event<'a> {
    /// Before any work: cells to compute, cells found in the cache, estimated seconds.
    Plan {
        todo: usize,
        cached: usize,
        seconds: f64,
    },
    /// Work inside a task.
    Step {
        task: &'a str,
        what: &'a str,
        done: u64,
        total: u64,
    },
    /// A cell finished.
    Cell { done: usize, todo: usize },
}

/// What a run did, and the report over every cell of the suite.
pub struct RunResult {
    pub computed: usize,
    pub cached: usize,
    pub skipped: Vec<(String, String, String)>,
    pub seconds: f64,
    pub report: Report,
}

/// The SHA-256 of an SAE's identity: its config (architecture, k, normalisation, hook,
/// sizes) and all its tensors.
pub fn sae_sha256(sae: &Sae) -> Result<String> {
    let mut h = Sha256::new();
    // Everything that changes its outputs: the config but its free-form provenance, and
    // every tensor.
    let mut cfg = sae.cfg.clone();
    cfg.metadata = serde_json::Value::Null;
    cfg.model_name = None;
    h.update(
        serde_json::to_string(&cfg)
            .map_err(|e| Error::Input(e.to_string()))?
            .as_bytes(),
    );
    for t in [&sae.w_enc, &sae.b_enc, &sae.w_dec, &sae.b_dec]
        .into_iter()
        .chain(sae.threshold.as_ref())
    {
        h.update(pragma_model::io::tensor_le_bytes(t)?);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// A task's dataset, subsampled to `max_examples` (whole groups, stratified by label,
/// seed 0: the same subsample for every split seed).
pub fn load_task(task: &Task) -> Result<Dataset> {
    if task.planted.is_some() {
        return load_base(task);
    }
    if task.study.is_some() {
        let tasks = pragma_methods::study::read_tasks(&task.dataset)?;
        let mut h = Sha256::new();
        for f in std::iter::once(&task.dataset).chain(&task.extra_files) {
            h.update(std::fs::read(f).map_err(|e| Error::Input(format!("{}: {e}", f.display())))?);
        }
        return Ok(Dataset {
            name: task.name.clone(),
            examples: tasks
                .iter()
                .map(|t| pragma_methods::probe::Example {
                    input: pragma_methods::steering::Side::Text(t.eval.clone()),
                    label: 0,
                    split: None,
                    group: None,
                })
                .collect(),
            classes: ["eval".into(), "deploy".into()],
            sha256: format!("{:x}", h.finalize()),
            question: None,
            yes_is_positive: true,
        });
    }
    let mut ds = read_dataset(&task.dataset, None)?;
    // The key covers the meta file too (question, positive class).
    if !task.extra_files.is_empty() {
        let mut h = Sha256::new();
        h.update(ds.sha256.as_bytes());
        for f in &task.extra_files {
            h.update(std::fs::read(f).map_err(|e| Error::Input(format!("{}: {e}", f.display())))?);
        }
        ds.sha256 = format!("{:x}", h.finalize());
    }
    for class in [0u8, 1] {
        if !ds.examples.iter().any(|e| e.label == class) {
            return Err(Error::Input(format!(
                "task '{}': {} has no example of class '{}'; detection needs both classes",
                task.name,
                task.dataset.display(),
                ds.classes[class as usize]
            )));
        }
    }
    if let Some(max) = task.max_examples.filter(|&m| m < ds.examples.len()) {
        // Units: groups (an example without a group is its own), shuffled within label.
        let mut units: Vec<(u8, Vec<usize>)> = Vec::new();
        let mut by_group: std::collections::HashMap<String, usize> = Default::default();
        for (i, e) in ds.examples.iter().enumerate() {
            match e.group.as_ref().and_then(|g| by_group.get(g).copied()) {
                Some(u) => units[u].1.push(i),
                None => {
                    if let Some(g) = &e.group {
                        by_group.insert(g.clone(), units.len());
                    }
                    units.push((e.label, vec![i]));
                }
            }
        }
        let mut rng = XorShift::new(0, 0x5B5);
        rng.shuffle(&mut units);
        let mut keep = Vec::new();
        let frac = max as f64 / ds.examples.len() as f64;
        for class in [0u8, 1] {
            let total: usize = units
                .iter()
                .filter(|u| u.0 == class)
                .map(|u| u.1.len())
                .sum();
            let want = (total as f64 * frac).round() as usize;
            let mut got = 0;
            for u in units.iter().filter(|u| u.0 == class) {
                if got >= want {
                    break;
                }
                got += u.1.len();
                keep.extend(u.1.iter().copied());
            }
        }
        keep.sort_unstable();
        ds.examples = keep.into_iter().map(|i| ds.examples[i].clone()).collect();
    }
    Ok(ds)
}

/// A planted task's base documents (JSONL `{"text": ...}`) as an unlabelled dataset whose
/// `sha256` covers the base and the plant file.
fn load_base(task: &Task) -> Result<Dataset> {
    let bytes = std::fs::read(&task.dataset)
        .map_err(|e| Error::Input(format!("{}: {e}", task.dataset.display())))?;
    let mut h = Sha256::new();
    h.update(&bytes);
    for f in &task.extra_files {
        h.update(std::fs::read(f).map_err(|e| Error::Input(format!("{}: {e}", f.display())))?);
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::Input(format!("{}: not UTF-8: {e}", task.dataset.display())))?;
    let mut examples = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        #[derive(Deserialize)]
        struct Row {
            text: String,
        }
        let r: Row = serde_json::from_str(line).map_err(|e| {
            Error::Input(format!(
                "{}:{}: expected {{\"text\": ...}}: {e}",
                task.dataset.display(),
                i + 1
            ))
        })?;
        examples.push(pragma_methods::probe::Example {
            input: pragma_methods::steering::Side::Text(r.text),
            label: 0,
            split: None,
            group: None,
        });
    }
    Ok(Dataset {
        name: task.name.clone(),
        examples,
        classes: ["A".into(), "B".into()],
        sha256: format!("{:x}", h.finalize()),
        question: None,
        yes_is_positive: true,
    })
}

fn cell_path(out: &Path, task: &str, tech: &str, seed: u64) -> PathBuf {
    out.join("cells")
        .join(task)
        .join(format!("{tech}-seed{seed}.json"))
}

fn cell_key(
    suite: &Suite,
    task: &Task,
    ds: &Dataset,
    model_sha: &str,
    tech: &str,
    seed: u64,
    sae_sha: Option<&str>,
) -> String {
    let fr = task.fractions.unwrap_or(suite.fractions);
    let mut id = serde_json::json!({
        "version": CELL_VERSION,
        "dataset": ds.sha256,
        "max_examples": task.max_examples,
        "model": model_sha,
        "hook": suite.hook,
        "technique": tech,
        "revision": crate::suite::revision(tech),
        "seed": seed,
        "fractions": [fr.0, fr.1],
        "sae": sae_sha,
        "answers": [&suite.answers.0, &suite.answers.1],
    });
    if let Some(st) = task
        .study
        .as_ref()
        .filter(|st| st.question.is_some() || st.deploy_prompt.is_some())
    {
        id["study"] = serde_json::json!({
            "question": st.question, "deploy_prompt": st.deploy_prompt,
        });
    }
    if let Some(st) = &task.steering {
        id["steering"] = serde_json::json!({
            "factors": st.factors, "max_new_tokens": st.max_new_tokens, "concept": st.concept,
        });
    }
    if let Some(p) = &task.planted {
        id["planted"] = serde_json::json!({
            "rates": p.rates, "items": p.items, "heldout": p.heldout,
        });
    }
    format!("{:x}", Sha256::digest(id.to_string().as_bytes()))
}

/// Read a cell if it exists and has `key`.
pub fn cached_cell(path: &Path, key: &str) -> Option<Cell> {
    let text = std::fs::read_to_string(path).ok()?;
    let c: Cell = serde_json::from_str(&text).ok()?;
    (c.key == key).then_some(c)
}

/// What a run covers, saved as `OUT/plan.json` so that `pragma eval report` rebuilds the
/// report from the cells alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub suite: serde_json::Value,
    pub suite_name: String,
    pub hook: String,
    pub seeds: u64,
    pub model: String,
    pub model_sha256: String,
    pub sae: Option<String>,
    pub sae_sha256: Option<String>,
    /// Tasks in suite order: (name, family, dataset file name, examples).
    pub tasks: Vec<PlanTask>,
    /// Every cell the report reads: (task, technique, seed, key).
    pub cells: Vec<(String, String, u64, String)>,
    /// Technique runs that could not be made: (task, technique, why).
    pub skipped: Vec<(String, String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanTask {
    /// Planted tasks: the plant's kind (`lexical`, `semantic`) or `null`.
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    pub family: String,
    pub dataset: String,
    pub examples: usize,
    pub classes: [String; 2],
    /// Split seeds of this task.
    #[serde(default)]
    pub seeds: Option<u64>,
}

impl Plan {
    pub fn load(out: &Path) -> Result<Plan> {
        Ok(pragma_model::io::read_json(
            &out.join("plan.json"),
            "an eval run's plan",
        )?)
    }

    /// Path of a cell's file.
    pub fn cell_path(out: &Path, task: &str, tech: &str, seed: u64) -> PathBuf {
        cell_path(out, task, tech, seed)
    }
}

struct Todo {
    task: usize,
    tech: Technique,
    seed: u64,
    key: String,
}

/// Run the suite: compute the missing cells, then write the report
/// (`report.json`, `report.md`, `report.html`, `heatmap.svg`) under `cfg.out`.
///
/// The SAE techniques read `sae`; without one, and with `cfg.sae_preset` set, the preset
/// SAE at the suite's hook is loaded from `OUT/sae-preset/`, or cached and trained there
/// first (resumable; its time is part of the estimate). Otherwise they are listed as not
/// run.
pub fn run(
    model: &Model,
    sae: Option<&Sae>,
    cfg: &RunConfig,
    events: &mut dyn FnMut(Event),
) -> Result<RunResult> {
    let t0 = Instant::now();
    let suite = &cfg.suite;
    let n_layers = model.cfg().n_layers;
    let point = HookPoint::parse(&suite.hook, n_layers)?;
    let model_sha = pragma_store::writer::model_sha256(model)?;
    if let Some(s) = sae {
        check_sae(model, &model_sha, s, &suite.hook, cfg.sae_other_model)?;
    }
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| Error::Input(format!("{}: {e}", cfg.out.display())))?;

    // The preset SAE: loaded if trained, else to train after the estimate.
    let wants_sae = suite
        .tasks
        .iter()
        .any(|t| t.techniques.iter().any(|x| x.needs_sae()));
    let preset_dir = cfg
        .sae_preset
        .as_ref()
        .filter(|_| sae.is_none() && wants_sae)
        .map(|_| Preset::dir(&cfg.out.join("sae-preset"), &model_sha, &suite.hook));
    let mut preset_sae = match &preset_dir {
        Some(d) => Preset::trained(d)?,
        None => None,
    };
    let preset_pending = preset_dir.is_some() && preset_sae.is_none();
    let sae_sha = match sae.or(preset_sae.as_ref()) {
        Some(s) => Some(sae_sha256(s)?),
        None if preset_pending => Some("preset SAE not trained yet".to_string()),
        None => None,
    };
    let mut planned = plan_cells(
        suite,
        model.cfg().context_length,
        &cfg.out,
        &model_sha,
        sae_sha.as_deref(),
    )?;

    // A time estimate from a timed forward over a few examples.
    let width = model.cfg().d_model;
    let (mut seconds, tps) = if planned.todo.is_empty() {
        (0.0, 0.0)
    } else {
        let dims = match sae.or(preset_sae.as_ref()) {
            Some(s) => Some((s.cfg.d_in, s.cfg.d_sae)),
            None => cfg
                .sae_preset
                .as_ref()
                .map(|p| (width, width * p.expansion)),
        };
        estimate(model, point, suite, &planned.datasets, &planned.todo, dims)?
    };
    if let (true, Some(p)) = (preset_pending, &cfg.sae_preset) {
        // Caching runs the same forwards as the features (batched: a bit faster).
        seconds += p.seconds(tps, width);
    }
    events(Event::Plan {
        todo: planned.todo.len(),
        cached: planned.cached,
        seconds,
    });
    if seconds > suite.budget_minutes * 60.0 && !cfg.yes {
        return Err(Error::Input(format!(
            "the estimate is {:.1} minutes for {} cells{}, over the suite's budget of {} \
             minutes: pass --yes to run it anyway, or cut seeds, tasks or max_examples",
            seconds / 60.0,
            planned.todo.len(),
            if preset_pending {
                " and the preset SAE"
            } else {
                ""
            },
            suite.budget_minutes
        )));
    }
    if let (true, Some(p), Some(dir)) = (preset_pending, &cfg.sae_preset, &preset_dir) {
        let s = p.ensure(model, point, dir, &mut |stage, done, total| {
            events(Event::Step {
                task: "preset SAE",
                what: match stage {
                    PresetStage::Cache => "caching activations (tokens)",
                    PresetStage::Train => "training (steps)",
                },
                done,
                total,
            })
        })?;
        let sha = sae_sha256(&s)?;
        preset_sae = Some(s);
        planned = plan_cells(
            suite,
            model.cfg().context_length,
            &cfg.out,
            &model_sha,
            Some(&sha),
        )?;
    }
    let sae = sae.or(preset_sae.as_ref());
    let sae_sha = sae.map(sae_sha256).transpose()?;
    let Planned {
        datasets,
        todo,
        cached,
        skipped,
        expected,
    } = planned;

    let plan = Plan {
        suite: serde_json::to_value(suite).map_err(|e| Error::Input(e.to_string()))?,
        suite_name: suite.name.clone(),
        hook: suite.hook.clone(),
        seeds: suite.seeds,
        model: model.info.spec.clone(),
        model_sha256: model_sha.clone(),
        sae: sae.map(|s| {
            let name = s.cfg.model_name.clone().unwrap_or_default();
            match &preset_dir {
                Some(d) => format!("preset ({}), {}", d.display(), name),
                None => name,
            }
        }),
        sae_sha256: sae_sha.clone(),
        tasks: suite
            .tasks
            .iter()
            .zip(&datasets)
            .map(|(t, ds)| PlanTask {
                kind: if t.study.is_some() {
                    Some("study".into())
                } else if t.steering.is_some() {
                    Some("steering".into())
                } else {
                    t.planted.as_ref().map(|p| match (&p.plant, p.null) {
                        (Some(pl), false) => pl.kind.clone(),
                        _ => "null".to_string(),
                    })
                },
                name: t.name.clone(),
                family: format!("{:?}", t.family).to_lowercase(),
                dataset: t
                    .dataset
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                examples: ds.examples.len(),
                classes: ds.classes.clone(),
                seeds: Some(t.seeds.unwrap_or(suite.seeds)),
            })
            .collect(),
        cells: expected,
        skipped: skipped.clone(),
    };

    let mut done = 0;
    for (ti, task) in suite.tasks.iter().enumerate() {
        let mine: Vec<&Todo> = todo.iter().filter(|t| t.task == ti).collect();
        if mine.is_empty() {
            continue;
        }
        if let Some(spec) = &task.planted {
            let base: Vec<String> = datasets[ti].examples.iter().map(|e| e.text()).collect();
            let lay = crate::planted::layout(&base, spec, task.seeds.unwrap_or(suite.seeds))?;
            let want_sae = mine.iter().any(|t| t.tech.needs_sae());
            let feats = crate::planted::features(
                model,
                point,
                sae.filter(|_| want_sae),
                &lay.texts,
                &mut |what, k, n| {
                    events(Event::Step {
                        task: &task.name,
                        what,
                        done: k as u64,
                        total: n as u64,
                    })
                },
            )?;
            for t in &mine {
                let t1 = Instant::now();
                let draw = &lay.draws[t.seed as usize];
                let (res, choice) = if t.tech == Technique::Prompt {
                    events(Event::Step {
                        task: &task.name,
                        what: "asking the model",
                        done: 0,
                        total: 1,
                    });
                    let (r, answers) = crate::planted::describe(
                        model,
                        &feats,
                        &lay.texts,
                        draw,
                        &spec.rates,
                        t.seed,
                    )?;
                    (r, serde_json::to_string(&answers).unwrap_or_default())
                } else {
                    let r =
                        crate::planted::run(t.tech, &feats, draw, &spec.rates, t.seed, &|id| {
                            model
                                .tokenizer
                                .decode(&[id])
                                .unwrap_or_else(|_| id.to_string())
                        })?;
                    (r, String::new())
                };
                let cell = Cell {
                    key: t.key.clone(),
                    task: task.name.clone(),
                    technique: t.tech.name(),
                    seed: t.seed,
                    test: Vec::new(),
                    labels: Vec::new(),
                    results: Vec::new(),
                    val_auroc: None,
                    choice,
                    seconds: t1.elapsed().as_secs_f64(),
                    planted: Some(res),
                    steering: None,
                    study: None,
                };
                write_cell(&cfg.out, &cell)?;
                done += 1;
                events(Event::Cell {
                    done,
                    todo: todo.len(),
                });
            }
            continue;
        }
        if let Some(spec) = &task.study {
            let (pairs_path, reference) = (&spec.pairs, &spec.reference);
            for t in &mine {
                let t1 = Instant::now();
                let pairs = pragma_methods::steering::read_pairs(pairs_path)?;
                let tasks = pragma_methods::study::read_tasks(&task.dataset)?;
                let text = std::fs::read_to_string(reference)
                    .map_err(|e| Error::Input(format!("{}: {e}", reference.display())))?;
                let mut scfg = pragma_methods::study::StudyConfig::with_reference(text);
                scfg.seed = t.seed;
                // The suite's answer tokens, and the default layers that this model has.
                if let Some(q) = &spec.question {
                    scfg.question = q.clone();
                }
                if let Some(p) = &spec.deploy_prompt {
                    scfg.deploy_prompt = p.clone();
                }
                scfg.yes = suite.answers.0.clone();
                scfg.no = suite.answers.1.clone();
                scfg.layers.retain(|&l| l < n_layers);
                if scfg.layers.is_empty() {
                    scfg.layers = (0..n_layers).collect();
                }
                let sha = format!(
                    "{:x}",
                    Sha256::digest(
                        std::fs::read(pairs_path)
                            .map_err(|e| Error::Input(format!("{}: {e}", pairs_path.display())))?
                    )
                );
                let (study, _) =
                    pragma_methods::study::run(model, &pairs, &sha, &tasks, &scfg, &mut |m| {
                        events(Event::Step {
                            task: &task.name,
                            what: m,
                            done: 0,
                            total: 1,
                        })
                    })?;
                let cell = Cell {
                    key: t.key.clone(),
                    task: task.name.clone(),
                    technique: t.tech.name(),
                    seed: t.seed,
                    test: Vec::new(),
                    labels: Vec::new(),
                    results: Vec::new(),
                    val_auroc: None,
                    choice: format!("layer {}, scale {}", study.best_layer, study.best_scale),
                    seconds: t1.elapsed().as_secs_f64(),
                    planted: None,
                    steering: None,
                    study: Some(study),
                };
                write_cell(&cfg.out, &cell)?;
                done += 1;
                events(Event::Cell {
                    done,
                    todo: todo.len(),
                });
            }
            continue;
        }
        if let Some(spec0) = &task.steering {
            let mut spec = spec0.clone();
            if spec.concept.is_empty() {
                spec.concept = datasets[ti].classes[1].clone();
            }
            let ds = datasets[ti].clone();
            let n = ds.examples.len() as u64;
            let acts = token_features(model, &ds, point, Default::default(), &mut |k| {
                events(Event::Step {
                    task: &task.name,
                    what: "activations",
                    done: k as u64,
                    total: n,
                })
            })?;
            let mut inputs = Inputs::new(ds, &acts)?;
            drop(acts);
            if let (Some(s), true) = (sae, mine.iter().any(|t| t.tech.needs_sae())) {
                inputs.encode(s, &mut |_| {})?;
            }
            for seed in 0..task.seeds.unwrap_or(suite.seeds) {
                let here: Vec<&&Todo> = mine.iter().filter(|t| t.seed == seed).collect();
                if here.is_empty() {
                    continue;
                }
                let sp =
                    SeedSplit::new(&inputs.ds, task.fractions.unwrap_or(suite.fractions), seed)?;
                let view = sp.view();
                events(Event::Step {
                    task: &task.name,
                    what: "unsteered references",
                    done: 0,
                    total: here.len() as u64,
                });
                let setting = crate::steering::Setting::new(
                    model, point, &spec, &inputs, &sp.test, &sp.train, seed,
                )?;
                for (k, t) in here.iter().enumerate() {
                    events(Event::Step {
                        task: &task.name,
                        what: "steering",
                        done: k as u64,
                        total: here.len() as u64,
                    });
                    let t1 = Instant::now();
                    let v = crate::steering::direction(t.tech, &inputs, &view, seed, sae)?;
                    let r = crate::steering::run(&setting, t.tech, v.as_deref())?;
                    let cell = Cell {
                        key: t.key.clone(),
                        task: task.name.clone(),
                        technique: t.tech.name(),
                        seed,
                        test: Vec::new(),
                        labels: Vec::new(),
                        results: Vec::new(),
                        val_auroc: None,
                        choice: r.factor.map(|f| format!("factor {f}")).unwrap_or_default(),
                        seconds: t1.elapsed().as_secs_f64(),
                        planted: None,
                        steering: Some(r),
                        study: None,
                    };
                    write_cell(&cfg.out, &cell)?;
                    done += 1;
                    events(Event::Cell {
                        done,
                        todo: todo.len(),
                    });
                }
            }
            continue;
        }
        let ds = datasets[ti].clone();
        let n = ds.examples.len() as u64;
        let needs_acts = mine.iter().any(|t| t.tech.pooled());
        let acts = if needs_acts {
            token_features(
                model,
                &ds,
                point,
                pragma_model::input::InputRule::default(),
                &mut |k| {
                    events(Event::Step {
                        task: &task.name,
                        what: "activations",
                        done: k as u64,
                        total: n,
                    })
                },
            )?
        } else {
            Vec::new()
        };
        let mut inputs = Inputs::new(ds, &acts)?;
        drop(acts);
        if let (Some(s), true) = (sae, mine.iter().any(|t| t.tech.needs_sae())) {
            inputs.encode(s, &mut |k| {
                events(Event::Step {
                    task: &task.name,
                    what: "SAE latents",
                    done: k as u64,
                    total: n,
                })
            })?;
        }
        let mut prompts = PromptCache::new(suite.answers.clone());
        for seed in 0..task.seeds.unwrap_or(suite.seeds) {
            let sp = SeedSplit::new(&inputs.ds, task.fractions.unwrap_or(suite.fractions), seed)?;
            let view = sp.view();
            let (va, yva, te, yte) = (&sp.val, &sp.y_val, &sp.test, &sp.y_test);
            for t in mine.iter().filter(|t| t.seed == seed) {
                let t1 = Instant::now();
                if t.tech == Technique::Prompt {
                    events(Event::Step {
                        task: &task.name,
                        what: "prompting",
                        done: 0,
                        total: te.len() as u64,
                    });
                }
                let fitted =
                    detection::fit(t.tech, &inputs, &view, seed, Some(model), &mut prompts)?;
                // Validation AUROC per pooling (scorers with given test scores have one).
                let val: Vec<(Pooling, f64)> = match &fitted.scorer {
                    detection::Scorer::Given(_) => Vec::new(),
                    sc => detection::score(sc, &inputs, va)
                        .into_iter()
                        .filter_map(|(p, s)| pragma_methods::linear::auroc(&s, yva).map(|a| (p, a)))
                        .collect(),
                };
                let results = detection::score(&fitted.scorer, &inputs, te)
                    .into_iter()
                    .map(|(pooling, scores)| PoolScores {
                        auroc: pragma_methods::linear::auroc(&scores, yte).unwrap_or(f64::NAN),
                        val_auroc: val
                            .iter()
                            .find(|v| v.0 == pooling)
                            .map(|v| v.1)
                            .or(fitted.val_auroc),
                        pooling,
                        scores,
                    })
                    .collect();
                let cell = Cell {
                    key: t.key.clone(),
                    task: task.name.clone(),
                    technique: t.tech.name(),
                    seed,
                    test: te.clone(),
                    labels: yte.clone(),
                    results,
                    val_auroc: fitted.val_auroc,
                    choice: fitted.choice,
                    seconds: t1.elapsed().as_secs_f64(),
                    planted: None,
                    steering: None,
                    study: None,
                };
                write_cell(&cfg.out, &cell)?;
                done += 1;
                events(Event::Cell {
                    done,
                    todo: todo.len(),
                });
            }
        }
    }
    // Written only once every cell is there: a failed run leaves the previous plan (and
    // its report) as they were.
    pragma_model::io::write_json(&cfg.out.join("plan.json"), &plan)?;
    let report = Report::build(&cfg.out, &plan, cfg.bootstrap)?;
    report.save(&cfg.out)?;
    Ok(RunResult {
        computed: done,
        cached,
        skipped,
        seconds: t0.elapsed().as_secs_f64(),
        report,
    })
}

fn write_cell(out: &Path, cell: &Cell) -> Result<()> {
    let path = cell_path(out, &cell.task, &cell.technique, cell.seed);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::Input(format!("{}: {e}", p.display())))?;
    }
    Ok(pragma_model::io::write_json(&path, cell)?)
}
