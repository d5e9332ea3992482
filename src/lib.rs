//! Tower middleware that keeps a gateway token for you.
#![warn(missing_docs)]
#![deny(unreachable_pub, unsafe_code)]

pub mod clock;
pub mod error;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod token;

pub use error::{BoxError, Error, InjectError, LoginError, StoreError, TokenError};
