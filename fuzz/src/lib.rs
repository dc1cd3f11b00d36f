//! The harness behind each fuzz target: bytes in, through the same loader a user's file
//! goes through, and any `Err` is fine; a panic, an abort, a timeout or an allocation
//! over libFuzzer's limit is a crash. Loaders read paths, so the input is written to a
//! per-process scratch folder (in `/dev/shm` where there is one) first.
//!
//! Inputs of several files (a tokenizer with its config, an SAE's cfg.json with its
//! weights, an Inspect `.eval` zip's members) are one byte string cut at [`SPLIT`]; a
//! leading selector byte picks the format where one target covers several. The seeds
//! under `fuzz/seeds/TARGET/` (written by `cargo run --bin make_seeds` from the
//! project's fixtures) use the same layout.
//!
//! The targets, one per input surface ([`TARGETS`]), are listed in `RELIABILITY.md`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Cuts one input into the files of a multi-file input.
pub const SPLIT: &[u8] = b"\n--8<--\n";

/// Every target: its name (a file under `fuzz_targets/`) and the surface it covers.
pub const TARGETS: &[(&str, &str)] = &[
    ("gguf_model", "a GGUF checkpoint: header, metadata, tensor table and data, tokenizer and chat template metadata; then a forward pass"),
    ("safetensors_model", "an HF folder's model.safetensors (header and data) beside a valid config.json and tokenizer.json; then a forward pass"),
    ("hf_config", "an HF config.json"),
    ("hf_tokenizer", "tokenizer.json + tokenizer_config.json (with its chat template); then encode, decode and the template"),
    ("chat_template", "a Jinja chat template rendered over a conversation"),
    ("sae_folder", "SAELens (both cfg layouts) and sparsify folders: cfg.json + weights; then encode and decode"),
    ("vector_files", "steering vectors (safetensors), llama.cpp control-vector GGUF, probes (safetensors)"),
    ("jsonl_inputs", "contrastive pairs, probe datasets, study tasks, rollout prompts (JSONL)"),
    ("toml_inputs", "eval suites and research project files (TOML)"),
    ("store", "an activation store's manifest.json and a shard"),
    ("transcripts", "OpenAI and ShareGPT JSONL, Inspect .json and .eval (zip built from the input's members), Docent JSON"),
    ("server_request", "request bodies of the OpenAI-compatible API (/v1/chat/completions, /v1/completions) on a tiny model"),
];

/// This process's scratch folder.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("pragma-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch folder");
        d
    })
}

/// A fresh, empty folder `name` in the scratch folder.
fn folder(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch subfolder");
    d
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("scratch write");
    p
}

/// The parts of a multi-file input, cut at [`SPLIT`].
pub fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
        out.push(&rest[..i]);
        rest = &rest[i + SPLIT.len()..];
    }
    out.push(rest);
    out
}

/// Join files into one input (the inverse of [`parts`]), for seeds.
pub fn join(files: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SPLIT);
        }
        out.extend_from_slice(f);
    }
    out
}

/// A model that loaded: tokenize, render the chat template, run a short forward.
fn exercise(model: &pragma_model::Model) {
    use pragma_model::hooks::Hooks;
    use pragma_model::llama::Logits;
    let tok = &model.tokenizer;
    let ids = tok.encode("Hello, wörld! <|im_start|> 123", true).unwrap_or_default();
    let _ = tok.decode(&ids);
    let _ = tok.apply_chat_template(
        &[pragma_model::tokenizer::ChatMessage::new("user", "hi")],
        true,
    );
    let vocab = model.cfg().vocab_size as u32;
    let ids: Vec<u32> = ids.into_iter().filter(|&i| i < vocab).take(4).collect();
    if ids.is_empty() {
        return;
    }
    if let Ok(batch) = pragma_model::llama::Batch::single(&ids, model.device()) {
        let _ = model
            .transformer
            .forward(&batch, &Hooks::default(), Logits::Last);
    }
}

pub fn gguf_model(data: &[u8]) {
    let d = folder("gguf");
    let p = put(&d, "model.gguf", data);
    let spec = p.to_string_lossy().into_owned();
    if let Ok(m) = pragma_model::Model::load_with(
        &spec,
        pragma_model::WeightMode::Native,
        &mut |_| {},
    ) {
        exercise(&m);
    }
}

/// The tiny model's config.json and tokenizer.json, beside a fuzzed model.safetensors.
pub struct HfFixed {
    pub config: Vec<u8>,
    pub tokenizer: Vec<u8>,
}

pub fn safetensors_model(data: &[u8], fixed: &HfFixed) {
    let d = folder("hf");
    put(&d, "config.json", &fixed.config);
    put(&d, "tokenizer.json", &fixed.tokenizer);
    put(&d, "model.safetensors", data);
    if let Ok(m) = pragma_model::Model::load_with(
        &d.to_string_lossy(),
        pragma_model::WeightMode::Native,
        &mut |_| {},
    ) {
        exercise(&m);
    }
}

pub fn hf_config(data: &[u8]) {
    let d = folder("cfg");
    put(&d, "config.json", data);
    let _ = pragma_model::hf::read_config(&d);
}

pub fn hf_tokenizer(data: &[u8]) {
    let p = parts(data);
    let d = folder("tok");
    put(&d, "tokenizer.json", p[0]);
    if let Some(c) = p.get(1) {
        put(&d, "tokenizer_config.json", c);
    }
    if let Ok(t) = pragma_model::Tokenizer::from_hf_dir(&d) {
        let ids = t.encode("Hello, wörld! <|im_start|> 123", true).unwrap_or_default();
        let _ = t.decode(&ids);
        let _ = t.apply_chat_template(
            &[
                pragma_model::tokenizer::ChatMessage::new("system", "be brief"),
                pragma_model::tokenizer::ChatMessage::new("user", "hi"),
            ],
            true,
        );
    }
}

pub fn chat_template(data: &[u8]) {
    let Ok(tpl) = std::str::from_utf8(data) else {
        return;
    };
    use pragma_model::tokenizer::ChatMessage;
    let msgs = [
        ChatMessage::new("system", "be brief"),
        ChatMessage::new("user", "hi"),
        ChatMessage::new("assistant", "hello"),
        ChatMessage::new("user", "again"),
    ];
    let _ = pragma_model::tokenizer::render_chat(tpl, &msgs, true, "<s>", "</s>");
}

/// Selector 0: SAELens (cfg.json + sae_weights.safetensors); otherwise sparsify
/// (cfg.json + sae.safetensors).
pub fn sae_folder(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let p = parts(rest);
    let d = folder("sae");
    put(&d, "cfg.json", p[0]);
    let weights = if sel % 2 == 0 {
        "sae_weights.safetensors"
    } else {
        "sae.safetensors"
    };
    put(&d, weights, p.get(1).copied().unwrap_or_default());
    if let Ok(sae) = pragma_methods::sae::Sae::load(&d) {
        let x = candle_core::Tensor::ones((2, sae.cfg.d_in), candle_core::DType::F32, &candle_core::Device::Cpu);
        if let Ok(x) = x {
            if let Ok(z) = sae.encode(&x) {
                let _ = sae.decode(&z);
            }
        }
    }
}

/// Selector 0: a steering vector (`SteeringVector::load`); 1: a llama.cpp control vector
/// (`llama_cpp::import`); otherwise a probe (`Probe::load`).
pub fn vector_files(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let d = folder("vec");
    match sel % 3 {
        0 => {
            let p = put(&d, "v.safetensors", rest);
            let _ = pragma_methods::steering::SteeringVector::load(&p);
        }
        1 => {
            let p = put(&d, "v.gguf", rest);
            let _ = pragma_methods::steering::llama_cpp::import(&p);
        }
        _ => {
            let p = put(&d, "probe.safetensors", rest);
            let _ = pragma_methods::probe::Probe::load(&p);
        }
    }
}

/// Selector 0: contrastive pairs; 1: a probe dataset; 2: study tasks; 3: rollout prompts.
pub fn jsonl_inputs(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let d = folder("jsonl");
    let p = put(&d, "data.jsonl", rest);
    match sel % 4 {
        0 => drop(pragma_methods::steering::read_pairs(&p)),
        1 => drop(pragma_methods::probe::read_dataset(&p, None)),
        2 => drop(pragma_methods::study::read_tasks(&p)),
        _ => drop(pragma_transcripts::rollout::read_prompts(&p)),
    }
}

/// Selector 0: an eval suite (beside an empty dataset file `d.jsonl`); otherwise a
/// research project file (beside a valid suite, `suite.toml`).
pub fn toml_inputs(data: &[u8], suite: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let d = folder("toml");
    put(&d, "d.jsonl", b"{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 0}\n");
    if sel % 2 == 0 {
        let p = put(&d, "suite.toml", rest);
        let _ = pragma_eval::suite::Suite::load(&p);
    } else {
        put(&d, "suite.toml", suite);
        let p = put(&d, "pragma.toml", rest);
        let _ = pragma_research::project::Project::load(&p);
    }
}

/// manifest.json, then a shard (`shard-00000.safetensors`), opened and read.
pub fn store(data: &[u8]) {
    let p = parts(data);
    let d = folder("store");
    put(&d, "manifest.json", p[0]);
    if let Some(s) = p.get(1) {
        put(&d, "shard-00000.safetensors", s);
    }
    if let Ok(st) = pragma_store::Store::open(&d) {
        let hooks: Vec<String> = st.manifest.hooks.iter().map(|h| h.name.clone()).collect();
        for h in hooks.iter().take(2) {
            let _ = st.gather(h, &[0, 1]);
        }
    }
}

/// Selector 0: OpenAI JSONL; 1: ShareGPT JSONL; 2: Inspect .json; 3: Docent JSON;
/// 4: Inspect .eval, a zip made of the input's parts, each `NAME\0CONTENT`;
/// otherwise a `.jsonl` whose format is detected.
pub fn transcripts(data: &[u8]) {
    use pragma_transcripts::import::{read, Format};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let d = folder("tr");
    let (name, format) = match sel % 6 {
        0 => ("t.jsonl", Some(Format::OpenAi)),
        1 => ("t.jsonl", Some(Format::ShareGpt)),
        2 => ("t.json", Some(Format::InspectJson)),
        3 => ("t.json", Some(Format::Docent)),
        4 => ("t.eval", Some(Format::InspectEval)),
        _ => ("t.jsonl", None),
    };
    let bytes = if sel % 6 == 4 {
        zip_members(rest)
    } else {
        rest.to_vec()
    };
    let p = put(&d, name, &bytes);
    let _ = read(&p, format);
}

/// A zip archive of the parts of `data`, each `NAME\0CONTENT` (a part without a NUL is
/// `header.json`).
pub fn zip_members(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for part in parts(data) {
            let (name, content) = match part.iter().position(|&b| b == 0) {
                Some(i) => (String::from_utf8_lossy(&part[..i]).into_owned(), &part[i + 1..]),
                None => ("header.json".to_string(), part),
            };
            if z.start_file(name, opts).is_ok() {
                let _ = z.write_all(content);
            }
        }
        let _ = z.finish();
    }
    buf.into_inner()
}

/// Split a zip archive into the `NAME\0CONTENT` parts [`zip_members`] takes, for seeds.
pub fn unzip_members(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("zip");
    let mut files: Vec<Vec<u8>> = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).expect("member");
        let mut part = f.name().as_bytes().to_vec();
        part.push(0);
        f.read_to_end(&mut part).expect("read member");
        files.push(part);
    }
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    join(&refs)
}

/// The server half: a router over a tiny model, and a runtime to drive it.
pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub app: axum::Router,
}

impl Server {
    /// The OpenAI-compatible routes over the GGUF model at `gguf`, `max_tokens` at most 8.
    pub fn new(gguf: &Path) -> Server {
        let model = std::sync::Arc::new(
            pragma_model::Model::load(&gguf.to_string_lossy(), &mut |_| {}).expect("tiny model"),
        );
        // A vector named "love" for the body's `pragma.steer`.
        use pragma_methods::steering::{train, Pair, Side, TrainConfig};
        let pairs: Vec<Pair> = [("good", "bad"), ("nice", "mean")]
            .iter()
            .map(|(a, b)| Pair::new(Side::Text(a.to_string()), Side::Text(b.to_string())))
            .collect();
        let love = train(&model, &pairs, "fuzz", &TrainConfig::new(&[0])).expect("vector");
        let api = pragma_server::openai::OpenAi::new(model, "tiny".into(), vec![("love".into(), love)], 8, 4);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Server {
            rt,
            app: pragma_server::openai::routes(api),
        }
    }
}

/// Selector 0: POST /v1/chat/completions; otherwise POST /v1/completions; the rest is
/// the body. The answer must be a response with a status (no hang past libFuzzer's
/// timeout, no panic).
pub fn server_request(data: &[u8], server: &Server) {
    use tower::ServiceExt;
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let uri = if sel % 2 == 0 {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    let app = server.app.clone();
    server.rt.block_on(async move {
        let Ok(resp) = app.oneshot(req).await;
        let _ = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
    });
}
