//! The token in the form the hot path uses, prepared once when it is cached.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::record::{Generation, TokenRecord};

/// The token in the form the hot path uses: the record plus the token already encoded as a JSON string literal,
/// so that injection is a splice of ready bytes.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use paynet_auth::{PaynetLogin, TokenManager};
/// use paynet_auth::token::{LoginResponse, LoginSender};
/// use paynet_auth::record::Generation;
/// use secrecy::ExposeSecret;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let manager = TokenManager::builder(login).build()?;
/// let sender = LoginSender::new(|_request| Box::pin(async {
///     let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"token":"T-1","userLogin":"agent"}}"#);
///     Ok(LoginResponse { status: StatusCode::OK, headers: HeaderMap::new(), body })
/// }));
/// let token = manager.token(sender).await?;
/// assert_eq!(token.secret().expose_secret(), "T-1");
/// assert_eq!(token.generation(), Generation(1));
/// assert_eq!(token.record().meta.user_login.as_deref(), Some("agent"));
/// assert!(!format!("{token:?}").contains("T-1"));
/// assert!(Arc::ptr_eq(&token, &manager.cached().unwrap()));
/// # Ok(()) }
/// ```
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
