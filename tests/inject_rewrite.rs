//! The template rewrite on its own, without AWS: golden fixtures in and out, and the cases
//! where a task definition must stay exactly as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rack_secrets::inject::{self, Allowed, EnvSource, Options, SecretRef, TaskOutcome};
use serde_json::{json, Map, Value};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/web-AbCdEf";
const VERSION: &str = "7a1c2b3d-4e5f-8a6b-9c7d-0e1f2a3b4c5d";
const STAGED_KEYS: [&str; 5] = [
    "API_TOKEN",
    "DATABASE_URL",
    "DB_PASSWORD",
    "DB_USER",
    "SENTRY_DSN",
];

fn templates() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/templates")
}

fn read(name: &str) -> Value {
    let path = templates().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path:?}: {err}"));
    serde_json::from_str(&text).unwrap()
}

fn secret(keys: &[&str]) -> SecretRef {
    SecretRef {
        arn: ARN.to_owned(),
        version_id: VERSION.to_owned(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

fn options(pin_versions: bool) -> Options {
    Options {
        pin_versions,
        kms_key_id: None,
    }
}

/// Runs the rewrite on a macro request with every source staged as `secret`.
fn rewrite(request: &Value, staged: SecretRef, options: &Options) -> (Value, Vec<TaskOutcome>) {
    let mut fragment = request["fragment"].clone();
    let empty = Map::new();
    let params = request["templateParameterValues"]
        .as_object()
        .unwrap_or(&empty);
    let app = request["params"]["App"].as_str();

    let plan = inject::plan(&fragment, params, app);
    let staged: BTreeMap<EnvSource, Result<SecretRef, String>> = plan
        .sources()
        .into_iter()
        .map(|source| (source, Ok(staged.clone())))
        .collect();
    let grant = app.map(|_| ARN);
    let outcomes = inject::apply(&mut fragment, &plan, &staged, options, grant);
    (fragment, outcomes)
}

/// Compares with the expected file; `UPDATE_GOLDEN=1` rewrites it instead (review the diff).
fn assert_golden(actual: &Value, expected_name: &str) {
    let path = templates().join(expected_name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let expected = read(expected_name);
    assert!(
        *actual == expected,
        "{expected_name} differs:\n{}",
        serde_json::to_string_pretty(actual).unwrap()
    );
}

#[test]
fn a_service_template_reads_its_allowed_keys_from_the_pinned_version() {
    let request = read("service.request.json");
    let (fragment, outcomes) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    assert_golden(&fragment, "service.expected.json");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].fallback, None);
    assert_eq!(outcomes[0].keys, 3);
    assert_eq!(outcomes[0].version_id.as_deref(), Some(VERSION));
}

#[test]
fn with_pinning_off_the_entries_read_awscurrent() {
    let request = read("service.request.json");
    let (fragment, _) = rewrite(&request, secret(&STAGED_KEYS), &options(false));

    assert_golden(&fragment, "service.unpinned.expected.json");
    let secrets = &fragment["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        ["Secrets"];
    assert_eq!(secrets[0]["ValueFrom"], format!("{ARN}:API_TOKEN::"));
}

#[test]
fn a_timer_template_is_rewritten_and_its_role_is_left_to_the_app_template() {
    let request = read("timer.request.json");
    let (fragment, outcomes) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    assert_golden(&fragment, "timer.expected.json");
    assert_eq!(outcomes[0].keys, STAGED_KEYS.len());
}

#[test]
fn the_app_template_grants_its_execution_role_the_secret() {
    let request = read("app.request.json");
    let (fragment, outcomes) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    assert_golden(&fragment, "app.expected.json");
    assert!(outcomes.is_empty());
    let policy = &fragment["Resources"]["ExecutionRole"]["Properties"]["Policies"][0];
    assert_eq!(
        policy["PolicyDocument"]["Statement"][0]["Resource"],
        json!([ARN])
    );
}

#[test]
fn only_keys_the_version_holds_are_referenced() {
    let request = read("service.request.json");
    let (fragment, _) = rewrite(&request, secret(&["DB_USER"]), &options(true));

    let container =
        &fragment["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let names: Vec<&str> = container["Secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DB_USER"]);
}

#[test]
fn a_name_in_the_secret_is_removed_from_the_plain_environment() {
    let request = read("service.request.json");
    let (fragment, _) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    let container =
        &fragment["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let plain: BTreeSet<&str> = container["Environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    let secret: BTreeSet<&str> = container["Secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert!(plain.is_disjoint(&secret), "{plain:?} and {secret:?}");
    assert!(secret.contains("DB_USER"));
    assert!(!plain.iter().any(|name| name.starts_with("CONVOX_ENV_")));
    assert!(
        plain.contains("DATABASE_URL"),
        "a key the service does not allow stays plain"
    );
}

fn assert_untouched(request: &Value, fragment: &Value, outcomes: &[TaskOutcome], words: &str) {
    assert_eq!(*fragment, request["fragment"], "the fragment changed");
    let reason = outcomes[0].fallback.as_deref().expect("a fallback");
    assert!(reason.contains(words), "{reason}");
}

#[test]
fn a_task_definition_without_an_execution_role_stays_on_the_s3_path() {
    let mut request = read("service.request.json");
    let properties = &mut request["fragment"]["Resources"]["TaskDefinition"]["Properties"];
    properties
        .as_object_mut()
        .unwrap()
        .remove("ExecutionRoleArn");

    let (fragment, outcomes) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    assert_untouched(&request, &fragment, &outcomes, "ExecutionRoleArn");
}

#[test]
fn a_task_definition_that_would_outgrow_ecs_stays_on_the_s3_path() {
    let mut request = read("service.request.json");
    let keys: Vec<String> = (0..400).map(|i| format!("SETTING_NUMBER_{i:03}")).collect();
    let container = &mut request["fragment"]["Resources"]["TaskDefinition"]["Properties"]
        ["ContainerDefinitions"][0];
    for entry in container["Environment"].as_array_mut().unwrap() {
        if entry["Name"] == "CONVOX_ENV_VARS" {
            entry["Value"] = json!(keys.join(","));
        }
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    let (fragment, outcomes) = rewrite(&request, secret(&key_refs), &options(true));

    assert_untouched(&request, &fragment, &outcomes, "bytes");
}

#[test]
fn a_failed_staging_leaves_the_task_definition_and_the_role_untouched() {
    let request = read("service.request.json");
    let mut fragment = request["fragment"].clone();
    let params = request["templateParameterValues"].as_object().unwrap();
    let plan = inject::plan(&fragment, params, None);
    let staged = plan
        .sources()
        .into_iter()
        .map(|s| {
            (
                s,
                Err("the environment of app web is 70010 bytes".to_owned()),
            )
        })
        .collect();

    let outcomes = inject::apply(&mut fragment, &plan, &staged, &options(true), None);

    assert_untouched(&request, &fragment, &outcomes, "70010 bytes");
}

#[test]
fn an_execution_role_from_outside_the_template_cannot_be_granted() {
    let mut request = read("service.request.json");
    request["fragment"]["Resources"]["TaskDefinition"]["Properties"]["ExecutionRoleArn"] =
        json!("arn:aws:iam::123456789012:role/some-other-role");

    let (fragment, outcomes) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    assert_untouched(&request, &fragment, &outcomes, "cannot be granted");
}

#[test]
fn one_container_that_cannot_be_served_keeps_the_whole_task_definition() {
    let mut request = read("service.request.json");
    let containers = &mut request["fragment"]["Resources"]["TaskDefinition"]["Properties"]
        ["ContainerDefinitions"];
    let mut sidecar = containers[0].clone();
    sidecar["Name"] = json!("sidecar");
    for entry in sidecar["Environment"].as_array_mut().unwrap() {
        if entry["Name"] == "CONVOX_ENV_URL" {
            entry["Value"] = json!({"Fn::Sub": "s3://${Unknown}/releases/${Release}/env"});
        }
    }
    containers.as_array_mut().unwrap().push(sidecar);

    let (fragment, outcomes) = rewrite(&request, secret(&STAGED_KEYS), &options(true));

    assert_untouched(&request, &fragment, &outcomes, "container sidecar");
}

#[test]
fn a_customer_key_adds_decrypt_through_secrets_manager_to_the_grant() {
    let request = read("service.request.json");
    let options = Options {
        pin_versions: true,
        kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/secret-key".to_owned()),
    };
    let (fragment, _) = rewrite(&request, secret(&STAGED_KEYS), &options);

    let statements = &fragment["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]
        ["PolicyDocument"]["Statement"];
    assert_eq!(statements[1]["Action"], "kms:Decrypt");
    assert!(statements[1]["Condition"]["StringEquals"]["kms:ViaService"].is_object());
}

#[test]
fn cloudformation_values_resolve_from_the_template_parameters() {
    let params = json!({"Settings": "bucket-1", "Release": "R1", "Rack": "prod"});
    let params = params.as_object().unwrap();
    let cases = [
        (json!("plain"), Some("plain")),
        (json!({"Ref": "Release"}), Some("R1")),
        (
            json!({"Fn::Sub": "s3://${Settings}/releases/${Release}/env"}),
            Some("s3://bucket-1/releases/R1/env"),
        ),
        (
            json!({"Fn::Sub": ["${A}-${Rack}", {"A": {"Ref": "Release"}}]}),
            Some("R1-prod"),
        ),
        (
            json!({"Fn::Join": ["/", ["a", {"Ref": "Rack"}]]}),
            Some("a/prod"),
        ),
        (json!({"Fn::Sub": "${!Literal}"}), Some("${Literal}")),
        (json!({"Ref": "Missing"}), None),
        (json!({"Fn::GetAtt": ["Settings", "Arn"]}), None),
    ];
    for (value, expected) in cases {
        assert_eq!(
            inject::resolve(&value, params).as_deref(),
            expected,
            "{value}"
        );
    }
}

#[test]
fn allowed_lists_are_trimmed_and_star_means_all() {
    assert_eq!(Allowed::parse(" * "), Allowed::All);
    let only = Allowed::parse("A, B,,C ");
    assert!(only.allows("B") && only.allows("C") && !only.allows("D"));
    assert!(!Allowed::parse("").allows("A"));
}

#[test]
fn a_key_a_secret_reference_cannot_carry_keeps_the_task_definition_on_s3_unnamed() {
    let mut request = read("service.request.json");
    let container = &mut request["fragment"]["Resources"]["TaskDefinition"]["Properties"]
        ["ContainerDefinitions"][0];
    for entry in container["Environment"].as_array_mut().unwrap() {
        if entry["Name"] == "CONVOX_ENV_VARS" {
            entry["Value"] = json!("*");
        }
    }

    let (fragment, outcomes) = rewrite(&request, secret(&["DB_USER", "A:B"]), &options(true));

    assert_untouched(&request, &fragment, &outcomes, "not variable names");
    assert!(!outcomes[0].fallback.as_deref().unwrap().contains("A:B"));
}
