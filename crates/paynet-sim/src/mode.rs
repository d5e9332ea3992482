//! The switches as JSON, for `/__admin/mode`: what they are, and a change to some of them.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::login::LoginFailure;
use super::state::Switches;

/// The keys `/__admin/mode` reads and writes, in the order it writes them.
const KEYS: [&str; 7] = [
    "single_session",
    "token_ttl",
    "login_latency",
    "login_failure",
    "drop_after_execute",
    "reject_all_tokens",
    "dribble",
];

/// The switches as `/__admin/mode` answers them: durations in humantime's form (`"2s"`, `"1m 30s"`), a login
/// failure by its name, `null` for a switch that is off.
pub(crate) fn to_json(switches: &Switches) -> Value {
    let duration = |d: Option<Duration>| match d {
        Some(d) => Value::from(humantime::format_duration(d).to_string()),
        None => Value::Null,
    };
    json!({
        "single_session": switches.single_session,
        "token_ttl": duration(switches.token_ttl),
        "login_latency": duration(Some(switches.login_latency)),
        "login_failure": switches.login_failure.map(|failure| failure.to_string()),
        "drop_after_execute": switches.drop_after_execute,
        "reject_all_tokens": switches.reject_all_tokens,
        "dribble": duration(switches.dribble),
    })
}

/// [`to_json`] as text, its members in the order of [`KEYS`] rather than serde_json's alphabetical one, so that
/// related switches stay together for a human reading it.
pub(crate) fn to_text(switches: &Switches) -> String {
    let json = to_json(switches);
    let members: Vec<String> = KEYS
        .iter()
        .map(|key| format!("{}:{}", Value::from(*key), json[*key]))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// Sets the switches `change` names, each to its value (`null` turns it off), leaving the others alone. Checks
/// every key before it changes anything, so a refused change leaves `switches` as they were; the error names the
/// first key it refuses.
pub(crate) fn apply(switches: &mut Switches, change: &Map<String, Value>) -> Result<(), String> {
    let mut next = switches.clone();
    for (key, value) in change {
        let bad = |expected: &str| format!("{key}: expected {expected}, got {value}");
        match key.as_str() {
            "single_session" => {
                next.single_session = flag(value).ok_or_else(|| bad("true, false or null"))?
            }
            "drop_after_execute" => {
                next.drop_after_execute = flag(value).ok_or_else(|| bad("true, false or null"))?;
            }
            "reject_all_tokens" => {
                next.reject_all_tokens = flag(value).ok_or_else(|| bad("true, false or null"))?;
            }
            "token_ttl" => next.token_ttl = duration(key, value)?,
            "login_latency" => next.login_latency = duration(key, value)?.unwrap_or_default(),
            "dribble" => next.dribble = duration(key, value)?,
            "login_failure" => {
                next.login_failure = match value {
                    Value::Null => None,
                    Value::String(name) => Some(
                        name.parse::<LoginFailure>()
                            .map_err(|e| format!("{key}: {e}"))?,
                    ),
                    _ => return Err(bad("a login failure's name or null")),
                };
            }
            _ => {
                return Err(format!("unknown key {key:?} (known: {})", KEYS.join(", ")));
            }
        }
    }
    *switches = next;
    Ok(())
}

fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Null => Some(false),
        Value::Bool(on) => Some(*on),
        _ => None,
    }
}

fn duration(key: &str, value: &Value) -> Result<Option<Duration>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => humantime::parse_duration(text).map(Some).map_err(|e| {
            format!("{key}: {text:?} is not a duration such as \"500ms\" or \"2s\" ({e})")
        }),
        _ => Err(format!(
            "{key}: expected a duration such as \"500ms\" or null, got {value}"
        )),
    }
}
