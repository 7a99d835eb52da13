//! The `Yes`/`No` settings and the rule that decides whether an app's environment moves to
//! Secrets Manager: convox.yml wins, then an app's `Yes`, then the rack's default.

use crate::error::{Error, Result};

/// A Convox-style switch. Only the exact words `Yes` and `No` are accepted, as Convox's own
/// parameters are, so a typo never silently means "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    Yes,
    No,
}

impl Toggle {
    /// Parses `value` for the setting named `setting`; the error names both and what is allowed.
    pub fn parse(setting: &str, value: &str) -> Result<Toggle> {
        match value {
            "Yes" => Ok(Toggle::Yes),
            "No" => Ok(Toggle::No),
            other => Err(Error::Input(format!(
                "{setting} is {other:?}; allowed values are Yes and No"
            ))),
        }
    }

    /// Parses an optional setting, where absent or empty means "not set at this level".
    pub fn parse_optional(setting: &str, value: Option<&str>) -> Result<Option<Toggle>> {
        match value {
            None | Some("") => Ok(None),
            Some(value) => Toggle::parse(setting, value).map(Some),
        }
    }

    pub fn is_yes(self) -> bool {
        self == Toggle::Yes
    }
}

/// Whether an app reads its environment from Secrets Manager, from the three levels of
/// DESIGN section 2: the convox.yml setting (`manifest`) decides when present; otherwise the
/// app's `Yes` opts in, and its `No` cannot override a rack-wide `Yes`.
pub fn enabled(rack: Toggle, app: Option<Toggle>, manifest: Option<Toggle>) -> bool {
    match manifest {
        Some(choice) => choice.is_yes(),
        None => rack.is_yes() || app == Some(Toggle::Yes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Toggle::{No, Yes};

    #[test]
    fn every_combination_of_the_three_levels() {
        // (rack, app, convox.yml, expected), written out by hand from the design's table.
        let table = [
            (No, None, None, false),
            (No, Some(No), None, false),
            (No, Some(Yes), None, true),
            (Yes, None, None, true),
            (Yes, Some(No), None, true),
            (Yes, Some(Yes), None, true),
            (No, None, Some(Yes), true),
            (No, Some(No), Some(Yes), true),
            (No, Some(Yes), Some(Yes), true),
            (Yes, None, Some(Yes), true),
            (Yes, Some(No), Some(Yes), true),
            (Yes, Some(Yes), Some(Yes), true),
            (No, None, Some(No), false),
            (No, Some(No), Some(No), false),
            (No, Some(Yes), Some(No), false),
            (Yes, None, Some(No), false),
            (Yes, Some(No), Some(No), false),
            (Yes, Some(Yes), Some(No), false),
        ];
        assert_eq!(table.len(), 2 * 3 * 3);
        for (rack, app, manifest, expected) in table {
            assert_eq!(
                enabled(rack, app, manifest),
                expected,
                "rack {rack:?}, app {app:?}, convox.yml {manifest:?}"
            );
        }
    }

    #[test]
    fn only_the_exact_words_are_accepted() {
        assert_eq!(Toggle::parse("S", "Yes").unwrap(), Yes);
        assert_eq!(Toggle::parse("S", "No").unwrap(), No);
        for bad in ["yes", "true", "1", " Yes", "NO"] {
            let message = Toggle::parse("SecretsManagerEnv", bad)
                .unwrap_err()
                .to_string();
            assert!(message.contains("SecretsManagerEnv"), "{message}");
            assert!(message.contains("Yes and No"), "{message}");
        }
        assert_eq!(Toggle::parse_optional("S", Some("")).unwrap(), None);
        assert_eq!(Toggle::parse_optional("S", None).unwrap(), None);
    }
}
