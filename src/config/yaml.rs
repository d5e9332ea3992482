//! Loading [`Config`] from YAML.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use super::env::{ExpandError, expand};
use super::{Config, ConfigFile, EntryError};
use crate::error::ConfigError;

/// The largest configuration file [`Config::from_yaml_file`] reads: far more than any configuration needs, far
/// less than a device that never ends would make it read.
const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and parses a YAML file, expanding `${VAR}` from the process environment.
    ///
    /// A file larger than 1 MiB is refused without being read further, so that a path to a
    /// device or a stream (`/dev/zero`, a FIFO fed forever) fails at once instead of filling memory.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let read_error = |source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(read_error(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "larger than 1 MiB, more than any configuration needs (is it the right file?)",
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
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
            message: plain_number_error(e.to_string()),
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
        let file = ConfigFile::deserialize(value);
        let config = match file.map(ConfigFile::resolve) {
            Ok(Ok(config)) => Ok(config),
            Ok(Err(entry)) => return Err(entry_error(entry, text, origin)),
            Err(error) => Err(error),
        };
        match config {
            Ok(config) => match config.refusal() {
                None => Ok(config),
                Some(refusal) => {
                    let line = refusal
                        .fields
                        .iter()
                        .find_map(|field| line_of_key(text, field))
                        // A setting an entry of `credentials` takes from `defaults` is written there.
                        .or_else(|| {
                            refusal.fields.iter().find_map(|field| {
                                let (_, setting) =
                                    field.strip_prefix("credentials[")?.split_once("].")?;
                                line_of_key(text, &format!("defaults.{setting}"))
                            })
                        })
                        // A key in a flow mapping (`tls: { ca_file: … }`) is not on a line of its own: its
                        // section's line, then.
                        .or_else(|| {
                            refusal.fields.iter().find_map(|field| {
                                let (parent, _) = field.rsplit_once('.')?;
                                parent.contains('.').then(|| line_of_key(text, parent))?
                            })
                        })
                        .or_else(|| {
                            refusal
                                .fields
                                .first()
                                .and_then(|field| line_of_entry(text, field))
                        });
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
                message: match serde_yaml::from_str::<ConfigFile>(text)
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

/// An entry of `credentials` that lacks a setting even with those of `defaults` is refused, naming it and the
/// setting; one whose settings do not read is a parse error. Either is reported at the entry's first line: the
/// settings were merged before they were read, so the parser's position is not the entry's.
fn entry_error(entry: EntryError, text: &str, origin: &str) -> ConfigError {
    let line = line_of_key(text, &entry.at).or_else(|| line_of_entry(text, &entry.at));
    let reason = match line {
        Some(line) => format!("line {line}: {}", entry.reason),
        None => entry.reason,
    };
    match entry.field {
        Some(field) => ConfigError::Refused {
            origin: origin.to_owned(),
            fields: vec![format!("{}.{field}", entry.at)],
            reason,
        },
        None => ConfigError::Parse {
            path: origin.to_owned(),
            message: reason,
        },
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
/// The key is looked for inside the section the field belongs to: `paynet.…` in the `paynet:` section, wherever it
/// is in the file, and `credentials[1].…` in that entry of the list (entries counted at the list's own indentation,
/// so a nested list does not shift them).
fn line_of_key(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let key = field.rsplit('.').next().unwrap_or(field);
    let is_key = |line: &str| {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    };
    let find = |from: usize, to: usize| (from..to).find(|&i| is_key(lines[i])).map(|i| i + 1);
    if let Some((start, end)) = entry(&lines, field) {
        return find(start, end);
    }
    match field.split_once('.') {
        Some((top, _)) => section(&lines, top).and_then(|(from, to)| find(from, to)),
        None => find(0, lines.len()),
    }
}

/// The first line of the entry of `credentials` a field (`credentials[1].token_ttl`) belongs to: where a refusal
/// of settings the entry leaves to their defaults, or of an entry without a `name`, is reported.
fn line_of_entry(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    entry(&lines, field).map(|(start, _)| start + 1)
}

/// The lines of the entry of `credentials` that `field` names, counted at the list's own indentation so that a
/// nested list does not shift them; `None` for a field of no entry.
fn entry(lines: &[&str], field: &str) -> Option<(usize, usize)> {
    let index: usize = field
        .strip_prefix("credentials[")?
        .split(']')
        .next()?
        .parse()
        .ok()?;
    let (from, to) = section(lines, "credentials")?;
    let indent = |line: &str| line.len() - line.trim_start().len();
    let item = |line: &str| line.trim_start().starts_with("- ");
    let list_indent = lines[from..to]
        .iter()
        .find(|l| item(l))
        .map(|l| indent(l))?;
    let entries: Vec<usize> = (from..to)
        .filter(|&i| item(lines[i]) && indent(lines[i]) == list_indent)
        .collect();
    let start = *entries.get(index)?;
    Some((start, entries.get(index + 1).copied().unwrap_or(to)))
}

/// The lines of the top-level section `name:`, from the one after its key to the next top-level key.
fn section(lines: &[&str], name: &str) -> Option<(usize, usize)> {
    let key = lines.iter().position(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })?;
    let top_level = |line: &&str| !line.is_empty() && !line.starts_with([' ', '\t', '#', '-']);
    let end = lines[key + 1..]
        .iter()
        .position(top_level)
        .map_or(lines.len(), |i| key + 1 + i);
    Some((key + 1, end))
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

/// YAML reads a whole number past 64 bits as a 128-bit one, which no setting holds; the parser then says
/// "invalid type: integer `N` as u128, expected any YAML value". Said plainly instead.
fn plain_number_error(message: String) -> String {
    for wide in ["u128", "i128"] {
        let tail = format!("` as {wide}, expected any YAML value");
        if let Some(end) = message.find(&tail)
            && let Some(start) = message[..end].rfind("invalid type: integer `")
        {
            let number = &message[start + "invalid type: integer `".len()..end];
            return format!(
                "{}{number} is too large: the largest whole number allowed is {}{}",
                &message[..start],
                u64::MAX,
                &message[end + tail.len()..]
            );
        }
    }
    message
}
