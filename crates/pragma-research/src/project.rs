//! A research project file, `pragma.toml`: the north star in words, the proxy tasks (tasks
//! of an eval suite, `pragma eval`), the techniques under test and the baselines they must
//! beat on each, the time box (a date) and the decision rule. `pragma project init`
//! writes a commented template; [`Project::load`] checks it against the suite (unknown
//! tasks or techniques are errors with suggestions).
//!
//! The decision rule ([`verdict`]): a technique is *ahead* when the lower end of its 95%
//! CI lies above the upper end of the best baseline's, *behind* when its upper end lies
//! below the baseline's lower end, and *within noise* otherwise; past the time box
//! without being ahead, the verdict says so and suggests pivoting (fail fast).

use std::path::{Path, PathBuf};

use pragma_eval::report::check_name;
use pragma_eval::suite::{suggest, Suite};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The template `pragma project init` writes (`{north_star}`, `{time_box}`, `{suite}`
/// replaced).
pub const TEMPLATE: &str = r#"# A pragma research project: the loop is north star -> proxy task -> techniques beside
# dumb baselines -> time-boxed check-ins that say continue or pivot.

[project]
# What you want to be true, in words.
north_star = "{north_star}"
# The date (UTC, YYYY-MM-DD) by which a technique must be ahead of its baselines;
# a check-in after it without a win says so plainly and suggests pivoting.
time_box = "{time_box}"
# ci-above: ahead when the technique's 95% CI lies above the best baseline's.
decision_rule = "ci-above"
# The eval suite whose tasks are the proxy tasks (`pragma eval run --suite default`
# writes the default one; paths are relative to this file).
suite = "{suite}"
# The model check-ins run on (a .gguf, an HF folder or a built-in name); default:
# pragma's default model.
# model = "path/to/model.gguf"

# One [[proxy]] per proxy task: a task of the suite, the techniques under test, and
# the baselines each must beat. Detection and steering tasks: techniques of the
# family (`pragma eval run --help`); a study task: its arms, vector, random-control,
# prompting, deploy-framing, unsteered. Planted tasks cannot be proxy tasks.
[[proxy]]
task = "eval-awareness"
techniques = ["probe", "diffmean"]
baselines = ["prompt", "bow", "random"]
"#;

/// Worked projects `pragma project init --example NAME` writes: (name, pragma.toml).
/// Their suites are written with the default suite's files (under `eval/suite/`).
pub const EXAMPLES: &[(&str, &str)] = &[(
    "eval-awareness",
    include_str!("../../../examples/projects/eval-awareness/pragma.toml"),
)];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    project: RawHeader,
    #[serde(default)]
    proxy: Vec<Proxy>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    north_star: String,
    time_box: String,
    #[serde(default = "ci_above")]
    decision_rule: String,
    suite: PathBuf,
    /// The model the proxy tasks run on (default: pragma's default model).
    #[serde(default)]
    model: Option<String>,
}

fn ci_above() -> String {
    "ci-above".into()
}

/// One proxy task: techniques under test and the baselines they must beat.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub task: String,
    pub techniques: Vec<String>,
    pub baselines: Vec<String>,
}

/// A checked project.
#[derive(Clone, Debug, Serialize)]
pub struct Project {
    pub path: PathBuf,
    pub north_star: String,
    /// Days since 1970-01-01 (UTC) of the time box's date.
    pub time_box_day: i64,
    pub time_box: String,
    pub decision_rule: String,
    pub suite: PathBuf,
    /// The model check-ins run on: a .gguf, an HF folder or a built-in name (`None`:
    /// pragma's default model).
    pub model: Option<String>,
    pub proxies: Vec<Proxy>,
}

/// Days since the epoch of `YYYY-MM-DD` (proleptic Gregorian), or an error naming it.
pub fn parse_date(s: &str) -> Result<i64> {
    let bad = || Error::Input(format!("time_box '{s}': expected a date YYYY-MM-DD"));
    let mut it = s.trim().splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (
        it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?,
        it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?,
        it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // days_from_civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

/// Today, in days since the epoch (UTC).
pub fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0)
}

impl Project {
    /// The folder of the project file.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The nearest `pragma.toml` at or above `dir`, or an error saying how to make one.
    pub fn find(dir: &Path) -> Result<PathBuf> {
        dir.ancestors()
            .map(|d| d.join("pragma.toml"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Input(format!(
                    "no pragma.toml in {} or above: make one with `pragma project init --time-box YYYY-MM-DD`",
                    dir.display()
                ))
            })
    }

    /// Read and check `path` against its suite: known tasks, techniques and baselines
    /// (with suggestions), a valid date and decision rule, at least one proxy task.
    pub fn load(path: &Path) -> Result<Project> {
        let at = |m: String| Error::Input(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        let raw: RawProject = toml::from_str(&text).map_err(|e| at(e.to_string()))?;
        let h = raw.project;
        if h.decision_rule != "ci-above" {
            return Err(at(format!(
                "decision_rule '{}': expected ci-above{}",
                h.decision_rule,
                suggest(&h.decision_rule, ["ci-above"].into_iter())
            )));
        }
        let time_box_day = parse_date(&h.time_box).map_err(|e| at(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let suite_path = dir.join(&h.suite);
        let suite = Suite::load(&suite_path).map_err(|e| at(format!("suite: {e}")))?;
        if raw.proxy.is_empty() {
            return Err(at(
                "no [[proxy]] task: name at least one task of the suite".into()
            ));
        }
        for p in &raw.proxy {
            let names: Vec<&str> = suite.tasks.iter().map(|t| t.name.as_str()).collect();
            let task = suite
                .tasks
                .iter()
                .find(|t| t.name == p.task)
                .ok_or_else(|| {
                    at(format!(
                        "proxy task '{}' is not in suite {}{}; its tasks: {}",
                        p.task,
                        suite_path.display(),
                        suggest(&p.task, names.iter().copied()),
                        names.join(", ")
                    ))
                })?;
            if p.techniques.is_empty() || p.baselines.is_empty() {
                return Err(at(format!(
                    "proxy task '{}': expected at least one technique and one baseline",
                    p.task
                )));
            }
            for t in p.techniques.iter().chain(&p.baselines) {
                check_name(t, task.family)
                    .map_err(|e| at(format!("proxy task '{}': {e}", p.task)))?;
            }
        }
        Ok(Project {
            path: path.to_path_buf(),
            north_star: h.north_star,
            time_box_day,
            time_box: h.time_box,
            decision_rule: h.decision_rule,
            suite: suite_path,
            model: h.model,
            proxies: raw.proxy,
        })
    }

    /// Write the worked project `name` ([`EXAMPLES`]) into `dir` with its time box set
    /// to `time_box` (refusing to overwrite a pragma.toml, and a past time box), and its
    /// suite and datasets under `dir/eval/suite/`; then check it.
    pub fn init_example(dir: &Path, name: &str, time_box: &str) -> Result<Project> {
        let (_, text) = EXAMPLES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = EXAMPLES.iter().map(|(n, _)| *n).collect();
            Error::Input(format!(
                "no example project '{name}'{}; the examples: {}",
                suggest(name, names.iter().copied()),
                names.join(", ")
            ))
        })?;
        let path = Self::writable(dir, time_box)?;
        Suite::write_default(&dir.join("eval").join("suite"))
            .map_err(|e| Error::Input(e.to_string()))?;
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("time_box = ") {
                    format!("time_box = \"{time_box}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, text + "\n")
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        Project::load(&path)
    }

    /// `dir/pragma.toml`, if it does not exist yet and `time_box` is a date not past.
    pub fn writable(dir: &Path, time_box: &str) -> Result<PathBuf> {
        let path = dir.join("pragma.toml");
        if path.exists() {
            return Err(Error::Input(format!(
                "{} exists; edit it, or init in another folder",
                path.display()
            )));
        }
        let day = parse_date(time_box)?;
        if day < today() {
            return Err(Error::Input(format!(
                "time box {time_box} is in the past (today is {}): give a future date",
                &crate::runs::utc(today() as f64 * 86_400.0)[..10]
            )));
        }
        Ok(path)
    }

    /// Write the template to `dir/pragma.toml` (refusing to overwrite, and refusing a time
    /// box that is already past), then check it.
    pub fn init(dir: &Path, north_star: &str, time_box: &str, suite: &str) -> Result<Project> {
        let path = Self::writable(dir, time_box)?;
        let text = TEMPLATE
            .replace("{north_star}", &north_star.replace('"', "'"))
            .replace("{time_box}", time_box)
            .replace("{suite}", suite);
        std::fs::write(&path, text)
            .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        Project::load(&path)
    }
}

/// A technique's score on a proxy task: mean and 95% CI.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Where a technique stands against the best baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    Ahead,
    WithinNoise,
    Behind,
}

/// A check-in's verdict for one technique.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub standing: Standing,
    /// Today is after the time box.
    pub time_box_passed: bool,
    /// The verdict in a sentence.
    pub says: String,
}

/// The `ci-above` rule for `technique` against `baselines` (the best baseline is the one
/// with the highest mean), on day `today` with the time box ending on `time_box_day`
/// (days since the epoch). Errors when there is no baseline.
pub fn verdict(
    technique: &str,
    score: Score,
    baselines: &[(String, Score)],
    time_box_day: i64,
    today: i64,
) -> Result<Verdict> {
    let (bname, b) = baselines
        .iter()
        .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
        .ok_or_else(|| Error::Input(format!("{technique}: no baseline to compare with")))?;
    let standing = if score.lo > b.hi {
        Standing::Ahead
    } else if score.hi < b.lo {
        Standing::Behind
    } else {
        Standing::WithinNoise
    };
    let passed = today > time_box_day;
    let vs = format!(
        "{technique} {:.3} [{:.3}, {:.3}] vs the best baseline {bname} {:.3} [{:.3}, {:.3}]",
        score.mean, score.lo, score.hi, b.mean, b.lo, b.hi
    );
    let says = match (standing, passed) {
        (Standing::Ahead, _) => format!("ahead: {vs}; its CI lies above the baseline's"),
        (Standing::WithinNoise, false) => {
            format!("within noise: {vs}; the CIs overlap, so no win yet")
        }
        (Standing::Behind, false) => format!("behind: {vs}; the baseline wins"),
        (s, true) => format!(
            "{}: {vs}; the time box has passed with no win: pivot to another technique or drop this one",
            if s == Standing::Behind { "behind" } else { "within noise" }
        ),
    };
    Ok(Verdict {
        standing,
        time_box_passed: passed,
        says,
    })
}
