//! What the fuzz targets in `fuzz/` check, kept here so that the same checks also run over
//! the committed seed corpus as ordinary tests. Built only for tests and fuzzing builds.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::backend::{AwsResult, KeyService};
use crate::envelope;
use crate::envfile::EnvFile;
use crate::inject::{self, EnvSource, Options, SecretRef, CONVOX_ENV_VARIABLES};

/// Parses arbitrary bytes; whatever parses must survive the trip through canonical JSON.
pub fn check_env_parser(data: &[u8]) {
    let Ok(env) = EnvFile::parse(data) else {
        return;
    };
    for key in env.keys() {
        assert!(!key.is_empty() && key.trim() == key, "untrimmed key");
    }
    let json = env.canonical_json();
    let back = EnvFile::from_secret_json("fuzz", &json).expect("canonical JSON reads back");
    assert_eq!(back, env);
    assert_eq!(back.canonical_json(), json);
}

/// A key service that unwraps nothing: the "wrapped" key is the key itself.
struct PlainKeys;

#[async_trait]
impl KeyService for PlainKeys {
    async fn decrypt(&self, wrapped: &[u8]) -> AwsResult<Vec<u8>> {
        Ok(wrapped.to_vec())
    }

    async fn generate_data_key(&self, _key_id: &str) -> AwsResult<(Vec<u8>, Vec<u8>)> {
        Ok((vec![7; 32], vec![7; 32]))
    }
}

/// Opens arbitrary bytes as an env object: never a panic; text that is not an envelope comes
/// back as it was, and an envelope opens only to what was sealed.
pub fn check_envelope_opener(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let opened = envelope::open_object(&PlainKeys, data, "fuzz").await;
        if !envelope::looks_sealed(data) {
            assert_eq!(opened.expect("plain text passes"), data);
        }
        // Sealing the input and opening it again gives it back.
        let sealed = envelope::seal(&PlainKeys, "key", data)
            .await
            .expect("seals");
        let reopened = envelope::open_object(&PlainKeys, &sealed, "fuzz").await;
        assert_eq!(reopened.expect("opens"), data);
    });
}

const FUZZ_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/web-AbCdEf";

/// A Convox-shaped service template whose details come from `data`: which keys the service
/// allows, which it sets in plain environment, which the secret holds, the role's shape and
/// the number of containers. Valid CloudFormation by construction.
pub fn template_from_bytes(data: &[u8]) -> (Value, BTreeSet<String>) {
    let mut bytes = data.iter().copied().chain(std::iter::repeat(0));
    let mut next = move || bytes.next().unwrap_or(0);
    let names: Vec<String> = (0..12).map(|i| format!("KEY_{i}")).collect();

    let held: BTreeSet<String> = names.iter().filter(|_| next() % 2 == 0).cloned().collect();
    let containers = 1 + (next() % 3) as usize;
    let role = next() % 4;
    let mut definitions = Vec::new();
    for index in 0..containers {
        let mut environment = vec![json!({"Name": "PORT", "Value": "3000"})];
        for name in &names {
            if next() % 3 == 0 {
                environment.push(json!({"Name": name, "Value": "default"}));
            }
        }
        if next() % 5 != 0 {
            let allowed = match next() % 3 {
                0 => "*".to_owned(),
                _ => names
                    .iter()
                    .filter(|_| next() % 2 == 0)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            };
            environment.push(json!({"Name": "CONVOX_ENV_KEY", "Value": {"Ref": "Key"}}));
            environment.push(json!({"Name": "CONVOX_ENV_URL",
                "Value": {"Fn::Sub": "s3://${Settings}/releases/${Release}/env"}}));
            environment.push(json!({"Name": "CONVOX_ENV_VARS", "Value": allowed}));
        }
        definitions.push(json!({
            "Name": format!("c{index}"),
            "Image": "registry.example/app:latest",
            "Essential": index == 0,
            "Memory": 256,
            "DockerLabels": {"convox.app": "web", "convox.release": {"Ref": "Release"}},
            "Environment": environment,
        }));
    }

    let mut properties = json!({
        "Family": "prod-web-service",
        "ContainerDefinitions": definitions,
    });
    match role {
        0 => {}
        1 => properties["ExecutionRoleArn"] = json!({"Ref": "ExecutionRoleArn"}),
        _ => properties["ExecutionRoleArn"] = json!({"Fn::GetAtt": ["ExecutionRole", "Arn"]}),
    }
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {
            "Key": {"Type": "String"},
            "Settings": {"Type": "String"},
            "Release": {"Type": "String"},
            "ExecutionRoleArn": {"Type": "String"},
        },
        "Resources": {
            "ExecutionRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Principal": {"Service": ["ecs-tasks.amazonaws.com"]},
                            "Action": ["sts:AssumeRole"],
                        }],
                    },
                },
            },
            "TaskDefinition": {"Type": "AWS::ECS::TaskDefinition", "Properties": properties},
        },
        "Outputs": {"TaskDefinition": {"Value": {"Ref": "TaskDefinition"}}},
    });
    (template, held)
}

/// Rewrites a template built from `data` and returns it with its rewrite.
pub fn rewrite_from_bytes(data: &[u8]) -> (Value, Value) {
    let (template, held) = template_from_bytes(data);
    let params = json!({"Settings": "bucket", "Release": "R1", "Key": "k"});
    let params = params.as_object().expect("an object");
    let plan = inject::plan(&template, params, None);
    let staged: BTreeMap<EnvSource, Result<SecretRef, String>> = plan
        .sources()
        .into_iter()
        .map(|source| {
            let secret = SecretRef {
                arn: FUZZ_ARN.to_owned(),
                version_id: "0f1e2d3c-4b5a-8968-8776-a5b4c3d2e1f0".to_owned(),
                keys: held.clone(),
            };
            (source, Ok(secret))
        })
        .collect();
    let options = Options {
        pin_versions: data.first().is_some_and(|b| b % 2 == 0),
        kms_key_id: None,
    };
    let mut rewritten = template.clone();
    inject::apply(&mut rewritten, &plan, &staged, &options, None);
    (template, rewritten)
}

/// The rewrite of a generated template keeps the rules of ECS and of the design.
pub fn check_template_rewriter(data: &[u8]) {
    let (template, rewritten) = rewrite_from_bytes(data);
    let (_, held) = template_from_bytes(data);
    let before = &template["Resources"]["TaskDefinition"];
    let after = &rewritten["Resources"]["TaskDefinition"];
    if before == after {
        return;
    }
    let containers = after["Properties"]["ContainerDefinitions"]
        .as_array()
        .expect("list");
    for container in containers {
        let plain: BTreeSet<&str> = container["Environment"]
            .as_array()
            .map(|e| e.iter().filter_map(|x| x["Name"].as_str()).collect())
            .unwrap_or_default();
        let secrets: Vec<&Value> = container["Secrets"]
            .as_array()
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        for variable in CONVOX_ENV_VARIABLES {
            assert!(!plain.contains(variable), "{variable} left behind");
        }
        let mut seen = BTreeSet::new();
        for secret in secrets {
            let name = secret["Name"].as_str().expect("a name");
            assert!(seen.insert(name), "{name} injected twice");
            assert!(!plain.contains(name), "{name} in both lists");
            assert!(held.contains(name), "{name} is not in the secret");
            let value_from = secret["ValueFrom"].as_str().expect("a ValueFrom");
            assert!(value_from.starts_with(&format!("{FUZZ_ARN}:{name}::")));
        }
    }
    assert!(
        after["Properties"].get("ExecutionRoleArn").is_some(),
        "no role, yet rewritten"
    );
    assert_eq!(template["Outputs"], rewritten["Outputs"]);
    assert_eq!(template["Parameters"], rewritten["Parameters"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of one target's seed corpus in `fuzz/corpus/{target}`.
    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("{dir:?}: {err}"))
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        assert!(!inputs.is_empty(), "{dir:?} is empty");
        inputs.push(Vec::new());
        inputs
    }

    #[test]
    fn fuzz_smoke_env_parser_over_its_corpus() {
        corpus("env_parser")
            .iter()
            .for_each(|input| check_env_parser(input));
    }

    #[test]
    fn fuzz_smoke_envelope_opener_over_its_corpus() {
        corpus("envelope_opener")
            .iter()
            .for_each(|input| check_envelope_opener(input));
    }

    #[test]
    fn fuzz_smoke_template_rewriter_over_its_corpus() {
        corpus("template_rewriter")
            .iter()
            .for_each(|input| check_template_rewriter(input));
    }

    #[test]
    fn generated_templates_are_rewritten_for_some_inputs_and_left_for_others() {
        let rewritten = (0u8..=255)
            .filter(|b| {
                let (before, after) = rewrite_from_bytes(&[*b; 64]);
                before != after
            })
            .count();
        assert!(rewritten > 0 && rewritten < 256, "{rewritten}");
    }
}
