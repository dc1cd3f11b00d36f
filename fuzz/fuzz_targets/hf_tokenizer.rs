#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pragma_fuzz::hf_tokenizer(data));
