//! The flags every command that feeds text to the model shares: how text becomes ids.

use anyhow::Result;
use clap::Args;
use pragma_model::input::{BosChoice, InputChoice, InputRule};
use pragma_model::Model;

#[derive(Args, Clone, Debug, Default)]
pub struct InputArgs {
    /// BOS token at the start of each sequence: `add` (prepend the tokenizer's BOS, as
    /// TransformerLens does), `none`, or `model` (the tokenizer's own add_bos_token, as
    /// Hugging Face and llama.cpp do; false for SmolLM2). Never added twice: a chat template
    /// that opens with it keeps one. Default: add, or the rule recorded in the vector,
    /// probe or store this command uses.
    #[arg(long, value_name = "add|none|model")]
    pub bos: Option<String>,
    /// Parse control-token strings written in the text (e.g. `<|im_end|>` inside a
    /// prompt or chat message) as control tokens, as Hugging Face's tokenizer does by
    /// default. Without this flag they are literal text, so a message cannot forge the
    /// end of its turn; the chat template's own structure tokens are control tokens
    /// either way.
    #[arg(long)]
    pub parse_special: bool,
}

impl InputArgs {
    /// What the user set explicitly.
    pub fn choice(&self, model: &Model) -> Result<InputChoice> {
        let bos = match &self.bos {
            Some(s) => Some(BosChoice::parse(s)?.resolve(&model.tokenizer)),
            None => None,
        };
        Ok(InputChoice {
            bos: bos.map(|b| b && model.tokenizer.info.bos.is_some()),
            parse_special: self.parse_special.then_some(true),
        })
    }

    /// The rule for a command using `artifacts` (name, rule) made earlier; see
    /// [`InputRule::resolve`].
    pub fn rule(&self, model: &Model, artifacts: &[(String, InputRule)]) -> Result<InputRule> {
        let default = InputRule::default().effective(&model.tokenizer);
        let artifacts: Vec<(String, InputRule)> = artifacts
            .iter()
            .map(|(n, r)| (n.clone(), r.effective(&model.tokenizer)))
            .collect();
        Ok(InputRule::resolve(
            self.choice(model)?,
            &artifacts,
            default,
        )?)
    }
}
