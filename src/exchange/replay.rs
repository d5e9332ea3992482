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
use crate::token::{ActiveToken, LoginSender, TokenManager};

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
    what.replaying(manager, rejected);
    let mut rejected = rejected;
    let mut adopted_retry_left = true;
    manager.note_rejected(rejected);
    loop {
        let fresh = manager.token_after(rejected, login()).await?;
        let replay = authorised_request(policy, parts.clone(), body, &fresh)?;
        manager.note_replay();
        let response = send(replay).await.map_err(|e| Error::Inner(e.into()))?;
        if let Inspected::Accepted(response) = inspect(policy, response).await? {
            manager.note_accepted(fresh.generation());
            what.accepted(manager, fresh.generation(), response.status());
            return Ok(response);
        }
        manager.note_rejection();
        if adopted_retry_left && !manager.is_own(&fresh) {
            adopted_retry_left = false;
            what.adopted_rejected(manager, &fresh);
            rejected = fresh.generation();
            continue;
        }
        manager.note_rejected(fresh.generation());
        what.refused_again(manager, fresh.generation());
        return Err(Error::RejectedAfterRefresh {
            generation: fresh.generation().0,
        });
    }
}

/// What the log lines of a replay say of the request: never its body, only the JSON-RPC method when it has one.
struct Described {
    http_method: http::Method,
    path: String,
    rpc_method: Option<String>,
}

impl Described {
    fn replaying(&self, manager: &TokenManager, rejected: Generation) {
        info!(
            credential = %manager.name(),
            generation = rejected.0,
            http_method = %self.http_method,
            path = %self.path,
            method = self.rpc_method(),
            "gateway rejected the token; replaying with a newer one"
        );
    }

    fn accepted(&self, manager: &TokenManager, generation: Generation, status: http::StatusCode) {
        info!(
            credential = %manager.name(),
            generation = generation.0,
            method = self.rpc_method(),
            status = status.as_u16(),
            "replay accepted"
        );
    }

    fn adopted_rejected(&self, manager: &TokenManager, fresh: &ActiveToken) {
        info!(
            credential = %manager.name(),
            generation = fresh.generation().0,
            written_by = %fresh.record().written_by,
            method = self.rpc_method(),
            "gateway rejected the token adopted from the store too; one refresh past it"
        );
    }

    fn refused_again(&self, manager: &TokenManager, generation: Generation) {
        warn!(
            credential = %manager.name(),
            generation = generation.0,
            method = self.rpc_method(),
            "gateway rejected a freshly refreshed token; not replaying again"
        );
    }

    fn rpc_method(&self) -> &str {
        self.rpc_method.as_deref().unwrap_or("-")
    }

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
