#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kubeci_fuzz::junit(data));
