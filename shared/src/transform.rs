//! stack-inject's macro: reads a CloudFormation macro request, stages what the fragment needs,
//! rewrites it with `inject`, and always answers with the request id.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::inject::{self, EnvSource, Options, SecretRef};
use crate::rack::{Rack, APP_SETTING};
use crate::telemetry::{self, Metric};
use crate::toggle::{self, Toggle};

/// Answers one macro request. A request that cannot be read gets `status: failure` and a
/// message saying why; a task definition that cannot be served stays as it was, and the
/// request still succeeds.
pub async fn handle_macro(rack: &Rack, request: &Value) -> Value {
    let request_id = request.get("requestId").cloned().unwrap_or(Value::Null);
    match transform(rack, request).await {
        Ok(fragment) => json!({
            "requestId": request_id,
            "status": "success",
            "fragment": fragment,
        }),
        Err(err) => {
            tracing::error!(error = %err, "macro request refused");
            json!({
                "requestId": request_id,
                "status": "failure",
                "errorMessage": err.to_string(),
            })
        }
    }
}

async fn transform(rack: &Rack, request: &Value) -> Result<Value> {
    if !request.get("requestId").is_some_and(Value::is_string) {
        return Err(Error::Input(
            "the macro request has no requestId".to_owned(),
        ));
    }
    let mut fragment = match request.get("fragment") {
        Some(fragment @ Value::Object(_)) => fragment.clone(),
        Some(_) => {
            return Err(Error::Input(
                "the macro fragment is not a JSON object".to_owned(),
            ))
        }
        None => return Err(Error::Input("the macro request has no fragment".to_owned())),
    };
    if fragment.get("Resources").is_some_and(|r| !r.is_object()) {
        return Err(Error::Input(
            "the fragment's Resources is not a JSON object".to_owned(),
        ));
    }
    let empty = Map::new();
    let template_params = request
        .get("templateParameterValues")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let params = request
        .get("params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let text_param = |name: &str| params.get(name).and_then(Value::as_str);

    let manifest = Toggle::parse_optional(APP_SETTING, text_param(APP_SETTING))
        .map_err(|err| Error::Input(format!("the transform's parameters: {err}")))?;
    let app_hint = text_param("App");
    let app_setting = template_params.get(APP_SETTING).and_then(Value::as_str);

    let plan = inject::plan(&fragment, template_params, app_hint);
    let mut gate = Gate::new(rack, manifest, app_setting);
    let mut staged = BTreeMap::new();
    for source in plan.sources() {
        let result = match gate.check(&source.app).await {
            Some(reason) => Err(reason),
            None => stage_source(rack, &source).await,
        };
        staged.insert(source, result);
    }

    let app_grant = match app_hint {
        Some(app) if gate.check(app).await.is_none() => match rack.ensure_secret(app).await {
            Ok(arn) => Some(arn),
            Err(err) => {
                // Fall back, never block: the role gets no grant, and the app's task
                // definitions fall back on their own when their staging fails the same way.
                telemetry::count(Metric::InjectFallback, &rack.config.rack, app);
                tracing::warn!(app, error = %err, "the execution role was not granted the secret");
                None
            }
        },
        _ => None,
    };
    let options = Options {
        pin_versions: rack.config.pin_versions,
        kms_key_id: rack.config.kms_key_id.clone(),
    };
    let outcomes = inject::apply(
        &mut fragment,
        &plan,
        &staged,
        &options,
        app_grant.as_deref(),
    );

    for outcome in outcomes {
        let app = outcome.app.as_deref().unwrap_or("");
        match &outcome.fallback {
            None => tracing::info!(
                task_definition = outcome.logical_id,
                app,
                release = outcome.release,
                version_id = outcome.version_id,
                keys = outcome.keys,
                "task definition reads its environment from Secrets Manager"
            ),
            Some(reason) => {
                telemetry::count(Metric::InjectFallback, &rack.config.rack, app);
                tracing::warn!(
                    task_definition = outcome.logical_id,
                    app,
                    release = outcome.release,
                    reason,
                    "task definition left on the S3 path"
                );
            }
        }
    }
    if let Some(arn) = app_grant {
        tracing::info!(
            app = app_hint,
            secret_arn = arn,
            "granted the app's execution role"
        );
    }
    Ok(fragment)
}

/// Stages one source and describes it as task definitions reference it.
async fn stage_source(rack: &Rack, source: &EnvSource) -> Result<SecretRef, String> {
    rack.stage_release(&source.app, &source.bucket, &source.release)
        .await
        .map(|staged| SecretRef {
            arn: staged.secret_arn,
            version_id: staged.version_id,
            keys: staged.keys.into_iter().collect(),
        })
        .map_err(|err| err.to_string())
}

/// Decides, once per app and request, whether the app is served, from the three levels.
struct Gate<'a> {
    rack: &'a Rack,
    manifest: Option<Toggle>,
    app_setting: Option<&'a str>,
    answers: HashMap<String, Option<String>>,
}

impl<'a> Gate<'a> {
    fn new(rack: &'a Rack, manifest: Option<Toggle>, app_setting: Option<&'a str>) -> Self {
        Gate {
            rack,
            manifest,
            app_setting,
            answers: HashMap::new(),
        }
    }

    /// `None` when the app is served; otherwise why not.
    async fn check(&mut self, app: &str) -> Option<String> {
        if let Some(answer) = self.answers.get(app) {
            return answer.clone();
        }
        let answer = self.decide(app).await.err();
        self.answers.insert(app.to_owned(), answer.clone());
        answer
    }

    async fn decide(&self, app: &str) -> Result<(), String> {
        let stack = self.rack.app(app).await.map_err(|err| err.to_string())?;
        let Some(stack) = stack else {
            return Err(format!(
                "no stack {} tagged as an app of rack {}",
                self.rack.config.stack_name(app),
                self.rack.config.rack
            ));
        };
        if !stack.is_generation2() {
            return Err(crate::rack::Skip::NotGeneration2.to_string());
        }
        let app_level = match self.app_setting {
            Some(value) => Toggle::parse_optional(APP_SETTING, Some(value))
                .map_err(|err| format!("app {app}: {err}"))?,
            None => stack.setting().map_err(|err| err.to_string())?,
        };
        if toggle::enabled(self.rack.config.rack_default, app_level, self.manifest) {
            Ok(())
        } else {
            Err("not enabled at the rack, app or convox.yml level".to_owned())
        }
    }
}
