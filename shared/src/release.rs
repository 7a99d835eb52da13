//! A release's environment, read from the app's `Settings` bucket, opened and staged.

use crate::envelope;
use crate::envfile::EnvFile;
use crate::error::{Error, Result};
use crate::rack::Rack;
use crate::stage::Staged;

/// The object key Convox writes for a release's environment.
pub fn env_key(release: &str) -> String {
    format!("releases/{release}/env")
}

/// The release id in an object key of the form `releases/{id}/env`, else `None`.
pub fn release_of_key(key: &str) -> Option<&str> {
    let release = key.strip_prefix("releases/")?.strip_suffix("/env")?;
    is_release_id(release).then_some(release)
}

/// A release id is one path segment: letters, digits, `-` and `_`.
pub fn is_release_id(release: &str) -> bool {
    !release.is_empty()
        && release.len() <= 64
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Rack {
    /// Reads, opens and parses the environment of `release` of `app` from `bucket`.
    pub async fn release_env(&self, app: &str, bucket: &str, release: &str) -> Result<EnvFile> {
        let what = format!("app {app} release {release}");
        let key = env_key(release);
        let object = self
            .services
            .objects
            .get(bucket, &key)
            .await
            .map_err(|err| Error::from_aws(format!("reading s3://{bucket}/{key} of {what}"), err))?
            .ok_or_else(|| {
                Error::Permanent(format!("{what} has no env file at s3://{bucket}/{key}"))
            })?;

        let text = envelope::open_object(self.services.kms.as_ref(), &object, &what).await?;
        EnvFile::parse(&text).map_err(|err| Error::Permanent(format!("{what}: {err}")))
    }

    /// Stages the environment of `release` of `app`, read from its `Settings` bucket.
    pub async fn stage_release(&self, app: &str, bucket: &str, release: &str) -> Result<Staged> {
        let env = self.release_env(app, bucket, release).await?;
        self.stage(app, &env).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_release_env_keys_name_a_release() {
        assert_eq!(
            release_of_key("releases/RABCDEFGHIJ/env"),
            Some("RABCDEFGHIJ")
        );
        for other in [
            "releases/R1/env.bak",
            "releases//env",
            "releases/a/b/env",
            "builds/B1/env",
            "releases/R1/environment",
            "releases/R 1/env",
        ] {
            assert_eq!(release_of_key(other), None, "{other}");
        }
    }
}
