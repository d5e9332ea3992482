//! `paynet-auth load`: many calls, a bounded number in flight, one JSON line of figures.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressStyle};
use paynet_auth::TokenManager;
use paynet_auth::config::TokenFieldConfig;
use secrecy::ExposeSecret;
use tower::ServiceExt;

use crate::interrupt::{self, Caught, Signals};
use crate::output::outln;
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
    /// Keeps starting calls for this long ("20s") instead of stopping after --requests.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// How many calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Sends the same calls without the layer, the token fetched once (by one warm-up call through the layer):
    /// the baseline.
    #[arg(long)]
    bare: bool,
    /// The credential to call as (its `name` in the configuration's `credentials:`). Defaults to the
    /// configuration's default credential.
    #[arg(long)]
    credential: Option<String>,
}

/// How many of the failed calls [`Figures::top_errors`] names.
const TOP_ERRORS: usize = 5;

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
    /// One call in a thousand took longer than this.
    p999_ms: f64,
    /// The slowest call.
    max_ms: f64,
    /// The most frequent causes of the failed calls, most frequent first (ties by text).
    top_errors: Vec<ErrorCount>,
    /// Present (and true) when a signal ended the run: the figures cover the calls that finished before it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    partial: bool,
}

#[derive(serde::Serialize)]
struct ErrorCount {
    error: String,
    count: u64,
}

/// What one call came to: `None` for an answer with a `result`, else the cause on one line.
type Outcome = Option<String>;

/// The [`TOP_ERRORS`] most frequent causes among `outcomes`.
fn top_errors<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Vec<ErrorCount> {
    let mut counts = std::collections::HashMap::<&str, u64>::new();
    for cause in outcomes.flatten() {
        *counts.entry(cause.as_str()).or_default() += 1;
    }
    let mut counts: Vec<ErrorCount> = counts
        .into_iter()
        .map(|(error, count)| ErrorCount {
            error: error.to_owned(),
            count,
        })
        .collect();
    counts.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
    counts.truncate(TOP_ERRORS);
    counts
}

pub(crate) async fn run(config_path: &Path, args: LoadArgs) -> Result<ExitCode, String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let file = stack::load_config(config_path)?;
    let params = stack::parse_params(args.params.as_deref())?;
    let config = stack::credential(&file, args.credential.as_deref())?;
    let mut signals = Signals::install()?;
    let ready = stack::configured(config).await?;
    let manager = ready.manager().clone();
    let progress = progress_bar(args.requests);

    // Both modes send the same prepared bytes, so the baseline differs from the layer only by the layer.
    let url = config.url(&args.path);
    let mut call =
        serde_json::json!({"jsonrpc": "2.0", "method": args.method, "id": 1, "params": params});
    // Checked once here, so that building each call's request below cannot fail.
    stack::post(&url, Bytes::new())?;

    let started = Instant::now();
    let pace = Pace::of(&args, started);
    let service = stack::authorised(&ready, config)?;
    let (outcomes, interrupted) = if args.bare {
        // The baseline: the token written in once, the calls sent straight through the client. One call through
        // the layer first makes sure that token is one the gateway accepts (a stored one may be stale).
        tokio::select! {
            biased;
            signal = signals.caught() => return Ok(interrupt::stop(signal, &manager).await),
            answer = service.oneshot(request(&url, &Bytes::from(call.to_string()))) => {
                answer.map_err(|e| crate::one_line(&*e))?;
            }
        }
        write_token(&mut call, &manager, config.token_field)?;
        let (body, client) = (Bytes::from(call.to_string()), stack::client(config)?);
        let stop = async move { signals.caught().await };
        drive(pace, &progress, stop, move |_| {
            result_or_cause(client.clone().oneshot(request(&url, &body)))
        })
        .await
    } else {
        let body = Bytes::from(call.to_string());
        let stop = async move { signals.caught().await };
        drive(pace, &progress, stop, move |_| {
            result_or_cause(service.clone().oneshot(request(&url, &body)))
        })
        .await
    };
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let figures = Figures::of(&outcomes, elapsed, manager.logins(), interrupted.is_some());
    report(&figures, interrupted, &manager).await
}

/// How many calls a run starts, until when, and how many at once.
#[derive(Clone, Copy)]
struct Pace {
    requests: u64,
    deadline: Option<Instant>,
    concurrency: usize,
}

impl Pace {
    fn of(args: &LoadArgs, started: Instant) -> Self {
        // With a duration the count is open-ended: the deadline ends the run.
        let (requests, deadline) = match args.duration {
            Some(duration) => (u64::MAX, Some(started + duration)),
            None => (args.requests, None),
        };
        Self {
            requests,
            deadline,
            concurrency: args.concurrency,
        }
    }
}

fn progress_bar(requests: u64) -> ProgressBar {
    let progress = ProgressBar::new(requests);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {elapsed}")
            .expect("a valid progress template"),
    );
    progress
}

/// The request of one call, to a URL checked before the first.
fn request(url: &str, body: &Bytes) -> http::Request<http_body_util::Full<Bytes>> {
    stack::post(url, body.clone()).expect("the URL was checked before the first call")
}

/// Writes the manager's cached token into `call` where the gateway reads it, for the bare baseline.
fn write_token(
    call: &mut serde_json::Value,
    manager: &TokenManager,
    field: TokenFieldConfig,
) -> Result<(), String> {
    let token = manager
        .cached()
        .ok_or("the warm-up call left no token to send bare")?;
    let token = serde_json::Value::String(token.secret().expose_secret().to_owned());
    match field {
        TokenFieldConfig::Params => call["params"]["token"] = token,
        TokenFieldConfig::TopLevel => call["token"] = token,
    }
    Ok(())
}

impl Figures {
    fn of(outcomes: &[(Outcome, Duration)], elapsed: Duration, logins: u64, partial: bool) -> Self {
        let mut latencies: Vec<Duration> = outcomes.iter().map(|(_, d)| *d).collect();
        latencies.sort_unstable();
        let ok = outcomes.iter().filter(|(cause, _)| cause.is_none()).count() as u64;
        let requests = outcomes.len() as u64;
        let [p50_ms, p99_ms, p999_ms, max_ms] = latency_ranks(&latencies);
        Self {
            requests,
            ok,
            errors: requests - ok,
            logins,
            elapsed_ms: elapsed.as_millis() as u64,
            rps: round2(requests as f64 / elapsed.as_secs_f64().max(1e-9)),
            p50_ms,
            p99_ms,
            p999_ms,
            max_ms,
            top_errors: top_errors(outcomes.iter().map(|(cause, _)| cause)),
            partial,
        }
    }
}

/// Prints the figures as one JSON line. Interrupted, it gives the lease back first (the fleet waits on it) and
/// ends with the signal's status; else with failure if a call failed.
async fn report(
    figures: &Figures,
    interrupted: Option<Caught>,
    manager: &TokenManager,
) -> Result<ExitCode, String> {
    let stopped = match interrupted {
        Some(signal) => Some(interrupt::stop(signal, manager).await),
        None => None,
    };
    outln!(
        "{}",
        serde_json::to_string(figures).expect("figures serialise")
    )?;
    if let Some(status) = stopped {
        return Ok(status);
    }
    Ok(if figures.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `pace.requests` calls, `pace.concurrency` at a time, until `stop` answers (then the calls that finished, and what
/// `stop` said; the calls in flight are abandoned), each in its own task as a service's request handlers would
/// be: one task driving every call would put all of their work on one thread and make that thread the limit.
/// The loop that starts them is a task too, like a server's accept loop, so that the runtime's workers are the
/// only busy threads; driven from the thread that started the runtime, it made a third one competing for the
/// cores.
async fn drive<F, Fut>(
    pace: Pace,
    progress: &ProgressBar,
    stop: impl std::future::Future<Output = Caught> + Send + 'static,
    call: F,
) -> (Vec<(Outcome, Duration)>, Option<Caught>)
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let progress = progress.clone();
    let Pace {
        requests,
        deadline,
        concurrency,
    } = pace;
    let driver = tokio::spawn(async move {
        let finished = futures_util::stream::iter(0..requests)
            .take_while(move |_| std::future::ready(deadline.is_none_or(|at| Instant::now() < at)))
            .map(move |i| {
                let call = call(i);
                let task = tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = call.await;
                    (outcome, started.elapsed())
                });
                // A call that panicked counts as failed.
                async move {
                    task.await.unwrap_or_else(|e| {
                        (Some(format!("the call's task failed: {e}")), Duration::ZERO)
                    })
                }
            })
            .buffer_unordered(concurrency)
            .inspect(move |_| progress.inc(1));
        futures_util::pin_mut!(finished, stop);
        let mut outcomes = Vec::new();
        loop {
            tokio::select! {
                biased;
                signal = &mut stop => return (outcomes, Some(signal)),
                outcome = finished.next() => match outcome {
                    Some(outcome) => outcomes.push(outcome),
                    None => return (outcomes, None),
                },
            }
        }
    });
    driver
        .await
        .expect("the loop that starts the calls does not panic")
}

/// `None` when a call's answer carries a JSON-RPC `result`; else what it came to, on one line. The texts are
/// counted for `top_errors`, so they name the cause without what differs from call to call (the `id`).
async fn result_or_cause<B, E>(
    response: impl std::future::Future<Output = Result<http::Response<B>, E>>,
) -> Outcome
where
    B: http_body::Body,
    B::Error: Into<paynet_auth::BoxError>,
    E: Into<paynet_auth::BoxError>,
{
    let response = match response.await {
        Ok(response) => response,
        Err(error) => return Some(cause(&*error.into())),
    };
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Some(format!(
                "reading the response failed: {}",
                crate::one_line(&*error.into())
            ));
        }
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Some(format!("HTTP {status} with a body that is not JSON"));
    };
    if json.get("result").is_some() {
        return None;
    }
    Some(match json.get("error") {
        Some(error) => format!(
            "JSON-RPC error {} \"{}\"",
            error
                .get("code")
                .map_or("?".to_owned(), ToString::to_string),
            paynet_auth::redact::gateway_text(
                error.get("message").and_then(|m| m.as_str()).unwrap_or(""),
                &[]
            )
        ),
        None => format!("HTTP {status} without a result"),
    })
}

/// An error's causes on one line, without the time left of a backoff, which differs from call to call.
fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    match error.downcast_ref::<paynet_auth::Error>() {
        Some(paynet_auth::Error::Token(paynet_auth::TokenError::Backoff { cause, .. })) => format!(
            "token refresh is backing off after a failed login: {}",
            crate::one_line(&**cause)
        ),
        _ => crate::one_line(error),
    }
}

/// p50, p99, p999 and the maximum of latencies sorted ascending, in milliseconds rounded to two decimals.
fn latency_ranks(sorted: &[Duration]) -> [f64; 4] {
    [
        round2(percentile(sorted, 0.50)),
        round2(percentile(sorted, 0.99)),
        round2(percentile(sorted, 0.999)),
        round2(sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)),
    ]
}

/// The latency below which a share `q` of the calls finished (nearest rank, over latencies sorted ascending).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_ranks_are_nearest_ranks_and_the_maximum() {
        let sorted: Vec<Duration> = (1..=2000).map(Duration::from_millis).collect();
        assert_eq!(latency_ranks(&sorted), [1000.0, 1980.0, 1998.0, 2000.0]);
        assert_eq!(latency_ranks(&sorted[..1]), [1.0; 4]);
        assert_eq!(latency_ranks(&[]), [0.0; 4]);
    }
}
