//! Tokens: the record, the sources that log in, and the manager that caches and refreshes.

mod record;

pub use record::{ActiveToken, Generation, Grant, LoginMeta, TokenRecord, fingerprint};
