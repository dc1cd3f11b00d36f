//! The dumb baselines every probe sweep reports beside the probes: bag-of-words logistic
//! regression on token counts, and prompting (the model's own yes/no answer).

use std::collections::HashMap;

use pragma_model::tokenizer::ChatMessage;
use pragma_model::Model;

use super::{fit_logistic_cv, score, Baseline, Dataset, ProbeConfig};
use crate::error::{Error, Result};
use crate::linear::Matrix;
use crate::steering::{side_ids, Side};
use crate::sweep::Answers;

/// Bag-of-words baseline: log(1 + count) of each model token seen in 2+ training texts,
/// standardised, logistic regression with C chosen on validation.
pub(super) fn bag_of_words(
    model: &Model,
    ds: &Dataset,
    ix: (&[usize], &[usize], &[usize]),
    y: (&[u8], &[u8], &[u8]),
    cfg: &ProbeConfig,
) -> Result<Baseline> {
    let b = bag_of_words_scores(model, ds, ix, (y.0, y.1), &cfg.c_grid)?;
    Ok(Baseline {
        name: "bag-of-words".into(),
        scored: score(
            (&b.test, y.2),
            Some((&b.val, y.1)),
            0.0,
            Some(b.c),
            cfg.bootstrap,
            cfg.seed,
        ),
        note: format!(
            "logistic regression on log(1 + count) of {} token types seen in 2+ training texts",
            b.vocab
        ),
    })
}

/// What [`bag_of_words_scores`] returns: raw scores (log-odds) of the validation and test
/// examples, the C chosen on validation and the vocabulary size.
pub struct BowScores {
    pub val: Vec<f64>,
    pub test: Vec<f64>,
    pub c: f64,
    pub vocab: usize,
}

/// The bag-of-words scorer: features log(1 + count) of each model token seen in 2+
/// training texts (`ix.0`), standardised, logistic regression with C from `c_grid` chosen
/// on validation AUROC (`y`: train and validation labels; test labels are never read);
/// scores of `ix.1` (validation) and `ix.2` (test).
pub fn bag_of_words_scores(
    model: &Model,
    ds: &Dataset,
    ix: (&[usize], &[usize], &[usize]),
    y: (&[u8], &[u8]),
    c_grid: &[f64],
) -> Result<BowScores> {
    let toks: Vec<Vec<u32>> = ds
        .examples
        .iter()
        .map(|e| {
            model
                .tokenizer
                .encode(&e.text(), false)
                .map_err(Error::from)
        })
        .collect::<Result<_>>()?;
    let mut df: HashMap<u32, usize> = HashMap::new();
    for &i in ix.0 {
        let mut seen: Vec<u32> = toks[i].clone();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *df.entry(t).or_default() += 1;
        }
    }
    let mut vocab: Vec<u32> = df
        .into_iter()
        .filter(|(_, c)| *c >= 2)
        .map(|(t, _)| t)
        .collect();
    vocab.sort_unstable();
    let col: HashMap<u32, usize> = vocab.iter().enumerate().map(|(k, &t)| (t, k)).collect();
    let d = vocab.len().max(1);
    let mat = |rows: &[usize]| {
        let mut data = vec![0.0; rows.len() * d];
        for (r, &i) in rows.iter().enumerate() {
            for t in &toks[i] {
                if let Some(&k) = col.get(t) {
                    data[r * d + k] += 1.0;
                }
            }
        }
        data.iter_mut().for_each(|v: &mut f64| *v = v.ln_1p());
        Matrix::new(data, rows.len(), d)
    };
    let (xtr, xva, xte) = (mat(ix.0), mat(ix.1), mat(ix.2));
    let (m, st, c) = fit_logistic_cv(&xtr, y.0, &xva, y.1, c_grid);
    let raw = m.unstandardize(&st);
    Ok(BowScores {
        val: raw.scores(&xva),
        test: raw.scores(&xte),
        c,
        vocab: vocab.len(),
    })
}

/// Prompting baseline: the text, then the question, as a user turn; the score is the
/// yes/no log-odds of the first answer token (threshold 0 for accuracy).
pub(super) fn prompting(
    model: &Model,
    ds: &Dataset,
    te: &[usize],
    yte: &[u8],
    question: &str,
    cfg: &ProbeConfig,
) -> Result<Baseline> {
    let scores = prompting_scores(model, ds, te, question, (&cfg.yes, &cfg.no), cfg.input)?;
    Ok(Baseline {
        name: "prompting".into(),
        scored: score((&scores, yte), None, 0.0, None, cfg.bootstrap, cfg.seed),
        note: format!(
            "log-odds {:?} vs {:?}{} after: {question}",
            cfg.yes,
            cfg.no,
            if ds.yes_is_positive {
                ""
            } else {
                " (negated: yes means the negative class)"
            }
        ),
    })
}

/// The prompting scorer: each example's text, then `question`, as one user turn; the score
/// is the log-odds of `answers.0` ("Yes") over `answers.1` ("No") as the first answer
/// token (negated when the dataset's "yes" means its negative class). One score per index
/// in `ix`.
pub fn prompting_scores(
    model: &Model,
    ds: &Dataset,
    ix: &[usize],
    question: &str,
    answers: (&str, &str),
    input: pragma_model::input::InputRule,
) -> Result<Vec<f64>> {
    let answers = Answers::new(model, answers.0, answers.1)?;
    let ids: Vec<Vec<u32>> = ix
        .iter()
        .map(|&i| {
            let user = format!("{}\n\n{question}", ds.examples[i].text());
            side_ids(
                model,
                &Side::Chat(vec![ChatMessage::new("user", &user)]),
                input,
            )
        })
        .collect::<Result<_>>()?;
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&k| ids[k].len());
    let mut scores = vec![0.0; ids.len()];
    for chunk in order.chunks(16) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&k| ids[k].clone()).collect();
        let (lo, _) = answers.score(model, &seqs, &pragma_model::hooks::Hooks::new())?;
        for (k, v) in chunk.iter().zip(lo) {
            scores[*k] = if ds.yes_is_positive { v } else { -v };
        }
    }
    Ok(scores)
}
