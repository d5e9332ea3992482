//! The token in the form the hot path uses, prepared once when it is cached.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::record::{Generation, TokenRecord};

/// The token in the form the hot path uses: the record plus the token already encoded as a JSON string literal,
/// so that injection is a splice of ready bytes.
pub struct ActiveToken {
    record: TokenRecord,
    json_literal: SecretString,
}

impl ActiveToken {
    /// Prepares a record for use.
    pub fn new(record: TokenRecord) -> Self {
        // serde_json escapes exactly as a full serialisation would, so a spliced body parses like a re-serialised one.
        let json_literal = serde_json::to_string(record.token.expose_secret())
            .expect("a string always serialises")
            .into();
        Self {
            record,
            json_literal,
        }
    }

    /// The record.
    pub fn record(&self) -> &TokenRecord {
        &self.record
    }

    /// The generation.
    pub fn generation(&self) -> Generation {
        self.record.generation
    }

    /// The token itself. Handle with care: never log it.
    pub fn secret(&self) -> &SecretString {
        &self.record.token
    }

    /// The token as a JSON string literal, quotes included.
    pub(crate) fn json_literal(&self) -> &[u8] {
        self.json_literal.expose_secret().as_bytes()
    }
}

impl fmt::Debug for ActiveToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ActiveToken").field(&self.record).finish()
    }
}
