#![no_main]

libfuzzer_sys::fuzz_target!(init: kubeci_fuzz::contain_yaml_reader_panics(), |data: &[u8]| {
    kubeci_fuzz::job_spec(data)
});
