//! The behaviour metric of an investigation: `logit[good] - logit[bad]` at the last
//! position (TransformerLens' `logits_to_ave_logit_diff` for one prompt).

use candle_core::{DType, Tensor};
use pragma_model::Model;
use serde::Serialize;

use crate::error::{Error, Result};

/// The logit difference between two answer tokens at the last position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogitDiff {
    pub good: u32,
    pub bad: u32,
    /// The answers as given (e.g. `" Yes"`), for reports.
    pub good_text: String,
    pub bad_text: String,
}

impl LogitDiff {
    /// Both answers must be single tokens of this model (see [`answer_token`]).
    pub fn new(model: &Model, good: &str, bad: &str) -> Result<LogitDiff> {
        let (g, b) = (answer_token(model, good)?, answer_token(model, bad)?);
        if g == b {
            return Err(Error::Input(format!(
                "the two answers {good:?} and {bad:?} are the same token ({g}): the logit \
                 difference would be 0 everywhere"
            )));
        }
        Ok(LogitDiff {
            good: g,
            bad: b,
            good_text: good.to_string(),
            bad_text: bad.to_string(),
        })
    }

    /// The metric of each row of last-position logits `[b, vocab]`.
    pub fn of_rows(&self, logits: &Tensor) -> Result<Vec<f64>> {
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        Ok(rows
            .iter()
            .map(|r| r[self.good as usize] as f64 - r[self.bad as usize] as f64)
            .collect())
    }
}

/// `text` as one token of `model` (no BOS, literal text). Errors say how it tokenises
/// when it is not one token, e.g. `" Yesss" tokenises as 2 tokens [" Yes", "ss"]`.
pub fn answer_token(model: &Model, text: &str) -> Result<u32> {
    let ids = model.tokenizer.encode(text, false)?;
    match ids.as_slice() {
        [one] => Ok(*one),
        _ => Err(Error::Input(format!(
            "answer {text:?} tokenises as {} tokens {:?}: expected exactly one (mind the leading \
             space: \" Yes\" and \"Yes\" are different tokens)",
            ids.len(),
            ids.iter()
                .map(|&i| model.tokenizer.token_str(i))
                .collect::<Vec<_>>()
        ))),
    }
}
