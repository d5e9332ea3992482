//! The store's settings refused at load, naming the YAML field: a pool of no connections (whatever the store
//! URL, `memory:` included), a zero store timeout, and a lease that does not cover the login plus the two store
//! operations made under it, bounded by `store.operation_timeout` when it is set.

#![cfg(feature = "yaml")]

use std::time::Duration;

use paynet_auth::config::Config;
use paynet_auth::error::ConfigError;

const ORIGIN: &str = "paynet.yaml";

fn load(store: &str, extra: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "paynet:\n  base_url: \"http://127.0.0.1:8080/gw\"\n  username: agent\n  password: \"p\"\n  \
         terminal_id: 4027096\n{extra}  store:\n{store}"
    );
    Config::from_yaml_str(&text, ORIGIN, &|_: &str| None)
}

fn refused_fields(error: ConfigError) -> (Vec<String>, String) {
    let message = error.to_string();
    match error {
        ConfigError::Refused { fields, .. } => (fields, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pool_size_zero_is_refused_at_load_for_every_store_url() {
    for url in [
        "memory:",
        "sqlite://tokens.db",
        "postgres://paynet@db.internal/paynet",
    ] {
        let error = load(&format!("    url: \"{url}\"\n    pool_size: 0\n"), "").unwrap_err();
        let (fields, message) = refused_fields(error);
        assert_eq!(fields, ["paynet.store.pool_size"], "{url}: {message}");
        assert!(
            message.contains("`paynet.store.pool_size` must be at least 1"),
            "{message}"
        );
        load(&format!("    url: \"{url}\"\n    pool_size: 1\n"), "").unwrap();
    }
}

#[test]
fn zero_store_timeouts_are_refused_naming_the_field() {
    for field in ["connect_timeout", "operation_timeout"] {
        let error = load(
            &format!("    url: \"sqlite://tokens.db\"\n    {field}: \"0s\"\n"),
            "",
        )
        .unwrap_err();
        let (fields, message) = refused_fields(error);
        assert_eq!(fields, [format!("paynet.store.{field}")], "{message}");
    }
}

#[test]
fn lease_must_cover_the_login_and_two_operations_of_the_operation_timeout() {
    // 10 s login + 2 × 5 s operations = 20 s; the connection wait is part of an operation.
    let store = "    url: \"sqlite://tokens.db\"\n    connect_timeout: \"1s\"\n    operation_timeout: \"5s\"\n";
    let error = load(store, "  login_timeout: \"10s\"\n  lease_ttl: \"20s\"\n").unwrap_err();
    let (fields, message) = refused_fields(error);
    assert_eq!(
        fields,
        [
            "paynet.lease_ttl",
            "paynet.login_timeout",
            "paynet.store.operation_timeout"
        ],
        "{message}"
    );
    assert!(
        message.contains("(5s) (the bound of one store operation"),
        "{message}"
    );

    let config = load(store, "  login_timeout: \"10s\"\n  lease_ttl: \"21s\"\n").unwrap();
    let options = config.default_credential().store_options();
    assert_eq!(options.operation_timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        options.effective_operation_timeout(),
        Duration::from_secs(5)
    );

    // Without it, an operation is bounded by the connection wait, and that is the field named.
    let store = "    url: \"sqlite://tokens.db\"\n    connect_timeout: \"5s\"\n";
    let error = load(store, "  login_timeout: \"10s\"\n  lease_ttl: \"20s\"\n").unwrap_err();
    let (fields, _) = refused_fields(error);
    assert_eq!(fields[2], "paynet.store.connect_timeout");
    let config = load(store, "  login_timeout: \"10s\"\n  lease_ttl: \"21s\"\n").unwrap();
    assert_eq!(
        config
            .default_credential()
            .store_options()
            .effective_operation_timeout(),
        Duration::from_secs(5)
    );
}
