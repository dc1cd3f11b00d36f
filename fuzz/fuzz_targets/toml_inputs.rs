#![no_main]
//! Project files are checked against a valid suite (from fuzz/seeds/fixed/).
use std::sync::OnceLock;
static SUITE: OnceLock<Vec<u8>> = OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let suite = SUITE.get_or_init(|| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/fixed/suite.toml");
        std::fs::read(p).expect("seeds/fixed/suite.toml")
    });
    pragma_fuzz::toml_inputs(data, suite)
});
