//! Tokens: the record, the sources that log in, and the manager that caches and refreshes.

mod coalesce;
mod manager;
mod record;
pub mod source;

pub use manager::{LoginFuture, LoginSender, TokenManager, TokenManagerBuilder, defaults};
pub use record::{ActiveToken, Generation, Grant, LoginMeta, TokenRecord, fingerprint};
pub use source::{ClientCredentials, LoginResponse, PaynetLogin, TokenSource};
