//! app-cleanup: when an app's stack is deleted, schedule the app's secret for deletion, with
//! the configured recovery window, if and only if rack-secrets created it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rack::{app_name_of, Rack};
use crate::stage::ensure_owned;
use crate::telemetry::{self, Metric};

/// What cleanup did, or would do, for one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupOutcome {
    /// Deletion was scheduled (or done at once with a window of 0).
    Deleted,
    /// A dry run: the secret would be deleted.
    WouldDelete,
    /// There was no secret, or it was already scheduled for deletion: nothing to do.
    AlreadyGone,
    /// The secret is not ours; it was left alone.
    Refused,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupResult {
    pub app: String,
    pub secret: String,
    pub outcome: CleanupOutcome,
    pub recovery_window_days: u8,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Manual {
    Cleanup {
        app: String,
        #[serde(default)]
        dry_run: bool,
    },
}

/// The fields of a `CloudFormation Stack Status Change` event the handler uses.
#[derive(Debug, Deserialize)]
struct StackStatusChange {
    #[serde(rename = "stack-id")]
    stack_id: String,
    #[serde(rename = "status-details")]
    status: StatusDetails,
}

#[derive(Debug, Deserialize)]
struct StatusDetails {
    status: String,
}

/// Handles one app-cleanup invocation: a stack status event or the manual `cleanup`.
/// Returns `{"results": [...]}`, empty when the event was not about one of this rack's apps.
pub async fn handle(rack: &Rack, payload: Value) -> Result<Value> {
    let results = if payload.get("detail-type").is_some() {
        match app_of_deleted_stack(rack, payload).await? {
            Some(app) => vec![cleanup(rack, &app, false).await?],
            None => Vec::new(),
        }
    } else {
        let manual: Manual = serde_json::from_value(payload).map_err(|err| {
            Error::Input(format!(
                "unknown payload ({err}); app-cleanup takes CloudFormation Stack Status Change \
                 events and {{\"cleanup\": {{\"app\": ..., \"dry_run\": true}}}}"
            ))
        })?;
        match manual {
            Manual::Cleanup { app, dry_run } => vec![cleanup(rack, &app, dry_run).await?],
        }
    };
    Ok(serde_json::json!({ "results": results }))
}

/// The app whose stack this event reports deleted, when it is one of this rack's apps.
async fn app_of_deleted_stack(rack: &Rack, payload: Value) -> Result<Option<String>> {
    let event: aws_lambda_events::eventbridge::EventBridgeEvent =
        serde_json::from_value(payload)
            .map_err(|err| Error::Input(format!("unreadable EventBridge event: {err}")))?;
    if event.source != "aws.cloudformation"
        || event.detail_type != "CloudFormation Stack Status Change"
    {
        tracing::debug!(
            detail_type = event.detail_type,
            "ignoring an unrelated event"
        );
        return Ok(None);
    }
    let change: StackStatusChange = serde_json::from_value(event.detail)
        .map_err(|err| Error::Input(format!("unreadable stack status detail: {err}")))?;
    if change.status.status != "DELETE_COMPLETE" {
        tracing::debug!(
            stack_id = change.stack_id,
            status = change.status.status,
            "ignoring a stack status other than DELETE_COMPLETE"
        );
        return Ok(None);
    }

    // The event names the stack by id, which still describes a deleted stack.
    let stack = rack
        .services
        .stacks
        .describe(&change.stack_id)
        .await
        .map_err(|err| Error::from_aws(format!("describing stack {}", change.stack_id), err))?;
    let app = stack
        .as_ref()
        .and_then(|s| app_name_of(s, &rack.config.rack));
    if app.is_none() {
        tracing::debug!(
            stack_id = change.stack_id,
            "ignoring a stack that is no app of this rack"
        );
    }
    Ok(app)
}

/// Schedules the app's secret for deletion (replicas first), or says what it would do.
pub async fn cleanup(rack: &Rack, app: &str, dry_run: bool) -> Result<CleanupResult> {
    let name = rack.config.secret_name(app);
    let days = rack.config.recovery_window_days;
    let result = |outcome, reason: Option<String>| CleanupResult {
        app: app.to_owned(),
        secret: name.clone(),
        outcome,
        recovery_window_days: days,
        reason,
    };

    let secrets = &rack.services.secrets;
    let secret = secrets
        .describe(&name)
        .await
        .map_err(|err| Error::from_aws(format!("describing secret {name} of app {app}"), err))?;
    let Some(secret) = secret else {
        tracing::info!(app, secret = name, "no secret to delete");
        return Ok(result(CleanupOutcome::AlreadyGone, None));
    };
    if let Err(err) = ensure_owned(&secret) {
        tracing::warn!(app, secret = name, error = %err, "secret left alone");
        return Ok(result(CleanupOutcome::Refused, Some(err.to_string())));
    }
    if secret.pending_deletion {
        tracing::info!(app, secret = name, "secret already scheduled for deletion");
        return Ok(result(CleanupOutcome::AlreadyGone, None));
    }
    if dry_run {
        return Ok(result(CleanupOutcome::WouldDelete, None));
    }

    if !secret.replica_regions.is_empty() {
        rack.pace.wait().await;
        secrets
            .remove_replicas(&name, &secret.replica_regions)
            .await
            .map_err(|err| Error::from_aws(format!("removing the replicas of {name}"), err))?;
    }
    rack.pace.wait().await;
    if let Err(err) = secrets.delete(&name, days).await {
        // A retried call whose first attempt took effect is refused: the secret is already
        // scheduled for deletion, or gone. Look before calling it a failure.
        let gone = match secrets.describe(&name).await {
            Ok(None) => true,
            Ok(Some(now)) => now.pending_deletion,
            Err(_) => false,
        };
        if !gone {
            return Err(Error::from_aws(
                format!("deleting secret {name} of app {app}"),
                err,
            ));
        }
    }

    telemetry::count(Metric::CleanupDeleted, &rack.config.rack, app);
    tracing::info!(
        app,
        secret = name,
        recovery_window_days = days,
        replicas_removed = secret.replica_regions.len(),
        "secret scheduled for deletion"
    );
    Ok(result(CleanupOutcome::Deleted, None))
}
