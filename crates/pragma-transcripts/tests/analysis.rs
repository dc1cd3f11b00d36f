//! Outliers and clusters where the answer is known: one transcript far above the rest on
//! a score, one whose latents nobody else has, and two groups with disjoint vocabularies.

use pragma_transcripts::analysis::{clusters, outliers, Pool};
use pragma_transcripts::db::Db;
use pragma_transcripts::model::{Message, Role, Run, Transcript};
use pragma_transcripts::score::sparse_blob;
use rusqlite::params;
use serde_json::Map;

fn run(i: usize, text: &str) -> Run {
    Run {
        key: format!("r{i}"),
        transcripts: vec![Transcript {
            name: None,
            metadata: Map::new(),
            messages: vec![
                Message::new(Role::User, "Tell me."),
                Message::new(Role::Assistant, text),
            ],
        }],
        metadata: Map::new(),
        scores: Map::new(),
        sample_id: None,
        epoch: None,
        source: String::new(),
    }
}

const FRUIT: &[&str] = &["apple", "banana", "cherry", "grape", "mango", "peach"];
const CARS: &[&str] = &["engine", "wheel", "brake", "clutch", "piston", "gearbox"];

fn setup() -> Db {
    let mut db = Db::in_memory().expect("db");
    let runs: Vec<Run> = (0..60)
        .map(|i| {
            let words = if i % 2 == 0 { FRUIT } else { CARS };
            let t: Vec<&str> = (0..4).map(|k| words[(i + k * 7) % 6]).collect();
            run(i, &t.join(" "))
        })
        .collect();
    db.import("c", "c", "1", "test", &runs).expect("import");
    let conn = db.conn();
    conn.execute(
        "INSERT INTO scorers(collection_id, name, kind, spec) VALUES (1, 'probe:x', 'probe', '{}'), (1, 'sae:s', 'sae', '{}')",
        [],
    )
    .expect("scorers");
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM transcripts ORDER BY id")
        .expect("p")
        .query_map([], |r| r.get(0))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("ids");
    for (k, tid) in ids.iter().enumerate() {
        // Scores in [-1, 1] except transcript 17 at 10; latents 1-3 everywhere, 90+ only in 23.
        let x = if k == 17 {
            10.0
        } else {
            ((k * 37) % 21) as f64 / 10.0 - 1.0
        };
        let lat: Vec<(u32, f32)> = if k == 23 {
            vec![(90, 3.0), (91, 2.0), (1, 1.0)]
        } else {
            vec![(1, 2.0), (2, 1.5), (3, 1.0)]
        };
        conn.execute(
            "INSERT INTO token_scores(transcript_id, scorer_id, mean, max) VALUES (?1, 1, ?2, ?2)",
            params![tid, x],
        )
        .expect("score");
        // The assistant message holds the score; the user message (the same prompt in
        // every transcript) scores 50 everywhere and must not count for transcripts.
        conn.execute(
            "INSERT INTO message_scores(message_id, scorer_id, mean, max) SELECT id, 1, ?2, ?2 \
             FROM messages WHERE transcript_id = ?1 AND role = 'assistant'",
            params![tid, x],
        )
        .expect("message score");
        conn.execute(
            "INSERT INTO message_scores(message_id, scorer_id, mean, max) SELECT id, 1, 50.0, 50.0 \
             FROM messages WHERE transcript_id = ?1 AND role = 'user'",
            params![tid],
        )
        .expect("user score");
        conn.execute(
            "INSERT INTO token_scores(transcript_id, scorer_id, sparse) VALUES (?1, 2, X'')",
            params![tid],
        )
        .expect("latents");
        // The assistant message's latents; the user message's (a template latent, 7, in
        // every transcript) are not read.
        conn.execute(
            "INSERT INTO message_scores(message_id, scorer_id, latents) SELECT id, 2, ?2 \
             FROM messages WHERE transcript_id = ?1 AND role = 'assistant'",
            params![tid, sparse_blob(&[lat])],
        )
        .expect("message latents");
        conn.execute(
            "INSERT INTO message_scores(message_id, scorer_id, latents) SELECT id, 2, ?2 \
             FROM messages WHERE transcript_id = ?1 AND role = 'user'",
            params![tid, sparse_blob(&[vec![(7, 9.0)]])],
        )
        .expect("user latents");
    }
    db
}

#[test]
fn outliers_on_a_score_and_in_latent_space() {
    let db = setup();
    let o = outliers(&db, "c", "probe:x", Pool::Max, false, 3).expect("outliers");
    assert_eq!(o[0].run, "r17", "{o:?}");
    assert!(o[0].z > 5.0 && o[0].reason.contains("above"), "{:?}", o[0]);
    assert!(o[1].z.abs() < 3.0, "only one outlier: {o:?}");
    let o = outliers(&db, "c", "sae:s", Pool::Max, false, 3).expect("latent outliers");
    assert_eq!(o[0].run, "r23", "{o:?}");
    assert!(
        o[0].reason.contains("90 (in 1.7% of transcripts)"),
        "{}",
        o[0].reason
    );
    // Most values equal (the MAD is 0): the mean absolute deviation measures the spread.
    db.conn()
        .execute(
            "UPDATE message_scores SET mean = 0, max = 0 WHERE scorer_id = 1 AND max < 5 AND max > -5",
            [],
        )
        .expect("flatten");
    let o = outliers(&db, "c", "probe:x", Pool::Max, false, 3).expect("outliers, MAD 0");
    assert_eq!(o[0].run, "r17", "{o:?}");
    // 59 zeros and one 10: mean |x - 0| = 10/60, z = 10 / (1.2533 * 10 / 60) = 47.9.
    assert!((o[0].z - 60.0 / 1.2533).abs() < 1e-6, "{:?}", o[0]);
    assert!(
        o[0].reason.contains("mean absolute deviation"),
        "{}",
        o[0].reason
    );
    let e = outliers(&db, "c", "probe:nope", Pool::Max, false, 3)
        .map(|_| ())
        .expect_err("unknown");
    assert!(e.to_string().contains("scorers: probe:x, sae:s"), "{e}");
}

#[test]
fn clusters_split_disjoint_vocabularies() {
    let db = setup();
    let c = clusters(&db, "c", None, 2, 0).expect("clusters");
    assert_eq!(c.clusters.len(), 2);
    assert_eq!(c.clusters[0].size + c.clusters[1].size, 60);
    for cl in &c.clusters {
        assert_eq!(cl.size, 30, "{c:?}");
        let fruit = cl
            .top
            .iter()
            .filter(|w| FRUIT.contains(&w.0.as_str()))
            .count();
        let cars = cl
            .top
            .iter()
            .filter(|w| CARS.contains(&w.0.as_str()))
            .count();
        assert!(fruit == 0 || cars == 0, "a mixed description: {:?}", cl.top);
        assert!(
            cl.top.iter().all(|w| (w.2 - 2.0).abs() < 1e-9),
            "lift 2 for every word: {:?}",
            cl.top
        );
    }
    assert!(clusters(&db, "c", None, 1, 0).is_err());
    assert!(clusters(&db, "c", Some("probe:x"), 2, 0).is_err());
}
