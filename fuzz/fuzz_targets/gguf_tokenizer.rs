#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| viva_fuzz::targets::gguf_tokenizer(data));
