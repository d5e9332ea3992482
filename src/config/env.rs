//! `${VAR}` and `${VAR:-default}` in configuration values.

/// Why a value could not be expanded.
///
/// ```
/// use paynet_auth::config::{ExpandError, expand};
///
/// let env = |_: &str| -> Option<String> { None };
/// assert_eq!(expand("${PAYNET_PASSWORD}", &env), Err(ExpandError::Unset("PAYNET_PASSWORD".into())));
/// assert!(matches!(expand("${PAYNET_PASSWORD", &env), Err(ExpandError::Malformed(_))));
/// // With a default, an unset variable is no error.
/// assert_eq!(expand("${PAYNET_PASSWORD:-}", &env).unwrap(), "");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// The variable is not set and the reference has no default.
    #[error("environment variable `{0}` is not set")]
    Unset(String),
    /// The reference is not of the form `${NAME}` or `${NAME:-default}`.
    #[error("{0}")]
    Malformed(String),
}

/// Replaces `${VAR}` by the variable's value and `${VAR:-default}` by the value or, when it is unset or empty,
/// the default; `$$` is a literal `$`. A variable that is unset and has no default is returned as the error.
///
/// ```
/// use paynet_auth::config::{ExpandError, expand};
/// let env = |name: &str| (name == "USER").then(|| "agent".to_owned());
/// assert_eq!(expand("${USER}@${HOST:-localhost}", &env).unwrap(), "agent@localhost");
/// assert_eq!(expand("${MISSING}", &env).unwrap_err(), ExpandError::Unset("MISSING".into()));
/// assert_eq!(expand("cost: $$5", &env).unwrap(), "cost: $5");
/// ```
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                return Err(ExpandError::Malformed(format!(
                    "unterminated ${{ in \"{text}\""
                )));
            };
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ExpandError::Malformed(format!(
                    "invalid variable name \"{name}\""
                )));
            }
            match (
                env(name).filter(|v| default.is_none() || !v.is_empty()),
                default,
            ) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(ExpandError::Unset(name.to_owned())),
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{ExpandError, expand};

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn default_applies_when_unset_or_empty() {
        assert_eq!(expand("${UNSET:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${SET:-d}", &env).unwrap(), "value");
    }

    #[test]
    fn empty_variable_without_default_is_empty() {
        assert_eq!(expand("a${EMPTY}b", &env).unwrap(), "ab");
    }

    #[test]
    fn missing_variable_is_named() {
        assert_eq!(
            expand("x ${NOPE} y", &env).unwrap_err(),
            ExpandError::Unset("NOPE".into())
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(
            expand("${SET", &env)
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        assert!(
            expand("${1X}", &env)
                .unwrap_err()
                .to_string()
                .contains("invalid variable name")
        );
    }

    #[test]
    fn lone_dollar_is_kept() {
        assert_eq!(expand("5$ and $x", &env).unwrap(), "5$ and $x");
    }
}
