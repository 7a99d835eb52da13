//! rack-secrets: a Convox rack's app environments moved from S3 into Secrets Manager.
//!
//! The Lambda binaries in `functions/` are wiring only; everything they do lives here, where
//! it can be tested without Lambda: the env file and envelope formats, configuration,
//! staging, and each function's request handling.

pub mod backend;
pub mod config;
pub mod custom_resource;
pub mod envelope;
pub mod envfile;
pub mod error;
pub mod inject;
pub mod pace;
pub mod rack;
pub mod release;
pub mod respond;
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

/// The Lambda deadline of an invocation as a tokio instant.
pub fn deadline_of(context: &lambda_runtime::Context) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let left = context.deadline.saturating_sub(now_ms);
    tokio::time::Instant::now() + std::time::Duration::from_millis(left)
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
