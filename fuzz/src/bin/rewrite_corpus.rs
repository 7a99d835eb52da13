//! Writes, for each input of the template rewriter's corpus, the generated template and its
//! rewrite, so that `make fuzz` can have cfn-lint judge both.
//! Usage: rewrite_corpus CORPUS_DIR OUT_DIR

use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [corpus, out] = args.as_slice() else {
        eprintln!("usage: rewrite_corpus CORPUS_DIR OUT_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(out).expect("the output folder");
    let mut count = 0;
    for entry in std::fs::read_dir(corpus).expect("the corpus folder") {
        let path = entry.expect("an entry").path();
        let data = std::fs::read(&path).expect("an input");
        let (template, rewritten) = rack_secrets::fuzzing::rewrite_from_bytes(&data);
        if template == rewritten {
            continue;
        }
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        let write = |suffix: &str, value: &serde_json::Value| {
            let text = serde_json::to_string_pretty(value).expect("JSON");
            std::fs::write(out.join(format!("{name}.{suffix}.json")), text).expect("written");
        };
        write("in", &template);
        write("out", &rewritten);
        count += 1;
    }
    println!("{count} rewritten templates written to {}", out.display());
}
