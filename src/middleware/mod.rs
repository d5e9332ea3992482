//! The tower middleware: [`PaynetAuthLayer`] (what it is configured with), the [`PaynetAuth`] service it makes, and
//! that service's [`ResponseFuture`], which runs the exchange steps as a state machine.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::PaynetAuthLayer;
pub use service::PaynetAuth;
