//! The runs database: one row per workflow run, written when it starts (status
//! `running`) and completed when it ends (`ok` or `failed: <message>`), so a killed run
//! stays visible as `running` with its start.
//!
//! Where: `$PRAGMA_RUNS_DB`; else `.pragma/runs.db` in the nearest folder at or above
//! the working directory holding a `pragma.toml` (a research project); else
//! `runs.db` in the user's data folder (`~/.local/share/pragma` on Linux). SQLite in WAL
//! mode with a busy timeout, so concurrent runs (array jobs, parallel shells) each
//! record their rows without losing any. A database written by a newer pragma (a higher
//! schema version) is refused with both versions.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The schema this pragma writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// A file a run read or wrote: its path as given, size and sha256 (`None` for files
/// larger than [`HASH_LIMIT`], which are identified by size and modification time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub bytes: u64,
    pub sha256: Option<String>,
    /// Seconds since the epoch of the last modification (for unhashed files).
    #[serde(default)]
    pub modified: Option<u64>,
}

/// Files above this size are not hashed (bytes).
pub const HASH_LIMIT: u64 = 256 << 20;

impl Artifact {
    /// Describe `path` (a file); `None` if it does not exist or is not a file.
    pub fn of(path: &Path) -> Option<Artifact> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let sha256 = (meta.len() <= HASH_LIMIT)
            .then(|| std::fs::read(path).ok())
            .flatten()
            .map(|b| format!("{:x}", Sha256::digest(&b)));
        Some(Artifact {
            path: path.display().to_string(),
            bytes: meta.len(),
            sha256,
            modified: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        })
    }

    /// Every file under `dir` (recursively, sorted), or `dir` itself if it is a file.
    pub fn under(dir: &Path) -> Vec<Artifact> {
        if dir.is_file() {
            return Artifact::of(dir).into_iter().collect();
        }
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(a) = Artifact::of(&p) {
                    out.push(a);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Whether the file is still as recorded (missing, resized or changed otherwise).
    pub fn check(&self) -> std::result::Result<(), String> {
        match Artifact::of(Path::new(&self.path)) {
            None => Err(format!("{} is missing", self.path)),
            Some(now) if now.bytes != self.bytes => Err(format!(
                "{} changed: {} bytes recorded, {} now",
                self.path, self.bytes, now.bytes
            )),
            Some(now) if now.sha256 != self.sha256 => Err(format!(
                "{} changed: its sha256 differs from the record",
                self.path
            )),
            Some(_) => Ok(()),
        }
    }
}

/// What is known when a run starts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewRun {
    /// e.g. `probe train`, `sae train`, `cache`.
    pub workflow: String,
    /// The full command line.
    pub argv: Vec<String>,
    pub cwd: String,
    pub pragma_version: String,
    /// Input files named on the command line, with their sha256.
    pub inputs: Vec<Artifact>,
    pub tags: Vec<String>,
}

/// Workflows recorded: the command and, for command groups, the subcommand.
pub const WORKFLOWS: &[&str] = &[
    "cache",
    "probe train",
    "steer train",
    "steer sweep",
    "steer study",
    "sae train",
    "sae eval",
    "eval run",
    "transcripts diff",
    "patch",
    "lens",
    "counterfactual",
    "resample",
    "checkin",
];

/// The workflow name of a `pragma` command line (`argv[0]` is the binary), e.g.
/// `probe train`, if it is one of [`WORKFLOWS`].
pub fn workflow_of(argv: &[String]) -> Option<String> {
    let words: Vec<&str> = argv
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .map(String::as_str)
        .collect();
    let two = words.join(" ");
    WORKFLOWS
        .iter()
        .find(|w| **w == two || Some(**w) == words.first().copied())
        .map(|w| w.to_string())
}

/// Files a command line names, hashed: existing files, and the manifest or config of
/// existing folders.
pub fn inputs_of(argv: &[String], out: Option<&Path>) -> Vec<Artifact> {
    let mut found = Vec::new();
    for a in argv.iter().skip(1) {
        let value = a.split_once('=').map_or(a.as_str(), |(_, v)| v);
        let p = Path::new(value);
        if out.is_some_and(|o| o == p) {
            continue;
        }
        // Absolute, so `runs show --check` and `runs rerun` work from any folder.
        let abs = p.canonicalize();
        let p = abs.as_deref().unwrap_or(p);
        if p.is_file() {
            found.extend(Artifact::of(p));
        } else if p.is_dir() {
            for f in ["manifest.json", "cfg.json"] {
                found.extend(Artifact::of(&p.join(f)));
            }
        }
    }
    found
}

/// The output folder a command line names (`--out DIR`, `-o DIR` or `--out=DIR`).
pub fn out_of(argv: &[String]) -> Option<PathBuf> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == "--out" || a == "-o" {
            argv.get(i + 1).map(PathBuf::from)
        } else {
            a.strip_prefix("--out=").map(PathBuf::from)
        }
    })
}

/// A recorded run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub workflow: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub pragma_version: String,
    /// Start, seconds since the Unix epoch, and as UTC `YYYY-MM-DD HH:MM:SS`.
    pub started: f64,
    pub started_utc: String,
    pub seconds: Option<f64>,
    /// `running` (or killed), `ok`, or `failed: <message>`.
    pub status: String,
    pub inputs: Vec<Artifact>,
    /// Headline metrics (workflow-specific JSON), when the workflow reports them.
    pub metrics: serde_json::Value,
    pub artifacts: Vec<Artifact>,
    pub tags: Vec<String>,
}

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Runs whose workflow starts with this (`probe` matches `probe train`).
    pub workflow: Option<String>,
    /// Runs with this tag.
    pub tag: Option<String>,
    /// Runs started at or after this many seconds since the epoch.
    pub since: Option<f64>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// An open runs database.
pub struct RunDb {
    conn: Connection,
    path: PathBuf,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of seconds since the epoch (civil-from-days, H. Hinnant).
pub fn utc(secs: f64) -> String {
    let s = secs.max(0.0) as i64;
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl RunDb {
    /// The database path for runs started in `cwd` (see the module docs).
    pub fn default_path(cwd: &Path) -> PathBuf {
        if let Some(p) = std::env::var_os("PRAGMA_RUNS_DB") {
            return PathBuf::from(p);
        }
        for dir in cwd.ancestors() {
            if dir.join("pragma.toml").is_file() {
                return dir.join(".pragma").join("runs.db");
            }
        }
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("pragma")
            .join("runs.db")
    }

    /// Open (creating it and its folder if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<RunDb> {
        let bad = |reason: String| Error::Db {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| bad(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| bad(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| bad(e.to_string()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 workflow TEXT NOT NULL, argv TEXT NOT NULL, cwd TEXT NOT NULL,
                 pragma_version TEXT NOT NULL, started REAL NOT NULL, seconds REAL,
                 status TEXT NOT NULL, inputs TEXT NOT NULL, metrics TEXT NOT NULL,
                 artifacts TEXT NOT NULL, tags TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow, started);
             CREATE TABLE IF NOT EXISTS checkins (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 project TEXT NOT NULL, number INTEGER NOT NULL, at REAL NOT NULL,
                 body TEXT NOT NULL, UNIQUE (project, number));
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');",
        )
        .map_err(|e| bad(e.to_string()))?;
        let v: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| bad(e.to_string()))?;
        let v: i64 = v.and_then(|v| v.parse().ok()).unwrap_or(0);
        if v > SCHEMA_VERSION {
            return Err(bad(format!(
                "written by a newer pragma (schema v{v}); this pragma ({}) reads up to v{SCHEMA_VERSION}: upgrade pragma or use another PRAGMA_RUNS_DB",
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok(RunDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Db {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// Record a run as started; returns its id.
    pub fn start(&self, r: &NewRun) -> Result<i64> {
        fn j(v: &impl Serialize) -> String {
            serde_json::to_string(v).unwrap_or_else(|_| "null".into())
        }
        self.conn
            .execute(
                "INSERT INTO runs (workflow, argv, cwd, pragma_version, started, status, inputs, metrics, artifacts, tags)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, '{}', '[]', ?7)",
                params![
                    r.workflow,
                    j(&r.argv),
                    r.cwd,
                    r.pragma_version,
                    now(),
                    j(&r.inputs),
                    j(&r.tags)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Complete run `id`: its status (`ok` or `failed: ...`), metrics and artifacts.
    pub fn finish(
        &self,
        id: i64,
        status: &str,
        metrics: &serde_json::Value,
        artifacts: &[Artifact],
    ) -> Result<()> {
        let started: f64 = self
            .conn
            .query_row("SELECT started FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(Error::NoSuchRun(id))?;
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, seconds = ?3, metrics = ?4, artifacts = ?5 WHERE id = ?1",
                params![
                    id,
                    status,
                    now() - started,
                    metrics.to_string(),
                    serde_json::to_string(artifacts).unwrap_or_else(|_| "[]".into())
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Add input files a run declared while running (beside those its command line
    /// named), hashed now; a path already recorded is kept as it was.
    pub fn add_inputs(&self, id: i64, files: &[Artifact]) -> Result<()> {
        let mut run = self.get(id)?;
        for f in files {
            if !run.inputs.iter().any(|a| a.path == f.path) {
                run.inputs.push(f.clone());
            }
        }
        self.conn
            .execute(
                "UPDATE runs SET inputs = ?2 WHERE id = ?1",
                params![
                    id,
                    serde_json::to_string(&run.inputs).unwrap_or_else(|_| "[]".into())
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
        let parse = |i: usize| -> rusqlite::Result<serde_json::Value> {
            let s: String = r.get(i)?;
            Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::Null))
        };
        let started: f64 = r.get(5)?;
        Ok(Run {
            id: r.get(0)?,
            workflow: r.get(1)?,
            argv: serde_json::from_value(parse(2)?).unwrap_or_default(),
            cwd: r.get(3)?,
            pragma_version: r.get(4)?,
            started,
            started_utc: utc(started),
            seconds: r.get(6)?,
            status: r.get(7)?,
            inputs: serde_json::from_value(parse(8)?).unwrap_or_default(),
            metrics: parse(9)?,
            artifacts: serde_json::from_value(parse(10)?).unwrap_or_default(),
            tags: serde_json::from_value(parse(11)?).unwrap_or_default(),
        })
    }

    const COLUMNS: &'static str = "id, workflow, argv, cwd, pragma_version, started, seconds, status, inputs, metrics, artifacts, tags";

    /// One run.
    pub fn get(&self, id: i64) -> Result<Run> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM runs WHERE id = ?1", Self::COLUMNS),
                [id],
                Self::row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(Error::NoSuchRun(id))
    }

    /// Runs matching `f`, newest first.
    pub fn list(&self, f: &Filter) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM runs WHERE (?1 IS NULL OR workflow LIKE ?1 || '%')
                 AND (?2 IS NULL OR started >= ?2) ORDER BY started DESC, id DESC",
                Self::COLUMNS
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![f.workflow, f.since], Self::row)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let r = r.map_err(|e| self.err(e))?;
            if f.tag.as_ref().is_some_and(|t| !r.tags.contains(t)) {
                continue;
            }
            out.push(r);
            if f.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    /// Record a check-in of its project (`c.project`); returns its number (1 for the
    /// project's first). One statement, so concurrent check-ins get distinct numbers.
    pub fn add_checkin(&self, c: &crate::checkin::Checkin) -> Result<usize> {
        let body = serde_json::to_string(c).map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "INSERT INTO checkins (project, number, at, body)
                 SELECT ?1, COALESCE(MAX(number), 0) + 1, ?2, ?3 FROM checkins WHERE project = ?1",
                params![c.project, c.at, body],
            )
            .map_err(|e| self.err(e))?;
        let id = self.conn.last_insert_rowid();
        let n: i64 = self
            .conn
            .query_row("SELECT number FROM checkins WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))?;
        Ok(n as usize)
    }

    /// The check-ins of the project file `project` (as [`crate::checkin::project_key`]
    /// gives it), oldest first.
    pub fn checkins(&self, project: &str) -> Result<Vec<crate::checkin::Checkin>> {
        let mut stmt = self
            .conn
            .prepare("SELECT number, body FROM checkins WHERE project = ?1 ORDER BY number")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([project], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (n, body) = r.map_err(|e| self.err(e))?;
            let mut c: crate::checkin::Checkin = serde_json::from_str(&body)
                .map_err(|e| self.err(format!("check-in {n} is unreadable: {e}")))?;
            c.number = n as usize;
            out.push(c);
        }
        Ok(out)
    }
}
