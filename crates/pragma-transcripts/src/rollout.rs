//! Rollouts: the model answers a list of chat prompts (batched, greedy or sampled,
//! optionally steered by hooks) and each answer becomes a run, ready to import. How the
//! shipped example collection is made (`scripts/datasets/make_rollouts.sh`), and how a user
//! makes transcripts of their own model to explore.

use pragma_model::generate::{generate_items, GenerateOptions};
use pragma_model::hooks::Hooks;
use pragma_model::input::{InputRule, Prompt};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{Message, Role, Run, Transcript};

/// One prompt: a JSONL line `{"user": "...", "system": "...", "id": "...", "metadata":
/// {...}}` (`system`, `id` and `metadata` optional).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPrompt {
    pub user: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Read prompts from JSONL (errors name the line).
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<RolloutPrompt>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| {
            Error::Input(format!(
                "{}: line {}: {e} (expected {{\"user\": TEXT, \"system\": TEXT?, \"id\": TEXT?, \
                 \"metadata\": {{...}}?}})",
                path.display(),
                n + 1
            ))
        })?);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no prompts", path.display())));
    }
    Ok(out)
}

/// Answer every prompt; `batch` prompts per forward; `progress(done, total)`. Each run's
/// key and sample id are the prompt's `id` (or its line index), epoch 1, its metadata the
/// prompt's plus `model`.
pub fn rollouts(
    model: &Model,
    prompts: &[RolloutPrompt],
    opts: &GenerateOptions,
    hooks: &Hooks,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Run>> {
    let chats: Vec<Vec<ChatMessage>> = prompts
        .iter()
        .map(|p| {
            let mut m = Vec::new();
            if let Some(s) = &p.system {
                m.push(ChatMessage::new("system", s));
            }
            m.push(ChatMessage::new("user", &p.user));
            m
        })
        .collect();
    let ids: Vec<Vec<u32>> = chats
        .iter()
        .map(|m| {
            Ok(model
                .tokenizer
                .build_input(&Prompt::chat(m), InputRule::default())?
                .ids)
        })
        .collect::<Result<_>>()?;
    let mut answers: Vec<String> = vec![String::new(); prompts.len()];
    // Similar lengths together: less padding.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut done = 0;
    for chunk in order.chunks(batch.max(1)) {
        let p: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let items: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
        let g = generate_items(&model.transformer, &p, &items, opts, hooks, |_, _| {})?;
        for (&i, mut t) in chunk.iter().zip(g.tokens) {
            if t.last().is_some_and(|x| opts.stop_tokens.contains(x)) {
                t.pop();
            }
            answers[i] = model.tokenizer.decode(&t)?;
        }
        done += chunk.len();
        progress(done, prompts.len());
    }
    Ok(prompts
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (p, a))| {
            let id = p.id.clone().unwrap_or_else(|| i.to_string());
            let mut messages = Vec::new();
            if let Some(s) = &p.system {
                messages.push(Message::new(Role::System, s));
            }
            messages.push(Message::new(Role::User, &p.user));
            messages.push(Message::new(Role::Assistant, a.trim()));
            let mut metadata = p.metadata.clone();
            metadata.insert(
                "model".into(),
                Value::String(
                    model
                        .info
                        .name
                        .clone()
                        .unwrap_or_else(|| model.info.spec.clone()),
                ),
            );
            Run {
                key: id.clone(),
                sample_id: Some(id),
                epoch: Some(1),
                metadata,
                scores: Map::new(),
                transcripts: vec![Transcript {
                    name: None,
                    metadata: Map::new(),
                    messages,
                }],
                source: format!("rollout {i}"),
            }
        })
        .collect())
}
