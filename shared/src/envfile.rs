//! An app's environment as Convox writes it, parsed by Convox's own rules, and its canonical
//! JSON form: the exact bytes stored as a secret version, and the source of that version's id.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Secrets Manager's limit on a secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 65_536;

/// A parsed environment: key to value, sorted by key. Values are kept byte for byte.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EnvFile {
    vars: BTreeMap<String, String>,
}

/// Never prints values, so an `EnvFile` can sit in a struct that is logged with `{:?}`.
impl std::fmt::Debug for EnvFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.vars.keys().filter(|k| is_variable_name(k)).collect();
        f.debug_struct("EnvFile")
            .field("keys", &names)
            .field("other_keys", &(self.vars.len() - names.len()))
            .finish()
    }
}

impl EnvFile {
    /// Parses env file text the way Convox's reader does:
    /// - lines end at `\n`, and one `\r` just before it is dropped (also on a last line with no
    ///   `\n`, as Go's line scanner does); a `\r` anywhere else is kept;
    /// - a line splits at its first `=`; the key is trimmed, the value kept as it is;
    /// - a line without `=`, or with an empty key, is skipped; a later duplicate key wins.
    ///
    /// Keys and values must be UTF-8, since a secret's value is text; the error names the key
    /// (or the line, when the key itself is not UTF-8) and never shows a value.
    pub fn parse(text: &[u8]) -> Result<EnvFile> {
        let mut vars = BTreeMap::new();
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        if text.is_empty() {
            return Ok(EnvFile { vars });
        }

        for (index, line) in body.split(|&byte| byte == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(equals) = line.iter().position(|&byte| byte == b'=') else {
                continue;
            };

            let key = std::str::from_utf8(&line[..equals])
                .map_err(|_| {
                    Error::Input(format!("line {} has a key that is not UTF-8", index + 1))
                })?
                .trim();
            if key.is_empty() {
                continue;
            }
            let value = std::str::from_utf8(&line[equals + 1..])
                .map_err(|_| Error::Input(format!("the value of {key} is not UTF-8")))?;
            vars.insert(key.to_owned(), value.to_owned());
        }
        Ok(EnvFile { vars })
    }

    /// Builds an environment from pairs (tests, the demo, reading a secret back).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> EnvFile {
        EnvFile {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Reads a secret's JSON value back. Anything but an object of strings is an error that
    /// names the secret, never a panic and never a partial read.
    pub fn from_secret_json(secret: &str, json: &str) -> Result<EnvFile> {
        serde_json::from_str::<BTreeMap<String, String>>(json)
            .map(|vars| EnvFile { vars })
            .map_err(|err| {
                Error::Permanent(format!(
                    "secret {secret} does not hold a JSON object of string values \
                     (line {}, column {})",
                    err.line(),
                    err.column()
                ))
            })
    }

    /// The text form Convox writes, one `KEY=value` a line, sorted by key.
    pub fn to_env_text(&self) -> String {
        self.vars
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.vars.contains_key(key)
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The canonical JSON: an object of strings, keys in byte order, no white space. The
    /// same environment always gives the same bytes.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.vars).expect("a map of strings always serialises")
    }
}

/// An environment ready to be written as a secret version: its canonical JSON and the version
/// id derived from it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub json: String,
    pub version_id: String,
    pub keys: Vec<String>,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.keys.iter().filter(|k| is_variable_name(k)).collect();
        f.debug_struct("SecretVersion")
            .field("version_id", &self.version_id)
            .field("keys", &names)
            .field("bytes", &self.json.len())
            .finish()
    }
}

impl SecretVersion {
    /// Checks the environment of `app` against Secrets Manager's size limit and derives its
    /// version id. Too large is refused whole: nothing is ever truncated.
    pub fn new(app: &str, env: &EnvFile) -> Result<SecretVersion> {
        let json = env.canonical_json();
        if json.len() > MAX_SECRET_BYTES {
            return Err(Error::Permanent(format!(
                "the environment of app {app} is {} bytes as JSON ({} keys); a secret holds at \
                 most {MAX_SECRET_BYTES} bytes",
                json.len(),
                env.len()
            )));
        }
        Ok(SecretVersion {
            version_id: version_id(&json),
            keys: env.keys().map(str::to_owned).collect(),
            json,
        })
    }
}

/// Whether a key is a variable name that may be shown and referenced: a letter or `_`, then
/// letters, digits, `_`, `.` or `-`. Anything else (a `:` that would break a secret reference,
/// a fragment of a multi-line value that happened to hold a `=`) is never echoed in a result
/// or a log, since it may be part of a value.
pub fn is_variable_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A UUID made from the first 16 bytes of the SHA-256 of `json`, marked as a version 8
/// (custom) UUID. Its 36 characters fit Secrets Manager's 32 to 64 character version ids.
pub fn version_id(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> EnvFile {
        EnvFile::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn values_are_kept_byte_for_byte() {
        let env = parse("A=\"quoted\"\nB=export X\nC=trailing  \nD= lead\nE=a=b=c\n");
        assert_eq!(env.get("A"), Some("\"quoted\""));
        assert_eq!(env.get("B"), Some("export X"));
        assert_eq!(env.get("C"), Some("trailing  "));
        assert_eq!(env.get("D"), Some(" lead"));
        assert_eq!(env.get("E"), Some("a=b=c"));
    }

    #[test]
    fn keys_are_trimmed_and_empty_keys_or_lines_without_equals_are_skipped() {
        let env = parse("  SPACED \t=1\n=nokey\n   =blank\njust words\n\n# COMMENT\nX=\n");
        assert_eq!(env.keys().collect::<Vec<_>>(), ["SPACED", "X"]);
        assert_eq!(env.get("SPACED"), Some("1"));
        assert_eq!(env.get("X"), Some(""), "an empty value is a value");
    }

    #[test]
    fn one_carriage_return_before_the_newline_is_dropped_and_others_are_kept() {
        let env = parse("A=1\r\nB=2\r\r\nC=x\ry\nD=4\r");
        assert_eq!(env.get("A"), Some("1"));
        assert_eq!(env.get("B"), Some("2\r"));
        assert_eq!(env.get("C"), Some("x\ry"));
        assert_eq!(env.get("D"), Some("4"));
    }

    #[test]
    fn a_later_line_with_the_same_key_wins() {
        let env = parse("A=first\nA=second\n A =third");
        assert_eq!(env.get("A"), Some("third"));
        assert_eq!(env.len(), 1);
    }

    #[test]
    fn empty_text_is_an_empty_environment() {
        assert!(parse("").is_empty());
        assert!(parse("\n\n").is_empty());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused_by_key_without_showing_it() {
        let err = EnvFile::parse(b"GOOD=1\nBAD=\xff\xfe\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("BAD"), "{err}");
        assert!(!err.contains('\u{fffd}'), "{err}");
        let err = EnvFile::parse(b"\xffKEY=1\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn canonical_json_is_sorted_and_compact_whatever_the_input_order() {
        let a = parse("B=2\nA=\"1\"\nC=\\\n");
        let b = parse("C=\\\nA=\"1\"\nB=2\n");
        assert_eq!(a.canonical_json(), r#"{"A":"\"1\"","B":"2","C":"\\"}"#);
        assert_eq!(a.canonical_json(), b.canonical_json());
        assert_eq!(
            EnvFile::from_secret_json("r/a", &a.canonical_json()).unwrap(),
            a
        );
    }

    #[test]
    fn version_ids_follow_content_only() {
        let one = SecretVersion::new("web", &parse("A=1\nB=2\n")).unwrap();
        let same = SecretVersion::new("web", &parse("B=2\r\nA=1\r\n")).unwrap();
        let other = SecretVersion::new("web", &parse("A=1\nB=3\n")).unwrap();
        assert_eq!(one.version_id, same.version_id);
        assert_ne!(one.version_id, other.version_id);
        assert_eq!(one.version_id.len(), 36);
        let parsed = uuid::Uuid::parse_str(&one.version_id).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
    }

    #[test]
    fn an_environment_too_large_for_a_secret_is_refused_whole() {
        let big_value = EnvFile::from_pairs([("BIG", "x".repeat(70_000))]);
        let err = SecretVersion::new("web", &big_value).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("app web") && message.contains("70010 bytes"),
            "{message}"
        );
        assert!(!message.contains("xxxx"), "{message}");
        assert_eq!(err.kind(), crate::error::Kind::Permanent);

        let many_keys =
            EnvFile::from_pairs((0..2000).map(|i| (format!("KEY_{i:04}"), "v".repeat(40))));
        let message = SecretVersion::new("web", &many_keys)
            .unwrap_err()
            .to_string();
        assert!(message.contains("2000 keys"), "{message}");
    }

    #[test]
    fn an_environment_at_the_limit_is_accepted() {
        // {"K":"..."} is 8 bytes around the value.
        let env = EnvFile::from_pairs([("K", "v".repeat(MAX_SECRET_BYTES - 8))]);
        assert_eq!(
            SecretVersion::new("web", &env).unwrap().json.len(),
            MAX_SECRET_BYTES
        );
    }

    #[test]
    fn a_secret_that_is_not_an_object_of_strings_reads_as_a_clear_error() {
        for bad in [r#"'{"K":"v"}'"#, r#"{"K":1}"#, "[]", ""] {
            let message = EnvFile::from_secret_json("prod/web", bad)
                .unwrap_err()
                .to_string();
            assert!(message.contains("prod/web"), "{message}");
        }
    }

    #[test]
    fn only_plain_variable_names_count_as_names() {
        for good in ["A", "_X", "DB_URL", "a.b-c", "K9"] {
            assert!(is_variable_name(good), "{good}");
        }
        for bad in [
            "",
            "9A",
            "A:B",
            "MY KEY",
            "MIIBOgIBAAJBAK+/x",
            "{WEIRD",
            "é",
        ] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_output_shows_keys_and_never_values() {
        let env = parse("PASSWORD=hunter2\n");
        let version = SecretVersion::new("web", &env).unwrap();
        let shown = format!("{env:?} {version:?}");
        assert!(shown.contains("PASSWORD"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
