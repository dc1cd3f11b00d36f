//! Inputs the fuzz targets (fuzz/, RELIABILITY.md) crashed on, each a test named after
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
