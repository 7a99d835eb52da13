//! The traits of `backend.rs`, implemented on the AWS SDK clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudformation as cloudformation;
use aws_sdk_kms as kms;
use aws_sdk_s3 as s3;
use aws_sdk_secretsmanager as secretsmanager;

use crate::backend::{
    AwsResult, EnvObjects, KeyService, NewSecret, SecretInfo, SecretStore, Services, StackInfo,
    Stacks, VersionRef,
};
use crate::error::AwsError;

/// How long one attempt of an AWS call may take before it is abandoned and retried. Without
/// it a connection that stops answering would hold the function until Lambda kills it.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per AWS call, the first included; the SDK backs off with jitter in between.
pub const SDK_ATTEMPTS: u32 = 4;

/// Loads the SDK configuration (region, credentials, `AWS_ENDPOINT_URL`) with the functions'
/// timeouts and retries. Outside tests `attempt_timeout` is `ATTEMPT_TIMEOUT` and `endpoint`
/// is `None`; an `endpoint` given here wins over `AWS_ENDPOINT_URL`.
pub async fn load_sdk_config(
    attempt_timeout: Duration,
    endpoint: Option<&str>,
) -> aws_config::SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3).min(attempt_timeout))
        .operation_attempt_timeout(attempt_timeout)
        .operation_timeout(attempt_timeout * SDK_ATTEMPTS + Duration::from_secs(5))
        .build();
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS));
    match endpoint {
        Some(endpoint) => loader.endpoint_url(endpoint).load().await,
        None => loader.load().await,
    }
}

impl Services {
    /// Loads the SDK configuration once and builds every client from it.
    pub async fn from_env() -> Services {
        Services::from_sdk_config(&load_sdk_config(ATTEMPT_TIMEOUT, None).await)
    }

    // TODO: build only the clients a function uses (app-cleanup needs two of the four) once
    // `Services` is split per function; it would bring the bootstraps under 6 MB.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Services {
        Services {
            secrets: Arc::new(secretsmanager::Client::new(config)),
            stacks: Arc::new(cloudformation::Client::new(config)),
            objects: Arc::new(s3_client(config)),
            kms: Arc::new(kms::Client::new(config)),
        }
    }
}

/// An S3 client. With an endpoint override (a local emulator) buckets are addressed by path,
/// since `bucket.127.0.0.1` does not resolve.
pub fn s3_client(config: &aws_config::SdkConfig) -> s3::Client {
    let builder =
        s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some());
    s3::Client::from_conf(builder.build())
}

#[async_trait]
impl KeyService for kms::Client {
    async fn decrypt(&self, wrapped: &[u8]) -> AwsResult<Vec<u8>> {
        let output = self
            .decrypt()
            .ciphertext_blob(kms::primitives::Blob::new(wrapped))
            .send()
            .await?;
        output
            .plaintext
            .map(|blob| blob.into_inner())
            .ok_or_else(|| AwsError::permanent("KMS Decrypt returned no plaintext"))
    }

    async fn generate_data_key(&self, key_id: &str) -> AwsResult<(Vec<u8>, Vec<u8>)> {
        let output = self
            .generate_data_key()
            .key_id(key_id)
            .number_of_bytes(32)
            .send()
            .await?;
        match (output.plaintext, output.ciphertext_blob) {
            (Some(plain), Some(wrapped)) => Ok((plain.into_inner(), wrapped.into_inner())),
            _ => Err(AwsError::permanent("KMS GenerateDataKey returned no key")),
        }
    }
}

#[async_trait]
impl SecretStore for secretsmanager::Client {
    async fn describe(&self, name: &str) -> AwsResult<Option<SecretInfo>> {
        let output = match self.describe_secret().secret_id(name).send().await {
            Ok(output) => output,
            Err(err) => {
                let err = AwsError::from(err);
                return if err.is("ResourceNotFoundException") {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        Ok(Some(SecretInfo {
            arn: output.arn.unwrap_or_default(),
            name: output.name.unwrap_or_default(),
            tags: output
                .tags
                .unwrap_or_default()
                .into_iter()
                .filter_map(|tag| Some((tag.key?, tag.value.unwrap_or_default())))
                .collect(),
            pending_deletion: output.deleted_date.is_some(),
            versions: output.version_ids_to_stages.unwrap_or_default(),
            replica_regions: output
                .replication_status
                .unwrap_or_default()
                .into_iter()
                .filter_map(|replica| replica.region)
                .collect(),
        }))
    }

    async fn create(&self, secret: &NewSecret) -> AwsResult<String> {
        let tags = secret.tags.iter().map(|(key, value)| {
            secretsmanager::types::Tag::builder()
                .key(key)
                .value(value)
                .build()
        });
        let output = self
            .create_secret()
            .name(&secret.name)
            .description(&secret.description)
            .set_kms_key_id(secret.kms_key_id.clone())
            .set_tags(Some(tags.collect()))
            .send()
            .await?;
        output
            .arn
            .ok_or_else(|| AwsError::permanent("CreateSecret returned no ARN"))
    }

    async fn put_version(
        &self,
        name: &str,
        version_id: &str,
        json: &str,
        label: &str,
    ) -> AwsResult<()> {
        self.put_secret_value()
            .secret_id(name)
            .client_request_token(version_id)
            .secret_string(json)
            .version_stages(label)
            .send()
            .await?;
        Ok(())
    }

    async fn version_ids(&self, name: &str) -> AwsResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut pages = self
            .list_secret_version_ids()
            .secret_id(name)
            .include_deprecated(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let versions = page?.versions.unwrap_or_default();
            ids.extend(
                versions
                    .into_iter()
                    .filter_map(|version| version.version_id),
            );
        }
        Ok(ids)
    }

    async fn restore(&self, name: &str) -> AwsResult<()> {
        self.restore_secret().secret_id(name).send().await?;
        Ok(())
    }

    async fn move_label(
        &self,
        name: &str,
        label: &str,
        version_id: &str,
        from_version: Option<&str>,
    ) -> AwsResult<()> {
        self.update_secret_version_stage()
            .secret_id(name)
            .version_stage(label)
            .move_to_version_id(version_id)
            .set_remove_from_version_id(from_version.map(str::to_owned))
            .send()
            .await?;
        Ok(())
    }

    async fn remove_replicas(&self, name: &str, regions: &[String]) -> AwsResult<()> {
        self.remove_regions_from_replication()
            .secret_id(name)
            .set_remove_replica_regions(Some(regions.to_vec()))
            .send()
            .await?;
        Ok(())
    }

    async fn delete(&self, name: &str, recovery_days: u8) -> AwsResult<()> {
        let request = self.delete_secret().secret_id(name);
        let request = if recovery_days == 0 {
            request.force_delete_without_recovery(true)
        } else {
            request.recovery_window_in_days(i64::from(recovery_days))
        };
        request.send().await?;
        Ok(())
    }

    async fn read(&self, name: &str, version: VersionRef<'_>) -> AwsResult<Option<String>> {
        let request = self.get_secret_value().secret_id(name);
        let request = match version {
            VersionRef::Id(id) => request.version_id(id),
            VersionRef::Label(label) => request.version_stage(label),
        };
        match request.send().await {
            Ok(output) => Ok(output.secret_string),
            Err(err) => {
                let err = AwsError::from(err);
                if err.is("ResourceNotFoundException") {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}

fn stack_info(stack: cloudformation::types::Stack) -> StackInfo {
    StackInfo {
        name: stack.stack_name.unwrap_or_default(),
        id: stack.stack_id.unwrap_or_default(),
        status: stack
            .stack_status
            .map(|status| status.as_str().to_owned())
            .unwrap_or_default(),
        tags: stack
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tag| Some((tag.key?, tag.value?)))
            .collect(),
        parameters: stack
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.parameter_key?, p.parameter_value.unwrap_or_default())))
            .collect(),
        outputs: stack
            .outputs
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| Some((o.output_key?, o.output_value.unwrap_or_default())))
            .collect(),
    }
}

/// CloudFormation answers a missing stack with a `ValidationError` saying it does not exist.
fn is_missing_stack(err: &AwsError) -> bool {
    err.is("ValidationError") && err.message.contains("does not exist")
}

#[async_trait]
impl Stacks for cloudformation::Client {
    async fn describe(&self, name_or_id: &str) -> AwsResult<Option<StackInfo>> {
        match self.describe_stacks().stack_name(name_or_id).send().await {
            Ok(output) => Ok(output
                .stacks
                .unwrap_or_default()
                .into_iter()
                .next()
                .map(stack_info)),
            Err(err) => {
                let err = AwsError::from(err);
                if is_missing_stack(&err) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn list(&self) -> AwsResult<Vec<StackInfo>> {
        let mut stacks = Vec::new();
        let mut pages = self.describe_stacks().into_paginator().send();
        while let Some(page) = pages.next().await {
            stacks.extend(page?.stacks.unwrap_or_default().into_iter().map(stack_info));
        }
        Ok(stacks)
    }

    async fn physical_id(&self, stack: &str, logical_id: &str) -> AwsResult<Option<String>> {
        let result = self
            .describe_stack_resource()
            .stack_name(stack)
            .logical_resource_id(logical_id)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output
                .stack_resource_detail
                .and_then(|detail| detail.physical_resource_id)),
            Err(err) => {
                let err = AwsError::from(err);
                if err.is("ValidationError") {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[async_trait]
impl EnvObjects for s3::Client {
    async fn get(&self, bucket: &str, key: &str) -> AwsResult<Option<Vec<u8>>> {
        let output = match self.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => output,
            Err(err) => {
                let err = AwsError::from(err);
                return if err.is("NoSuchKey") {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let bytes = output.body.collect().await.map_err(|err| AwsError {
            code: None,
            message: format!("reading the object body failed: {err}"),
            transient: true,
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn bucket_tags(&self, bucket: &str) -> AwsResult<HashMap<String, String>> {
        match self.get_bucket_tagging().bucket(bucket).send().await {
            Ok(output) => Ok(output
                .tag_set
                .into_iter()
                .map(|tag| (tag.key, tag.value))
                .collect()),
            Err(err) => {
                let err = AwsError::from(err);
                if err.is("NoSuchTagSet") {
                    Ok(HashMap::new())
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn enable_eventbridge(&self, bucket: &str) -> AwsResult<bool> {
        let current = self
            .get_bucket_notification_configuration()
            .bucket(bucket)
            .send()
            .await?;
        if current.event_bridge_configuration.is_some() {
            return Ok(false);
        }
        let configuration = s3::types::NotificationConfiguration::builder()
            .set_topic_configurations(current.topic_configurations)
            .set_queue_configurations(current.queue_configurations)
            .set_lambda_function_configurations(current.lambda_function_configurations)
            .event_bridge_configuration(s3::types::EventBridgeConfiguration::builder().build())
            .build();
        self.put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(configuration)
            .send()
            .await?;
        Ok(true)
    }
}
