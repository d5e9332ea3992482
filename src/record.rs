//! The token as it is stored: [`TokenRecord`], its [`Generation`] and the login's [`LoginMeta`].
//!
//! A leaf module: it imports nothing from the rest of the crate, so that both the [`token`](crate::token) manager
//! and the [`store`](crate::store)s can use these types without importing each other. The old paths
//! (`paynet_auth::record::TokenRecord` and the rest) are re-exported from `token`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A token's generation: every refresh of a store key writes the next one. A rejection names the generation
/// it rejected, so a late rejection can never evict a token that was refreshed meanwhile.
///
/// ```
/// use paynet_auth::record::Generation;
///
/// let rejected = Generation(3);
/// assert!(Generation(4) > rejected);
/// assert_eq!(Generation::default(), Generation(0));
/// assert_eq!(format!("token generation {rejected}"), "token generation 3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the gateway said about the session besides the token (Paynet's `login` result). Ids are kept as the text
/// the gateway sent, whether it wrote them as strings or as numbers.
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use paynet_auth::{PaynetLogin, TokenSource};
/// use paynet_auth::token::LoginResponse;
///
/// let login = PaynetLogin::new("https://gateway.example/gw", "username_17627_56530", "secret".into(), 4027096);
/// let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"token":"T-1","agentId":1717,"terminalId":"4027096"}}"#;
/// let grant = login
///     .parse_response(LoginResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::from(answer) })
///     .unwrap();
/// assert_eq!(grant.meta.agent_id.as_deref(), Some("1717"));
/// assert_eq!(grant.meta.terminal_id.as_deref(), Some("4027096"));
/// assert_eq!(grant.meta.user_login, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginMeta {
    /// `agentId`.
    pub agent_id: Option<String>,
    /// `terminalId`.
    pub terminal_id: Option<String>,
    /// `userId`.
    pub user_id: Option<String>,
    /// `userLogin`.
    pub user_login: Option<String>,
}

/// One store key's token, as the store keeps it. Times are UTC milliseconds since the Unix epoch.
///
/// ```
/// use paynet_auth::record::{Generation, LoginMeta, TokenRecord, fingerprint};
///
/// let record = TokenRecord {
///     token: "RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG".into(),
///     generation: Generation(1),
///     obtained_at_ms: 1_000,
///     expires_at_ms: Some(61_000),
///     meta: LoginMeta::default(),
///     written_by: "host:1:abcd".into(),
/// };
/// assert!(record.is_fresh(30_000, 30_000));
/// assert!(!record.is_fresh(31_000, 30_000)); // within the last 30 s of its life
/// assert_eq!(record.fingerprint(), fingerprint("RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG"));
/// ```
#[derive(Clone)]
pub struct TokenRecord {
    /// The token (plaintext in memory; the store may encrypt it at rest).
    pub token: SecretString,
    /// Its generation.
    pub generation: Generation,
    /// When it was obtained.
    pub obtained_at_ms: i64,
    /// When it stops being used proactively (from the configured TTL or the endpoint's `expires_in`).
    pub expires_at_ms: Option<i64>,
    /// The login's metadata.
    pub meta: LoginMeta,
    /// Which process obtained it (host, pid and a random suffix).
    pub written_by: String,
}

impl TokenRecord {
    /// A short, non-reversible fingerprint of the token (the first 8 hex digits of its SHA-256), to tell tokens
    /// apart in status output and logs without showing them.
    ///
    /// ```
    /// use paynet_auth::record::{Generation, LoginMeta, TokenRecord};
    /// let record = TokenRecord {
    ///     token: "RV5LwDHwB1ZJUBEFdbRNNaA64LynT5VG".into(),
    ///     generation: Generation(1),
    ///     obtained_at_ms: 0,
    ///     expires_at_ms: None,
    ///     meta: LoginMeta::default(),
    ///     written_by: "host:1:abcd".into(),
    /// };
    /// assert_eq!(record.fingerprint().len(), 8);
    /// assert!(!format!("{record:?}").contains("RV5L"));
    /// ```
    pub fn fingerprint(&self) -> String {
        fingerprint(self.token.expose_secret())
    }

    /// Whether the token may still be used at `now_ms`, leaving `skew_ms` of margin before its expiry.
    pub fn is_fresh(&self, now_ms: i64, skew_ms: i64) -> bool {
        self.expires_at_ms
            .is_none_or(|expires| expires.saturating_sub(skew_ms) > now_ms)
    }
}

/// A short, non-reversible fingerprint of a token: the first 8 hex digits of its SHA-256.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("token", &"****")
            .field("fingerprint", &self.fingerprint())
            .field("generation", &self.generation)
            .field("obtained_at_ms", &self.obtained_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("meta", &self.meta)
            .field("written_by", &self.written_by)
            .finish()
    }
}
