//! The shapes of the gateway's answers: JSON-RPC results and errors, plain HTTP failures, and silence.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use super::{LOGIN_FAILED_CODE, UNAUTHORIZED_CODE};

pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// A JSON-RPC error the gateway answers with HTTP 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: &'static str,
}

impl RpcError {
    pub(crate) const PARSE_ERROR: Self = Self {
        code: -32700,
        message: "Parse error",
    };
    pub(crate) const INVALID_REQUEST: Self = Self {
        code: -32600,
        message: "Invalid Request",
    };
    pub(crate) const METHOD_NOT_FOUND: Self = Self {
        code: -32601,
        message: "Method not found",
    };
    pub(crate) const INVALID_PARAMS: Self = Self {
        code: -32602,
        message: "Invalid params",
    };
    pub(crate) const UNAUTHORIZED: Self = Self {
        code: UNAUTHORIZED_CODE,
        message: "unauthorized",
    };
    pub(crate) const LOGIN_FAILED: Self = Self {
        code: LOGIN_FAILED_CODE,
        message: "Invalid login or password",
    };
}

/// What to do with a request.
pub(crate) enum Answer {
    Respond(Response<Bytes>),
    /// Close the connection without a response.
    Drop,
}

impl Answer {
    /// A JSON-RPC result, with the envelope's members in the order the gateway writes them.
    pub(crate) fn result(id: &Value, result: &impl Serialize) -> Self {
        Self::raw(StatusCode::OK, JSON, envelope(id, "result", result))
    }

    pub(crate) fn error(id: &Value, error: RpcError) -> Self {
        Self::error_message(id, error.code, error.message)
    }

    /// A JSON-RPC error with a message made at run time.
    pub(crate) fn error_message(id: &Value, code: i64, message: &str) -> Self {
        let error = json!({"code": code, "message": message});
        Self::raw(StatusCode::OK, JSON, envelope(id, "error", &error))
    }

    pub(crate) fn raw(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Self {
        let mut response = Response::new(body.into());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Self::Respond(response)
    }

    pub(crate) fn status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("");
        Self::raw(status, "text/plain; charset=utf-8", reason)
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        let mut response = Response::new(Bytes::from_static(b"Method Not Allowed"));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        Self::Respond(response)
    }
}

/// `{"jsonrpc":"2.0","id":<id>,"<member>":<value>}`.
pub(crate) fn envelope(id: &Value, member: &str, value: &impl Serialize) -> String {
    // Our own values always serialise; a failure here would be a bug in the simulator.
    let value = serde_json::to_string(value).expect("simulator answers serialise");
    format!(r#"{{"jsonrpc":"2.0","id":{id},"{member}":{value}}}"#)
}

/// The error a request's service future fails with so that hyper closes the connection without answering.
#[derive(Debug)]
pub(crate) struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped on purpose by the gateway simulator")
    }
}

impl std::error::Error for Dropped {}
