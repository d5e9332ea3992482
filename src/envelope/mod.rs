//! The JSON-RPC envelope: reading and rewriting JSON-RPC bodies without a full parse on the hot path.
//!
//! One validating pass (`scan`) serves both directions: on the way out it finds where the token goes and
//! [`splice`] writes it there; on the way back [`rejection`] uses it to tell a rejection from any other answer.

mod edit;
mod field;
pub mod rejection;
mod scan;
pub mod splice;

pub use rejection::RejectionDetector;
pub use splice::{TokenField, inject_token};

#[cfg(test)]
mod testgen;
