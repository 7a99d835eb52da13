//! stack-inject's custom resource: at promote, stage the release, move `AWSCURRENT` to it and
//! switch on EventBridge delivery for the app's bucket; answer CloudFormation in every case.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::is_rack_name;
use crate::error::{Error, Result};
use crate::rack::{Rack, APP_SETTING};
use crate::release::is_release_id;
use crate::respond;
use crate::telemetry::{self, Metric};
use crate::toggle::{self, Toggle};

/// CloudFormation's limit on a whole response body.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// Time kept back before the Lambda deadline to deliver a FAILED answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// The fields of a custom resource request the handler uses.
#[derive(Debug, Clone)]
pub struct Request {
    pub request_type: String,
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub physical_resource_id: Option<String>,
    pub resource_properties: Value,
}

impl Request {
    /// Reads a request leniently: only a `ResponseURL` is required, since without it there is
    /// no one to answer; any other field that is missing or of the wrong type reads as empty
    /// and, where it matters, makes the answer a FAILED one rather than no answer at all.
    pub fn read(payload: &Value) -> Result<Request> {
        let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
        let response_url = text("ResponseURL").ok_or_else(|| {
            Error::Input(
                "a custom resource request without a ResponseURL cannot be answered".into(),
            )
        })?;
        Ok(Request {
            request_type: text("RequestType").unwrap_or_default(),
            response_url,
            stack_id: text("StackId").unwrap_or_default(),
            request_id: text("RequestId").unwrap_or_default(),
            logical_resource_id: text("LogicalResourceId").unwrap_or_default(),
            physical_resource_id: text("PhysicalResourceId"),
            resource_properties: payload
                .get("ResourceProperties")
                .cloned()
                .unwrap_or(Value::Null),
        })
    }
}

/// The resource's attributes: `SecretArn`, `SecretName`, `VersionId`.
pub type Data = BTreeMap<&'static str, String>;

/// Handles one request and always answers it on its `ResponseURL`, before `deadline`.
pub async fn handle(
    rack: std::sync::Arc<Rack>,
    payload: Value,
    deadline: Instant,
) -> Result<Value> {
    let request = Request::read(&payload)?;
    let physical_id = physical_id(&rack, &request);
    let work = {
        let rack = rack.clone();
        let request = request.clone();
        async move { act(&rack, &request).await }
    };
    answer(&request, &physical_id, deadline, work).await
}

/// Runs `work` on its own task, so that a panic or the deadline still leads to an answer,
/// then sends SUCCESS or FAILED. Returns what was sent, without `Data` values' secrets (there
/// are none: only ARNs, names and ids).
pub async fn answer<F>(
    request: &Request,
    physical_id: &str,
    deadline: Instant,
    work: F,
) -> Result<Value>
where
    F: Future<Output = Result<Data>> + Send + 'static,
{
    let stop_at = deadline
        .checked_sub(DEADLINE_MARGIN)
        .filter(|stop| *stop > Instant::now())
        .unwrap_or_else(|| Instant::now() + (deadline - Instant::now()) / 2);
    tracing::debug!(
        ms_to_deadline = (deadline - Instant::now()).as_millis() as u64,
        ms_to_stop = (stop_at - Instant::now()).as_millis() as u64,
        "custom resource request"
    );
    let work = tokio::spawn(work.in_current_span());
    let outcome = tokio::time::timeout_at(stop_at, work).await;
    let result = match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(join_error)) if join_error.is_panic() => Err(Error::Permanent(
            "stack-inject failed unexpectedly (a panic); its log has the details".to_owned(),
        )),
        Ok(Err(_)) => Err(Error::Permanent(
            "stack-inject's work was cancelled".to_owned(),
        )),
        Err(_) => Err(Error::Transient(
            "stack-inject did not finish before the Lambda deadline".to_owned(),
        )),
    };

    let (status, reason, data) = match result {
        Ok(data) => ("SUCCESS", None, data),
        Err(err) => {
            tracing::error!(
                request_type = request.request_type,
                logical_id = request.logical_resource_id,
                error = %err,
                "custom resource failed"
            );
            ("FAILED", Some(err.to_string()), Data::new())
        }
    };
    let body = response_body(request, physical_id, status, reason.as_deref(), &data);
    respond::put(&request.response_url, body.to_string().into_bytes()).await?;
    tracing::info!(
        request_type = request.request_type,
        status,
        physical_id,
        "answered CloudFormation"
    );
    Ok(json!({"Status": status, "PhysicalResourceId": physical_id, "Reason": reason}))
}

/// The response document, with `Reason` shortened so that the whole stays within 4,096 bytes.
pub fn response_body(
    request: &Request,
    physical_id: &str,
    status: &str,
    reason: Option<&str>,
    data: &Data,
) -> Value {
    let mut body = json!({
        "Status": status,
        "PhysicalResourceId": physical_id,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "NoEcho": false,
        "Data": data,
    });
    if let Some(reason) = reason {
        let room = MAX_RESPONSE_BYTES.saturating_sub(body.to_string().len() + 16);
        body["Reason"] = Value::String(shorten(reason, room));
    }
    body
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The physical id: the secret's name, the same on every update of the same app, so that
/// CloudFormation never replaces the resource and deletes the old one.
fn physical_id(rack: &Rack, request: &Request) -> String {
    let app = request
        .resource_properties
        .get("App")
        .and_then(Value::as_str);
    match (app, &request.physical_resource_id) {
        (Some(app), _) if is_rack_name(app) => rack.config.secret_name(app),
        (_, Some(existing)) => existing.clone(),
        _ => format!("{}-invalid", request.logical_resource_id),
    }
}

async fn act(rack: &Rack, request: &Request) -> Result<Data> {
    match request.request_type.as_str() {
        "Delete" => Ok(Data::new()),
        "Create" | "Update" => promote_release(rack, &request.resource_properties).await,
        other => Err(Error::Input(format!("unknown RequestType {other:?}"))),
    }
}

async fn promote_release(rack: &Rack, properties: &Value) -> Result<Data> {
    let text = |name: &str| properties.get(name).and_then(Value::as_str);
    let app = text("App")
        .filter(|app| is_rack_name(app))
        .ok_or_else(|| Error::Input("property App must name a Convox app".to_owned()))?;
    let release = text("Release")
        .filter(|release| is_release_id(release))
        .ok_or_else(|| Error::Input(format!("app {app}: property Release must be a release id")))?;
    let manifest = Toggle::parse_optional(APP_SETTING, text(APP_SETTING))
        .map_err(|err| Error::Input(format!("app {app}: {err}")))?;

    let mut data = Data::new();
    data.insert("SecretName", rack.config.secret_name(app));
    data.insert("SecretArn", String::new());
    data.insert("VersionId", String::new());
    let stack = rack
        .app(app)
        .await?
        .ok_or_else(|| Error::Permanent(format!("app {app}: no stack of this rack")))?;
    let served = stack.is_generation2()
        && toggle::enabled(rack.config.rack_default, stack.setting()?, manifest);
    if !served {
        tracing::info!(app, release, "app not enabled; nothing promoted");
        return Ok(data);
    }

    let bucket = rack
        .settings_bucket(app)
        .await?
        .ok_or_else(|| Error::Permanent(format!("app {app} has no Settings bucket")))?;

    // Fall back, never block: an environment Secrets Manager cannot take leaves the app on
    // the S3 path for this release (the macro left its task definitions as they were), and
    // the deploy goes on.
    let staged = match rack.stage_release(app, &bucket, release).await {
        Ok(staged) => staged,
        Err(err) if !err.is_transient() || rack.config.pin_versions => {
            return Ok(fall_back(rack, app, release, &err, data));
        }
        Err(err) => return Err(err),
    };
    data.insert("SecretArn", staged.secret_arn.clone());
    data.insert("VersionId", staged.version_id.clone());

    // Pinned task definitions read their version whatever AWSCURRENT says, so a failed move
    // is a warning; unpinned ones would read the old environment, so it fails the deploy.
    let moved = match rack.promote(app, &staged.version_id).await {
        Ok(moved) => moved,
        Err(err) if rack.config.pin_versions => {
            tracing::warn!(app, release, error = %err, "AWSCURRENT not moved; tasks are pinned");
            false
        }
        Err(err) => return Err(err),
    };
    match rack.services.objects.enable_eventbridge(&bucket).await {
        Ok(switched_on) => tracing::info!(
            app,
            release,
            version_id = staged.version_id,
            awscurrent_moved = moved,
            eventbridge_switched_on = switched_on,
            "release promoted"
        ),
        Err(err) => tracing::warn!(
            app,
            bucket,
            error = %err,
            "release promoted, but EventBridge delivery could not be switched on; later env \
             writes are staged at their promote"
        ),
    }
    Ok(data)
}

/// The answer for an app whose environment stays on S3 for this release: SUCCESS, with no
/// ARN or version, after a warning and a `SyncFailed` count.
fn fall_back(rack: &Rack, app: &str, release: &str, err: &Error, data: Data) -> Data {
    telemetry::count(Metric::SyncFailed, &rack.config.rack, app);
    tracing::warn!(
        app,
        release,
        error = %err,
        "the release's environment could not be staged; the app stays on the S3 path"
    );
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            request_type: "Create".into(),
            response_url: "http://127.0.0.1:1/".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/prod-web/1".into(),
            request_id: "f2a6c6f0".into(),
            logical_resource_id: "RackSecrets".into(),
            physical_resource_id: None,
            resource_properties: Value::Null,
        }
    }

    #[test]
    fn a_long_reason_is_cut_to_keep_the_body_within_4096_bytes() {
        let reason = "é".repeat(5000);
        let body = response_body(
            &request(),
            "prod/web",
            "FAILED",
            Some(&reason),
            &Data::new(),
        );
        let size = body.to_string().len();
        assert!(size <= MAX_RESPONSE_BYTES, "{size}");
        assert!(body["Reason"].as_str().unwrap().ends_with("..."));
        assert_eq!(body["RequestId"], "f2a6c6f0");
    }

    #[test]
    fn a_request_with_fields_of_the_wrong_type_can_still_be_answered() {
        let payload = serde_json::json!({
            "ResponseURL": "http://127.0.0.1:1/answer",
            "RequestType": 5,
            "PhysicalResourceId": 5,
            "RequestId": "r"
        });
        let request = Request::read(&payload).unwrap();
        assert_eq!(request.response_url, "http://127.0.0.1:1/answer");
        assert_eq!(request.request_type, "");
        assert_eq!(request.physical_resource_id, None);
        let refused = Request::read(&serde_json::json!({"RequestType": "Create"}));
        assert!(refused.unwrap_err().to_string().contains("ResponseURL"));
    }

    #[test]
    fn a_short_reason_is_kept_whole() {
        let body = response_body(&request(), "prod/web", "FAILED", Some("no"), &Data::new());
        assert_eq!(body["Reason"], "no");
        assert_eq!(body["PhysicalResourceId"], "prod/web");
    }
}
