//! The template rewrite on Convox-shaped templates built from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rack_secrets::fuzzing::check_template_rewriter(data);
});
