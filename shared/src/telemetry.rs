//! Structured JSON logs, and metrics as CloudWatch embedded-metric-format lines on stdout.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "RackSecrets";

/// Starts JSON logging to stdout. The level comes from `RUST_LOG`, else Lambda's
/// `AWS_LAMBDA_LOG_LEVEL`, else `info`. Calling it twice is harmless.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|level| level.to_lowercase()))
        .unwrap_or_else(|_| "info".to_owned());
    // The runtime logs whole events at trace level, presigned ResponseURLs included: it is
    // held at info whatever the level asked for.
    let filter = format!("{filter},lambda_runtime=info,lambda_runtime_api_client=info");
    let targets = filter
        .parse::<tracing_subscriber::filter::Targets>()
        .unwrap_or_else(|_| "info".parse().expect("a valid filter"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_target(false)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .without_time()
        .finish()
        .with(targets)
        .try_init();
}

/// The metrics of DESIGN section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    SyncSucceeded,
    SyncUnchanged,
    SyncFailed,
    InjectFallback,
    CleanupDeleted,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::SyncSucceeded => "SyncSucceeded",
            Metric::SyncUnchanged => "SyncUnchanged",
            Metric::SyncFailed => "SyncFailed",
            Metric::InjectFallback => "InjectFallback",
            Metric::CleanupDeleted => "CleanupDeleted",
        }
    }
}

/// The embedded-metric-format line that counts one `metric` for `app` of `rack`. `Rack` is the
/// dimension the alarm watches; `App` rides along as a property for Logs Insights.
pub fn metric_line(metric: Metric, rack: &str, app: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    json!({
        "_aws": {
            "Timestamp": millis,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Rack"]],
                "Metrics": [{"Name": metric.name(), "Unit": "Count"}],
            }],
        },
        "Rack": rack,
        "App": app,
        metric.name(): 1,
    })
    .to_string()
}

/// Counts one `metric`: writes its line to stdout, where Lambda sends it to CloudWatch.
pub fn count(metric: Metric, rack: &str, app: &str) {
    println!("{}", metric_line(metric, rack, app));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_line_is_embedded_metric_format() {
        let line: serde_json::Value =
            serde_json::from_str(&metric_line(Metric::SyncFailed, "prod", "web")).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Metrics"][0]["Name"], "SyncFailed");
        assert_eq!(directive["Dimensions"][0][0], "Rack");
        assert_eq!(line["SyncFailed"], 1);
        assert_eq!(line["Rack"], "prod");
        assert_eq!(line["App"], "web");
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
