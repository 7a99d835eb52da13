//! Staging: one app's environment written as a content-addressed version of its secret,
//! labelled `STAGED`; and promotion, which moves `AWSCURRENT` to a staged version.

use crate::backend::{NewSecret, SecretInfo, VersionRef};
use crate::envfile::{EnvFile, SecretVersion};
use crate::error::{AwsError, Error, Result};
use crate::rack::Rack;

/// The rolling label every staged version gets; it keeps the newest staged version from ever
/// being counted as unused, and it is never `AWSCURRENT`.
pub const STAGED: &str = "STAGED";
/// The label that `PIN_VERSIONS=No` task definitions read, moved only at promote.
pub const CURRENT: &str = "AWSCURRENT";
/// The tag that marks a secret as ours; nothing else is ever written or deleted.
pub const OWNER_TAG: &str = "ManagedBy";
pub const OWNER: &str = "rack-secrets";

/// What staging did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub secret_arn: String,
    pub secret_name: String,
    pub version_id: String,
    /// The environment's key names, sorted.
    pub keys: Vec<String>,
    /// Whether anything was written; `false` when the version was already there.
    pub written: bool,
}

impl Rack {
    /// Stages `env` as a version of the app's secret (DESIGN section 3, steps 1 to 4): creates
    /// the secret when missing, restores it when scheduled for deletion, refuses one we do not
    /// own, and writes nothing when the version already exists.
    ///
    /// The secret is created empty and its first version written like any other; Secrets
    /// Manager itself also gives a secret's first version `AWSCURRENT`, which changes nothing
    /// for running tasks, since none can read a secret that did not exist.
    pub async fn stage(&self, app: &str, env: &EnvFile) -> Result<Staged> {
        let version = SecretVersion::new(app, env)?;
        let name = self.config.secret_name(app);
        let (secret, mut written) = self.prepare_secret(app, &name).await?;

        if !self.has_version(app, &secret, &version.version_id).await? {
            self.put_staged(app, &name, &version).await?;
            written = true;
        }

        Ok(Staged {
            secret_arn: secret.arn,
            secret_name: name,
            version_id: version.version_id,
            keys: version.keys,
            written,
        })
    }

    /// Whether staging and promoting `env` would write anything, without writing: the
    /// read-only half of a backfill's dry run. Returns the version id with the answer.
    pub async fn would_change(&self, app: &str, env: &EnvFile) -> Result<(String, bool)> {
        let version = SecretVersion::new(app, env)?;
        let name = self.config.secret_name(app);
        let Some(secret) = self.describe_secret(app, &name).await? else {
            return Ok((version.version_id, true));
        };
        ensure_owned(&secret)?;
        let changes = secret.pending_deletion
            || secret.version_with(CURRENT) != Some(version.version_id.as_str())
            || !self.has_version(app, &secret, &version.version_id).await?;
        Ok((version.version_id, changes))
    }

    /// The ARN of the app's secret, creating it empty (or restoring it) when needed, so that
    /// an execution role can be granted it before any release is staged.
    pub async fn ensure_secret(&self, app: &str) -> Result<String> {
        let name = self.config.secret_name(app);
        Ok(self.prepare_secret(app, &name).await?.0.arn)
    }

    /// Describes the secret, creating it when missing and restoring it when scheduled for
    /// deletion; refuses one we do not own. Returns it and whether anything was written.
    async fn prepare_secret(&self, app: &str, name: &str) -> Result<(SecretInfo, bool)> {
        let mut written = false;
        let mut secret = match self.describe_secret(app, name).await? {
            Some(secret) => secret,
            None => match self.create_secret(app, name).await? {
                // Just created, empty and ours: nothing more to ask.
                Some(created) => {
                    written = true;
                    created
                }
                // Another creator won the race: look at what it made.
                None => self.describe_secret(app, name).await?.ok_or_else(|| {
                    Error::Transient(format!(
                        "secret {name} of app {app} vanished after creation"
                    ))
                })?,
            },
        };
        ensure_owned(&secret)?;

        if secret.pending_deletion {
            self.restore(app, name).await?;
            secret.pending_deletion = false;
            written = true;
        }
        Ok((secret, written))
    }

    /// Moves `AWSCURRENT` to `version_id` of the app's secret; nothing is written when it is
    /// already there. Returns whether the label moved.
    pub async fn promote(&self, app: &str, version_id: &str) -> Result<bool> {
        let name = self.config.secret_name(app);
        let secret = self.describe_secret(app, &name).await?.ok_or_else(|| {
            Error::Permanent(format!("secret {name} of app {app} does not exist"))
        })?;
        ensure_owned(&secret)?;

        let current = secret.version_with(CURRENT);
        if current == Some(version_id) {
            return Ok(false);
        }
        self.pace.wait().await;
        let moved = self
            .services
            .secrets
            .move_label(&name, CURRENT, version_id, current)
            .await;
        if let Err(err) = moved {
            // A retried call whose first attempt took effect, but whose answer was lost, is
            // refused because the label already moved: look before calling it a failure.
            let now = self.describe_secret(app, &name).await?;
            if now.as_ref().and_then(|s| s.version_with(CURRENT)) != Some(version_id) {
                return Err(Error::from_aws(
                    format!("moving {CURRENT} of {name} to {version_id}"),
                    err,
                ));
            }
        }
        Ok(true)
    }

    /// Reads one version of the app's secret back as an environment; `None` when the secret or
    /// the version does not exist.
    pub async fn read_secret(&self, app: &str, version: VersionRef<'_>) -> Result<Option<EnvFile>> {
        let name = self.config.secret_name(app);
        let json = self
            .services
            .secrets
            .read(&name, version)
            .await
            .map_err(|err| Error::from_aws(format!("reading secret {name} of app {app}"), err))?;
        json.map(|json| EnvFile::from_secret_json(&name, &json))
            .transpose()
    }

    /// Whether the version exists: labelled versions are in the description; an older,
    /// unlabelled one (an environment staged again after another) needs one more read.
    async fn has_version(&self, app: &str, secret: &SecretInfo, version_id: &str) -> Result<bool> {
        if secret.versions.contains_key(version_id) {
            return Ok(true);
        }
        if secret.versions.is_empty() {
            return Ok(false);
        }
        let ids = self
            .services
            .secrets
            .version_ids(&secret.name)
            .await
            .map_err(|err| {
                Error::from_aws(
                    format!("listing versions of {} for app {app}", secret.name),
                    err,
                )
            })?;
        Ok(ids.iter().any(|id| id == version_id))
    }

    async fn describe_secret(&self, app: &str, name: &str) -> Result<Option<SecretInfo>> {
        self.services
            .secrets
            .describe(name)
            .await
            .map_err(|err| Error::from_aws(format!("describing secret {name} of app {app}"), err))
    }

    /// Creates the empty secret and describes it from what was sent; `None` when another
    /// creator won the race, in which case the caller looks at the secret that now exists.
    async fn create_secret(&self, app: &str, name: &str) -> Result<Option<SecretInfo>> {
        let secret = NewSecret {
            name: name.to_owned(),
            description: format!(
                "Environment of Convox app {app} on rack {}",
                self.config.rack
            ),
            kms_key_id: self.config.kms_key_id.clone(),
            tags: vec![
                ("System".into(), "convox".into()),
                ("Rack".into(), self.config.rack.clone()),
                ("App".into(), app.to_owned()),
                (OWNER_TAG.into(), OWNER.into()),
            ],
        };
        self.pace.wait().await;
        match self.services.secrets.create(&secret).await {
            Ok(arn) => Ok(Some(SecretInfo {
                arn,
                name: secret.name,
                tags: secret.tags.into_iter().collect(),
                ..SecretInfo::default()
            })),
            Err(err) if err.is("ResourceExistsException") => Ok(None),
            Err(err) => Err(Error::from_aws(
                format!("creating secret {name} of app {app}"),
                err,
            )),
        }
    }

    async fn restore(&self, app: &str, name: &str) -> Result<()> {
        self.pace.wait().await;
        self.services
            .secrets
            .restore(name)
            .await
            .map_err(|err| Error::from_aws(format!("restoring secret {name} of app {app}"), err))
    }

    /// Writes the version with `STAGED`. A secret scheduled for deletion after it was described
    /// answers `InvalidRequestException`: restore it and write once more.
    async fn put_staged(&self, app: &str, name: &str, version: &SecretVersion) -> Result<()> {
        let put = || async {
            self.pace.wait().await;
            self.services
                .secrets
                .put_version(name, &version.version_id, &version.json, STAGED)
                .await
        };
        let wrap = |err: AwsError| {
            Error::from_aws(
                format!(
                    "writing version {} of {name} for app {app}",
                    version.version_id
                ),
                err,
            )
        };

        match put().await {
            Ok(()) => Ok(()),
            Err(err) if err.is("InvalidRequestException") && err.message.contains("delet") => {
                self.restore(app, name).await?;
                put().await.map_err(wrap)
            }
            Err(err) => Err(wrap(err)),
        }
    }
}

/// Refuses a secret that does not carry our ownership tag: it was made by someone else.
pub(crate) fn ensure_owned(secret: &SecretInfo) -> Result<()> {
    if secret.tags.get(OWNER_TAG).map(String::as_str) == Some(OWNER) {
        Ok(())
    } else {
        Err(Error::Permanent(format!(
            "secret {} exists but has no {OWNER_TAG}={OWNER} tag; it was not created by \
             rack-secrets and is left untouched (delete or tag it to hand it over)",
            secret.name
        )))
    }
}
