//! Inspect AI logs: `.eval` (a zip: `header.json` with the eval spec, and one
//! `samples/{id}_epoch_{n}.json` per sample) and `.json` (`{"eval", "samples", ...}`).
//! A sample becomes a run: `id` -> sample id, `epoch`, `metadata`, `scores` (scorer name ->
//! its `value`, with `answer`/`explanation` kept under `score_details`), `messages` -> one
//! transcript. The eval's task and model go into each run's metadata (`task`, `model`).

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::field_err;
use super::jsonl::openai_message;
use crate::error::{Error, Result};
use crate::model::{Run, Transcript};

pub(super) fn read_eval(path: &Path) -> Result<Vec<Run>> {
    let f =
        std::fs::File::open(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| {
        Error::Input(format!(
            "{}: not an Inspect .eval log (expected a zip archive: {e})",
            path.display()
        ))
    })?;
    let all_names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let mut read_entry = |name: &str| -> Result<Value> {
        let mut e = zip
            .by_name(name)
            .map_err(|e| Error::Input(format!("{}: entry {name}: {e}", path.display())))?;
        let mut s = String::new();
        e.read_to_string(&mut s)
            .map_err(|e| Error::Input(format!("{}: entry {name}: {e}", path.display())))?;
        serde_json::from_str(&s)
            .map_err(|e| Error::Input(format!("{}: entry {name}: not JSON: {e}", path.display())))
    };
    let header = read_entry("header.json")
        .or_else(|_| read_entry("_journal/start.json"))
        .map_err(|_| {
            Error::Input(format!(
                "{}: no header.json or _journal/start.json: not an Inspect .eval log",
                path.display()
            ))
        })?;
    let eval = header.get("eval").cloned().unwrap_or(Value::Null);
    let mut names: Vec<String> = all_names
        .into_iter()
        .filter(|n| n.starts_with("samples/") && n.ends_with(".json"))
        .collect();
    // Zip order is write order; sort by (sample id, epoch) as Inspect's reader lists them
    // only when the names parse, otherwise keep the archive's order.
    names.sort_by_key(|n| sample_order(n));
    let mut runs = Vec::with_capacity(names.len());
    for name in names {
        let v = read_entry(&name)?;
        let at = format!("{}: {name}", path.display());
        runs.push(sample_run(&v, &eval, &at)?);
    }
    if runs.is_empty() {
        return Err(Error::Input(format!(
            "{}: the log has no samples (status {})",
            path.display(),
            header
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        )));
    }
    Ok(runs)
}

/// `samples/{id}_epoch_{n}.json` -> (n, id), ids that are integers zero-padded to 20
/// digits: the order of Inspect's `read_eval_log` (and of its `.json` logs).
fn sample_order(name: &str) -> (i64, String) {
    let stem = name
        .trim_start_matches("samples/")
        .trim_end_matches(".json");
    let (id, epoch) = match stem.rsplit_once("_epoch_") {
        Some((id, e)) => (id, e.parse().unwrap_or(0)),
        None => (stem, 0),
    };
    let id = match id.parse::<i64>() {
        Ok(n) => format!("{n:020}"),
        Err(_) => id.to_string(),
    };
    (epoch, id)
}

pub(super) fn read_json(path: &Path) -> Result<Vec<Run>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("{}: not JSON: {e}", path.display())))?;
    let eval = v.get("eval").cloned().unwrap_or(Value::Null);
    let samples = match v.get("samples") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(Error::Input(format!(
                "{}: the log has no samples (status {})",
                path.display(),
                v.get("status").and_then(Value::as_str).unwrap_or("unknown")
            )))
        }
        Some(other) => {
            return Err(field_err(
                &path.display().to_string(),
                "samples",
                "a list",
                other,
            ))
        }
    };
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| sample_run(s, &eval, &format!("{}: samples[{i}]", path.display())))
        .collect()
}

fn sample_run(s: &Value, eval: &Value, at: &str) -> Result<Run> {
    let Value::Object(o) = s else {
        return Err(field_err(at, "(sample)", "an object", s));
    };
    let id = match o.get("id") {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(x)) => x.to_string(),
        other => {
            return Err(field_err(
                at,
                "id",
                "a string or a number",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    let epoch = match o.get("epoch") {
        Some(Value::Number(x)) if x.as_i64().is_some() => x.as_i64(),
        None | Some(Value::Null) => None,
        Some(other) => return Err(field_err(at, "epoch", "an integer", other)),
    };
    let messages = match o.get("messages") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, m)| openai_message(m, at, &format!("messages[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        other => {
            return Err(field_err(
                at,
                "messages",
                "a list of messages",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    let mut metadata = match o.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(field_err(at, "metadata", "an object", other)),
    };
    for (k, src) in [("task", "task"), ("model", "model")] {
        if let Some(x) = eval.get(src) {
            metadata.entry(k).or_insert(x.clone());
        }
    }
    if let Some(t) = o.get("target") {
        metadata.entry("target").or_insert(t.clone());
    }
    let mut scores = Map::new();
    let mut details = Map::new();
    match o.get("scores") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (name, sc) in m {
                match sc {
                    Value::Object(so) => {
                        scores.insert(
                            name.clone(),
                            so.get("value").cloned().unwrap_or(Value::Null),
                        );
                        let mut d = Map::new();
                        for k in ["answer", "explanation"] {
                            if let Some(x) = so.get(k).filter(|x| !x.is_null()) {
                                d.insert(k.into(), x.clone());
                            }
                        }
                        if !d.is_empty() {
                            details.insert(name.clone(), Value::Object(d));
                        }
                    }
                    other => {
                        scores.insert(name.clone(), other.clone());
                    }
                }
            }
        }
        Some(other) => return Err(field_err(at, "scores", "an object", other)),
    }
    if !details.is_empty() {
        metadata.insert("score_details".into(), Value::Object(details));
    }
    Ok(Run {
        key: match epoch {
            Some(e) => format!("{id}_epoch_{e}"),
            None => id.clone(),
        },
        sample_id: Some(id),
        epoch,
        metadata,
        scores,
        transcripts: vec![Transcript {
            name: None,
            metadata: Map::new(),
            messages,
        }],
        source: at.to_string(),
    })
}
