//! Check-ins: run a project's proxy tasks, compare each technique under test with its
//! baselines by the decision rule ([`crate::project::verdict`]) and with the previous
//! check-in, and keep the dated verdicts: in the runs database (table `checkins`) and as
//! a markdown log, `CHECKINS.md` beside `pragma.toml`.
//!
//! The proxy tasks run as one `pragma eval` run ([`pragma_eval::run::run`]) over the
//! project's suite cut to its proxy tasks and to the techniques and baselines it names,
//! in one folder per project (default `.pragma/eval`): every cell is cached under a key
//! of its inputs (dataset sha256, model sha256, technique, seed, ...), so a check-in
//! computes only what changed since the last one and a check-in with nothing changed
//! reproduces the last one's numbers exactly.

use std::path::{Path, PathBuf};

use pragma_eval::report::Report;
use pragma_eval::run::{Event, RunConfig};
use pragma_eval::stats::Estimate;
use pragma_eval::suite::{Family, Suite, Technique};
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use crate::project::{today, verdict, Project, Score, Standing, Verdict};
use crate::runs::{utc, RunDb};
use crate::{Error, Result};

/// How to check in.
#[derive(Clone, Debug)]
pub struct CheckinConfig {
    /// The eval run folder (cells, report); default `.pragma/eval` beside the project.
    pub out: PathBuf,
    /// Bootstrap replicates of the intervals (>= 100).
    pub bootstrap: usize,
    /// Run even when the time estimate is over the suite's budget.
    pub yes: bool,
    /// The runs-database id of the run this check-in is (the CLI's record), if recorded.
    pub run_id: Option<i64>,
    /// Today, days since the epoch (UTC); `None`: the clock's.
    pub today: Option<i64>,
    /// Recompute the check-in recorded as run `ID` (`pragma runs rerun`): every cell
    /// afresh in its own folder (`.pragma/checkins/rerun-of-ID/eval`, no cache), judged
    /// but not added to the history or `CHECKINS.md`.
    pub rerun_of: Option<i64>,
}

impl CheckinConfig {
    /// The defaults for `project`: `.pragma/eval` beside it, 1000 replicates.
    pub fn new(project: &Project) -> CheckinConfig {
        CheckinConfig {
            out: project.dir().join(".pragma").join("eval"),
            bootstrap: 1000,
            yes: false,
            run_id: None,
            today: None,
            rerun_of: None,
        }
    }
}

/// What a row of the evidence table is to the decision rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Technique,
    Baseline,
    /// Scored by the task but not named by the project (shown for context).
    Other,
}

/// One row of a proxy task's evidence table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub name: String,
    pub role: Role,
    pub score: Score,
    /// The same row at the previous check-in.
    pub previous: Option<Score>,
}

/// A technique's verdict on one proxy task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TechniqueVerdict {
    pub technique: String,
    pub verdict: Verdict,
    /// Its standing at the previous check-in.
    pub previous: Option<Standing>,
}

/// One proxy task at a check-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyCheckin {
    pub task: String,
    pub family: String,
    /// What the scores measure (higher is better).
    pub metric: String,
    /// Techniques, then baselines, then the task's other rows; each best first.
    pub evidence: Vec<Evidence>,
    pub verdicts: Vec<TechniqueVerdict>,
}

/// A check-in: the dated verdicts and the evidence they rest on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkin {
    /// 1 for a project's first check-in (set by the database).
    pub number: usize,
    /// Seconds since the epoch, and as UTC `YYYY-MM-DD HH:MM:SS`.
    pub at: f64,
    pub at_utc: String,
    /// The project file (absolute).
    pub project: String,
    pub north_star: String,
    pub time_box: String,
    /// Days from today to the time box (negative: passed).
    pub days_left: i64,
    /// The model, as its spec and sha256 of its weights.
    pub model: String,
    pub model_sha256: String,
    pub proxies: Vec<ProxyCheckin>,
    /// The check-in in one sentence: continue, keep going, or pivot.
    pub says: String,
    /// The runs-database id of the check-in's own run (`pragma runs show ID`).
    pub run_id: Option<i64>,
    /// The eval run folder whose cells it read, and how many were computed or cached.
    pub eval_dir: String,
    pub computed: usize,
    pub cached: usize,
    /// The run whose check-in this recomputes (`pragma runs rerun`); such a check-in has
    /// number 0 and is not part of the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<i64>,
}

fn score(e: Estimate) -> Score {
    Score {
        mean: e.mean,
        lo: e.lo,
        hi: e.hi,
    }
}

/// The project's suite cut to its proxy tasks; detection and steering tasks keep only
/// the techniques and baselines the project names (study tasks run whole).
pub fn proxy_suite(project: &Project) -> Result<Suite> {
    let mut suite = Suite::load(&project.suite).map_err(|e| Error::Input(e.to_string()))?;
    let mut tasks = Vec::new();
    for p in &project.proxies {
        let mut t = suite
            .tasks
            .iter()
            .find(|t| t.name == p.task)
            .cloned()
            .ok_or_else(|| Error::Input(format!("proxy task '{}' is not in the suite", p.task)))?;
        if matches!(t.family, Family::Detection | Family::Steering) {
            let mut keep = Vec::new();
            for name in p.techniques.iter().chain(&p.baselines) {
                let tech =
                    Technique::parse(name, t.family).map_err(|e| Error::Input(e.to_string()))?;
                if !keep.contains(&tech) {
                    keep.push(tech);
                }
            }
            t.techniques = keep;
        }
        tasks.push(t);
    }
    suite.tasks = tasks;
    Ok(suite)
}

/// The verdicts of `project` on `report` (an eval report over its proxy tasks), against
/// `previous` (the last check-in), on day `today`. Pure: no model, no files.
pub fn judge(
    project: &Project,
    report: &Report,
    previous: Option<&Checkin>,
    today: i64,
) -> Result<Vec<ProxyCheckin>> {
    let mut out = Vec::new();
    for p in &project.proxies {
        let t = report
            .tasks
            .iter()
            .find(|t| t.task == p.task)
            .ok_or_else(|| Error::Input(format!("the report has no task '{}'", p.task)))?;
        let ps = t.proxy_scores().map_err(|e| Error::Input(e.to_string()))?;
        let find = |name: &str| {
            ps.scores
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| score(*e))
        };
        let missing = |name: &str| {
            let why = report
                .skipped
                .iter()
                .find(|(task, tech, _)| task == &p.task && tech == name)
                .map(|(_, _, why)| format!(": {why}"))
                .unwrap_or_else(|| {
                    if t.missing.iter().any(|(tech, _)| tech == name) {
                        ": its cells are not computed".into()
                    } else {
                        String::new()
                    }
                });
            Error::Input(format!(
                "proxy task '{}': no score for '{name}'{why}",
                p.task
            ))
        };
        let prev = previous.and_then(|c| c.proxies.iter().find(|x| x.task == p.task));
        let prev_score = |name: &str| {
            prev.and_then(|x| x.evidence.iter().find(|e| e.name == name))
                .map(|e| e.score)
        };
        let baselines: Vec<(String, Score)> = p
            .baselines
            .iter()
            .map(|b| find(b).map(|s| (b.clone(), s)).ok_or_else(|| missing(b)))
            .collect::<Result<_>>()?;
        let mut verdicts = Vec::new();
        for tech in &p.techniques {
            let s = find(tech).ok_or_else(|| missing(tech))?;
            verdicts.push(TechniqueVerdict {
                technique: tech.clone(),
                verdict: verdict(tech, s, &baselines, project.time_box_day, today)?,
                previous: prev.and_then(|x| {
                    x.verdicts
                        .iter()
                        .find(|v| &v.technique == tech)
                        .map(|v| v.verdict.standing)
                }),
            });
        }
        let role = |n: &str| {
            if p.techniques.iter().any(|t| t == n) {
                Role::Technique
            } else if p.baselines.iter().any(|b| b == n) {
                Role::Baseline
            } else {
                Role::Other
            }
        };
        let mut evidence: Vec<Evidence> = ps
            .scores
            .iter()
            .map(|(n, e)| Evidence {
                name: n.clone(),
                role: role(n),
                score: score(*e),
                previous: prev_score(n),
            })
            .collect();
        let rank = |r: Role| match r {
            Role::Technique => 0,
            Role::Baseline => 1,
            Role::Other => 2,
        };
        evidence.sort_by(|a, b| {
            rank(a.role)
                .cmp(&rank(b.role))
                .then(b.score.mean.total_cmp(&a.score.mean))
        });
        out.push(ProxyCheckin {
            task: p.task.clone(),
            family: t.family.clone(),
            metric: ps.metric,
            evidence,
            verdicts,
        });
    }
    Ok(out)
}

/// The check-in in one sentence: which techniques are ahead, or that none is (and
/// whether the time box has passed).
pub fn summarize(proxies: &[ProxyCheckin], days_left: i64, time_box: &str) -> String {
    let ahead: Vec<String> = proxies
        .iter()
        .flat_map(|p| {
            p.verdicts
                .iter()
                .filter(|v| v.verdict.standing == Standing::Ahead)
                .map(move |v| format!("{} on {}", v.technique, p.task))
        })
        .collect();
    if !ahead.is_empty() {
        format!(
            "continue: {} {} ahead of every baseline, beyond noise",
            ahead.join(", "),
            if ahead.len() == 1 { "is" } else { "are" }
        )
    } else if days_left < 0 {
        format!(
            "pivot: no technique is ahead of its baselines and the time box ({time_box}) \
             has passed: try another approach or drop this one"
        )
    } else {
        format!(
            "keep going: no technique is ahead of its baselines yet; {days_left} days left \
             in the time box ({time_box})"
        )
    }
}

/// A check-in and the folder its files went to.
#[derive(Clone, Debug)]
pub struct CheckinRun {
    pub checkin: Checkin,
    /// `.pragma/checkins/N/` beside the project (`rerun-of-ID[-K]/` for a rerun):
    /// `checkin.json`, and the eval run's `report.json` and `report.md`.
    pub folder: PathBuf,
}

/// Every file a check-in's numbers depend on: the project file, its suite, and each
/// proxy task's dataset, its `.meta.json` sidecar and its other files (a study's pairs
/// and reference text, a planted behaviour). Recorded as the run's inputs, so that
/// `runs show --check` and `runs rerun` name a changed one.
pub fn input_files(project: &Project) -> Result<Vec<PathBuf>> {
    let suite = proxy_suite(project)?;
    let mut files = vec![project.path.clone(), suite.path.clone()];
    for t in &suite.tasks {
        files.push(t.dataset.clone());
        files.push(t.dataset.with_extension("meta.json"));
        files.extend(t.extra_files.iter().cloned());
        if let Some(s) = &t.study {
            files.push(s.pairs.clone());
            files.push(s.reference.clone());
        }
    }
    files.retain(|f| f.is_file());
    files.sort();
    files.dedup();
    Ok(files)
}

/// Run the proxy tasks of `project` on `model`, judge them, and record the check-in in
/// `db`, in `CHECKINS.md` beside the project file, and in its folder
/// (`.pragma/checkins/N/`). With `cfg.rerun_of`, every cell is recomputed in a folder of
/// its own and nothing is added to the history. `events` reports the eval run's
/// progress. Errors: the suite or its datasets, the run (e.g. over the suite's budget
/// without `yes`), a technique without a score, the database, or writing the files.
pub fn checkin(
    model: &Model,
    project: &Project,
    db: &RunDb,
    cfg: &CheckinConfig,
    events: &mut dyn FnMut(Event),
) -> Result<CheckinRun> {
    let io = |p: &Path, e: &dyn std::fmt::Display| Error::Input(format!("{}: {e}", p.display()));
    let root = project.dir().join(".pragma").join("checkins");
    let rerun_folder = cfg.rerun_of.map(|id| {
        let mut f = root.join(format!("rerun-of-{id}"));
        let mut k = 1;
        while f.exists() {
            k += 1;
            f = root.join(format!("rerun-of-{id}-{k}"));
        }
        f
    });
    let eval_out = match &rerun_folder {
        Some(f) => f.join("eval"),
        None => cfg.out.clone(),
    };
    let suite = proxy_suite(project)?;
    let run_cfg = RunConfig {
        sae_preset: Some(suite.sae.clone()),
        suite,
        out: eval_out.clone(),
        bootstrap: cfg.bootstrap,
        yes: cfg.yes,
        sae_other_model: false,
    };
    let res = pragma_eval::run::run(model, None, &run_cfg, events)
        .map_err(|e| Error::Input(e.to_string()))?;
    let plan = pragma_eval::run::Plan::load(&eval_out).map_err(|e| Error::Input(e.to_string()))?;
    let project_key = project_key(project, db);
    // The check-in before this one; for a rerun, the one before the check-in it reruns,
    // so that the recomputed check-in says what the original said.
    let mut history = db.checkins(&project_key)?;
    if let Some(id) = cfg.rerun_of {
        if let Some(i) = history.iter().position(|c| c.run_id == Some(id)) {
            history.truncate(i);
        }
    }
    let previous = history.pop();
    let day = cfg.today.unwrap_or_else(today);
    let proxies = judge(project, &res.report, previous.as_ref(), day)?;
    let days_left = project.time_box_day - day;
    let at = now();
    let mut c = Checkin {
        number: 0,
        at,
        at_utc: utc(at),
        project: project_key,
        north_star: project.north_star.clone(),
        time_box: project.time_box.clone(),
        days_left,
        model: plan.model.clone(),
        model_sha256: plan.model_sha256.clone(),
        says: summarize(&proxies, days_left, &project.time_box),
        proxies,
        run_id: cfg.run_id,
        eval_dir: eval_out.display().to_string(),
        computed: res.computed,
        cached: res.cached,
        rerun_of: cfg.rerun_of,
    };
    let folder = match rerun_folder {
        Some(f) => f,
        None => {
            c.number = db.add_checkin(&c)?;
            write_log(project, &db.checkins(&c.project)?)?;
            root.join(c.number.to_string())
        }
    };
    // The check-in's own files: the record's artifacts, which later check-ins leave alone.
    std::fs::create_dir_all(&folder).map_err(|e| io(&folder, &e))?;
    let json = serde_json::to_vec_pretty(&c).map_err(|e| Error::Input(e.to_string()))?;
    pragma_model::io::write_atomic(&folder.join("checkin.json"), &json)
        .map_err(|e| Error::Input(e.to_string()))?;
    for f in ["report.json", "report.md"] {
        let (from, to) = (eval_out.join(f), folder.join(f));
        let bytes = std::fs::read(&from).map_err(|e| io(&from, &e))?;
        pragma_model::io::write_atomic(&to, &bytes).map_err(|e| Error::Input(e.to_string()))?;
    }
    Ok(CheckinRun { checkin: c, folder })
}

/// The key of a project's check-ins in the database: `pragma.toml` (the project file's
/// name) when the database is the project's own (`.pragma/runs.db` beside it), so the
/// history moves and copies with the folder; its absolute path in a shared database.
pub fn project_key(project: &Project, db: &RunDb) -> String {
    let own = project.dir().join(".pragma");
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if db.path().parent().map(canon) == Some(canon(&own)) {
        return project
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pragma.toml".into());
    }
    canon(&project.path).display().to_string()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn fmt(s: &Score) -> String {
    format!("{:.3} [{:.3}, {:.3}]", s.mean, s.lo, s.hi)
}

fn standing(s: Standing) -> &'static str {
    match s {
        Standing::Ahead => "ahead",
        Standing::WithinNoise => "within noise",
        Standing::Behind => "behind",
    }
}

/// One check-in as markdown: its sentence, then per proxy task the evidence table
/// (with the change since the previous check-in) and each technique's verdict.
pub fn markdown(c: &Checkin) -> String {
    let title = match c.rerun_of {
        Some(id) => format!("Run {id}'s check-in, recomputed"),
        None => format!("Check-in {}", c.number),
    };
    let mut m = format!("## {title} ({} UTC)\n\n**{}**\n\n", c.at_utc, c.says);
    m += &format!(
        "Time box {} ({}). Model {} (sha256 {}).\n\n",
        c.time_box,
        if c.days_left >= 0 {
            format!("{} days left", c.days_left)
        } else {
            format!("passed {} days ago", -c.days_left)
        },
        c.model,
        &c.model_sha256[..c.model_sha256.len().min(12)]
    );
    for p in &c.proxies {
        m += &format!("### {} ({}): {}\n\n", p.task, p.family, p.metric);
        m += "| | role | score [95% CI] | previous check-in |\n| --- | --- | --- | --- |\n";
        for e in &p.evidence {
            let prev = match &e.previous {
                Some(s) if s == &e.score => "same".to_string(),
                Some(s) => format!("{} ({:+.3})", fmt(s), e.score.mean - s.mean),
                None => "-".into(),
            };
            let role = match e.role {
                Role::Technique => "technique",
                Role::Baseline => "baseline",
                Role::Other => "",
            };
            m += &format!("| {} | {role} | {} | {prev} |\n", e.name, fmt(&e.score));
        }
        m += "\n";
        for v in &p.verdicts {
            let was = match v.previous {
                Some(s) if s != v.verdict.standing => format!(" (was {})", standing(s)),
                _ => String::new(),
            };
            m += &format!("- {}{was}\n", v.verdict.says);
        }
        m += "\n";
    }
    m += &format!(
        "Rests on {}; eval cells in {} ({} computed, {} cached).\n",
        match c.run_id {
            Some(id) => format!("run {id} (`pragma runs show {id}`)"),
            None => "an unrecorded run".into(),
        },
        c.eval_dir,
        c.computed,
        c.cached
    );
    m
}

/// The whole log: the project's header, then every check-in, newest first.
pub fn render_log(project: &Project, checkins: &[Checkin]) -> String {
    let mut m = format!(
        "# Check-ins\n\nNorth star: {}\n\nTime box: {}. Decision rule: {} (a technique is \
         ahead when the lower end of its 95% CI lies above the upper end of the best \
         baseline's).\n\nWritten by `pragma checkin`; the same history is in the runs \
         database and on the web UI's /project page.\n\n",
        project.north_star, project.time_box, project.decision_rule
    );
    for c in checkins.iter().rev() {
        m += &markdown(c);
        m += "\n";
    }
    m
}

/// Write `CHECKINS.md` beside the project file (atomically: a temporary file renamed).
/// The log is rendered from the database; if the file on disk holds a check-in the
/// database does not (the database was deleted or replaced), it is kept as
/// `CHECKINS.before-UNIXTIME.md` rather than overwritten.
pub fn write_log(project: &Project, checkins: &[Checkin]) -> Result<PathBuf> {
    let path = project.dir().join("CHECKINS.md");
    if let Ok(old) = std::fs::read_to_string(&path) {
        let newest = checkins.iter().map(|c| c.number).max().unwrap_or(0);
        let lost = old
            .lines()
            .filter_map(|l| {
                l.strip_prefix("## Check-in ")?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .any(|n| n > newest);
        if lost {
            let keep = project
                .dir()
                .join(format!("CHECKINS.before-{}.md", now() as u64));
            std::fs::rename(&path, &keep)
                .map_err(|e| Error::Input(format!("{}: {e}", keep.display())))?;
        }
    }
    pragma_model::io::write_atomic(&path, render_log(project, checkins).as_bytes())
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    Ok(path)
}
