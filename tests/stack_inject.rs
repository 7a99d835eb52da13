//! stack-inject against the emulator: macro requests that stage on demand, custom resource
//! round trips answered on presigned S3 URLs, rollbacks, and the manual render payload.

mod support;

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use rack_secrets::custom_resource::{self, Data, Request};
use rack_secrets::stage::CURRENT;
use rack_secrets::{stack_inject, Error};
use serde_json::{json, Value};
use support::{AppSpec, TestRack};
use tokio::time::Instant;

const ENV_R1: &str = "DB_USER=prod_user\nDB_PASSWORD=first-password\nAPI_TOKEN=t1\nOTHER=x\n";
const ENV_R2: &str = "DB_USER=prod_user\nDB_PASSWORD=second-password\nAPI_TOKEN=t2\nOTHER=x\n";

fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// The service fixture as a macro request for `app` of this rack at `release`.
fn service_request(t: &TestRack, bucket: &str, release: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/templates/service.request.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut request: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let params = &mut request["templateParameterValues"];
    params["Rack"] = json!(t.name);
    params["Settings"] = json!(bucket);
    params["Release"] = json!(release);
    request
}

fn container(fragment: &Value) -> &Value {
    &fragment["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
}

/// `(name, secret ARN, version id)` of each injected entry.
fn entries(fragment: &Value) -> Vec<(String, String, String)> {
    container(fragment)["Secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let value_from = entry["ValueFrom"].as_str().unwrap();
            let parts: Vec<&str> = value_from.rsplitn(4, ':').collect();
            // arn:...:secret:name-XXXXXX:KEY::version, split from the right.
            let (version, key, arn) = (parts[0], parts[2], parts[3]);
            assert_eq!(key, entry["Name"].as_str().unwrap());
            (key.to_owned(), arn.to_owned(), version.to_owned())
        })
        .collect()
}

async fn run_macro(t: &TestRack, request: Value) -> Value {
    stack_inject::handle(t.rack.clone(), request, far_deadline())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_macro_request_for_a_new_app_stages_it_and_every_injected_key_reads_back() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;

    let response = run_macro(&t, service_request(&t, &bucket, "R1")).await;

    assert_eq!(response["status"], "success", "{response}");
    assert_eq!(
        response["requestId"],
        "5b1a9e5c-7d1e-4f3a-9a61-1c2d3e4f5a6b"
    );
    let fragment = &response["fragment"];
    let injected = entries(fragment);
    let names: Vec<&str> = injected.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(names, ["API_TOKEN", "DB_PASSWORD", "DB_USER"]);

    let (_, arn, version) = &injected[0];
    assert!(arn.contains(&format!(":secret:{}/web-", t.name)), "{arn}");
    let stored = t.read_version("web", version).await;
    for (key, _, _) in &injected {
        assert!(
            stored.contains_key(key),
            "{key} is not in the pinned version"
        );
    }
    assert_eq!(stored["DB_PASSWORD"], "first-password");
    let policy = &fragment["Resources"]["ExecutionRole"]["Properties"]["Policies"][0];
    assert_eq!(
        policy["PolicyDocument"]["Statement"][0]["Resource"],
        json!([arn])
    );
}

#[tokio::test]
async fn after_a_rollback_tasks_of_the_old_release_read_the_old_values() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.write_env(&bucket, "R2", ENV_R2).await;

    let first = run_macro(&t, service_request(&t, &bucket, "R1")).await;
    let second = run_macro(&t, service_request(&t, &bucket, "R2")).await;
    let v1 = entries(&first["fragment"])[0].2.clone();
    let v2 = entries(&second["fragment"])[0].2.clone();
    t.rack.promote("web", &v2).await.unwrap();

    // CloudFormation restores the old task definition, which names R1's version id.
    assert_ne!(v1, v2);
    assert_eq!(
        t.read_version("web", &v1).await["DB_PASSWORD"],
        "first-password"
    );
    assert_eq!(
        t.read_version("web", &v2).await["DB_PASSWORD"],
        "second-password"
    );
    assert_eq!(t.version_with("web", CURRENT).await.as_deref(), Some(&*v2));
}

#[tokio::test]
async fn a_disabled_app_keeps_its_task_definition_exactly() {
    let t = TestRack::new(&[]).await;
    let spec = AppSpec {
        setting: "No",
        ..AppSpec::default()
    };
    let bucket = t.create_app("web", "R1", spec).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    let request = service_request(&t, &bucket, "R1");

    let response = run_macro(&t, request.clone()).await;

    assert_eq!(response["status"], "success");
    assert_eq!(response["fragment"], request["fragment"]);
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn convox_yml_can_switch_an_app_on_for_its_own_templates() {
    let t = TestRack::new(&[]).await;
    let spec = AppSpec {
        setting: "",
        ..AppSpec::default()
    };
    let bucket = t.create_app("web", "R1", spec).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    let mut request = service_request(&t, &bucket, "R1");
    request["params"] = json!({"SecretsManagerEnv": "Yes"});

    let response = run_macro(&t, request).await;

    assert_eq!(entries(&response["fragment"]).len(), 3);
}

/// A secret created by hand with quotes around its JSON: never written by us, and reading it
/// is a clear error rather than a panic.
#[tokio::test]
async fn a_hand_made_secret_that_is_not_json_leaves_the_task_on_s3_with_a_clear_error() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.secrets
        .create_secret()
        .name(t.secret_name("web"))
        .secret_string(r#"'{"K":"v"}'"#)
        .send()
        .await
        .unwrap();
    let request = service_request(&t, &bucket, "R1");

    let response = run_macro(&t, request.clone()).await;
    let read = t
        .rack
        .read_secret("web", rack_secrets::backend::VersionRef::Label(CURRENT))
        .await;

    assert_eq!(response["fragment"], request["fragment"]);
    let message = read.unwrap_err().to_string();
    assert!(message.contains("not hold a JSON object"), "{message}");
    assert!(!message.contains("\"v\""), "{message}");
    assert_eq!(t.counter.writes(), 0);
}

#[tokio::test]
async fn a_macro_request_it_cannot_read_fails_with_a_message_and_its_request_id() {
    let t = TestRack::new(&[]).await;

    let malformed = run_macro(
        &t,
        json!({"requestId": "r-1", "fragment": "not a template"}),
    )
    .await;
    let no_fragment = run_macro(&t, json!({"requestId": "r-2"})).await;
    let no_id = run_macro(&t, json!({"fragment": {"Resources": {}}})).await;

    assert_eq!(malformed["status"], "failure");
    assert_eq!(malformed["requestId"], "r-1");
    assert!(malformed["errorMessage"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));
    assert_eq!(no_fragment["status"], "failure");
    assert_eq!(no_fragment["requestId"], "r-2");
    assert!(no_fragment["errorMessage"]
        .as_str()
        .unwrap()
        .contains("no fragment"));
    assert_eq!(no_id["status"], "failure");
    assert!(no_id["errorMessage"]
        .as_str()
        .unwrap()
        .contains("requestId"));
}

/// A bucket for CloudFormation's answers and a presigned PUT URL for one of them.
async fn response_url(t: &TestRack, name: &str) -> (String, String) {
    let bucket = support::unique("cfn-answers-");
    t.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let presigned =
        t.s3.put_object()
            .bucket(&bucket)
            .key(name)
            .presigned(PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap())
            .await
            .unwrap();
    (bucket, presigned.uri().to_owned())
}

async fn read_answer(t: &TestRack, bucket: &str, name: &str) -> Value {
    let object =
        t.s3.get_object()
            .bucket(bucket)
            .key(name)
            .send()
            .await
            .unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert!(bytes.len() <= custom_resource::MAX_RESPONSE_BYTES);
    serde_json::from_slice(&bytes).unwrap()
}

fn custom_resource_request(t: &TestRack, kind: &str, url: &str, release: &str) -> Value {
    let mut request = json!({
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": format!("arn:aws:cloudformation:us-east-1:123456789012:stack/{}-web/1", t.name),
        "RequestId": "7f0c7c44-1d0e-4b7a-9d7e-2b7a1c0e9f11",
        "ResourceType": "Custom::RackSecrets",
        "LogicalResourceId": "RackSecrets",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:x",
                               "App": "web", "Release": release}
    });
    if kind != "Create" {
        request["PhysicalResourceId"] = json!(t.secret_name("web"));
    }
    request
}

#[tokio::test]
async fn create_promotes_the_release_and_answers_on_the_presigned_url() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    let events = t.watch_bucket_events(&bucket).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    assert_eq!(
        t.received_events(&events).await,
        [],
        "EventBridge delivery was already on"
    );
    let (answers, url) = response_url(&t, "create").await;

    stack_inject::handle(
        t.rack.clone(),
        custom_resource_request(&t, "Create", &url, "R1"),
        far_deadline(),
    )
    .await
    .unwrap();

    let answer = read_answer(&t, &answers, "create").await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["PhysicalResourceId"], t.secret_name("web"));
    assert_eq!(answer["RequestId"], "7f0c7c44-1d0e-4b7a-9d7e-2b7a1c0e9f11");
    assert_eq!(answer["LogicalResourceId"], "RackSecrets");
    assert_eq!(answer["Data"]["SecretName"], t.secret_name("web"));
    let version = answer["Data"]["VersionId"].as_str().unwrap();
    assert!(answer["Data"]["SecretArn"]
        .as_str()
        .unwrap()
        .contains(":secret:"));
    assert_eq!(
        t.version_with("web", CURRENT).await.as_deref(),
        Some(version)
    );
    assert!(!answer.to_string().contains("first-password"));

    // Later env writes now reach EventBridge, and the bucket's own setting is still there.
    t.write_env(&bucket, "R2", ENV_R2).await;
    let received = t.received_events(&events).await;
    assert!(
        received.contains(&("Object Created".to_owned(), "releases/R2/env".to_owned())),
        "{received:?}"
    );
    let notifications =
        t.s3.get_bucket_notification_configuration()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
    assert_eq!(notifications.queue_configurations().len(), 1);
}

#[tokio::test]
async fn update_keeps_the_physical_id_and_a_rollback_update_moves_awscurrent_back() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;
    t.write_env(&bucket, "R2", ENV_R2).await;

    let mut answers = Vec::new();
    for (step, kind, release) in [
        (1, "Create", "R1"),
        (2, "Update", "R2"),
        (3, "Update", "R1"),
    ] {
        let (answer_bucket, url) = response_url(&t, &format!("step{step}")).await;
        let request = custom_resource_request(&t, kind, &url, release);
        stack_inject::handle(t.rack.clone(), request, far_deadline())
            .await
            .unwrap();
        answers.push(read_answer(&t, &answer_bucket, &format!("step{step}")).await);
    }

    for answer in &answers {
        assert_eq!(answer["Status"], "SUCCESS");
        assert_eq!(answer["PhysicalResourceId"], t.secret_name("web"));
    }
    assert_ne!(
        answers[0]["Data"]["VersionId"],
        answers[1]["Data"]["VersionId"]
    );
    assert_eq!(
        answers[2]["Data"]["VersionId"],
        answers[0]["Data"]["VersionId"]
    );
    let current = t.version_with("web", CURRENT).await.unwrap();
    assert_eq!(answers[0]["Data"]["VersionId"], current.as_str());
}

#[tokio::test]
async fn delete_of_an_app_whose_secret_never_existed_succeeds() {
    let t = TestRack::new(&[]).await;
    let (answers, url) = response_url(&t, "delete").await;

    let request = custom_resource_request(&t, "Delete", &url, "R1");
    stack_inject::handle(t.rack.clone(), request, far_deadline())
        .await
        .unwrap();

    let answer = read_answer(&t, &answers, "delete").await;
    assert_eq!(answer["Status"], "SUCCESS");
    assert_eq!(answer["PhysicalResourceId"], t.secret_name("web"));
}

/// Fall back, never block: an environment too large for a secret leaves the app on the S3
/// path, and the deploy goes on.
#[tokio::test]
async fn a_release_that_cannot_be_staged_is_answered_success_with_no_version() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", &format!("BIG={}\n", "y".repeat(70_000)))
        .await;
    let (answers, url) = response_url(&t, "fallback").await;

    let request = custom_resource_request(&t, "Create", &url, "R1");
    stack_inject::handle(t.rack.clone(), request, far_deadline())
        .await
        .unwrap();

    let answer = read_answer(&t, &answers, "fallback").await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["Data"]["VersionId"], "");
    assert_eq!(answer["Data"]["SecretArn"], "");
    assert!(!t.secret_exists("web").await);
}

#[tokio::test]
async fn a_request_with_bad_properties_answers_failed_with_a_reason() {
    let t = TestRack::new(&[]).await;
    let (answers, url) = response_url(&t, "failed").await;
    let mut request = custom_resource_request(&t, "Create", &url, "R1");
    request["ResourceProperties"]["Release"] = json!("../R1");
    request["PhysicalResourceId"] = json!(5);

    stack_inject::handle(t.rack.clone(), request, far_deadline())
        .await
        .unwrap();

    let answer = read_answer(&t, &answers, "failed").await;
    assert_eq!(answer["Status"], "FAILED");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(
        reason.contains("app web") && reason.contains("Release"),
        "{reason}"
    );
}

/// The app template's transform with a secret made by hand: no grant, no failure.
#[tokio::test]
async fn the_app_template_with_a_secret_that_is_not_ours_is_left_as_it_was() {
    let t = TestRack::new(&[]).await;
    t.create_app("web", "R1", AppSpec::default()).await;
    t.secrets
        .create_secret()
        .name(t.secret_name("web"))
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    let path = format!(
        "{}/../tests/fixtures/templates/app.request.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let request: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();

    let response = run_macro(&t, request.clone()).await;

    assert_eq!(response["status"], "success");
    assert_eq!(response["fragment"], request["fragment"]);
}

fn bare_request(url: &str) -> Request {
    Request::read(&json!({
        "RequestType": "Create",
        "ResponseURL": url,
        "StackId": "stack",
        "RequestId": "req",
        "LogicalResourceId": "RackSecrets"
    }))
    .unwrap()
}

#[tokio::test]
async fn a_handler_that_panics_still_answers_failed() {
    let t = TestRack::new(&[]).await;
    let (answers, url) = response_url(&t, "panic").await;

    let work = async { panic!("boom") };
    let sent = custom_resource::answer(&bare_request(&url), "prod/web", far_deadline(), work)
        .await
        .unwrap();

    assert_eq!(sent["Status"], "FAILED");
    let answer = read_answer(&t, &answers, "panic").await;
    assert_eq!(answer["Status"], "FAILED");
    assert!(answer["Reason"].as_str().unwrap().contains("panic"));
}

#[tokio::test]
async fn a_handler_that_nears_the_deadline_answers_failed_before_it() {
    let t = TestRack::new(&[]).await;
    let (answers, url) = response_url(&t, "slow").await;
    let deadline = Instant::now() + Duration::from_secs(7);

    let work = async {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok::<Data, Error>(Data::new())
    };
    custom_resource::answer(&bare_request(&url), "prod/web", deadline, work)
        .await
        .unwrap();

    assert!(Instant::now() < deadline, "answered after the deadline");
    let answer = read_answer(&t, &answers, "slow").await;
    assert_eq!(answer["Status"], "FAILED");
    assert!(answer["Reason"].as_str().unwrap().contains("deadline"));
}

#[tokio::test]
async fn render_gives_the_entries_and_names_to_drop_for_a_one_off_task() {
    let t = TestRack::new(&[]).await;
    let bucket = t.create_app("web", "R1", AppSpec::default()).await;
    t.write_env(&bucket, "R1", ENV_R1).await;

    let payload = json!({"render": {"app": "web", "release": "R1", "allowed": "DB_USER,NOPE"}});
    let rendered = run_macro(&t, payload).await;

    assert_eq!(rendered["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(rendered["secrets"][0]["name"], "DB_USER");
    let version = rendered["version_id"].as_str().unwrap();
    assert!(rendered["secrets"][0]["valueFrom"]
        .as_str()
        .unwrap()
        .ends_with(version));
    assert_eq!(
        rendered["drop"],
        json!([
            "CONVOX_ENV_KEY",
            "CONVOX_ENV_URL",
            "CONVOX_ENV_VARS",
            "DB_USER"
        ])
    );

    let disabled = TestRack::new(&[]).await;
    let spec = AppSpec {
        setting: "",
        ..AppSpec::default()
    };
    disabled.create_app("web", "R1", spec).await;
    let fallback = run_macro(
        &disabled,
        json!({"render": {"app": "web", "release": "R1"}}),
    )
    .await;
    assert!(fallback["fallback"]
        .as_str()
        .unwrap()
        .contains("not enabled"));
}
