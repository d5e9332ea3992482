//! A refresh storm: 10,000 concurrent callers find the token expired, the login takes a fixed latency L. One
//! login must serve them all, and the last caller should have its token within L + 5 ms. Reported: total time
//! against L, p50 and p99 of each caller's wait, and the number of logins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use paynet_auth::TokenManager;
use paynet_auth::token::{LoginResponse, LoginSender, PaynetLogin};

const CALLERS: usize = 10_000;
const LATENCY: Duration = Duration::from_millis(50);

fn sender(logins: &Arc<AtomicU64>) -> LoginSender {
    let logins = Arc::clone(logins);
    LoginSender::new(move |_request| {
        async move {
            tokio::time::sleep(LATENCY).await;
            let n = logins.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(LoginResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: Bytes::from(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"token":"token-{n}"}}}}"#
                )),
            })
        }
        .boxed()
    })
}

/// One storm; returns each caller's wait, sorted, and the logins it took.
async fn storm() -> (Vec<Duration>, u64, Duration) {
    let logins = Arc::new(AtomicU64::new(0));
    let manager = TokenManager::builder(PaynetLogin::new(
        "http://gateway.test/gw",
        "u",
        "p".into(),
        1,
    ))
    .build()
    .unwrap();
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let manager = manager.clone();
            let sender = sender(&logins);
            tokio::spawn(async move {
                let asked = Instant::now();
                manager.token(sender).await.unwrap();
                asked.elapsed()
            })
        })
        .collect();
    let mut waits = Vec::with_capacity(CALLERS);
    for caller in callers {
        waits.push(caller.await.unwrap());
    }
    let total = started.elapsed();
    waits.sort_unstable();
    (waits, logins.load(Ordering::SeqCst), total)
}

fn refresh_storm(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (waits, logins, total) = runtime.block_on(storm());
    let pct = |q: f64| waits[((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1];
    println!(
        "storm of {CALLERS} callers, login latency {LATENCY:?}: logins {logins}, all done in {total:?} (L + {:?}), \
         wait p50 {:?}, p99 {:?}",
        total.saturating_sub(LATENCY),
        pct(0.50),
        pct(0.99)
    );
    let mut group = c.benchmark_group("refresh_storm");
    group.sample_size(10);
    group.bench_function("10k_callers_50ms_login", |b| {
        b.to_async(&runtime).iter_custom(|iterations| async move {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let (_, logins, total) = storm().await;
                assert_eq!(logins, 1);
                elapsed += total;
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, refresh_storm);
criterion_main!(benches);
