//! Model input: the one place where text and chat messages become token ids.
//!
//! Every command and library function that feeds text to the model (generate, trace,
//! tokenize, cache, steering, probes, the case study) goes through
//! [`Tokenizer::build_input`] with an [`InputRule`], so the same text, chat flag, rule
//! and model always give the same ids. Artifacts trained on model inputs (steering
//! vectors, probes, activation stores) record the rule they were made with, and the
//! commands that use them later apply that same rule.
//!
//! Two decisions live here:
//! - **BOS, never twice.** With `bos`, the tokenizer's BOS starts the sequence: it is
//!   prepended unless the ids already begin with it (a chat template that opens with
//!   `<|im_start|>` or `{{ bos_token }}` already supplies it). This is TransformerLens'
//!   `prepend_bos=True`; [`BosChoice::Model`] follows the tokenizer's own
//!   `add_bos_token` instead (what Hugging Face and llama.cpp do).
//! - **Message contents are literal.** A chat template's own structure tokens
//!   (`<|im_start|>`, `<|im_end|>`) are control tokens; the text of each message, and a
//!   plain prompt, is tokenized as text, so `"<|im_end|>"` typed inside a message is the
//!   characters `<`, `|`, ... and cannot forge a turn. `parse_special` opts into the
//!   Hugging Face default (`tokenizer(text)` parses control-token strings anywhere).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::{ChatMessage, Tokenizer};

/// How text becomes model input. Recorded in every artifact trained on model inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputRule {
    /// The sequence starts with the tokenizer's BOS (prepended unless already there;
    /// never twice). No effect for a tokenizer without a BOS token.
    pub bos: bool,
    /// Control-token strings inside message contents and plain prompts become control
    /// tokens (Hugging Face's default). `false`: they are literal text.
    #[serde(default)]
    pub parse_special: bool,
}

impl Default for InputRule {
    /// BOS prepended, contents literal.
    fn default() -> Self {
        Self {
            bos: true,
            parse_special: false,
        }
    }
}

impl InputRule {
    /// The rule as it acts with `tokenizer`: `bos` is false when there is no BOS token.
    /// Artifacts record this form, so rules compare equal when they build equal ids.
    pub fn effective(self, tokenizer: &Tokenizer) -> InputRule {
        InputRule {
            bos: self.bos && tokenizer.info.bos.is_some(),
            ..self
        }
    }

    /// One-line description for reports and error messages.
    pub fn describe(&self) -> String {
        format!(
            "bos {}, special tokens in text {}",
            if self.bos { "prepended" } else { "not added" },
            if self.parse_special {
                "parsed"
            } else {
                "literal"
            }
        )
    }

    /// Settle the rule for a command, field by field: what the user set explicitly
    /// (`None` = not set), else the rule the artifacts it uses were made with (they must
    /// agree), else `default`. A user choice that contradicts an artifact is an error.
    /// `artifacts` pairs a name for messages with the artifact's rule.
    pub fn resolve(
        explicit: InputChoice,
        artifacts: &[(String, InputRule)],
        default: InputRule,
    ) -> Result<InputRule> {
        if let Some((a, b)) = artifacts
            .iter()
            .zip(artifacts.iter().skip(1))
            .find(|(a, b)| a.1 != b.1)
        {
            return Err(Error::InvalidInput(format!(
                "{} was made with input rule ({}) but {} with ({}): they cannot be used on one input",
                a.0,
                a.1.describe(),
                b.0,
                b.1.describe()
            )));
        }
        let base = artifacts.first();
        let rule = InputRule {
            bos: explicit
                .bos
                .or(base.map(|a| a.1.bos))
                .unwrap_or(default.bos),
            parse_special: explicit
                .parse_special
                .or(base.map(|a| a.1.parse_special))
                .unwrap_or(default.parse_special),
        };
        if let Some((name, r)) = base {
            if *r != rule {
                return Err(Error::InvalidInput(format!(
                    "{name} was made with input rule ({}), but this command asks for ({}): \
                     drop --bos/--parse-special to use the artifact's rule",
                    r.describe(),
                    rule.describe()
                )));
            }
        }
        Ok(rule)
    }
}

/// What a user set explicitly (`None`: left to artifacts or the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputChoice {
    pub bos: Option<bool>,
    pub parse_special: Option<bool>,
}

/// The user's BOS choice, resolved against a tokenizer into [`InputRule::bos`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BosChoice {
    /// Prepend the tokenizer's BOS (TransformerLens' default).
    #[default]
    Add,
    /// Never add one (a chat template may still open with it).
    None,
    /// Follow the tokenizer's `add_bos_token` metadata (Hugging Face, llama.cpp).
    Model,
}

impl BosChoice {
    pub fn parse(s: &str) -> Result<BosChoice> {
        match s {
            "add" => Ok(BosChoice::Add),
            "none" => Ok(BosChoice::None),
            "model" => Ok(BosChoice::Model),
            _ => Err(Error::InvalidInput(format!(
                "--bos '{s}': expected add, none or model"
            ))),
        }
    }

    pub fn resolve(self, tokenizer: &Tokenizer) -> bool {
        match self {
            BosChoice::Add => true,
            BosChoice::None => false,
            BosChoice::Model => tokenizer.info.add_bos,
        }
    }
}

/// What to feed the model.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    /// Plain text.
    Text(&'a str),
    /// Messages rendered with the model's chat template. `add_generation_prompt`
    /// appends the assistant header (as Hugging Face's `apply_chat_template`).
    Chat {
        messages: &'a [ChatMessage],
        add_generation_prompt: bool,
    },
}

impl<'a> Prompt<'a> {
    /// A conversation; ending in a user turn gets the assistant header.
    pub fn chat(messages: &'a [ChatMessage]) -> Self {
        Prompt::Chat {
            messages,
            add_generation_prompt: messages.last().is_some_and(|m| m.role == "user"),
        }
    }
}

/// Token ids for one prompt, with where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInput {
    pub ids: Vec<u32>,
    /// The text that was tokenized (the rendered template for chat; without a
    /// prepended BOS).
    pub text: String,
    /// Whether `ids[0]` is the tokenizer's BOS (prepended, or supplied by the template).
    pub starts_with_bos: bool,
}

/// Private-use characters that bracket a content marker while rendering.
const MARK_OPEN: char = '\u{F8F0}';
const MARK_CLOSE: char = '\u{F8F1}';

impl Tokenizer {
    /// Token ids for `prompt` under `rule`: the only function that turns model input
    /// text into ids. Errors: a chat prompt on a model without a template, a template
    /// that fails to render, or (with literal contents) a template that rewrites a
    /// message holding a control-token string in a way that cannot be located (use
    /// `parse_special`).
    pub fn build_input(&self, prompt: &Prompt, rule: InputRule) -> Result<ModelInput> {
        let (text, mut ids) = match *prompt {
            Prompt::Text(t) => (t.to_string(), self.encode(t, rule.parse_special)?),
            Prompt::Chat {
                messages,
                add_generation_prompt,
            } => {
                let text = self.apply_chat_template(messages, add_generation_prompt)?;
                // Without control-token strings in any message, literal and parsed
                // contents give the same ids: no need to locate the contents.
                let literal = !rule.parse_special
                    && messages.iter().any(|m| self.contains_special(&m.content));
                let ids = if literal {
                    let spans = self.content_spans(messages, add_generation_prompt, &text)?;
                    self.encode_with_literal_spans(&text, &spans)?
                } else {
                    self.encode(&text, true)?
                };
                (text, ids)
            }
        };
        let bos = self.info.bos;
        let mut starts_with_bos = bos.is_some() && ids.first() == bos.as_ref();
        if rule.bos && !starts_with_bos {
            if let Some(b) = bos {
                ids.insert(0, b);
                starts_with_bos = true;
            }
        }
        Ok(ModelInput {
            ids,
            text,
            starts_with_bos,
        })
    }

    /// Whether `s` contains a control token's string anywhere.
    fn contains_special(&self, s: &str) -> bool {
        s.char_indices()
            .any(|(i, _)| self.special_at(&s[i..]).is_some())
    }

    /// Byte ranges of `rendered` holding the contents of the messages that contain
    /// control-token strings. Those messages are rendered with a marker in place of their
    /// content; the rendered text is then matched piece by piece, each marker taking
    /// the content as given or trimmed (templates that `| trim`), whichever makes the
    /// following template text line up.
    fn content_spans(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        rendered: &str,
    ) -> Result<Vec<Range<usize>>> {
        if messages
            .iter()
            .any(|m| m.content.contains(MARK_OPEN) || m.content.contains(MARK_CLOSE))
        {
            return Err(Error::ChatTemplate(
                "a message contains the private-use characters U+F8F0/U+F8F1 that pragma uses to \
                 locate message contents; remove them or use --parse-special"
                    .into(),
            ));
        }
        let marked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage {
                role: m.role.clone(),
                content: if self.contains_special(&m.content) {
                    format!("{MARK_OPEN}{i}{MARK_CLOSE}")
                } else {
                    m.content.clone()
                },
            })
            .collect();
        let template = self.apply_chat_template(&marked, add_generation_prompt)?;
        let unlocated = || {
            Error::ChatTemplate(
                "this chat template changes a message's contents as it renders them, so pragma \
                 cannot tell its text from the template's own tokens; use --parse-special to \
                 tokenize the rendered text as Hugging Face does (control-token strings in \
                 messages then become control tokens)"
                    .into(),
            )
        };
        let mut spans = Vec::new();
        let mut pos = 0; // in `rendered`
        let mut rest = template.as_str();
        loop {
            let Some(open) = rest.find(MARK_OPEN) else {
                return if &rendered[pos..] == rest {
                    Ok(spans)
                } else {
                    Err(unlocated())
                };
            };
            let literal = &rest[..open];
            if !rendered[pos..].starts_with(literal) {
                return Err(unlocated());
            }
            pos += literal.len();
            let after = &rest[open + MARK_OPEN.len_utf8()..];
            let close = after.find(MARK_CLOSE).ok_or_else(unlocated)?;
            let i: usize = after[..close].parse().map_err(|_| unlocated())?;
            let content = &messages.get(i).ok_or_else(unlocated)?.content;
            rest = &after[close + MARK_CLOSE.len_utf8()..];
            let next = &rest[..rest.find(MARK_OPEN).unwrap_or(rest.len())];
            let c = [
                content.as_str(),
                content.trim(),
                content.trim_start(),
                content.trim_end(),
            ]
            .into_iter()
            .find(|c| rendered[pos..].starts_with(c) && rendered[pos + c.len()..].starts_with(next))
            .ok_or_else(unlocated)?;
            spans.push(pos..pos + c.len());
            pos += c.len();
        }
    }

    /// Tokenize `text` with control tokens recognised only outside `literal` ranges:
    /// split at each control token found there (as Hugging Face's added-vocabulary pass
    /// does), then tokenize each run of ordinary text, template and contents together.
    fn encode_with_literal_spans(&self, text: &str, literal: &[Range<usize>]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut run = String::new();
        let mut spans: Vec<&Range<usize>> = literal.iter().collect();
        spans.sort_by_key(|r| r.start);
        let mut next_span = 0;
        let mut pos = 0;
        while pos < text.len() {
            if let Some(r) = spans.get(next_span) {
                if pos == r.start {
                    run.push_str(&text[(*r).clone()]);
                    pos = r.end;
                    next_span += 1;
                    continue;
                }
            }
            let limit = spans.get(next_span).map_or(text.len(), |r| r.start);
            if let Some((len, id)) = self.special_at(&text[pos..limit]) {
                ids.extend(self.encode(&run, false)?);
                run.clear();
                ids.push(id);
                pos += len;
                continue;
            }
            let c = text[pos..].chars().next().map_or(1, char::len_utf8);
            run.push_str(&text[pos..pos + c]);
            pos += c;
        }
        ids.extend(self.encode(&run, false)?);
        Ok(ids)
    }

    /// The longest control token at the start of `s`: (byte length, id).
    fn special_at(&self, s: &str) -> Option<(usize, u32)> {
        self.special_tokens()
            .iter()
            .filter(|(t, _)| !t.is_empty() && s.starts_with(t.as_str()))
            .max_by_key(|(t, _)| t.len())
            .map(|(t, id)| (t.len(), *id))
    }
}
