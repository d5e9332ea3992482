//! The steps of one authorised exchange with the gateway, shared by the tower middleware and the reqwest adapter.
//!
//! In the order a call goes through them: the policy is chosen from the layer's [`PolicySet`] by the request's
//! [`CredentialName`] (`policy_set`, `credential_name`); the caller's body is read whole under a limit and the
//! head copied for a replay (`request`); the token goes in (`request` again, through the envelope's splice or a
//! header); the answer is inspected for a rejection (`inspection`, reading the body into a [`ResponseBody`]); and
//! a rejected call is replayed once with a newer token (`replay`). What each step follows is the request's
//! [`AuthPolicy`] (`policy`). The middleware runs these steps as a state machine, the reqwest adapter as one async
//! function.

mod buffer;
mod credential_name;
mod inspection;
mod policy;
mod policy_set;
mod replay;
mod request;
mod response_body;

pub use credential_name::CredentialName;
pub use policy::{
    AuthPolicy, DEFAULT_INSPECT_LIMIT, DEFAULT_MAX_REQUEST_BODY, PAYNET_REJECTION_CODE, Placement,
    RejectionRule,
};
pub use policy_set::PolicySet;
pub use response_body::ResponseBody;

#[cfg(feature = "reqwest")]
pub(crate) use inspection::inspect;
pub(crate) use inspection::{Begun, Inspected, Inspection};
pub(crate) use replay::replay;
pub(crate) use request::{HeadCopy, RequestReader, authorised_request_in, token_slots};
#[cfg(feature = "reqwest")]
pub(crate) use request::{authorised_request, read_request_body};
