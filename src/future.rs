//! The response future of [`PaynetAuth`](crate::PaynetAuth).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

use crate::error::Error;

/// The future [`PaynetAuth`](crate::PaynetAuth) returns.
///
/// One boxed future per call: the request path awaits the body, possibly a refresh, the inner call and the
/// response body in sequence, and a hand-written state machine over the inner service's future would save that
/// one allocation at the cost of much subtler code.
pub struct ResponseFuture<T> {
    inner: BoxFuture<'static, Result<T, Error>>,
}

impl<T> ResponseFuture<T> {
    pub(crate) fn new(inner: BoxFuture<'static, Result<T, Error>>) -> Self {
        Self { inner }
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
