//! Hypothesis generation: the planted difference.
//!
//! Two sets of documents from one distribution, A and B; in B a behaviour (a "plant": a
//! phrase put before or after the document) is planted in a fraction `p` of the items;
//! every other document (A, the rest of B, the held-out negatives) gets a neutral phrase
//! at the same position, so the difference is what the phrase says.
//! Each technique returns a ranked list of candidate hypotheses for "what is different in
//! B". A candidate is a **hit** if, used as a detector on held-out documents (each
//! held-out base document once as it is and once planted with phrasings not used in B),
//! it separates planted from unplanted with AUROC >= 0.8. Reported per technique and rate:
//! the rank of the first hit among the top 10 (recall@k follows), and the number of
//! discoveries (candidates significant at FDR 0.05, Benjamini-Hochberg). A null task (no
//! plant: A vs A') counts false discoveries.
//!
//! Techniques:
//! - `sae-diff`: SAE latents max-pooled over each document's tokens; for each latent the
//!   share of documents where it fires in B vs A, one-sided Fisher exact test (the exact
//!   permutation test of the frequency difference), BH over all latents; ranked by
//!   p-value (ties: larger difference). Detector: the latent's max-pooled activation.
//! - `ngram`: lower-cased word unigrams and bigrams, presence per document, the same test,
//!   BH over all n-grams seen; detector: presence.
//! - `diffmean-unembed`: the difference of the sets' mean (mean-pooled) activations: the
//!   direction itself (detector: the projection; its p-value from 200 label permutations
//!   of the difference's norm; ranked first when p <= 0.05, else last) and the 9 tokens it
//!   promotes most through the final norm's gain and the unembedding (detector: the
//!   token's presence).
//!
//! - `prompt`: ask the model itself (chat template, greedy): it is shown
//!   [`DESCRIBE_ITEMS`] random documents of A and as many of B and asked what B's have
//!   that A's do not, or to answer "none". Candidates: the content words of its answer,
//!   in order (detector: the word's presence); it claims one discovery unless it answers
//!   "none" (no test: a model's description carries no p-value).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::Tensor;
use pragma_methods::linear::auroc;
use pragma_methods::probe::{token_features, Dataset, Example};
use pragma_methods::sae::Sae;
use pragma_methods::stats::XorShift;
use pragma_methods::steering::Side;
use pragma_methods::{Error, Result};
use pragma_model::hooks::HookPoint;
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use crate::stats::{bh_adjust, fisher_greater, ln_factorials};
use crate::suite::Technique;

/// A candidate is a hit when its held-out detection AUROC reaches this.
pub const HIT_AUROC: f64 = 0.8;
/// Candidates per technique that are checked on held-out documents.
pub const TOP_K: usize = 10;
/// False discovery rate of the discoveries.
pub const FDR_Q: f64 = 0.05;
/// Documents of each set shown to the model by `prompt` (fewer when the context is short).
pub const DESCRIBE_ITEMS: usize = 8;
/// Tokens the model may answer with.
pub const DESCRIBE_TOKENS: usize = 24;
/// `prompt` is not run on models with a shorter context than this.
pub const DESCRIBE_MIN_CONTEXT: usize = 512;

/// A detector's AUROC on a draw's held-out documents (planted vs not).
fn heldout_auroc(draw: &Draw, score: &dyn Fn(usize) -> f64) -> f64 {
    let s: Vec<f64> = draw.h.iter().map(|&i| score(i)).collect();
    auroc(&s, &draw.h_labels).unwrap_or(0.5)
}

/// The rates to report: the task's, or one (the null pair's) when it has none.
fn rate_list(rates: &[f64]) -> Vec<f64> {
    if rates.is_empty() {
        vec![0.0]
    } else {
        rates.to_vec()
    }
}

/// Function words left out of `prompt`'s candidates.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was",
    "one", "our", "out", "has", "him", "his", "how", "its", "may", "who", "did", "get", "let",
    "she", "too", "use", "that", "with", "have", "this", "will", "your", "from", "they", "been",
    "were", "what", "when", "them", "than", "then", "there", "these", "those", "their", "which",
    "while", "about", "into", "more", "most", "some", "such", "only", "other", "also", "very",
    "texts", "text", "set", "sets", "b's", "a's", "both", "each", "does", "do", "is", "it", "in",
    "of", "to", "a", "an", "or", "on", "as", "be", "by", "at", "if", "so", "no",
];

/// `prompt` on one seed's draw at every rate: the model describes the difference, its
/// content words are the candidates. Returns the results and, per rate, its answer.
///
/// Source: the "ask the model" baseline of hypothesis-generation benchmarks (e.g. the
/// describe-differences setups of Zhong et al. 2022); here without a larger proposer.
pub fn describe(
    model: &Model,
    f: &Features,
    texts: &[String],
    draw: &Draw,
    rates: &[f64],
    seed: u64,
) -> Result<(Vec<RateResult>, Vec<String>)> {
    use pragma_model::generate::{generate, GenerateOptions, Sampling};
    use pragma_model::hooks::Hooks;
    use pragma_model::tokenizer::ChatMessage;
    use pragma_model::{InputRule, Prompt};
    let held = |score: &dyn Fn(usize) -> f64| heldout_auroc(draw, score);
    let rate_list = rate_list(rates);
    let clip = |t: &str| -> String {
        let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
        match t.char_indices().nth(200) {
            Some((i, _)) => format!("{}...", &t[..i]),
            None => t,
        }
    };
    let stop = model.tokenizer.info.stop_tokens.clone();
    let (mut out, mut answers) = (Vec::new(), Vec::new());
    for (ri, &rate) in rate_list.iter().enumerate() {
        let b = &draw.b[ri.min(draw.b.len() - 1)];
        let mut rng = XorShift::new(seed, 0xDE5 + ri as u64);
        let mut pick = |ix: &[usize]| -> Vec<usize> {
            let mut v = ix.to_vec();
            rng.shuffle(&mut v);
            v.truncate(DESCRIBE_ITEMS);
            v
        };
        let (sa, sb) = (pick(&draw.a), pick(b));
        let list = |ix: &[usize]| -> String {
            ix.iter()
                .map(|&i| format!("- {}", clip(&texts[i])))
                .collect::<Vec<_>>()
                .join("\n")
        };
        // As many documents of each set as the context holds with the answer.
        let mut ids = Vec::new();
        for n in (1..=sa.len().min(sb.len())).rev() {
            let user = format!(
                "Here are texts from set A:\n{}\n\nHere are texts from set B:\n{}\n\n\
                 In a few words, what do some texts of set B have that the texts of set A do \
                 not? If nothing, answer \"none\".",
                list(&sa[..n]),
                list(&sb[..n])
            );
            ids = model
                .tokenizer
                .build_input(
                    &Prompt::chat(&[ChatMessage::new("user", &user)]),
                    InputRule::default(),
                )?
                .ids;
            if ids.len() + DESCRIBE_TOKENS <= model.cfg().context_length {
                break;
            }
        }
        if ids.len() + DESCRIBE_TOKENS > model.cfg().context_length {
            return Err(Error::Input(format!(
                "prompt: the model's context ({} tokens) cannot hold one document of each set \
                 and the question",
                model.cfg().context_length
            )));
        }
        let g = generate(
            &model.transformer,
            &[ids],
            &GenerateOptions {
                max_tokens: DESCRIBE_TOKENS,
                sampling: Sampling::default(),
                stop_tokens: stop.clone(),
            },
            &Hooks::new(),
            |_, _| {},
        )?;
        let mut toks = g.tokens.into_iter().next().unwrap_or_default();
        if toks.last().is_some_and(|x| stop.contains(x)) {
            toks.pop();
        }
        let answer = model.tokenizer.decode(&toks)?;
        let mut words: Vec<String> = Vec::new();
        for w in answer
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .map(str::to_lowercase)
        {
            if w.len() >= 3 && !STOPWORDS.contains(&w.as_str()) && !words.contains(&w) {
                words.push(w);
            }
        }
        let none = words.is_empty()
            || answer
                .trim()
                .trim_matches(|c: char| !c.is_alphanumeric())
                .eq_ignore_ascii_case("none");
        let candidates: Vec<Candidate> = words
            .into_iter()
            .take(TOP_K)
            .map(|w| {
                let score = |i: usize| -> f64 { f64::from(u8::from(f.grams[i].contains(&w))) };
                Candidate {
                    heldout_auroc: held(&score),
                    name: format!("\"{w}\""),
                    p: f64::NAN,
                }
            })
            .collect();
        let first_hit = candidates
            .iter()
            .position(|c| c.heldout_auroc >= HIT_AUROC)
            .map(|p| p + 1);
        out.push(RateResult {
            rate,
            candidates,
            first_hit,
            discoveries: usize::from(!none),
        });
        answers.push(answer);
    }
    Ok((out, answers))
}

/// A plant: phrases put before (`prefix`) or after (`suffix`) a document. `search` phrases
/// plant set B; `heldout` phrases plant the held-out check; every other document gets a
/// `neutral` phrase at the same position, so that the difference is the phrase's content,
/// not an extra sentence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plant {
    pub name: String,
    /// `lexical` (one n-gram captures it) or `semantic` (none does).
    pub kind: String,
    pub position: String,
    pub search: Vec<String>,
    pub heldout: Vec<String>,
    pub neutral: Vec<String>,
}

impl Plant {
    pub fn load(path: &Path) -> Result<Plant> {
        let p: Plant = serde_json::from_str(
            &std::fs::read_to_string(path)
                .map_err(|e| Error::Input(format!("plant {}: {e}", path.display())))?,
        )
        .map_err(|e| Error::Input(format!("plant {}: {e}", path.display())))?;
        if p.search.is_empty() || p.heldout.is_empty() || p.neutral.is_empty() {
            return Err(Error::Input(format!(
                "plant {}: needs non-empty \"search\", \"heldout\" and \"neutral\" phrase lists",
                path.display()
            )));
        }
        if p.position != "prefix" && p.position != "suffix" {
            return Err(Error::Input(format!(
                "plant {}: position must be \"prefix\" or \"suffix\", found {:?}",
                path.display(),
                p.position
            )));
        }
        Ok(p)
    }

    pub fn apply(&self, doc: &str, phrase: &str) -> String {
        if self.position == "prefix" {
            format!("{phrase} {doc}")
        } else {
            format!("{doc} {phrase}")
        }
    }
}

/// The planted task's settings.
#[derive(Clone, Debug, Serialize)]
pub struct PlantedSpec {
    /// The plant (for a null task: the position and neutral phrases only).
    pub plant: Option<Plant>,
    /// The null pair: nothing planted (A vs A'), for false discoveries.
    pub null: bool,
    pub rates: Vec<f64>,
    /// Documents per set (A and B).
    pub items: usize,
    /// Held-out base documents (each also planted: 2x this many detection items).
    pub heldout: usize,
}

/// One seed's sets, as indices into the task's text table.
pub struct Draw {
    pub a: Vec<usize>,
    /// Per rate: set B.
    pub b: Vec<Vec<usize>>,
    /// Held-out detection items and labels (1 = planted).
    pub h: Vec<usize>,
    pub h_labels: Vec<u8>,
}

/// Every document text a task needs over its seeds, and each seed's sets.
pub struct Layout {
    pub texts: Vec<String>,
    pub draws: Vec<Draw>,
}

/// Draw A, B (planted at each rate) and the held-out check for each seed from `base`.
pub fn layout(base: &[String], spec: &PlantedSpec, seeds: u64) -> Result<Layout> {
    let need = 2 * spec.items + spec.heldout;
    if base.len() < need {
        return Err(Error::Input(format!(
            "the base set has {} documents; {} per set x 2 + {} held out needs {need}",
            base.len(),
            spec.items,
            spec.heldout
        )));
    }
    let mut texts: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut add = |t: String, texts: &mut Vec<String>| -> usize {
        if let Some(&i) = index.get(&t) {
            return i;
        }
        texts.push(t.clone());
        index.insert(t, texts.len() - 1);
        texts.len() - 1
    };
    let mut draws = Vec::new();
    for seed in 0..seeds {
        let mut rng = XorShift::new(seed, 0x91A);
        let mut order: Vec<usize> = (0..base.len()).collect();
        rng.shuffle(&mut order);
        let (a0, b0, h0) = (
            &order[..spec.items],
            &order[spec.items..2 * spec.items],
            &order[2 * spec.items..need],
        );
        // Every unplanted document gets a neutral phrase at the plant's position.
        let mut dress = |i: usize, rng: &mut XorShift, texts: &mut Vec<String>| -> usize {
            match &spec.plant {
                Some(p) => {
                    let ph = &p.neutral[rng.below(p.neutral.len())];
                    add(p.apply(&base[i], ph), texts)
                }
                None => add(base[i].clone(), texts),
            }
        };
        let a: Vec<usize> = a0.iter().map(|&i| dress(i, &mut rng, &mut texts)).collect();
        let b_plain: Vec<usize> = b0.iter().map(|&i| dress(i, &mut rng, &mut texts)).collect();
        let h_neg: Vec<usize> = h0.iter().map(|&i| dress(i, &mut rng, &mut texts)).collect();
        let (b, h, h_labels) = match (&spec.plant, spec.null) {
            (Some(plant), false) => {
                let k_of = |r: f64| ((r * spec.items as f64).round() as usize).min(spec.items);
                let k_max = spec.rates.iter().map(|&r| k_of(r)).max().unwrap_or(0);
                // The first k_max documents of B, planted (the smaller rates plant a prefix).
                let planted: Vec<usize> = (0..k_max)
                    .map(|i| {
                        let ph = &plant.search[rng.below(plant.search.len())];
                        add(plant.apply(&base[b0[i]], ph), &mut texts)
                    })
                    .collect();
                let b = spec
                    .rates
                    .iter()
                    .map(|&r| {
                        let k = k_of(r);
                        let mut v = b_plain.clone();
                        v[..k].copy_from_slice(&planted[..k]);
                        v
                    })
                    .collect();
                let mut h = h_neg.clone();
                let mut labels = vec![0u8; h_neg.len()];
                for &i in h0 {
                    let ph = &plant.heldout[rng.below(plant.heldout.len())];
                    h.push(add(plant.apply(&base[i], ph), &mut texts));
                    labels.push(1);
                }
                (b, h, labels)
            }
            _ => (vec![b_plain], h_neg.clone(), vec![0; h_neg.len()]),
        };
        draws.push(Draw { a, b, h, h_labels });
    }
    Ok(Layout { texts, draws })
}

/// Per-document features the techniques read.
pub struct Features {
    /// Mean over tokens `[n][d]`.
    pub mean: Vec<Vec<f32>>,
    /// Max over tokens of each firing SAE latent, sparse.
    pub max_latents: Option<Vec<Vec<(u32, f32)>>>,
    /// Token ids (for the unembedding's token candidates).
    pub ids: Vec<HashSet<u32>>,
    /// Lower-cased word unigrams and bigrams.
    pub grams: Vec<HashSet<String>>,
    /// `W_U (g * x)` promotes: `[vocab, d]` unembedding with the final norm's gain folded.
    pub unembed: Option<Tensor>,
}

/// Word unigrams and bigrams, lower-cased.
pub fn grams(text: &str) -> HashSet<String> {
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let mut g: HashSet<String> = words.iter().cloned().collect();
    for w in words.windows(2) {
        g.insert(format!("{} {}", w[0], w[1]));
    }
    g
}

/// Run the model (and the SAE) over every text of the layout.
pub fn features(
    model: &Model,
    point: HookPoint,
    sae: Option<&Sae>,
    texts: &[String],
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Features> {
    let ds = Dataset {
        name: "planted".into(),
        examples: texts
            .iter()
            .map(|t| Example {
                input: Side::Text(t.clone()),
                label: 0,
                split: None,
                group: None,
            })
            .collect(),
        classes: ["a".into(), "b".into()],
        sha256: String::new(),
        question: None,
        yes_is_positive: true,
    };
    let n = texts.len();
    let acts = token_features(model, &ds, point, Default::default(), &mut |k| {
        progress("activations", k, n)
    })?;
    let mut mean = Vec::with_capacity(n);
    let mut max_latents = sae.map(|_| Vec::with_capacity(n));
    for (i, a) in acts.iter().enumerate() {
        let v: Vec<f32> = a.mean(0)?.to_vec1()?;
        mean.push(v);
        if let (Some(s), Some(out)) = (sae, max_latents.as_mut()) {
            let f: Vec<Vec<f32>> = s.encode(a)?.to_vec2()?;
            let mut m: HashMap<u32, f32> = HashMap::new();
            for row in &f {
                for (j, &x) in row.iter().enumerate() {
                    if x > 0.0 {
                        let e = m.entry(j as u32).or_insert(0.0);
                        *e = e.max(x);
                    }
                }
            }
            let mut v: Vec<(u32, f32)> = m.into_iter().collect();
            v.sort_unstable_by_key(|x| x.0);
            out.push(v);
            progress("SAE latents", i + 1, n);
        }
    }
    let ids = texts
        .iter()
        .map(|t| {
            Ok(model
                .tokenizer
                .encode(t, false)
                .map_err(Error::from)?
                .into_iter()
                .collect())
        })
        .collect::<Result<Vec<HashSet<u32>>>>()?;
    let gain = model
        .transformer
        .final_norm_weight()
        .to_dtype(candle_core::DType::F32)?;
    let unembed = model
        .transformer
        .unembed()?
        .to_dtype(candle_core::DType::F32)?
        .broadcast_mul(&gain)?;
    Ok(Features {
        mean,
        max_latents,
        ids,
        grams: texts.iter().map(|t| grams(t)).collect(),
        unembed: Some(unembed),
    })
}

/// One candidate hypothesis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    /// e.g. `latent 1234`, `"my cat"`, `direction`, `token " cat"`.
    pub name: String,
    #[serde(with = "pragma_model::io::json_f64")]
    pub p: f64,
    /// Held-out detection AUROC (planted vs not).
    #[serde(with = "pragma_model::io::json_f64")]
    pub heldout_auroc: f64,
}

/// A technique at one plant rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateResult {
    pub rate: f64,
    /// The top candidates, best first.
    pub candidates: Vec<Candidate>,
    /// 1-based rank of the first hit among them.
    pub first_hit: Option<usize>,
    /// Candidates significant at FDR 0.05 (BH over every hypothesis tested).
    pub discoveries: usize,
}

fn frequency_test(
    a: &[usize],
    b: &[usize],
    has: &dyn Fn(usize) -> Vec<String>,
    lf: &[f64],
) -> (Vec<(String, f64, f64)>, usize) {
    let mut ca: HashMap<String, usize> = HashMap::new();
    let mut cb: HashMap<String, usize> = HashMap::new();
    for &i in a {
        for g in has(i) {
            *ca.entry(g).or_default() += 1;
        }
    }
    for &i in b {
        for g in has(i) {
            *cb.entry(g).or_default() += 1;
        }
    }
    let mut keys: Vec<String> = ca.keys().chain(cb.keys()).cloned().collect();
    keys.sort_unstable();
    keys.dedup();
    let tested: Vec<(String, f64, f64)> = keys
        .into_iter()
        .map(|k| {
            let (x, y) = (
                cb.get(&k).copied().unwrap_or(0),
                ca.get(&k).copied().unwrap_or(0),
            );
            let diff = x as f64 / b.len() as f64 - y as f64 / a.len() as f64;
            let p = if x > y {
                fisher_greater(x, b.len(), y, a.len(), lf)
            } else {
                1.0
            };
            (k, p, diff)
        })
        .collect();
    let adj = bh_adjust(&tested.iter().map(|t| t.1).collect::<Vec<_>>());
    let discoveries = adj.iter().filter(|&&q| q <= FDR_Q).count();
    let mut ranked = tested;
    ranked.sort_by(|x, y| {
        x.1.total_cmp(&y.1)
            .then(y.2.total_cmp(&x.2))
            .then(x.0.cmp(&y.0))
    });
    (ranked, discoveries)
}

/// Run `tech` on one seed's draw at every rate. `decode` names a token id (for the
/// unembedding's token candidates).
pub fn run(
    tech: Technique,
    f: &Features,
    draw: &Draw,
    rates: &[f64],
    seed: u64,
    decode: &dyn Fn(u32) -> String,
) -> Result<Vec<RateResult>> {
    let longest_b = draw.b.iter().map(Vec::len).max().unwrap_or(0);
    let lf = ln_factorials(draw.a.len() + longest_b + 1);
    let held = |score: &dyn Fn(usize) -> f64| heldout_auroc(draw, score);
    let rate_list = rate_list(rates);
    let mut out = Vec::new();
    for (ri, &rate) in rate_list.iter().enumerate() {
        let b = &draw.b[ri.min(draw.b.len() - 1)];
        let (candidates, discoveries) = match tech {
            Technique::SaeDiff => {
                let lat = f.max_latents.as_ref().ok_or_else(|| {
                    Error::Input("technique sae-diff needs an SAE (--sae DIR)".into())
                })?;
                let has = |i: usize| -> Vec<String> {
                    lat[i].iter().map(|(j, _)| j.to_string()).collect()
                };
                let (ranked, disc) = frequency_test(&draw.a, b, &has, &lf);
                let cands = ranked
                    .into_iter()
                    .take(TOP_K)
                    .map(|(k, p, _)| {
                        let j: u32 = k.parse().unwrap_or(0);
                        let score = |i: usize| -> f64 {
                            lat[i]
                                .binary_search_by_key(&j, |x| x.0)
                                .map_or(0.0, |pos| lat[i][pos].1 as f64)
                        };
                        Candidate {
                            name: format!("latent {j}"),
                            p,
                            heldout_auroc: held(&score),
                        }
                    })
                    .collect::<Vec<_>>();
                (cands, disc)
            }
            Technique::Ngram => {
                let has = |i: usize| -> Vec<String> { f.grams[i].iter().cloned().collect() };
                let (ranked, disc) = frequency_test(&draw.a, b, &has, &lf);
                let cands = ranked
                    .into_iter()
                    .take(TOP_K)
                    .map(|(k, p, _)| {
                        let score =
                            |i: usize| -> f64 { f64::from(u8::from(f.grams[i].contains(&k))) };
                        Candidate {
                            heldout_auroc: held(&score),
                            name: format!("\"{k}\""),
                            p,
                        }
                    })
                    .collect::<Vec<_>>();
                (cands, disc)
            }
            Technique::DiffMeanUnembed => {
                let d = f.mean[0].len();
                let mean_of = |ix: &[usize]| -> Vec<f64> {
                    let mut m = vec![0f64; d];
                    for &i in ix {
                        for (x, v) in m.iter_mut().zip(&f.mean[i]) {
                            *x += *v as f64;
                        }
                    }
                    m.iter_mut().for_each(|x| *x /= ix.len().max(1) as f64);
                    m
                };
                let diff: Vec<f64> = mean_of(b)
                    .iter()
                    .zip(mean_of(&draw.a))
                    .map(|(x, y)| x - y)
                    .collect();
                let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                let obs = norm(&diff);
                // Permutation p-value of the difference's norm (200 relabellings).
                let pooled: Vec<usize> = draw.a.iter().chain(b).copied().collect();
                let mut rng = XorShift::new(seed, 0xD1F);
                let mut ge = 0usize;
                let perms = 200;
                for _ in 0..perms {
                    let mut p = pooled.clone();
                    rng.shuffle(&mut p);
                    let (x, y) = p.split_at(draw.a.len());
                    let dd: Vec<f64> = mean_of(y)
                        .iter()
                        .zip(mean_of(x))
                        .map(|(u, v)| u - v)
                        .collect();
                    if norm(&dd) >= obs {
                        ge += 1;
                    }
                }
                let p_dir = (ge + 1) as f64 / (perms + 1) as f64;
                let proj = |i: usize| -> f64 {
                    f.mean[i]
                        .iter()
                        .zip(&diff)
                        .map(|(a, c)| *a as f64 * c)
                        .sum()
                };
                let direction = Candidate {
                    name: "direction".into(),
                    p: p_dir,
                    heldout_auroc: held(&proj),
                };
                // The direction ranks first only when its permutation test says the sets
                // differ (p <= 0.05); otherwise after the tokens.
                let mut cands = Vec::new();
                let direction_first = p_dir <= FDR_Q;
                if direction_first {
                    cands.push(direction.clone());
                }
                if let Some(u) = &f.unembed {
                    let dv = Tensor::from_vec(
                        diff.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
                        (d, 1),
                        &candle_core::Device::Cpu,
                    )?;
                    let logits: Vec<f32> = u.matmul(&dv)?.squeeze(1)?.to_vec1()?;
                    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
                    let k = (TOP_K - 1).min(idx.len());
                    idx.select_nth_unstable_by(k.saturating_sub(1), |x, y| {
                        logits[*y as usize].total_cmp(&logits[*x as usize])
                    });
                    let mut top: Vec<u32> = idx[..k].to_vec();
                    top.sort_by(|x, y| logits[*y as usize].total_cmp(&logits[*x as usize]));
                    for t in top {
                        let score =
                            |i: usize| -> f64 { f64::from(u8::from(f.ids[i].contains(&t))) };
                        cands.push(Candidate {
                            name: format!("token {:?}", decode(t)),
                            p: f64::NAN,
                            heldout_auroc: held(&score),
                        });
                    }
                }
                if !direction_first {
                    cands.push(direction);
                }
                let disc = usize::from(p_dir <= FDR_Q);
                (cands, disc)
            }
            other => {
                return Err(Error::Input(format!(
                    "technique {} is not a planted-difference technique",
                    other.name()
                )))
            }
        };
        let first_hit = candidates
            .iter()
            .position(|c| c.heldout_auroc >= HIT_AUROC)
            .map(|p| p + 1);
        out.push(RateResult {
            rate,
            candidates,
            first_hit,
            discoveries,
        });
    }
    Ok(out)
}
