//! `envelope`: seals an env file as Convox does, or opens one, for operators and the demo.
//!
//! Usage: `envelope seal --key-id KEY < env > sealed`, `envelope open < sealed > env`.
//! It uses the standard AWS SDK settings (region, credentials, `AWS_ENDPOINT_URL`).

use std::io::{Read, Write};
use std::process::ExitCode;

use rack_secrets::envelope;

const USAGE: &str =
    "usage: envelope seal --key-id KEY < env > sealed\n       envelope open < sealed > env";

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("envelope: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|err| format!("reading standard input: {err}"))?;

    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kms = aws_sdk_kms::Client::new(&config);
    let output = match args.as_slice() {
        ["seal", "--key-id", key_id] => envelope::seal(&kms, key_id, &input).await,
        ["open"] => envelope::open_object(&kms, &input, "standard input").await,
        _ => return Err(USAGE.to_owned()),
    }
    .map_err(|err| err.to_string())?;

    std::io::stdout()
        .write_all(&output)
        .map_err(|err| format!("writing standard output: {err}"))
}
