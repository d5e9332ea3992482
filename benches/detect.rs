//! Recognising the rejection in a response body: the prefilter-then-parse detector against a full
//! `serde_json::Value` parse, on success and rejection bodies of 200 B, 1 KiB and 64 KiB.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use paynet_auth::envelope::RejectionDetector;

fn success(size: usize) -> Vec<u8> {
    let mut providers = Vec::new();
    let mut n = 0;
    loop {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"providers":[{}]}}}}"#,
            providers.join(",")
        );
        if body.len() >= size {
            return body.into_bytes();
        }
        providers.push(format!(
            r#"{{"id":{n},"name":"Provider {n}","categoryId":{},"status":"active"}}"#,
            n % 9
        ));
        n += 1;
    }
}

fn rejection(size: usize) -> Vec<u8> {
    let head = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-9999,"message":"unauthorized","data":""#;
    let pad = size.saturating_sub(head.len() + 3);
    format!(r#"{head}{}"}}}}"#, "x".repeat(pad)).into_bytes()
}

fn full_parse(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("code")?.as_i64())
        == Some(-9999)
}

fn detection(c: &mut Criterion) {
    let detector = RejectionDetector::new(-9999);
    let mut group = c.benchmark_group("detect");
    for (label, size) in [("200B", 200), ("1KiB", 1024), ("64KiB", 64 << 10)] {
        for (kind, body) in [("success", success(size)), ("rejection", rejection(size))] {
            assert_eq!(detector.is_rejection(&body), kind == "rejection");
            assert_eq!(full_parse(&body), kind == "rejection");
            let id = format!("{kind}_{label}");
            group.bench_with_input(BenchmarkId::new("prefilter", &id), &body, |b, body| {
                b.iter(|| detector.is_rejection(black_box(body)))
            });
            group.bench_with_input(BenchmarkId::new("full_parse", &id), &body, |b, body| {
                b.iter(|| full_parse(black_box(body)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, detection);
criterion_main!(benches);
