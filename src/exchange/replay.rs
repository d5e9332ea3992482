//! The replay after a rejection: a newer token, and the request sent once more with it.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tracing::{info, warn};

use super::inspection::{Inspected, inspect};
use super::policy::AuthPolicy;
use super::request::authorised_request;
use super::response_body::ResponseBody;
use crate::error::{BoxError, Error};
use crate::record::Generation;
use crate::token::LoginSender;

/// After the gateway rejected `rejected`: a newer token, and the request sent once more with it.
///
/// When the newer token was adopted from the store (another instance wrote it) and the gateway rejects it too,
/// that instance's session may have been ended since (a later login on a single-session gateway): one refresh
/// past it and one more send. Never more: a token this instance's own refresh logged in for the call and then
/// rejected ends the call with [`Error::RejectedAfterRefresh`], so a call costs at most one login. Every send
/// follows an explicit rejection; a transport error or a timeout ends the call.
pub(crate) async fn replay<B, E, Fut>(
    policy: &AuthPolicy,
    parts: http::request::Parts,
    body: &Bytes,
    rejected: Generation,
    mut send: impl FnMut(Request<Bytes>) -> Fut,
    login: impl Fn() -> LoginSender,
) -> Result<Response<ResponseBody<B>>, Error>
where
    Fut: std::future::Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let manager = &policy.manager;
    manager.note_rejection();
    let what = Described::of(&parts, body);
    info!(
        credential = %manager.name(),
        generation = rejected.0,
        http_method = %what.http_method,
        path = %what.path,
        method = what.rpc_method.as_deref().unwrap_or("-"),
        "gateway rejected the token; replaying with a newer one"
    );
    let mut rejected = rejected;
    let mut adopted_retry_left = true;
    manager.note_rejected(rejected);
    loop {
        let fresh = manager.token_after(rejected, login()).await?;
        let replay = authorised_request(policy, parts.clone(), body, &fresh)?;
        manager.note_replay();
        let response = send(replay).await.map_err(|e| Error::Inner(e.into()))?;
        match inspect(policy, response).await? {
            Inspected::Accepted(response) => {
                manager.note_accepted(fresh.generation());
                info!(
                    credential = %manager.name(),
                    generation = fresh.generation().0,
                    method = what.rpc_method.as_deref().unwrap_or("-"),
                    status = response.status().as_u16(),
                    "replay accepted"
                );
                return Ok(response);
            }
            Inspected::Rejected => {
                manager.note_rejection();
                let adopted = !manager.is_own(&fresh);
                if adopted && adopted_retry_left {
                    adopted_retry_left = false;
                    info!(
                        credential = %manager.name(),
                        generation = fresh.generation().0,
                        written_by = %fresh.record().written_by,
                        method = what.rpc_method.as_deref().unwrap_or("-"),
                        "gateway rejected the token adopted from the store too; one refresh past it"
                    );
                    rejected = fresh.generation();
                    continue;
                }
                manager.note_rejected(fresh.generation());
                warn!(
                    credential = %manager.name(),
                    generation = fresh.generation().0,
                    method = what.rpc_method.as_deref().unwrap_or("-"),
                    "gateway rejected a freshly refreshed token; not replaying again"
                );
                return Err(Error::RejectedAfterRefresh {
                    generation: fresh.generation().0,
                });
            }
        }
    }
}

/// What the log lines of a replay say of the request: never its body, only the JSON-RPC method when it has one.
struct Described {
    http_method: http::Method,
    path: String,
    rpc_method: Option<String>,
}

impl Described {
    fn of(parts: &http::request::Parts, body: &Bytes) -> Self {
        /// Only `method` is read; the rest of the body (params, token) is skipped, never kept.
        #[derive(serde::Deserialize)]
        struct Call {
            method: Option<String>,
        }
        // A batch, or a body without a string `method`, has no one method to name. Bounded, and stripped of
        // control characters, since it goes to a log line as the caller wrote it.
        let rpc_method = serde_json::from_slice::<Call>(body)
            .ok()
            .and_then(|call| call.method)
            .map(|method| {
                method
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect()
            });
        Described {
            http_method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            rpc_method,
        }
    }
}
