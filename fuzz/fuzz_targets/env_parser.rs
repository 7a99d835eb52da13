//! The env file parser on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rack_secrets::fuzzing::check_env_parser(data);
});
