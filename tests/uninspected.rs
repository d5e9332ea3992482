//! Responses longer than the inspection limit: passed on byte for byte, never inspected (so never replayed), and
//! counted where the user can read it.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::StreamBody;
use paynet_auth::PaynetAuthLayer;
use support::*;
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;
/// A body that arrives in frames and declares no length: its size is only known as it streams.
type Streamed = StreamBody<Frames>;

fn streamed(chunks: &[&[u8]]) -> Response<Streamed> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    Response::new(StreamBody::new(futures_util::stream::iter(frames)))
}

const CALL: &str = r#"{"jsonrpc":"2.0","method":"getCategoriesList","id":7,"params":{}}"#;
const LIMIT: usize = 32;

/// A rejection followed by padding, in three frames: the first fits the limit, the second passes it.
fn long_rejection() -> (Vec<&'static [u8]>, Vec<u8>) {
    let chunks: Vec<&'static [u8]> = vec![
        br#"{"jsonrpc":"2.0","id":7,"#,
        br#""error":{"code":-9999,"message":"unauthorized"},"#,
        br#""pad":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}"#,
    ];
    assert!(chunks[0].len() <= LIMIT && chunks[0].len() + chunks[1].len() > LIMIT);
    let whole = chunks.concat();
    (chunks, whole)
}

#[tokio::test]
async fn response_streamed_past_the_limit_arrives_intact_uninspected_and_counted() {
    let layer = PaynetAuthLayer::new(manager_builder().build().unwrap()).inspect_limit(LIMIT);
    let (inner, mut handle) = mock::pair::<MockRequest, Response<Streamed>>();
    let service = layer.layer(inner);
    assert_eq!(layer.manager().uninspected_responses(), 0);

    let call = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (login, reply) = handle.next_request().await.unwrap();
    assert!(is_login(&login));
    let token = body_bytes(login_ok("T").into_body()).await;
    reply.send_response(streamed(&[&token]));
    let (_sent, reply) = handle.next_request().await.unwrap();
    let (chunks, whole) = long_rejection();
    reply.send_response(streamed(&chunks));

    let response = call.await.unwrap().unwrap();
    assert_eq!(body_bytes(response.into_body()).await, whole);
    assert_eq!(layer.manager().uninspected_responses(), 1);
    assert_eq!(service.manager().uninspected_responses(), 1);
    // The rejection inside it was not seen: no second login, no replay.
    assert_eq!(service.manager().login_attempts(), 1);
    let mut next = tokio_test::task::spawn(handle.next_request());
    assert!(next.poll().is_pending(), "nothing more was sent");
}

#[tokio::test]
async fn response_declared_longer_than_the_limit_is_counted_and_a_short_one_is_not() {
    let layer = PaynetAuthLayer::new(manager_builder().build().unwrap()).inspect_limit(LIMIT);
    let (inner, mut handle) = mock::pair::<MockRequest, MockResponse>();
    let service = layer.layer(inner);

    let call = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_login, reply) = handle.next_request().await.unwrap();
    reply.send_response(login_ok("T"));
    let (_sent, reply) = handle.next_request().await.unwrap();
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":7,"result":"{}"}}"#,
        "x".repeat(LIMIT)
    );
    reply.send_response(json_response(&long));
    let response = call.await.unwrap().unwrap();
    assert_eq!(body_bytes(response.into_body()).await, long.as_bytes());
    assert_eq!(layer.manager().uninspected_responses(), 1);

    let call = tokio::spawn(service.clone().oneshot(json_request("/v2/service", CALL)));
    let (_sent, reply) = handle.next_request().await.unwrap();
    reply.send_response(json_response(r#"{"id":7,"result":1}"#));
    call.await.unwrap().unwrap();
    assert_eq!(
        layer.manager().uninspected_responses(),
        1,
        "a short answer is inspected"
    );
}
