//! env-sync's request handling against the emulator: S3 notifications, EventBridge events and
//! the manual payload, from the fixture events in `tests/fixtures/events`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rack_secrets::sync::{AppResult, Outcome};
use rack_secrets::{Kind, Rack};
use serde_json::Value;
use support::{AppSpec, TestRack};

const ENV: &str = "DATABASE_URL=postgres://u:p@h/db\nMODE=one\n";

/// A fixture event with its placeholders (`BUCKET`, `KEY`, `APP`, `RELEASE`) filled in.
fn fixture(name: &str, fill: &[(&str, &str)]) -> Value {
    let path = format!(
        "{}/../tests/fixtures/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (placeholder, value) in fill {
        text = text.replace(&format!("\"{placeholder}\""), &format!("\"{value}\""));
        text = text.replace(&format!(":::{placeholder}\""), &format!(":::{value}\""));
    }
    serde_json::from_str(&text).unwrap()
}

/// env-sync's handler with a deadline far away.
async fn handle(rack: &Arc<Rack>, payload: Value) -> rack_secrets::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    rack_secrets::sync::handle(rack, payload, deadline).await
}

/// The S3 notification fixture for one object.
fn s3_created(bucket: &str, key: &str) -> Value {
    fixture(
        "s3-object-created.json",
        &[("BUCKET", bucket), ("KEY", key)],
    )
}

fn results(response: Value) -> Vec<AppResult> {
    serde_json::from_value(response["results"].clone()).unwrap()
}

#[test]
fn fixture_events_round_trip_through_the_lambda_event_types() {
    let s3 = fixture("s3-object-created.json", &[]);
    let parsed: aws_lambda_events::s3::S3Event = serde_json::from_value(s3).unwrap();
    let again: aws_lambda_events::s3::S3Event =
        serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
    assert_eq!(parsed, again);
    assert_eq!(
        parsed.records[0].event_name.as_deref(),
        Some("ObjectCreated:Put")
    );

    let bridge = fixture("eventbridge-object-created.json", &[]);
    let parsed: aws_lambda_events::eventbridge::EventBridgeEvent =
        serde_json::from_value(bridge).unwrap();
    let again: aws_lambda_events::eventbridge::EventBridgeEvent =
        serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
    assert_eq!(parsed, again);
    assert_eq!(parsed.detail_type, "Object Created");
}

#[tokio::test]
async fn an_s3_notification_stages_the_release_and_its_replay_writes_nothing() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "RABCDEFGHIJ", ENV).await;
    let event = fixture(
        "s3-object-created.json",
        &[("BUCKET", &bucket), ("KEY", "releases/RABCDEFGHIJ/env")],
    );

    let first = results(handle(&t.rack, event.clone()).await.unwrap());
    let writes = t.counter.writes();
    let replay = results(handle(&t.rack, event).await.unwrap());

    assert_eq!(first.len(), 1);
    assert_eq!(first[0].app, "web");
    assert_eq!(first[0].release.as_deref(), Some("RABCDEFGHIJ"));
    assert_eq!(first[0].outcome, Outcome::Staged);
    assert_eq!(first[0].keys, ["DATABASE_URL", "MODE"]);
    assert_eq!(replay[0].outcome, Outcome::Unchanged);
    assert_eq!(replay[0].version_id, first[0].version_id);
    assert_eq!(
        t.counter.writes(),
        writes,
        "the replayed event made write calls"
    );
}

#[tokio::test]
async fn an_eventbridge_object_created_event_stages_the_release() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R2", ENV).await;
    let event = fixture(
        "eventbridge-object-created.json",
        &[("BUCKET", &bucket), ("KEY", "releases/R2/env")],
    );

    let results = results(handle(&t.rack, event).await.unwrap());

    assert_eq!(results[0].outcome, Outcome::Staged);
    let version = results[0].version_id.as_deref().unwrap();
    assert_eq!(t.read_version("web", version).await["MODE"], "one");
}

#[tokio::test]
async fn a_bucket_without_tags_is_found_through_the_rack_app_stacks() {
    let t = TestRack::new(&[]).await;
    let spec = AppSpec {
        tag_bucket: false,
        ..AppSpec::default()
    };
    t.create_app("api", "R1", spec.clone()).await;
    let bucket = t.create_app("web", "R1", spec).await;
    t.write_env(&bucket, "R1", ENV).await;
    let event = s3_created(&bucket, "releases/R1/env");

    let results = results(handle(&t.rack, event).await.unwrap());

    assert_eq!(results[0].app, "web");
    assert_eq!(results[0].outcome, Outcome::Staged);
}

#[tokio::test]
async fn objects_that_are_not_release_env_files_and_removals_are_ignored() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV).await;

    for (name, key) in [
        ("s3-object-created.json", "releases/R1/build.json"),
        ("s3-object-created.json", "builds/B1/env"),
        ("s3-object-removed.json", "releases/R1/env"),
        ("eventbridge-object-created.json", "releases/R1/env.tmp"),
    ] {
        let event = fixture(name, &[("BUCKET", &bucket), ("KEY", key)]);
        assert!(
            results(handle(&t.rack, event).await.unwrap()).is_empty(),
            "{name} {key}"
        );
    }
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn a_bucket_of_another_rack_is_ignored() {
    let other = TestRack::new(&[]).await;
    let bucket = other.create_app("web", "R1", AppSpec::default()).await;
    other.write_env(&bucket, "R1", ENV).await;
    let t = TestRack::new(&[]).await;
    let event = s3_created(&bucket, "releases/R1/env");

    assert!(results(handle(&t.rack, event).await.unwrap()).is_empty());
    assert!(!other.secret_exists("web").await);
}

#[tokio::test]
async fn apps_are_staged_only_when_the_rack_or_app_enables_them() {
    let cases = [
        ("No", "", Outcome::Skipped),
        ("No", "No", Outcome::Skipped),
        ("No", "Yes", Outcome::Staged),
        ("Yes", "", Outcome::Staged),
        ("Yes", "No", Outcome::Staged),
    ];
    for (rack_default, app_setting, expected) in cases {
        let t = TestRack::new(&[("SECRETS_MANAGER_ENV", rack_default)]).await;
        let spec = AppSpec {
            setting: app_setting,
            ..AppSpec::default()
        };
        let bucket = t.create_app("web", "R1", spec).await;
        t.write_env(&bucket, "R1", ENV).await;
        let event = fixture(
            "s3-object-created.json",
            &[("BUCKET", &bucket), ("KEY", "releases/R1/env")],
        );

        let results = results(handle(&t.rack, event).await.unwrap());

        let case = format!("rack {rack_default:?}, app {app_setting:?}");
        assert_eq!(results[0].outcome, expected, "{case}");
        assert_eq!(
            t.secret_exists("web").await,
            expected == Outcome::Staged,
            "{case}"
        );
        if expected == Outcome::Skipped {
            assert!(results[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("SecretsManagerEnv"));
        }
    }
}

#[tokio::test]
async fn an_app_that_is_not_generation_2_is_skipped_with_its_reason() {
    let t = TestRack::new(&[]).await;
    let spec = AppSpec {
        generation: "1",
        ..AppSpec::default()
    };
    let bucket = t.create_app("web", "R1", spec).await;
    t.write_env(&bucket, "R1", ENV).await;
    let event = s3_created(&bucket, "releases/R1/env");

    let results = results(handle(&t.rack, event).await.unwrap());

    assert_eq!(results[0].outcome, Outcome::Skipped);
    assert!(results[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("Generation 2"));
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn records_are_independent_and_a_permanent_failure_is_returned_not_retried() {
    let t = TestRack::new(&[]).await;
    let web = t.create_app("web", "R1", AppSpec::default()).await;
    let api = t.create_app("api", "R1", AppSpec::default()).await;
    t.write_env(&web, "R1", &format!("BIG={}\n", "x".repeat(70_000)))
        .await;
    t.write_env(&api, "R1", ENV).await;
    let mut event = fixture(
        "s3-object-created.json",
        &[("BUCKET", &web), ("KEY", "releases/R1/env")],
    );
    let second = fixture(
        "s3-object-created.json",
        &[("BUCKET", &api), ("KEY", "releases/R1/env")],
    );
    let record = second["Records"][0].clone();
    event["Records"].as_array_mut().unwrap().push(record);

    let results = results(handle(&t.rack, event).await.unwrap());

    assert_eq!(results[0].app, "web");
    assert_eq!(results[0].outcome, Outcome::Failed);
    assert!(results[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("65536 bytes"));
    assert_eq!(results[1].app, "api");
    assert_eq!(results[1].outcome, Outcome::Staged);
}

/// A multi-line value split by Convox's reader can turn part of the value into a "key"; such
/// keys are staged like any other but never shown in a result.
#[tokio::test]
async fn keys_that_are_not_variable_names_are_never_echoed() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    let text = "CERT=-----BEGIN KEY-----\nMIIBOg+IBAAJ/BAKj34GkxFhD9=padding\nPORT=3000\n";
    t.write_env(&bucket, "R1", text).await;
    let event = s3_created(&bucket, "releases/R1/env");

    let response = handle(&t.rack, event).await.unwrap();

    assert_eq!(results(response.clone())[0].keys, ["CERT", "PORT"]);
    assert!(!response.to_string().contains("MIIBOg"), "{response}");
}

#[tokio::test]
async fn the_manual_sync_payload_stages_one_release() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R7", ENV).await;
    let payload = fixture("manual-sync.json", &[("APP", "web"), ("RELEASE", "R7")]);

    let results = results(handle(&t.rack, payload).await.unwrap());

    assert_eq!(results[0].outcome, Outcome::Staged);
    assert_eq!(results[0].release.as_deref(), Some("R7"));
}

#[tokio::test]
async fn a_manual_sync_of_an_unknown_app_or_bad_release_says_what_is_wrong() {
    let t = TestRack::new(&[]).await;

    let missing = handle(
        &t.rack,
        serde_json::json!({"sync": {"app": "nope", "release": "R1"}}),
    );
    let missing = results(missing.await.unwrap());
    assert_eq!(missing[0].outcome, Outcome::Skipped);
    assert!(missing[0]
        .reason
        .as_deref()
        .unwrap()
        .contains(&format!("{}-nope", t.name)));

    let bad = handle(
        &t.rack,
        serde_json::json!({"sync": {"app": "web", "release": "../x"}}),
    );
    let bad = results(bad.await.unwrap());
    assert_eq!(bad[0].outcome, Outcome::Failed);
    assert!(bad[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("not a release id"));
}

#[tokio::test]
async fn an_unknown_payload_is_bad_input_that_names_the_accepted_shapes() {
    let t = TestRack::new(&[]).await;

    let err = handle(&t.rack, serde_json::json!({"synk": {}}))
        .await
        .unwrap_err();

    assert_eq!(err.kind(), Kind::Input);
    assert!(err.to_string().contains("\"sync\""), "{err}");
}
