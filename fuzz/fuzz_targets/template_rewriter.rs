//! The template rewrite on Convox-shaped templates built from arbitrary bytes. With
//! REWRITES_OUT set, each input's template and rewrite are also written there, for cfn-lint.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rack_secrets::fuzzing::check_template_rewriter(data);
    if let Some(out) = std::env::var_os("REWRITES_OUT") {
        let (template, rewritten) = rack_secrets::fuzzing::rewrite_from_bytes(data);
        if template != rewritten {
            // FNV-1a names each input's pair of files.
            let name = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
            });
            let out = std::path::Path::new(&out);
            for (suffix, value) in [("in", &template), ("out", &rewritten)] {
                let text = serde_json::to_string_pretty(value).expect("JSON");
                std::fs::write(out.join(format!("{name:016x}.{suffix}.json")), text)
                    .expect("written");
            }
        }
    }
});
