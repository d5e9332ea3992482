//! Loading the YAML configuration: every key, `${VAR}` / `${VAR:-default}` expansion through an injected
//! environment (the process environment is never touched), defaults, and errors that say where the problem is.

#![cfg(feature = "yaml")]

use std::time::Duration;

use paynet_auth::config::{Config, DEFAULT_STORE_URL, PaynetConfig, TokenFieldConfig};
use paynet_auth::error::ConfigError;
use secrecy::ExposeSecret;

const ORIGIN: &str = "paynet.yaml";
const PASSWORD: &str = "s3cret-Pa55word";
/// Base64 of the 32 bytes `0123456789abcdef0123456789abcdef`.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// An environment that knows exactly `vars`.
fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, ORIGIN, &env_of(vars))
}

fn load_err(text: &str, vars: &[(&str, &str)]) -> ConfigError {
    match load(text, vars) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error,
    }
}

/// The 1-based line of `text` that contains `needle`.
fn line_containing(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` is not in the text"))
}

/// Asserts that `error` is a parse error of [`ORIGIN`] whose message says `line N column M` with N the line of
/// `needle` in `text`, and mentions every word of `mentions`.
fn assert_located(error: &ConfigError, text: &str, needle: &str, mentions: &[&str]) {
    let message = error.to_string();
    assert!(
        matches!(error, ConfigError::Parse { path, .. } if path == ORIGIN),
        "expected a parse error of {ORIGIN}: {error:?}"
    );
    assert!(
        message.starts_with(ORIGIN),
        "the message names the file: {message}"
    );
    let line = line_containing(text, needle);
    assert!(
        message.contains(&format!("line {line} column ")),
        "the message points at line {line} (`{needle}`): {message}"
    );
    for word in mentions {
        assert!(
            message.contains(word),
            "the message mentions `{word}`: {message}"
        );
    }
}

/// A minimal valid file with `line` inserted as the last key of `paynet`.
fn minimal_with(line: &str) -> String {
    format!(
        "paynet:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: agent\n  password: \"${{PASS}}\"\n  \
         terminal_id: 4027096\n{line}\n"
    )
}

const PASS_ENV: &[(&str, &str)] = &[("PASS", PASSWORD)];

/// The text settings that variables usually fill (base URL, login path, username, password, store URL) and the
/// encryption key as the store will use it, for comparing in one assertion.
fn texts(paynet: &PaynetConfig) -> (Vec<&str>, Option<String>) {
    let key = paynet
        .store_options()
        .encryption_key
        .map(|key| key.expose_secret().to_owned());
    let texts = vec![
        paynet.base_url.as_str(),
        &paynet.login_path,
        &paynet.username,
        paynet.password.expose_secret(),
        &paynet.store.url,
    ];
    (texts, key)
}

#[test]
fn full_example_with_every_key_is_loaded() {
    let text = "\
paynet:
  base_url: \"https://gateway.example/gw\"
  login_path: \"/v3/login\"
  username: \"${PAYNET_USERNAME}\"
  password: \"${PAYNET_PASSWORD}\"
  terminal_id: 4027096
  token_ttl: \"12h\"
  expiry_skew: \"45s\"
  login_timeout: \"10s\"
  lease_ttl: \"1m 30s\"
  token_field: top_level
  rejection_code: -7777
  max_request_body: 2048
  inspect_limit: 512
  store:
    url: \"postgres://app:dbpass@db.example/paynet\"
    encryption_key: \"${PAYNET_TOKEN_KEY}\"
    pool_size: 3
    connect_timeout: \"2s\"
";
    let config = load(
        text,
        &[
            ("PAYNET_USERNAME", "username_17627_56530"),
            ("PAYNET_PASSWORD", PASSWORD),
            ("PAYNET_TOKEN_KEY", KEY),
        ],
    )
    .unwrap();
    let paynet = config.default_credential();
    assert_eq!(
        texts(paynet),
        (
            vec![
                "https://gateway.example/gw",
                "/v3/login",
                "username_17627_56530",
                PASSWORD,
                "postgres://app:dbpass@db.example/paynet",
            ],
            Some(KEY.to_owned())
        )
    );
    assert_eq!(paynet.terminal_id, 4_027_096);
    assert_eq!(paynet.token_ttl, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(paynet.expiry_skew, Duration::from_secs(45));
    assert_eq!(paynet.login_timeout, Duration::from_secs(10));
    assert_eq!(paynet.lease_ttl, Duration::from_secs(90));
    assert_eq!(paynet.token_field, TokenFieldConfig::TopLevel);
    assert_eq!(paynet.rejection_code, -7777);
    assert_eq!(paynet.max_request_body, 2048);
    assert_eq!(paynet.inspect_limit, 512);
    assert_eq!(paynet.store.pool_size, 3);
    assert_eq!(paynet.store.connect_timeout, Duration::from_secs(2));
    assert_eq!(
        paynet.url("/v2/service"),
        "https://gateway.example/gw/v2/service"
    );
}

#[test]
fn every_store_url_scheme_is_accepted_as_written() {
    for url in [
        "sqlite:///var/lib/paynet/tokens.db",
        "postgres://app@db.example/paynet",
        "mysql://app@db.example/paynet",
        "memory:",
    ] {
        let config = load(
            &minimal_with(&format!("  store:\n    url: \"{url}\"")),
            PASS_ENV,
        )
        .unwrap();
        assert_eq!(config.default_credential().store.url, url);
        assert!(config.default_credential().store.encryption_key.is_none());
    }
}

#[test]
fn defaults_apply_to_keys_left_out() {
    let config = load(&minimal_with(""), PASS_ENV).unwrap();
    let paynet = config.default_credential();
    assert_eq!(paynet.login_path, "/v2/user");
    assert_eq!(paynet.store.url, DEFAULT_STORE_URL);
    assert_eq!(DEFAULT_STORE_URL, "sqlite://paynet-tokens.db");
    assert!(paynet.store.encryption_key.is_none());
    assert_eq!(paynet.token_ttl, None);
    assert_eq!(paynet.login_timeout, Duration::from_secs(10));
    assert_eq!(paynet.token_field, TokenFieldConfig::Params);
    assert_eq!(paynet.rejection_code, -9999);

    // A `store` section without `url` still gets the default URL.
    let config = load(
        &minimal_with(&format!("  store:\n    encryption_key: \"{KEY}\"")),
        PASS_ENV,
    )
    .unwrap();
    assert_eq!(config.default_credential().store.url, DEFAULT_STORE_URL);
}

#[test]
fn variables_and_defaults_are_expanded_from_the_injected_environment() {
    let text = "\
paynet:
  base_url: \"http://${GW_HOST:-127.0.0.1}:${GW_PORT:-8080}/gw\"
  login_path: \"${LOGIN_PATH:-/v2/user}\"
  username: \"${USER_NAME}\"
  password: \"${PASS}\"
  terminal_id: 1
  login_timeout: \"${LOGIN_TIMEOUT:-10s}\"
  store:
    url: \"sqlite://${DATA_DIR:-/tmp}/tokens.db\"
    encryption_key: \"${TOKEN_KEY:-}\"
";
    // Unset variables with a default take the default; an empty one does too.
    let config = load(
        text,
        &[("USER_NAME", "agent"), ("PASS", PASSWORD), ("GW_PORT", "")],
    )
    .unwrap();
    assert_eq!(
        texts(config.default_credential()),
        (
            vec![
                "http://127.0.0.1:8080/gw",
                "/v2/user",
                "agent",
                PASSWORD,
                "sqlite:///tmp/tokens.db"
            ],
            None, // an empty key leaves encryption off
        )
    );
    assert_eq!(
        config.default_credential().login_timeout,
        Duration::from_secs(10)
    );

    // Set variables win over the defaults.
    let config = load(
        text,
        &[
            ("USER_NAME", "agent"),
            ("PASS", PASSWORD),
            ("GW_HOST", "gateway.example"),
            ("GW_PORT", "9443"),
            ("LOGIN_PATH", "/v3/login"),
            ("LOGIN_TIMEOUT", "15s"),
            ("DATA_DIR", "/var/lib/paynet"),
            ("TOKEN_KEY", KEY),
        ],
    )
    .unwrap();
    assert_eq!(
        texts(config.default_credential()),
        (
            vec![
                "http://gateway.example:9443/gw",
                "/v3/login",
                "agent",
                PASSWORD,
                "sqlite:///var/lib/paynet/tokens.db"
            ],
            Some(KEY.to_owned())
        )
    );
    assert_eq!(
        config.default_credential().login_timeout,
        Duration::from_secs(15)
    );
}

#[test]
fn terminal_id_from_a_variable_is_a_number() {
    let text = minimal_with("").replace("terminal_id: 4027096", "terminal_id: \"${TERMINAL}\"");
    let config = load(&text, &[("PASS", PASSWORD), ("TERMINAL", "4027096")]).unwrap();
    assert_eq!(config.default_credential().terminal_id, 4_027_096);

    // Unquoted, the reference is a YAML string all the same.
    let text = minimal_with("").replace("terminal_id: 4027096", "terminal_id: ${TERMINAL}");
    let config = load(&text, &[("PASS", PASSWORD), ("TERMINAL", "17")]).unwrap();
    assert_eq!(config.default_credential().terminal_id, 17);
}

#[test]
fn missing_variable_is_named_with_its_line() {
    let text = minimal_with("  store:\n    encryption_key: \"${PAYNET_TOKEN_KEY}\"");
    let error = load_err(&text, PASS_ENV);
    match &error {
        ConfigError::MissingVar { path, line, var } => {
            assert_eq!(path, ORIGIN);
            assert_eq!(var, "PAYNET_TOKEN_KEY");
            assert_eq!(*line, line_containing(&text, "${PAYNET_TOKEN_KEY}"));
        }
        other => panic!("expected MissingVar, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(ORIGIN), "{message}");
    assert!(message.contains("PAYNET_TOKEN_KEY"), "{message}");
    assert!(
        message.contains(&format!(
            "line {}",
            line_containing(&text, "${PAYNET_TOKEN_KEY}")
        )),
        "{message}"
    );
}

#[test]
fn missing_variable_line_is_its_own_not_that_of_a_longer_name() {
    // `${PASS}` is missing; `${PASSPHRASE}` on an earlier line is set and must not be blamed.
    let text = "\
paynet:
  base_url: \"http://127.0.0.1:8080/gw\"
  username: \"${PASSPHRASE}\"
  password: \"${PASS}\"
  terminal_id: 1
";
    match load_err(text, &[("PASSPHRASE", "agent")]) {
        ConfigError::MissingVar { var, line, .. } => {
            assert_eq!(var, "PASS");
            assert_eq!(line, 4, "`${{PASS}}` is used on line 4");
        }
        other => panic!("expected MissingVar, got {other:?}"),
    }
}

#[test]
fn unknown_key_is_an_error_with_file_line_and_column() {
    let text = "\
paynet:
  base_url: \"http://127.0.0.1:8080/gw\"
  username: agent
  pasword: \"${PASS}\"
  terminal_id: 1
";
    let error = load_err(text, PASS_ENV);
    assert_located(&error, text, "pasword", &["pasword"]);

    // Also in the nested store section, and at the top level.
    let text = minimal_with("  store:\n    url: \"memory:\"\n    encrytion_key: x");
    assert_located(
        &load_err(&text, PASS_ENV),
        &text,
        "encrytion_key",
        &["encrytion_key"],
    );
    let text = format!("{}paynett: {{}}\n", minimal_with(""));
    assert_located(&load_err(&text, PASS_ENV), &text, "paynett", &["paynett"]);
}

#[test]
fn bad_duration_is_an_error_with_its_line() {
    let text = minimal_with("  login_timeout: \"10 parsecs\"");
    assert_located(&load_err(&text, PASS_ENV), &text, "parsecs", &[]);

    let text = minimal_with("  token_ttl: twelve hours");
    assert_located(&load_err(&text, PASS_ENV), &text, "twelve", &[]);
}

#[test]
fn bad_terminal_id_is_an_error_with_its_line() {
    let text = minimal_with("").replace("terminal_id: 4027096", "terminal_id: \"T-4027096\"");
    assert_located(
        &load_err(&text, PASS_ENV),
        &text,
        "terminal_id",
        &["T-4027096"],
    );

    let text = minimal_with("").replace("terminal_id: 4027096", "terminal_id: -5");
    assert_located(&load_err(&text, PASS_ENV), &text, "terminal_id", &[]);

    // A variable that expands to something that is not a number is still blamed on its line.
    let text = minimal_with("").replace("terminal_id: 4027096", "terminal_id: \"${TERMINAL}\"");
    let error = load_err(&text, &[("PASS", PASSWORD), ("TERMINAL", "abc")]);
    assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with(ORIGIN), "{message}");
    assert!(
        message.contains(&format!("line {}", line_containing(&text, "terminal_id"))),
        "{message}"
    );
}

#[test]
fn missing_required_key_is_an_error_naming_it() {
    let text =
        "paynet:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: agent\n  password: p\n";
    let message = load_err(text, &[]).to_string();
    assert!(message.starts_with(ORIGIN), "{message}");
    assert!(message.contains("terminal_id"), "{message}");
}

#[test]
fn debug_never_shows_the_password_or_the_encryption_key() {
    let text = minimal_with(&format!(
        "  store:\n    url: \"postgres://app:dbpass@db.example/paynet\"\n    encryption_key: \"{KEY}\""
    ));
    let config = load(&text, PASS_ENV).unwrap();
    for shown in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.default_credential()),
        format!("{:?}", config.default_credential().store),
    ] {
        assert!(!shown.contains(PASSWORD), "password in {shown}");
        assert!(!shown.contains(KEY), "encryption key in {shown}");
        assert!(!shown.contains("dbpass"), "database password in {shown}");
    }
    let shown = format!("{config:?}");
    assert!(
        shown.contains("agent"),
        "the non-secret fields are shown: {shown}"
    );
    assert!(shown.contains("4027096"), "{shown}");
}

#[test]
fn from_yaml_file_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paynet.yaml");
    std::fs::write(
        &path,
        "paynet:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: agent\n  password: \"$$ecret\"\n  \
         terminal_id: 1\n  login_timeout: \"10 parsecs\"\n",
    )
    .unwrap();
    let message = Config::from_yaml_file(&path).unwrap_err().to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error names the file: {message}"
    );
    assert!(message.contains("line 6 column "), "{message}");

    std::fs::write(
        &path,
        "paynet:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: agent\n  password: \"$$ecret\"\n  \
         terminal_id: 1\n",
    )
    .unwrap();
    let config = Config::from_yaml_file(&path).unwrap();
    assert_eq!(
        config.default_credential().password.expose_secret(),
        "$ecret"
    );
}

#[test]
fn from_yaml_file_on_a_missing_file_is_a_read_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let error = Config::from_yaml_file(&path).unwrap_err();
    match &error {
        ConfigError::Read {
            path: named,
            source,
        } => {
            assert_eq!(named, &path.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    assert!(error.to_string().contains(&path.display().to_string()));
}

/// Asserts that `error` refuses exactly `fields` of [`ORIGIN`], at the line of `needle` in `text`, with a message
/// naming each field; returns the message.
fn assert_refused(error: &ConfigError, text: &str, needle: &str, fields: &[&str]) -> String {
    let message = error.to_string();
    match error {
        ConfigError::Refused {
            origin,
            fields: named,
            ..
        } => {
            assert_eq!(origin, ORIGIN, "{message}");
            assert_eq!(named, fields, "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let line = line_containing(text, needle);
    assert!(
        message.starts_with(&format!("{ORIGIN}: line {line}: ")),
        "the message names the file and line {line} (`{needle}`): {message}"
    );
    for field in fields {
        assert!(
            message.contains(&format!("`{field}`")),
            "the message names `{field}`: {message}"
        );
    }
    message
}

#[test]
fn token_ttl_not_longer_than_expiry_skew_is_refused_naming_both() {
    let text = minimal_with("  token_ttl: \"30s\"\n  expiry_skew: \"30s\"");
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "token_ttl",
        &["paynet.token_ttl", "paynet.expiry_skew"],
    );
    assert!(message.contains("(30s)"), "the values are shown: {message}");

    // The default skew (30 s) counts as well.
    let text = minimal_with("  token_ttl: \"20s\"");
    assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "token_ttl",
        &["paynet.token_ttl", "paynet.expiry_skew"],
    );

    let config = load(&minimal_with("  token_ttl: \"31s\""), PASS_ENV).unwrap();
    assert_eq!(
        config.default_credential().token_ttl,
        Some(Duration::from_secs(31))
    );
}

#[test]
fn lease_ttl_not_covering_the_login_and_the_store_timeout_is_refused_naming_them() {
    // 10 s login + 2 × 5 s store timeout = 20 s.
    let text = minimal_with(
        "  login_timeout: \"10s\"\n  lease_ttl: \"20s\"\n  store:\n    url: \"sqlite://t.db\"\n    \
         connect_timeout: \"5s\"",
    );
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "lease_ttl",
        &[
            "paynet.lease_ttl",
            "paynet.login_timeout",
            "paynet.store.connect_timeout",
        ],
    );
    assert!(message.contains("(20s)") && message.contains("(10s)") && message.contains("(5s"));

    let config = load(
        &text.replace("lease_ttl: \"20s\"", "lease_ttl: \"21s\""),
        PASS_ENV,
    )
    .unwrap();
    assert_eq!(
        config.default_credential().lease_ttl,
        Duration::from_secs(21)
    );
    assert_eq!(
        config.default_credential().store_options().connect_timeout,
        Duration::from_secs(5)
    );

    // The default store timeout applies when the file leaves it out.
    let text = minimal_with("  login_timeout: \"10s\"\n  lease_ttl: \"15s\"");
    assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "lease_ttl",
        &[
            "paynet.lease_ttl",
            "paynet.login_timeout",
            "paynet.store.connect_timeout",
        ],
    );
}

#[test]
fn lease_ttl_of_a_memory_store_only_has_to_cover_the_login() {
    let text = minimal_with(
        "  login_timeout: \"10s\"\n  lease_ttl: \"10s\"\n  store:\n    url: \"memory:\"",
    );
    assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "lease_ttl",
        &["paynet.lease_ttl", "paynet.login_timeout"],
    );
    load(
        &text.replace("lease_ttl: \"10s\"", "lease_ttl: \"11s\""),
        PASS_ENV,
    )
    .unwrap();
}

#[test]
fn bad_encryption_key_names_the_field_the_file_and_how_to_make_one_never_the_key() {
    let short = "c2hvcnQ="; // base64 of "short", 5 bytes
    for (key, problem) in [
        (short, "got 5 bytes"),
        ("not base64!", "got invalid base64"),
    ] {
        let text = minimal_with("  store:\n    encryption_key: \"${PAYNET_TOKEN_KEY}\"");
        let message = assert_refused(
            &load_err(&text, &[("PASS", PASSWORD), ("PAYNET_TOKEN_KEY", key)]),
            &text,
            "encryption_key",
            &["paynet.store.encryption_key"],
        );
        assert!(message.contains(problem), "{message}");
        assert!(
            message.contains("openssl rand -base64 32"),
            "says how to make a key: {message}"
        );
        assert!(!message.contains(key), "the key is not shown: {message}");
    }
}

#[test]
fn base_url_without_scheme_or_host_is_refused_with_its_line() {
    for url in [
        "gateway.example/gw",
        "/gw",
        "ftp://gateway.example/gw",
        "http:///gw",
    ] {
        let text = minimal_with("").replace("http://127.0.0.1:8080/gw", url);
        let message = assert_refused(
            &load_err(&text, PASS_ENV),
            &text,
            "base_url",
            &["paynet.base_url"],
        );
        assert!(
            message.contains(url) && message.contains("https://gateway.example/gw"),
            "{message}"
        );
    }
    // From a variable, the line is that of the key that uses it.
    let text = minimal_with("").replace("http://127.0.0.1:8080/gw", "${GATEWAY}");
    let message = assert_refused(
        &load_err(&text, &[("PASS", PASSWORD), ("GATEWAY", "gateway.example")]),
        &text,
        "base_url",
        &["paynet.base_url"],
    );
    assert!(message.contains("gateway.example"), "{message}");
}

/// An entry of `credentials` is named by its own path, not by the `paynet:` section's.
#[test]
fn a_bad_base_url_in_a_credentials_entry_names_the_entrys_field() {
    let text = two_credentials("", "").replacen(
        "base_url: \"http://127.0.0.1:8080/gw\"\n    username: \"u\"\n    password: \"${PASS}\"\n    terminal_id: 2",
        "base_url: \"gateway.example/gw\"\n    username: \"u\"\n    password: \"${PASS}\"\n    terminal_id: 2",
        1,
    );
    assert!(text.contains("gateway.example/gw"), "{text}");
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "gateway.example/gw",
        &["credentials[1].base_url"],
    );
    assert!(message.contains("credential `south`"), "{message}");
    assert!(!message.contains("paynet.base_url"), "{message}");
}

/// Each timing rule is written once and reported by both readers of the settings: the builder under its method
/// names, the file under its keys (with the line).
#[test]
fn each_timing_rule_is_refused_by_the_builder_and_the_file_under_their_own_names() {
    use paynet_auth::{PaynetLogin, TokenManager};
    let builder = || {
        TokenManager::builder(PaynetLogin::new(
            "http://127.0.0.1:8080/gw",
            "agent",
            PASSWORD.into(),
            1,
        ))
    };
    let secs = Duration::from_secs;
    let cases: [(&str, &str, _, &[&str], &[&str]); 5] = [
        (
            "  token_ttl: \"30s\"\n  expiry_skew: \"30s\"",
            "token_ttl",
            builder().token_ttl(Some(secs(30))).expiry_skew(secs(30)),
            &["paynet.token_ttl", "paynet.expiry_skew"],
            &["token_ttl", "expiry_skew"],
        ),
        (
            "  token_ttl: \"2m\"\n  refresh_ahead: \"90s\"",
            "refresh_ahead",
            builder().token_ttl(Some(secs(120))).refresh_ahead(secs(90)),
            &[
                "paynet.refresh_ahead",
                "paynet.token_ttl",
                "paynet.expiry_skew",
            ],
            &["refresh_ahead", "token_ttl", "expiry_skew"],
        ),
        (
            "  login_timeout: \"10s\"\n  lease_ttl: \"10s\"\n  store:\n    url: \"memory:\"",
            "lease_ttl",
            builder().login_timeout(secs(10)).lease_ttl(secs(10)),
            &["paynet.lease_ttl", "paynet.login_timeout"],
            &["lease_ttl", "login_timeout"],
        ),
        (
            "  login_timeout: \"0s\"",
            "login_timeout",
            builder().login_timeout(Duration::ZERO),
            &["paynet.login_timeout"],
            &["login_timeout"],
        ),
        (
            "  expiry_skew: \"6307200000s\"",
            "expiry_skew",
            builder().expiry_skew(secs(200 * 365 * 24 * 3600)),
            &["paynet.expiry_skew"],
            &["expiry_skew"],
        ),
    ];
    for (line, needle, built, yaml_fields, builder_fields) in cases {
        let text = minimal_with(line);
        let from_file = assert_refused(&load_err(&text, PASS_ENV), &text, needle, yaml_fields);
        let from_builder = built
            .build()
            .expect_err("the builder refuses what the file does");
        let ConfigError::Refused {
            origin,
            fields,
            reason,
        } = &from_builder
        else {
            panic!("expected a refusal, got {from_builder:?}");
        };
        assert_eq!(origin, "TokenManagerBuilder");
        assert_eq!(fields, builder_fields, "{from_builder}");
        // One rule, one wording: the file's reason is the builder's with the file's names.
        let mut renamed = reason.clone();
        for (builder_name, yaml_name) in builder_fields.iter().zip(yaml_fields) {
            renamed = renamed.replace(&format!("`{builder_name}`"), &format!("`{yaml_name}`"));
        }
        assert!(from_file.ends_with(&renamed), "{from_file}\n{renamed}");
    }
}

#[test]
fn previous_encryption_keys_reach_the_store_options_and_are_never_shown() {
    const OLD: &str = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleS0=";
    let text = minimal_with(&format!(
        "  store:\n    encryption_key: \"{KEY}\"\n    previous_encryption_keys: [\"${{OLD_KEY}}\", \"${{OLDER_KEY:-}}\"]"
    ));
    let config = load(&text, &[PASS_ENV, &[("OLD_KEY", OLD)]].concat()).unwrap();
    let options = config.default_credential().store_options();
    // The unset, empty entry is left out.
    let previous: Vec<&str> = options
        .previous_encryption_keys
        .iter()
        .map(|k| k.expose_secret())
        .collect();
    assert_eq!(previous, [OLD]);
    let shown = format!("{config:?}");
    assert!(!shown.contains(OLD) && !shown.contains(KEY), "{shown}");
    assert!(
        shown.contains("previous_encryption_keys: [2 keys]"),
        "{shown}"
    );

    // Without the key, none.
    let config = load(&minimal_with(""), PASS_ENV).unwrap();
    assert!(
        config
            .default_credential()
            .store_options()
            .previous_encryption_keys
            .is_empty()
    );
}

#[test]
fn refresh_ahead_and_static_stability_are_read_and_a_window_that_cannot_work_is_refused() {
    let text =
        minimal_with("  token_ttl: \"2m\"\n  expiry_skew: \"30s\"\n  refresh_ahead: \"90s\"");
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "refresh_ahead",
        &[
            "paynet.refresh_ahead",
            "paynet.token_ttl",
            "paynet.expiry_skew",
        ],
    );
    assert!(
        message.contains("(1m 30s)") && message.contains("`0s`"),
        "{message}"
    );

    let config = load(
        &minimal_with("  token_ttl: \"2m\"\n  refresh_ahead: \"89s\""),
        PASS_ENV,
    )
    .unwrap();
    assert_eq!(
        config.default_credential().refresh_ahead,
        Some(Duration::from_secs(89))
    );
    assert!(
        config.default_credential().static_stability,
        "on by default"
    );

    let off = load(
        &minimal_with("  token_ttl: \"2m\"\n  refresh_ahead: \"0s\"\n  static_stability: false"),
        PASS_ENV,
    )
    .unwrap();
    assert_eq!(off.default_credential().refresh_ahead, Some(Duration::ZERO));
    assert!(!off.default_credential().static_stability);

    let defaults = load(&minimal_with(""), PASS_ENV).unwrap();
    assert_eq!(
        defaults.default_credential().refresh_ahead,
        None,
        "the default window applies"
    );
}

/// Two entries of `credentials`, the second with a `token_ttl` of its own.
fn two_credentials(second_extra: &str, tail: &str) -> String {
    format!(
        "credentials:\n  - name: north\n    base_url: \"http://127.0.0.1:8080/gw\"\n    username: \"u\"\n    \
         password: \"${{PASS}}\"\n    terminal_id: 1\n    token_ttl: \"1h\"\n  \
         - name: south\n    base_url: \"http://127.0.0.1:8080/gw\"\n    username: \"u\"\n    \
         password: \"${{PASS}}\"\n    terminal_id: 2\n{second_extra}{tail}"
    )
}

#[test]
fn a_credentials_list_is_read_with_its_default_and_a_single_paynet_section_is_the_default_credential()
 {
    let config = load(&two_credentials("    token_ttl: \"2h\"\n", ""), PASS_ENV).unwrap();
    let names: Vec<&str> = config
        .credentials()
        .iter()
        .map(|c| c.credential_name())
        .collect();
    assert_eq!(names, ["north", "south"]);
    assert_eq!(
        config.default_credential().credential_name(),
        "north",
        "the first"
    );
    assert_eq!(
        config.credential("south").unwrap().token_ttl,
        Some(Duration::from_secs(7200))
    );
    let config = load(
        &two_credentials("", "default_credential: south\n"),
        PASS_ENV,
    )
    .unwrap();
    assert_eq!(config.default_credential().terminal_id, 2);

    // A file with one `paynet:` section: named `default` (or its own `name`).
    let config = load(&minimal_with(""), PASS_ENV).unwrap();
    assert_eq!(config.credentials().len(), 1);
    assert_eq!(config.default_credential().credential_name(), "default");
    let config = load(&minimal_with("  name: \"merchant-17\""), PASS_ENV).unwrap();
    assert_eq!(config.default_credential().credential_name(), "merchant-17");
}

#[test]
fn a_credential_that_cannot_work_is_refused_naming_its_entry_and_line() {
    // The second entry's ttl is not longer than its skew; the line is the second entry's, not the first's.
    let text = two_credentials("    token_ttl: \"20s\"\n", "");
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "token_ttl: \"20s\"",
        &["credentials[1].token_ttl", "credentials[1].expiry_skew"],
    );
    assert!(message.contains("credential `south`"), "{message}");
}

#[test]
fn credentials_without_a_name_with_a_name_twice_or_an_unknown_default_are_refused() {
    let text = two_credentials("", "").replace("  - name: south\n    base_url", "  - base_url");
    let error = load_err(&text, PASS_ENV);
    assert!(
        matches!(&error, ConfigError::Refused { fields, .. } if fields == &["credentials[1].name"]),
        "{error}"
    );
    assert!(error.to_string().contains("has no `name`"), "{error}");

    let text = two_credentials("", "").replace("name: south", "name: north");
    let error = load_err(&text, PASS_ENV);
    assert!(
        matches!(&error, ConfigError::Refused { fields, .. } if fields == &["credentials[1].name"]),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("a credential named `north` is already configured"),
        "{error}"
    );

    // An unnamed `paynet:` section is `default`: a list entry of that name clashes with it, and the message says so.
    let text = minimal_with("") + &two_credentials("", "").replace("name: north", "name: default");
    let error = load_err(&text, PASS_ENV);
    assert!(
        error
            .to_string()
            .contains("(the name of the `paynet:` section, which has no `name` of its own)"),
        "{error}"
    );

    let text = two_credentials("", "default_credential: west\n");
    let error = load_err(&text, PASS_ENV);
    assert!(
        matches!(&error, ConfigError::Refused { fields, .. } if fields == &["default_credential"]),
        "{error}"
    );
    assert!(
        error.to_string().contains("(configured: north, south)"),
        "{error}"
    );

    let error = load_err("credentials: []\n", PASS_ENV);
    assert!(
        matches!(&error, ConfigError::Refused { fields, .. } if fields == &["paynet", "credentials"]),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("no credential: write a `paynet:` section"),
        "{error}"
    );
}

/// The line of a refusal is that of the entry it belongs to, however the file is laid out: a nested list in an
/// earlier entry, a `paynet:` section written after the list, an entry without a name in the middle, a refusal of
/// a setting the entry leaves to its default (the line of the one it sets).
#[test]
fn a_refusal_in_a_credentials_list_points_at_its_entrys_line() {
    let entry = |name: &str, extra: &str| {
        format!(
            "  - {name}base_url: \"http://127.0.0.1:8080/gw\"\n    username: \"u\"\n    password: \"${{PASS}}\"\n    \
             terminal_id: 1\n{extra}"
        )
    };
    // Entry 0 with a nested list before a valid token_ttl; entry 1's token_ttl is refused.
    let text = format!(
        "credentials:\n{}{}",
        entry(
            "name: a\n    ",
            "    store:\n      url: \"memory:\"\n      previous_encryption_keys:\n        - \"\"\n    token_ttl: \"12h\"\n"
        ),
        entry("name: b\n    ", "    token_ttl: \"10s\"\n"),
    );
    assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "token_ttl: \"10s\"",
        &["credentials[1].token_ttl", "credentials[1].expiry_skew"],
    );

    // A `paynet:` section after the list: its own line, not the entry's.
    let text = format!(
        "credentials:\n{}paynet:\n  name: p\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: \"u\"\n  \
         password: \"${{PASS}}\"\n  terminal_id: 2\n  token_ttl: \"10s\"\n",
        entry("name: a\n    ", "    token_ttl: \"12h\"\n"),
    );
    assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "token_ttl: \"10s\"",
        &["paynet.token_ttl", "paynet.expiry_skew"],
    );

    // The middle entry without a name: its first line, not the next entry's `name:`.
    let text = format!(
        "credentials:\n{}{}{}",
        entry("name: a\n    ", ""),
        entry("", ""),
        entry("name: c\n    ", ""),
    );
    let error = load_err(&text, PASS_ENV);
    let line = text
        .lines()
        .position(|l| l.starts_with("  - base_url"))
        .unwrap()
        + 1;
    assert!(
        error
            .to_string()
            .contains(&format!("line {line}: `credentials[1]` has no `name`")),
        "{error}"
    );

    // Entry 1 sets only login_timeout, so its default lease_ttl is refused: the line of login_timeout.
    let text = format!(
        "credentials:\n{}{}",
        entry("name: a\n    ", "    lease_ttl: \"60s\"\n"),
        entry("name: b\n    ", "    login_timeout: \"40s\"\n"),
    );
    let error = load_err(&text, PASS_ENV);
    let line = line_containing(&text, "login_timeout: \"40s\"");
    assert!(
        error
            .to_string()
            .contains(&format!("line {line}: credential `b`")),
        "{error}"
    );
}

/// Durations that cannot work alone: a zero wait, a span past what a timestamp holds (a token stored with it
/// could not be printed), a request timeout that a login wait always runs out. Each is refused with its
/// file, line and key.
#[test]
fn impossible_durations_are_refused_naming_the_key() {
    for (line, needle, fields) in [
        (
            "  login_timeout: \"0s\"",
            "login_timeout",
            &["paynet.login_timeout"][..],
        ),
        (
            "  request_timeout: \"0s\"",
            "request_timeout",
            &["paynet.request_timeout"],
        ),
        ("  token_ttl: \"7980y\"", "token_ttl", &["paynet.token_ttl"]),
        (
            "  expiry_skew: \"200y\"",
            "expiry_skew",
            &["paynet.expiry_skew"],
        ),
        (
            "  login_timeout: \"30s\"\n  request_timeout: \"20s\"",
            "request_timeout",
            &["paynet.request_timeout", "paynet.login_timeout"],
        ),
    ] {
        let text = minimal_with(line);
        let message = assert_refused(&load_err(&text, PASS_ENV), &text, needle, fields);
        assert!(!message.contains("poll_interval"), "{message}");
    }
    let text = minimal_with("  token_ttl: \"7980y\"");
    let message = load_err(&text, PASS_ENV).to_string();
    assert!(message.contains("longer than 100 years"), "{message}");
    // Within bounds, and the default request timeout (30 s) is longer than the default login timeout (10 s).
    let config = load(&minimal_with("  token_ttl: \"99y\""), PASS_ENV).unwrap();
    assert_eq!(
        config.default_credential().request_timeout,
        Duration::from_secs(30)
    );
}

/// A `base_url` with a port past 65535, a query or a fragment, and a `login_path` that is a whole URL or not a
/// path, are refused at load rather than glued into URLs that cannot work.
#[test]
fn urls_that_cannot_be_joined_are_refused() {
    for (base_url, why) in [
        ("http://127.0.0.1:99999/gw", "port `99999`"),
        ("http://127.0.0.1:0/gw", "port `0`"),
        ("http://127.0.0.1:8080/gw?x=1", "no query or fragment"),
        ("http://127.0.0.1:8080/gw#top", "no query or fragment"),
    ] {
        let text = minimal_with("").replace("http://127.0.0.1:8080/gw", base_url);
        let error = load_err(&text, PASS_ENV);
        let message = error.to_string();
        assert!(message.contains(why), "{base_url}: {message}");
        assert!(message.contains("base_url"), "{base_url}: {message}");
    }
    for (path, why) in [
        ("https://gateway.example/gw/v2/user", "a whole URL"),
        ("v2/user", "must start with `/`"),
        ("/v2/user?x=1", "no query"),
    ] {
        let text = minimal_with(&format!("  login_path: \"{path}\""));
        let message = assert_refused(
            &load_err(&text, PASS_ENV),
            &text,
            "login_path",
            &["paynet.login_path"],
        );
        assert!(message.contains(why), "{path}: {message}");
    }
}

/// A `terminal_id` past 64 bits says so, not "integer as u128, expected any YAML value".
#[test]
fn a_terminal_id_too_large_says_so() {
    let text = minimal_with("").replace(
        "terminal_id: 4027096",
        "terminal_id: 99999999999999999999999",
    );
    let message = load_err(&text, PASS_ENV).to_string();
    assert!(message.contains("too large"), "{message}");
    assert!(message.contains("18446744073709551615"), "{message}");
    assert!(!message.contains("u128"), "{message}");
    let text = minimal_with("").replace(
        "terminal_id: 4027096",
        "terminal_id: \"99999999999999999999999\"",
    );
    let message = load_err(&text, PASS_ENV).to_string();
    assert!(message.contains("too large"), "{message}");
}

/// A `credentials:` list with `defaults:` (written after the list, as a file may have it) and four terminals.
fn with_defaults(defaults: &str, west: &str) -> String {
    format!(
        "credentials:\n  - name: north\n    username: n\n    terminal_id: 1\n    token_ttl: \"2h\"\n  \
         - name: south\n    username: s\n    terminal_id: 2\n    store:\n      pool_size: 2\n  \
         - name: east\n    username: e\n    terminal_id: 3\n  - name: west\n{west}    terminal_id: 4\n\
         defaults:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  password: \"${{PASS}}\"\n{defaults}  store:\n    \
         url: \"memory:\"\n    pool_size: 4\n"
    )
}

#[test]
fn entries_take_the_settings_of_defaults_they_do_not_set() {
    let text = with_defaults("  token_ttl: \"12h\"\n", "    username: w\n");
    let config = load(&text, PASS_ENV).unwrap();
    for credential in config.credentials() {
        assert_eq!(credential.base_url, "http://127.0.0.1:8080/gw");
        assert_eq!(credential.password.expose_secret(), PASSWORD);
        assert_eq!(
            credential.store.url,
            "memory:",
            "{}",
            credential.credential_name()
        );
    }
    let east = config.credential("east").unwrap();
    assert_eq!(
        (east.username.as_str(), east.terminal_id),
        ("e", 3),
        "the entry's own"
    );
    assert_eq!(east.token_ttl, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(east.store.pool_size, 4);
    // An entry's own setting wins over the default, and inside `store` only the keys it sets.
    let north = config.credential("north").unwrap();
    assert_eq!(north.token_ttl, Some(Duration::from_secs(2 * 3600)));
    let south = config.credential("south").unwrap();
    assert_eq!(
        (south.store.url.as_str(), south.store.pool_size),
        ("memory:", 2)
    );
}

#[test]
fn an_entry_incomplete_after_defaults_is_refused_naming_it_and_the_setting() {
    let text = with_defaults("", "");
    let error = load_err(&text, PASS_ENV);
    assert!(
        matches!(&error, ConfigError::Refused { fields, .. } if fields == &["credentials[3].username"]),
        "{error:?}"
    );
    let line = line_containing(&text, "- name: west");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "line {line}: `credentials[3]` (`west`) has no `username`, and `defaults` has none"
        )),
        "{message}"
    );
}

#[test]
fn a_setting_taken_from_defaults_that_cannot_work_is_refused_at_its_line_in_defaults() {
    let text = with_defaults("  token_ttl: \"20s\"\n", "    username: w\n");
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "token_ttl: \"20s\"",
        &["credentials[1].token_ttl", "credentials[1].expiry_skew"],
    );
    // `north` sets a token_ttl that works; `south` is the first to take the default's.
    assert!(message.contains("credential `south`"), "{message}");
}

/// The line of a refused key is where the file writes that key, whatever the text around it looks like: here a
/// multi-line password holds a line that reads like the key, and the key itself is quoted.
#[test]
fn a_refusal_points_at_the_key_not_at_text_that_reads_like_it() {
    let text = "paynet:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: agent\n  password: |\n    \
                token_ttl: 1h\n  terminal_id: 4027096\n  \"token_ttl\": \"20s\"\n";
    assert_refused(
        &load_err(text, &[]),
        text,
        "\"token_ttl\": \"20s\"",
        &["paynet.token_ttl", "paynet.expiry_skew"],
    );
}

/// A setting of an entry that does not read is reported at its line, in the entry or in `defaults` where the entry
/// took it from, with the parser's own words; so is a `defaults` section without a `credentials` list to use it.
#[test]
fn a_setting_of_an_entry_that_does_not_read_is_reported_at_its_line() {
    for (defaults, west, needle, words) in [
        (
            "  login_timeout: \"soon\"\n",
            "    username: w\n",
            "login_timeout: \"soon\"",
            "`credentials[0]` (`north`): ",
        ),
        (
            "",
            "    username: w\n    token_ttl: \"later\"\n",
            "token_ttl: \"later\"",
            "`credentials[3]` (`west`): ",
        ),
        (
            "",
            "    username: w\n    tokn_ttl: \"1h\"\n",
            "tokn_ttl",
            "unknown field `tokn_ttl`",
        ),
    ] {
        let text = with_defaults(defaults, west);
        let error = load_err(&text, PASS_ENV);
        let message = error.to_string();
        assert!(matches!(&error, ConfigError::Parse { .. }), "{error:?}");
        let line = line_containing(&text, needle);
        assert!(
            message.starts_with(&format!("{ORIGIN}: line {line}: ")),
            "line {line} (`{needle}`): {message}"
        );
        assert!(message.contains(words), "{message}");
    }

    let text = minimal_with("") + "defaults:\n  token_ttl: \"12h\"\n";
    let error = load_err(&text, PASS_ENV);
    assert!(
        matches!(&error, ConfigError::Refused { fields, .. } if fields == &["defaults"]),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!(
            "line {}: `defaults` holds the settings",
            line_containing(&text, "defaults:")
        )),
        "{error}"
    );
}

/// One configuration makes one stack with one deadline for every call, so credentials asking for different
/// `request_timeout`s are refused, naming both; the same timeout, written once in `defaults`, is taken by all.
#[test]
fn credentials_with_different_request_timeouts_are_refused_naming_both() {
    let text = two_credentials("    request_timeout: \"50s\"\n", "").replacen(
        "    token_ttl: \"1h\"\n",
        "    token_ttl: \"1h\"\n    request_timeout: \"40s\"\n",
        1,
    );
    let message = assert_refused(
        &load_err(&text, PASS_ENV),
        &text,
        "request_timeout: \"40s\"",
        &[
            "credentials[0].request_timeout",
            "credentials[1].request_timeout",
        ],
    );
    assert!(
        message.contains("40s") && message.contains("50s"),
        "{message}"
    );

    let shared = format!(
        "defaults:\n  request_timeout: \"50s\"\n{}",
        two_credentials("", "")
    );
    let config = load(&shared, PASS_ENV).unwrap();
    assert!(
        config
            .credentials()
            .iter()
            .all(|c| c.request_timeout == Duration::from_secs(50))
    );
}
