//! The functions under faults: a proxy in front of the emulator answers a share of calls with
//! throttling, 500s, hangs, dropped connections and answers lost after the call took effect.
//! Each function must finish correctly after retries, or fail in a way Lambda retries; it
//! never writes a wrong secret, loses an event, or leaves a stack waiting.

mod support;

use std::time::Duration;

use rack_secrets::backfill::{self, Selection};
use rack_secrets::cleanup::{self, CleanupOutcome};
use rack_secrets::stage::CURRENT;
use rack_secrets::sync::{AppResult, Outcome};
use rack_secrets::{stack_inject, EnvFile, Kind, SecretVersion};
use serde_json::{json, Value};
use support::{AppSpec, FaultProxy, TestRack};
use tokio::time::Instant;

const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often an event is handed again, as Lambda's async retries and a redrive would.
const DELIVERIES: usize = 8;

fn proxy() -> FaultProxy {
    FaultProxy::start(&[
        "--every",
        "3",
        "--faults",
        "throttle,500,late,drop,timeout",
        "--hang-seconds",
        "3",
    ])
}

/// The test means something only if faults of several kinds were injected.
fn assert_faults_hit(proxy: &FaultProxy) {
    let faults = proxy.faults();
    let kinds: std::collections::BTreeSet<&str> = faults.iter().map(String::as_str).collect();
    assert!(
        kinds.len() >= 3,
        "too few kinds of fault injected: {faults:?}"
    );
}

fn env_of(i: usize) -> String {
    format!("DB_USER=app{i}\nDB_PASSWORD=fault-password-{i}\nMODE=faults\n")
}

fn version_of(text: &str) -> String {
    SecretVersion::new("any", &EnvFile::parse(text.as_bytes()).unwrap())
        .unwrap()
        .version_id
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

fn s3_event(bucket: &str, key: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-30T10:15:02.331Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "p"}, "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": {"key": key}}
    }]})
}

#[tokio::test]
async fn events_under_faults_end_staged_exactly_once_with_the_right_values() {
    let t = TestRack::new(&[]).await;
    let mut buckets = Vec::new();
    for i in 0..4 {
        let bucket = t
            .create_app(&format!("app{i}"), "R1", AppSpec::default())
            .await;
        t.write_env(&bucket, "R1", &env_of(i)).await;
        buckets.push(bucket);
    }
    let proxy = proxy();
    let rack = t.rack_through(&proxy, ATTEMPT_TIMEOUT).await;

    for (i, bucket) in buckets.iter().enumerate() {
        let event = s3_event(bucket, "releases/R1/env");
        let mut delivered = false;
        for _ in 0..DELIVERIES {
            match rack_secrets::sync::handle(&rack, event.clone(), far()).await {
                Ok(response) => {
                    let results: Vec<AppResult> =
                        serde_json::from_value(response["results"].clone()).unwrap();
                    let outcome = results[0].outcome;
                    assert!(
                        matches!(outcome, Outcome::Staged | Outcome::Unchanged),
                        "app{i}: a fault surfaced as {outcome:?}: {:?}",
                        results[0].reason
                    );
                    delivered = true;
                    break;
                }
                Err(err) => assert_eq!(err.kind(), Kind::Transient, "app{i}: {err}"),
            }
        }
        assert!(
            delivered,
            "app{i}: still failing after {DELIVERIES} deliveries"
        );
    }

    for i in 0..4 {
        let app = format!("app{i}");
        assert_eq!(
            t.all_versions(&app).await,
            [version_of(&env_of(i))],
            "{app}"
        );
        let value = t.read_version(&app, &version_of(&env_of(i))).await;
        assert_eq!(value["DB_PASSWORD"], format!("fault-password-{i}"));
    }
}

#[tokio::test]
async fn the_macro_under_faults_rewrites_a_task_definition_whole_or_not_at_all() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", &env_of(1)).await;
    let proxy = proxy();
    let rack = t.rack_through(&proxy, ATTEMPT_TIMEOUT).await;
    let path = format!(
        "{}/../tests/fixtures/templates/service.request.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut request: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    request["templateParameterValues"]["Rack"] = json!(t.name);
    request["templateParameterValues"]["Settings"] = json!(bucket);
    request["templateParameterValues"]["Release"] = json!("R1");

    for _ in 0..5 {
        let response = stack_inject::handle(rack.clone(), request.clone(), far())
            .await
            .unwrap();
        assert_eq!(response["status"], "success");
        let fragment = &response["fragment"];
        if *fragment == request["fragment"] {
            continue; // Left on the S3 path: allowed, never half-done.
        }
        let container =
            &fragment["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0];
        let secrets = container["Secrets"].as_array().unwrap();
        assert_eq!(secrets.len(), 2, "{container}");
        assert!(container["Environment"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["Name"].as_str().unwrap().starts_with("CONVOX_ENV_")));
        let version = secrets[0]["ValueFrom"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap();
        assert_eq!(version, version_of(&env_of(1)));
        assert_eq!(
            t.read_version("web", version).await["DB_PASSWORD"],
            "fault-password-1"
        );
    }
}

#[tokio::test]
async fn every_custom_resource_request_under_faults_is_answered() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", &env_of(1)).await;
    let answers = support::unique("answers-");
    t.s3.create_bucket().bucket(&answers).send().await.unwrap();
    let proxy = proxy();
    let rack = t.rack_through(&proxy, ATTEMPT_TIMEOUT).await;

    for round in 0..4 {
        let key = format!("answer{round}");
        let presigned =
            t.s3.put_object()
                .bucket(&answers)
                .key(&key)
                .presigned(
                    aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600))
                        .unwrap(),
                )
                .await
                .unwrap();
        // The answer travels through the faulty proxy too.
        let url = presigned.uri().replace(
            std::env::var("AWS_ENDPOINT_URL").unwrap().as_str(),
            &proxy.url,
        );
        let request = json!({
            "RequestType": if round == 0 { "Create" } else { "Update" },
            "ResponseURL": url, "StackId": "stack", "RequestId": format!("r{round}"),
            "LogicalResourceId": "RackSecrets", "PhysicalResourceId": t.secret_name("web"),
            "ResourceProperties": {"App": "web", "Release": "R1"}
        });
        let deadline = Instant::now() + Duration::from_secs(60);

        let sent = stack_inject::handle(rack.clone(), request, deadline).await;

        assert!(sent.is_ok(), "round {round}: no answer delivered: {sent:?}");
        let object =
            t.s3.get_object()
                .bucket(&answers)
                .key(&key)
                .send()
                .await
                .unwrap();
        let answer: Value =
            serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap();
        assert_eq!(answer["RequestId"], format!("r{round}"));
        if answer["Status"] == "SUCCESS" {
            let current = t.version_with("web", CURRENT).await;
            assert_eq!(current.as_deref(), Some(&*version_of(&env_of(1))));
        } else {
            assert!(!answer["Reason"]
                .as_str()
                .unwrap()
                .contains("fault-password"));
        }
    }
}

#[tokio::test]
async fn cleanup_under_faults_ends_with_the_secret_scheduled_for_deletion() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", &env_of(1)).await;
    t.rack.stage_release("web", &bucket, "R1").await.unwrap();
    let proxy = proxy();
    let rack = t.rack_through(&proxy, ATTEMPT_TIMEOUT).await;

    let mut outcome = None;
    for _ in 0..DELIVERIES {
        match cleanup::cleanup(&rack, "web", false).await {
            Ok(result) => {
                outcome = Some(result.outcome);
                break;
            }
            Err(err) => assert_eq!(err.kind(), Kind::Transient, "{err}"),
        }
    }

    assert!(
        matches!(
            outcome,
            Some(CleanupOutcome::Deleted | CleanupOutcome::AlreadyGone)
        ),
        "{outcome:?}"
    );
    let deleted = t.deletion_date("web").await;
    assert!(deleted.is_some());
}

#[tokio::test]
async fn a_backfill_under_faults_stages_and_promotes_every_app() {
    let t = TestRack::new(&[("BACKFILL_CONCURRENCY", "4"), ("WRITE_RATE_LIMIT", "50")]).await;
    for i in 0..8 {
        let bucket = t
            .create_app(&format!("app{i}"), "RLIVE", AppSpec::default())
            .await;
        t.write_env(&bucket, "RLIVE", &env_of(i)).await;
    }
    let proxy = proxy();
    let rack = t.rack_through(&proxy, ATTEMPT_TIMEOUT).await;

    let mut pending: Option<Vec<String>> = None;
    for _ in 0..DELIVERIES {
        let selection = Selection {
            apps: pending.clone(),
            ..Selection::default()
        };
        let Ok(report) =
            backfill::backfill(rack.clone(), selection, std::sync::Arc::new(|| false)).await
        else {
            continue; // Listing the rack's stacks failed: the operator runs it again.
        };
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .map(|r| r.app.clone())
            .collect();
        if failed.is_empty() {
            pending = Some(Vec::new());
            break;
        }
        pending = Some(failed);
    }

    assert_eq!(pending, Some(Vec::new()), "apps still failing");
    assert_faults_hit(&proxy);
    for i in 0..8 {
        let app = format!("app{i}");
        assert_eq!(
            t.version_with(&app, CURRENT).await,
            Some(version_of(&env_of(i))),
            "{app}"
        );
    }
}
