//! Function configuration: the environment variables of DESIGN section 4, read and checked once
//! at cold start into one struct.

use crate::error::{Error, Result};
use crate::toggle::Toggle;

/// Everything the functions read from their environment, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The rack's name; secrets are `{rack}/{app}` and app stacks `{rack}-{app}`.
    pub rack: String,
    /// `SECRETS_MANAGER_ENV`: the rack-wide default for apps that say nothing themselves.
    pub rack_default: Toggle,
    /// `PIN_VERSIONS`: reference version ids in task definitions rather than `AWSCURRENT`.
    pub pin_versions: bool,
    /// `SECRET_KMS_KEY_ID`: the customer key for new secrets; `None` uses Secrets Manager's own.
    pub kms_key_id: Option<String>,
    /// `RECOVERY_WINDOW_DAYS`: 0 (delete at once) or 7 to 30.
    pub recovery_window_days: u8,
    /// `BACKFILL_CONCURRENCY`: apps staged at once during a backfill.
    pub backfill_concurrency: usize,
    /// `WRITE_RATE_LIMIT`: Secrets Manager write calls per second this function may make.
    pub write_rate_limit: u32,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`, so the rules can be tested without touching the
    /// process environment. An empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());

        let rack = get("RACK").ok_or_else(|| config_error("RACK", "is required"))?;
        if !is_rack_name(&rack) {
            return Err(config_error(
                "RACK",
                "must be lower-case letters, digits and hyphens, starting with a letter",
            ));
        }

        let toggle = |name: &'static str, default: Toggle| -> Result<Toggle> {
            match get(name) {
                None => Ok(default),
                Some(value) => Toggle::parse(name, &value).map_err(|err| Error::Config {
                    variable: name,
                    message: err.to_string(),
                }),
            }
        };
        let rack_default = toggle("SECRETS_MANAGER_ENV", Toggle::No)?;
        let pin_versions = toggle("PIN_VERSIONS", Toggle::Yes)?.is_yes();

        let recovery_window_days = match get("RECOVERY_WINDOW_DAYS") {
            None => 30,
            Some(value) => match value.parse::<u8>() {
                Ok(days) if days == 0 || (7..=30).contains(&days) => days,
                _ => {
                    return Err(config_error(
                        "RECOVERY_WINDOW_DAYS",
                        &format!("is {value:?}; it takes 0 (no recovery) or 7 to 30"),
                    ))
                }
            },
        };

        let backfill_concurrency =
            positive_number(get("BACKFILL_CONCURRENCY"), "BACKFILL_CONCURRENCY", 8, 64)?;
        let write_rate_limit =
            positive_number(get("WRITE_RATE_LIMIT"), "WRITE_RATE_LIMIT", 40, 50)?;

        Ok(Config {
            rack,
            rack_default,
            pin_versions,
            kms_key_id: get("SECRET_KMS_KEY_ID"),
            recovery_window_days,
            backfill_concurrency: backfill_concurrency as usize,
            write_rate_limit,
        })
    }

    /// The name of an app's secret.
    pub fn secret_name(&self, app: &str) -> String {
        format!("{}/{}", self.rack, app)
    }

    /// The name of an app's CloudFormation stack.
    pub fn stack_name(&self, app: &str) -> String {
        format!("{}-{}", self.rack, app)
    }
}

fn config_error(variable: &'static str, message: &str) -> Error {
    Error::Config {
        variable,
        message: message.to_owned(),
    }
}

fn positive_number(
    value: Option<String>,
    variable: &'static str,
    default: u32,
    max: u32,
) -> Result<u32> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.parse::<u32>() {
        Ok(number) if (1..=max).contains(&number) => Ok(number),
        _ => Err(config_error(
            variable,
            &format!("is {value:?}; it takes a whole number from 1 to {max}"),
        )),
    }
}

/// Convox rack and app names: a letter, then lower-case letters, digits and hyphens.
pub fn is_rack_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_rack_is_set() {
        let config = config(&[("RACK", "prod")]).unwrap();
        assert_eq!(config.rack, "prod");
        assert_eq!(config.rack_default, Toggle::No);
        assert!(config.pin_versions);
        assert_eq!(config.kms_key_id, None);
        assert_eq!(config.recovery_window_days, 30);
        assert_eq!(config.backfill_concurrency, 8);
        assert_eq!(config.write_rate_limit, 40);
        assert_eq!(config.secret_name("web"), "prod/web");
        assert_eq!(config.stack_name("web"), "prod-web");
    }

    #[test]
    fn every_setting_is_read() {
        let config = config(&[
            ("RACK", "staging-2"),
            ("SECRETS_MANAGER_ENV", "Yes"),
            ("PIN_VERSIONS", "No"),
            ("SECRET_KMS_KEY_ID", "alias/rack"),
            ("RECOVERY_WINDOW_DAYS", "0"),
            ("BACKFILL_CONCURRENCY", "3"),
            ("WRITE_RATE_LIMIT", "10"),
        ])
        .unwrap();
        assert_eq!(config.rack_default, Toggle::Yes);
        assert!(!config.pin_versions);
        assert_eq!(config.kms_key_id.as_deref(), Some("alias/rack"));
        assert_eq!(config.recovery_window_days, 0);
        assert_eq!(config.backfill_concurrency, 3);
        assert_eq!(config.write_rate_limit, 10);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "RACK"),
            (&[("RACK", "Prod")], "RACK"),
            (
                &[("RACK", "p"), ("SECRETS_MANAGER_ENV", "yes")],
                "SECRETS_MANAGER_ENV",
            ),
            (&[("RACK", "p"), ("PIN_VERSIONS", "true")], "PIN_VERSIONS"),
            (
                &[("RACK", "p"), ("RECOVERY_WINDOW_DAYS", "5")],
                "RECOVERY_WINDOW_DAYS",
            ),
            (
                &[("RACK", "p"), ("RECOVERY_WINDOW_DAYS", "31")],
                "RECOVERY_WINDOW_DAYS",
            ),
            (
                &[("RACK", "p"), ("BACKFILL_CONCURRENCY", "0")],
                "BACKFILL_CONCURRENCY",
            ),
            (
                &[("RACK", "p"), ("WRITE_RATE_LIMIT", "51")],
                "WRITE_RATE_LIMIT",
            ),
        ];
        for (pairs, variable) in cases {
            let message = config(pairs).unwrap_err().to_string();
            assert!(message.starts_with(variable), "{message}");
        }
    }
}
