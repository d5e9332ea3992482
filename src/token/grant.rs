//! What a login hands back: the token and the session's metadata.

use std::fmt;

use secrecy::SecretString;

use crate::record::LoginMeta;

/// The outcome of one successful login, as [`TokenSource::parse_response`](crate::token::TokenSource::parse_response)
/// reads it.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use paynet_auth::{ClientCredentials, TokenSource};
/// use paynet_auth::token::LoginResponse;
/// use secrecy::ExposeSecret;
///
/// let source = ClientCredentials::new("https://auth.example/oauth/token", "client", "secret".into());
/// let body = Bytes::from_static(br#"{"access_token":"T-1","token_type":"Bearer","expires_in":3600}"#);
/// let response = LoginResponse { status: StatusCode::OK, headers: HeaderMap::new(), body };
/// let grant = source.parse_response(response).unwrap();
/// assert_eq!(grant.token.expose_secret(), "T-1");
/// assert_eq!(grant.expires_in, Some(Duration::from_secs(3600)));
/// assert!(!format!("{grant:?}").contains("T-1"));
/// ```
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
