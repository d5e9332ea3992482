//! Tokens: the sources that log in, and the manager that caches and refreshes.
//!
//! The stored form of a token (`TokenRecord`, `Generation`, `LoginMeta`) is in [`record`](crate::record), which
//! the stores share with the manager.

mod active;
mod coalesce;
mod grant;
mod manager;
pub(crate) mod rules;
pub mod source;

pub use active::ActiveToken;
pub use grant::Grant;
#[cfg(feature = "metrics")]
pub use manager::describe_metrics;
pub use manager::{
    Degradation, Health, LoginFuture, LoginSender, Stats, TokenManager, TokenManagerBuilder,
    defaults, metric_names,
};
pub use source::{ClientCredentials, LoginResponse, PaynetLogin, TokenSource};
