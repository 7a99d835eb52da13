//! The rack as the functions see it: its configuration, its AWS services, and how an app, its
//! stack and its `Settings` bucket are found from one another.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::backend::{Services, StackInfo};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pace::Pace;
use crate::toggle::{self, Toggle};

/// The app stack parameter that opts one app in or out.
pub const APP_SETTING: &str = "SecretsManagerEnv";

/// One Convox app, read from its CloudFormation stack.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub stack: StackInfo,
}

impl App {
    /// Only Generation 2 apps have the template shape the functions rewrite.
    pub fn is_generation2(&self) -> bool {
        self.stack.tags.get("Generation").map(String::as_str) == Some("2")
    }

    /// The app's own `SecretsManagerEnv` parameter, when its stack has one.
    pub fn setting(&self) -> Result<Option<Toggle>> {
        let value = self.stack.parameters.get(APP_SETTING).map(String::as_str);
        Toggle::parse_optional(APP_SETTING, value)
            .map_err(|err| Error::Input(format!("app {}: {err}", self.name)))
    }

    /// The release that is live now (the stack output `Release`).
    pub fn live_release(&self) -> Option<&str> {
        self.stack
            .outputs
            .get("Release")
            .map(String::as_str)
            .filter(|release| !release.is_empty())
    }
}

/// Why an app is not handled, in words for a log line and a result's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotGeneration2,
    Disabled,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::NotGeneration2 => "the app's stack is not Generation 2",
            Skip::Disabled => {
                "not enabled: SECRETS_MANAGER_ENV is No and the app's SecretsManagerEnv is not Yes"
            }
        })
    }
}

/// The app name of a stack when its tags make it a Convox app of `rack`.
pub fn app_name_of(stack: &StackInfo, rack: &str) -> Option<String> {
    let tag = |key: &str| stack.tags.get(key).map(String::as_str);
    let is_app = tag("System") == Some("convox") && tag("Type") == Some("app");
    if is_app && tag("Rack") == Some(rack) {
        tag("Name").map(str::to_owned)
    } else {
        None
    }
}

/// The rack: configuration, AWS services, and what it has learnt while the instance is warm.
pub struct Rack {
    pub config: Config,
    pub services: Services,
    /// Spaces this instance's Secrets Manager writes to `WRITE_RATE_LIMIT`.
    pub pace: Pace,
    /// Bucket name to app name, filled as buckets are found.
    bucket_apps: Mutex<HashMap<String, String>>,
}

impl Rack {
    pub fn new(config: Config, services: Services) -> Rack {
        Rack {
            pace: Pace::per_second(config.write_rate_limit),
            config,
            services,
            bucket_apps: Mutex::new(HashMap::new()),
        }
    }

    /// The app `name` of this rack; `None` when its stack is missing or is not this rack's app.
    // TODO: keep each app's stack and bucket while the instance is warm, saving two calls per
    // staging, once a stack update (a changed SecretsManagerEnv) can invalidate the entry.
    pub async fn app(&self, name: &str) -> Result<Option<App>> {
        let stack_name = self.config.stack_name(name);
        let stack = self
            .services
            .stacks
            .describe(&stack_name)
            .await
            .map_err(|err| Error::from_aws(format!("describing stack {stack_name}"), err))?;
        Ok(stack
            .filter(|stack| app_name_of(stack, &self.config.rack).as_deref() == Some(name))
            .map(|stack| App {
                name: name.to_owned(),
                stack,
            }))
    }

    /// Every app of this rack, found by its stack tags.
    pub async fn apps(&self) -> Result<Vec<App>> {
        let stacks = self
            .services
            .stacks
            .list()
            .await
            .map_err(|err| Error::from_aws("listing stacks", err))?;
        Ok(stacks
            .into_iter()
            .filter_map(|stack| {
                let name = app_name_of(&stack, &self.config.rack)?;
                Some(App { name, stack })
            })
            .collect())
    }

    /// Whether the app is handled without a convox.yml word, or why not.
    pub fn check_enabled(&self, app: &App, manifest: Option<Toggle>) -> Result<Option<Skip>> {
        if !app.is_generation2() {
            return Ok(Some(Skip::NotGeneration2));
        }
        let enabled = toggle::enabled(self.config.rack_default, app.setting()?, manifest);
        Ok((!enabled).then_some(Skip::Disabled))
    }

    /// The app's `Settings` bucket.
    pub async fn settings_bucket(&self, app: &str) -> Result<Option<String>> {
        let stack_name = self.config.stack_name(app);
        self.services
            .stacks
            .physical_id(&stack_name, "Settings")
            .await
            .map_err(|err| Error::from_aws(format!("finding the Settings bucket of {app}"), err))
    }

    /// The app whose `Settings` bucket this is, or `None` when it is no app of this rack. The
    /// bucket's tags are asked first; a bucket without them is looked for among the rack's
    /// app stacks.
    pub async fn app_for_bucket(&self, bucket: &str) -> Result<Option<String>> {
        if let Some(app) = self.bucket_apps.lock().expect("cache lock").get(bucket) {
            return Ok(Some(app.clone()));
        }

        let tags = self
            .services
            .objects
            .bucket_tags(bucket)
            .await
            .map_err(|err| Error::from_aws(format!("reading the tags of bucket {bucket}"), err))?;
        let found = if tags.contains_key("Rack") {
            let tag = |key: &str| tags.get(key).map(String::as_str);
            let ours = tag("Rack") == Some(self.config.rack.as_str()) && tag("Type") == Some("app");
            ours.then(|| tag("Name").map(str::to_owned)).flatten()
        } else {
            self.search_app_stacks(bucket).await?
        };

        if let Some(app) = &found {
            self.bucket_apps
                .lock()
                .expect("cache lock")
                .insert(bucket.to_owned(), app.clone());
        }
        Ok(found)
    }

    async fn search_app_stacks(&self, bucket: &str) -> Result<Option<String>> {
        for app in self.apps().await? {
            let settings = self.settings_bucket(&app.name).await?;
            if let Some(settings) = settings {
                self.bucket_apps
                    .lock()
                    .expect("cache lock")
                    .insert(settings.clone(), app.name.clone());
                if settings == bucket {
                    return Ok(Some(app.name));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(tags: &[(&str, &str)], parameters: &[(&str, &str)]) -> StackInfo {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        StackInfo {
            tags: map(tags),
            parameters: map(parameters),
            ..StackInfo::default()
        }
    }

    const APP_TAGS: &[(&str, &str)] = &[
        ("System", "convox"),
        ("Type", "app"),
        ("Rack", "prod"),
        ("Name", "web"),
        ("Generation", "2"),
    ];

    #[test]
    fn an_app_stack_is_known_by_its_tags_and_rack() {
        assert_eq!(
            app_name_of(&stack(APP_TAGS, &[]), "prod").as_deref(),
            Some("web")
        );
        assert_eq!(app_name_of(&stack(APP_TAGS, &[]), "staging"), None);
        let rack_stack = [("System", "convox"), ("Type", "rack"), ("Rack", "prod")];
        assert_eq!(app_name_of(&stack(&rack_stack, &[]), "prod"), None);
    }

    #[test]
    fn generation_and_setting_come_from_the_stack() {
        let app = App {
            name: "web".into(),
            stack: stack(APP_TAGS, &[("SecretsManagerEnv", "Yes")]),
        };
        assert!(app.is_generation2());
        assert_eq!(app.setting().unwrap(), Some(Toggle::Yes));

        let old = App {
            name: "web".into(),
            stack: stack(&APP_TAGS[..4], &[("SecretsManagerEnv", "maybe")]),
        };
        assert!(!old.is_generation2());
        let message = old.setting().unwrap_err().to_string();
        assert!(message.contains("app web") && message.contains("SecretsManagerEnv"));
    }
}
