//! The layer's cost on the hot path: a call through `PaynetAuth` over an always-ready in-memory service against
//! the same service called bare, 1 KiB request and response, the token cached. Also counts heap allocations per
//! call with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use paynet_auth::token::PaynetLogin;
use paynet_auth::{CredentialName, PaynetAuthLayer, TokenManager};
use tower::{Layer, Service, ServiceExt};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter has no effect on memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LOGIN: &[u8] = br#"{"jsonrpc":"2.0","id":1,"result":{"agentId":"17627","terminalId":"4027096","userId":56530,"userLogin":"u","token":"RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG"}}"#;

fn kib_json(prefix: &str, suffix: &str) -> Bytes {
    let pad = 1024 - prefix.len() - suffix.len();
    Bytes::from(format!("{prefix}{}{suffix}", "x".repeat(pad)))
}

fn request_body() -> Bytes {
    kib_json(
        r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":1,"params":{"lang":"ru","pad":""#,
        r#""}}"#,
    )
}

/// Answers the login path with a token and everything else with a fixed 1 KiB success, at once.
fn gateway()
-> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let success = kib_json(r#"{"jsonrpc":"2.0","id":1,"result":{"pad":""#, r#""}}"#);
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let body = if request.uri().path().ends_with("/v2/user") {
            Bytes::from_static(LOGIN)
        } else {
            success.clone()
        };
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(body))))
    })
}

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("http://gateway.test/gw/v2/service")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap()
}

/// `request` naming `credential` in its extensions, as a service serving several credentials sends it.
fn named(body: &Bytes, credential: &CredentialName) -> Request<Full<Bytes>> {
    let mut request = request(body);
    request.extensions_mut().insert(credential.clone());
    request
}

fn layer_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let manager = TokenManager::builder(PaynetLogin::new(
        "http://gateway.test/gw",
        "u",
        "p".into(),
        1,
    ))
    .build()
    .unwrap();
    let authorised = PaynetAuthLayer::new(manager).layer(gateway());
    // Three terminals behind one layer, the request naming the third: one map lookup more than the above.
    let terminal = |name: &str, id| {
        TokenManager::builder(PaynetLogin::new(
            "http://gateway.test/gw",
            "u",
            "p".into(),
            id,
        ))
        .name(name)
        .build()
        .unwrap()
    };
    let several = PaynetAuthLayer::new(terminal("north", 1))
        .credential(PaynetAuthLayer::new(terminal("east", 2)))
        .credential(PaynetAuthLayer::new(terminal("south", 3)))
        .layer(gateway());
    let south = CredentialName::new("south");
    let bare = gateway();
    let body = request_body();
    // Obtain the tokens once, so the benchmark measures the steady state.
    runtime
        .block_on(authorised.clone().oneshot(request(&body)))
        .unwrap();
    runtime
        .block_on(several.clone().oneshot(named(&body, &south)))
        .unwrap();

    let per_call = |f: &dyn Fn()| {
        f();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            f();
        }
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 1000.0
    };
    let bare_allocs = per_call(&|| {
        runtime.block_on(async {
            let response = bare.clone().oneshot(request(&body)).await.unwrap();
            response.into_body().collect().await.unwrap();
        })
    });
    let layer_allocs = per_call(&|| {
        runtime.block_on(async {
            let response = authorised.clone().oneshot(request(&body)).await.unwrap();
            response.into_body().collect().await.unwrap();
        })
    });
    println!(
        "allocations per call: bare {bare_allocs:.1}, through the layer {layer_allocs:.1}, added {:.1}",
        layer_allocs - bare_allocs
    );
    let bare_named_allocs = per_call(&|| {
        runtime.block_on(async {
            let response = bare.clone().oneshot(named(&body, &south)).await.unwrap();
            response.into_body().collect().await.unwrap();
        })
    });
    let several_allocs = per_call(&|| {
        runtime.block_on(async {
            let response = several.clone().oneshot(named(&body, &south)).await.unwrap();
            response.into_body().collect().await.unwrap();
        })
    });
    println!(
        "allocations per call naming a credential: bare {bare_named_allocs:.1}, through a layer of three \
         credentials {several_allocs:.1}, added {:.1}",
        several_allocs - bare_named_allocs
    );

    let mut group = c.benchmark_group("layer_1kib");
    group.bench_function("bare", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = bare.clone().oneshot(request(&body)).await.unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    group.bench_function("paynet_auth", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = authorised.clone().oneshot(request(&body)).await.unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    // The same two with a `CredentialName` in the request: the extension's own cost is in both.
    group.bench_function("bare_named", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = bare.clone().oneshot(named(&body, &south)).await.unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    group.bench_function("paynet_auth_named_of_three", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = several.clone().oneshot(named(&body, &south)).await.unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, layer_overhead);
criterion_main!(benches);
