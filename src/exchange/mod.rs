//! The steps of one authorised exchange with the gateway, shared by the tower middleware and the reqwest adapter.
//!
//! In the order a call goes through them: the caller's body is read whole under a limit and the head copied for
//! a replay (`request`); the token goes in (`request` again, through the envelope's splice or a header); the
//! answer is inspected for a rejection (`inspection`, reading the body into a [`ResponseBody`]); and a rejected
//! call is replayed once with a newer token (`replay`). What each step follows is the layer's
//! [`ExchangePolicy`] (`policy`). The middleware runs these steps as a state machine, the reqwest adapter as one
//! async function.

mod buffer;
mod credentials;
mod inspection;
mod policy;
mod replay;
mod request;
mod response_body;

pub use credentials::Credential;
pub use policy::{
    DEFAULT_INSPECT_LIMIT, DEFAULT_MAX_REQUEST_BODY, PAYNET_REJECTION_CODE, Placement,
    RejectionRule,
};
pub use response_body::ResponseBody;

pub(crate) use credentials::Credentials;
#[cfg(feature = "reqwest")]
pub(crate) use inspection::inspect;
pub(crate) use inspection::{Begun, Inspected, Inspection};
pub(crate) use policy::ExchangePolicy;
pub(crate) use replay::replay;
pub(crate) use request::{HeadCopy, RequestReader, authorised_request_in, token_slots};
#[cfg(feature = "reqwest")]
pub(crate) use request::{authorised_request, read_request_body};
