//! The gateway simulator's request log. Alone in its own test binary because it installs the global tracing
//! subscriber: a per-thread one races with callsite registration from tests running on other threads.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use paynet_sim::{DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, Simulator};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn requests_are_logged_without_tokens_or_passwords() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let sim = Simulator::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |path: &str, body: Value| {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", sim.base_url()))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = client.request(request);
        async move {
            let body = response
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap()
        }
    };

    let login = call(
        "/v2/user",
        json!({"jsonrpc": "2.0", "method": "login", "id": 1, "params": {
            "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID}}),
    )
    .await;
    let token = login["result"]["token"].as_str().unwrap().to_owned();
    for presented in [token.as_str(), "garbage-token-value"] {
        call(
            "/v2/service",
            json!({"jsonrpc": "2.0", "method": "getCategoriesList", "id": 2, "params": {"token": presented}}),
        )
        .await;
    }
    sim.shutdown().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains(r#"rpc.method="login""#), "{log}");
    assert!(log.contains("login ok"), "{log}");
    assert!(
        log.contains(&paynet_auth::record::fingerprint(&token)),
        "{log}"
    );
    assert!(
        log.contains(&paynet_auth::record::fingerprint("garbage-token-value")),
        "{log}"
    );
    assert!(log.contains("outcome=\"unauthorized\""), "{log}");
    assert!(!log.contains(&token), "{log}");
    assert!(!log.contains("garbage-token-value"), "{log}");
    assert!(!log.contains(DEFAULT_PASSWORD), "{log}");
}
