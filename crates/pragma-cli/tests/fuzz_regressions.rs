//! Inputs the fuzz targets (fuzz/, RELIABILITY.md) crashed on or hung on, each a test named after
//! the kind of crash, loaded through the same loader as the target: each must now be a
//! clear error, not a panic.

use std::path::{Path, PathBuf};

fn regression(target: &str, name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The fuzz harness's multi-file layout: files joined with this line.
fn parts(data: &[u8]) -> Vec<&[u8]> {
    const SPLIT: &[u8] = b"\n--8<--\n";
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
        out.push(&rest[..i]);
        rest = &rest[i + SPLIT.len()..];
    }
    out.push(rest);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// A tensor whose dimensions multiply past usize: the extent check multiplied them
/// unchecked (a panic with debug assertions, a wrapped size without).
#[test]
fn gguf_tensor_shape_product_overflow_is_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "m.gguf",
        &regression("gguf_model", "tensor-shape-product-overflow"),
    );
    let e = pragma_model::Model::load(p.to_str().expect("utf8"), &mut |_| {})
        .err()
        .expect("a corrupt GGUF must not load");
    let msg = e.to_string();
    assert!(msg.contains("m.gguf"), "{msg}");
}

/// A `decoder` entry the tokenizers crate's deserializer `expect`s on: a panic in the
/// dependency, now an error naming the file.
#[test]
fn tokenizer_json_with_a_bad_decoder_is_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let data = regression("hf_tokenizer", "decoder-expect-panic");
    let p = parts(&data);
    write(d.path(), "tokenizer.json", p[0]);
    if let Some(c) = p.get(1) {
        write(d.path(), "tokenizer_config.json", c);
    }
    let e = pragma_model::Tokenizer::from_hf_dir(d.path())
        .err()
        .expect("must not load");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

/// A tensor with a zero dimension: candle read it through a dangling pointer.
#[test]
fn gguf_empty_tensor_is_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "m.gguf",
        &regression("gguf_model", "empty-tensor-dangling-pointer"),
    );
    let e = pragma_model::Model::load(p.to_str().expect("utf8"), &mut |_| {})
        .err()
        .expect("a corrupt GGUF must not load");
    assert!(e.to_string().contains("m.gguf"), "{e}");
}

/// A control vector whose tensor sizes overflow in candle's reader.
#[test]
fn control_vector_tensor_size_overflow_is_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let data = regression("vector_files", "control-vector-tensor-size-overflow");
    let p = write(d.path(), "v.gguf", &data[1..]);
    let e = pragma_methods::steering::llama_cpp::import(&p).expect_err("must not load");
    assert!(e.to_string().contains("v.gguf"), "{e}");
}

/// A manifest whose shards hold fewer tokens than it says: the reader indexed past the
/// last shard.
#[test]
fn store_shards_short_of_the_manifest_tokens_is_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let data = regression("store", "shards-short-of-the-manifest-tokens");
    let p = parts(&data);
    write(d.path(), "manifest.json", p[0]);
    if let Some(s) = p.get(1) {
        write(d.path(), "shard-00000.safetensors", s);
    }
    let e = pragma_store::Store::open(d.path())
        .err()
        .expect("must not open");
    assert!(e.to_string().contains("manifest.json"), "{e}");
}

/// `{{ messages * 6666666 }}`: one instruction printing millions of items (a hang).
#[test]
fn chat_template_printing_a_huge_repeat_is_an_error() {
    let data = regression("chat_template", "huge-repeat-printed");
    let tpl = std::str::from_utf8(&data).expect("utf8");
    let t = std::time::Instant::now();
    let msgs = [pragma_model::tokenizer::ChatMessage::new("user", "hi")];
    let e = pragma_model::tokenizer::render_chat(tpl, &msgs, true, "<s>", "</s>")
        .expect_err("must not render");
    // Refused up front since sequence repetition is (see below); the cap on printed
    // collections stays behind it.
    assert!(e.to_string().contains("string literal"), "{e}");
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
}

/// Q/K rows that do not split into the file's head count: the row unpermutation divided
/// by zero.
#[test]
fn gguf_heads_that_do_not_split_the_rows_are_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "m.gguf",
        &regression("gguf_model", "head-rows-divide-by-zero"),
    );
    let e = pragma_model::Model::load(p.to_str().expect("utf8"), &mut |_| {})
        .err()
        .expect("a corrupt GGUF must not load");
    assert!(!e.to_string().is_empty());
}

/// `n_layers` = a huge number: the layer vector's allocation aborted the process.
#[test]
fn gguf_huge_layer_count_is_an_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = write(
        d.path(),
        "m.gguf",
        &regression("gguf_model", "huge-layer-count-allocation"),
    );
    let e = pragma_model::Model::load(p.to_str().expect("utf8"), &mut |_| {})
        .err()
        .expect("a corrupt GGUF must not load");
    assert!(!e.to_string().is_empty());
}

/// `{{ () * 66 ** 6 }}`: an empty sequence repeated 10^11 times, printed (a hang).
#[test]
fn chat_template_printing_an_empty_huge_repeat_is_quick() {
    let data = regression("chat_template", "empty-repeat-printed");
    let tpl = std::str::from_utf8(&data).expect("utf8");
    let t = std::time::Instant::now();
    let msgs = [pragma_model::tokenizer::ChatMessage::new("user", "hi")];
    let _ = pragma_model::tokenizer::render_chat(tpl, &msgs, true, "<s>", "</s>");
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
}

/// `{{ 66 ~ 646166 * () * 666 }}`: an empty sequence repeated 4 * 10^8 times, joined
/// into a string (a hang whatever the fuel). Refused before rendering, as is every `*`
/// without a string literal beside it; string repetition still renders.
#[test]
fn chat_template_repeating_a_sequence_is_refused() {
    let data = regression("chat_template", "empty-repeat-joined");
    let tpl = std::str::from_utf8(&data).expect("utf8");
    let msgs = [pragma_model::tokenizer::ChatMessage::new("user", "hi")];
    let e = pragma_model::tokenizer::render_chat(tpl, &msgs, true, "<s>", "</s>")
        .expect_err("must not render");
    assert!(e.to_string().contains("string literal"), "{e}");
    let ok = pragma_model::tokenizer::render_chat(
        "{{ '-' * 3 }}{% for m in messages %}{{ m.content }}{{ 2 * ' ' }}{% endfor %}",
        &msgs,
        true,
        "<s>",
        "</s>",
    )
    .expect("string repetition renders");
    assert_eq!(ok, "---hi  ");
}
