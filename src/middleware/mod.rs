//! The tower middleware, the plumbing around a [`PolicySet`](crate::PolicySet): [`PaynetAuthLayer`] (which holds
//! the set), the [`PaynetAuth`] service it makes (which shares it), and that service's [`ResponseFuture`], which
//! runs the exchange steps of one call as a state machine under the request's [`AuthPolicy`](crate::AuthPolicy).

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::PaynetAuthLayer;
pub use service::PaynetAuth;
