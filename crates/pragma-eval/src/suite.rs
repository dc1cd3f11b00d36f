//! Suites: the declarative file that says which tasks to run with which techniques.
//!
//! ```toml
//! name = "my-suite"
//! hook = "blocks.15.hook_resid_post"   # where every activation technique reads (and the SAE's hook)
//! seeds = 3                            # split seeds: each changes train/validation/test
//! fractions = [0.6, 0.2]               # train, validation; the rest is test
//! budget_minutes = 60                  # a larger time estimate needs --yes
//! answers = ["Yes| Yes", "No| No"]     # prompting's answer tokens (alternatives: one token each)
//!
//! [[task]]
//! name = "sentiment"
//! family = "detection"
//! dataset = "../probes/sentiment.jsonl"   # relative to this file; NAME.meta.json beside it
//! max_examples = 600                      # optional: a seeded stratified subsample
//! techniques = ["probe", "diffmean", "bow"]  # optional: default every technique of the family
//!
//! [[task]]
//! name = "flattery"
//! family = "planted"
//! dataset = "planted/base.jsonl"          # {"text": ...} per line: sets A, B and the held-out pool
//! plant = "planted/flattery.json"         # with null = true: the A vs A' control (nothing planted)
//! rates = [0.01, 0.05, 0.2]               # optional (this default); each in (0, 1]
//! items = 500                             # optional: documents per set
//! heldout = 200                           # optional: held-out documents (each also planted)
//!
//! [[task]]
//! name = "steer-animals"
//! family = "steering"
//! dataset = "concepts/animals.jsonl"       # the concept: label 1
//! instructions = "steering/instructions.txt"  # one per line; half choose the factor
//! factors = [0.02, 0.05, 0.1, 0.2]         # optional: x the median activation norm
//! max_new_tokens = 24                      # optional
//! seeds = 1                                # optional, any task: its own split seeds
//! fractions = [0.4, 0.1]                   # optional, any task: its own split
//!
//! [[task]]
//! name = "eval-awareness-study"
//! family = "study"                         # `pragma steer study` with its defaults, one row
//! dataset = "eval-awareness/prompts.jsonl" # tasks {"task", "eval", "deploy"}
//! pairs = "eval-awareness/pairs.jsonl"
//! reference = "eval-awareness/reference.txt"
//! ```
//!
//! Datasets are the probe format (`pragma_methods::probe`): JSONL with `text` or
//! `messages`, a binary `label`, optional `group` and `split`; the prompting technique
//! takes its yes/no question from `NAME.meta.json`.

use std::path::{Path, PathBuf};

use pragma_methods::sae::preset::Preset;
use pragma_methods::{Error, Result};
use serde::{Deserialize, Serialize};

/// The shipped default suite and its datasets, as (path relative to the suite folder,
/// contents). `--suite default` writes them under the run folder and runs from there.
pub const DEFAULT_SUITE: &[(&str, &str)] = &[
    (
        "default.toml",
        include_str!("../../../examples/eval/default.toml"),
    ),
    (
        "eval-awareness.toml",
        include_str!("../../../examples/eval/eval-awareness.toml"),
    ),
    (
        "probes/facts.jsonl",
        include_str!("../../../examples/probes/facts.jsonl"),
    ),
    (
        "probes/facts.meta.json",
        include_str!("../../../examples/probes/facts.meta.json"),
    ),
    (
        "probes/sentiment.jsonl",
        include_str!("../../../examples/probes/sentiment.jsonl"),
    ),
    (
        "probes/sentiment.meta.json",
        include_str!("../../../examples/probes/sentiment.meta.json"),
    ),
    (
        "probes/language.jsonl",
        include_str!("../../../examples/probes/language.jsonl"),
    ),
    (
        "probes/language.meta.json",
        include_str!("../../../examples/probes/language.meta.json"),
    ),
    (
        "probes/eval-awareness.jsonl",
        include_str!("../../../examples/probes/eval-awareness.jsonl"),
    ),
    (
        "probes/eval-awareness.meta.json",
        include_str!("../../../examples/probes/eval-awareness.meta.json"),
    ),
    (
        "concepts/question.jsonl",
        include_str!("../../../examples/eval/concepts/question.jsonl"),
    ),
    (
        "concepts/question.meta.json",
        include_str!("../../../examples/eval/concepts/question.meta.json"),
    ),
    (
        "concepts/code.jsonl",
        include_str!("../../../examples/eval/concepts/code.jsonl"),
    ),
    (
        "concepts/code.meta.json",
        include_str!("../../../examples/eval/concepts/code.meta.json"),
    ),
    (
        "concepts/negation.jsonl",
        include_str!("../../../examples/eval/concepts/negation.jsonl"),
    ),
    (
        "concepts/negation.meta.json",
        include_str!("../../../examples/eval/concepts/negation.meta.json"),
    ),
    (
        "concepts/past.jsonl",
        include_str!("../../../examples/eval/concepts/past.jsonl"),
    ),
    (
        "concepts/past.meta.json",
        include_str!("../../../examples/eval/concepts/past.meta.json"),
    ),
    (
        "concepts/animals.jsonl",
        include_str!("../../../examples/eval/concepts/animals.jsonl"),
    ),
    (
        "concepts/animals.meta.json",
        include_str!("../../../examples/eval/concepts/animals.meta.json"),
    ),
    (
        "concepts/food.jsonl",
        include_str!("../../../examples/eval/concepts/food.jsonl"),
    ),
    (
        "concepts/food.meta.json",
        include_str!("../../../examples/eval/concepts/food.meta.json"),
    ),
    (
        "concepts/person.jsonl",
        include_str!("../../../examples/eval/concepts/person.jsonl"),
    ),
    (
        "concepts/person.meta.json",
        include_str!("../../../examples/eval/concepts/person.meta.json"),
    ),
    (
        "concepts/imperative.jsonl",
        include_str!("../../../examples/eval/concepts/imperative.jsonl"),
    ),
    (
        "concepts/imperative.meta.json",
        include_str!("../../../examples/eval/concepts/imperative.meta.json"),
    ),
    (
        "eval-awareness/pairs.jsonl",
        include_str!("../../../examples/eval-awareness/pairs.jsonl"),
    ),
    (
        "eval-awareness/prompts.jsonl",
        include_str!("../../../examples/eval-awareness/prompts.jsonl"),
    ),
    (
        "eval-awareness/reference.txt",
        include_str!("../../../examples/eval-awareness/reference.txt"),
    ),
    (
        "steering/instructions.txt",
        include_str!("../../../examples/eval/steering/instructions.txt"),
    ),
    (
        "planted/base.jsonl",
        include_str!("../../../examples/eval/planted/base.jsonl"),
    ),
    (
        "planted/cats.json",
        include_str!("../../../examples/eval/planted/cats.json"),
    ),
    (
        "planted/weather.json",
        include_str!("../../../examples/eval/planted/weather.json"),
    ),
    (
        "planted/flattery.json",
        include_str!("../../../examples/eval/planted/flattery.json"),
    ),
    (
        "planted/gloom.json",
        include_str!("../../../examples/eval/planted/gloom.json"),
    ),
];

/// A task family: what is measured and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Concept detection (AxBench style): score held-out texts for a concept; test AUROC.
    Detection,
    /// Hypothesis generation: find what was planted in one of two document sets.
    Planted,
    /// Concept steering (AxBench's protocol, judge-free): steer neutral instructions
    /// toward a concept; concept, instruction relevance and fluency scores.
    Steering,
    /// The evaluation-awareness steering study (`pragma steer study`) as one row.
    Study,
}

impl Family {
    pub const NAMES: &'static [&'static str] = &["detection", "planted", "steering", "study"];

    /// Every technique this family knows, in report order.
    pub fn techniques(self) -> Vec<Technique> {
        match self {
            Family::Detection => vec![
                Technique::Probe,
                Technique::DiffMean,
                Technique::Pca,
                Technique::SaeLatent,
                Technique::SaeProbe(1),
                Technique::SaeProbe(5),
                Technique::SaeProbe(20),
                Technique::Prompt,
                Technique::Bow,
                Technique::Random,
            ],
            Family::Planted => vec![
                Technique::SaeDiff,
                Technique::Ngram,
                Technique::DiffMeanUnembed,
                Technique::Prompt,
            ],
            Family::Study => vec![Technique::Study],
            Family::Steering => vec![
                Technique::DiffMean,
                Technique::Probe,
                Technique::Pca,
                Technique::SaeLatent,
                Technique::Prompt,
                Technique::Random,
            ],
        }
    }
}

/// A technique, by its name in suites and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Technique {
    /// Logistic regression (L2, C chosen on validation AUROC) on standardised mean-pooled
    /// activations (sklearn's objective; `pragma_methods::linear`).
    Probe,
    /// Difference of class means of the mean-pooled activations (AxBench's DiffMean).
    DiffMean,
    /// First principal component of differences of randomly paired positive and negative
    /// train activations, signed by the mean difference (RepE's PCA of differences).
    Pca,
    /// The single SAE latent whose mean-pooled activation best separates the train split
    /// (AUROC, either sign), read as the detector.
    SaeLatent,
    /// Logistic regression on the K SAE latents with the largest absolute difference of
    /// class means on train (SAEBench's sparse probing).
    SaeProbe(usize),
    /// The model's own yes/no answer to the dataset's question (log-odds).
    Prompt,
    /// Logistic regression on log(1 + count) of tokens (bag-of-words).
    Bow,
    /// A random Gaussian direction (seeded): the floor.
    Random,
    /// Planted difference: SAE latent firing frequency, B vs A (Fisher exact, BH).
    SaeDiff,
    /// Planted difference: word unigram/bigram presence, B vs A (Fisher exact, BH).
    Ngram,
    /// Planted difference: the difference of means, and the tokens it promotes through
    /// the unembedding.
    DiffMeanUnembed,
    /// The steering study: a difference-of-means vector from contrastive pairs, its layer
    /// and scale chosen on half the tasks, beside a random control and prompting.
    Study,
}

impl Technique {
    pub fn name(&self) -> String {
        match self {
            Technique::Probe => "probe".into(),
            Technique::DiffMean => "diffmean".into(),
            Technique::Pca => "pca".into(),
            Technique::SaeLatent => "sae-latent".into(),
            Technique::SaeProbe(k) => format!("sae-probe-{k}"),
            Technique::Prompt => "prompt".into(),
            Technique::Bow => "bow".into(),
            Technique::Random => "random".into(),
            Technique::SaeDiff => "sae-diff".into(),
            Technique::Ngram => "ngram".into(),
            Technique::DiffMeanUnembed => "diffmean-unembed".into(),
            Technique::Study => "study".into(),
        }
    }

    /// Whether it reads an SAE.
    pub fn needs_sae(&self) -> bool {
        matches!(
            self,
            Technique::SaeLatent | Technique::SaeProbe(_) | Technique::SaeDiff
        )
    }

    /// Whether its score is a per-token score pooled over the text (mean and max), as
    /// opposed to one score per text (prompting, bag-of-words).
    pub fn pooled(&self) -> bool {
        !matches!(self, Technique::Prompt | Technique::Bow | Technique::Ngram)
    }

    pub fn parse(s: &str, family: Family) -> Result<Technique> {
        let known = family.techniques();
        if let Some(t) = known.iter().find(|t| t.name() == s) {
            return Ok(*t);
        }
        if let Some(k) = s
            .strip_prefix("sae-probe-")
            .filter(|_| family == Family::Detection)
        {
            if let Ok(k) = k.parse::<usize>() {
                if k > 0 {
                    return Ok(Technique::SaeProbe(k));
                }
            }
        }
        let names: Vec<String> = known.iter().map(Technique::name).collect();
        Err(Error::Input(format!(
            "unknown technique '{s}' for family {family:?}{}; known: {} (sae-probe-K for any K >= 1)",
            suggest(s, names.iter().map(String::as_str)),
            names.join(", ")
        )))
    }
}

/// A technique's definition revision (part of every cell's key): bumped when its
/// definition changes, so its old cells are recomputed and the others kept.
pub fn revision(technique: &str) -> u32 {
    match technique {
        // 2: a negated latent pools, then negates (max pooling was max of -f).
        "sae-latent" => 2,
        // 2: the random direction from a well-mixed seed (the first draws of the old
        // seeding were tiny, so its first components dominated).
        "random" => 2,
        _ => 1,
    }
}

/// " (did you mean 'x'?)" when a known name is close to `s`.
pub fn suggest<'a>(s: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (strsim::levenshtein(s, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean '{k}'?)"))
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<String>,
    hook: String,
    seeds: Option<u64>,
    fractions: Option<(f64, f64)>,
    budget_minutes: Option<f64>,
    answers: Option<(String, String)>,
    sae: Option<Preset>,
    #[serde(rename = "task", default)]
    tasks: Vec<RawTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    family: String,
    dataset: PathBuf,
    max_examples: Option<usize>,
    techniques: Option<Vec<String>>,
    plant: Option<PathBuf>,
    null: Option<bool>,
    rates: Option<Vec<f64>>,
    items: Option<usize>,
    heldout: Option<usize>,
    instructions: Option<PathBuf>,
    factors: Option<Vec<f64>>,
    max_new_tokens: Option<usize>,
    concept: Option<String>,
    seeds: Option<u64>,
    fractions: Option<(f64, f64)>,
    pairs: Option<PathBuf>,
    reference: Option<PathBuf>,
    question: Option<String>,
    deploy_prompt: Option<String>,
}

/// A study task: contrastive pairs, the coherence reference text, and optionally the
/// question and the prompting baseline's statement (default: `pragma steer study`'s).
#[derive(Clone, Debug, Serialize)]
pub struct StudySpec {
    pub pairs: PathBuf,
    pub reference: PathBuf,
    pub question: Option<String>,
    pub deploy_prompt: Option<String>,
}

/// One task of a suite.
#[derive(Clone, Debug, Serialize)]
pub struct Task {
    pub name: String,
    pub family: Family,
    /// The dataset (JSONL), resolved against the suite's folder.
    pub dataset: PathBuf,
    /// At most this many examples (a stratified subsample with seed 0, the same for
    /// every split seed); `None`: all.
    pub max_examples: Option<usize>,
    #[serde(serialize_with = "ser_techniques")]
    pub techniques: Vec<Technique>,
    /// The planted family's settings.
    pub planted: Option<crate::planted::PlantedSpec>,
    /// The steering family's settings.
    pub steering: Option<crate::steering::SteeringSpec>,
    /// The study family's settings (the task's `dataset` is its tasks file).
    pub study: Option<StudySpec>,
    /// Split seeds of this task (default: the suite's).
    pub seeds: Option<u64>,
    /// Train and validation fractions of this task (default: the suite's).
    pub fractions: Option<(f64, f64)>,
    /// Files whose bytes the task's results depend on besides the dataset (the plant).
    pub extra_files: Vec<PathBuf>,
}

fn ser_techniques<S: serde::Serializer>(t: &[Technique], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.iter().map(Technique::name))
}

/// A parsed, checked suite.
#[derive(Clone, Debug, Serialize)]
pub struct Suite {
    pub name: String,
    pub path: PathBuf,
    pub hook: String,
    pub seeds: u64,
    pub fractions: (f64, f64),
    pub budget_minutes: f64,
    /// The prompting technique's answers: (yes, no), each "A|B" for alternatives that are
    /// one token each.
    pub answers: (String, String),
    /// The SAE recipe trained on first use when no SAE is given (the `[sae]` table: `data`,
    /// `store_tokens`, `ctx`, `k`, `expansion`, `tokens`, `batch_tokens`; default: [`Preset::default`]).
    pub sae: Preset,
    pub tasks: Vec<Task>,
}

impl Suite {
    /// Read and check a suite file: known families and techniques (with suggestions),
    /// datasets that exist, sane fractions and seeds.
    pub fn load(path: &Path) -> Result<Suite> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Input(format!("suite {}: {e}", path.display())))?;
        let raw: RawSuite = toml::from_str(&text)
            .map_err(|e| Error::Input(format!("suite {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fractions = raw.fractions.unwrap_or((0.6, 0.2));
        if !(fractions.0 > 0.0 && fractions.1 > 0.0 && fractions.0 + fractions.1 < 1.0) {
            return Err(Error::Input(format!(
                "suite {}: fractions = [train, validation] must be > 0 and sum to < 1 (the rest \
                 is test), found {fractions:?}",
                path.display()
            )));
        }
        let seeds = raw.seeds.unwrap_or(3);
        if seeds == 0 {
            return Err(Error::Input(format!(
                "suite {}: seeds must be >= 1",
                path.display()
            )));
        }
        if raw.tasks.is_empty() {
            return Err(Error::Input(format!(
                "suite {}: no [[task]] tables",
                path.display()
            )));
        }
        let mut tasks = Vec::new();
        for t in raw.tasks {
            let family = match t.family.as_str() {
                "detection" => Family::Detection,
                "planted" => Family::Planted,
                "steering" => Family::Steering,
                "study" => Family::Study,
                other => {
                    return Err(Error::Input(format!(
                        "suite {}: task '{}': unknown family '{other}'{}; known: {}",
                        path.display(),
                        t.name,
                        suggest(other, Family::NAMES.iter().copied()),
                        Family::NAMES.join(", ")
                    )))
                }
            };
            let techniques = match t.techniques {
                Some(v) => v
                    .iter()
                    .map(|s| Technique::parse(s, family))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| {
                        Error::Input(format!("suite {}: task '{}': {e}", path.display(), t.name))
                    })?,
                None => family.techniques(),
            };
            let dataset = dir.join(&t.dataset);
            if !dataset.is_file() {
                return Err(Error::Input(format!(
                    "suite {}: task '{}': dataset {} not found",
                    path.display(),
                    t.name,
                    dataset.display()
                )));
            }
            if tasks.iter().any(|x: &Task| x.name == t.name) {
                return Err(Error::Input(format!(
                    "suite {}: two tasks named '{}'",
                    path.display(),
                    t.name
                )));
            }
            if t.max_examples.is_some_and(|m| m < 20) {
                return Err(Error::Input(format!(
                    "suite {}: task '{}': max_examples must be >= 20",
                    path.display(),
                    t.name
                )));
            }
            let here = |m: String| {
                Error::Input(format!("suite {}: task '{}': {m}", path.display(), t.name))
            };
            let mut extra_files = Vec::new();
            if !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || t.name.is_empty()
            {
                return Err(here(
                    "task names are letters, digits, '-' and '_' (they name folders)".into(),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = techniques.iter().find(|x| !seen.insert(x.name())) {
                return Err(here(format!("technique {} is listed twice", dup.name())));
            }
            if family != Family::Steering
                && (t.instructions.is_some()
                    || t.factors.is_some()
                    || t.max_new_tokens.is_some()
                    || t.concept.is_some())
            {
                return Err(here(
                    "instructions, factors, max_new_tokens and concept belong to family \
                     \"steering\""
                        .into(),
                ));
            }
            if t.seeds == Some(0) {
                return Err(here("seeds must be >= 1".into()));
            }
            if family != Family::Study && (t.pairs.is_some() || t.reference.is_some()) {
                return Err(here(
                    "pairs and reference belong to family \"study\"".into(),
                ));
            }
            let mut study = None;
            if family == Family::Study {
                let (Some(pairs), Some(reference)) = (&t.pairs, &t.reference) else {
                    return Err(here(
                        "a study task needs pairs = \"PAIRS.jsonl\" and reference = \"TEXT.txt\" \
                         (dataset = the tasks file)"
                            .into(),
                    ));
                };
                let (p, r) = (dir.join(pairs), dir.join(reference));
                for f in [&p, &r] {
                    if !f.is_file() {
                        return Err(here(format!("{} not found", f.display())));
                    }
                }
                extra_files.push(p.clone());
                extra_files.push(r.clone());
                study = Some(StudySpec {
                    pairs: p,
                    reference: r,
                    question: t.question.clone(),
                    deploy_prompt: t.deploy_prompt.clone(),
                });
            }
            if let Some(f) = t.fractions {
                if !(f.0 > 0.0 && f.1 > 0.0 && f.0 + f.1 < 1.0) {
                    return Err(here(format!(
                        "fractions = [train, validation] must be > 0 and sum to < 1, found {f:?}"
                    )));
                }
            }
            let mut steering = None;
            let planted = match family {
                Family::Steering => {
                    if t.plant.is_some()
                        || t.rates.is_some()
                        || t.null.is_some()
                        || t.items.is_some()
                        || t.heldout.is_some()
                    {
                        return Err(here(
                            "plant, null, rates, items and heldout belong to family \
                                 \"planted\""
                                .into(),
                        ));
                    }
                    let ip = dir.join(t.instructions.clone().ok_or_else(|| {
                        here(
                            "a steering task needs instructions = \"FILE.txt\" (one per line)"
                                .into(),
                        )
                    })?);
                    let text = std::fs::read_to_string(&ip)
                        .map_err(|e| here(format!("{}: {e}", ip.display())))?;
                    let instructions: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect();
                    if instructions.len() < 4 {
                        return Err(here(format!(
                            "{}: {} instructions; at least 4 (half choose the factor, half report)",
                            ip.display(),
                            instructions.len()
                        )));
                    }
                    extra_files.push(ip);
                    let meta = dataset.with_extension("meta.json");
                    if meta.is_file() {
                        extra_files.push(meta);
                    }
                    let factors = t
                        .factors
                        .clone()
                        .unwrap_or_else(|| vec![0.02, 0.05, 0.1, 0.2]);
                    if factors.is_empty() || factors.iter().any(|f| !f.is_finite()) {
                        return Err(here(format!(
                            "factors must be finite numbers, found {factors:?}"
                        )));
                    }
                    steering = Some(crate::steering::SteeringSpec {
                        instructions,
                        factors,
                        max_new_tokens: t.max_new_tokens.unwrap_or(24).clamp(1, 256),
                        concept: t.concept.clone().unwrap_or_default(),
                    });
                    None
                }
                Family::Study => None,
                Family::Detection => {
                    if t.plant.is_some()
                        || t.rates.is_some()
                        || t.null.is_some()
                        || t.items.is_some()
                        || t.heldout.is_some()
                    {
                        return Err(here(
                            "plant, null, rates, items and heldout belong to family \"planted\""
                                .into(),
                        ));
                    }
                    // The prompting question and the positive class live in NAME.meta.json.
                    let meta = dataset.with_extension("meta.json");
                    if meta.is_file() {
                        extra_files.push(meta);
                    }
                    None
                }
                Family::Planted => {
                    if t.max_examples.is_some() {
                        return Err(here(
                            "max_examples is for detection tasks; planted tasks take items and \
                             heldout"
                                .into(),
                        ));
                    }
                    let null = t.null.unwrap_or(false);
                    let plant =
                        match &t.plant {
                            Some(p) => {
                                let pp = dir.join(p);
                                let plant = crate::planted::Plant::load(&pp)
                                    .map_err(|e| here(e.to_string()))?;
                                extra_files.push(pp);
                                Some(plant)
                            }
                            None if null => None,
                            None => return Err(here(
                                "a planted task needs plant = \"FILE.json\", or null = true for \
                                 the A vs A' control (with a plant file: its position and \
                                 neutral phrases, nothing planted)"
                                    .into(),
                            )),
                        };
                    if null && t.rates.is_some() {
                        return Err(here("a null task plants nothing: drop rates".into()));
                    }
                    let items = t.items.unwrap_or(500);
                    let heldout = t.heldout.unwrap_or(200);
                    if items == 0 || heldout == 0 {
                        return Err(here(format!(
                            "items and heldout must be >= 1, found {items} and {heldout}"
                        )));
                    }
                    let rates = if null {
                        vec![0.0]
                    } else {
                        t.rates.clone().unwrap_or_else(|| vec![0.01, 0.05, 0.2])
                    };
                    if !null && rates.is_empty() {
                        return Err(here(
                            "rates is empty: give plant rates as fractions, e.g. [0.01, 0.05, 0.2]"
                                .into(),
                        ));
                    }
                    if !null {
                        if let Some(r) = rates
                            .iter()
                            .find(|&&r| !(r > 0.0 && r <= 1.0) || (r * items as f64).round() < 1.0)
                        {
                            return Err(here(format!(
                                    "plant rates are fractions in (0, 1] (5% = 0.05) that plant at least one of the \
                                 {items} documents of set B (rate x items >= 0.5), found {r}"
                                )));
                        }
                    }
                    Some(crate::planted::PlantedSpec {
                        rates,
                        plant,
                        null,
                        items,
                        heldout,
                    })
                }
            };
            tasks.push(Task {
                name: t.name,
                family,
                dataset,
                max_examples: t.max_examples,
                techniques,
                planted,
                steering,
                study,
                seeds: if family == Family::Study {
                    Some(1)
                } else {
                    t.seeds
                },
                fractions: t.fractions,
                extra_files,
            });
        }
        Ok(Suite {
            name: raw.name.unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
            path: path.to_path_buf(),
            sae: {
                let mut p = raw.sae.unwrap_or_default();
                // A corpus file is relative to the suite; a built-in name stays a name.
                if !pragma_store::datasets::BUILTIN
                    .iter()
                    .any(|(n, _)| *n == p.data)
                {
                    p.data = dir.join(&p.data).to_string_lossy().into_owned();
                }
                if p.k == 0
                    || p.expansion == 0
                    || p.tokens == 0
                    || p.store_tokens == 0
                    || p.batch_tokens == 0
                {
                    return Err(Error::Input(format!(
                        "suite {}: [sae] k, expansion, tokens, batch_tokens and store_tokens must be >= 1",
                        path.display()
                    )));
                }
                p
            },
            hook: raw.hook,
            seeds,
            fractions,
            budget_minutes: match raw.budget_minutes {
                Some(b) if !(b.is_finite() && b > 0.0) => {
                    return Err(Error::Input(format!(
                        "suite {}: budget_minutes must be a number > 0, found {b}",
                        path.display()
                    )))
                }
                b => b.unwrap_or(60.0),
            },
            answers: raw
                .answers
                .unwrap_or_else(|| ("Yes| Yes".into(), "No| No".into())),
            tasks,
        })
    }

    /// Write the shipped default suite under `dir` (unchanged files are left alone) and
    /// return the path of its suite file.
    pub fn write_default(dir: &Path) -> Result<PathBuf> {
        for (rel, text) in DEFAULT_SUITE {
            let p = dir.join(rel);
            if std::fs::read_to_string(&p).ok().as_deref() == Some(*text) {
                continue;
            }
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Input(format!("{}: {e}", parent.display())))?;
            }
            pragma_model::io::write_atomic(&p, text.as_bytes())?;
        }
        Ok(dir.join("default.toml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped default suite loads from what `write_default` writes: every file it
    /// names is embedded.
    #[test]
    fn the_default_suite_is_complete() {
        let d = tempfile::tempdir().expect("tmp");
        let s = Suite::load(&Suite::write_default(d.path()).expect("write")).expect("load");
        assert!(s.tasks.len() >= 12);
        // The case study's suite (examples/eval/eval-awareness.toml) is written beside it.
        let ea = Suite::load(&d.path().join("eval-awareness.toml")).expect("load");
        assert_eq!(ea.tasks.len(), 2);
        for t in s.tasks.iter().chain(&ea.tasks) {
            for f in std::iter::once(&t.dataset).chain(&t.extra_files) {
                assert!(f.is_file(), "{}", f.display());
            }
        }
    }
}
