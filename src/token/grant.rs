//! What a login hands back: the token and the session's metadata.

use std::fmt;

use secrecy::SecretString;

use crate::record::LoginMeta;

/// The outcome of one successful login.
pub struct Grant {
    /// The token.
    pub token: SecretString,
    /// Metadata of the session.
    pub meta: LoginMeta,
    /// How long the endpoint says the token lives (`expires_in`), when it says so.
    pub expires_in: Option<std::time::Duration>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("token", &"****")
            .field("meta", &self.meta)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}
