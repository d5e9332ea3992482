//! The gateway simulator, exercised over real HTTP on loopback.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_sim::{
    DEFAULT_PASSWORD, DEFAULT_TERMINAL_ID, DEFAULT_USERNAME, LOGIN_FAILED_CODE, LoginFailure,
    MAX_BODY_BYTES, SimStats, Simulator, UNAUTHORIZED_CODE,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type ClientResult<T> = Result<T, hyper_util::client::legacy::Error>;

/// An HTTP answer, read to the end.
struct Reply {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A simulator with a client pointed at it.
struct Gateway {
    sim: Simulator,
    client: HttpClient,
}

impl Gateway {
    async fn start(builder: paynet_sim::SimulatorBuilder) -> Self {
        Self::with(builder.start().await.expect("the simulator starts"))
    }

    async fn default() -> Self {
        Self::start(Simulator::builder()).await
    }

    fn with(sim: Simulator) -> Self {
        Self {
            sim,
            client: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> ClientResult<Reply> {
        send(&self.client, method, &self.url(path), body.into()).await
    }

    /// Posts a JSON-RPC body and expects an HTTP 200 JSON answer.
    async fn rpc(&self, path: &str, body: &Value) -> Value {
        let reply = self
            .send(Method::POST, path, body.to_string())
            .await
            .expect("the gateway answers");
        assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.text());
        assert_eq!(reply.content_type, "application/json; charset=utf-8");
        reply.json()
    }

    async fn try_login(&self) -> ClientResult<Reply> {
        self.send(Method::POST, "/v2/user", login_body(1).to_string())
            .await
    }

    async fn login(&self) -> String {
        let answer = self.rpc("/v2/user", &login_body(1)).await;
        answer["result"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {answer}"))
            .to_owned()
    }

    /// `getCategoriesList` with the token in `params`.
    async fn categories(&self, token: &str) -> Value {
        self.rpc(
            "/v2/service",
            &json!({"jsonrpc": "2.0", "method": "getCategoriesList", "id": 7, "params": {"token": token}}),
        )
        .await
    }

    async fn accepts(&self, token: &str) -> bool {
        let answer = self.categories(token).await;
        match answer.get("error") {
            None => true,
            Some(error) if error["code"] == UNAUTHORIZED_CODE => false,
            Some(error) => panic!("unexpected error {error}"),
        }
    }
}

impl Gateway {
    /// A request to `/__admin/<action>`, answered whole.
    async fn admin(&self, method: Method, action: &str, body: &str) -> Reply {
        self.send(method, &format!("/__admin/{action}"), body.to_owned())
            .await
            .expect("the simulator answers its admin paths")
    }

    /// `POST /__admin/mode` with `change`, which must be accepted; the mode it answers.
    async fn set_mode(&self, change: Value) -> Value {
        let reply = self.admin(Method::POST, "mode", &change.to_string()).await;
        assert_eq!(reply.status, StatusCode::OK, "{change}: {}", reply.text());
        assert_eq!(reply.content_type, "application/json; charset=utf-8");
        reply.json()
    }

    async fn admin_stats(&self) -> Value {
        let reply = self.admin(Method::GET, "stats", "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }
}

/// The mode of a simulator started with the builder's defaults, as `/__admin/mode` writes it.
fn default_mode() -> Value {
    json!({
        "single_session": false, "token_ttl": null, "login_latency": "0s", "login_failure": null,
        "drop_after_execute": false, "reject_all_tokens": false, "dribble": null,
    })
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(client: &HttpClient, method: Method, url: &str, body: Bytes) -> ClientResult<Reply> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid request");
    let response = client.request(request).await?;
    let status = response.status();
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .map(|value: &http::HeaderValue| value.to_str().expect("ASCII header").to_owned())
    };
    let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
    let allow = header_text(header::ALLOW);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body arrives whole")
        .to_bytes();
    Ok(Reply {
        status,
        content_type,
        allow,
        body,
    })
}

fn login_body(id: impl Into<Value>) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "login",
        "id": id.into(),
        "params": {"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID},
    })
}

/// Whether the client saw the connection close before a complete response.
fn is_incomplete_message(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Writes a raw HTTP/1.1 request and reads one response framed by its `content-length`.
async fn raw_exchange(
    reader: &mut BufReader<tokio::net::tcp::ReadHalf<'_>>,
    writer: &mut tokio::net::tcp::WriteHalf<'_>,
    request: &str,
) -> (String, Vec<u8>) {
    writer.write_all(request.as_bytes()).await.unwrap();
    let mut head = String::new();
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap();
            }
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await.unwrap();
    (head, body)
}

// ---- login ----

#[tokio::test]
async fn login_answers_the_session_fields_and_echoes_the_id() {
    let gw = Gateway::default().await;

    let answer = gw.rpc("/v2/user", &login_body(1)).await;

    let token = answer["result"]["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
    assert_eq!(
        answer,
        json!({
            "jsonrpc": "2.0",
            "id": 1,
            "result": {
                "agentId": "17627",
                "terminalId": "4027096",
                "userId": 56530,
                "userLogin": "username_17627_56530",
                "token": token,
            },
        })
    );
    assert_eq!(gw.sim.issued_tokens(), vec![token]);

    let answer = gw.rpc("/v2/user", &login_body("login-2")).await;
    assert_eq!(answer["id"], "login-2");

    let stats = gw.sim.stats();
    assert_eq!(
        (stats.logins, stats.login_attempts, stats.requests),
        (2, 2, 2)
    );
    assert_eq!(stats.total_calls(), 0, "a login is not an authorised call");
}

#[tokio::test]
async fn login_writes_the_envelope_in_the_gateway_order() {
    let gw = Gateway::default().await;
    let reply = gw.try_login().await.unwrap();
    let text = reply.text();
    assert!(
        text.starts_with(r#"{"jsonrpc":"2.0","id":1,"result":{"agentId":"17627","terminalId":"4027096","userId":56530,"userLogin":"username_17627_56530","token":""#),
        "{text}"
    );
}

#[tokio::test]
async fn login_with_wrong_credentials_is_a_jsonrpc_error() {
    let gw = Gateway::default().await;
    let wrong = [
        json!({"username": DEFAULT_USERNAME, "password": "nope", "terminal_id": DEFAULT_TERMINAL_ID}),
        json!({"username": "someone_else", "password": DEFAULT_PASSWORD, "terminal_id": DEFAULT_TERMINAL_ID}),
        json!({"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": 1}),
    ];
    for (id, params) in wrong.into_iter().enumerate() {
        let body = json!({"jsonrpc": "2.0", "method": "login", "id": id, "params": params});
        let answer = gw.rpc("/v2/user", &body).await;
        assert_eq!(
            answer,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": LOGIN_FAILED_CODE, "message": "Invalid login or password"}})
        );
    }
    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.login_attempts), (0, 3));
    assert!(gw.sim.issued_tokens().is_empty());
}

#[tokio::test]
async fn login_with_a_terminal_id_string_is_invalid_params() {
    let gw = Gateway::default().await;
    let body = json!({"jsonrpc": "2.0", "method": "login", "id": 3, "params": {
        "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD, "terminal_id": "4027096"}});
    let answer = gw.rpc("/v2/user", &body).await;
    assert_eq!(answer["error"]["code"], -32602);
    assert_eq!(answer["id"], 3);
}

#[tokio::test]
async fn custom_credentials_replace_the_default_account() {
    let gw =
        Gateway::start(Simulator::builder().credentials("username_500_42", "s3cret", 77)).await;
    let body = json!({"jsonrpc": "2.0", "method": "login", "id": 1, "params": {
        "username": "username_500_42", "password": "s3cret", "terminal_id": 77}});
    let result = gw.rpc("/v2/user", &body).await["result"].clone();
    assert_eq!(result["agentId"], "500");
    assert_eq!(result["userId"], 42);
    assert_eq!(result["terminalId"], "77");
    assert_eq!(result["userLogin"], "username_500_42");

    let default_login = gw.rpc("/v2/user", &login_body(2)).await;
    assert_eq!(default_login["error"]["code"], LOGIN_FAILED_CODE);
}

// ---- the token check ----

#[tokio::test]
async fn token_in_params_is_accepted() {
    let gw = Gateway::default().await;
    let token = gw.login().await;

    let answer = gw.categories(&token).await;

    assert_eq!(answer["id"], 7);
    assert!(
        !answer["result"]["categories"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(gw.sim.stats().calls_to("getCategoriesList"), 1);
}

#[tokio::test]
async fn token_at_top_level_is_accepted() {
    let gw = Gateway::default().await;
    let token = gw.login().await;

    let answer = gw
        .rpc(
            "/v2/user",
            &json!({"jsonrpc": "2.0", "method": "getDepositInfo", "id": 8, "token": token, "params": {}}),
        )
        .await;

    assert_eq!(answer["result"]["currency"], "UZS");
    assert_eq!(answer["result"]["terminalId"], "4027096");
    assert_eq!(gw.sim.stats().calls_to("getDepositInfo"), 1);
}

#[tokio::test]
async fn params_token_wins_over_top_level_token() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    let body = json!({"jsonrpc": "2.0", "method": "getDepositInfo", "id": 1, "token": token, "params": {"token": "garbage"}});
    let answer = gw.rpc("/v2/user", &body).await;
    assert_eq!(answer["error"]["code"], UNAUTHORIZED_CODE);
}

#[tokio::test]
async fn missing_or_garbage_token_is_unauthorized_and_counted() {
    let gw = Gateway::default().await;
    gw.login().await;
    let bodies = [
        json!({"jsonrpc": "2.0", "method": "getCategoriesList", "id": 1, "params": {}}),
        json!({"jsonrpc": "2.0", "method": "getCategoriesList", "id": 2}),
        json!({"jsonrpc": "2.0", "method": "getCategoriesList", "id": 3, "params": {"token": "RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG"}}),
        json!({"jsonrpc": "2.0", "method": "getCategoriesList", "id": 4, "params": {"token": 12345}}),
    ];
    for body in &bodies {
        let answer = gw.rpc("/v2/service", body).await;
        assert_eq!(
            answer,
            json!({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -9999, "message": "unauthorized"}})
        );
    }
    let stats = gw.sim.stats();
    assert_eq!(stats.rejections, 4);
    assert_eq!(stats.total_calls(), 0);
}

#[tokio::test]
async fn several_sessions_coexist_by_default() {
    let gw = Gateway::default().await;
    let first = gw.login().await;
    let second = gw.login().await;
    assert_ne!(first, second);
    assert!(gw.accepts(&first).await);
    assert!(gw.accepts(&second).await);
}

#[tokio::test]
async fn single_session_login_invalidates_older_token() {
    let gw = Gateway::start(Simulator::builder().single_session(true)).await;
    let first = gw.login().await;
    assert!(gw.accepts(&first).await);

    let second = gw.login().await;

    assert!(!gw.accepts(&first).await);
    assert!(gw.accepts(&second).await);
    assert_eq!(gw.sim.stats().rejections, 1);
}

#[tokio::test]
async fn single_session_can_be_switched_at_run_time() {
    let gw = Gateway::default().await;
    let first = gw.login().await;
    gw.sim.set_single_session(true);
    assert!(
        gw.accepts(&first).await,
        "switching on ends nothing by itself"
    );

    let second = gw.login().await;
    assert!(!gw.accepts(&first).await);

    gw.sim.set_single_session(false);
    let third = gw.login().await;
    assert!(gw.accepts(&second).await);
    assert!(gw.accepts(&third).await);
}

#[tokio::test]
async fn expire_all_invalidates_every_issued_token() {
    let gw = Gateway::default().await;
    let first = gw.login().await;
    let second = gw.login().await;

    gw.sim.expire_all();

    assert!(!gw.accepts(&first).await);
    assert!(!gw.accepts(&second).await);
    let fresh = gw.login().await;
    assert!(gw.accepts(&fresh).await);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    let answer = gw
        .rpc(
            "/v2/user",
            &json!({"jsonrpc": "2.0", "method": "logout", "id": 1, "params": {"token": token}}),
        )
        .await;
    assert_eq!(answer["result"]["success"], true);
    assert!(!gw.accepts(&token).await);
}

#[tokio::test(start_paused = true)]
async fn token_expires_after_its_ttl() {
    let gw = Gateway::start(Simulator::builder().token_ttl(Some(Duration::from_secs(3600)))).await;
    let token = gw.login().await;

    tokio::time::advance(Duration::from_secs(3599)).await;
    assert!(gw.accepts(&token).await);
    let fresh = gw.login().await;

    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!gw.accepts(&token).await);
    assert!(
        gw.accepts(&fresh).await,
        "a later login has a lifetime of its own"
    );
    assert_eq!(gw.sim.stats().rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_ttl_applies_to_tokens_issued_afterwards() {
    let gw = Gateway::start(Simulator::builder().token_ttl(Some(Duration::from_secs(60)))).await;
    let short = gw.login().await;
    gw.sim.set_token_ttl(None);
    let forever = gw.login().await;

    tokio::time::advance(Duration::from_secs(100 * 24 * 3600)).await;

    assert!(!gw.accepts(&short).await);
    assert!(gw.accepts(&forever).await);
}

// ---- broken sessions and slow answers ----

#[tokio::test]
async fn reject_all_tokens_refuses_even_the_token_just_issued() {
    let gw = Gateway::start(Simulator::builder().reject_all_tokens(true)).await;
    let token = gw.login().await;
    assert!(!gw.accepts(&token).await);
    let fresh = gw.login().await;
    assert!(!gw.accepts(&fresh).await);
    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.rejections), (2, 2));
    assert_eq!(stats.total_calls(), 0);

    // The sessions were never ended, only refused: switched off, both tokens work again.
    gw.sim.set_reject_all_tokens(false);
    assert!(gw.accepts(&token).await);
    assert!(gw.accepts(&fresh).await);
    gw.sim.set_reject_all_tokens(true);
    assert!(!gw.accepts(&fresh).await);
    assert_eq!(gw.sim.stats().rejections, 3);
}

#[tokio::test(start_paused = true)]
async fn dribble_sends_the_head_at_once_then_one_byte_per_interval() {
    const INTERVAL: Duration = Duration::from_millis(500);
    let gw = Gateway::start(Simulator::builder().dribble(Some(INTERVAL))).await;
    let started = tokio::time::Instant::now();
    let token = gw.login().await;
    assert_eq!(started.elapsed(), Duration::ZERO, "logins are not dribbled");

    let body =
        json!({"jsonrpc": "2.0", "method": "getDepositInfo", "id": 1, "params": {"token": token}});
    let request = Request::post(gw.url("/v2/user"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let started = tokio::time::Instant::now();
    let response = gw.client.request(request).await.expect("the head arrives");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the head is not held back"
    );
    assert_eq!(response.status(), StatusCode::OK);
    let declared: usize = response.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().expect("only data");
        assert_eq!(data.len(), 1, "one byte at a time");
        received.extend_from_slice(&data);
        assert_eq!(started.elapsed(), INTERVAL * received.len() as u32);
    }
    assert_eq!(received.len(), declared);
    let answer: Value = serde_json::from_slice(&received).unwrap();
    assert_eq!(answer["result"]["currency"], "UZS");

    gw.sim.set_dribble(None);
    let started = tokio::time::Instant::now();
    assert!(gw.accepts(&token).await);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "switched off, answers come whole"
    );
}

// ---- injected login failures ----

#[tokio::test]
async fn service_unavailable_answers_503_in_plain_text() {
    let gw =
        Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::ServiceUnavailable)))
            .await;
    let reply = gw.try_login().await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.content_type.starts_with("text/plain"));
    assert_eq!(reply.text(), "Service Unavailable");
    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.login_attempts), (0, 1));
}

#[tokio::test]
async fn html502_answers_a_bad_gateway_page() {
    let gw = Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::Html502))).await;
    let reply = gw.try_login().await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.content_type, "text/html");
    assert!(reply.text().contains("<h1>502 Bad Gateway</h1>"));
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
}

#[tokio::test]
async fn truncated_json_answers_200_with_a_cut_off_body() {
    let gw =
        Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::TruncatedJson))).await;
    let reply = gw.try_login().await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/json; charset=utf-8");
    let error = serde_json::from_slice::<Value>(&reply.body).unwrap_err();
    assert!(error.is_eof(), "{error}: {}", reply.text());
    assert!(reply.text().ends_with(r#""token":""#), "{}", reply.text());
    assert!(gw.sim.issued_tokens().is_empty());
    assert_eq!(gw.sim.stats().logins, 0);
}

#[tokio::test]
async fn wrong_credentials_failure_rejects_the_right_credentials() {
    let gw =
        Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::WrongCredentials)))
            .await;
    let answer = gw.rpc("/v2/user", &login_body(5)).await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": 5, "error": {"code": LOGIN_FAILED_CODE, "message": "Invalid login or password"}})
    );
    assert_eq!(gw.sim.stats().logins, 0);
}

#[tokio::test]
async fn drop_connection_closes_without_an_answer() {
    let gw = Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::DropConnection)))
        .await;
    let error = gw.try_login().await.err().expect("no answer");
    assert!(is_incomplete_message(&error), "{error:?}");
    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.login_attempts), (0, 1));
}

#[tokio::test]
async fn result_without_token_answers_a_result_lacking_the_token() {
    let gw =
        Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::ResultWithoutToken)))
            .await;
    let answer = gw.rpc("/v2/user", &login_body(1)).await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": 1, "result": {
            "agentId": "17627", "terminalId": "4027096", "userId": 56530, "userLogin": "username_17627_56530"}})
    );
    assert!(gw.sim.issued_tokens().is_empty());
}

#[tokio::test]
async fn oversized_token_answers_a_well_formed_result_with_a_token_that_long() {
    let gw = Gateway::start(Simulator::builder().login_failure(Some(
        LoginFailure::OversizedToken(LoginFailure::OVERSIZED_TOKEN_BYTES),
    )))
    .await;
    let answer = gw.rpc("/v2/user", &login_body(1)).await;
    let token = answer["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in the result: {:.200}", answer.to_string()));
    assert_eq!(token.len(), 1024 * 1024);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(answer["result"]["userLogin"], DEFAULT_USERNAME);

    // Small enough to send back: it still opens nothing.
    gw.sim
        .set_login_failure(Some(LoginFailure::OversizedToken(100)));
    let answer = gw.rpc("/v2/user", &login_body(2)).await;
    let token = answer["result"]["token"].as_str().expect("a token");
    assert_eq!(token.len(), 100);
    assert!(!gw.accepts(token).await);

    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.login_attempts), (0, 2));
    assert!(gw.sim.issued_tokens().is_empty());
}

#[tokio::test]
async fn hostile_refusal_echoes_the_credentials_with_terminal_escapes_in_a_200_kb_message() {
    let gw = Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::HostileRefusal)))
        .await;
    let answer = gw.rpc("/v2/user", &login_body(3)).await;
    assert_eq!(answer["id"], 3);
    assert!(
        answer.get("result").is_none(),
        "{:.300}",
        answer.to_string()
    );
    let error = &answer["error"];
    assert_eq!(error["code"], LOGIN_FAILED_CODE);
    let message = error["message"].as_str().expect("a message");
    for expected in [
        DEFAULT_USERNAME,
        DEFAULT_PASSWORD,
        "\u{1b}[31m",
        "\u{7}",
        "\r",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} in {:?}",
            &message[..120]
        );
    }
    assert!(
        (190_000..=210_000).contains(&message.len()),
        "about 200 KB: {}",
        message.len()
    );
    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.login_attempts), (0, 1));
    assert!(gw.sim.issued_tokens().is_empty());
}

#[tokio::test]
async fn hang_never_answers_until_shutdown() {
    let gw = Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::Hang))).await;
    let client = gw.client.clone();
    let url = gw.url("/v2/user");
    let mut pending = tokio::spawn(async move {
        send(
            &client,
            Method::POST,
            &url,
            login_body(1).to_string().into(),
        )
        .await
    });
    gw.sim.wait_for(|stats| stats.login_attempts == 1).await;

    // From here on, waiting costs no real time: the clock jumps whenever the runtime idles.
    tokio::time::pause();
    let waited = tokio::time::timeout(Duration::from_secs(24 * 3600), &mut pending).await;
    assert!(waited.is_err(), "a hanging login answered");
    assert_eq!(gw.sim.stats().max_concurrent_logins, 1);

    gw.sim.shutdown().await;
    let error = pending
        .await
        .unwrap()
        .err()
        .expect("no answer after shutdown");
    assert!(is_incomplete_message(&error), "{error:?}");
}

#[tokio::test]
async fn clearing_the_failure_restores_logins() {
    let gw =
        Gateway::start(Simulator::builder().login_failure(Some(LoginFailure::ServiceUnavailable)))
            .await;
    assert_eq!(
        gw.try_login().await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    gw.sim.set_login_failure(Some(LoginFailure::Html502));
    assert_eq!(
        gw.try_login().await.unwrap().status,
        StatusCode::BAD_GATEWAY
    );
    gw.sim.set_login_failure(None);
    let token = gw.login().await;
    assert!(gw.accepts(&token).await);
    let stats = gw.sim.stats();
    assert_eq!((stats.logins, stats.login_attempts), (1, 3));
}

#[tokio::test]
async fn other_methods_keep_working_while_login_fails() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    gw.sim.set_login_failure(Some(LoginFailure::DropConnection));
    assert!(gw.accepts(&token).await);
}

// ---- latency and concurrency ----

#[tokio::test]
async fn max_concurrent_logins_counts_overlapping_logins() {
    const LOGINS: u64 = 5;
    let gw = Gateway::start(Simulator::builder().login_latency(Duration::from_secs(3600))).await;
    let pending: Vec<_> = (0..LOGINS)
        .map(|id| {
            let client = gw.client.clone();
            let url = gw.url("/v2/user");
            tokio::spawn(async move {
                send(
                    &client,
                    Method::POST,
                    &url,
                    login_body(id).to_string().into(),
                )
                .await
            })
        })
        .collect();
    let arrived = gw
        .sim
        .wait_for(|stats| stats.login_attempts == LOGINS)
        .await;
    assert_eq!(arrived.max_concurrent_logins, LOGINS);
    assert_eq!(arrived.logins, 0, "the latency holds every answer back");

    // Let the hour of latency pass without waiting for it.
    tokio::time::pause();
    for login in pending {
        let reply = login.await.unwrap().unwrap();
        assert!(reply.json()["result"]["token"].is_string());
    }
    let stats = gw.sim.stats();
    assert_eq!(
        (stats.logins, stats.max_concurrent_logins),
        (LOGINS, LOGINS)
    );

    gw.sim.reset_stats();
    gw.sim.set_login_latency(Duration::ZERO);
    gw.login().await;
    gw.login().await;
    assert_eq!(
        gw.sim.stats().max_concurrent_logins,
        1,
        "sequential logins never overlap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_all_served() {
    let gw = Arc::new(Gateway::default().await);
    let token = gw.login().await;
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let gw = Arc::clone(&gw);
            let token = token.clone();
            tokio::spawn(async move { gw.accepts(&token).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap());
    }
    assert_eq!(gw.sim.stats().calls_to("getCategoriesList"), 32);
}

// ---- payments ----

#[tokio::test]
async fn drop_after_execute_executes_once_and_drops_the_connection() {
    let gw = Gateway::start(Simulator::builder().drop_after_execute(true)).await;
    let token = gw.login().await;
    let payment = json!({"jsonrpc": "2.0", "method": "performTransaction", "id": 11, "params": {
        "token": token, "transactionId": "T-1", "serviceId": 1011, "amount": 5000}});

    let error = gw
        .send(Method::POST, "/v2/transaction", payment.to_string())
        .await
        .err()
        .expect("the connection is dropped");

    assert!(is_incomplete_message(&error), "{error:?}");
    let stats = gw.sim.stats();
    assert_eq!(stats.executions_of("T-1"), 1);
    assert_eq!(stats.calls_to("performTransaction"), 1);

    // The client's way out is to ask, not to pay again.
    let check = json!({"jsonrpc": "2.0", "method": "checkTransaction", "id": 12, "params": {"token": token, "transactionId": "T-1"}});
    let answer = gw.rpc("/v2/transaction", &check).await;
    assert_eq!(answer["result"]["status"], "SUCCESS");
    assert_eq!(answer["result"]["transactionId"], "T-1");
    assert_eq!(gw.sim.stats().executions_of("T-1"), 1);
}

#[tokio::test]
async fn card_payment_without_transaction_id_is_counted_per_request_id() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    gw.sim.set_drop_after_execute(true);
    let payment = json!({"jsonrpc": "2.0", "method": "performTransactionByCardToken", "id": 99, "params": {
        "token": token, "cardToken": "card_x", "amount": 100}});
    assert!(
        gw.send(Method::POST, "/v2/card", payment.to_string())
            .await
            .is_err()
    );
    assert_eq!(gw.sim.stats().executions_of("99"), 1);

    gw.sim.set_drop_after_execute(false);
    let answer = gw.rpc("/v2/card", &payment).await;
    assert_eq!(answer["result"]["status"], "SUCCESS");
    assert_eq!(gw.sim.stats().executions_of("99"), 2);
}

#[tokio::test]
async fn payment_answers_a_result_that_echoes_the_transaction() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    let payment = json!({"jsonrpc": "2.0", "method": "performTransaction", "id": 1, "params": {
        "token": token, "transactionId": 4242, "amount": 1500}});
    let result = gw.rpc("/v2/transaction", &payment).await["result"].clone();
    assert_eq!(result["transactionId"], 4242);
    assert_eq!(result["amount"], 1500);
    assert_eq!(result["status"], "SUCCESS");
    assert!(result["paynetTransactionId"].is_u64());
    assert_eq!(gw.sim.stats().executions_of("4242"), 1);

    let check = json!({"jsonrpc": "2.0", "method": "checkTransaction", "id": 2, "params": {"token": token, "transactionId": "nope"}});
    assert_eq!(
        gw.rpc("/v2/transaction", &check).await["result"]["status"],
        "NOT_FOUND"
    );
}

// ---- the admin paths ----

#[tokio::test]
async fn admin_mode_sets_the_switches_named_and_answers_all_of_them() {
    let gw = Gateway::default().await;
    assert_eq!(gw.set_mode(json!({})).await, default_mode());
    assert_eq!(
        gw.admin(Method::POST, "mode", "").await.json(),
        default_mode(),
        "an empty body is {{}}"
    );

    let every = json!({
        "single_session": true, "token_ttl": "2s", "login_latency": "200ms",
        "login_failure": "oversized-token:5000", "drop_after_execute": true, "reject_all_tokens": true,
        "dribble": "500ms",
    });
    assert_eq!(gw.set_mode(every.clone()).await, every);
    assert_eq!(gw.set_mode(json!({})).await, every, "{{}} changes nothing");

    // Each switch took effect, and `null` turns one off while the others stay.
    gw.set_mode(json!({"login_failure": null, "login_latency": null, "dribble": null}))
        .await;
    let token = gw.login().await;
    assert!(!gw.accepts(&token).await, "reject_all_tokens is on");
    let answered = gw
        .set_mode(json!({"reject_all_tokens": false, "login_failure": "service-unavailable"}))
        .await;
    assert_eq!(answered["single_session"], true);
    assert_eq!(answered["login_latency"], "0s");
    assert!(gw.accepts(&token).await);
    assert_eq!(
        gw.try_login().await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Admin requests are not gateway traffic: login, two calls and a failed login were.
    let stats = gw.sim.stats();
    assert_eq!(
        (stats.requests, stats.login_attempts, stats.logins),
        (4, 2, 1)
    );
}

#[tokio::test]
async fn admin_mode_refuses_an_unknown_key_or_a_bad_value_naming_it_and_changes_nothing() {
    let gw = Gateway::default().await;
    let refusals = [
        (r#"{"single_session": true, "colour": "red"}"#, "colour"),
        (r#"{"single_session": "yes"}"#, "single_session"),
        (r#"{"token_ttl": "soon"}"#, "token_ttl"),
        (r#"{"login_latency": 200}"#, "login_latency"),
        (r#"{"login_failure": "teapot"}"#, "login_failure"),
        (r#"{"dribble": true}"#, "dribble"),
        (r#"{"reject_all_tokens": 1}"#, "reject_all_tokens"),
        (r#"{"drop_after_execute": []}"#, "drop_after_execute"),
        (r#"[{"single_session": true}]"#, "JSON object"),
        (r#"{"single_session": tru"#, "not JSON"),
    ];
    for (body, named) in refusals {
        let reply = gw.admin(Method::POST, "mode", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.json()["error"]
            .as_str()
            .expect("an error message")
            .to_owned();
        assert!(error.contains(named), "{body}: {error}");
    }
    let reply = gw
        .admin(Method::POST, "mode", r#"{"login_failure": "teapot"}"#)
        .await;
    assert!(
        reply.text().contains("hostile-refusal"),
        "the known names are listed: {}",
        reply.text()
    );
    assert_eq!(gw.set_mode(json!({})).await, default_mode());
}

#[tokio::test]
async fn admin_expire_ends_every_session() {
    let gw = Gateway::default().await;
    let first = gw.login().await;
    let second = gw.login().await;
    let reply = gw.admin(Method::POST, "expire", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"expired": 2}));
    assert!(!gw.accepts(&first).await);
    assert!(!gw.accepts(&second).await);
    assert!(gw.accepts(&gw.login().await).await, "later logins work");
}

#[tokio::test]
async fn admin_reset_restores_the_start_switches_and_zeroes_the_counters_keeping_sessions() {
    let gw = Gateway::start(
        Simulator::builder()
            .single_session(true)
            .token_ttl(Some(Duration::from_secs(3600))),
    )
    .await;
    let started = gw.set_mode(json!({})).await;
    assert_eq!(started["single_session"], true);
    assert_eq!(started["token_ttl"], "1h");
    let token = gw.login().await;
    gw.set_mode(json!({"single_session": false, "token_ttl": null, "reject_all_tokens": true}))
        .await;
    gw.sim.set_login_latency(Duration::from_millis(1));
    assert!(!gw.accepts(&token).await);

    let reply = gw.admin(Method::POST, "reset", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        started,
        "the switches it started with, set in Rust or over HTTP"
    );
    let zero = gw.admin_stats().await;
    for counter in [
        "requests",
        "login_attempts",
        "logins",
        "unauthorized",
        "rejections",
        "ok",
    ] {
        assert_eq!(zero[counter], 0, "{counter}: {zero}");
    }
    assert_eq!(zero["calls"], json!({}));
    assert_eq!(gw.sim.stats().rejections, 0);
    assert!(gw.accepts(&token).await, "issued tokens survive a reset");
}

#[tokio::test]
async fn admin_stats_answers_the_counters_as_json() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    assert!(gw.accepts(&token).await);
    assert!(!gw.accepts("forged").await);
    gw.sim
        .set_login_failure(Some(LoginFailure::WrongCredentials));
    gw.try_login().await.unwrap();

    let stats = gw.admin_stats().await;
    assert_eq!(stats["requests"], 4, "{stats}");
    assert_eq!(stats["login_attempts"], 2, "{stats}");
    assert_eq!(stats["logins"], 1, "{stats}");
    assert_eq!(stats["unauthorized"], 1, "{stats}");
    assert_eq!(stats["rejections"], 1, "{stats}");
    assert_eq!(stats["ok"], 1, "{stats}");
    assert_eq!(stats["calls"], json!({"getCategoriesList": 1}), "{stats}");
    assert_eq!(stats["max_concurrent_logins"], 1, "{stats}");
    assert_eq!(stats["tls_handshakes"], 0, "{stats}");
    assert!(
        stats["connections"].as_u64().is_some_and(|n| n >= 1),
        "{stats}"
    );
    assert_eq!(
        stats,
        serde_json::to_value(gw.sim.stats()).unwrap(),
        "the same as SimStats"
    );
    assert_eq!(
        gw.admin_stats().await,
        stats,
        "reading the counters does not move them"
    );
}

#[tokio::test]
async fn ok_counts_results_only() {
    let gw = Gateway::start(Simulator::builder().drop_after_execute(true)).await;
    let token = gw.login().await;
    let unknown_service = json!({"jsonrpc": "2.0", "method": "getServiceInfo", "id": 1, "params": {"token": token, "serviceId": 9}});
    assert!(
        gw.rpc("/v2/service", &unknown_service)
            .await
            .get("error")
            .is_some()
    );
    let pay = json!({"jsonrpc": "2.0", "method": "performTransaction", "id": 2, "params": {"token": token, "transactionId": "t1"}});
    assert!(
        gw.send(Method::POST, "/v2/transaction", pay.to_string())
            .await
            .is_err()
    );
    assert!(gw.accepts(&token).await);
    let stats = gw.sim.stats();
    assert_eq!((stats.ok, stats.total_calls()), (1, 3));
}

#[tokio::test]
async fn admin_paths_answer_405_to_the_wrong_method_and_404_to_unknown_ones() {
    let gw = Gateway::default().await;
    for (method, action, allow) in [
        (Method::GET, "expire", "POST"),
        (Method::GET, "mode", "POST"),
        (Method::PUT, "reset", "POST"),
        (Method::POST, "stats", "GET"),
    ] {
        let reply = gw.admin(method.clone(), action, "{}").await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {action}"
        );
        assert_eq!(reply.allow.as_deref(), Some(allow), "{method} {action}");
    }
    assert_eq!(
        gw.admin(Method::POST, "nothing", "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.sim.stats().requests,
        0,
        "admin requests are not gateway requests"
    );

    // They live under the root, whatever it is.
    let bare = Gateway::start(Simulator::builder().root("/")).await;
    let url = format!("http://{}/__admin/stats", bare.sim.addr());
    let reply = send(&bare.client, Method::GET, &url, Bytes::new())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = gw.send(Method::GET, "/../__admin/stats", "").await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "not outside the root");
}

#[tokio::test(start_paused = true)]
async fn admin_answers_are_not_dribbled() {
    let gw = Gateway::start(Simulator::builder().dribble(Some(Duration::from_secs(1)))).await;
    let started = tokio::time::Instant::now();
    gw.admin_stats().await;
    gw.set_mode(json!({"single_session": true})).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

// ---- the rest of the gateway ----

#[tokio::test]
async fn every_documented_method_is_served_on_its_endpoint() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    let calls = [
        ("/v2/user", "getDepositInfo", json!({})),
        ("/v2/service", "getCategoriesList", json!({})),
        ("/v2/service", "getProvidersList", json!({"categoryId": 1})),
        ("/v2/service", "getProvidersStatus", json!({})),
        ("/v2/service", "getServicesList", json!({"providerId": 101})),
        ("/v2/service", "getServiceInfo", json!({"serviceId": 1011})),
        (
            "/v2/card",
            "getCardOtp",
            json!({"cardNumber": "8600000000000000", "expiry": "0130"}),
        ),
        ("/v2/card", "getCardToken", json!({"otp": "123456"})),
        (
            "/v2/transaction",
            "checkTransaction",
            json!({"transactionId": "none"}),
        ),
        ("/v2/user", "logout", json!({})),
    ];
    for (id, (path, method, mut params)) in calls.into_iter().enumerate() {
        params["token"] = token.clone().into();
        let answer = gw
            .rpc(
                path,
                &json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params}),
            )
            .await;
        assert!(answer["result"].is_object(), "{method}: {answer}");
        assert_eq!(answer["id"], id);
        assert_eq!(gw.sim.stats().calls_to(method), 1, "{method}");
    }

    let providers = gw
        .rpc(
            "/v2/service",
            &json!({"jsonrpc": "2.0", "method": "getProvidersList", "id": 1, "params": {"token": gw.login().await, "categoryId": 1}}),
        )
        .await;
    let providers = providers["result"]["providers"].as_array().unwrap();
    assert!(!providers.is_empty());
    assert!(providers.iter().all(|provider| provider["categoryId"] == 1));
}

#[tokio::test]
async fn unknown_method_is_method_not_found() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    let unknown =
        json!({"jsonrpc": "2.0", "method": "getEverything", "id": 1, "params": {"token": token}});
    assert_eq!(
        gw.rpc("/v2/service", &unknown).await,
        json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}})
    );
    // A real method on the wrong endpoint is just as unknown there.
    let misplaced = login_body(2);
    assert_eq!(
        gw.rpc("/v2/service", &misplaced).await["error"]["code"],
        -32601
    );
    assert_eq!(gw.sim.stats().login_attempts, 1);
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let gw = Gateway::default().await;
    let reply = gw
        .send(
            Method::POST,
            "/v2/user",
            r#"{"jsonrpc":"2.0","method":"login","#,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}})
    );
}

#[tokio::test]
async fn json_that_is_not_a_request_is_an_invalid_request() {
    let gw = Gateway::default().await;
    for (body, id) in [
        (json!([login_body(1)]), Value::Null),
        (json!({"method": "login", "id": 4}), json!(4)),
        (json!({"jsonrpc": "2.0", "id": 5}), json!(5)),
    ] {
        let answer = gw.rpc("/v2/user", &body).await;
        assert_eq!(answer["error"]["code"], -32600, "{body}");
        assert_eq!(answer["id"], id);
    }
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_verb_is_405() {
    let gw = Gateway::default().await;
    assert_eq!(
        gw.send(Method::POST, "/v2/nothing", "{}")
            .await
            .unwrap()
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gw.send(Method::POST, "/v3/user", "{}")
            .await
            .unwrap()
            .status,
        StatusCode::NOT_FOUND
    );
    let outside = send(
        &gw.client,
        Method::POST,
        &format!("http://{}/v2/user", gw.sim.addr()),
        "{}".into(),
    )
    .await
    .unwrap();
    assert_eq!(outside.status, StatusCode::NOT_FOUND);

    let get = gw.send(Method::GET, "/v2/user", "").await.unwrap();
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.allow.as_deref(), Some("POST"));
    let post_logo = gw
        .send(Method::POST, "/v2/getLogo?providerId=101", "")
        .await
        .unwrap();
    assert_eq!(post_logo.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post_logo.allow.as_deref(), Some("GET"));
    assert_eq!(gw.sim.stats().requests, 5);
}

#[tokio::test]
async fn get_logo_serves_a_png_without_a_token() {
    let gw = Gateway::default().await;
    let logo = gw
        .send(Method::GET, "/v2/getLogo?providerId=101&size=64", "")
        .await
        .unwrap();
    assert_eq!(logo.status, StatusCode::OK);
    assert_eq!(logo.content_type, "image/png");
    assert!(logo.body.starts_with(b"\x89PNG\r\n\x1a\n"));

    let missing = gw
        .send(Method::GET, "/v2/getLogo?size=64", "")
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let unknown = gw
        .send(Method::GET, "/v2/getLogo?providerId=9", "")
        .await
        .unwrap();
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let stats = gw.sim.stats();
    assert_eq!((stats.rejections, stats.total_calls()), (0, 0));
}

#[tokio::test]
async fn declared_oversized_body_is_413() {
    let gw = Gateway::default().await;
    let mut stream = TcpStream::connect(gw.sim.addr()).await.unwrap();
    let (read, mut write) = stream.split();
    let mut read = BufReader::new(read);
    // Only the head is sent: the simulator must refuse before reading the body.
    let request = format!(
        "POST /gw/v2/user HTTP/1.1\r\nhost: sim\r\ncontent-length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    let (head, _) = raw_exchange(&mut read, &mut write, &request).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn body_at_the_size_limit_is_read() {
    let gw = Gateway::default().await;
    let mut body = login_body(1).to_string();
    let padding = MAX_BODY_BYTES - body.len();
    body.push_str(&" ".repeat(padding));
    let reply = gw.send(Method::POST, "/v2/user", body).await.unwrap();
    assert!(reply.json()["result"]["token"].is_string());
}

#[tokio::test]
async fn one_connection_serves_several_requests_in_turn() {
    let gw = Gateway::default().await;
    let mut stream = TcpStream::connect(gw.sim.addr()).await.unwrap();
    let (read, mut write) = stream.split();
    let mut read = BufReader::new(read);
    for id in 1..=3 {
        let body = login_body(id).to_string();
        let request = format!(
            "POST /gw/v2/user HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (head, body) = raw_exchange(&mut read, &mut write, &request).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["id"], id);
    }
    assert_eq!(gw.sim.stats().logins, 3);
}

// ---- configuration, counters and lifecycle ----

#[tokio::test]
async fn custom_root_moves_every_endpoint() {
    let gw = Gateway::start(Simulator::builder().root("api/gateway/")).await;
    assert!(
        gw.sim.base_url().ends_with("/api/gateway"),
        "{}",
        gw.sim.base_url()
    );
    assert!(gw.login().await.len() == 32);
    let old = send(
        &gw.client,
        Method::POST,
        &format!("http://{}/gw/v2/user", gw.sim.addr()),
        login_body(1).to_string().into(),
    )
    .await
    .unwrap();
    assert_eq!(old.status, StatusCode::NOT_FOUND);

    let bare = Gateway::start(Simulator::builder().root("/")).await;
    assert_eq!(bare.sim.base_url(), format!("http://{}", bare.sim.addr()));
    bare.login().await;
}

#[tokio::test]
async fn seeded_simulators_issue_the_same_tokens() {
    let first = Gateway::start(Simulator::builder().seed(17)).await;
    let second = Gateway::start(Simulator::builder().seed(17)).await;
    let other = Gateway::start(Simulator::builder().seed(18)).await;
    let tokens = [first.login().await, first.login().await];
    assert_eq!(tokens, [second.login().await, second.login().await]);
    assert_ne!(tokens[0], other.login().await);
    assert_ne!(tokens[0], tokens[1]);
}

#[tokio::test]
async fn reset_stats_zeroes_counters_but_keeps_sessions() {
    let gw = Gateway::default().await;
    let token = gw.login().await;
    gw.categories("garbage").await;
    gw.categories(&token).await;
    assert_ne!(gw.sim.stats(), SimStats::default());

    gw.sim.reset_stats();

    assert_eq!(gw.sim.stats(), SimStats::default());
    assert!(gw.accepts(&token).await);
    assert_eq!(gw.sim.issued_tokens(), vec![token]);
}

#[tokio::test]
async fn wait_for_returns_once_the_condition_holds() {
    let gw = Gateway::default().await;
    let waiter = gw.sim.wait_for(|stats| stats.logins == 2);
    let logins = async {
        gw.login().await;
        gw.login().await;
    };
    let (stats, ()) = tokio::join!(waiter, logins);
    assert_eq!(stats.logins, 2);
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let gw = Gateway::default().await;
    gw.login().await;
    let addr = gw.sim.addr();
    gw.sim.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_lets_a_login_in_flight_finish() {
    let gw = Gateway::start(Simulator::builder().login_latency(Duration::from_secs(2))).await;
    let client = gw.client.clone();
    let url = gw.url("/v2/user");
    let pending = tokio::spawn(async move {
        send(
            &client,
            Method::POST,
            &url,
            login_body(1).to_string().into(),
        )
        .await
    });
    gw.sim.wait_for(|stats| stats.login_attempts == 1).await;
    tokio::time::pause();

    gw.sim.shutdown().await;

    let reply = pending
        .await
        .unwrap()
        .expect("the login in flight is answered");
    assert!(reply.json()["result"]["token"].is_string());
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let sim = Simulator::start().await.unwrap();
    let addr = sim.addr();
    drop(sim);
    // The aborted server task is torn down the next time the runtime gets to it; no timing is involved.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the port still accepts connections");
}

#[tokio::test]
async fn serve_runs_until_the_shutdown_future_completes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Simulator::builder().serve(listener, stopped));

    let reply = send(
        &client(),
        Method::POST,
        &format!("http://{addr}/gw/v2/user"),
        login_body(1).to_string().into(),
    )
    .await
    .unwrap();
    assert!(reply.json()["result"]["token"].is_string());

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
