//! One HTTP request to the gateway: routing, the JSON-RPC envelope, the token check and dispatch.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::body::SimBody;
use super::reply::{Answer, Dropped, RpcError};
use super::state::State;
use super::{MAX_BODY_BYTES, admin, catalog, login, transaction};
use crate::fingerprint;

/// What every request handler can reach.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) state: Arc<State>,
    /// Turns `true` when the server shuts down; what waits forever on purpose waits on this instead.
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Ctx {
    /// Completes when the server shuts down (or is gone).
    pub(crate) async fn stopped(&self) {
        let mut shutdown = self.shutdown.clone();
        // An error means the server is gone, which is a shutdown just the same.
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
}

/// What the request log line says about a request.
pub(crate) struct Trace {
    pub(crate) method: Option<String>,
    /// A fingerprint, never the token itself.
    pub(crate) token: Option<String>,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    User,
    Service,
    Card,
    Transaction,
}

impl Endpoint {
    fn serves(self, method: &str) -> bool {
        let methods: &[&str] = match self {
            Self::User => &["login", "logout", "getDepositInfo"],
            Self::Service => &[
                "getCategoriesList",
                "getProvidersList",
                "getProvidersStatus",
                "getServicesList",
                "getServiceInfo",
            ],
            Self::Card => &[
                "getCardOtp",
                "getCardToken",
                "performTransactionByCardToken",
            ],
            Self::Transaction => &["performTransaction", "checkTransaction"],
        };
        methods.contains(&method)
    }
}

enum Route {
    Rpc(Endpoint),
    Logo,
}

/// Serves one request; an `Err` makes hyper close the connection without answering.
pub(crate) async fn handle(
    ctx: Ctx,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, Dropped> {
    let http_method = request.method().clone();
    let path = request.uri().path().to_owned();
    let admin_action = path
        .strip_prefix(ctx.state.root())
        .and_then(|rest| rest.strip_prefix("/__admin/"));
    if let Some(action) = admin_action {
        let (answer, outcome) = admin::handle(&ctx, action, request).await;
        tracing::debug!(http.method = %http_method, path, outcome, "gateway simulator admin request");
        return match answer {
            Answer::Respond(response) => Ok(response.map(|bytes| SimBody::whole(Full::new(bytes)))),
            Answer::Drop => Err(Dropped),
        };
    }
    ctx.state.count_request();
    let mut trace = Trace {
        method: None,
        token: None,
        outcome: "",
    };
    let answer = route(&ctx, request, &mut trace).await;
    tracing::debug!(
        http.method = %http_method,
        path,
        rpc.method = trace.method.as_deref().unwrap_or("-"),
        token = trace.token.as_deref().unwrap_or("-"),
        outcome = trace.outcome,
        "gateway simulator request"
    );
    let response = match answer {
        Answer::Respond(response) => response,
        Answer::Drop => return Err(Dropped),
    };
    let (mut parts, bytes) = response.into_parts();
    // Logins are exempt: their slowness has switches of its own (latency, hang).
    let dribble = ctx
        .state
        .switches()
        .dribble
        .filter(|_| trace.method.as_deref() != Some("login"));
    let body = match dribble {
        Some(interval) => {
            // Stated outright, so the client knows the whole length from the headers, before the first byte.
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            SimBody::dribble(bytes, interval)
        }
        None => SimBody::whole(Full::new(bytes)),
    };
    Ok(Response::from_parts(parts, body))
}

async fn route(ctx: &Ctx, request: Request<Incoming>, trace: &mut Trace) -> Answer {
    let route = request
        .uri()
        .path()
        .strip_prefix(ctx.state.root())
        .and_then(|rest| match rest {
            "/v2/user" => Some(Route::Rpc(Endpoint::User)),
            "/v2/service" => Some(Route::Rpc(Endpoint::Service)),
            "/v2/card" => Some(Route::Rpc(Endpoint::Card)),
            "/v2/transaction" => Some(Route::Rpc(Endpoint::Transaction)),
            "/v2/getLogo" => Some(Route::Logo),
            _ => None,
        });
    let endpoint = match (route, request.method()) {
        (None, _) => {
            trace.outcome = "unknown path";
            return Answer::status(StatusCode::NOT_FOUND);
        }
        (Some(Route::Logo), &Method::GET) => return catalog::logo(request.uri(), trace),
        (Some(Route::Rpc(endpoint)), &Method::POST) => endpoint,
        (Some(Route::Logo), _) => {
            trace.outcome = "method not allowed";
            return Answer::method_not_allowed("GET");
        }
        (Some(Route::Rpc(_)), _) => {
            trace.outcome = "method not allowed";
            return Answer::method_not_allowed("POST");
        }
    };

    let body = match read_body(request).await {
        Ok(body) => body,
        Err(answer) => {
            trace.outcome = "body unreadable or too large";
            return answer;
        }
    };
    let call = match Call::parse(&body) {
        Ok(call) => call,
        Err((id, error)) => {
            trace.outcome = if error == RpcError::PARSE_ERROR {
                "parse error"
            } else {
                "invalid request"
            };
            return Answer::error(&id, error);
        }
    };
    trace.method = Some(call.method.clone());
    dispatch(ctx, endpoint, call, trace).await
}

pub(crate) async fn read_body(request: Request<Incoming>) -> Result<Bytes, Answer> {
    let too_large = || Answer::status(StatusCode::PAYLOAD_TOO_LARGE);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    // Refuse a declared oversize body before reading a byte of it.
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        // The client went away mid-body; there is nobody to answer.
        Err(_) => Err(Answer::Drop),
    }
}

/// A JSON-RPC 2.0 request.
struct Call {
    id: Value,
    method: String,
    params: Option<Value>,
    top_level_token: Option<Value>,
}

impl Call {
    fn parse(body: &[u8]) -> Result<Self, (Value, RpcError)> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| (Value::Null, RpcError::PARSE_ERROR))?;
        let Value::Object(mut object) = value else {
            // Batches are not part of the gateway's dialect.
            return Err((Value::Null, RpcError::INVALID_REQUEST));
        };
        let id = object.remove("id").unwrap_or(Value::Null);
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((id, RpcError::INVALID_REQUEST));
        }
        let Some(Value::String(method)) = object.remove("method") else {
            return Err((id, RpcError::INVALID_REQUEST));
        };
        Ok(Self {
            id,
            method,
            params: object.remove("params"),
            top_level_token: object.remove("token"),
        })
    }

    /// The token the call presents: `params.token` where the gateway reads it, else the top-level `token` some
    /// integrations write.
    fn token(&self) -> Option<&Value> {
        self.params
            .as_ref()
            .and_then(|params| params.get("token"))
            .or(self.top_level_token.as_ref())
    }

    fn params_object(&self) -> Map<String, Value> {
        match &self.params {
            Some(Value::Object(params)) => params.clone(),
            _ => Map::new(),
        }
    }
}

async fn dispatch(ctx: &Ctx, endpoint: Endpoint, call: Call, trace: &mut Trace) -> Answer {
    if !endpoint.serves(&call.method) {
        trace.outcome = "method not found";
        return Answer::error(&call.id, RpcError::METHOD_NOT_FOUND);
    }
    if call.method == "login" {
        return login::login(ctx, &call.id, call.params.as_ref(), trace).await;
    }

    let token = call.token().and_then(Value::as_str);
    trace.token = token.map(fingerprint);
    let reject_all = ctx.state.switches().reject_all_tokens;
    let Some(token) = token.filter(|token| !reject_all && ctx.state.token_is_valid(token)) else {
        ctx.state.count_rejection();
        trace.outcome = if reject_all {
            "unauthorized: rejecting every token on purpose"
        } else {
            "unauthorized"
        };
        return Answer::error(&call.id, RpcError::UNAUTHORIZED);
    };
    ctx.state.count_call(&call.method);

    let params = call.params_object();
    let result = match call.method.as_str() {
        "logout" => {
            ctx.state.revoke(token);
            Ok(json!({"success": true}))
        }
        "getCardToken" => Ok(json!({"cardToken": ctx.state.card_token()})),
        "performTransaction" | "performTransactionByCardToken" => {
            let key = transaction::key(&params, &call.id);
            let executed = transaction::perform(&ctx.state, &key, &params);
            if ctx.state.switches().drop_after_execute {
                trace.outcome = "executed, then dropped the connection on purpose";
                return Answer::Drop;
            }
            Ok(executed)
        }
        "checkTransaction" => transaction::check(&ctx.state, &params),
        method => catalog::answer(method, &params, ctx.state.account()),
    };
    match result {
        Ok(result) => {
            ctx.state.count_ok();
            trace.outcome = "ok";
            Answer::result(&call.id, &result)
        }
        Err(error) => {
            trace.outcome = "invalid params";
            Answer::error(&call.id, error)
        }
    }
}
