//! From configuration to ready managers and a layer in one pass (`Configured::open`): every setting of the file reaches the
//! manager and the layer, and what cannot be built says why.

#![cfg(feature = "yaml")]

mod support;

use paynet_auth::SetupError;
use paynet_auth::config::{Config, PaynetConfig};
use paynet_auth::error::ConfigError;
use paynet_auth::setup::Configured;
use support::{MockRequest, MockResponse, body_json, json_response, login_ok};
use tower::ServiceExt;
use tower_test::mock;

fn config(yaml: &str) -> PaynetConfig {
    Config::from_yaml_str(yaml, "paynet.yaml", &|_| None)
        .unwrap()
        .default_credential()
        .clone()
}

/// The token placement, the rejection code and the login path of the file are the ones the stack uses: the login
/// goes to the configured path, the token goes top-level, and the configured code (not -9999) makes it refresh.
#[tokio::test]
async fn the_stack_uses_every_setting_of_the_file() {
    let config = config(
        "paynet:\n  base_url: http://gateway.test/gw\n  login_path: /v3/auth\n  username: u\n  password: p\n  \
         terminal_id: 7\n  token_field: top_level\n  rejection_code: -32001\n  store:\n    url: \"memory:\"\n",
    );
    let stack = Configured::open(&Config::from(config)).await.unwrap();
    assert_eq!(stack.manager().endpoint(), "http://gateway.test/gw/v3/auth");
    let (inner, mut gateway) = mock::pair::<MockRequest, MockResponse>();
    let service = stack.service(inner);
    let call = tokio::spawn(service.oneshot(support::json_request(
        "/v2/service",
        r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#,
    )));

    let (login, reply) = gateway.next_request().await.unwrap();
    assert_eq!(login.uri(), "http://gateway.test/gw/v3/auth");
    reply.send_response(login_ok("first"));
    let (sent, reply) = gateway.next_request().await.unwrap();
    let body = body_json(sent.into_body()).await;
    assert_eq!(body["token"], "first", "top-level placement: {body}");
    assert!(body["params"].get("token").is_none(), "{body}");
    reply.send_response(json_response(
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"session ended"}}"#,
    ));

    let (login, reply) = gateway.next_request().await.unwrap();
    assert_eq!(login.uri(), "http://gateway.test/gw/v3/auth");
    reply.send_response(login_ok("second"));
    let (replay, reply) = gateway.next_request().await.unwrap();
    assert_eq!(body_json(replay.into_body()).await["token"], "second");
    reply.send_response(json_response(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
    call.await.unwrap().unwrap();
    assert_eq!(stack.manager().logins(), 2);
}

/// A configuration built in code is checked too: the refusal names the fields as the file would.
#[tokio::test]
async fn a_configuration_built_in_code_that_cannot_work_is_refused() {
    let mut config = config(
        "paynet:\n  base_url: http://gateway.test/gw\n  username: u\n  password: p\n  terminal_id: 7\n  \
         store:\n    url: \"memory:\"\n",
    );
    config.token_ttl = Some(config.expiry_skew);
    match Configured::open(&Config::from(config)).await {
        Err(SetupError::Config(ConfigError::Refused { fields, .. })) => {
            assert_eq!(fields, ["paynet.token_ttl", "paynet.expiry_skew"]);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A store that cannot be opened is named, without its password, with the store's own error as the cause.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_store_that_cannot_be_opened_is_named_without_its_password() {
    let config = config(
        "paynet:\n  base_url: http://gateway.test/gw\n  username: u\n  password: p\n  terminal_id: 7\n  \
         store:\n    url: \"postgres://app:hunter2@127.0.0.1:1/payments\"\n    connect_timeout: 2s\n",
    );
    let error = Configured::open(&Config::from(config)).await.unwrap_err();
    assert!(matches!(error, SetupError::Store { .. }), "{error:?}");
    // The whole chain, as a chain printer shows it: the store named once (by the store's own error), no password.
    let chain: Vec<String> =
        std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
            (*e).source()
        })
        .map(ToString::to_string)
        .collect();
    let message = chain.join(": ");
    assert!(
        message.starts_with("cannot open the token store: "),
        "{message}"
    );
    assert!(
        message.contains("postgres://app:****@127.0.0.1:1/payments"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(
        chain[0].matches("127.0.0.1:1").count() + chain[1].matches("127.0.0.1:1").count(),
        1,
        "{message}"
    );
}

/// A file of 50 terminals sharing their settings in `defaults`, all on one PostgreSQL database, opens one pool:
/// once every credential has read the store (all at once, so that separate pools would each open a connection),
/// the database counts at most one pool's connections under the test's `application_name`, not 50 pools' worth.
#[cfg(all(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_credentials_on_one_database_share_one_pool() {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    use support::db::{Fixture, Raw};

    const POOL_SIZE: i64 = 3;
    let application = support::db::unique_key("setup-pool");
    let base = support::db::postgres_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}application_name={application}");
    let mut text = format!(
        "defaults:\n  base_url: http://gateway.test/gw\n  password: p\n  store:\n    url: \"{url}\"\n    \
         pool_size: {POOL_SIZE}\ncredentials:\n"
    );
    for i in 0..50 {
        text += &format!("  - name: t{i}\n    username: {application}-{i}\n    terminal_id: {i}\n");
    }
    let config = Config::from_yaml_str(&text, "paynet.yaml", &|_| None).unwrap();
    let configured = Configured::open(&config).await.unwrap();
    assert_eq!(configured.managers().len(), 50);
    let reads = configured.managers().iter().map(|manager| manager.stored());
    for read in futures_util::future::join_all(reads).await {
        assert!(read.unwrap().is_none());
    }

    let Raw::Postgres(mut raw) = Fixture::postgres().raw().await else {
        panic!("the PostgreSQL fixture gives a PostgreSQL connection")
    };
    let connections: i64 = diesel::select(diesel::dsl::sql::<BigInt>(&format!(
        "(SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}')"
    )))
    .get_result(&mut raw)
    .await
    .unwrap();
    assert!(
        (1..=POOL_SIZE).contains(&connections),
        "{connections} connections for 50 credentials on one database: one pool holds at most {POOL_SIZE}"
    );
}
