//! An axum service whose handler calls Paynet through the layer kept in its state, with the token machinery's
//! metrics at `/metrics` (Prometheus text) and its health at `/health` (a readiness probe).
//!
//! `cargo run --example axum_app --features sqlite,hyper-client,metrics`, then
//! `curl http://127.0.0.1:3000/categories`, `curl http://127.0.0.1:3000/metrics`, `curl -i http://127.0.0.1:3000/health`.
//! It talks to the gateway simulator (`paynet-sim`) and keeps the token in a SQLite file in the working directory.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use paynet_auth::PaynetLogin;
use paynet_auth::hyper_client::HttpClient;
use paynet_auth::store::{self, StoreOptions};
use paynet_auth::token::Health;
use paynet_auth::{BoxError, PaynetAuth, PaynetAuthLayer, TokenManager};
use paynet_sim::Simulator;
use tower::timeout::Timeout;
use tower::{Layer, ServiceExt};

type Paynet = PaynetAuth<Timeout<HttpClient>>;

#[derive(Clone)]
struct AppState {
    paynet: Paynet,
    gateway: String,
    metrics: PrometheusHandle,
}

/// The series of every credential, in Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// 200 while calls get a token (`ready`, or `degraded` with the reason), 503 while they fail (`failing`, with the
/// time of the next login attempt): what a load balancer or a Kubernetes readiness probe asks.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let health = state.paynet.manager().health();
    let status = match health {
        Health::Failing { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, health.to_string())
}

async fn categories(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let request = http::Request::post(format!("{}/v2/service", state.gateway))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{}}"#,
        )))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // A token failure or a transport error becomes a 502 with a message that names the cause, never a secret.
    let response = state
        .paynet
        .oneshot(request)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?
        .to_bytes();
    let json =
        serde_json::from_slice(&body).map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(json))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The recorder first: a manager describes its series (unit, help text) to the recorder installed when it is
    // built. Buckets make the two durations Prometheus histograms, which add up across instances (summaries do
    // not): a login normally takes tens of milliseconds, a lease wait up to the login timeout.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )?
        .install_recorder()?;
    let gateway = Simulator::builder().start().await?;
    let store = store::connect("sqlite://paynet-axum-example.db", StoreOptions::default()).await?;
    let manager = TokenManager::builder(PaynetLogin::new(
        gateway.base_url(),
        paynet_sim::DEFAULT_USERNAME,
        paynet_sim::DEFAULT_PASSWORD.into(),
        paynet_sim::DEFAULT_TERMINAL_ID,
    ))
    .shared_store(store)
    .build()?;
    // HTTPS and HTTP, HTTPS_PROXY / NO_PROXY honoured; `HttpClient::from_config` reads a credential's `tls` and `proxy`.
    let client = HttpClient::builder().build()?;
    let state = AppState {
        paynet: PaynetAuthLayer::new(manager.clone())
            .layer(Timeout::new(client, Duration::from_secs(10))),
        gateway: gateway.base_url().to_owned(),
        metrics: recorder,
    };
    let app = Router::new()
        .route("/categories", get(categories))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://{}/categories (Ctrl-C stops)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The server took its last request: give back the refresh lease if a login holds it, so the instance that
    // replaces this one logs in at once instead of waiting out `lease_ttl`.
    match manager.shutdown().await {
        Ok(true) => println!("gave the refresh lease back"),
        Ok(false) => {}
        Err(error) => eprintln!("could not give the refresh lease back: {error}"),
    }
    Ok(())
}
