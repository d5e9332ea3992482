//! The layer inside the stacks users build: tower-http and tower middleware above and below it, an axum server
//! proxying the gateway's answer, a compressing proxy in front of the gateway, and reqwest-middleware. Each stack
//! goes through a token expiry and is checked for its answer, its login count, and no panic or hang.
//!
//! Hangs are turned into failures by [`within`]: a deadlock under a concurrency limit would otherwise stall the
//! suite rather than fail it. It bounds a test, it does not synchronise one.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request as AxumRequest, State};
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paynet_auth::PaynetLogin;
use paynet_auth::clock::NoJitter;
use paynet_auth::coding::{ContentCoding, decode_bounded};
use paynet_auth::store::MemoryStore;
use paynet_auth::{Error, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;
use support::{PASSWORD, TERMINAL, USERNAME};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::decompression::DecompressionLayer;
use tower_http::set_header::SetRequestHeaderLayer;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The simulated gateway, one session per terminal (a new login ends the previous token), as Paynet's is.
async fn gateway() -> Simulator {
    Simulator::builder()
        .single_session(true)
        .start()
        .await
        .unwrap()
}

fn manager(base_url: &str) -> TokenManager {
    TokenManager::builder(PaynetLogin::new(
        base_url,
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .store(MemoryStore::new())
    .jitter(Arc::new(NoJitter))
    .login_timeout(Duration::from_secs(5))
    .build()
    .unwrap()
}

/// Fails the test instead of hanging it.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s (deadlock?)"))
}

fn categories(base_url: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{base_url}/v2/service"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":123,"params":{}}"#,
        )))
        .unwrap()
}

fn payment(base_url: &str, transaction: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{base_url}/v2/transaction"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","method":"performTransaction","id":9,"params":{{"transactionId":"{transaction}","amount":1000}}}}"#
        ))))
        .unwrap()
}

/// The JSON of an answer, decoding it when it arrives compressed (a stack without a decompressor above).
async fn answer_json<B>(response: Response<B>) -> serde_json::Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let coding = ContentCoding::of(response.headers());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let plain = decode_bounded(coding, &bytes, 1 << 20).expect("a readable answer");
    serde_json::from_slice(&plain).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
}

/// One call, then every token expires at the gateway, then another call: both must answer with a result.
async fn through_an_expiry<S, B>(
    mut service: S,
    sim: &Simulator,
    request: impl Fn() -> Request<Full<Bytes>>,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for round in 0..2 {
        if round == 1 {
            sim.expire_all();
        }
        let response = within("call", async {
            service
                .ready()
                .await
                .unwrap()
                .call(request())
                .await
                .unwrap()
        })
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let answer = answer_json(response).await;
        assert!(
            answer["result"]["categories"].is_array(),
            "round {round}: {answer}"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.logins, 2, "one login, one after the expiry");
    assert_eq!(stats.rejections, 1, "the expired token was rejected once");
    assert_eq!(stats.calls_to("getCategoriesList"), 2);
}

// ---------------------------------------------------------------------------------------------------------------
// tower-http above and below

#[tokio::test]
async fn tower_http_trace_sensitive_headers_catch_panic_and_timeout_above_the_layer() {
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    let sim = gateway().await;
    let service = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .layer(DecompressionLayer::new())
        .service(http_client());
    through_an_expiry(service, &sim, || categories(sim.base_url())).await;
}

#[tokio::test]
async fn tower_http_timeout_above_the_layer_answers_408_with_an_empty_body() {
    use tower_http::timeout::TimeoutLayer;

    let sim = Simulator::builder()
        .login_latency(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(200),
        ))
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .service(http_client());
    let response = within("timeout", service.oneshot(categories(sim.base_url())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(0));
    assert!(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}

#[tokio::test]
async fn tower_http_trace_sensitive_headers_catch_panic_timeout_and_decompression_below_the_layer()
{
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::map_response_body::MapResponseBodyLayer;
    use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    let sim = gateway().await;
    // tower-http's `TimeoutLayer` answers with an empty body of the type below it, so that body must be
    // `Default`; hyper's `Incoming` is not, a boxed body is.
    let service = ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(MapResponseBodyLayer::new(BodyExt::boxed_unsync))
        .layer(DecompressionLayer::new())
        .service(http_client());
    through_an_expiry(service, &sim, || categories(sim.base_url())).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Compressed answers

/// A proxy in front of the gateway that compresses its answers with one coding (tower-http's `CompressionLayer`
/// on an axum server), counting the answers it compressed.
struct CompressingProxy {
    base_url: String,
    compressed: Arc<AtomicUsize>,
    seen_accept_encoding: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

async fn compressing_proxy(sim: &Simulator, coding: &'static str) -> CompressingProxy {
    proxy_compressing(sim, coding, false).await
}

/// Like [`compressing_proxy`]; with `always`, it compresses every answer, logins included, whatever the request
/// asked for (as some gateways and proxies do).
async fn proxy_compressing(
    sim: &Simulator,
    coding: &'static str,
    always: bool,
) -> CompressingProxy {
    let upstream = sim.addr();
    let client: Client<HttpConnector, axum::body::Body> =
        Client::builder(TokioExecutor::new()).build_http();
    let compressed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let forward = {
        let seen = Arc::clone(&seen);
        move |request: AxumRequest| {
            let client = client.clone();
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(
                    request
                        .headers()
                        .get(ACCEPT_ENCODING)
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
                let (mut parts, body) = request.into_parts();
                let path = parts.uri.path_and_query().unwrap().as_str().to_owned();
                parts.uri = format!("http://{upstream}{path}").parse().unwrap();
                // The gateway itself never compresses; the proxy does, when asked.
                parts.headers.remove(ACCEPT_ENCODING);
                let response = client
                    .request(Request::from_parts(parts, body))
                    .await
                    .unwrap();
                response.map(axum::body::Body::new)
            }
        }
    };
    let counter = Arc::clone(&compressed);
    let app = Router::new()
        .fallback(forward)
        .layer(
            CompressionLayer::new()
                .gzip(coding == "gzip")
                .deflate(coding == "deflate")
                .br(coding == "br")
                .compress_when(SizeAbove::new(0)),
        )
        // Outside the compression, so it sees what went on the wire.
        .layer(axum::middleware::map_response(
            move |response: Response<axum::body::Body>| {
                let counter = Arc::clone(&counter);
                async move {
                    if response.headers().contains_key(CONTENT_ENCODING) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    response
                }
            },
        ))
        // Outermost: a proxy that compresses whatever the request asked for.
        .layer(tower::util::option_layer(always.then(|| {
            SetRequestHeaderLayer::overriding(ACCEPT_ENCODING, HeaderValue::from_static(coding))
        })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    CompressingProxy {
        base_url: format!("http://{addr}/gw"),
        compressed,
        seen_accept_encoding: seen,
    }
}

const CODINGS: [&str; 3] = ["gzip", "deflate", "br"];

#[tokio::test]
async fn compressed_rejection_is_found_with_decompression_above_the_layer() {
    for coding in CODINGS {
        let sim = gateway().await;
        let proxy = compressing_proxy(&sim, coding).await;
        let service = ServiceBuilder::new()
            .layer(DecompressionLayer::new())
            .layer(PaynetAuthLayer::new(manager(&proxy.base_url)))
            .service(http_client());
        through_an_expiry(service, &sim, || categories(&proxy.base_url)).await;
        // The first answer, the rejection and the replay's answer came compressed; the logins did not (the
        // login request goes below the decompressor, asking for nothing).
        assert_eq!(proxy.compressed.load(Ordering::SeqCst), 3, "{coding}");
    }
}

#[tokio::test]
async fn compressed_rejection_is_found_with_decompression_below_the_layer() {
    for coding in CODINGS {
        let sim = gateway().await;
        let proxy = compressing_proxy(&sim, coding).await;
        let service = ServiceBuilder::new()
            .layer(PaynetAuthLayer::new(manager(&proxy.base_url)))
            .layer(DecompressionLayer::new())
            .service(http_client());
        through_an_expiry(service, &sim, || categories(&proxy.base_url)).await;
        // Logins and calls alike came compressed, and were decoded below the layer.
        assert_eq!(proxy.compressed.load(Ordering::SeqCst), 5, "{coding}");
    }
}

#[tokio::test]
async fn compressed_rejection_is_found_without_any_decompressor() {
    for coding in CODINGS {
        let sim = gateway().await;
        let proxy = compressing_proxy(&sim, coding).await;
        let manager = manager(&proxy.base_url);
        let service = PaynetAuthLayer::new(manager.clone()).layer(http_client());
        let asking = || {
            let mut request = categories(&proxy.base_url);
            request
                .headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static(coding));
            request
        };
        through_an_expiry(service, &sim, asking).await;
        assert_eq!(proxy.compressed.load(Ordering::SeqCst), 3, "{coding}");
        assert_eq!(manager.uninspected_responses(), 0, "{coding}");
    }
}

#[tokio::test]
async fn a_proxy_compressing_every_answer_logins_included() {
    for coding in CODINGS {
        let sim = gateway().await;
        let proxy = proxy_compressing(&sim, coding, true).await;
        let service = ServiceBuilder::new()
            .layer(DecompressionLayer::new())
            .layer(PaynetAuthLayer::new(manager(&proxy.base_url)))
            .service(http_client());
        through_an_expiry(service, &sim, || categories(&proxy.base_url)).await;
        assert_eq!(proxy.compressed.load(Ordering::SeqCst), 5, "{coding}");
    }
}

#[tokio::test]
async fn identity_encoding_asks_the_gateway_not_to_compress() {
    let sim = gateway().await;
    let proxy = compressing_proxy(&sim, "gzip").await;
    let service = ServiceBuilder::new()
        .layer(DecompressionLayer::new())
        .layer(PaynetAuthLayer::new(manager(&proxy.base_url)).identity_encoding(true))
        .service(http_client());
    through_an_expiry(service, &sim, || categories(&proxy.base_url)).await;
    assert_eq!(proxy.compressed.load(Ordering::SeqCst), 0);
    let seen = proxy.seen_accept_encoding.lock().unwrap().clone();
    let calls: Vec<_> = seen.iter().filter(|v| v.is_some()).collect();
    assert_eq!(calls.len(), 3, "{seen:?}");
    assert!(
        calls.iter().all(|v| v.as_deref() == Some("identity")),
        "{seen:?}"
    );
}

type Frames = http_body_util::StreamBody<
    futures_util::stream::BoxStream<
        'static,
        Result<http_body::Frame<Bytes>, std::convert::Infallible>,
    >,
>;

/// A body of `first`, then of whatever is sent on `rest`, ending when its sender is dropped.
fn frames(first: Bytes, rest: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Frames {
    use futures_util::StreamExt;
    let tail = futures_util::stream::unfold(rest, |mut rest| async move {
        rest.recv().await.map(|chunk| (chunk, rest))
    });
    let all = futures_util::stream::once(async move { first })
        .chain(tail)
        .map(|chunk| Ok(http_body::Frame::data(chunk)));
    http_body_util::StreamBody::new(all.boxed())
}

#[tokio::test]
async fn an_answer_in_a_coding_the_layer_cannot_read_is_handed_on_at_once_and_counted() {
    // A gateway answering in a coding nobody asked for: handed on untouched and uninspected, as soon as its
    // head arrives (not buffered first), counted, and said once at WARN.
    let logs = support::logs::Captured::default();
    let _logging = logs.install(tracing::Level::WARN);
    let manager = manager("http://gateway.test/gw");
    let (mock, mut handle) = tower_test::mock::pair::<Request<Full<Bytes>>, Response<Frames>>();
    let service = PaynetAuthLayer::new(manager.clone()).layer(mock);
    let call = tokio::spawn(
        service
            .clone()
            .oneshot(categories("http://gateway.test/gw")),
    );
    let (_, reply) = handle.next_request().await.unwrap();
    let (_, no_more) = tokio::sync::mpsc::unbounded_channel();
    let login = support::login_ok("TOKEN-1")
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    reply.send_response(Response::new(frames(login, no_more)));
    let (_, reply) = handle.next_request().await.unwrap();
    let (more, rest) = tokio::sync::mpsc::unbounded_channel();
    let mut answer = Response::new(frames(Bytes::from_static(b"\x28\xb5\x2f\xfd"), rest));
    answer
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    reply.send_response(answer);
    // The body is still open: the answer must come without waiting for its end.
    let response = within("call", call).await.unwrap().unwrap();
    assert_eq!(response.headers()[CONTENT_ENCODING], "zstd");
    more.send(Bytes::from_static(b"-opaque")).unwrap();
    drop(more);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        &b"\x28\xb5\x2f\xfd-opaque"[..]
    );
    assert_eq!(manager.uninspected_responses(), 1);

    // A second one is counted, not said again.
    let call = tokio::spawn(service.oneshot(categories("http://gateway.test/gw")));
    let (_, reply) = handle.next_request().await.unwrap();
    let (_, rest) = tokio::sync::mpsc::unbounded_channel();
    let mut answer = Response::new(frames(Bytes::from_static(b"\x28\xb5\x2f\xfd"), rest));
    answer
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    reply.send_response(answer);
    within("call", call).await.unwrap().unwrap();
    assert_eq!(manager.uninspected_responses(), 2);
    let warnings: Vec<_> = logs
        .text()
        .lines()
        .filter(|line| line.contains(" WARN ") && line.contains("content coding"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// tower's concurrency middleware below the layer: nothing held while waiting for a token

#[tokio::test]
async fn concurrency_limit_of_one_below_the_layer_does_not_deadlock_on_a_cold_start() {
    let sim = gateway().await;
    let service = ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .concurrency_limit(1)
        .service(http_client());
    through_an_expiry(service, &sim, || categories(sim.base_url())).await;
}

/// `n` clones of `service`, all readied before any of them is called, then called at once: every readiness
/// (a permit, a buffer slot) is taken before the first call needs a login.
async fn readied_at_once<S>(service: S, n: usize, sim: &Simulator) -> Vec<serde_json::Value>
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<paynet_auth::ResponseBody<hyper::body::Incoming>>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    let mut readied = Vec::new();
    for _ in 0..n {
        let mut clone = service.clone();
        within("readiness", clone.ready()).await.unwrap();
        readied.push(clone);
    }
    let calls: Vec<_> = readied
        .into_iter()
        .map(|mut service| {
            let request = categories(sim.base_url());
            tokio::spawn(async move { service.call(request).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(answer_json(within("readied call", call).await.unwrap()).await);
    }
    answers
}

/// A request whose body arrives only when the test sends it: an upload still in progress.
fn uploading(base_url: &str, rest: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Request<Frames> {
    use futures_util::StreamExt;
    let chunks = futures_util::stream::unfold(rest, |mut rest| async move {
        rest.recv().await.map(|chunk| (chunk, rest))
    })
    .map(|chunk| Ok(http_body::Frame::data(chunk)));
    Request::post(format!("{base_url}/v2/service"))
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(chunks.boxed()))
        .unwrap()
}

#[tokio::test]
async fn a_slow_upload_holds_no_permit_of_a_limit_below_the_layer() {
    for warm in [false, true] {
        let sim = gateway().await;
        let service = ServiceBuilder::new()
            .layer(PaynetAuthLayer::new(manager(sim.base_url())))
            .concurrency_limit(1)
            .service(http_client());
        if warm {
            within(
                "warm-up",
                service.clone().oneshot(categories(sim.base_url())),
            )
            .await
            .unwrap();
        }
        // The upload takes the only permit when it is readied, then waits for its body.
        let (more, rest) = tokio::sync::mpsc::unbounded_channel();
        let mut upload =
            tokio_test::task::spawn(service.clone().oneshot(uploading(sim.base_url(), rest)));
        assert!(upload.poll().is_pending());

        // Meanwhile another call (and, on a cold start, the login) gets through.
        let other = within(
            "call beside the upload",
            service.clone().oneshot(categories(sim.base_url())),
        )
        .await
        .unwrap();
        assert!(answer_json(other).await["result"]["categories"].is_array());

        more.send(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":5,"params":{}}"#,
        ))
        .unwrap();
        drop(more);
        let uploaded = within("upload", upload).await.unwrap();
        assert!(answer_json(uploaded).await["result"]["categories"].is_array());
        assert_eq!(sim.stats().logins, 1, "warm: {warm}");
        assert_eq!(
            sim.stats().calls_to("getCategoriesList"),
            2 + u64::from(warm)
        );
    }
}

#[tokio::test]
async fn concurrency_limit_of_n_with_n_callers_readied_at_once() {
    const N: usize = 4;
    let sim = gateway().await;
    let service = ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .concurrency_limit(N)
        .service(http_client());
    for round in 0..2 {
        if round == 1 {
            sim.expire_all();
        }
        let answers = readied_at_once(service.clone(), N, &sim).await;
        assert!(answers.iter().all(|a| a["result"]["categories"].is_array()));
    }
    assert_eq!(sim.stats().logins, 2);
}

#[tokio::test]
async fn buffer_and_rate_limit_below_the_layer_with_every_slot_readied() {
    const SLOTS: usize = 4;
    let sim = gateway().await;
    let service = ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .buffer(SLOTS)
        .rate_limit(1000, Duration::from_secs(1))
        .service(http_client());
    for round in 0..2 {
        if round == 1 {
            sim.expire_all();
        }
        let answers = readied_at_once(service.clone(), SLOTS, &sim).await;
        assert!(answers.iter().all(|a| a["result"]["categories"].is_array()));
    }
    assert_eq!(sim.stats().logins, 2);
}

#[tokio::test]
async fn load_shed_over_a_concurrency_limit_below_the_layer() {
    // The login must not be shed because the caller that needs it still holds the only permit.
    let sim = gateway().await;
    let service = ServiceBuilder::new()
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .load_shed()
        .concurrency_limit(1)
        .service(http_client());
    through_an_expiry(service, &sim, || categories(sim.base_url())).await;
}

#[tokio::test]
async fn concurrency_limit_above_the_layer() {
    let sim = gateway().await;
    let service = ServiceBuilder::new()
        .concurrency_limit(1)
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .service(http_client());
    through_an_expiry(service, &sim, || categories(sim.base_url())).await;
}

// ---------------------------------------------------------------------------------------------------------------
// tower's retry above the layer

/// Retries only what [`Error::is_safe_to_retry`] allows, at most twice; counts the decisions.
#[derive(Clone)]
struct SafeRetry {
    left: usize,
    asked: Arc<AtomicUsize>,
}

impl<Res> tower::retry::Policy<Request<Full<Bytes>>, Res, Error> for SafeRetry {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Res, Error>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        self.asked.fetch_add(1, Ordering::SeqCst);
        (error.is_safe_to_retry() && self.left > 0).then(|| {
            self.left -= 1;
            std::future::ready(())
        })
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    }
}

#[tokio::test]
async fn retry_above_the_layer_never_replays_a_payment_after_a_dropped_connection() {
    let sim = gateway().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .retry(SafeRetry {
            left: 2,
            asked: Arc::clone(&asked),
        })
        .layer(PaynetAuthLayer::new(manager(sim.base_url())))
        .service(http_client());

    // A payment through an expiry: the layer replays it once after -9999 on its own; the policy sees success.
    let paid = within(
        "payment",
        service.clone().oneshot(payment(sim.base_url(), "tx-1")),
    )
    .await
    .unwrap();
    let answer = answer_json(paid).await;
    assert!(answer["result"].is_object(), "{answer}");
    sim.expire_all();
    let paid = within(
        "payment",
        service.clone().oneshot(payment(sim.base_url(), "tx-2")),
    )
    .await
    .unwrap();
    let answer = answer_json(paid).await;
    assert!(answer["result"].is_object(), "{answer}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "no error reached the policy"
    );

    // The gateway executes the payment, then the connection drops: the policy is asked and declines.
    sim.set_drop_after_execute(true);
    let error = within(
        "payment",
        service.clone().oneshot(payment(sim.base_url(), "tx-3")),
    )
    .await
    .unwrap_err();
    let stats = sim.stats();
    assert_eq!(stats.executions_of("tx-1"), 1);
    assert_eq!(stats.executions_of("tx-2"), 1);
    assert_eq!(
        stats.executions_of("tx-3"),
        1,
        "executed once, never replayed"
    );
    assert_eq!(stats.logins, 2);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(matches!(error, Error::Inner(_)), "{error}");
    assert!(!error.is_safe_to_retry());
}

// ---------------------------------------------------------------------------------------------------------------
// An axum server handing the gateway's answer to its own client

type Gateway = paynet_auth::PaynetAuth<HttpClient>;

async fn proxy_handler(
    State((gateway, base)): State<(Gateway, String)>,
) -> Response<axum::body::Body> {
    let response = gateway.oneshot(categories(&base)).await.unwrap();
    response.map(axum::body::Body::new)
}

#[tokio::test]
async fn axum_server_proxying_the_gateway_answer() {
    let sim = gateway().await;
    let gateway = PaynetAuthLayer::new(manager(sim.base_url())).layer(http_client());
    let app = Router::new()
        .route("/categories", axum::routing::get(proxy_handler))
        .with_state((gateway, sim.base_url().to_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for round in 0..2 {
        if round == 1 {
            sim.expire_all();
        }
        let request = Request::get(format!("http://{addr}/categories"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        // A panic in the body's size hint kills the server's connection task: the client sees a closed connection.
        let response = within("axum", client.request(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let declared: u64 = response.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            declared,
            body.len() as u64,
            "the exact size hint became Content-Length"
        );
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(answer["result"]["categories"].is_array(), "{answer}");
    }
    assert_eq!(sim.stats().logins, 2);
}

// ---------------------------------------------------------------------------------------------------------------
// reqwest-middleware

#[cfg(feature = "reqwest")]
mod reqwest_stack {
    use super::*;
    use futures_util::StreamExt;
    use paynet_auth::reqwest_adapter::PaynetAuthMiddleware;

    fn client(layer: PaynetAuthLayer) -> reqwest_middleware::ClientWithMiddleware {
        crate::support::install_ring_provider();
        let client = reqwest::Client::new();
        reqwest_middleware::ClientBuilder::new(client.clone())
            .with(PaynetAuthMiddleware::new(layer, client))
            .build()
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":123,"params":{}}"#;

    #[tokio::test]
    async fn content_length_of_an_inspected_answer_through_an_expiry() {
        let sim = gateway().await;
        let client = client(PaynetAuthLayer::new(manager(sim.base_url())));
        for round in 0..2 {
            if round == 1 {
                sim.expire_all();
            }
            let response = within(
                "reqwest",
                client
                    .post(format!("{}/v2/service", sim.base_url()))
                    .header("content-type", "application/json")
                    .body(CALL)
                    .send(),
            )
            .await
            .unwrap();
            let length = response.content_length();
            let body = response.bytes().await.unwrap();
            assert_eq!(length, Some(body.len() as u64));
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(answer["result"]["categories"].is_array(), "{answer}");
        }
        assert_eq!(sim.stats().logins, 2);
    }

    #[tokio::test]
    async fn streaming_an_answer_longer_than_the_inspection_limit() {
        let sim = gateway().await;
        let manager = manager(sim.base_url());
        let client = client(PaynetAuthLayer::new(manager.clone()).inspect_limit(16));
        let response = within(
            "reqwest",
            client
                .post(format!("{}/v2/service", sim.base_url()))
                .header("content-type", "application/json")
                .body(CALL)
                .send(),
        )
        .await
        .unwrap();
        let length = response.content_length();
        let mut stream = response.bytes_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        if let Some(length) = length {
            assert_eq!(length, body.len() as u64);
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(answer["result"]["categories"].is_array(), "{answer}");
        assert_eq!(manager.uninspected_responses(), 1);
    }
}

/// A call inside the refresh window under `concurrency_limit(1)` below the layer, with tower-http's decompression
/// above it, over real HTTP: the call holds the one permit while it is sent, so the background login must wait for
/// it rather than for the call, and neither may wait for the other's end. The call is answered with the current
/// token, the login follows once the permit is free, and the next call carries the new token, with no rejection
/// (one session per terminal: a token sent after the new login would be rejected).
#[tokio::test]
async fn a_refresh_ahead_under_a_concurrency_limit_of_one_neither_waits_for_nor_blocks_the_call() {
    use paynet_auth::clock::ManualClock;
    let sim = gateway().await;
    let clock = ManualClock::new(1_700_000_000_000);
    let manager = TokenManager::builder(PaynetLogin::new(
        sim.base_url(),
        USERNAME,
        PASSWORD.into(),
        TERMINAL,
    ))
    .clock(Arc::new(clock.clone()))
    .store(MemoryStore::with_clock(Arc::new(clock.clone())))
    .token_ttl(Some(Duration::from_secs(60)))
    .expiry_skew(Duration::ZERO)
    .refresh_ahead(Duration::from_secs(10))
    .build()
    .unwrap();
    let service = ServiceBuilder::new()
        .layer(DecompressionLayer::new())
        .layer(PaynetAuthLayer::new(manager.clone()))
        .concurrency_limit(1)
        .service(http_client());
    let call = |service: &_| {
        let service: tower::util::BoxCloneService<_, _, _> = Clone::clone(service);
        within("call", service.oneshot(categories(sim.base_url())))
    };
    let service = tower::util::BoxCloneService::new(service);

    let answer = answer_json(call(&service).await.unwrap()).await;
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    clock.advance(Duration::from_secs(55));
    let answer = answer_json(call(&service).await.unwrap()).await;
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    within(
        "the background login",
        sim.wait_for(|stats| stats.logins == 2),
    )
    .await;
    within("the new token cached", async {
        while manager.cached().map(|t| t.generation().0) != Some(2) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let answer = answer_json(call(&service).await.unwrap()).await;
    assert!(answer["result"]["categories"].is_array(), "{answer}");
    let stats = sim.stats();
    assert_eq!(
        stats.rejections, 0,
        "no call was sent with the killed token"
    );
    assert_eq!(stats.calls_to("getCategoriesList"), 3);
}
