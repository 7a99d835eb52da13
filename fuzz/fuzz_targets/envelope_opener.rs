//! The envelope opener on arbitrary objects.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rack_secrets::fuzzing::check_envelope_opener(data);
});
