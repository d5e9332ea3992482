//! Loading [`Config`] from YAML.
//!
//! Two crates read the file. `yaml_serde` (the maintained continuation of serde_yaml, imported as `serde_yaml`)
//! deserializes it: its errors carry the line and column of a bad value or an unknown key, and its `Value` tree is
//! where `${VAR}` is expanded. It has no spans for the keys of a document that deserialized well, which is what a
//! refusal of settings that parse but cannot work together needs (`paynet.lease_ttl`, and a `credentials[1]`
//! entry's setting taken from `defaults`). Those lines come from `saphyr-parser`'s event spans ([`Positions`]):
//! exact for any layout (flow mappings, nested lists, sections in any order) where a reading of the text would
//! have to guess. serde-saphyr's `Spanned<T>` would give spans too, but only to fields declared as spanned: every
//! public setting would change type, or a second, spanned copy of every struct would be kept. The parser's events
//! give every key's line without either.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use saphyr_parser::Event;
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
                line: Positions::of(text).variable_line(&var).unwrap_or(0),
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
                    let line = Positions::of(text).refusal_line(&refusal.fields);
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
/// setting; one with a setting that does not read is a parse error. The settings were merged before they were
/// read, so the parser's position is not theirs: the line is that of the setting in the entry, else in
/// `defaults`, else the entry's first line.
fn entry_error(entry: EntryError, text: &str, origin: &str) -> ConfigError {
    let positions = Positions::of(text);
    let field = match &entry.setting {
        Some(setting) => format!("{}.{setting}", entry.at),
        None => entry.at.clone(),
    };
    let line = positions
        .line(&field)
        .or_else(|| {
            let setting = entry.setting.as_ref()?;
            positions.line(&format!("defaults.{setting}"))
        })
        .or_else(|| positions.line(&entry.at));
    let reason = match line {
        Some(line) => format!("line {line}: {}", entry.reason),
        None => entry.reason,
    };
    if entry.refused {
        ConfigError::Refused {
            origin: origin.to_owned(),
            fields: vec![field],
            reason,
        }
    } else {
        ConfigError::Parse {
            path: origin.to_owned(),
            message: reason,
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

/// Where the file writes each key and each value, from the parser's spans.
///
/// A key is named by its path, as refusals name fields: `paynet.store.url`, `credentials[1].token_ttl`; an entry of
/// a list by its index (`credentials[1]`, the line where the entry starts). A file the parser cannot read has no
/// positions: it has been read by `yaml_serde` already, so this happens only where the two disagree, and then a
/// refusal has no line rather than a wrong one.
struct Positions {
    keys: HashMap<String, usize>,
    /// Every scalar value (not key) with the line where it starts, in the order of the file.
    values: Vec<(usize, String)>,
}

/// An open collection while the events are read: a mapping (with the path of the key whose value comes next) or
/// a sequence (with the index of the next entry).
enum Open {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

impl Positions {
    fn of(text: &str) -> Self {
        let mut positions = Self {
            keys: HashMap::new(),
            values: Vec::new(),
        };
        let mut open: Vec<Open> = Vec::new();
        for item in saphyr_parser::Parser::new_from_str(text) {
            let Ok((event, span)) = item else {
                return Self {
                    keys: HashMap::new(),
                    values: Vec::new(),
                };
            };
            let line = span.start.line();
            match event {
                Event::Scalar(scalar, ..) => {
                    if let Some(Open::Mapping {
                        path,
                        key: key @ None,
                    }) = open.last_mut()
                    {
                        let at = child(path, &scalar);
                        positions.keys.entry(at.clone()).or_insert(line);
                        *key = Some(at);
                    } else {
                        positions.values.push((line, scalar.into_owned()));
                        done(&mut open);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = match open.last() {
                        Some(Open::Mapping { key: Some(key), .. }) => key.clone(),
                        Some(Open::Sequence { path, next }) => format!("{path}[{next}]"),
                        // The document itself, or a mapping used as a key (which no setting is).
                        _ => String::new(),
                    };
                    positions.keys.entry(path.clone()).or_insert(line);
                    open.push(match event {
                        Event::MappingStart(..) => Open::Mapping { path, key: None },
                        _ => Open::Sequence { path, next: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    open.pop();
                    done(&mut open);
                }
                Event::Alias(_) => done(&mut open),
                _ => {}
            }
        }
        positions
    }

    /// The line of the key `path`, or of the entry of a list it names.
    fn line(&self, path: &str) -> Option<usize> {
        self.keys.get(path).copied()
    }

    /// The line of a refusal of `fields`: the first of them the file sets; for an entry of `credentials`, a setting
    /// it takes from `defaults` where `defaults` sets it; else the entry itself (a refusal of settings it leaves to
    /// their defaults, or of an entry without a `name`).
    fn refusal_line(&self, fields: &[String]) -> Option<usize> {
        fn in_entry(field: &str) -> Option<(String, Option<&str>)> {
            let (index, setting) = field.strip_prefix("credentials[")?.split_once(']')?;
            Some((format!("credentials[{index}]"), setting.strip_prefix('.')))
        }
        fields
            .iter()
            .find_map(|field| self.line(field))
            .or_else(|| {
                fields.iter().find_map(|field| {
                    let (_, setting) = in_entry(field)?;
                    self.line(&format!("defaults.{}", setting?))
                })
            })
            .or_else(|| {
                fields
                    .iter()
                    .find_map(|field| self.line(&in_entry(field)?.0))
            })
    }

    /// The first line whose value uses `${var}` or `${var:-…}`.
    fn variable_line(&self, var: &str) -> Option<usize> {
        let plain = format!("${{{var}}}");
        let with_default = format!("${{{var}:-");
        self.values
            .iter()
            .find(|(_, value)| value.contains(&plain) || value.contains(&with_default))
            .map(|(line, _)| *line)
    }
}

/// The path of `key` in the mapping at `path`.
fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A value has ended: the mapping holding it waits for its next key, the sequence for its next entry.
fn done(open: &mut [Open]) {
    match open.last_mut() {
        Some(Open::Mapping { key, .. }) => *key = None,
        Some(Open::Sequence { next, .. }) => *next += 1,
        None => {}
    }
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
