//! The JSON-RPC envelope: reading and rewriting JSON-RPC bodies without a full parse on the hot path.

pub mod rejection;
pub mod splice;

pub use rejection::RejectionDetector;
pub use splice::{TokenField, inject_token};

#[cfg(test)]
mod testgen;
