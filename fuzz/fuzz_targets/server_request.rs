#![no_main]
//! The OpenAI-compatible routes over the tiny model (fuzz/seeds/fixed/tiny.gguf).
use std::sync::OnceLock;
static SERVER: OnceLock<pragma_fuzz::Server> = OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let server = SERVER.get_or_init(|| {
        pragma_fuzz::Server::new(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/fixed/tiny.gguf"))
    });
    pragma_fuzz::server_request(data, server)
});
