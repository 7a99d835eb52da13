//! The narrow seams where the library meets AWS: one trait per service, holding only the calls
//! the functions make. `sdk.rs` implements each once on the AWS SDK client.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::AwsError;

pub type AwsResult<T> = Result<T, AwsError>;

/// KMS: the rack key that wraps env file data keys.
#[async_trait]
pub trait KeyService: Send + Sync {
    /// Unwraps a data key.
    async fn decrypt(&self, wrapped: &[u8]) -> AwsResult<Vec<u8>>;
    /// A new 32-byte data key: (plain, wrapped under `key_id`).
    async fn generate_data_key(&self, key_id: &str) -> AwsResult<(Vec<u8>, Vec<u8>)>;
}

/// What `DescribeSecret` tells about a secret.
#[derive(Debug, Clone, Default)]
pub struct SecretInfo {
    pub arn: String,
    pub name: String,
    pub tags: HashMap<String, String>,
    /// Scheduled for deletion (and so restorable).
    pub pending_deletion: bool,
    /// Version ids that carry staging labels, with their labels.
    pub versions: HashMap<String, Vec<String>>,
    /// Regions the secret is replicated to.
    pub replica_regions: Vec<String>,
}

impl SecretInfo {
    /// The version that holds `label`, if any.
    pub fn version_with(&self, label: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == label))
            .map(|(id, _)| id.as_str())
    }
}

/// A secret to create, empty: its first version is written separately so that it can carry
/// `STAGED` rather than the `AWSCURRENT` that a value given at creation would get.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub name: String,
    pub description: String,
    pub kms_key_id: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Secrets Manager.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// `None` when no secret has that name.
    async fn describe(&self, name: &str) -> AwsResult<Option<SecretInfo>>;
    /// Creates an empty secret and returns its ARN.
    async fn create(&self, secret: &NewSecret) -> AwsResult<String>;
    /// Writes a version with the given id and one staging label.
    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        json: &str,
        label: &str,
    ) -> AwsResult<()>;
    /// Every version id of the secret, labelled or not.
    async fn version_ids(&self, name: &str) -> AwsResult<Vec<String>>;
    /// Cancels a scheduled deletion.
    async fn restore(&self, name: &str) -> AwsResult<()>;
    /// Moves `label` to `version_id`, taking it from `from_version` when another holds it.
    async fn move_label(
        &self,
        name: &str,
        label: &str,
        version_id: &str,
        from_version: Option<&str>,
    ) -> AwsResult<()>;
    /// Stops replicating the secret to these regions.
    async fn remove_replicas(&self, name: &str, regions: &[String]) -> AwsResult<()>;
    /// Schedules deletion with a recovery window of `recovery_days`; 0 deletes at once.
    async fn delete(&self, name: &str, recovery_days: u8) -> AwsResult<()>;
    /// A version's value, by id or else by label; `None` when there is no such version.
    async fn read(&self, name: &str, version: VersionRef<'_>) -> AwsResult<Option<String>>;
}

/// Which version of a secret to read.
#[derive(Debug, Clone, Copy)]
pub enum VersionRef<'a> {
    Id(&'a str),
    Label(&'a str),
}

/// What the functions need of a CloudFormation stack.
#[derive(Debug, Clone, Default)]
pub struct StackInfo {
    pub name: String,
    pub id: String,
    pub status: String,
    pub tags: HashMap<String, String>,
    pub parameters: HashMap<String, String>,
    pub outputs: HashMap<String, String>,
}

/// CloudFormation.
#[async_trait]
pub trait Stacks: Send + Sync {
    /// A stack by name or id; `None` when it does not exist.
    async fn describe(&self, name_or_id: &str) -> AwsResult<Option<StackInfo>>;
    /// Every stack in the region, all pages.
    async fn list(&self) -> AwsResult<Vec<StackInfo>>;
    /// The physical id of a stack's resource; `None` when the stack or resource is missing.
    async fn physical_id(&self, stack: &str, logical_id: &str) -> AwsResult<Option<String>>;
}

/// S3: the apps' `Settings` buckets.
#[async_trait]
pub trait EnvObjects: Send + Sync {
    /// The object's bytes; `None` when it does not exist.
    async fn get(&self, bucket: &str, key: &str) -> AwsResult<Option<Vec<u8>>>;
    /// The bucket's tags; empty when it has none.
    async fn bucket_tags(&self, bucket: &str) -> AwsResult<HashMap<String, String>>;
    /// Switches on delivery of the bucket's events to EventBridge, keeping its other
    /// notification settings. Returns whether it was off.
    async fn enable_eventbridge(&self, bucket: &str) -> AwsResult<bool>;
}

/// The AWS services one function talks to, behind their traits.
#[derive(Clone)]
pub struct Services {
    pub secrets: Arc<dyn SecretStore>,
    pub stacks: Arc<dyn Stacks>,
    pub objects: Arc<dyn EnvObjects>,
    pub kms: Arc<dyn KeyService>,
}
