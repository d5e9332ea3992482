//! Tokens: the sources that log in, and the manager that caches and refreshes.
//!
//! The stored form of a token ([`TokenRecord`], [`Generation`], [`LoginMeta`]) lives in [`record`](crate::record),
//! which the stores use too; it is re-exported here under its former paths.

mod active;
mod coalesce;
mod grant;
mod manager;
pub mod source;

pub use crate::record::{Generation, LoginMeta, TokenRecord, fingerprint};
pub use active::ActiveToken;
pub use grant::Grant;
pub use manager::{LoginFuture, LoginSender, TokenManager, TokenManagerBuilder, defaults};
pub use source::{ClientCredentials, LoginResponse, PaynetLogin, TokenSource};
