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
