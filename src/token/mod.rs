//! Tokens: the sources that log in, and the manager that caches and refreshes.
//!
//! The stored form of a token ([`TokenRecord`], [`Generation`], [`LoginMeta`]) lives in [`record`](crate::record),
//! which the stores use too; it is re-exported here beside the tokens it describes.

mod active;
mod coalesce;
mod grant;
mod manager;
pub(crate) mod rules;
pub mod source;

pub use crate::record::{Generation, LoginMeta, TokenRecord, fingerprint};
pub use active::ActiveToken;
pub use grant::Grant;
#[cfg(feature = "metrics")]
pub use manager::describe_metrics;
pub use manager::{
    Degradation, Health, LoginFuture, LoginSender, Stats, TokenManager, TokenManagerBuilder,
    defaults, metric_names,
};
pub use source::{ClientCredentials, LoginResponse, PaynetLogin, TokenSource};
