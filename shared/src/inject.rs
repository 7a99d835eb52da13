//! The template rewrite behind the macro, as pure functions over CloudFormation JSON: find the
//! container definitions that read their environment from S3, then point each at the pinned
//! secret version instead and grant the execution role that one secret.
//!
//! The AWS work (checking the app is enabled, staging the release) happens between `plan` and
//! `apply`, so everything here can be tested with fixtures alone.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::envfile::is_variable_name;

/// The variables through which Convox's wrapper fetches the environment; all go once the
/// environment comes from the secret.
pub const CONVOX_ENV_VARIABLES: [&str; 3] = ["CONVOX_ENV_KEY", "CONVOX_ENV_URL", "CONVOX_ENV_VARS"];
/// The name of the inline policy that grants the execution role the app's secret.
pub const POLICY_NAME: &str = "rack-secrets-env";
/// Task definitions are kept under this many bytes of JSON (ECS allows 64 KiB; half leaves
/// room for what CloudFormation adds).
pub const MAX_TASK_DEFINITION_BYTES: usize = 32 * 1024;

/// Where a container's environment comes from: the app, the release and the bucket named by
/// its `CONVOX_ENV_URL` and docker labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvSource {
    pub app: String,
    pub release: String,
    pub bucket: String,
}

/// The keys a service may read (`CONVOX_ENV_VARS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    All,
    Only(BTreeSet<String>),
}

impl Allowed {
    pub fn parse(list: &str) -> Allowed {
        if list.trim() == "*" {
            return Allowed::All;
        }
        Allowed::Only(
            list.split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn allows(&self, key: &str) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(keys) => keys.contains(key),
        }
    }
}

/// A staged environment as task definitions reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub arn: String,
    pub version_id: String,
    pub keys: BTreeSet<String>,
}

impl SecretRef {
    /// The `ValueFrom` of one key: pinned to the version id, or reading `AWSCURRENT`.
    pub fn value_from(&self, key: &str, pin_versions: bool) -> String {
        let version = if pin_versions {
            self.version_id.as_str()
        } else {
            ""
        };
        format!("{}:{key}::{version}", self.arn)
    }

    /// The `secrets` entries for the keys `allowed` lets through that the version holds,
    /// sorted by name, and the environment names they replace.
    pub fn entries(&self, allowed: &Allowed, pin_versions: bool) -> Vec<(String, String)> {
        self.keys
            .iter()
            .filter(|key| allowed.allows(key))
            .map(|key| (key.clone(), self.value_from(key, pin_versions)))
            .collect()
    }
}

/// One container that reads its environment from S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub index: usize,
    pub source: EnvSource,
    pub allowed: Allowed,
}

/// One task definition of the fragment that has such containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    pub logical_id: String,
    pub containers: Vec<ContainerPlan>,
    /// Why it cannot be rewritten whatever AWS says (unreadable URL, no execution role).
    pub problem: Option<String>,
}

/// What a fragment asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub tasks: Vec<TaskPlan>,
}

impl Plan {
    /// Every environment the fragment needs staged, each once.
    pub fn sources(&self) -> BTreeSet<EnvSource> {
        self.tasks
            .iter()
            .filter(|task| task.problem.is_none())
            .flat_map(|task| task.containers.iter().map(|c| c.source.clone()))
            .collect()
    }
}

/// What happened to one task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub logical_id: String,
    pub app: Option<String>,
    pub release: Option<String>,
    pub version_id: Option<String>,
    /// Secrets injected (0 on fallback).
    pub keys: usize,
    /// Why it stayed on the S3 path; `None` when rewritten.
    pub fallback: Option<String>,
}

/// Options of the rewrite that come from the function's configuration.
#[derive(Debug, Clone)]
pub struct Options {
    pub pin_versions: bool,
    /// The customer key new secrets are encrypted with, which the role must be able to use.
    pub kms_key_id: Option<String>,
}

/// The resources of a fragment: the `Resources` of a whole template, or the fragment itself
/// when it is already a resources section.
fn resources(fragment: &Value) -> Option<&Map<String, Value>> {
    match fragment.get("Resources") {
        Some(resources) => resources.as_object(),
        None => fragment.as_object(),
    }
}

fn resources_mut(fragment: &mut Value) -> Option<&mut Map<String, Value>> {
    if fragment.get("Resources").is_some() {
        fragment.get_mut("Resources")?.as_object_mut()
    } else {
        fragment.as_object_mut()
    }
}

fn is_type(resource: &Value, kind: &str) -> bool {
    resource.get("Type").and_then(Value::as_str) == Some(kind)
}

/// Resolves a CloudFormation value to a string where the template parameters allow: plain
/// strings, `Ref` to a parameter, `Fn::Sub` (with or without its variable map) and `Fn::Join`.
pub fn resolve(value: &Value, params: &Map<String, Value>) -> Option<String> {
    let param = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Object(object) if object.len() == 1 => {
            let (function, argument) = object.iter().next()?;
            match function.as_str() {
                "Ref" => param(argument.as_str()?),
                "Fn::Sub" => match argument {
                    Value::String(text) => substitute(text, &|name| param(name)),
                    Value::Array(parts) if parts.len() == 2 => {
                        let text = parts[0].as_str()?;
                        let names = parts[1].as_object()?;
                        substitute(text, &|name| match names.get(name) {
                            Some(local) => resolve(local, params),
                            None => param(name),
                        })
                    }
                    _ => None,
                },
                "Fn::Join" => {
                    let parts = argument.as_array()?;
                    let delimiter = parts.first()?.as_str()?;
                    let items = parts.get(1)?.as_array()?;
                    let resolved: Option<Vec<String>> =
                        items.iter().map(|item| resolve(item, params)).collect();
                    Some(resolved?.join(delimiter))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `${Name}` substitution; `None` when a name cannot be resolved.
fn substitute(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let name = &after[..end];
        match name.strip_prefix('!') {
            Some(literal) => {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            }
            None => out.push_str(&lookup(name)?),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `s3://{bucket}/releases/{release}/env` into its bucket and release.
pub fn parse_env_url(url: &str) -> Option<(String, String)> {
    let (bucket, key) = url.strip_prefix("s3://")?.split_once('/')?;
    let release = crate::release::release_of_key(key)?;
    (!bucket.is_empty()).then(|| (bucket.to_owned(), release.to_owned()))
}

fn environment_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container
        .get("Environment")?
        .as_array()?
        .iter()
        .find(|entry| entry.get("Name").and_then(Value::as_str) == Some(name))?
        .get("Value")
}

/// Reads the fragment: which task definitions read their environment from S3, from where,
/// and which cannot be rewritten at all. `app_hint` is the transform's `App` parameter.
pub fn plan(fragment: &Value, params: &Map<String, Value>, app_hint: Option<&str>) -> Plan {
    let Some(resources) = resources(fragment) else {
        return Plan::default();
    };
    let mut tasks = Vec::new();
    for (logical_id, resource) in resources {
        if !is_type(resource, "AWS::ECS::TaskDefinition") {
            continue;
        }
        let properties = resource.get("Properties");
        let containers = properties
            .and_then(|p| p.get("ContainerDefinitions"))
            .and_then(Value::as_array);
        let Some(containers) = containers else {
            continue;
        };

        let mut plans = Vec::new();
        let mut problem = None;
        for (index, container) in containers.iter().enumerate() {
            let Some(url) = environment_value(container, "CONVOX_ENV_URL") else {
                continue;
            };
            match container_plan(index, container, url, params, app_hint) {
                Ok(plan) => plans.push(plan),
                Err(reason) => problem = problem.or(Some(reason)),
            }
        }
        if plans.is_empty() && problem.is_none() {
            continue;
        }

        let has_role = properties
            .and_then(|p| p.get("ExecutionRoleArn"))
            .is_some_and(|role| !role.is_null());
        if problem.is_none() && !has_role {
            problem = Some(
                "the task definition has no ExecutionRoleArn, which ECS needs to read secrets"
                    .to_owned(),
            );
        }
        tasks.push(TaskPlan {
            logical_id: logical_id.clone(),
            containers: plans,
            problem,
        });
    }
    Plan { tasks }
}

fn container_plan(
    index: usize,
    container: &Value,
    url: &Value,
    params: &Map<String, Value>,
    app_hint: Option<&str>,
) -> Result<ContainerPlan, String> {
    let name = container
        .get("Name")
        .and_then(|n| resolve(n, params))
        .unwrap_or_else(|| format!("#{index}"));
    let url = resolve(url, params)
        .ok_or_else(|| format!("container {name}: CONVOX_ENV_URL cannot be resolved"))?;
    let (bucket, release) = parse_env_url(&url).ok_or_else(|| {
        format!("container {name}: CONVOX_ENV_URL is not s3://{{bucket}}/releases/{{id}}/env")
    })?;

    let label = container
        .get("DockerLabels")
        .and_then(|labels| labels.get("convox.app"))
        .and_then(|app| resolve(app, params));
    let app = label
        .or_else(|| app_hint.map(str::to_owned))
        .ok_or_else(|| format!("container {name}: no convox.app docker label names the app"))?;

    let allowed = match environment_value(container, "CONVOX_ENV_VARS") {
        None => Allowed::All,
        Some(value) => Allowed::parse(
            &resolve(value, params)
                .ok_or_else(|| format!("container {name}: CONVOX_ENV_VARS cannot be resolved"))?,
        ),
    };
    Ok(ContainerPlan {
        index,
        source: EnvSource {
            app,
            release,
            bucket,
        },
        allowed,
    })
}

/// Rewrites the planned task definitions. `staged` says, for each source, the staged
/// secret or why it is unavailable. A task definition is rewritten whole or not at all:
/// any container it cannot serve, an execution role it cannot grant, or a result over the
/// size limit leaves it exactly as it was. `app_grant` is the secret ARN to grant the
/// fragment's `ExecutionRole` when the fragment is the app template holding that role.
pub fn apply(
    fragment: &mut Value,
    plan: &Plan,
    staged: &BTreeMap<EnvSource, Result<SecretRef, String>>,
    options: &Options,
    app_grant: Option<&str>,
) -> Vec<TaskOutcome> {
    let mut outcomes = Vec::new();
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(arn) = app_grant {
        if resources(fragment)
            .and_then(|r| r.get("ExecutionRole"))
            .is_some()
        {
            grants
                .entry("ExecutionRole".to_owned())
                .or_default()
                .insert(arn.to_owned());
        }
    }

    for task in &plan.tasks {
        let first = task.containers.first().map(|c| &c.source);
        let mut outcome = TaskOutcome {
            logical_id: task.logical_id.clone(),
            app: first.map(|s| s.app.clone()),
            release: first.map(|s| s.release.clone()),
            version_id: None,
            keys: 0,
            fallback: None,
        };
        match rewrite_task(fragment, task, staged, options) {
            Ok((rewritten, role, arns, keys)) => {
                if let Some(role) = role {
                    grants.entry(role).or_default().extend(arns);
                }
                let resources = resources_mut(fragment).expect("planned from these resources");
                resources.insert(task.logical_id.clone(), rewritten);
                outcome.version_id = first
                    .and_then(|s| staged.get(s))
                    .and_then(|r| r.as_ref().ok())
                    .map(|r| r.version_id.clone());
                outcome.keys = keys;
            }
            Err(reason) => outcome.fallback = Some(reason),
        }
        outcomes.push(outcome);
    }

    for (role, arns) in grants {
        grant(fragment, &role, &arns, options);
    }
    outcomes
}

/// The role resource named by `ExecutionRoleArn` when it is a role of this fragment
/// (`Fn::GetAtt`), `Ok(None)` when the role comes from a parameter (the app template grants
/// it), and an error otherwise.
fn execution_role(fragment: &Value, properties: &Value) -> Result<Option<String>, String> {
    let role = properties
        .get("ExecutionRoleArn")
        .ok_or("the task definition has no ExecutionRoleArn")?;
    if role.get("Ref").is_some() {
        return Ok(None);
    }
    let target = match role.get("Fn::GetAtt") {
        Some(Value::Array(parts)) if parts.len() == 2 && parts[1] == "Arn" => parts[0].as_str(),
        Some(Value::String(text)) => text.strip_suffix(".Arn"),
        _ => None,
    };
    let in_fragment = target.filter(|name| {
        resources(fragment)
            .and_then(|r| r.get(*name))
            .is_some_and(|r| is_type(r, "AWS::IAM::Role"))
    });
    match in_fragment {
        Some(name) => Ok(Some(name.to_owned())),
        None => Err(
            "the execution role is neither a role of this template nor a parameter, \
                     so it cannot be granted the secret"
                .to_owned(),
        ),
    }
}

type Rewritten = (Value, Option<String>, BTreeSet<String>, usize);

fn rewrite_task(
    fragment: &Value,
    task: &TaskPlan,
    staged: &BTreeMap<EnvSource, Result<SecretRef, String>>,
    options: &Options,
) -> Result<Rewritten, String> {
    if let Some(problem) = &task.problem {
        return Err(problem.clone());
    }
    let resources = resources(fragment).ok_or("the fragment has no resources")?;
    let mut resource = resources
        .get(&task.logical_id)
        .cloned()
        .ok_or("the task definition vanished")?;
    let properties = resource.get("Properties").ok_or("no Properties")?;
    let role = execution_role(fragment, properties)?;

    let mut arns = BTreeSet::new();
    let mut injected = 0;
    let containers = resource
        .pointer_mut("/Properties/ContainerDefinitions")
        .and_then(Value::as_array_mut)
        .ok_or("no ContainerDefinitions")?;
    for container_plan in &task.containers {
        let secret = match staged.get(&container_plan.source) {
            Some(Ok(secret)) => secret,
            Some(Err(reason)) => return Err(reason.clone()),
            None => return Err("the environment was not staged".to_owned()),
        };
        let container = containers
            .get_mut(container_plan.index)
            .ok_or("container index out of range")?;
        let entries = secret.entries(&container_plan.allowed, options.pin_versions);
        let unnamed = entries
            .iter()
            .filter(|(key, _)| !is_variable_name(key))
            .count();
        if unnamed > 0 {
            return Err(format!(
                "{unnamed} of the keys to inject are not variable names a secret reference can \
                 carry (such as names with ':' or spaces)"
            ));
        }
        injected += entries.len();
        inject_container(container, &entries)?;
        arns.insert(secret.arn.clone());
    }

    let size = serde_json::to_string(&resource["Properties"]).map_or(0, |json| json.len());
    if size > MAX_TASK_DEFINITION_BYTES {
        return Err(format!(
            "with {injected} secrets the task definition would be {size} bytes, over the \
             {MAX_TASK_DEFINITION_BYTES}-byte limit kept for ECS"
        ));
    }
    Ok((resource, role, arns, injected))
}

/// Adds the `Secrets` entries to one container and removes the Convox variables and every
/// `Environment` entry a secret now supplies (ECS refuses a name in both lists).
fn inject_container(container: &mut Value, entries: &[(String, String)]) -> Result<(), String> {
    let object = container
        .as_object_mut()
        .ok_or("a container is not an object")?;

    let existing: BTreeSet<String> = object
        .get("Secrets")
        .and_then(Value::as_array)
        .map(|secrets| {
            secrets
                .iter()
                .filter_map(|s| s.get("Name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let added: Vec<&(String, String)> = entries
        .iter()
        .filter(|(name, _)| !existing.contains(name))
        .collect();
    let names: BTreeSet<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();

    if let Some(environment) = object.get_mut("Environment").and_then(Value::as_array_mut) {
        environment.retain(|entry| {
            let name = entry
                .get("Name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            !CONVOX_ENV_VARIABLES.contains(&name) && !names.contains(name)
        });
    }

    if added.is_empty() {
        return Ok(());
    }
    let secrets = object
        .entry("Secrets")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or("a container's Secrets is not a list")?;
    for (name, value_from) in added {
        secrets.push(json!({ "Name": name, "ValueFrom": value_from }));
    }
    Ok(())
}

/// Gives `role` read access to exactly these secrets, as one inline policy that replaces an
/// earlier one of the same name.
fn grant(fragment: &mut Value, role: &str, arns: &BTreeSet<String>, options: &Options) {
    let Some(properties) = resources_mut(fragment)
        .and_then(|r| r.get_mut(role))
        .and_then(|r| r.as_object_mut())
        .map(|r| r.entry("Properties").or_insert_with(|| json!({})))
    else {
        return;
    };

    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": arns.iter().collect::<Vec<_>>(),
    })];
    if let Some(key) = &options.kms_key_id {
        statements.push(json!({
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key,
            "Condition": {
                "StringEquals": {
                    "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
                }
            }
        }));
    }
    let policy = json!({
        "PolicyName": POLICY_NAME,
        "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
    });

    let Some(object) = properties.as_object_mut() else {
        return;
    };
    let policies = object
        .entry("Policies")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = policies.as_array_mut() {
        list.retain(|p| p.get("PolicyName").and_then(Value::as_str) != Some(POLICY_NAME));
        list.push(policy);
    }
}
