//! Planning a run: every cell of the suite, cached or to compute; the SAE check.

use super::*;

/// The planned grid: datasets, cells to compute, what is cached and what cannot run.
pub(super) struct Planned {
    pub(super) datasets: Vec<Dataset>,
    pub(super) todo: Vec<Todo>,
    pub(super) cached: usize,
    pub(super) skipped: Vec<(String, String, String)>,
    pub(super) expected: Vec<(String, String, u64, String)>,
}

/// Work out every cell of the suite; SAE cells use `sae_sha` (none: not run).
pub(super) fn plan_cells(
    suite: &Suite,
    context_length: usize,
    out: &Path,
    model_sha: &str,
    sae_sha: Option<&str>,
) -> Result<Planned> {
    let mut p = Planned {
        datasets: Vec::new(),
        todo: Vec::new(),
        cached: 0,
        skipped: Vec::new(),
        expected: Vec::new(),
    };
    for (ti, task) in suite.tasks.iter().enumerate() {
        let in_task = |e: Error| Error::Input(format!("task '{}': {e}", task.name));
        let ds = load_task(task).map_err(in_task)?;
        // Every seed's split is checked now, before anything runs.
        if task.planted.is_none() && task.study.is_none() {
            for seed in 0..task.seeds.unwrap_or(suite.seeds) {
                SeedSplit::new(&ds, task.fractions.unwrap_or(suite.fractions), seed)
                    .map_err(in_task)?;
            }
        }
        for &tech in &task.techniques {
            if tech.needs_sae() && sae_sha.is_none() {
                p.skipped.push((
                    task.name.clone(),
                    tech.name(),
                    "no SAE (--sae none)".to_string(),
                ));
                continue;
            }
            if tech == Technique::Prompt
                && task.planted.is_some()
                && context_length < crate::planted::DESCRIBE_MIN_CONTEXT
            {
                p.skipped.push((
                    task.name.clone(),
                    tech.name(),
                    format!(
                        "the model's context ({context_length} tokens) is too short to show it \
                         documents of both sets"
                    ),
                ));
                continue;
            }
            if tech == Technique::Prompt && task.planted.is_none() && ds.question.is_none() {
                p.skipped.push((
                    task.name.clone(),
                    tech.name(),
                    "the dataset has no question (NAME.meta.json)".to_string(),
                ));
                continue;
            }
            for seed in 0..task.seeds.unwrap_or(suite.seeds) {
                let sae_id = if tech.needs_sae() { sae_sha } else { None };
                let key = cell_key(suite, task, &ds, model_sha, &tech.name(), seed, sae_id);
                p.expected
                    .push((task.name.clone(), tech.name(), seed, key.clone()));
                if cached_cell(&cell_path(out, &task.name, &tech.name(), seed), &key).is_some() {
                    p.cached += 1;
                } else {
                    p.todo.push(Todo {
                        task: ti,
                        tech,
                        seed,
                        key,
                    });
                }
            }
        }
        p.datasets.push(ds);
    }
    Ok(p)
}

/// Check that an SAE can serve the suite on this model: same hook, the hook's width, and
/// (when the SAE records it) the same model weights.
pub fn check_sae(
    model: &Model,
    model_sha: &str,
    sae: &Sae,
    hook: &str,
    other_model: bool,
) -> Result<()> {
    if sae.cfg.hook_name != hook {
        return Err(Error::Input(format!(
            "the SAE reads {}, the suite's techniques read {hook}: pass an SAE trained on \
             {hook} or set the suite's hook",
            sae.cfg.hook_name
        )));
    }
    let point = HookPoint::parse(hook, model.cfg().n_layers)?;
    let width: usize = point
        .per_token_shape(model.cfg())
        .map(|s| s.iter().product())
        .unwrap_or(0);
    if width != sae.cfg.d_in {
        return Err(Error::Input(format!(
            "the SAE reads d_in = {} at {hook}, but this model's {hook} has width {width}: \
             it was trained on another model",
            sae.cfg.d_in
        )));
    }
    if let Some(theirs) = sae
        .cfg
        .metadata
        .get("model_sha256")
        .and_then(|v| v.as_str())
    {
        if theirs != model_sha && !other_model {
            return Err(Error::Input(format!(
                "the SAE was trained on another model ({}, SHA-256 {}...), not this one \
                 ({}, {}...): pass --sae-other-model to use it anyway (e.g. a base model's \
                 SAE on its instruct model)",
                sae.cfg.model_name.as_deref().unwrap_or("unnamed"),
                &theirs[..12.min(theirs.len())],
                model.info.spec,
                &model_sha[..12]
            )));
        }
    }
    Ok(())
}
