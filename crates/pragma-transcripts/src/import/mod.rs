//! Readers: OpenAI chat JSONL, ShareGPT JSONL, Inspect AI logs (`.eval` zip and `.json`)
//! and Docent's `AgentRun` JSON. The format is detected from the file's extension and its
//! first record, never guessed silently: a file that matches none says what was found and
//! what each format expects. Errors name the file, the line or sample, and the field.

mod docent;
mod inspect;
mod jsonl;

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::Run;

/// A transcript file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSONL, one conversation per line: `{"messages": [{"role", "content", "tool_calls",
    /// "tool_call_id", "name"}], "metadata": {...}}` (OpenAI fine-tuning / chat format).
    OpenAi,
    /// JSONL, `{"conversations": [{"from": "system"|"human"|"gpt"|..., "value"}]}`.
    ShareGpt,
    /// Inspect AI's `.eval` log (a zip of `header.json` and `samples/*.json`).
    InspectEval,
    /// Inspect AI's `.json` log (`{"eval", "samples", ...}`).
    InspectJson,
    /// Docent's `AgentRun` JSON: one object or a list (`{"id", "metadata",
    /// "transcripts": [...]}`).
    Docent,
}

impl Format {
    pub const NAMES: &'static [&'static str] = &["openai", "sharegpt", "inspect", "docent"];

    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::ShareGpt => "sharegpt",
            Format::InspectEval => "inspect (.eval)",
            Format::InspectJson => "inspect (.json)",
            Format::Docent => "docent",
        }
    }

    /// Detect a file's format from its extension and first record.
    pub fn detect(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if ext == "eval" {
            return Ok(Format::InspectEval);
        }
        let text = read_head(path)?;
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Err(Error::Input(format!("{}: empty file", path.display())));
        }
        if ext == "jsonl" || (ext != "json" && !trimmed.starts_with('[')) {
            // The first non-empty line decides.
            let (n, line) = text
                .lines()
                .enumerate()
                .find(|(_, l)| !l.trim().is_empty())
                .unwrap_or((0, ""));
            let v: Value = serde_json::from_str(line).map_err(|e| {
                Error::Input(format!(
                    "{}: line {}: not JSON ({e}); expected JSONL with \"messages\" (OpenAI) or \
                     \"conversations\" (ShareGPT) per line, or an Inspect/Docent .json file",
                    path.display(),
                    n + 1
                ))
            })?;
            if v.get("messages").is_some() {
                return Ok(Format::OpenAi);
            }
            if v.get("conversations").is_some() {
                return Ok(Format::ShareGpt);
            }
            // A single-line .json file falls through to the whole-file checks below.
            if ext == "jsonl" {
                return Err(unknown(path, &v, &format!("line {}", n + 1)));
            }
        }
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(path)
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?,
        )
        .map_err(|e| Error::Input(format!("{}: not JSON: {e}", path.display())))?;
        let first = match &v {
            Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        if v.get("eval").is_some() && (v.get("samples").is_some() || v.get("status").is_some()) {
            return Ok(Format::InspectJson);
        }
        if first.get("transcripts").is_some() {
            return Ok(Format::Docent);
        }
        if first.get("messages").is_some() && matches!(v, Value::Array(_)) {
            return Err(Error::Input(format!(
                "{}: a JSON list of objects with \"messages\": write one per line (JSONL, \
                 .jsonl) for the OpenAI format",
                path.display()
            )));
        }
        Err(unknown(path, &first, "the top level"))
    }
}

fn unknown(path: &Path, v: &Value, at: &str) -> Error {
    let keys = match v {
        Value::Object(m) => m.keys().cloned().collect::<Vec<_>>().join(", "),
        other => format!("a {}", kind(other)),
    };
    Error::Input(format!(
        "{}: {at}: unknown transcript format (found keys: {keys}); expected one of: OpenAI JSONL \
         (\"messages\" per line), ShareGPT JSONL (\"conversations\" per line), Inspect AI \
         .eval or .json (\"eval\" and \"samples\"), Docent JSON (\"transcripts\")",
        path.display()
    ))
}

/// The JSON type of a value, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn read_head(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < buf.len() {
        let k = f
            .read(&mut buf[n..])
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    buf.truncate(n);
    // Cut at the last full line so a multi-byte character is never split.
    if n == 1 << 20 {
        if let Some(p) = buf.iter().rposition(|&b| b == b'\n') {
            buf.truncate(p);
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Read every run of a file, in the detected format (or `format` if given).
pub fn read(path: &Path, format: Option<Format>) -> Result<(Format, Vec<Run>)> {
    let f = match format {
        Some(f) => f,
        None => Format::detect(path)?,
    };
    let mut runs = match f {
        Format::OpenAi => jsonl::read(path, jsonl::Flavour::OpenAi)?,
        Format::ShareGpt => jsonl::read(path, jsonl::Flavour::ShareGpt)?,
        Format::InspectEval => inspect::read_eval(path)?,
        Format::InspectJson => inspect::read_json(path)?,
        Format::Docent => docent::read(path)?,
    };
    for r in &mut runs {
        r.transcripts.iter_mut().for_each(|t| t.link_tool_names());
    }
    Ok((f, runs))
}

/// A field error: `FILE: RECORD: field F: expected X, found Y`.
pub(crate) fn field_err(at: &str, field: &str, expected: &str, found: &Value) -> Error {
    let shown = match found {
        Value::String(s) if s.len() <= 40 => format!("\"{s}\""),
        Value::String(_) => "a long string".to_string(),
        other => {
            let t = other.to_string();
            if t.len() <= 40 {
                t
            } else {
                format!("a {}", kind(other))
            }
        }
    };
    Error::Input(format!(
        "{at}: field `{field}`: expected {expected}, found {shown}"
    ))
}

/// Plain text of a content value: a string, or a list of parts whose `text` (type
/// `text`) are joined by newlines; reasoning parts (`type` `reasoning` or `thinking`) are
/// returned apart. Other part types (images, audio) are named in brackets.
pub(crate) fn content_text(v: &Value, at: &str, field: &str) -> Result<(String, Option<String>)> {
    match v {
        Value::Null => Ok((String::new(), None)),
        Value::String(s) => Ok((s.clone(), None)),
        Value::Array(parts) => {
            let (mut text, mut reasoning): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
            for (i, p) in parts.iter().enumerate() {
                let f = format!("{field}[{i}]");
                match p {
                    Value::String(s) => text.push(s.clone()),
                    Value::Object(o) => {
                        let ty = o.get("type").and_then(Value::as_str).unwrap_or("text");
                        match ty {
                            "text" | "input_text" | "output_text" => text.push(
                                o.get("text")
                                    .and_then(Value::as_str)
                                    .ok_or_else(|| {
                                        field_err(
                                            at,
                                            &format!("{f}.text"),
                                            "a string",
                                            o.get("text").unwrap_or(&Value::Null),
                                        )
                                    })?
                                    .to_string(),
                            ),
                            "reasoning" | "thinking" => {
                                let r = ["reasoning", "thinking", "text"]
                                    .iter()
                                    .find_map(|k| o.get(*k).and_then(Value::as_str))
                                    .unwrap_or("");
                                reasoning.push(r.to_string());
                            }
                            other => text.push(format!("[{other}]")),
                        }
                    }
                    other => return Err(field_err(at, &f, "a string or an object", other)),
                }
            }
            Ok((
                text.join("\n"),
                (!reasoning.is_empty()).then(|| reasoning.join("\n")),
            ))
        }
        other => Err(field_err(at, field, "a string or a list of parts", other)),
    }
}
