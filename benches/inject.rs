//! Writing the token into a request body: the splice against a `serde_json::Value` parse-set-serialise round trip,
//! with a plain copy of the body as the lower bound, at 256 B, 1 KiB, 16 KiB and 1 MiB. A validate-only pass of
//! serde_json (`IgnoredAny`: nothing built, nothing written) shows what checking the body alone costs, since a
//! body that is not JSON must not be sent.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use paynet_auth::envelope::{TokenField, inject_token};

const TOKEN: &str = "RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG";

/// A realistic payment call padded with a list of line items to about `size` bytes.
fn body(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut body = String::new();
    let mut n = 0;
    loop {
        let candidate = format!(
            r#"{{"jsonrpc":"2.0","method":"performTransaction","id":42,"params":{{"token":"{{{{token}}}}","serviceId":101,"transactionId":"tx-000123","amount":150000,"fields":{{"phone":"998901234567"}},"items":[{}]}}}}"#,
            items.join(",")
        );
        if candidate.len() >= size {
            return if body.is_empty() { candidate } else { body }.into_bytes();
        }
        body = candidate;
        items.push(format!(
            r#"{{"sku":"item-{n}","qty":{n},"price":{}.5,"note":"line \"{n}\""}}"#,
            n * 1000
        ));
        n += 1;
    }
}

fn serde_round_trip(body: &[u8], token: &str) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["params"]["token"] = serde_json::Value::String(token.to_owned());
    serde_json::to_vec(&value).unwrap()
}

fn injection(c: &mut Criterion) {
    let token_json = serde_json::to_string(TOKEN).unwrap();
    let mut group = c.benchmark_group("inject");
    for (label, size) in [
        ("256B", 256),
        ("1KiB", 1024),
        ("16KiB", 16 << 10),
        ("1MiB", 1 << 20),
    ] {
        let body = body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", label), &body, |b, body| {
            b.iter(|| black_box(body.as_slice()).to_vec())
        });
        group.bench_with_input(BenchmarkId::new("splice", label), &body, |b, body| {
            b.iter(|| {
                inject_token(black_box(body), TokenField::Params, token_json.as_bytes()).unwrap()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_validate_only", label),
            &body,
            |b, body| {
                b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).unwrap())
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", label),
            &body,
            |b, body| b.iter(|| serde_round_trip(black_box(body), TOKEN)),
        );
    }
    group.finish();
}

criterion_group!(benches, injection);
criterion_main!(benches);
