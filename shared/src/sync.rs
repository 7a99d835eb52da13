//! env-sync: S3 notifications, EventBridge `Object Created` events and the manual `sync`
//! payload, each turned into staged releases and one result per app.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::s3::S3Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;

use tokio::time::Instant;

use crate::backfill::{self, Selection};
use crate::error::{Error, Kind, Result};
use crate::rack::Rack;
use crate::release::{is_release_id, release_of_key};
use crate::telemetry::{self, Metric};

/// What happened to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new version was written (and the secret created or restored when needed); for a
    /// backfill, also when only `AWSCURRENT` moved.
    Staged,
    /// The version was already there (and live, for a backfill); nothing was written.
    Unchanged,
    /// A backfill's dry run: staging or promoting would write.
    WouldStage,
    /// Not handled: not enabled, not Generation 2, or no app of this rack.
    Skipped,
    /// verify: `AWSCURRENT` holds exactly the live release's environment.
    InSync,
    /// verify: they differ; `drift` names the keys.
    Drift,
    /// verify: the app has no secret, or no `AWSCURRENT` version.
    Missing,
    /// verify: the app is not enabled (or not Generation 2).
    Disabled,
    Failed,
}

/// One app's result, as returned to the caller. Key names and ids only, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppResult {
    pub app: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub outcome: Outcome,
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    pub reason: Option<String>,
    /// verify only: the key names that differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::backfill::Drift>,
    /// Whether a failure may pass on retry; decides whether Lambda retries an event.
    #[serde(skip)]
    pub transient: bool,
}

impl AppResult {
    /// A result for an app that was not handled, and why.
    pub fn skipped(app: &str, release: Option<&str>, reason: String) -> AppResult {
        AppResult {
            app: app.to_owned(),
            release: release.map(str::to_owned),
            outcome: Outcome::Skipped,
            version_id: None,
            keys: Vec::new(),
            reason: Some(reason),
            drift: None,
            transient: false,
        }
    }
}

/// The manual payloads env-sync takes: one key naming the action.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Manual {
    Sync { app: String, release: String },
    Backfill(Selection),
    Verify(Selection),
}

/// The S3 object named by an EventBridge `Object Created` event.
#[derive(Debug, Deserialize)]
struct ObjectCreated {
    bucket: Named,
    object: Keyed,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Keyed {
    key: String,
}

/// How long before the Lambda deadline a backfill or verify starts no new app.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Handles one env-sync invocation and returns `{"results": [...]}`. Records are handled
/// independently; when any failed transiently the invocation fails after all were tried, so
/// that Lambda retries it (a replay stages nothing twice). Permanent failures are logged,
/// counted and returned, not retried. A backfill or verify returns its report, with a cursor
/// when it stopped `DEADLINE_MARGIN` before `deadline`.
pub async fn handle(rack: &Arc<Rack>, payload: Value, deadline: Instant) -> Result<Value> {
    let results = if payload.get("Records").is_some() {
        let event: S3Event = serde_json::from_value(payload)
            .map_err(|err| Error::Input(format!("unreadable S3 notification: {err}")))?;
        sync_s3_records(rack, event).await
    } else if payload.get("detail-type").is_some() {
        let event: EventBridgeEvent = serde_json::from_value(payload)
            .map_err(|err| Error::Input(format!("unreadable EventBridge event: {err}")))?;
        sync_eventbridge(rack, event).await?
    } else {
        let manual: Manual = serde_json::from_value(payload).map_err(|err| {
            Error::Input(format!(
                "unknown payload ({err}); env-sync takes S3 notifications, EventBridge \
                 Object Created events, {{\"sync\": {{\"app\": ..., \"release\": ...}}}}, \
                 {{\"backfill\": {{\"apps\": [...], \"dry_run\": false}}}} and \
                 {{\"verify\": {{\"apps\": [...]}}}}"
            ))
        })?;
        let stop: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || Instant::now() + DEADLINE_MARGIN >= deadline);
        match manual {
            Manual::Sync { app, release } => vec![sync_app_release(rack, &app, &release).await],
            Manual::Backfill(selection) => {
                let report = backfill::backfill(rack.clone(), selection, stop).await?;
                return Ok(serde_json::to_value(report).expect("a report serialises"));
            }
            Manual::Verify(selection) => {
                let report = backfill::verify(rack.clone(), selection, stop).await?;
                return Ok(serde_json::to_value(report).expect("a report serialises"));
            }
        }
    };

    let transient: Vec<&AppResult> = results.iter().filter(|r| r.transient).collect();
    if !transient.is_empty() {
        let apps: Vec<String> = transient
            .iter()
            .map(|r| format!("{} {}", r.app, r.release.as_deref().unwrap_or("")))
            .collect();
        return Err(Error::Transient(format!(
            "{} of {} environments failed with a transient error and will be retried: {}",
            transient.len(),
            results.len(),
            apps.join(", ")
        )));
    }
    Ok(serde_json::json!({ "results": results }))
}

async fn sync_s3_records(rack: &Rack, event: S3Event) -> Vec<AppResult> {
    let mut results = Vec::new();
    for record in event.records {
        let created = record
            .event_name
            .as_deref()
            .is_some_and(|name| name.starts_with("ObjectCreated:"));
        let (Some(bucket), Some(key)) = (record.s3.bucket.name, record.s3.object.key) else {
            tracing::debug!("ignoring an S3 record without a bucket or key");
            continue;
        };
        if !created {
            tracing::debug!(bucket, "ignoring an S3 record that is not ObjectCreated");
            continue;
        }
        let key = decode_notification_key(&key);
        if let Some(result) = sync_object(rack, &bucket, &key).await {
            results.push(result);
        }
    }
    results
}

async fn sync_eventbridge(rack: &Rack, event: EventBridgeEvent) -> Result<Vec<AppResult>> {
    if event.source != "aws.s3" || event.detail_type != "Object Created" {
        tracing::debug!(
            source = event.source,
            detail_type = event.detail_type,
            "ignoring an EventBridge event that is not an S3 Object Created"
        );
        return Ok(Vec::new());
    }
    let object: ObjectCreated = serde_json::from_value(event.detail)
        .map_err(|err| Error::Input(format!("unreadable Object Created detail: {err}")))?;
    Ok(sync_object(rack, &object.bucket.name, &object.object.key)
        .await
        .into_iter()
        .collect())
}

/// S3 notifications carry form-encoded keys: `+` is a space and `%2B` a plus.
pub fn decode_notification_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Stages the object when it is a release's env file in an app's bucket; `None` for any
/// other object, which is no business of ours.
async fn sync_object(rack: &Rack, bucket: &str, key: &str) -> Option<AppResult> {
    let Some(release) = release_of_key(key) else {
        tracing::debug!(bucket, "ignoring an object that is not releases/{{id}}/env");
        return None;
    };

    let app = match rack.app_for_bucket(bucket).await {
        Ok(Some(app)) => app,
        Ok(None) => {
            tracing::debug!(
                bucket,
                release,
                "ignoring a bucket that is no app of this rack"
            );
            return None;
        }
        Err(err) => return Some(failed(rack, bucket, Some(release), err)),
    };
    Some(sync_release_in(rack, &app, Some(bucket), release).await)
}

/// The manual `sync`: one release of one app.
pub async fn sync_app_release(rack: &Rack, app: &str, release: &str) -> AppResult {
    if !is_release_id(release) {
        let err = Error::Input(format!(
            "release {release:?} of app {app} is not a release id"
        ));
        return failed(rack, app, Some(release), err);
    }
    sync_release_in(rack, app, None, release).await
}

/// Checks that the app is enabled, then stages the release, logging and counting the result.
async fn sync_release_in(rack: &Rack, app: &str, bucket: Option<&str>, release: &str) -> AppResult {
    let result = match try_sync(rack, app, bucket, release).await {
        Ok(result) => result,
        Err(err) => return failed(rack, app, Some(release), err),
    };
    match result.outcome {
        Outcome::Staged => {
            telemetry::count(Metric::SyncSucceeded, &rack.config.rack, app);
            tracing::info!(
                app,
                release,
                version_id = result.version_id,
                keys = result.keys.len(),
                "staged the release's environment"
            );
        }
        Outcome::Unchanged => {
            telemetry::count(Metric::SyncUnchanged, &rack.config.rack, app);
            tracing::info!(
                app,
                release,
                version_id = result.version_id,
                "the release's environment was already staged; nothing written"
            );
        }
        _ => {
            tracing::info!(app, release, reason = result.reason, "skipped");
        }
    }
    result
}

async fn try_sync(
    rack: &Rack,
    name: &str,
    bucket: Option<&str>,
    release: &str,
) -> Result<AppResult> {
    let Some(app) = rack.app(name).await? else {
        let reason = format!(
            "no stack {} tagged as an app of rack {}",
            rack.config.stack_name(name),
            rack.config.rack
        );
        return Ok(AppResult::skipped(name, Some(release), reason));
    };
    if let Some(skip) = rack.check_enabled(&app, None)? {
        return Ok(AppResult::skipped(name, Some(release), skip.to_string()));
    }

    let bucket = match bucket {
        Some(bucket) => bucket.to_owned(),
        None => rack.settings_bucket(name).await?.ok_or_else(|| {
            Error::Permanent(format!("app {name} has no Settings bucket in its stack"))
        })?,
    };
    let staged = rack.stage_release(name, &bucket, release).await?;
    Ok(AppResult {
        app: name.to_owned(),
        release: Some(release.to_owned()),
        outcome: if staged.written {
            Outcome::Staged
        } else {
            Outcome::Unchanged
        },
        version_id: Some(staged.version_id),
        keys: shown_keys(staged.keys),
        reason: None,
        drift: None,
        transient: false,
    })
}

/// The key names a result may show: variable names only (see `is_variable_name`).
pub fn shown_keys(keys: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    keys.into_iter()
        .map(Into::into)
        .filter(|key| crate::envfile::is_variable_name(key))
        .collect()
}

/// Logs and counts a failure, and turns it into the app's result.
fn failed(rack: &Rack, app: &str, release: Option<&str>, err: Error) -> AppResult {
    telemetry::count(Metric::SyncFailed, &rack.config.rack, app);
    let kind = err.kind();
    if kind == Kind::Transient {
        tracing::error!(app, release, error = %err, "sync failed; it will be retried");
    } else {
        tracing::warn!(app, release, error = %err, kind = ?kind, "sync failed; not retried");
    }
    AppResult {
        app: app.to_owned(),
        release: release.map(str::to_owned),
        outcome: Outcome::Failed,
        version_id: None,
        keys: Vec::new(),
        reason: Some(err.to_string()),
        drift: None,
        transient: kind == Kind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_keys_are_form_decoded() {
        assert_eq!(
            decode_notification_key("releases/R1/env"),
            "releases/R1/env"
        );
        assert_eq!(decode_notification_key("a+b%2Bc%2F"), "a b+c/");
    }
}
