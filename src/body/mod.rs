//! Reading and rewriting JSON-RPC bodies without a full parse on the hot path.

pub mod coding;
pub mod detect;
pub mod inject;

pub use coding::{ContentCoding, decode_bounded};
pub use detect::RejectionDetector;
pub use inject::{TokenField, inject_token};

#[cfg(test)]
mod testgen;
