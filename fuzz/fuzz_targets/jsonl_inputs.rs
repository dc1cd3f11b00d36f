#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pragma_fuzz::jsonl_inputs(data));
