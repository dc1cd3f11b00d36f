//! Token spans: where each message sits in the token ids the model reads.
//!
//! A transcript is rendered with the model's chat template (`Tokenizer::build_input`,
//! message contents literal: a transcript quoting a control token does not inject one),
//! and each message's span is the difference between the ids of the conversation up to it
//! and up to the one before. So every per-token score points back to a message.

use pragma_model::input::{InputRule, Prompt};
use pragma_model::tokenizer::ChatMessage;
use pragma_model::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Transcript;

/// A message's tokens `[start, end)` in the transcript's ids, template markers included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSpan {
    pub message: usize,
    pub start: usize,
    pub end: usize,
}

/// The chat messages the template renders: tool calls and reasoning inlined
/// ([`crate::model::Message::rendered_text`]); tool results as role `tool`.
pub fn chat_messages(t: &Transcript) -> Vec<ChatMessage> {
    t.messages
        .iter()
        .map(|m| ChatMessage::new(m.role.name(), &m.rendered_text()))
        .collect()
}

/// The transcript's token ids under the model's chat template and each message's span.
///
/// Errors: the model has no chat template; the template renders an earlier message
/// differently once later ones follow (then spans cannot be cut by prefixes), naming the
/// message.
pub fn token_spans(tok: &Tokenizer, t: &Transcript) -> Result<(Vec<u32>, Vec<MessageSpan>)> {
    let msgs = chat_messages(t);
    let rule = InputRule::default();
    let mut spans = Vec::with_capacity(msgs.len());
    let mut prev: Vec<u32> = Vec::new();
    // A transcript starting with a non-system message still gets BOS once, from the rule.
    for i in 0..msgs.len() {
        let ids = tok
            .build_input(
                &Prompt::Chat {
                    messages: &msgs[..=i],
                    add_generation_prompt: false,
                },
                rule,
            )?
            .ids;
        if ids.len() < prev.len() || ids[..prev.len()] != prev[..] {
            // Templates that add a default system prompt before the first message render
            // it once; anything else that rewrites the prefix is refused.
            return Err(Error::Input(format!(
                "message {i} ({}): the chat template renders the messages before it \
                 differently once it follows, so its token span cannot be located",
                t.messages[i].role.name()
            )));
        }
        spans.push(MessageSpan {
            message: i,
            start: prev.len(),
            end: ids.len(),
        });
        prev = ids;
    }
    // BOS belongs to no message: the first span starts after it.
    if let Some(first) = spans.first_mut() {
        if tok.info.bos.is_some() && prev.first() == tok.info.bos.as_ref() {
            first.start = first.start.max(1);
        }
    }
    Ok((prev, spans))
}
