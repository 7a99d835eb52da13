//! The integration tests' harness: a fresh rack in the moto server that `make test` started,
//! reached through the real AWS SDK. Every test makes its own rack name, so tests run in
//! parallel against one server without meeting.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_cloudformation::types::{Parameter, Tag as StackTag};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Tag as BucketTag, Tagging};
use rack_secrets::backend::{AwsResult, NewSecret, SecretInfo, SecretStore, Services, VersionRef};
use rack_secrets::{Config, Rack};

/// The app template: just what Convox's app stacks show the functions.
const APP_TEMPLATE: &str = r#"{
  "Parameters": {
    "Release": {"Type": "String"},
    "SecretsManagerEnv": {"Type": "String", "Default": ""}
  },
  "Resources": {"Settings": {"Type": "AWS::S3::Bucket"}},
  "Outputs": {"Release": {"Value": {"Ref": "Release"}}}
}"#;

/// The SDK configuration for the emulator. Fails loudly when the tests were not started
/// through `scripts/with-moto.sh` (as `make test` does), rather than reaching for AWS.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "AWS_ENDPOINT_URL must name the local moto server; run these tests with `make test`"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Where the integration tests leave their log lines and the secret values they used, for
/// `scripts/check-log-hygiene.sh` to search after the run.
pub fn test_logs_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends every log line of this test binary, at debug level for rack-secrets, to a file.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let binary = std::env::args()
            .next()
            .and_then(|path| {
                std::path::Path::new(&path)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let path = test_logs_dir().join(format!("{binary}-{}.log", std::process::id()));
        let file = std::fs::File::create(path).unwrap();
        let targets: tracing_subscriber::filter::Targets =
            "info,rack_secrets=debug".parse().unwrap();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(std::sync::Mutex::new(file))
            .finish();
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::layer::SubscriberExt::with(subscriber, targets),
        );
    });
}

/// Notes each value of an env file this run writes, for the log hygiene check. Short values
/// ("1", "app") would match by chance and are not secrets in these tests.
pub fn record_values(env_text: &str) {
    use std::io::Write;
    let path = test_logs_dir().join(format!("values-{}.txt", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in env_text.lines() {
        if let Some((_, value)) = line.split_once('=') {
            if value.len() >= 8 && !value.contains('\n') {
                writeln!(file, "{value}").unwrap();
            }
        }
    }
}

/// A name no other test in this run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Secrets Manager calls, counted by kind, passed through to the real client.
/// With `throttle_every(n)`, every n-th write call answers `ThrottlingException` instead of
/// reaching the emulator, as Secrets Manager does past 50 writes a second.
pub struct CountingSecrets {
    inner: aws_sdk_secretsmanager::Client,
    writes: AtomicUsize,
    creates: AtomicUsize,
    throttle_every: AtomicUsize,
    throttled: AtomicUsize,
    /// Refuse writes to a secret scheduled for deletion, as AWS does and moto does not.
    pub aws_deletion_rule: std::sync::atomic::AtomicBool,
    /// Schedule the secret for deletion right after the next describe, as a concurrent
    /// app-cleanup might.
    pub delete_after_describe: std::sync::atomic::AtomicBool,
}

impl CountingSecrets {
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    pub fn throttle_every(&self, n: usize) {
        self.throttle_every.store(n, Ordering::SeqCst);
    }

    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
    }

    /// Counts a write call, or refuses it as throttled.
    fn count_write(&self) -> AwsResult<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.throttle_every.load(Ordering::SeqCst);
        if every > 0 && n.is_multiple_of(every) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            return Err(rack_secrets::error::AwsError {
                code: Some("ThrottlingException".into()),
                message: "ThrottlingException: Rate exceeded".into(),
                transient: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl SecretStore for CountingSecrets {
    async fn describe(&self, name: &str) -> AwsResult<Option<SecretInfo>> {
        let described = self.inner.describe(name).await;
        if self.delete_after_describe.swap(false, Ordering::SeqCst) {
            self.inner.delete(name, 7).await.unwrap();
        }
        described
    }

    async fn create(&self, secret: &NewSecret) -> AwsResult<String> {
        self.count_write()?;
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create(secret).await
    }

    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        json: &str,
        label: &str,
    ) -> AwsResult<()> {
        self.count_write()?;
        if self.aws_deletion_rule.load(Ordering::SeqCst) {
            let pending = self
                .inner
                .describe(name)
                .await?
                .is_some_and(|s| s.pending_deletion);
            if pending {
                return Err(rack_secrets::error::AwsError {
                    code: Some("InvalidRequestException".into()),
                    message: "InvalidRequestException: You can't perform this operation on the \
                              secret because it was marked for deletion."
                        .into(),
                    transient: false,
                });
            }
        }
        self.inner.put_version(name, version_id, json, label).await
    }

    async fn version_ids(&self, name: &str) -> AwsResult<Vec<String>> {
        self.inner.version_ids(name).await
    }

    async fn restore(&self, name: &str) -> AwsResult<()> {
        self.count_write()?;
        self.inner.restore(name).await
    }

    async fn move_label(
        &self,
        name: &str,
        label: &str,
        version_id: &str,
        from_version: Option<&str>,
    ) -> AwsResult<()> {
        self.count_write()?;
        self.inner
            .move_label(name, label, version_id, from_version)
            .await
    }

    async fn remove_replicas(&self, name: &str, regions: &[String]) -> AwsResult<()> {
        self.count_write()?;
        self.inner.remove_replicas(name, regions).await
    }

    async fn delete(&self, name: &str, recovery_days: u8) -> AwsResult<()> {
        self.count_write()?;
        self.inner.delete(name, recovery_days).await
    }

    async fn read(&self, name: &str, version: VersionRef<'_>) -> AwsResult<Option<String>> {
        self.inner.read(name, version).await
    }
}

/// A rack in the emulator, with the functions' `Rack` over it and raw SDK clients for the
/// tests' own setup and checks.
pub struct TestRack {
    pub name: String,
    pub rack: Arc<Rack>,
    pub counter: Arc<CountingSecrets>,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub s3: aws_sdk_s3::Client,
    pub cfn: aws_sdk_cloudformation::Client,
    pub kms: aws_sdk_kms::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub key_id: String,
}

/// How an app's stack and bucket look.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub setting: &'static str,
    pub generation: &'static str,
    /// Tag the bucket as CloudFormation would; without tags the app is found by its stack.
    pub tag_bucket: bool,
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            setting: "Yes",
            generation: "2",
            tag_bucket: true,
        }
    }
}

impl TestRack {
    /// A new rack whose settings are `RACK` plus `settings`.
    pub async fn new(settings: &[(&str, &str)]) -> TestRack {
        capture_logs();
        let name = unique("rack");
        let mut vars: HashMap<String, String> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("RACK".into(), name.clone());
        let config = Config::from_lookup(|key| vars.get(key).cloned()).unwrap();

        let sdk = sdk_config().await;
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let counter = Arc::new(CountingSecrets {
            inner: secrets.clone(),
            writes: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            throttle_every: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            aws_deletion_rule: Default::default(),
            delete_after_describe: Default::default(),
        });
        let mut services = Services::from_sdk_config(&sdk);
        services.secrets = counter.clone();

        let kms = aws_sdk_kms::Client::new(&sdk);
        let key_id = kms
            .create_key()
            .description(format!("rack {name}"))
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .key_id;

        TestRack {
            rack: Arc::new(Rack::new(config, services)),
            counter,
            secrets,
            s3: rack_secrets::sdk::s3_client(&sdk),
            cfn: aws_sdk_cloudformation::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            kms,
            key_id,
            name,
        }
    }

    pub fn secret_name(&self, app: &str) -> String {
        format!("{}/{app}", self.name)
    }

    /// Creates the app's stack, tagged as Convox tags app stacks, with `release` live, and
    /// returns its `Settings` bucket.
    pub async fn create_app(&self, app: &str, release: &str, spec: AppSpec) -> String {
        let stack = format!("{}-{app}", self.name);
        let tags = [
            ("System", "convox"),
            ("Type", "app"),
            ("Rack", self.name.as_str()),
            ("Name", app),
            ("Generation", spec.generation),
        ];
        let parameter = |key: &str, value: &str| {
            Parameter::builder()
                .parameter_key(key)
                .parameter_value(value)
                .build()
        };
        self.cfn
            .create_stack()
            .stack_name(&stack)
            .template_body(APP_TEMPLATE)
            .parameters(parameter("Release", release))
            .parameters(parameter("SecretsManagerEnv", spec.setting))
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| StackTag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .unwrap();

        let bucket = self
            .cfn
            .describe_stack_resource()
            .stack_name(&stack)
            .logical_resource_id("Settings")
            .send()
            .await
            .unwrap()
            .stack_resource_detail
            .unwrap()
            .physical_resource_id
            .unwrap();

        if spec.tag_bucket {
            // moto does not copy stack tags onto the bucket; CloudFormation does.
            let mut tagging = Tagging::builder();
            for (key, value) in tags {
                tagging =
                    tagging.tag_set(BucketTag::builder().key(key).value(value).build().unwrap());
            }
            self.s3
                .put_bucket_tagging()
                .bucket(&bucket)
                .tagging(tagging.build().unwrap())
                .send()
                .await
                .unwrap();
        }
        self.notify_removals(&bucket).await;
        bucket
    }

    /// Gives the bucket a notification setting of its own, one that rack-secrets must keep:
    /// object removals go to a queue. (It also spares moto's answer for a bucket without any
    /// setting, a document with the wrong root element that the SDK rightly refuses; AWS
    /// answers an empty NotificationConfiguration.)
    async fn notify_removals(&self, bucket: &str) {
        let queue_arn = self.queue(&format!("{bucket}-removed")).await.1;
        let queue = aws_sdk_s3::types::QueueConfiguration::builder()
            .queue_arn(queue_arn)
            .events(aws_sdk_s3::types::Event::S3ObjectRemoved)
            .build()
            .unwrap();
        let configuration = aws_sdk_s3::types::NotificationConfiguration::builder()
            .queue_configurations(queue)
            .build();
        self.s3
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(configuration)
            .send()
            .await
            .unwrap();
    }

    /// A new queue: (URL, ARN).
    pub async fn queue(&self, name: &str) -> (String, String) {
        let url = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        (url, arn)
    }

    /// An EventBridge rule that sends the bucket's S3 events to a new queue; returns its URL.
    pub async fn watch_bucket_events(&self, bucket: &str) -> String {
        let (url, arn) = self.queue(&format!("{bucket}-events")).await;
        let rule = format!("{bucket}-events");
        let pattern = serde_json::json!({
            "source": ["aws.s3"],
            "detail": {"bucket": {"name": [bucket]}}
        });
        self.events
            .put_rule()
            .name(&rule)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .unwrap();
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(arn)
            .build()
            .unwrap();
        self.events
            .put_targets()
            .rule(&rule)
            .targets(target)
            .send()
            .await
            .unwrap();
        url
    }

    /// The detail types and object keys of the events waiting in a queue.
    pub async fn received_events(&self, queue_url: &str) -> Vec<(String, String)> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| {
                let event: serde_json::Value =
                    serde_json::from_str(&message.body.unwrap()).unwrap();
                (
                    event["detail-type"].as_str().unwrap_or_default().to_owned(),
                    event["detail"]["object"]["key"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    /// Writes `releases/{release}/env`, sealed with the rack key as Convox writes it.
    pub async fn write_env(&self, bucket: &str, release: &str, text: &str) {
        record_values(text);
        let kms: &dyn rack_secrets::backend::KeyService = &self.kms;
        let sealed = rack_secrets::envelope::seal(kms, &self.key_id, text.as_bytes())
            .await
            .unwrap();
        self.put_object(bucket, &format!("releases/{release}/env"), sealed)
            .await;
    }

    /// Rewrites one field of a release's envelope, as damage or a foreign key would.
    pub async fn tamper_envelope(&self, bucket: &str, release: &str, field: &str, value: &str) {
        let mut envelope = self.read_envelope(bucket, release).await;
        envelope[field] = serde_json::json!(value);
        let body = serde_json::to_vec(&envelope).unwrap();
        self.put_object(bucket, &format!("releases/{release}/env"), body)
            .await;
    }

    /// A release's envelope, as JSON, to tamper with.
    pub async fn read_envelope(&self, bucket: &str, release: &str) -> serde_json::Value {
        let object = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(format!("releases/{release}/env"))
            .send()
            .await
            .unwrap();
        let sealed = object.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&sealed).unwrap()
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }

    /// The app's secret, described straight by Secrets Manager.
    pub async fn describe(
        &self,
        app: &str,
    ) -> aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput {
        self.secrets
            .describe_secret()
            .secret_id(self.secret_name(app))
            .send()
            .await
            .unwrap()
    }

    /// The secret's versions with staging labels, straight from Secrets Manager.
    pub async fn labelled_versions(&self, app: &str) -> HashMap<String, Vec<String>> {
        self.describe(app)
            .await
            .version_ids_to_stages
            .unwrap_or_default()
    }

    /// Every version id of the secret, labelled or not.
    pub async fn all_versions(&self, app: &str) -> Vec<String> {
        let output = self
            .secrets
            .list_secret_version_ids()
            .secret_id(self.secret_name(app))
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
        output
            .versions
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.version_id)
            .collect()
    }

    /// The version that holds `label`.
    pub async fn version_with(&self, app: &str, label: &str) -> Option<String> {
        self.labelled_versions(app)
            .await
            .into_iter()
            .find(|(_, labels)| labels.iter().any(|l| l == label))
            .map(|(id, _)| id)
    }

    /// A version's value as a map, read with the plain SDK.
    pub async fn read_version(&self, app: &str, version_id: &str) -> HashMap<String, String> {
        let value = self
            .secrets
            .get_secret_value()
            .secret_id(self.secret_name(app))
            .version_id(version_id)
            .send()
            .await
            .unwrap()
            .secret_string
            .unwrap();
        serde_json::from_str(&value).unwrap()
    }

    /// When the app's secret is to be deleted; `None` when it is not scheduled for deletion.
    pub async fn deletion_date(
        &self,
        app: &str,
    ) -> Option<aws_sdk_secretsmanager::primitives::DateTime> {
        self.describe(app).await.deleted_date
    }

    pub async fn secret_exists(&self, app: &str) -> bool {
        self.secrets
            .describe_secret()
            .secret_id(self.secret_name(app))
            .send()
            .await
            .is_ok()
    }
}

/// `scripts/fault_proxy.py` in front of the emulator, stopped when dropped.
pub struct FaultProxy {
    child: std::process::Child,
    pub url: String,
    fault_log: std::path::PathBuf,
}

impl FaultProxy {
    /// Starts the proxy with these extra arguments (`--every`, `--faults`, ...).
    pub fn start(args: &[&str]) -> FaultProxy {
        use std::io::BufRead;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap();
        let fault_log = std::env::temp_dir().join(format!("{}.faults", unique("proxy")));
        let mut child = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/fault_proxy.py"))
            .args(["--upstream", &upstream])
            .arg("--fault-log")
            .arg(&fault_log)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the fault proxy starts (make test installs .venv)");
        let mut first_line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let port: u16 = first_line
            .trim()
            .parse()
            .expect("the proxy prints its port");
        FaultProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            fault_log,
        }
    }

    /// The kinds of the faults injected so far, one per fault.
    pub fn faults(&self) -> Vec<String> {
        std::fs::read_to_string(&self.fault_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.fault_log);
    }
}

impl TestRack {
    /// The same rack, with every AWS call going through `proxy`, one attempt timing out after
    /// `attempt_timeout`.
    pub async fn rack_through(
        &self,
        proxy: &FaultProxy,
        attempt_timeout: std::time::Duration,
    ) -> Arc<Rack> {
        let config = rack_secrets::sdk::load_sdk_config(attempt_timeout, Some(&proxy.url)).await;
        Arc::new(Rack::new(
            self.rack.config.clone(),
            Services::from_sdk_config(&config),
        ))
    }
}
