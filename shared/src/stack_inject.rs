//! stack-inject's entry: tells a macro request, a custom resource request and the manual
//! `render` payload apart and hands each to its handler.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::custom_resource;
use crate::envfile::is_variable_name;
use crate::error::{Error, Result};
use crate::inject::{Allowed, CONVOX_ENV_VARIABLES};
use crate::rack::{Rack, APP_SETTING};
use crate::release::is_release_id;
use crate::toggle::{self, Toggle};
use crate::transform;

/// The manual payloads stack-inject takes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Manual {
    Render(RenderRequest),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderRequest {
    app: String,
    release: String,
    #[serde(default = "all_keys")]
    allowed: String,
    #[serde(rename = "SecretsManagerEnv", default)]
    setting: Option<String>,
}

fn all_keys() -> String {
    "*".to_owned()
}

/// Handles one stack-inject invocation. `deadline` is the Lambda deadline, before which a
/// custom resource request is always answered.
pub async fn handle(rack: Arc<Rack>, payload: Value, deadline: Instant) -> Result<Value> {
    if payload.get("RequestType").is_some() || payload.get("ResponseURL").is_some() {
        return custom_resource::handle(rack, payload, deadline).await;
    }
    let looks_like_macro = ["fragment", "requestId", "transformId"]
        .iter()
        .any(|field| payload.get(field).is_some());
    if looks_like_macro {
        return Ok(transform::handle_macro(&rack, &payload).await);
    }

    let manual: Manual = serde_json::from_value(payload).map_err(|err| {
        Error::Input(format!(
            "unknown payload ({err}); stack-inject takes CloudFormation macro and custom \
             resource requests and {{\"render\": {{\"app\": ..., \"release\": ..., \
             \"allowed\": \"A,B\"}}}}"
        ))
    })?;
    match manual {
        Manual::Render(request) => render(&rack, request).await,
    }
}

/// The `secrets` entries and the variable names to drop for a one-off task definition, or a
/// `fallback` with its reason when the S3 path must stay.
async fn render(rack: &Rack, request: RenderRequest) -> Result<Value> {
    let app = request.app.as_str();
    if !is_release_id(&request.release) {
        return Err(Error::Input(format!(
            "release {:?} of app {app} is not a release id",
            request.release
        )));
    }
    let manifest = Toggle::parse_optional(APP_SETTING, request.setting.as_deref())?;
    let fallback = |reason: String| {
        tracing::warn!(
            app,
            release = request.release,
            reason,
            "render: stays on the S3 path"
        );
        Ok(json!({"app": app, "release": request.release, "fallback": reason}))
    };

    let Some(stack) = rack.app(app).await? else {
        return fallback(format!(
            "no stack {} of this rack",
            rack.config.stack_name(app)
        ));
    };
    if !stack.is_generation2() {
        return fallback(crate::rack::Skip::NotGeneration2.to_string());
    }
    if !toggle::enabled(rack.config.rack_default, stack.setting()?, manifest) {
        return fallback("not enabled at the rack, app or convox.yml level".to_owned());
    }
    let Some(bucket) = rack.settings_bucket(app).await? else {
        return fallback(format!("app {app} has no Settings bucket"));
    };
    let staged = match rack.stage_release(app, &bucket, &request.release).await {
        Ok(staged) => staged,
        Err(err) => return fallback(err.to_string()),
    };

    let secret = crate::inject::SecretRef {
        arn: staged.secret_arn,
        version_id: staged.version_id,
        keys: staged.keys.into_iter().collect(),
    };
    let entries = secret.entries(&Allowed::parse(&request.allowed), rack.config.pin_versions);
    let unnamed = entries
        .iter()
        .filter(|(key, _)| !is_variable_name(key))
        .count();
    if unnamed > 0 {
        return fallback(format!(
            "{unnamed} of the keys are not variable names a secret reference can carry"
        ));
    }
    let secrets: Vec<Value> = entries
        .iter()
        .map(|(name, value_from)| json!({"name": name, "valueFrom": value_from}))
        .collect();
    let mut drop: Vec<&str> = CONVOX_ENV_VARIABLES.to_vec();
    drop.extend(entries.iter().map(|(name, _)| name.as_str()));
    Ok(json!({
        "app": app,
        "release": request.release,
        "version_id": secret.version_id,
        "secrets": secrets,
        "drop": drop,
    }))
}
