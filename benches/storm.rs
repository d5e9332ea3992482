//! A refresh storm: 10,000 concurrent callers find the token expired, the login takes a fixed latency L. One
//! login must serve them all, and the last caller should have its token within L + 5 ms of the first caller's
//! ask. Reported: that time against L, the fan-out after the login answered, p50 and p99 of each caller's wait,
//! and the number of logins.
//!
//! The same storm is also run as 10,000 requests through the whole layer, where a caller is done when it has its
//! response.
//!
//! Each caller records when it asked and when it had its token; the harness collects those without joining the
//! tasks one by one, which would wake the collecting thread once per caller and put that cost on the callers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use paynet_auth::token::{LoginResponse, LoginSender, PaynetLogin};
use paynet_auth::{PaynetAuthLayer, TokenManager};
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};

const CALLERS: usize = 10_000;
const LATENCY: Duration = Duration::from_millis(50);

/// What the mock login saw.
#[derive(Default)]
struct Logins {
    count: AtomicU64,
    answered: Mutex<Option<Instant>>,
}

impl Logins {
    /// Counts a login that has just answered; returns its number.
    fn answered_now(&self) -> u64 {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        *self.answered.lock().unwrap() = Some(Instant::now());
        n
    }
}

fn manager() -> TokenManager {
    TokenManager::builder(PaynetLogin::new(
        "http://gateway.test/gw",
        "u",
        "p".into(),
        1,
    ))
    .build()
    .unwrap()
}

/// Waits `latency` to within the OS's sleep precision; tokio's timer would round it up to its next 1 ms tick.
async fn exactly(latency: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(latency))
        .await
        .unwrap();
}

fn sender(logins: &Arc<Logins>) -> LoginSender {
    let logins = Arc::clone(logins);
    LoginSender::new(move |_request| {
        let logins = Arc::clone(&logins);
        async move {
            exactly(LATENCY).await;
            let n = logins.answered_now();
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

struct Storm {
    /// Each caller's wait, sorted.
    waits: Vec<Duration>,
    logins: u64,
    /// From the first caller's ask to the last caller's token.
    all_done: Duration,
    /// From the login's answer to the last caller's token: the fan-out.
    fan_out: Duration,
    /// From the first ask to the last: how long the harness took to start every caller.
    asking: Duration,
    /// From the login's answer to the first caller's token: what happens before the fan-out proper.
    first: Duration,
}

/// One storm through the token manager.
async fn storm() -> Storm {
    let logins = Arc::new(Logins::default());
    let manager = manager();
    let callers = Callers::new();
    for i in 0..CALLERS {
        let manager = manager.clone();
        let sender = sender(&logins);
        callers.spawn(i, async move {
            manager.token(sender).await.unwrap();
        });
    }
    callers.finish(&logins).await
}

/// The storm as a service sees it: 10,000 requests through `PaynetAuth` over an in-memory gateway whose login
/// takes L and whose other answers are immediate; a caller is done when it has its response.
async fn layer_storm() -> Storm {
    let logins = Arc::new(Logins::default());
    let gateway = {
        let logins = Arc::clone(&logins);
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            let logins = Arc::clone(&logins);
            async move {
                let body = if request.uri().path().ends_with("/v2/user") {
                    exactly(LATENCY).await;
                    logins.answered_now();
                    Bytes::from_static(
                        br#"{"jsonrpc":"2.0","id":1,"result":{"token":"RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG"}}"#,
                    )
                } else {
                    Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":[]}"#)
                };
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            }
        })
    };
    let manager = manager();
    let service = PaynetAuthLayer::new(manager).layer(gateway);
    let body = Bytes::from_static(
        br#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{"lang":"ru"}}"#,
    );
    let callers = Callers::new();
    for i in 0..CALLERS {
        let request = Request::post("http://gateway.test/gw/v2/service")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let service = service.clone();
        callers.spawn(i, async move {
            let response = service.oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap();
        });
    }
    callers.finish(&logins).await
}

/// The baseline: the same callers awaiting one shared future that takes L, without the manager. What is left
/// of the storm's time above this is the manager's.
async fn bare_storm() -> Storm {
    let logins = Arc::new(Logins::default());
    let answer = {
        let logins = Arc::clone(&logins);
        async move {
            exactly(LATENCY).await;
            logins.answered_now();
        }
        .boxed()
        .shared()
    };
    let callers = Callers::new();
    for i in 0..CALLERS {
        callers.spawn(i, answer.clone());
    }
    callers.finish(&logins).await
}

/// The baseline's callers, awaiting the shared future `make` builds, each holding `PAD` bytes beside its handle.
/// The variants below are printed only, to take the manager's share of a storm apart.
async fn shared_storm<T, const PAD: usize>(
    make: impl FnOnce(Arc<Logins>) -> Shared<BoxFuture<'static, T>>,
) -> Storm
where
    T: Clone + Send + Sync + 'static,
{
    let logins = Arc::new(Logins::default());
    let answer = make(Arc::clone(&logins));
    let callers = Callers::new();
    for i in 0..CALLERS {
        let answer = answer.clone();
        callers.spawn(i, async move {
            let pad = [i as u8; PAD];
            let answered = answer.await;
            std::hint::black_box((&pad, &answered));
        });
    }
    callers.finish(&logins).await
}

/// The login as the baseline's: it answers an `Arc`, as the manager hands each caller one.
async fn arc_login(logins: Arc<Logins>) -> Arc<String> {
    exactly(LATENCY).await;
    logins.answered_now();
    Arc::new(String::from("token"))
}

/// Each caller gets an `Arc`: what the reference count's traffic between the two cores adds to the wake-up alone.
async fn bare_arc_storm() -> Storm {
    shared_storm::<_, 0>(|logins| arc_login(logins).boxed().shared()).await
}

/// The shared future over a spawned task's handle, as the coalescer ran a refresh before it was driven by its
/// waiters: the task's completion wakes the callers from a worker thread, where the baseline's are woken from the
/// blocking pool's.
async fn spawned_storm() -> Storm {
    shared_storm::<_, 0>(|logins| {
        let task = tokio::spawn(arc_login(logins));
        async move { task.await.unwrap() }.boxed().shared()
    })
    .await
}

/// Each caller holds 24 bytes more, what a caller of the manager holds beyond a bare handle (its manager handle,
/// and the token future's 32 bytes against the `Shared` handle's 16): the baseline for callers of the manager's size.
async fn padded_storm() -> Storm {
    shared_storm::<_, 24>(|logins| arc_login(logins).boxed().shared()).await
}

/// Where callers leave their times.
#[derive(Clone)]
struct Callers {
    times: Arc<Vec<OnceLock<(Instant, Instant)>>>,
    remaining: Arc<AtomicUsize>,
    finished: Arc<Notify>,
}

impl Callers {
    fn new() -> Self {
        Self {
            times: Arc::new((0..CALLERS).map(|_| OnceLock::new()).collect()),
            remaining: Arc::new(AtomicUsize::new(CALLERS)),
            finished: Arc::new(Notify::new()),
        }
    }

    /// Runs caller `i` in its own task, timing it from its first poll.
    fn spawn(&self, i: usize, call: impl Future<Output = ()> + Send + 'static) {
        let callers = self.clone();
        tokio::spawn(async move {
            let asked = Instant::now();
            call.await;
            callers.done(i, asked);
        });
    }

    fn done(&self, i: usize, asked: Instant) {
        self.times[i].set((asked, Instant::now())).unwrap();
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finished.notify_one();
        }
    }

    async fn finish(self, logins: &Logins) -> Storm {
        self.finished.notified().await;
        let times: Vec<_> = self.times.iter().map(|t| *t.get().unwrap()).collect();
        let first_ask = times.iter().map(|t| t.0).min().unwrap();
        let last_ask = times.iter().map(|t| t.0).max().unwrap();
        let last_done = times.iter().map(|t| t.1).max().unwrap();
        let first_done = times.iter().map(|t| t.1).min().unwrap();
        let answered = logins.answered.lock().unwrap().expect("the login answered");
        let mut waits: Vec<_> = times.iter().map(|(asked, done)| *done - *asked).collect();
        waits.sort_unstable();
        Storm {
            waits,
            logins: logins.count.load(Ordering::SeqCst),
            all_done: last_done - first_ask,
            fan_out: last_done.saturating_duration_since(answered),
            asking: last_ask - first_ask,
            first: first_done.saturating_duration_since(answered),
        }
    }
}

fn refresh_storm(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, run) in [
        ("bare shared future", (|| bare_storm().boxed()) as fn() -> _),
        ("shared future handing out an Arc", || {
            bare_arc_storm().boxed()
        }),
        ("shared future over a spawned task", || {
            spawned_storm().boxed()
        }),
        ("shared future, callers of the manager's size", || {
            padded_storm().boxed()
        }),
        ("token manager", || storm().boxed()),
        ("through the layer", || layer_storm().boxed()),
    ] {
        for _ in 0..5 {
            let storm: Storm = runtime.block_on(run());
            let waits = &storm.waits;
            let pct = |q: f64| {
                waits[((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1]
            };
            println!(
                "{name}: {CALLERS} callers, latency {LATENCY:?}: logins {}, all done {:?} after the first ask \
                 (L + {:?}), fan-out after the answer {:?} (first caller's token after {:?}), callers started over {:?}, wait p50 {:?}, p99 {:?}",
                storm.logins,
                storm.all_done,
                storm.all_done.saturating_sub(LATENCY),
                storm.fan_out,
                storm.first,
                storm.asking,
                pct(0.50),
                pct(0.99)
            );
        }
    }
    fan_out_ratio(&runtime);
    let mut group = c.benchmark_group("refresh_storm");
    group.sample_size(10);
    group.bench_function("bare_shared_future", |b| {
        b.to_async(&runtime).iter_custom(|iterations| async move {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                elapsed += bare_storm().await.all_done;
            }
            elapsed
        })
    });
    group.bench_function("10k_requests_through_the_layer", |b| {
        b.to_async(&runtime).iter_custom(|iterations| async move {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let storm = layer_storm().await;
                assert_eq!(storm.logins, 1);
                elapsed += storm.all_done;
            }
            elapsed
        })
    });
    group.bench_function("10k_callers_50ms_login", |b| {
        b.to_async(&runtime).iter_custom(|iterations| async move {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let storm = storm().await;
                assert_eq!(storm.logins, 1);
                elapsed += storm.all_done;
            }
            elapsed
        })
    });
    group.finish();
}

/// Item 5's measure: the manager's fan-out over the bare shared future's, the two run alternately, storm after
/// storm, so that a drift of the machine (another process, the CPU's clock) falls on both alike; five storms of one
/// then five of the other, as printed above, put such a drift on one side. `PAYNET_STORM_ROUNDS` pairs (31 by
/// default); the medians and their ratio are printed.
fn fan_out_ratio(runtime: &tokio::runtime::Runtime) {
    let rounds: usize = std::env::var("PAYNET_STORM_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("PAYNET_STORM_ROUNDS: a number of rounds"))
        .unwrap_or(31);
    let (mut bare, mut managed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Which goes first alternates too, so that neither always runs on the heels of the other.
        for managed_turn in [round % 2 == 1, round % 2 == 0] {
            if managed_turn {
                let run = runtime.block_on(storm());
                assert_eq!(run.logins, 1);
                managed.push(run.fan_out);
            } else {
                bare.push(runtime.block_on(bare_storm()).fan_out);
            }
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (bare, managed) = (median(&mut bare), median(&mut managed));
    println!(
        "fan-out, {rounds} alternating rounds: bare shared future median {bare:?}, token manager median \
         {managed:?}, ratio {:.2}",
        managed.as_secs_f64() / bare.as_secs_f64()
    );
}

criterion_group!(benches, refresh_storm);
criterion_main!(benches);
