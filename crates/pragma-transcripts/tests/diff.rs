//! `diff` on collections where the answer is known: a word planted in half of B's
//! answers is the top n-gram, found on the discovery half and detecting B on the held-out
//! half; two samples of one distribution give no discovery; pairing by sample id and
//! epoch is used when both sides have it.

use pragma_transcripts::db::Db;
use pragma_transcripts::diff::{diff, DiffConfig};
use pragma_transcripts::model::{Message, Role, Run, Transcript};
use serde_json::Map;

const WORDS: &[&str] = &[
    "river", "stone", "garden", "window", "paper", "silver", "market", "winter", "candle",
    "forest", "engine", "letter", "mirror", "orange", "pocket", "rabbit", "saddle", "tunnel",
];

fn collection(n: usize, seed: u64, plant: Option<(&str, f64)>, paired: bool) -> Vec<Run> {
    let mut rng = pragma_methods::stats::XorShift::mixed(seed, 1);
    (0..n)
        .map(|i| {
            let mut words: Vec<&str> = (0..12).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            if let Some((w, rate)) = plant {
                if (i as f64) < rate * n as f64 {
                    words.insert(rng.below(words.len()), w);
                }
            }
            Run {
                key: format!("r{i}"),
                sample_id: paired.then(|| format!("s{i}")),
                epoch: paired.then_some(1),
                metadata: Map::new(),
                scores: Map::new(),
                transcripts: vec![Transcript {
                    name: None,
                    metadata: Map::new(),
                    messages: vec![
                        Message::new(Role::User, "Say some words."),
                        Message::new(Role::Assistant, &words.join(" ")),
                    ],
                }],
                source: String::new(),
            }
        })
        .collect()
}

#[test]
fn a_planted_word_is_found_and_checked_and_the_null_finds_nothing() {
    let mut db = Db::in_memory().expect("db");
    db.import("a", "a", "1", "test", &collection(200, 1, None, false))
        .expect("a");
    db.import(
        "b",
        "b",
        "2",
        "test",
        &collection(200, 2, Some(("zebra", 0.5)), false),
    )
    .expect("b");
    db.import("a2", "a2", "3", "test", &collection(200, 3, None, false))
        .expect("a2");
    let r = diff(&db, &DiffConfig::new("a", "b")).expect("diff");
    assert_eq!(r.units, (200, 200));
    assert!(r.paired.is_none());
    assert!(r
        .note
        .as_deref()
        .is_some_and(|n| n.contains("n-grams only")));
    let ng = &r.families[0];
    let top = &ng.more_in_b[0];
    assert_eq!(
        top.name,
        "zebra",
        "{:?}",
        ng.more_in_b.iter().map(|h| &h.name).collect::<Vec<_>>()
    );
    assert!(
        top.q < 1e-6 && top.rate_a == 0.0 && top.rate_b > 0.3,
        "{top:?}"
    );
    // Presence of "zebra" detects B on the held-out half: ~half of B has it, no A does.
    let auc = top.heldout_auroc.expect("auroc");
    assert!((0.65..=0.85).contains(&auc), "held-out AUROC {auc}");
    assert!(top
        .examples
        .iter()
        .any(|e| e.side == "b" && e.text.contains("zebra")));
    // Discoveries are the planted word and bigrams with it, nothing else.
    assert!(ng.discoveries.0 >= 1);
    assert!(ng
        .more_in_b
        .iter()
        .filter(|h| h.q <= 0.05)
        .all(|h| h.name.contains("zebra")));

    // A vs A': nothing at FDR 0.05, either way.
    let r = diff(&db, &DiffConfig::new("a", "a2")).expect("null");
    assert_eq!(
        r.families[0].discoveries,
        (0, 0),
        "{:?}",
        r.families[0].more_in_b.first()
    );
}

#[test]
fn paired_collections_use_the_sign_test() {
    let mut db = Db::in_memory().expect("db");
    db.import("a", "a", "1", "test", &collection(120, 1, None, true))
        .expect("a");
    db.import(
        "b",
        "b",
        "2",
        "test",
        &collection(120, 2, Some(("zebra", 0.5)), true),
    )
    .expect("b");
    let r = diff(&db, &DiffConfig::new("a", "b")).expect("diff");
    assert_eq!(r.paired, Some(120));
    assert_eq!(r.discovery_units, (60, 60));
    let top = &r.families[0].more_in_b[0];
    assert_eq!(top.name, "zebra");
    // Pairs split the same way whichever side is A.
    let r2 = diff(&db, &DiffConfig::new("b", "a")).expect("reversed");
    let top2 = &r2.families[0].more_in_a[0];
    assert_eq!(
        (top2.name.as_str(), top2.p, top2.heldout_auroc),
        ("zebra", top.p, top.heldout_auroc)
    );
    // ~30 discordant pairs all one way: p = 2^-30 or so.
    assert!(top.p < 1e-6, "{top:?}");
}

#[test]
fn bad_diffs_are_clear_errors() {
    let mut db = Db::in_memory().expect("db");
    db.import("a", "a", "1", "test", &collection(3, 1, None, false))
        .expect("a");
    db.import("b", "b", "2", "test", &collection(20, 2, None, false))
        .expect("b");
    let e = diff(&db, &DiffConfig::new("a", "b"))
        .map(|_| ())
        .expect_err("small");
    assert!(e.to_string().contains("at least 4"), "{e}");
    let e = diff(&db, &DiffConfig::new("a", "nope"))
        .map(|_| ())
        .expect_err("missing");
    assert!(e.to_string().contains("no collection 'nope'"), "{e}");
    let mut c = DiffConfig::new("b", "b");
    c.sae = Some("sae:x".into());
    let e = diff(&db, &c).map(|_| ()).expect_err("sae");
    assert!(e.to_string().contains("not an SAE scorer"), "{e}");
}

#[test]
fn check_turns_a_hypothesis_into_a_detector() {
    use pragma_transcripts::check::{check, CheckConfig, Detector};
    let mut db = Db::in_memory().expect("db");
    let plant = Some(("zebra", 0.5));
    for (name, seed, p) in [
        ("a", 1, None),
        ("b", 2, plant),
        ("a2", 3, None),
        ("b2", 4, plant),
    ] {
        db.import(
            name,
            name,
            &seed.to_string(),
            "test",
            &collection(200, seed, p, false),
        )
        .expect("import");
    }
    let r = diff(&db, &DiffConfig::new("a", "b")).expect("diff");
    let top = &r.families[0].more_in_b[0];
    assert_eq!(top.name, "zebra");

    // On the held-out half of diff's split, the check is diff's held-out AUROC exactly.
    let mut c = CheckConfig::new("a", "b", Detector::Ngram("zebra".into()));
    c.heldout = Some((0.5, 0));
    let h = check(&db, &c).expect("held-out");
    assert_eq!(h.units, (100, 100));
    assert!(h.heldout);
    assert_eq!(Some(h.auroc), top.heldout_auroc);
    // The split does not depend on the order: B vs A finds the same hypothesis on the same
    // halves, and its check from the other side is diff's held-out AUROC too.
    let r2 = diff(&db, &DiffConfig::new("b", "a")).expect("reversed");
    let top2 = &r2.families[0].more_in_a[0];
    assert_eq!(top2.name, "zebra");
    assert_eq!((top2.p, top2.heldout_auroc), (top.p, top.heldout_auroc));
    let worst = r.families[0]
        .more_in_a
        .first()
        .expect("a hypothesis more in A");
    let mut c = CheckConfig::new("b", "a", Detector::Ngram(worst.name.clone()));
    c.heldout = Some((0.5, 0));
    assert_eq!(
        Some(check(&db, &c).expect("reverse check").auroc),
        worst.heldout_auroc
    );

    // On fresh collections: half of B2 has it and no A2 does, so AUROC ~0.75 (0.5 +
    // rate / 2), the interval covers it, and no shuffled labelling does as well.
    let c = CheckConfig::new("a2", "b2", Detector::Ngram("Zebra".into()));
    let f = check(&db, &c).expect("fresh");
    assert_eq!(f.units, (200, 200));
    let (ra, rb) = f.rate.expect("rate");
    assert_eq!(ra, 0.0);
    assert!((f.auroc - (0.5 + rb / 2.0)).abs() < 1e-12, "{f:?}");
    assert!(
        f.ci.0 < f.auroc && f.auroc < f.ci.1 && f.ci.0 > 0.6,
        "{f:?}"
    );
    assert!(f.p < 1e-3, "{f:?}");

    // Two samples of one distribution: within noise.
    let c = CheckConfig::new("a", "a2", Detector::Ngram("river".into()));
    let n = check(&db, &c).expect("null");
    assert!(n.p > 0.01 && n.ci.0 < 0.5 && n.ci.1 > 0.5, "{n:?}");

    // Bad hypotheses are clear errors.
    let e = check(
        &db,
        &CheckConfig::new("a", "b", Detector::Ngram("one two three".into())),
    )
    .map(|_| ())
    .expect_err("trigram");
    assert!(e.to_string().contains("one or two words"), "{e}");
    let e = check(
        &db,
        &CheckConfig::new("a", "b", Detector::Scorer("probe:x".into())),
    )
    .map(|_| ())
    .expect_err("scorer");
    assert!(e.to_string().contains("no scorer 'probe:x'"), "{e}");
    let e = check(&db, &CheckConfig::new("a", "b", Detector::Latent(3)))
        .map(|_| ())
        .expect_err("sae");
    assert!(e.to_string().contains("no SAE scorer"), "{e}");
}

#[test]
fn check_reads_latents_and_probe_scores() {
    use pragma_transcripts::analysis::Pool;
    use pragma_transcripts::check::{check, CheckConfig, Detector};
    use pragma_transcripts::score::sparse_blob;
    use rusqlite::params;
    let mut db = Db::in_memory().expect("db");
    db.import("a", "a", "1", "test", &collection(40, 1, None, false))
        .expect("a");
    db.import("b", "b", "2", "test", &collection(40, 2, None, false))
        .expect("b");
    let conn = db.conn();
    for c in [1, 2] {
        conn.execute(
            "INSERT INTO scorers(collection_id, name, kind, spec) VALUES (?1, 'probe:x', 'probe', '{}'), (?1, 'sae:s', 'sae', '{}')",
            params![c],
        )
        .expect("scorers");
    }
    let rows: Vec<(i64, i64, String, i64)> = conn
        .prepare(
            "SELECT m.id, r.collection_id, m.role, t.id FROM messages m JOIN transcripts t ON t.id = m.transcript_id \
             JOIN runs r ON r.id = t.run_id ORDER BY m.id",
        )
        .expect("p")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (k, (mid, cid, role, tid)) in rows.into_iter().enumerate() {
        let (probe, sae) = if cid == 1 { (1, 2) } else { (3, 4) };
        // Probe: assistant messages of B score 1 higher; user messages score 100 in A
        // (they must not count). Latent 5 fires (at 2.0) in B's assistant messages with
        // odd transcript ids, and in every user message.
        let x = (k % 7) as f64 / 7.0
            + if role == "assistant" && cid == 2 {
                1.0
            } else {
                0.0
            }
            + if role == "user" && cid == 1 {
                100.0
            } else {
                0.0
            };
        let lat = if role == "user" || (cid == 2 && tid % 2 == 1) {
            vec![(5u32, 2.0f32)]
        } else {
            vec![(6, 1.0)]
        };
        conn.execute(
            "INSERT INTO message_scores(message_id, scorer_id, mean, max) VALUES (?1, ?2, ?3, ?3)",
            params![mid, probe, x],
        )
        .expect("probe");
        conn.execute(
            "INSERT INTO message_scores(message_id, scorer_id, latents) VALUES (?1, ?2, ?3)",
            params![mid, sae, sparse_blob(&[lat])],
        )
        .expect("sae");
    }
    let mut c = CheckConfig::new("a", "b", Detector::Scorer("probe:x".into()));
    c.pool = Pool::Mean;
    let r = check(&db, &c).expect("probe");
    assert_eq!(r.auroc, 1.0, "{r:?}");
    assert!(
        r.rate.is_none() && (r.mean.1 - r.mean.0 - 1.0).abs() < 0.1,
        "{r:?}"
    );
    let r = check(&db, &CheckConfig::new("a", "b", Detector::Latent(5))).expect("latent");
    let (ra, rb) = r.rate.expect("rate");
    assert_eq!((ra, rb), (0.0, 0.5), "{r:?}");
    assert_eq!(r.auroc, 0.75);
    assert_eq!(r.sae.as_deref(), Some("sae:s"));
    // All messages: user messages count, so A's probe scores are the highest.
    let mut c = CheckConfig::new("a", "b", Detector::Scorer("probe:x".into()));
    c.role = None;
    assert_eq!(check(&db, &c).expect("all").auroc, 0.0);
    // A latent past the SAE's width, too few resamples: clear errors.
    db.conn()
        .execute(
            "UPDATE scorers SET spec = '{\"definition\": {\"d_sae\": 6}}' WHERE kind = 'sae'",
            [],
        )
        .expect("spec");
    let e = check(&db, &CheckConfig::new("a", "b", Detector::Latent(6)))
        .map(|_| ())
        .expect_err("width");
    assert!(e.to_string().contains("has 6 latents (0..5)"), "{e}");
    let mut c = CheckConfig::new("a", "b", Detector::Latent(5));
    c.reps = 0;
    let e = check(&db, &c).map(|_| ()).expect_err("reps");
    assert!(e.to_string().contains("at least 100"), "{e}");
}
