//! env-sync's `backfill` and `verify`: every app of the rack (or the ones named), a bounded
//! number at a time, each app's failure its own, stopping in time to hand back a cursor.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::backend::VersionRef;
use crate::envfile::{EnvFile, SecretVersion};
use crate::error::{Error, Result};
use crate::rack::{App, Rack, Skip};
use crate::retry;
use crate::stage::CURRENT;
use crate::sync::{AppResult, Outcome};
use crate::telemetry::{self, Metric};

/// Which apps a backfill or verify covers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only these apps; all of the rack's when absent.
    pub apps: Option<Vec<String>>,
    /// Resume after an earlier run that stopped: start at this app name.
    pub cursor: Option<String>,
    /// Report what would change and write nothing (backfill only).
    #[serde(default)]
    pub dry_run: bool,
}

/// Key names that differ between the live release's environment and `AWSCURRENT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// In the release's environment, not in the secret.
    pub added: Vec<String>,
    /// In the secret, not in the release's environment.
    pub removed: Vec<String>,
    /// In both, with different values.
    pub changed: Vec<String>,
    /// Differing keys that are not variable names, counted and never shown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_keys: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

impl Drift {
    pub fn between(release: &EnvFile, current: &EnvFile) -> Drift {
        let release_keys: BTreeSet<&str> = release.keys().collect();
        let current_keys: BTreeSet<&str> = current.keys().collect();
        let added: Vec<&str> = release_keys.difference(&current_keys).copied().collect();
        let removed: Vec<&str> = current_keys.difference(&release_keys).copied().collect();
        let changed: Vec<&str> = release_keys
            .intersection(&current_keys)
            .filter(|key| release.get(key) != current.get(key))
            .copied()
            .collect();
        let all = added.len() + removed.len() + changed.len();
        let drift = Drift {
            added: crate::sync::shown_keys(added),
            removed: crate::sync::shown_keys(removed),
            changed: crate::sync::shown_keys(changed),
            other_keys: 0,
        };
        Drift {
            other_keys: all - drift.added.len() - drift.removed.len() - drift.changed.len(),
            ..drift
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.other_keys == 0
    }
}

/// A run over many apps: one result each, counts by outcome, and where to resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub results: Vec<AppResult>,
    pub counts: BTreeMap<Outcome, usize>,
    /// The app to resume from with a second invocation; `None` when all were done.
    pub cursor: Option<String>,
}

/// Stages each app's live release, moves `AWSCURRENT` to it and switches on EventBridge
/// delivery for its bucket. `stop` says when to start no new app (the deadline is near).
pub async fn backfill(
    rack: Arc<Rack>,
    selection: Selection,
    stop: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<Report> {
    let dry_run = selection.dry_run;
    for_each_app(rack, selection, stop, move |rack, app| async move {
        backfill_app(&rack, &app, dry_run).await
    })
    .await
}

/// Compares each app's live release with what `AWSCURRENT` holds, by key name.
pub async fn verify(
    rack: Arc<Rack>,
    selection: Selection,
    stop: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<Report> {
    for_each_app(rack, selection, stop, |rack, app| async move {
        verify_app(&rack, &app).await
    })
    .await
}

/// Runs `work` for the selected apps in name order, `BACKFILL_CONCURRENCY` at a time.
async fn for_each_app<F, Fut>(
    rack: Arc<Rack>,
    selection: Selection,
    stop: Arc<dyn Fn() -> bool + Send + Sync>,
    work: F,
) -> Result<Report>
where
    F: Fn(Arc<Rack>, App) -> Fut,
    Fut: Future<Output = AppResult> + Send + 'static,
{
    let mut apps = rack.apps().await?;
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    let mut results = Vec::new();
    if let Some(wanted) = &selection.apps {
        let found: BTreeSet<&str> = apps.iter().map(|app| app.name.as_str()).collect();
        for missing in wanted.iter().filter(|name| !found.contains(name.as_str())) {
            let reason = format!("no stack {} of this rack", rack.config.stack_name(missing));
            results.push(skipped(missing, None, reason));
        }
        apps.retain(|app| wanted.contains(&app.name));
    }
    if let Some(cursor) = &selection.cursor {
        apps.retain(|app| app.name.as_str() >= cursor.as_str());
    }

    let permits = Arc::new(Semaphore::new(rack.config.backfill_concurrency));
    let mut running = JoinSet::new();
    let mut cursor = None;
    for app in apps {
        if stop() {
            cursor = Some(app.name);
            break;
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        if stop() {
            cursor = Some(app.name);
            break;
        }
        let task = work(rack.clone(), app);
        running.spawn(async move {
            let result = task.await;
            drop(permit);
            result
        });
    }
    while let Some(done) = running.join_next().await {
        results.push(done.map_err(|err| Error::Permanent(format!("an app's task failed: {err}")))?);
    }

    results.sort_by(|a, b| a.app.cmp(&b.app));
    let mut counts = BTreeMap::new();
    for result in &results {
        *counts.entry(result.outcome).or_insert(0) += 1;
    }
    if let Some(cursor) = &cursor {
        tracing::warn!(
            cursor,
            done = results.len(),
            "stopping before the deadline; resume from the cursor"
        );
    }
    Ok(Report {
        results,
        counts,
        cursor,
    })
}

fn skipped(app: &str, release: Option<&str>, reason: String) -> AppResult {
    AppResult::skipped(app, release, reason)
}

fn failed(rack: &Rack, app: &str, release: Option<&str>, err: &Error) -> AppResult {
    telemetry::count(Metric::SyncFailed, &rack.config.rack, app);
    tracing::warn!(app, release, error = %err, "backfill of the app failed");
    AppResult {
        outcome: Outcome::Failed,
        transient: err.is_transient(),
        ..skipped(app, release, err.to_string())
    }
}

/// Why an app is not served at the rack or app level, or its live release and bucket.
async fn live_release(
    rack: &Rack,
    app: &App,
) -> Result<std::result::Result<(String, String), String>> {
    if let Some(skip) = rack.check_enabled(app, None)? {
        return Ok(Err(skip.to_string()));
    }
    let Some(release) = app.live_release() else {
        return Ok(Err(
            "the app has no live release (stack output Release)".to_owned()
        ));
    };
    let Some(bucket) = rack.settings_bucket(&app.name).await? else {
        return Ok(Err("the app's stack has no Settings bucket".to_owned()));
    };
    Ok(Ok((release.to_owned(), bucket)))
}

async fn backfill_app(rack: &Rack, app: &App, dry_run: bool) -> AppResult {
    let name = app.name.as_str();
    let (release, bucket) = match live_release(rack, app).await {
        Ok(Ok(found)) => found,
        Ok(Err(reason)) => return skipped(name, None, reason),
        Err(err) => return failed(rack, name, None, &err),
    };

    let attempt = || async {
        let env = rack.release_env(name, &bucket, &release).await?;
        if dry_run {
            let (version_id, changes) = rack.would_change(name, &env).await?;
            let outcome = if changes {
                Outcome::WouldStage
            } else {
                Outcome::Unchanged
            };
            return Ok((outcome, version_id, env));
        }
        let staged = rack.stage(name, &env).await?;
        let moved = rack.promote(name, &staged.version_id).await?;
        let switched_on = rack
            .services
            .objects
            .enable_eventbridge(&bucket)
            .await
            .map_err(|err| {
                Error::from_aws(format!("switching on EventBridge for {bucket}"), err)
            })?;
        if switched_on {
            tracing::info!(app = name, bucket, "switched on EventBridge delivery");
        }
        let outcome = if staged.written || moved {
            Outcome::Staged
        } else {
            Outcome::Unchanged
        };
        Ok((outcome, staged.version_id, env))
    };

    match retry::with_backoff(attempt).await {
        Ok((outcome, version_id, env)) => {
            if !dry_run {
                let metric = match outcome {
                    Outcome::Staged => Metric::SyncSucceeded,
                    _ => Metric::SyncUnchanged,
                };
                telemetry::count(metric, &rack.config.rack, name);
            }
            tracing::info!(
                app = name,
                release,
                version_id,
                outcome = ?outcome,
                dry_run,
                "backfilled"
            );
            AppResult {
                app: name.to_owned(),
                release: Some(release),
                outcome,
                version_id: Some(version_id),
                keys: crate::sync::shown_keys(env.keys()),
                reason: None,
                drift: None,
                transient: false,
            }
        }
        Err(err) => failed(rack, name, Some(&release), &err),
    }
}

async fn verify_app(rack: &Rack, app: &App) -> AppResult {
    let name = app.name.as_str();
    let (release, bucket) = match live_release(rack, app).await {
        Ok(Ok(found)) => found,
        Ok(Err(reason)) => {
            let outcome = if reason == Skip::Disabled.to_string()
                || reason == Skip::NotGeneration2.to_string()
            {
                Outcome::Disabled
            } else {
                Outcome::Skipped
            };
            return AppResult {
                outcome,
                ..skipped(name, None, reason)
            };
        }
        Err(err) => return failed(rack, name, None, &err),
    };

    let compare = || async {
        let env = rack.release_env(name, &bucket, &release).await?;
        let current = rack.read_secret(name, VersionRef::Label(CURRENT)).await?;
        Ok((env, current))
    };
    let (env, current) = match retry::with_backoff(compare).await {
        Ok(found) => found,
        Err(err) => return failed(rack, name, Some(&release), &err),
    };
    let version_id = SecretVersion::new(name, &env).ok().map(|v| v.version_id);
    let base = AppResult {
        version_id,
        ..skipped(name, Some(&release), String::new())
    };
    let Some(current) = current else {
        let reason = format!(
            "secret {} has no AWSCURRENT version",
            rack.config.secret_name(name)
        );
        return AppResult {
            outcome: Outcome::Missing,
            reason: Some(reason),
            ..base
        };
    };

    let drift = Drift::between(&env, &current);
    if drift.is_empty() {
        AppResult {
            outcome: Outcome::InSync,
            reason: None,
            ..base
        }
    } else {
        tracing::warn!(
            app = name,
            release,
            added = ?drift.added,
            removed = ?drift.removed,
            changed = ?drift.changed,
            "AWSCURRENT differs from the live release's environment"
        );
        AppResult {
            outcome: Outcome::Drift,
            reason: None,
            drift: Some(drift),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_keys_added_removed_and_changed() {
        let release = EnvFile::from_pairs([("A", "1"), ("B", "2"), ("C", "new")]);
        let current = EnvFile::from_pairs([("B", "2"), ("C", "old"), ("D", "4")]);
        let drift = Drift::between(&release, &current);
        assert_eq!(drift.added, ["A"]);
        assert_eq!(drift.removed, ["D"]);
        assert_eq!(drift.changed, ["C"]);
        assert!(Drift::between(&release, &release).is_empty());
    }

    #[test]
    fn keys_that_are_not_names_count_as_drift_without_being_shown() {
        let release = EnvFile::from_pairs([("A", "1"), ("MIIBOg+x/y", "z")]);
        let current = EnvFile::from_pairs([("A", "1")]);
        let drift = Drift::between(&release, &current);
        assert!(drift.added.is_empty());
        assert_eq!(drift.other_keys, 1);
        assert!(!drift.is_empty());
    }
}
