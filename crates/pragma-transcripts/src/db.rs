//! Storage: one SQLite file (via `rusqlite`, SQLite bundled) holding collections, runs,
//! transcripts and messages, with an FTS5 full-text index over message text. Activations
//! stay in activation stores; scores computed later link to messages by id and token
//! index.
//!
//! Every import is one transaction: a file that fails half-way leaves nothing behind.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{Message, Role, Run, ToolCall, Transcript};

/// Bumped when the schema changes; an older file is refused with a message.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS imports(
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    runs INTEGER NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    sample_id TEXT,
    epoch INTEGER,
    metadata TEXT NOT NULL,
    scores TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_collection ON runs(collection_id);
CREATE INDEX IF NOT EXISTS runs_by_sample ON runs(collection_id, sample_id, epoch);
CREATE TABLE IF NOT EXISTS transcripts(
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_by_run ON transcripts(run_id);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY,
    transcript_id INTEGER NOT NULL REFERENCES transcripts(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    reasoning TEXT,
    tool_calls TEXT,
    tool_call_id TEXT,
    name TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_transcript ON messages(transcript_id);
CREATE TABLE IF NOT EXISTS scorers(
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    UNIQUE(collection_id, name)
);
-- The ids the model read for a transcript and each message's token span.
CREATE TABLE IF NOT EXISTS transcript_tokens(
    transcript_id INTEGER PRIMARY KEY REFERENCES transcripts(id) ON DELETE CASCADE,
    ids BLOB NOT NULL,
    spans TEXT NOT NULL
);
-- Per transcript and scorer: per-token values (dense f32 LE, or sparse top latents),
-- pooled over the transcript (mean/max; SAEs: every latent's max, sparse).
CREATE TABLE IF NOT EXISTS token_scores(
    transcript_id INTEGER NOT NULL REFERENCES transcripts(id) ON DELETE CASCADE,
    scorer_id INTEGER NOT NULL REFERENCES scorers(id) ON DELETE CASCADE,
    dense BLOB,
    sparse BLOB,
    mean REAL,
    max REAL,
    pooled BLOB,
    PRIMARY KEY(transcript_id, scorer_id)
);
CREATE TABLE IF NOT EXISTS message_scores(
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    scorer_id INTEGER NOT NULL REFERENCES scorers(id) ON DELETE CASCADE,
    mean REAL,
    max REAL,
    latents BLOB,
    PRIMARY KEY(message_id, scorer_id)
);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, reasoning, content='messages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
"#;

/// A transcript database.
pub struct Db {
    conn: Connection,
}

/// A collection and its size.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub created: String,
    pub runs: u64,
    pub transcripts: u64,
    pub messages: u64,
    /// Imported files: (file, format, runs).
    pub imports: Vec<(String, String, u64)>,
}

/// What an import added.
#[derive(Clone, Debug, Serialize)]
pub struct Imported {
    pub collection: String,
    pub file: String,
    pub format: String,
    pub runs: u64,
    pub transcripts: u64,
    pub messages: u64,
}

/// One search hit: a message and where it is.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    pub message_id: i64,
    pub run: String,
    pub sample_id: Option<String>,
    pub epoch: Option<i64>,
    /// The transcript's index within its run, and its database id (`/t/ID` in the UI).
    pub transcript: i64,
    pub transcript_id: i64,
    pub message: i64,
    pub role: String,
    /// The matching text with the matches in `[` `]`, cut to about 24 words around them.
    pub snippet: String,
}

/// A filter on runs: `KEY=VALUE` (metadata or score equals; numbers compared as numbers,
/// `true`/`false` as booleans), or `KEY<X`, `KEY>X` (numeric). Keys name a metadata field
/// (`model`, `a.b` for nested) or a score (`score.NAME`).
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub key: String,
    pub op: char,
    pub value: String,
}

impl Filter {
    /// Parse `KEY=VALUE`, `KEY<X` or `KEY>X`.
    pub fn parse(s: &str) -> Result<Filter> {
        let pos = s.find(['=', '<', '>']).ok_or_else(|| {
            Error::Input(format!(
                "filter '{s}': expected KEY=VALUE, KEY<NUMBER or KEY>NUMBER (e.g. model=gpt-4, \
                 score.accuracy>0.5)"
            ))
        })?;
        let (key, rest) = s.split_at(pos);
        let op = rest.chars().next().unwrap_or('=');
        let value = rest[1..].to_string();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_alphanumeric() || "._-".contains(c))
        {
            return Err(Error::Input(format!(
                "filter '{s}': the key must be letters, digits, '.', '_' or '-', found '{key}'"
            )));
        }
        if op != '=' && value.parse::<f64>().is_err() {
            return Err(Error::Input(format!(
                "filter '{s}': '{op}' compares numbers, found '{value}'"
            )));
        }
        Ok(Filter {
            key: key.to_string(),
            op,
            value,
        })
    }

    /// SQL over the `runs` row `r` with parameters numbered from `next`, and the
    /// parameters.
    fn sql(&self, next: usize) -> (String, Vec<Value>) {
        let (col, path) = match self.key.strip_prefix("score.") {
            Some(name) => ("r.scores", name),
            None => ("r.metadata", self.key.as_str()),
        };
        let path = format!(
            "$.{}",
            path.split('.')
                .map(|p| format!("\"{}\"", p.replace('"', "")))
                .collect::<Vec<_>>()
                .join(".")
        );
        let expr = format!("json_extract({col}, ?{next})");
        let value = format!("?{}", next + 1);
        match self.op {
            '=' => {
                let v: Value = match self.value.as_str() {
                    "true" => Value::from(1),
                    "false" => Value::from(0),
                    s => s
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .unwrap_or_else(|| Value::String(s.to_string())),
                };
                (format!("{expr} = {value}"), vec![Value::String(path), v])
            }
            op => (
                format!("CAST({expr} AS REAL) {op} {value}"),
                vec![
                    Value::String(path),
                    Value::from(self.value.parse::<f64>().unwrap_or(0.0)),
                ],
            ),
        }
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => S::Integer(i),
            None => S::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => S::Text(s.clone()),
        other => S::Text(other.to_string()),
    }
}

/// Turn a user's query into FTS5 syntax: plain words become quoted terms (all must
/// occur); a query using FTS5's own syntax (quotes, AND/OR/NOT, `*`, NEAR) is passed as is.
pub fn fts_query(q: &str) -> String {
    let advanced = q.contains('"')
        || q.contains('*')
        || q.split_whitespace()
            .any(|w| ["AND", "OR", "NOT"].contains(&w) || w.starts_with("NEAR("));
    if advanced {
        return q.to_string();
    }
    q.split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Db {
    /// Open (or create) a database file.
    ///
    /// Errors: the file is not SQLite, or holds another schema version.
    pub fn open(path: &Path) -> Result<Db> {
        // A new database in a folder that does not exist yet: make the folder.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Input(format!(
                        "{}: cannot create its folder {}: {e}",
                        path.display(),
                        dir.display()
                    ))
                })?;
            }
        }
        let conn = Connection::open(path)
            .map_err(|e| Error::Input(format!("{}: cannot open as SQLite: {e}", path.display())))?;
        Self::init(conn, &path.display().to_string())
    }

    /// A database in memory (tests).
    pub fn in_memory() -> Result<Db> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(conn: Connection, name: &str) -> Result<Db> {
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;")
            .map_err(|e| Error::Input(format!("{name}: not a SQLite database ({e})")))?;
        conn.execute_batch(SCHEMA)?;
        let v: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match v {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(Error::Input(format!(
                    "{name}: transcript database schema {v}, this pragma reads {SCHEMA_VERSION}"
                )))
            }
        }
        Ok(Db { conn })
    }

    /// The raw connection, for queries of other modules.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// A collection's row id (errors name the known collections).
    pub fn collection_id_pub(&self, name: &str) -> Result<i64> {
        self.collection_id(name)
    }

    /// Transcripts in a collection.
    pub fn transcript_count(&self, collection: &str) -> Result<u64> {
        let cid = self.collection_id(collection)?;
        Ok(self.conn.query_row(
            "SELECT count(*) FROM transcripts t JOIN runs r ON t.run_id = r.id WHERE r.collection_id = ?1",
            params![cid],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Every transcript of a collection with its row id, in import order.
    pub fn transcripts_of(&self, collection: &str) -> Result<Vec<(i64, Transcript)>> {
        let runs = self.runs(collection, &[])?;
        let mut st = self
            .conn
            .prepare("SELECT id FROM transcripts WHERE run_id = ?1 ORDER BY idx")?;
        let mut out = Vec::new();
        for (rid, run) in runs {
            let ids = st
                .query_map(params![rid], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.extend(ids.into_iter().zip(run.transcripts));
        }
        Ok(out)
    }

    fn collection_id(&self, name: &str) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT id FROM collections WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| {
                let known = self.collection_names().unwrap_or_default();
                Error::Input(format!(
                    "no collection '{name}'{}",
                    if known.is_empty() {
                        " (the database has none: `pragma transcripts import FILE --collection NAME`)"
                            .to_string()
                    } else {
                        format!(" (collections: {})", known.join(", "))
                    }
                ))
            })
    }

    pub fn collection_names(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM collections ORDER BY name")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(v)
    }

    /// Add `runs` read from `file` (its SHA-256 `sha256`) to `collection` (created if
    /// new), in one transaction. A file already imported into the collection is refused.
    pub fn import(
        &mut self,
        collection: &str,
        file: &str,
        sha256: &str,
        format: &str,
        runs: &[Run],
    ) -> Result<Imported> {
        if collection.is_empty()
            || !collection
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::Input(format!(
                "collection name '{collection}': use letters, digits, '-', '_' or '.'"
            )));
        }
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO collections(name) VALUES (?1)",
            params![collection],
        )?;
        let cid: i64 = tx.query_row(
            "SELECT id FROM collections WHERE name = ?1",
            params![collection],
            |r| r.get(0),
        )?;
        let dup: Option<String> = tx
            .query_row(
                "SELECT file FROM imports WHERE collection_id = ?1 AND sha256 = ?2",
                params![cid, sha256],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(f) = dup {
            return Err(Error::Input(format!(
                "{file}: already imported into '{collection}' (as {f}; same SHA-256)"
            )));
        }
        let (mut n_t, mut n_m) = (0u64, 0u64);
        {
            let mut run_st = tx.prepare(
                "INSERT INTO runs(collection_id, key, sample_id, epoch, metadata, scores, source) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut tr_st = tx.prepare(
                "INSERT INTO transcripts(run_id, idx, name, metadata) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut msg_st = tx.prepare(
                "INSERT INTO messages(transcript_id, idx, role, content, reasoning, tool_calls, \
                 tool_call_id, name, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut fts_st = tx.prepare(
                "INSERT INTO messages_fts(rowid, content, reasoning) VALUES (?1, ?2, ?3)",
            )?;
            for r in runs {
                run_st.execute(params![
                    cid,
                    r.key,
                    r.sample_id,
                    r.epoch,
                    Value::Object(r.metadata.clone()).to_string(),
                    Value::Object(r.scores.clone()).to_string(),
                    r.source,
                ])?;
                let rid = tx.last_insert_rowid();
                for (ti, t) in r.transcripts.iter().enumerate() {
                    tr_st.execute(params![
                        rid,
                        ti as i64,
                        t.name,
                        Value::Object(t.metadata.clone()).to_string()
                    ])?;
                    let tid = tx.last_insert_rowid();
                    n_t += 1;
                    for (mi, m) in t.messages.iter().enumerate() {
                        let calls = (!m.tool_calls.is_empty())
                            .then(|| serde_json::to_string(&m.tool_calls).unwrap_or_default());
                        msg_st.execute(params![
                            tid,
                            mi as i64,
                            m.role.name(),
                            m.content,
                            m.reasoning,
                            calls,
                            m.tool_call_id,
                            m.name,
                            Value::Object(m.metadata.clone()).to_string(),
                        ])?;
                        let mid = tx.last_insert_rowid();
                        fts_st.execute(params![mid, m.content, m.reasoning])?;
                        n_m += 1;
                    }
                }
            }
        }
        tx.execute(
            "INSERT INTO imports(collection_id, file, sha256, format, runs) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![cid, file, sha256, format, runs.len() as i64],
        )?;
        tx.commit()?;
        Ok(Imported {
            collection: collection.to_string(),
            file: file.to_string(),
            format: format.to_string(),
            runs: runs.len() as u64,
            transcripts: n_t,
            messages: n_m,
        })
    }

    /// Every collection with its counts.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        let mut st = self.conn.prepare(
            "SELECT c.id, c.name, c.created, \
               (SELECT count(*) FROM runs r WHERE r.collection_id = c.id), \
               (SELECT count(*) FROM transcripts t JOIN runs r ON t.run_id = r.id WHERE r.collection_id = c.id), \
               (SELECT count(*) FROM messages m JOIN transcripts t ON m.transcript_id = t.id \
                  JOIN runs r ON t.run_id = r.id WHERE r.collection_id = c.id) \
             FROM collections c ORDER BY c.name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    CollectionInfo {
                        name: r.get(1)?,
                        created: r.get(2)?,
                        runs: r.get::<_, i64>(3)? as u64,
                        transcripts: r.get::<_, i64>(4)? as u64,
                        messages: r.get::<_, i64>(5)? as u64,
                        imports: Vec::new(),
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut imp = self.conn.prepare(
            "SELECT file, format, runs FROM imports WHERE collection_id = ?1 ORDER BY id",
        )?;
        rows.into_iter()
            .map(|(id, mut c)| {
                c.imports = imp
                    .query_map(params![id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(c)
            })
            .collect()
    }

    /// Delete a collection and everything in it.
    pub fn delete(&mut self, collection: &str) -> Result<()> {
        let cid = self.collection_id(collection)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM messages_fts WHERE rowid IN (SELECT m.id FROM messages m \
             JOIN transcripts t ON m.transcript_id = t.id JOIN runs r ON t.run_id = r.id \
             WHERE r.collection_id = ?1)",
            params![cid],
        )?;
        tx.execute("DELETE FROM collections WHERE id = ?1", params![cid])?;
        tx.commit()?;
        Ok(())
    }

    /// Full-text search over message text (and reasoning) of a collection, runs filtered
    /// by `filters`, best matches first (FTS5's bm25), at most `limit` hits.
    pub fn search(
        &self,
        collection: &str,
        query: &str,
        filters: &[Filter],
        role: Option<Role>,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let cid = self.collection_id(collection)?;
        let mut sql = String::from(
            "SELECT m.id, r.key, r.sample_id, r.epoch, t.idx, m.idx, m.role, \
               snippet(messages_fts, -1, '[', ']', '...', 24), t.id \
             FROM messages_fts f JOIN messages m ON m.id = f.rowid \
             JOIN transcripts t ON m.transcript_id = t.id JOIN runs r ON t.run_id = r.id \
             WHERE messages_fts MATCH ?1 AND r.collection_id = ?2",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![
            rusqlite::types::Value::Text(fts_query(query)),
            rusqlite::types::Value::Integer(cid),
        ];
        if let Some(r) = role {
            args.push(rusqlite::types::Value::Text(r.name().into()));
            sql += &format!(" AND m.role = ?{}", args.len());
        }
        for f in filters {
            let (cond, vals) = f.sql(args.len() + 1);
            args.extend(vals.iter().map(to_sql));
            sql += &format!(" AND {cond}");
        }
        args.push(rusqlite::types::Value::Integer(limit as i64));
        sql += &format!(" ORDER BY bm25(messages_fts) LIMIT ?{}", args.len());
        let mut st = self.conn.prepare(&sql)?;
        let hits = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(Hit {
                    message_id: r.get(0)?,
                    run: r.get(1)?,
                    sample_id: r.get(2)?,
                    epoch: r.get(3)?,
                    transcript: r.get(4)?,
                    message: r.get(5)?,
                    role: r.get(6)?,
                    snippet: r.get(7)?,
                    transcript_id: r.get(8)?,
                })
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(_, Some(m)) => Error::Input(format!(
                    "search '{query}': {m} (plain words match all of them; FTS5 syntax: \
                         \"a phrase\", a OR b, NOT c, pre*)"
                )),
                other => Error::from(other),
            })?;
        Ok(hits)
    }

    /// The runs of a collection (filtered), in import order, with their transcripts.
    pub fn runs(&self, collection: &str, filters: &[Filter]) -> Result<Vec<(i64, Run)>> {
        let cid = self.collection_id(collection)?;
        let mut sql = String::from(
            "SELECT r.id, r.key, r.sample_id, r.epoch, r.metadata, r.scores, r.source \
             FROM runs r WHERE r.collection_id = ?1",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![rusqlite::types::Value::Integer(cid)];
        for f in filters {
            let (cond, vals) = f.sql(args.len() + 1);
            args.extend(vals.iter().map(to_sql));
            sql += &format!(" AND {cond}");
        }
        sql += " ORDER BY r.id";
        let obj = |s: String| -> Map<String, Value> {
            match serde_json::from_str(&s) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            }
        };
        let mut st = self.conn.prepare(&sql)?;
        let heads = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Run {
                        key: r.get(1)?,
                        sample_id: r.get(2)?,
                        epoch: r.get(3)?,
                        metadata: obj(r.get(4)?),
                        scores: obj(r.get(5)?),
                        transcripts: Vec::new(),
                        source: r.get(6)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut ts = self
            .conn
            .prepare("SELECT id, name, metadata FROM transcripts WHERE run_id = ?1 ORDER BY idx")?;
        let mut ms = self.conn.prepare(
            "SELECT role, content, reasoning, tool_calls, tool_call_id, name, metadata \
             FROM messages WHERE transcript_id = ?1 ORDER BY idx",
        )?;
        let mut out = Vec::with_capacity(heads.len());
        for (id, mut run) in heads {
            let trs = ts
                .query_map(params![id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (tid, name, meta) in trs {
                let messages = ms
                    .query_map(params![tid], |r| {
                        let role: String = r.get(0)?;
                        let calls: Option<String> = r.get(3)?;
                        Ok(Message {
                            role: Role::parse(&role).unwrap_or(Role::User),
                            content: r.get(1)?,
                            reasoning: r.get(2)?,
                            tool_calls: calls
                                .and_then(|c| serde_json::from_str::<Vec<ToolCall>>(&c).ok())
                                .unwrap_or_default(),
                            tool_call_id: r.get(4)?,
                            name: r.get(5)?,
                            metadata: obj(r.get(6)?),
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                run.transcripts.push(Transcript {
                    name,
                    metadata: obj(meta),
                    messages,
                });
            }
            out.push((id, run));
        }
        Ok(out)
    }
}
