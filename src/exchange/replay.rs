//! The replay after a rejection: a newer token, and the request sent once more with it.

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tracing::warn;

use super::inspection::{Inspected, inspect};
use super::policy::ExchangePolicy;
use super::request::authorised_request;
use super::response_body::ResponseBody;
use crate::error::{BoxError, Error};
use crate::token::{Generation, LoginSender};

/// After the gateway rejected `rejected`: a newer token, and the request sent once more with it.
pub(crate) async fn replay<B, E, Fut>(
    policy: &ExchangePolicy,
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
    let fresh = manager.token_after(rejected, login()).await?;
    let replay = authorised_request(policy, parts, body, &fresh)?;
    manager.note_replay();
    let response = send(replay).await.map_err(|e| Error::Inner(e.into()))?;
    match inspect(policy, response).await? {
        Inspected::Accepted(response) => Ok(response),
        Inspected::Rejected => {
            manager.note_rejection();
            warn!(
                key = %manager.credential_key(),
                generation = fresh.generation().0,
                "gateway rejected a freshly refreshed token; not replaying again"
            );
            Err(Error::RejectedAfterRefresh {
                generation: fresh.generation().0,
            })
        }
    }
}
