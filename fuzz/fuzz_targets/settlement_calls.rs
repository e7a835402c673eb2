#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millicent_fuzz_targets::settlement_calls(data));
