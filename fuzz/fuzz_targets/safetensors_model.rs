#![no_main]
//! Beside the tiny model's config.json and tokenizer.json (from fuzz/seeds/fixed/).
use std::sync::OnceLock;
static FIXED: OnceLock<pragma_fuzz::HfFixed> = OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let fixed = FIXED.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/fixed");
        pragma_fuzz::HfFixed {
            config: std::fs::read(dir.join("config.json")).expect("seeds/fixed/config.json"),
            tokenizer: std::fs::read(dir.join("tokenizer.json")).expect("seeds/fixed/tokenizer.json"),
        }
    });
    pragma_fuzz::safetensors_model(data, fixed)
});
