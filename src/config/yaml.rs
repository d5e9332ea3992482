//! Loading [`Config`] from YAML.

use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use super::Config;
use super::env::{ExpandError, expand};
use crate::error::ConfigError;

impl Config {
    /// Reads and parses a YAML file, expanding `${VAR}` from the process environment.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml_str(&text, &path.display().to_string(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// Parses YAML `text` (named `origin` in errors), expanding `${VAR}` through `env`.
    ///
    /// Unknown keys and bad values are errors that name the line and column; a variable that is not set is an
    /// error that names it.
    ///
    /// ```
    /// use paynet_auth::config::Config;
    /// let yaml = "paynet:\n  base_url: http://127.0.0.1:8080/gw\n  username: u\n  password: ${PASS}\n  terminal_id: 1\n";
    /// let config = Config::from_yaml_str(yaml, "inline", &|_| Some("p".into())).unwrap();
    /// assert_eq!(config.default_credential().terminal_id, 1);
    /// let error = Config::from_yaml_str(yaml, "inline", &|_| None).unwrap_err();
    /// assert_eq!(error.to_string(), "inline: line 4: environment variable `PASS` is not set");
    /// ```
    pub fn from_yaml_str(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parse_error = |e: serde_yaml::Error| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        };
        let mut value: Value = serde_yaml::from_str(text).map_err(parse_error)?;
        expand_values(&mut value, env).map_err(|problem| match problem {
            Problem::Missing(var) => ConfigError::MissingVar {
                path: origin.to_owned(),
                line: line_of_variable(text, &var),
                var,
            },
            Problem::Malformed(message) => ConfigError::Parse {
                path: origin.to_owned(),
                message,
            },
        })?;
        match Config::deserialize(value) {
            Ok(config) => match config.refusal() {
                None => Ok(config),
                Some(refusal) => {
                    let line = refusal
                        .fields
                        .iter()
                        .find_map(|field| line_of_key(text, field));
                    Err(ConfigError::Refused {
                        origin: origin.to_owned(),
                        fields: refusal.fields.iter().map(|f| (*f).to_owned()).collect(),
                        reason: match line {
                            Some(line) => format!("line {line}: {}", refusal.reason),
                            None => refusal.reason,
                        },
                    })
                }
            },
            // The expanded tree has no positions; the text itself, parsed again, says where the problem is. The
            // message stays the expanded one, which shows the value that was actually wrong.
            Err(expanded_error) => Err(ConfigError::Parse {
                path: origin.to_owned(),
                message: match serde_yaml::from_str::<Config>(text)
                    .err()
                    .and_then(|e| e.location())
                {
                    Some(at) => format!(
                        "{expanded_error} at line {} column {}",
                        at.line(),
                        at.column()
                    ),
                    None => format!("after expanding environment variables: {expanded_error}"),
                },
            }),
        }
    }
}

enum Problem {
    Missing(String),
    Malformed(String),
}

fn expand_values(value: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), Problem> {
    match value {
        Value::String(text) => {
            *text = expand(text, env).map_err(|e| match e {
                ExpandError::Unset(var) => Problem::Missing(var),
                other => Problem::Malformed(other.to_string()),
            })?;
        }
        Value::Sequence(items) => {
            for item in items {
                expand_values(item, env)?;
            }
        }
        Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                expand_values(item, env)?;
            }
        }
        Value::Tagged(tagged) => expand_values(&mut tagged.value, env)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// The line where the last segment of a dotted field (`paynet.store.encryption_key`) is written as a key, if
/// the file sets it rather than leaving it to its default.
///
/// For a field of an entry of `credentials` (`credentials[1].token_ttl`), the key is looked for from that entry's
/// first line on, so that the line is the entry's, not the first entry's.
fn line_of_key(text: &str, field: &str) -> Option<usize> {
    let key = field.rsplit('.').next().unwrap_or(field);
    let is_key = |line: &str| {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    };
    let from = match field
        .strip_prefix("credentials[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|index| index.parse::<usize>().ok())
    {
        Some(index) => {
            let list = text
                .lines()
                .position(|line| line.trim_end().starts_with("credentials:"))?;
            text.lines()
                .enumerate()
                .skip(list + 1)
                .filter(|(_, line)| line.trim_start().starts_with("- "))
                .nth(index)?
                .0
        }
        None => 0,
    };
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, line)| is_key(line))
        .map(|(i, _)| i + 1)
}

/// The first line that uses `${var}` or `${var:-…}` outside a comment.
fn line_of_variable(text: &str, var: &str) -> usize {
    let plain = format!("${{{var}}}");
    let with_default = format!("${{{var}:-");
    text.lines()
        .position(|line| {
            !line.trim_start().starts_with('#')
                && (line.contains(&plain) || line.contains(&with_default))
        })
        .map_or(0, |i| i + 1)
}
