//! The database: import is atomic and refuses a file twice, search finds words and
//! phrases with filters on metadata and scores, export then import round-trips, and bad
//! input names the file, the line and the field.

use std::path::Path;

use pragma_transcripts::db::{Db, Filter};
use pragma_transcripts::import::{self, Format};
use pragma_transcripts::model::Role;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const OPENAI: &str = r#"{"id": "r1", "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the refund policy?"}, {"role": "assistant", "content": "Refunds within 30 days."}], "metadata": {"model": "m1", "sample_id": "s1", "epoch": 1, "scores": {"correct": true, "reward": 0.5}}}
{"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "c1", "name": "weather", "content": "Rain in Paris"}, {"role": "assistant", "content": [{"type": "text", "text": "It rains."}], "reasoning_content": "The tool said rain."}], "metadata": {"model": "m2", "scores": {"reward": 1.5}}}
"#;

#[test]
fn openai_jsonl_reads_every_field() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "a.jsonl", OPENAI);
    let (fmt, runs) = import::read(&p, None).expect("read");
    assert_eq!(fmt, Format::OpenAi);
    assert_eq!(runs.len(), 2);
    let r = &runs[0];
    assert_eq!(r.key, "r1");
    assert_eq!(r.sample_id.as_deref(), Some("s1"));
    assert_eq!(r.epoch, Some(1));
    assert_eq!(r.metadata["model"], "m1");
    assert!(!r.metadata.contains_key("scores"));
    assert_eq!(r.scores["reward"], 0.5);
    let m = &runs[1].transcripts[0].messages;
    assert_eq!(runs[1].key, "line 2");
    assert_eq!(m[1].role, Role::Assistant);
    assert_eq!(m[1].tool_calls[0].function, "weather");
    assert_eq!(m[1].tool_calls[0].arguments["city"], "Paris");
    assert_eq!(m[2].role, Role::Tool);
    assert_eq!(m[2].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(m[3].content, "It rains.");
    assert_eq!(m[3].reasoning.as_deref(), Some("The tool said rain."));
}

#[test]
fn import_search_filter_export_roundtrip() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "a.jsonl", OPENAI);
    let (fmt, runs) = import::read(&p, None).expect("read");
    let mut db = Db::open(&d.path().join("t.db")).expect("db");
    let r = db
        .import("c", "a.jsonl", "sha", fmt.name(), &runs)
        .expect("import");
    assert_eq!((r.runs, r.transcripts, r.messages), (2, 2, 7));
    // The same file twice is refused, and adds nothing.
    let e = db
        .import("c", "a.jsonl", "sha", fmt.name(), &runs)
        .expect_err("dup");
    assert!(e.to_string().contains("already imported"), "{e}");
    assert_eq!(db.collections().expect("list")[0].runs, 2);

    let hits = db.search("c", "refund", &[], None, 10).expect("search");
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.run == "r1"));
    assert!(
        hits[0].snippet.contains("[Refund") || hits[0].snippet.contains("[refund"),
        "{hits:?}"
    );
    let hits = db
        .search("c", "refund", &[], Some(Role::Assistant), 10)
        .expect("search");
    assert_eq!(hits.len(), 1);
    // Reasoning is searched too; a phrase; all words must occur.
    assert_eq!(
        db.search("c", "tool said", &[], None, 10).expect("s").len(),
        1
    );
    assert_eq!(
        db.search("c", "\"rain in paris\"", &[], None, 10)
            .expect("s")
            .len(),
        1
    );
    assert_eq!(
        db.search("c", "refund paris", &[], None, 10)
            .expect("s")
            .len(),
        0
    );
    // Filters on metadata and scores.
    let f = |s: &str| Filter::parse(s).expect("filter");
    assert_eq!(
        db.search("c", "rain", &[f("model=m2")], None, 10)
            .expect("s")
            .len(),
        2
    );
    assert_eq!(
        db.search("c", "rain", &[f("model=m1")], None, 10)
            .expect("s")
            .len(),
        0
    );
    assert_eq!(db.runs("c", &[f("score.reward>1")]).expect("runs").len(), 1);
    assert_eq!(
        db.runs("c", &[f("score.correct=true")])
            .expect("runs")
            .len(),
        1
    );
    assert_eq!(
        db.runs("c", &[f("score.reward<1")]).expect("runs")[0].1.key,
        "r1"
    );
    // Bad queries and filters are errors, not panics.
    let e = db
        .search("c", "\"unbalanced", &[], None, 10)
        .expect_err("fts");
    assert!(e.to_string().contains("search"), "{e}");
    assert!(Filter::parse("model").is_err());
    assert!(Filter::parse("reward>abc").is_err());
    let e = db
        .search("nope", "x", &[], None, 10)
        .expect_err("no collection");
    assert!(e.to_string().contains("collections: c"), "{e}");

    // Export then import gives the same runs.
    let stored: Vec<_> = db
        .runs("c", &[])
        .expect("runs")
        .into_iter()
        .map(|x| x.1)
        .collect();
    let mut buf = Vec::new();
    pragma_transcripts::export::write_jsonl(&stored, &mut buf).expect("export");
    let p2 = write(
        d.path(),
        "b.jsonl",
        std::str::from_utf8(&buf).expect("utf8"),
    );
    let (_, again) = import::read(&p2, None).expect("reimport");
    assert_eq!(again.len(), stored.len());
    for (a, b) in again.iter().zip(&stored) {
        assert_eq!(a.key, b.key);
        assert_eq!(a.sample_id, b.sample_id);
        assert_eq!(a.epoch, b.epoch);
        assert_eq!(a.scores, b.scores);
        assert_eq!(a.metadata, b.metadata);
        assert_eq!(a.transcripts, b.transcripts);
    }
    db.delete("c").expect("delete");
    assert!(db.collections().expect("list").is_empty());
    assert!(db.search("c", "refund", &[], None, 10).is_err());
}

#[test]
fn sharegpt_reads_roles() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "s.jsonl",
        r#"{"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}"#,
    );
    let (fmt, runs) = import::read(&p, None).expect("read");
    assert_eq!(fmt, Format::ShareGpt);
    let roles: Vec<Role> = runs[0].transcripts[0]
        .messages
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
}

#[test]
fn bad_files_name_the_file_line_and_field() {
    let d = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            "role.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n",
            vec!["line 2", "messages[0].role", "\"bot\"", "system, user, assistant, tool"],
        ),
        (
            "content.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}\n",
            vec!["line 1", "messages[0].content", "found 5"],
        ),
        (
            "notjson.jsonl",
            "{\"messages\": []}\n{oops\n",
            vec!["line 2", "not JSON"],
        ),
        (
            "unknown.jsonl",
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n",
            vec!["unknown transcript format", "prompt", "ShareGPT"],
        ),
        (
            "from.jsonl",
            "{\"conversations\": [{\"from\": \"robot\", \"value\": \"x\"}]}\n",
            vec!["conversations[0].from", "\"robot\""],
        ),
        ("empty.jsonl", "\n\n", vec!["empty file"]),
        (
            "docent.json",
            "[{\"id\": \"r\", \"transcripts\": [{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]}]}]",
            vec!["run 0", "transcripts[0].messages[1].role"],
        ),
        (
            "inspect.json",
            "{\"eval\": {\"task\": \"t\"}, \"status\": \"success\", \"samples\": [{\"id\": 1, \"epoch\": \"x\", \"messages\": []}]}",
            vec!["samples[0]", "field `epoch`", "an integer"],
        ),
        (
            "bad.eval",
            "not a zip",
            vec!["not an Inspect .eval log"],
        ),
    ];
    for (name, text, want) in cases {
        let p = write(d.path(), name, text);
        let e = import::read(&p, None).map(|_| ()).expect_err(name);
        let msg = e.to_string();
        assert!(msg.contains(name), "{name}: {msg}");
        for w in want {
            assert!(msg.contains(w), "{name}: expected {w:?} in: {msg}");
        }
    }
}

#[test]
fn a_failed_import_leaves_nothing() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(d.path(), "a.jsonl", OPENAI);
    let (fmt, runs) = import::read(&p, None).expect("read");
    let mut db = Db::open(&d.path().join("t.db")).expect("db");
    // A bad collection name is refused before anything is written.
    assert!(db.import("bad name!", "a", "s", fmt.name(), &runs).is_err());
    assert!(db.collections().expect("list").is_empty());
    // A database file that is not SQLite is a clear error.
    let junk = write(
        d.path(),
        "junk.db",
        "this is not a database, just text, long enough to matter",
    );
    let e = Db::open(&junk).map(|_| ()).expect_err("junk");
    assert!(e.to_string().contains("junk.db"), "{e}");
}
