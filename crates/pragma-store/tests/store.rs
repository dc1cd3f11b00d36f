//! The activation store on a tiny random model: contents equal direct forwards,
//! the reader's access patterns, resume after interruption, and bad input.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use pragma_model::hooks::HookPoint;
use pragma_model::testing::{capture_one, tiny_config, tiny_weights, write_gguf};
use pragma_model::{Arch, Model};
use pragma_store::corpus::{Format, TextSplit};
use pragma_store::manifest::LongDocs;
use pragma_store::reader::Pool;
use pragma_store::writer::{cache, CacheOptions};
use pragma_store::{Error, Store};

fn tiny_model(dir: &Path) -> Model {
    let cfg = tiny_config(Arch::Llama);
    let p = dir.join("tiny.gguf");
    write_gguf(&p, &cfg, &tiny_weights(&cfg, 5).expect("w"), GgmlDType::F32).expect("gguf");
    Model::load(p.to_str().expect("utf8"), &mut |_| {}).expect("load")
}

fn corpus(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("corpus.txt");
    let docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "document {i} says the weather is {} today\nand line two of {i}",
                ["warm", "cold", "wet"][i % 3]
            )
        })
        .collect();
    std::fs::write(&p, docs.join("\n\n")).expect("corpus");
    p
}

fn opts(data: PathBuf, out: PathBuf) -> CacheOptions {
    CacheOptions {
        format: Format::detect(&data, TextSplit::Blocks),
        data,
        hooks: vec![HookPoint::ResidPost(1), HookPoint::AttnQ(0)],
        out,
        ctx: 64,
        batch: 3,
        dtype: DType::F32,
        input: pragma_model::input::InputRule {
            bos: false,
            parse_special: false,
        },
        long_docs: LongDocs::Truncate,
        max_tokens: None,
        skip_docs: 0,
        shard_tokens: Some(100),
        stop_after_shards: None,
        dry_run: false,
        part: None,
    }
}

#[test]
fn stored_rows_equal_a_direct_forward_and_the_reader_serves_them() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_model(d.path());
    let o = opts(corpus(d.path(), 60), d.path().join("store"));
    let man = cache(&m, &o, &mut ()).expect("cache");
    assert!(
        man.complete && man.shards.len() > 1,
        "several shards: {}",
        man.shards.len()
    );
    assert_eq!(man.n_docs_done, 60);
    let store = Store::open(&o.out).expect("open");
    store.verify().expect("checksums");
    let table = store.tokens().expect("tokens");
    assert_eq!(table.token.len() as u64, store.n_tokens());
    // Row ranges read across shard boundaries give the same rows as the whole table.
    let n = store.n_tokens();
    for (a, b) in [
        (0, n),
        (1, n - 1),
        (n / 3, 2 * n / 3),
        (n - 1, n + 5),
        (n, n),
    ] {
        let part = store.token_rows(a, b).expect("rows");
        let (a, b) = (a as usize, b.min(n) as usize);
        assert_eq!(part.token, table.token[a..b], "{a}..{b}");
        assert_eq!(part.seq, table.seq[a..b]);
        assert_eq!(part.doc, table.doc[a..b]);
        assert_eq!(part.pos, table.pos[a..b]);
    }

    // Document 4 run alone gives the same resid_post.1 rows as the store holds.
    let text = "document 4 says the weather is cold today\nand line two of 4";
    let ids = m.tokenizer.encode(text, false).expect("enc");
    let direct = capture_one(&m, &ids, HookPoint::ResidPost(1)).expect("capture");
    let rows: Vec<u64> = (0..table.doc.len())
        .filter(|&i| table.doc[i] == 4)
        .map(|i| i as u64)
        .collect();
    assert_eq!(
        rows.iter()
            .map(|&r| table.token[r as usize])
            .collect::<Vec<_>>(),
        ids
    );
    let stored = store
        .gather("blocks.1.hook_resid_post", &rows)
        .expect("gather");
    let diff = (stored - &direct)
        .expect("d")
        .abs()
        .expect("a")
        .max_all()
        .expect("m")
        .to_scalar::<f32>()
        .expect("s");
    assert!(diff < 1e-5, "stored vs direct: {diff}");

    // Per-head hooks keep their shape per token.
    assert_eq!(store.width("blocks.0.attn.hook_q").expect("w"), 4 * 8);

    // Shuffled batches visit every row exactly once, in a seeded order.
    let all: Vec<Tensor> = store
        .shuffled_batches("blocks.1.hook_resid_post", 16, 7)
        .expect("sb")
        .map(|b| b.expect("batch"))
        .collect();
    let n: usize = all.iter().map(|t| t.dim(0).expect("d")).sum();
    assert_eq!(n as u64, store.n_tokens());
    let again: Vec<Tensor> = store
        .shuffled_batches("blocks.1.hook_resid_post", 16, 7)
        .expect("sb")
        .map(|b| b.expect("batch"))
        .collect();
    let sum = |v: &[Tensor]| {
        Tensor::cat(v, 0)
            .expect("cat")
            .sum_all()
            .expect("s")
            .to_scalar::<f32>()
            .expect("s")
    };
    let seq = store
        .gather(
            "blocks.1.hook_resid_post",
            &(0..store.n_tokens()).collect::<Vec<_>>(),
        )
        .expect("g");
    assert!((sum(&all) - seq.sum_all().expect("s").to_scalar::<f32>().expect("s")).abs() < 1e-2);
    assert_eq!(
        Tensor::cat(&all, 0)
            .expect("c")
            .to_vec2::<f32>()
            .expect("v"),
        Tensor::cat(&again, 0)
            .expect("c")
            .to_vec2::<f32>()
            .expect("v")
    );

    // Pooled: the last token of document 4 is the last direct row.
    let (docs, pooled) = store
        .pooled("blocks.1.hook_resid_post", Pool::Last, None)
        .expect("pool");
    assert_eq!(docs, (0..60).collect::<Vec<u32>>());
    let last = direct.get(ids.len() - 1).expect("last");
    let diff = (pooled.get(4).expect("4") - last)
        .expect("d")
        .abs()
        .expect("a")
        .max_all()
        .expect("m")
        .to_scalar::<f32>()
        .expect("s");
    assert!(diff < 1e-5);

    // Context around a token shows it in [[...]] within its own sequence.
    let r = rows[3] as u64;
    let ctx = store.context(&table, &m.tokenizer, r, 3, 2).expect("ctx");
    // rows[3] is the 4th token of "document" ('d','o','c','u','m','en' in the tiny vocab).
    assert_eq!(ctx, "doc[[u]]men");
}

#[test]
fn an_interrupted_cache_resumes_to_identical_bytes() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_model(d.path());
    let data = corpus(d.path(), 150);
    let full = opts(data.clone(), d.path().join("full"));
    cache(&m, &full, &mut ()).expect("full run");

    // Stop after two shards (the state a kill leaves after a shard is written), leave a
    // half-written temporary behind as a kill mid-write would, then rerun the same job.
    let part = opts(data, d.path().join("part"));
    let mut stopped = part.clone();
    stopped.stop_after_shards = Some(2);
    let first = cache(&m, &stopped, &mut ()).expect("first");
    assert!(!first.complete && first.shards.len() == 2);
    std::fs::write(part.out.join(".shard-00002.safetensors.tmp-1"), b"partial").expect("tmp");
    let resumed = cache(&m, &part, &mut ()).expect("resume");
    assert!(resumed.complete);
    let files = |dir: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .filter(|(n, _)| n != "manifest.json")
            .collect();
        v.sort();
        v
    };
    let (a, b) = (files(&full.out), files(&part.out));
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    assert!(a == b, "shard bytes differ after resume");
    let strip = |p: &Path| {
        let mut m = pragma_store::manifest::Manifest::read(p).expect("m");
        m.dataset.path.clear();
        m
    };
    assert_eq!(strip(&full.out).shards, strip(&part.out).shards);
}

/// Issue 9, kind 5: numeric flags do what they say. Shards close at the first document
/// boundary at or past `shard_tokens` (not once per window of 16 batches), `max_tokens`
/// stops at the first boundary past it, `ctx` bounds every sequence, and a run stopped
/// after its first small shard resumes to the same bytes.
#[test]
fn numeric_flags_do_what_they_say() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_model(d.path());
    let data = corpus(d.path(), 200);
    let mut o = opts(data.clone(), d.path().join("small"));
    o.shard_tokens = Some(300);
    o.batch = 8; // a window is 8 x 16 = 128 documents, ~7,000 tokens here
    let man = cache(&m, &o, &mut ()).expect("cache");
    let table = Store::open(&o.out).expect("open").tokens().expect("t");
    let longest_doc = (0..200u32)
        .map(|k| table.doc.iter().filter(|&&x| x == k).count())
        .max()
        .expect("docs");
    let (last, full) = man.shards.split_last().expect("shards");
    assert!(full.len() >= 10, "{} shards", man.shards.len());
    for sh in full {
        assert!(
            sh.n_tokens >= 300 && sh.n_tokens < 300 + longest_doc as u64,
            "shard of {} tokens for --shard-tokens 300 (longest document {longest_doc})",
            sh.n_tokens
        );
    }
    assert!(last.n_tokens < 300 + longest_doc as u64);
    assert!(table.pos.iter().all(|&p| (p as usize) < o.ctx));

    let mut capped = opts(data.clone(), d.path().join("capped"));
    capped.max_tokens = Some(500);
    let man = cache(&m, &capped, &mut ()).expect("capped");
    assert!(
        man.n_tokens >= 500 && man.n_tokens < 500 + longest_doc as u64,
        "--max-tokens 500 stored {}",
        man.n_tokens
    );

    // Killed after the first 300-token shard: the work is kept, and the resumed store
    // is byte-identical.
    let mut stopped = opts(data, d.path().join("part"));
    stopped.shard_tokens = Some(300);
    stopped.batch = 8;
    stopped.stop_after_shards = Some(1);
    let first = cache(&m, &stopped, &mut ()).expect("first");
    assert_eq!(first.shards.len(), 1);
    assert!(first.n_tokens < 300 + longest_doc as u64);
    stopped.stop_after_shards = None;
    cache(&m, &stopped, &mut ()).expect("resume");
    for sh in &man_shards(&o.out) {
        assert_eq!(
            std::fs::read(o.out.join(sh)).expect("a"),
            std::fs::read(stopped.out.join(sh)).expect("b"),
            "{sh} differs after resume"
        );
    }
}

/// `skip_docs` caches the corpus from a later document on (a held-out store).
#[test]
fn skip_docs_starts_at_a_later_document() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_model(d.path());
    let data = corpus(d.path(), 60);
    let full = opts(data.clone(), d.path().join("full"));
    cache(&m, &full, &mut ()).expect("full");
    let mut tail = opts(data, d.path().join("tail"));
    tail.skip_docs = 50;
    let man = cache(&m, &tail, &mut ()).expect("tail");
    assert_eq!(man.dataset.n_docs, 10);
    let (a, b) = (
        Store::open(&full.out).expect("a").tokens().expect("a"),
        Store::open(&tail.out).expect("b").tokens().expect("b"),
    );
    let doc = |t: &pragma_store::reader::TokenTable, k: u32| -> Vec<u32> {
        (0..t.doc.len())
            .filter(|&i| t.doc[i] == k)
            .map(|i| t.token[i])
            .collect()
    };
    assert_eq!(doc(&b, 0), doc(&a, 50));
    assert_eq!(doc(&b, 9), doc(&a, 59));
    let mut too_far = opts(corpus(d.path(), 60), d.path().join("none"));
    too_far.skip_docs = 60;
    let e = cache(&m, &too_far, &mut ())
        .expect_err("past the end")
        .to_string();
    assert!(e.contains("has only 60 documents"), "{e}");
}

fn man_shards(dir: &Path) -> Vec<String> {
    pragma_store::manifest::Manifest::read(dir)
        .expect("manifest")
        .shards
        .into_iter()
        .map(|s| s.file)
        .collect()
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny_model(d.path());
    // Empty corpus.
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "\n\n  \n").expect("w");
    let e = cache(&m, &opts(empty, d.path().join("s1")), &mut ()).expect_err("empty");
    assert!(e.to_string().contains("no documents found"), "{e}");
    // Non-UTF-8 bytes, with the line number.
    let bad = d.path().join("bad.txt");
    std::fs::write(&bad, b"fine line\n\nbad \xff\xfe bytes\n").expect("w");
    let e = cache(&m, &opts(bad, d.path().join("s2")), &mut ()).expect_err("utf8");
    assert!(e.to_string().contains("bad.txt:3: not valid UTF-8"), "{e}");
    // Malformed JSONL, with the line number.
    let j = d.path().join("x.jsonl");
    std::fs::write(&j, "{\"text\": \"ok\"}\n{\"txt\": 1}\n").expect("w");
    let e = cache(&m, &opts(j, d.path().join("s3")), &mut ()).expect_err("jsonl");
    assert!(
        e.to_string()
            .contains("x.jsonl:2: expected an object with \"text\""),
        "{e}"
    );
    // Resuming with other settings is refused, and nothing is lost.
    let data = corpus(d.path(), 4);
    let o = opts(data.clone(), d.path().join("s4"));
    cache(&m, &o, &mut ()).expect("ok");
    let mut other = o.clone();
    other.ctx = 16;
    let e = cache(&m, &other, &mut ()).expect_err("mismatch");
    assert!(e.to_string().contains("made with other settings"), "{e}");
    Store::open(&o.out)
        .expect("still readable")
        .verify()
        .expect("intact");
    // A store opened for a model with another d_model, and an unknown hook.
    let s = Store::open(&o.out).expect("open");
    let e = s
        .require("blocks.1.hook_resid_post", 576, None)
        .expect_err("width");
    assert!(
        e.to_string().contains("32 values per token, expected 576"),
        "{e}"
    );
    assert!(matches!(
        s.width("blocks.9.hook_mlp_out"),
        Err(Error::UnknownHook { .. })
    ));
    // A corrupt shard is caught by its checksum.
    let shard = o.out.join(&s.manifest.shards[0].file);
    let mut bytes = std::fs::read(&shard).expect("r");
    let n = bytes.len();
    bytes[n - 3] ^= 0xFF;
    std::fs::write(&shard, &bytes).expect("w");
    let e = Store::open(&o.out)
        .expect("sizes fine")
        .verify()
        .expect_err("corrupt");
    assert!(e.to_string().contains("does not match the manifest"), "{e}");
    // A missing shard.
    std::fs::remove_file(&shard).expect("rm");
    let e = Store::open(&o.out).err().expect("missing");
    assert!(e.to_string().contains("missing"), "{e}");
    // Long documents: split keeps every token.
    let long = d.path().join("long.txt");
    std::fs::write(&long, "word ".repeat(100)).expect("w");
    let mut lo = opts(long, d.path().join("s5"));
    lo.long_docs = LongDocs::Split;
    let man = cache(&m, &lo, &mut ()).expect("split");
    assert_eq!(man.split_docs, 1);
    assert!(man.n_seqs > 1);
}
