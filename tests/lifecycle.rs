//! The secret through an app's life, against the emulator: app-cleanup on stack deletion,
//! env-sync's backfill (under throttling, and resumed from a cursor) and verify.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rack_secrets::backfill::{self, Selection};
use rack_secrets::cleanup::{self, CleanupOutcome, CleanupResult};
use rack_secrets::stage::CURRENT;
use rack_secrets::sync::Outcome;
use rack_secrets::{EnvFile, SecretVersion};
use serde_json::{json, Value};
use support::{AppSpec, TestRack};

const ENV: &str = "DB_USER=app\nDB_PASSWORD=lifecycle-password\n";

fn stack_event(stack_id: &str, status: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/events/stack-status-change.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("STACK_ID", stack_id)
        .replace("STATUS", status);
    serde_json::from_str(&text).unwrap()
}

fn cleanup_results(response: Value) -> Vec<CleanupResult> {
    serde_json::from_value(response["results"].clone()).unwrap()
}

fn never() -> Arc<dyn Fn() -> bool + Send + Sync> {
    Arc::new(|| false)
}

fn version_of(text: &str) -> String {
    let env = EnvFile::parse(text.as_bytes()).unwrap();
    SecretVersion::new("any", &env).unwrap().version_id
}

/// Creates the app with its live release written and staged; returns its stack id.
async fn staged_app(t: &TestRack, app: &str) -> String {
    let bucket = t.create_app(app, "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV).await;
    t.rack.stage_release(app, &bucket, "R1").await.unwrap();
    stack_id(t, app).await
}

async fn stack_id(t: &TestRack, app: &str) -> String {
    let stacks = t
        .cfn
        .describe_stacks()
        .stack_name(format!("{}-{app}", t.name))
        .send()
        .await
        .unwrap();
    stacks.stacks.unwrap()[0].stack_id.clone().unwrap()
}

async fn delete_stack(t: &TestRack, app: &str) {
    let stack = format!("{}-{app}", t.name);
    t.cfn.delete_stack().stack_name(stack).send().await.unwrap();
}

#[tokio::test]
async fn deleting_an_app_schedules_its_secret_for_deletion_and_recreating_it_restores_it() {
    let t = TestRack::new(&[("RECOVERY_WINDOW_DAYS", "7")]).await;
    let stack_id = staged_app(&t, "web").await;
    delete_stack(&t, "web").await;

    let response = cleanup::handle(&t.rack, stack_event(&stack_id, "DELETE_COMPLETE")).await;

    let results = cleanup_results(response.unwrap());
    assert_eq!(results[0].outcome, CleanupOutcome::Deleted);
    assert_eq!(results[0].recovery_window_days, 7);
    let deleted = t.deletion_date("web").await;
    let deletion = deleted.expect("scheduled for deletion");
    let days = (deletion.secs()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64) as f64
        / 86_400.0;
    assert!((6.9..7.1).contains(&days), "deletion in {days} days");

    // The app comes back within the window: its next env write restores the secret.
    let bucket = t.create_app("web", "R2", AppSpec::default()).await;
    t.write_env(&bucket, "R2", "DB_USER=app\nDB_PASSWORD=second-life\n")
        .await;
    let staged = t.rack.stage_release("web", &bucket, "R2").await.unwrap();
    let deleted = t.deletion_date("web").await;
    assert!(deleted.is_none(), "the secret was not restored");
    assert_eq!(
        t.read_version("web", &staged.version_id).await["DB_PASSWORD"],
        "second-life"
    );
}

#[tokio::test]
async fn a_recovery_window_of_zero_deletes_at_once() {
    let t = TestRack::new(&[("RECOVERY_WINDOW_DAYS", "0")]).await;
    let stack_id = staged_app(&t, "web").await;
    delete_stack(&t, "web").await;

    let response = cleanup::handle(&t.rack, stack_event(&stack_id, "DELETE_COMPLETE")).await;

    assert_eq!(
        cleanup_results(response.unwrap())[0].outcome,
        CleanupOutcome::Deleted
    );
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn other_statuses_and_stacks_that_are_not_this_racks_apps_are_ignored() {
    let t = TestRack::new(&[]).await;
    let stack_id = staged_app(&t, "web").await;
    let other = TestRack::new(&[]).await;
    let other_id = staged_app(&other, "web").await;
    delete_stack(&other, "web").await;
    let writes = t.counter.writes();

    let updated = cleanup::handle(&t.rack, stack_event(&stack_id, "UPDATE_COMPLETE")).await;
    let foreign = cleanup::handle(&t.rack, stack_event(&other_id, "DELETE_COMPLETE")).await;

    assert!(cleanup_results(updated.unwrap()).is_empty());
    assert!(cleanup_results(foreign.unwrap()).is_empty());
    assert_eq!(t.counter.writes(), writes);
    for rack in [&t, &other] {
        let deleted = rack.deletion_date("web").await;
        assert!(deleted.is_none());
    }
}

#[tokio::test]
async fn a_secret_rack_secrets_did_not_create_is_never_deleted() {
    let t = TestRack::new(&[]).await;
    t.secrets
        .create_secret()
        .name(t.secret_name("web"))
        .secret_string("{}")
        .send()
        .await
        .unwrap();

    let result = cleanup::cleanup(&t.rack, "web", false).await.unwrap();

    assert_eq!(result.outcome, CleanupOutcome::Refused);
    assert!(result.reason.unwrap().contains("ManagedBy=rack-secrets"));
    let deleted = t.deletion_date("web").await;
    assert!(deleted.is_none());
}

#[tokio::test]
async fn cleanup_of_a_secret_that_never_existed_succeeds() {
    let t = TestRack::new(&[]).await;

    let response = cleanup::handle(&t.rack, json!({"cleanup": {"app": "ghost"}})).await;

    let results = cleanup_results(response.unwrap());
    assert_eq!(results[0].outcome, CleanupOutcome::AlreadyGone);
    assert_eq!(t.counter.writes(), 0);
}

#[tokio::test]
async fn a_cleanup_dry_run_says_what_it_would_delete_and_deletes_nothing() {
    let t = TestRack::new(&[]).await;
    staged_app(&t, "web").await;
    let writes = t.counter.writes();

    let response = cleanup::handle(&t.rack, json!({"cleanup": {"app": "web", "dry_run": true}}));

    assert_eq!(
        cleanup_results(response.await.unwrap())[0].outcome,
        CleanupOutcome::WouldDelete
    );
    assert_eq!(t.counter.writes(), writes);
    let again = cleanup::cleanup(&t.rack, "web", false).await.unwrap();
    assert_eq!(
        again.outcome,
        CleanupOutcome::Deleted,
        "the dry run deleted it"
    );
}

/// `count` apps of this rack, each with its live release's env file written, not staged.
async fn rack_of_apps(t: &TestRack, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("app{i:03}");
        let bucket = t.create_app(&name, "RLIVE", AppSpec::default()).await;
        t.write_env(&bucket, "RLIVE", &format!("{ENV}INDEX={i}\n"))
            .await;
        names.push(name);
    }
    names
}

#[tokio::test]
async fn a_throttled_backfill_of_sixty_apps_ends_with_every_app_staged_and_live() {
    let t = TestRack::new(&[("BACKFILL_CONCURRENCY", "8"), ("WRITE_RATE_LIMIT", "50")]).await;
    let apps = rack_of_apps(&t, 60).await;
    t.counter.throttle_every(4);

    let report = backfill::backfill(t.rack.clone(), Selection::default(), never())
        .await
        .unwrap();

    assert!(
        t.counter.throttled() > 10,
        "the test layer throttled too little"
    );
    assert_eq!(report.cursor, None);
    assert_eq!(report.results.len(), 60);
    assert_eq!(
        report.counts.get(&Outcome::Staged),
        Some(&60),
        "{:?}",
        report.counts
    );
    for (i, app) in apps.iter().enumerate() {
        let expected = version_of(&format!("{ENV}INDEX={i}\n"));
        assert_eq!(
            t.version_with(app, CURRENT).await.as_deref(),
            Some(&*expected),
            "{app}"
        );
    }
}

#[tokio::test]
async fn a_backfill_stopped_by_the_deadline_resumes_from_its_cursor() {
    let t = TestRack::new(&[("BACKFILL_CONCURRENCY", "2")]).await;
    let apps = rack_of_apps(&t, 7).await;
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    // The deadline "nears" once four apps have been started.
    let stop = Arc::new(move || counter.fetch_add(1, Ordering::SeqCst) >= 8);

    let first = backfill::backfill(t.rack.clone(), Selection::default(), stop)
        .await
        .unwrap();
    let cursor = first.cursor.clone().expect("a cursor");
    let second = backfill::backfill(
        t.rack.clone(),
        Selection {
            cursor: Some(cursor.clone()),
            ..Selection::default()
        },
        never(),
    )
    .await
    .unwrap();

    assert_eq!(first.results.len(), 4);
    assert_eq!(cursor, apps[4]);
    assert_eq!(second.cursor, None);
    let mut done: Vec<String> = first
        .results
        .iter()
        .chain(&second.results)
        .map(|r| r.app.clone())
        .collect();
    done.sort();
    assert_eq!(done, apps, "each app exactly once");
    assert!(second.results.iter().all(|r| r.outcome == Outcome::Staged));
}

#[tokio::test]
async fn a_backfill_dry_run_reports_and_writes_nothing() {
    let t = TestRack::new(&[]).await;
    let apps = rack_of_apps(&t, 3).await;
    let selection = Selection {
        apps: Some(vec![apps[0].clone(), apps[2].clone(), "ghost".into()]),
        dry_run: true,
        ..Selection::default()
    };

    let report = backfill::backfill(t.rack.clone(), selection, never())
        .await
        .unwrap();

    let outcomes: Vec<(&str, Outcome)> = report
        .results
        .iter()
        .map(|r| (r.app.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("app000", Outcome::WouldStage),
            ("app002", Outcome::WouldStage),
            ("ghost", Outcome::Skipped)
        ]
    );
    assert_eq!(t.counter.writes(), 0);
    assert!(!t.secret_exists("app000").await);
}

#[tokio::test]
async fn verify_reports_in_sync_missing_disabled_and_the_names_of_drifted_keys() {
    let t = TestRack::new(&[]).await;
    let apps = rack_of_apps(&t, 2).await;
    let disabled = AppSpec {
        setting: "No",
        ..AppSpec::default()
    };
    t.create_app("off", "RLIVE", disabled).await;
    let only_first = Selection {
        apps: Some(vec![apps[0].clone()]),
        ..Selection::default()
    };
    backfill::backfill(t.rack.clone(), only_first, never())
        .await
        .unwrap();
    let before = backfill::verify(t.rack.clone(), Selection::default(), never())
        .await
        .unwrap();

    // Someone changes the live secret by hand.
    let name = t.secret_name(&apps[0]);
    let current = t.version_with(&apps[0], CURRENT).await.unwrap();
    t.secrets
        .put_secret_value()
        .secret_id(&name)
        .secret_string(r#"{"DB_USER":"root","INDEX":"0","EXTRA":"1"}"#)
        .version_stages(CURRENT)
        .send()
        .await
        .unwrap();
    let after = backfill::verify(t.rack.clone(), Selection::default(), never())
        .await
        .unwrap();

    let outcome = |report: &backfill::Report, app: &str| {
        report
            .results
            .iter()
            .find(|r| r.app == app)
            .unwrap()
            .outcome
    };
    assert_eq!(outcome(&before, &apps[0]), Outcome::InSync);
    assert_eq!(outcome(&before, &apps[1]), Outcome::Missing);
    assert_eq!(outcome(&before, "off"), Outcome::Disabled);
    assert_ne!(t.version_with(&apps[0], CURRENT).await.unwrap(), current);
    let drifted = after.results.iter().find(|r| r.app == apps[0]).unwrap();
    assert_eq!(drifted.outcome, Outcome::Drift);
    let drift = drifted.drift.as_ref().unwrap();
    assert_eq!(drift.added, ["DB_PASSWORD"]);
    assert_eq!(drift.removed, ["EXTRA"]);
    assert_eq!(drift.changed, ["DB_USER"]);
    let shown = serde_json::to_string(&after).unwrap();
    assert!(
        !shown.contains("root") && !shown.contains("lifecycle-password"),
        "{shown}"
    );
}

/// A secret of ours whose live value is not JSON (quotes around it, written by hand): verify
/// says so clearly, names no value, and nothing panics.
#[tokio::test]
async fn verify_of_a_secret_that_is_not_json_fails_with_a_clear_reason() {
    let t = TestRack::new(&[]).await;
    let apps = rack_of_apps(&t, 1).await;
    backfill::backfill(t.rack.clone(), Selection::default(), never())
        .await
        .unwrap();
    t.secrets
        .put_secret_value()
        .secret_id(t.secret_name(&apps[0]))
        .secret_string(r#"'{"DB_USER":"quoted-by-hand"}'"#)
        .version_stages(CURRENT)
        .send()
        .await
        .unwrap();

    let report = backfill::verify(t.rack.clone(), Selection::default(), never())
        .await
        .unwrap();

    let result = &report.results[0];
    assert_eq!(result.outcome, Outcome::Failed);
    let reason = result.reason.as_deref().unwrap();
    assert!(reason.contains("does not hold a JSON object"), "{reason}");
    assert!(!reason.contains("quoted-by-hand"), "{reason}");
}
