//! rack-secrets: a Convox rack's app environments moved from S3 into Secrets Manager.
//!
//! The Lambda binaries in `functions/` are wiring only; everything they do lives here, where
//! it can be tested without Lambda: the env file and envelope formats, configuration,
//! staging, and each function's request handling.

pub mod backend;
pub mod backfill;
pub mod cleanup;
pub mod config;
pub mod custom_resource;
pub mod envelope;
pub mod envfile;
pub mod error;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod inject;
pub mod pace;
pub mod rack;
pub mod release;
pub mod respond;
pub mod retry;
pub mod sdk;
pub mod stack_inject;
pub mod stage;
pub mod sync;
pub mod telemetry;
pub mod toggle;
pub mod transform;

pub use config::Config;
pub use envfile::{EnvFile, SecretVersion};
pub use error::{Error, Kind, Result};
pub use rack::Rack;

/// The longest a Lambda invocation can run.
const LAMBDA_MAX_RUN: std::time::Duration = std::time::Duration::from_secs(900);

/// The Lambda deadline of an invocation as a tokio instant.
pub fn deadline_of(context: &lambda_runtime::Context) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    tokio::time::Instant::now() + time_left(context.deadline, now_ms)
}

/// Time left until `deadline_ms`. Lambda sends an absolute time in Unix milliseconds; some
/// local Runtime APIs (`cargo lambda watch`) send the time allowed instead, which reads as a
/// moment long past: such a value is taken as a duration. Never more than Lambda's 900 s.
fn time_left(deadline_ms: u64, now_ms: u64) -> std::time::Duration {
    const DAY_MS: u64 = 86_400_000;
    let left_ms = if deadline_ms + DAY_MS < now_ms {
        deadline_ms
    } else {
        deadline_ms.saturating_sub(now_ms)
    };
    std::time::Duration::from_millis(left_ms).min(LAMBDA_MAX_RUN)
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(err: Error) -> Self {
        let error_type = match err.kind() {
            Kind::Input => "BadInput",
            Kind::Transient => "Transient",
            Kind::Permanent => "Permanent",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// Starts a function: JSON logs, configuration checked once, SDK clients built once, then
/// the Lambda runtime loop with `handler` for every event. A bad setting stops the cold start
/// with an error that names the variable.
pub async fn start<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(std::sync::Arc<Rack>, lambda_runtime::LambdaEvent<serde_json::Value>) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value>>,
{
    telemetry::init_logging();
    let config = Config::from_env().inspect_err(|err| {
        tracing::error!(error = %err, "configuration refused; fix the variable and redeploy");
    })?;
    let services = backend::Services::from_env().await;
    let rack = std::sync::Arc::new(Rack::new(config, services));

    lambda_runtime::run(lambda_runtime::service_fn(
        |event: lambda_runtime::LambdaEvent<serde_json::Value>| handler(rack.clone(), event),
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_absolute_deadline_leaves_the_time_until_it() {
        let now = 1_796_400_000_000;
        assert_eq!(time_left(now + 30_000, now), Duration::from_secs(30));
        assert_eq!(time_left(now - 5, now), Duration::ZERO);
    }

    #[test]
    fn a_deadline_sent_as_a_duration_is_taken_as_one_and_capped() {
        let now = 1_796_400_000_000;
        assert_eq!(time_left(60_000, now), Duration::from_secs(60));
        assert_eq!(time_left(600_000_000, now), LAMBDA_MAX_RUN);
    }
}
