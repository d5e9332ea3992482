//! `paynet-auth load`: many calls, a bounded number in flight, one JSON line of figures.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressStyle};
use paynet_auth::token::LoginSender;
use secrecy::ExposeSecret;
use tower::{Service, ServiceExt};

use crate::stack;

#[derive(clap::Args)]
pub(crate) struct LoadArgs {
    /// The request path below the gateway root.
    path: String,
    /// The JSON-RPC method.
    method: String,
    /// The params object as JSON. Defaults to {}.
    params: Option<String>,
    /// How many calls in all.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// How many calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Sends the same calls without the layer, the token fetched once: the baseline.
    #[arg(long)]
    bare: bool,
}

#[derive(serde::Serialize)]
struct Figures {
    requests: u64,
    ok: u64,
    errors: u64,
    logins: u64,
    elapsed_ms: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub(crate) async fn run(config_path: &Path, args: LoadArgs) -> Result<ExitCode, String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let config = stack::load_config(config_path)?;
    let params = stack::parse_params(args.params.as_deref())?;
    let manager = stack::manager(&config.paynet).await?;
    let progress = ProgressBar::new(args.requests);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {elapsed}")
            .expect("a valid progress template"),
    );

    let started = Instant::now();
    let outcomes: Vec<(bool, Duration)> = if args.bare {
        // The baseline: the same calls with the token written in once, straight through the client.
        let token = manager
            .token(LoginSender::from_service(stack::client()))
            .await
            .map_err(|e| crate::one_line(&e))?;
        let mut params = params.clone();
        let field = config.paynet.token_field;
        let token_value = serde_json::Value::String(token.secret().expose_secret().to_owned());
        let mut template =
            serde_json::json!({"jsonrpc": "2.0", "method": args.method, "id": 1, "params": params});
        match field {
            paynet_auth::config::TokenFieldConfig::Params => {
                params["token"] = token_value;
                template["params"] = params;
            }
            paynet_auth::config::TokenFieldConfig::TopLevel => template["token"] = token_value,
        }
        let body = Bytes::from(template.to_string());
        let url = config.paynet.url(&args.path);
        let client = stack::client();
        drive(args.requests, args.concurrency, &progress, move |_| {
            let request = http::Request::post(url.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(body.clone()))
                .expect("a valid request");
            let client = client.clone();
            async move {
                match client.oneshot(request).await {
                    Ok(response) => has_result(response.into_body()).await,
                    Err(_) => false,
                }
            }
        })
        .await
    } else {
        let service = stack::authorised(&config.paynet, manager.clone());
        let service = Arc::new(service);
        let path = Arc::new(args.path.clone());
        let method = Arc::new(args.method.clone());
        let config = Arc::new(config.paynet.clone());
        let params = Arc::new(params);
        drive(args.requests, args.concurrency, &progress, move |i| {
            let request = stack::rpc_request(&config, &path, &method, &params, i + 1);
            let mut service = (*service).clone();
            async move {
                let ready = match ServiceExt::<http::Request<http_body_util::Full<Bytes>>>::ready(
                    &mut service,
                )
                .await
                {
                    Ok(ready) => ready,
                    Err(_) => return false,
                };
                match ready.call(request).await {
                    Ok(response) => has_result(response.into_body()).await,
                    Err(_) => false,
                }
            }
        })
        .await
    };
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let mut latencies: Vec<Duration> = outcomes.iter().map(|(_, d)| *d).collect();
    latencies.sort_unstable();
    let ok = outcomes.iter().filter(|(ok, _)| *ok).count() as u64;
    let figures = Figures {
        requests: args.requests,
        ok,
        errors: args.requests - ok,
        logins: manager.logins(),
        elapsed_ms: elapsed.as_millis() as u64,
        rps: round2(args.requests as f64 / elapsed.as_secs_f64().max(1e-9)),
        p50_ms: round2(percentile(&latencies, 0.50)),
        p99_ms: round2(percentile(&latencies, 0.99)),
    };
    println!(
        "{}",
        serde_json::to_string(&figures).expect("figures serialise")
    );
    Ok(if figures.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn drive<F, Fut>(
    requests: u64,
    concurrency: usize,
    progress: &ProgressBar,
    call: F,
) -> Vec<(bool, Duration)>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    futures_util::stream::iter(0..requests)
        .map(|i| {
            let call = call(i);
            async move {
                let started = Instant::now();
                let ok = call.await;
                (ok, started.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .inspect(|_| progress.inc(1))
        .collect()
        .await
}

async fn has_result<B>(body: B) -> bool
where
    B: http_body::Body,
{
    let Ok(collected) = body.collect().await else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&collected.to_bytes())
        .is_ok_and(|json| json.get("result").is_some())
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
