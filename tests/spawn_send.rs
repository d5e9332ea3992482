//! The service's future can be awaited inside spawned tasks, whatever the inner service's error type.

mod support;

use std::time::Duration;

use paynet_auth::PaynetAuthLayer;
use support::*;
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn awaiting_the_layer_inside_a_spawned_task_compiles_with_a_boxed_inner_error() {
    let (mock, _handle) = tower_test::mock::pair::<MockRequest, MockResponse>();
    let inner = tower::timeout::Timeout::new(mock, Duration::from_secs(1));
    let service = PaynetAuthLayer::new(manager_builder().build().unwrap()).layer(inner);
    let task = tokio::spawn(async move {
        let outcome = service.oneshot(json_request("/v2/service", "{}")).await;
        outcome.is_ok()
    });
    task.abort();
}
