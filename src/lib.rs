//! Tower middleware that keeps a gateway token for you.
#![warn(missing_docs)]
#![deny(unreachable_pub, unsafe_code)]

pub mod body;
pub mod clock;
pub mod error;
pub mod store;
pub mod token;

pub use error::{BoxError, Error, InjectError, LoginError, StoreError, TokenError};
