//! Configuration: the plain [`Config`] struct and its checks, deserializable from any serde format, and (feature
//! `yaml`) loading it from a YAML file with `${VAR}` / `${VAR:-default}` expanded from the environment.
//! [`Stack::from_config`](crate::setup::Stack::from_config) turns it into a ready manager and layer.
//!
//! ```yaml
//! paynet:
//!   base_url: "https://gateway.example/gw"
//!   login_path: "/v2/user"
//!   username: "${PAYNET_USERNAME}"
//!   password: "${PAYNET_PASSWORD}"
//!   terminal_id: 4027096
//!   token_ttl: "12h"
//!   login_timeout: "10s"
//!   store:
//!     url: "sqlite://paynet-tokens.db"
//!     encryption_key: "${PAYNET_TOKEN_KEY}"
//!     previous_encryption_keys: ["${PAYNET_TOKEN_KEY_OLD:-}"]
//! ```

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;
use crate::exchange::{DEFAULT_INSPECT_LIMIT, DEFAULT_MAX_REQUEST_BODY, PAYNET_REJECTION_CODE};
use crate::token::PaynetLogin;
use crate::token::defaults;
use crate::token::source::DEFAULT_LOGIN_PATH;

/// The whole configuration file.
///
/// Read from YAML with `Config::from_yaml_file` or `Config::from_yaml_str` (feature `yaml`), or from any other
/// serde format:
///
/// ```
/// use paynet_auth::config::{Config, TokenFieldConfig};
///
/// let config: Config = serde_json::from_value(serde_json::json!({
///     "paynet": {
///         "base_url": "https://gateway.example/gw",
///         "username": "username_17627_56530",
///         "password": "secret",
///         "terminal_id": 4027096,
///     }
/// }))
/// .unwrap();
/// config.validate("paynet.json").unwrap();
/// assert_eq!(config.default_credential().token_field, TokenFieldConfig::Params);
///
/// #[cfg(feature = "yaml")]
/// {
///     let yaml = "paynet:\n  base_url: https://gateway.example/gw\n  username: username_17627_56530\n  \
///                 password: ${PAYNET_PASSWORD}\n  terminal_id: 4027096\n";
///     let from_yaml = Config::from_yaml_str(yaml, "paynet.yaml", &|_| Some("secret".into())).unwrap();
///     assert_eq!(from_yaml.default_credential().terminal_id, config.default_credential().terminal_id);
/// }
/// ```
///
/// Several credentials (a terminal per merchant) are a `credentials:` list of the same settings, each with a
/// `name`; requests choose one with a [`CredentialName`](crate::CredentialName) extension, and those without one
/// get `default_credential` (the first by default):
///
/// ```
/// # #[cfg(feature = "yaml")] {
/// use paynet_auth::config::Config;
///
/// let yaml = "
/// credentials:
///   - name: north
///     base_url: https://gateway.example/gw
///     username: username_north
///     password: ${NORTH_PASSWORD}
///     terminal_id: 17
///   - name: south
///     base_url: https://gateway.example/gw
///     username: username_south
///     password: ${SOUTH_PASSWORD}
///     terminal_id: 42
/// default_credential: south
/// ";
/// let config = Config::from_yaml_str(yaml, "paynet.yaml", &|_| Some("secret".into())).unwrap();
/// let names: Vec<&str> = config.credentials().iter().map(|c| c.credential_name()).collect();
/// assert_eq!(names, ["north", "south"]);
/// assert_eq!(config.default_credential().terminal_id, 42);
/// # }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Paynet integration, one credential (named `default` unless it has a `name`). Either this or
    /// `credentials`, or both (this one first).
    #[serde(default)]
    pub paynet: Option<PaynetConfig>,
    /// Several credentials, each with a distinct `name`.
    #[serde(default)]
    pub credentials: Vec<PaynetConfig>,
    /// The name of the credential requests without a [`CredentialName`](crate::CredentialName) use. Defaults to the
    /// first.
    #[serde(default)]
    pub default_credential: Option<String>,
}

impl Config {
    /// Every credential: `paynet` first, if there is one, then `credentials` in order.
    pub fn credentials(&self) -> Vec<&PaynetConfig> {
        self.paynet.iter().chain(&self.credentials).collect()
    }

    /// The credential named `name`.
    pub fn credential(&self, name: &str) -> Option<&PaynetConfig> {
        self.credentials()
            .into_iter()
            .find(|c| c.credential_name() == name)
    }

    /// The credential of requests without a [`CredentialName`](crate::CredentialName): `default_credential`, else the
    /// first. Panics on a configuration that [`validate`](Self::validate) refuses (none at all, or an unknown
    /// `default_credential`).
    pub fn default_credential(&self) -> &PaynetConfig {
        match &self.default_credential {
            Some(name) => self
                .credential(name)
                .expect("default_credential names a credential (validate)"),
            None => self
                .credentials()
                .first()
                .copied()
                .expect("at least one credential (validate)"),
        }
    }

    /// Checks what [`PaynetConfig::validate`] checks, for every credential, and that there is at least one, that
    /// each in `credentials` has a name no other has, and that `default_credential` names one of them.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.refusal()
            .map_or(Ok(()), |refusal| Err(refusal.at(origin)))
    }

    pub(crate) fn refusal(&self) -> Option<Refusal> {
        if self.paynet.is_none() && self.credentials.is_empty() {
            return Some(Refusal {
                fields: owned(&["paynet", "credentials"]),
                reason: "no credential: write a `paynet:` section, or a `credentials:` list".into(),
            });
        }
        if let Some(refusal) = self.paynet.as_ref().and_then(PaynetConfig::refusal) {
            return Some(refusal);
        }
        let mut seen: Vec<&str> = self.paynet.iter().map(|p| p.credential_name()).collect();
        for (i, credential) in self.credentials.iter().enumerate() {
            let at = format!("credentials[{i}]");
            let Some(name) = credential.name.as_deref() else {
                return Some(Refusal {
                    fields: vec![format!("{at}.name")],
                    reason: format!("`{at}` has no `name`: each of several credentials needs one"),
                });
            };
            if seen.contains(&name) {
                let implicit = match &self.paynet {
                    Some(paynet) if paynet.name.is_none() && name == paynet.credential_name() => {
                        " (the name of the `paynet:` section, which has no `name` of its own)"
                    }
                    _ => "",
                };
                return Some(Refusal {
                    fields: vec![format!("{at}.name")],
                    reason: format!(
                        "`{at}.name`: a credential named `{name}` is already configured{implicit}; each name \
                         selects one"
                    ),
                });
            }
            seen.push(name);
            if let Some(refusal) = credential.refusal() {
                let rename = |text: &str| text.replace("paynet.", &format!("{at}."));
                return Some(Refusal {
                    fields: refusal.fields.iter().map(|f| rename(f)).collect(),
                    reason: format!("credential `{name}`: {}", rename(&refusal.reason)),
                });
            }
        }
        if let Some(name) = &self.default_credential
            && !seen.contains(&name.as_str())
        {
            return Some(Refusal {
                fields: owned(&["default_credential"]),
                reason: format!(
                    "`default_credential` is `{name}`, which no credential is named (configured: {})",
                    seen.join(", ")
                ),
            });
        }
        None
    }
}

/// The store URL used when none is configured: a SQLite file in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://paynet-tokens.db";

/// Settings of the Paynet integration.
///
/// ```
/// use std::time::Duration;
/// use paynet_auth::config::PaynetConfig;
/// use paynet_auth::token::TokenSource;
///
/// let paynet: PaynetConfig = serde_json::from_value(serde_json::json!({
///     "base_url": "https://gateway.example/gw",
///     "username": "username_17627_56530",
///     "password": "secret",
///     "terminal_id": "4027096", // as an expanded `${VAR}` gives it
///     "token_ttl": "12h",
/// }))
/// .unwrap();
/// assert_eq!(paynet.terminal_id, 4027096);
/// assert_eq!(paynet.token_ttl, Some(Duration::from_secs(12 * 3600)));
/// assert_eq!(paynet.login_timeout, Duration::from_secs(10));
/// assert_eq!(paynet.login().endpoint(), "https://gateway.example/gw/v2/user");
/// assert_eq!(paynet.url("/v2/payment"), "https://gateway.example/gw/v2/payment");
/// assert!(!format!("{paynet:?}").contains("secret"));
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaynetConfig {
    /// The credential's name: what a request's [`CredentialName`](crate::CredentialName) names, and the `credential`
    /// label of its metrics. Required in a `credentials:` list; `default` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The gateway root; request paths are relative to it (`https://gateway.example/gw`). An `http` or `https`
    /// URL with a host: anything else is refused where it is read, with its line and column.
    #[serde(deserialize_with = "gateway_url")]
    pub base_url: String,
    /// The login method's path below the root. Defaults to `/v2/user`.
    #[serde(default = "default_login_path")]
    pub login_path: String,
    /// The agent's user name.
    pub username: String,
    /// The agent's password.
    pub password: SecretString,
    /// The terminal id (a number).
    #[serde(deserialize_with = "number_or_numeric_string")]
    pub terminal_id: u64,
    /// Stop using a token this long after it was obtained. Defaults to none: use it until rejected.
    #[serde(default, with = "humantime_serde")]
    pub token_ttl: Option<Duration>,
    /// How long before `token_ttl` runs out the token stops being used. Defaults to 30 s.
    #[serde(default = "default_expiry_skew", with = "humantime_serde")]
    pub expiry_skew: Duration,
    /// How long before the token stops being used a call starts refreshing it in the background, while the token
    /// keeps serving, when its lifetime is known (`token_ttl`, or `expires_in` from the source). `0s` turns it
    /// off. Defaults to 60 s ([`defaults::REFRESH_AHEAD`]), scaled down to half the usable life of shorter-lived
    /// tokens. Must be shorter than `token_ttl` less `expiry_skew`.
    #[serde(default, with = "humantime_serde")]
    pub refresh_ahead: Option<Duration>,
    /// Whether a token past its lifetime is still sent while the token endpoint is down (unreachable, timing out,
    /// answering 5xx), until the gateway rejects it. Defaults to `true`.
    #[serde(default = "default_static_stability")]
    pub static_stability: bool,
    /// How long a login may take. Defaults to 10 s.
    #[serde(default = "default_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// How long a call may take from the moment it is made to the last byte of the answer's body: the wait for a
    /// login, the inspection of the answer and a replay included (see [`crate::deadline`]). Must be longer than
    /// `login_timeout`, so that a call waiting for a slow login reports the login's timeout rather than its own.
    /// Defaults to 30 s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a refresh lease lasts if its holder dies. Must exceed `login_timeout` plus twice
    /// `store.operation_timeout` (by default `store.connect_timeout`: a database store re-reads before and saves
    /// after the login under the lease).
    /// Defaults to 30 s.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Where the token goes: `params` (`params.token`, default) or `top_level` (a top-level `token`).
    #[serde(default)]
    pub token_field: TokenFieldConfig,
    /// The JSON-RPC error code of a rejected token. Defaults to -9999.
    #[serde(default = "default_rejection_code")]
    pub rejection_code: i64,
    /// The largest request body, in bytes. Defaults to 1 MiB.
    #[serde(default = "default_max_request_body")]
    pub max_request_body: usize,
    /// Responses up to this many bytes are inspected for a rejection. Defaults to 64 KiB.
    #[serde(default = "default_inspect_limit")]
    pub inspect_limit: usize,
    /// Where the token is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// TLS to the gateway: a CA to trust, a client certificate. Used by the built-in client
    /// ([`HttpClient::from_config`](crate::hyper_client::HttpClient::from_config), feature `hyper-client`) and
    /// the command line tool; defaults to Mozilla's roots and no client certificate.
    #[serde(default)]
    pub tls: TlsConfig,
    /// A forward proxy for this credential's calls and logins (`http://user:pass@proxy:3128`), used instead of
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`; hosts `NO_PROXY` names still go direct. Defaults to none: the
    /// environment's proxy variables, as curl reads them, decide.
    #[serde(default)]
    pub proxy: Option<String>,
}

/// TLS settings of a credential's connection to the gateway (the `tls:` section). Relative paths are relative to
/// the working directory.
///
/// ```
/// use paynet_auth::config::TlsConfig;
///
/// let tls: TlsConfig = serde_json::from_value(serde_json::json!({
///     "ca_file": "/etc/paynet/gateway-ca.pem",
///     "client_cert": "/etc/paynet/client.crt",
///     "client_key": "/etc/paynet/client.key",
/// }))
/// .unwrap();
/// assert!(tls.default_roots, "the private CA is trusted in addition to the public roots by default");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust, in addition to the default roots (see `default_roots`).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Whether the default roots (Mozilla's, as the webpki-roots crate bundles them: the same on every machine,
    /// no system store needed) are trusted too. `false` trusts `ca_file` alone, which pins the gateway to its
    /// private CA. Defaults to `true`.
    #[serde(default = "default_true")]
    pub default_roots: bool,
    /// A PEM certificate chain (leaf first) to present when the gateway asks for a client certificate.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `client_cert`: PKCS#8 (`BEGIN PRIVATE KEY`), RSA (`BEGIN RSA PRIVATE KEY`) or EC
    /// (`BEGIN EC PRIVATE KEY`), unencrypted.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            default_roots: true,
            client_cert: None,
            client_key: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The configured token placement.
///
/// ```
/// use paynet_auth::config::TokenFieldConfig;
/// use paynet_auth::envelope::TokenField;
///
/// let field: TokenFieldConfig = serde_json::from_str(r#""top_level""#).unwrap();
/// assert_eq!(field, TokenFieldConfig::TopLevel);
/// assert_eq!(TokenField::from(field), TokenField::TopLevel);
/// assert_eq!(TokenFieldConfig::default(), TokenFieldConfig::Params);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFieldConfig {
    /// `params.token`.
    #[default]
    Params,
    /// A top-level `token`, as the ticket writes it.
    TopLevel,
}

/// Where the token is kept.
///
/// ```
/// use paynet_auth::config::{DEFAULT_STORE_URL, StoreConfig};
///
/// assert_eq!(StoreConfig::default().url, DEFAULT_STORE_URL);
/// assert_eq!(StoreConfig::default().pool_size, 8);
/// let store = StoreConfig {
///     url: "postgres://paynet:secret@db.internal/paynet".into(),
///     encryption_key: Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
///     ..StoreConfig::default()
/// };
/// let shown = format!("{store:?}");
/// assert!(shown.contains("postgres://paynet:****@db.internal/paynet"));
/// assert!(!shown.contains("secret") && !shown.contains("MDEy"));
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path`, `sqlite::memory:`, `postgres://…`, `mysql://…` or `memory:`. Defaults to
    /// [`DEFAULT_STORE_URL`].
    #[serde(default = "default_store_url")]
    pub url: String,
    /// Base64 of 32 bytes: the token is stored encrypted (AES-256-GCM). Defaults to none (plaintext, with a
    /// warning at start-up). An empty value counts as none.
    #[serde(default)]
    pub encryption_key: Option<SecretString>,
    /// Keys tokens were encrypted with before `encryption_key`, during a key rotation (see the README's "Rotating
    /// the encryption key"): rows under them are read and written again under `encryption_key`. Defaults to none.
    /// Empty entries are ignored.
    #[serde(default)]
    pub previous_encryption_keys: Vec<SecretString>,
    /// Connections in the pool. Defaults to 8.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// How long an operation waits for a database connection before it fails. Defaults to 5 s. Also the default
    /// of `operation_timeout`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one store operation may take in all (the connection wait and its statements), and the lock and
    /// statement timeouts set on every connection. Defaults to `connect_timeout`. The refresh lease must cover a
    /// login plus two of these (see [`PaynetConfig::lease_ttl`]).
    #[serde(default, with = "humantime_serde")]
    pub operation_timeout: Option<Duration>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            encryption_key: None,
            previous_encryption_keys: Vec::new(),
            pool_size: default_pool_size(),
            connect_timeout: default_connect_timeout(),
            operation_timeout: None,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "****"),
            )
            .field(
                "previous_encryption_keys",
                &format_args!("[{} keys]", self.previous_encryption_keys.len()),
            )
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

impl fmt::Debug for PaynetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaynetConfig")
            .field("base_url", &self.base_url)
            .field("login_path", &self.login_path)
            .field("username", &self.username)
            .field("password", &"****")
            .field("terminal_id", &self.terminal_id)
            .field("token_ttl", &self.token_ttl)
            .field("expiry_skew", &self.expiry_skew)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("static_stability", &self.static_stability)
            .field("login_timeout", &self.login_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("token_field", &self.token_field)
            .field("rejection_code", &self.rejection_code)
            .field("store", &self.store)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy.as_deref().map(redact_url))
            .finish_non_exhaustive()
    }
}

/// A URL with its secrets replaced by `****`: the project's one redactor, [`crate::redact::url`], under the name
/// this module has always offered.
pub use crate::redact::url as redact_url;

fn default_login_path() -> String {
    DEFAULT_LOGIN_PATH.to_owned()
}
fn default_static_stability() -> bool {
    true
}

fn default_expiry_skew() -> Duration {
    defaults::EXPIRY_SKEW
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_login_timeout() -> Duration {
    defaults::LOGIN_TIMEOUT
}
fn default_lease_ttl() -> Duration {
    defaults::LEASE_TTL
}
fn default_rejection_code() -> i64 {
    PAYNET_REJECTION_CODE
}
fn default_max_request_body() -> usize {
    DEFAULT_MAX_REQUEST_BODY
}
fn default_inspect_limit() -> usize {
    DEFAULT_INSPECT_LIMIT
}
fn default_store_url() -> String {
    DEFAULT_STORE_URL.to_owned()
}
fn default_pool_size() -> u32 {
    8
}
fn default_connect_timeout() -> Duration {
    crate::store::StoreOptions::default().connect_timeout
}

// A URL without a scheme or host would only fail when the first request is built; refusing it where it is read
// gives the operator its line and column.
fn gateway_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    check_gateway_url(&url)
        .map_err(|reason| serde::de::Error::custom(format!("`paynet.base_url` {reason}")))?;
    Ok(url)
}

fn check_gateway_url(url: &str) -> Result<(), String> {
    let expected = "must be an http(s) URL with a host, such as \"https://gateway.example/gw\"";
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{expected}, found \"{}\" ({e})", redact_url(url)))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // Printed in errors and stored in the credential key if accepted; it is never what a gateway wants.
        return Err(format!(
            "must not hold credentials (found \"{}\"): the gateway's own are `username` and `password`, a \
             proxy's go in `proxy`",
            redact_url(url)
        ));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "{expected}, found \"{}\" (no query or fragment: request paths are appended to it)",
            redact_url(url)
        ));
    }
    // `http::Uri` keeps a port it cannot read as a `u16` (`:99999`) without a word: read it from the text.
    if let Some(authority) = uri.authority() {
        let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        if let Some((_, port)) = host_port.rsplit_once(':')
            && !port.contains(']')
            && port.parse::<u16>().map_or(true, |port| port == 0)
        {
            return Err(format!(
                "{expected}, found \"{}\" (port `{port}` is not between 1 and 65535)",
                redact_url(url)
            ));
        }
    }
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        (None, _) => Err(format!("{expected}, found \"{url}\" (no scheme)")),
        (Some("http" | "https"), _) => Err(format!("{expected}, found \"{url}\" (no host)")),
        (Some(scheme), _) => Err(format!("{expected}, found \"{url}\" (scheme `{scheme}`)")),
    }
}

/// The longest span a duration setting may have: 100 years. A token's expiry is kept as milliseconds since 1970
/// and printed as an RFC 3339 timestamp, which ends with the year 9999; far shorter spans than that are already
/// no lifetime a gateway means.
pub const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A path below the gateway root: `/v2/user`, not a whole URL, no query or fragment.
fn check_login_path(path: &str) -> Result<(), String> {
    let expected = "must be a path below `base_url`, such as \"/v2/user\"";
    if path.contains("://") {
        return Err(format!(
            "{expected}, found a whole URL \"{}\": the gateway root goes in `base_url`",
            redact_url(path)
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "{expected}, found \"{path}\" (it must start with `/`)"
        ));
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{expected}, found \"{path}\" (no query, fragment, space or control character)"
        ));
    }
    Ok(())
}

/// An `http://` proxy URL with a host (and a numeric port, or 80), credentials in its user part if any, nothing
/// after the authority. A character that would end a part early (`@`, `#`, `?`, `/` in the password) must be
/// percent-encoded, or the proxy would be sent part of the password as its user name, or be looked for at a host
/// made of it.
pub(crate) fn check_proxy_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let expected = "must be an http:// URL of the proxy, such as \"http://proxy.internal:3128\" or \
                    \"http://user:password@proxy.internal:3128\"";
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{expected}, found \"{shown}\" ({e})"))?;
    let unencoded =
        "(percent-encode `@`, `:`, `#`, `?`, `/` and `%` in the user name and password)";
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(host)) if !host.is_empty() => {}
        (Some(scheme), _) if scheme != "http" => {
            return Err(format!(
                "{expected}, found \"{shown}\" (scheme `{scheme}`: only HTTP proxies are supported; HTTPS targets \
                 are tunnelled through them with CONNECT)"
            ));
        }
        (None, _) => return Err(format!("{expected}, found \"{shown}\" (no scheme)")),
        _ => return Err(format!("{expected}, found \"{shown}\" (no host)")),
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.matches('@').count() > 1 || url.contains('#') {
        return Err(format!("{expected}, found \"{shown}\" {unencoded}"));
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err(format!(
            "{expected}, found \"{shown}\" (a proxy URL has no path or query; if the password holds `/` or `?`, \
             percent-encode them)"
        ));
    }
    if uri.port_u16().is_none() {
        // curl would guess 1080, hyper-util 80: neither is worth guessing for an egress proxy.
        return Err(format!("{expected}, found \"{shown}\" (no port)"));
    }
    Ok(())
}

/// One refused setting or combination: the fields by their names in the file, and why.
pub(crate) struct Refusal {
    pub(crate) fields: Vec<String>,
    pub(crate) reason: String,
}

impl Refusal {
    /// The error refusing these fields of the configuration read from `origin`.
    fn at(self, origin: &str) -> ConfigError {
        ConfigError::Refused {
            origin: origin.to_owned(),
            fields: self.fields,
            reason: self.reason,
        }
    }
}

// An expanded `${VAR}` is always a string, so numbers must be accepted in either form. A visitor (rather than an
// untagged enum) keeps the YAML parser's position in the error.
fn number_or_numeric_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number (or a string holding one)")
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value)
                .map_err(|_| E::custom(format!("expected a whole number, found {value}")))
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<u64, E> {
            Err(E::custom(format!("expected a whole number, found {value}")))
        }

        // YAML reads integers past 64 bits as 128-bit ones; without these serde's message would be "invalid type:
        // integer as u128, expected any YAML value".
        fn visit_u128<E: serde::de::Error>(self, value: u128) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| too_large(value))
        }

        fn visit_i128<E: serde::de::Error>(self, value: i128) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| {
                if value < 0 {
                    E::custom(format!("expected a whole number, found {value}"))
                } else {
                    too_large(value)
                }
            })
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<u64, E> {
            let trimmed = value.trim();
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                return trimmed.parse().map_err(|_| too_large(trimmed));
            }
            Err(E::custom(format!(
                "expected a whole number, found \"{value}\""
            )))
        }
    }

    fn too_large<E: serde::de::Error>(value: impl fmt::Display) -> E {
        E::custom(format!(
            "{value} is too large: the largest whole number allowed is {}",
            u64::MAX
        ))
    }

    deserializer.deserialize_any(Visitor)
}

impl PaynetConfig {
    /// Checks the settings that each parse but cannot work, alone or together, and names them as a YAML file
    /// does (`paynet.token_ttl`). `Config::from_yaml_str` (feature `yaml`) runs it; call it for a configuration built
    /// in code.
    ///
    /// Refused: a `base_url` that is not an http(s) URL with a host; a `token_ttl` not longer than
    /// `expiry_skew`; a `refresh_ahead` other than `0s` not shorter than `token_ttl` less `expiry_skew`; a
    /// `lease_ttl` not longer than `login_timeout` plus twice `store.operation_timeout` (by default
    /// `store.connect_timeout`; a `memory:` store has no connection to wait for); a `store.pool_size` of 0 (whatever
    /// the store URL) or a zero store timeout; a `store.encryption_key` that is not base64 of 32 bytes.
    ///
    /// ```
    /// use paynet_auth::config::PaynetConfig;
    /// use paynet_auth::error::ConfigError;
    /// let config: PaynetConfig = serde_json::from_value(serde_json::json!({
    ///     "base_url": "http://127.0.0.1:8080/gw", "username": "u", "password": "p", "terminal_id": 1,
    ///     "token_ttl": "20s",
    /// }))
    /// .unwrap();
    /// let error = config.validate("paynet.yaml").unwrap_err();
    /// assert!(matches!(&error, ConfigError::Refused { fields, .. }
    ///     if fields == &["paynet.token_ttl", "paynet.expiry_skew"]));
    /// ```
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.refusal()
            .map_or(Ok(()), |refusal| Err(refusal.at(origin)))
    }

    /// The first setting (or combination) that cannot work.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        if let Err(reason) = check_gateway_url(&self.base_url) {
            return Some(Refusal {
                fields: owned(&["paynet.base_url"]),
                reason: format!("`paynet.base_url` {reason}"),
            });
        }
        if let Some(refusal) = self.timing_refusal() {
            return Some(refusal);
        }
        if let Some(ttl) = self.token_ttl
            && ttl <= self.expiry_skew
        {
            return Some(Refusal {
                fields: owned(&["paynet.token_ttl", "paynet.expiry_skew"]),
                reason: format!(
                    "`paynet.token_ttl` ({}) must be longer than `paynet.expiry_skew` ({}): a token is not used \
                     during its last expiry_skew, so it would never be used and every call would log in",
                    humantime::format_duration(ttl),
                    humantime::format_duration(self.expiry_skew),
                ),
            });
        }
        if let (Some(ttl), Some(window)) = (self.token_ttl, self.refresh_ahead)
            && !window.is_zero()
            && window >= ttl.saturating_sub(self.expiry_skew)
        {
            return Some(Refusal {
                fields: owned(&[
                    "paynet.refresh_ahead",
                    "paynet.token_ttl",
                    "paynet.expiry_skew",
                ]),
                reason: format!(
                    "`paynet.refresh_ahead` ({}) must be shorter than `paynet.token_ttl` ({}) less \
                     `paynet.expiry_skew` ({}): every token would be refreshed as soon as it arrived; `0s` turns \
                     refresh-ahead off",
                    humantime::format_duration(window),
                    humantime::format_duration(ttl),
                    humantime::format_duration(self.expiry_skew),
                ),
            });
        }
        if self.store.pool_size == 0 {
            return Some(Refusal {
                fields: owned(&["paynet.store.pool_size"]),
                reason: "`paynet.store.pool_size` must be at least 1: a store without connections cannot answer"
                    .into(),
            });
        }
        for (field, timeout) in [
            (
                "paynet.store.connect_timeout",
                Some(self.store.connect_timeout),
            ),
            (
                "paynet.store.operation_timeout",
                self.store.operation_timeout,
            ),
        ] {
            if timeout.is_some_and(|t| t.is_zero()) {
                return Some(Refusal {
                    fields: owned(&[field]),
                    reason: format!(
                        "`{field}` must be more than zero: every store operation would fail at once"
                    ),
                });
            }
        }
        let in_memory = matches!(self.store.url.trim(), "memory:" | "memory://");
        // One store operation's bound: `operation_timeout`, which defaults to `connect_timeout`; the field named is
        // the one that sets it.
        let (timeout_field, store_timeout) = match self.store.operation_timeout {
            _ if in_memory => ("", Duration::ZERO),
            Some(timeout) => ("paynet.store.operation_timeout", timeout),
            None => ("paynet.store.connect_timeout", self.store.connect_timeout),
        };
        if self.lease_ttl
            <= self
                .login_timeout
                .saturating_add(store_timeout.saturating_mul(2))
        {
            let (fields, store_part) = if in_memory {
                (
                    owned(&["paynet.lease_ttl", "paynet.login_timeout"]),
                    String::new(),
                )
            } else {
                (
                    owned(&["paynet.lease_ttl", "paynet.login_timeout", timeout_field]),
                    format!(
                        " plus twice `{timeout_field}` ({}, the bound of one store operation: the re-read before \
                         and the save after the login are made under the lease too)",
                        humantime::format_duration(store_timeout)
                    ),
                )
            };
            return Some(Refusal {
                fields,
                reason: format!(
                    "`paynet.lease_ttl` ({}) must be longer than `paynet.login_timeout` ({}){store_part}, or a \
                     second instance could log in while the first is still logging in",
                    humantime::format_duration(self.lease_ttl),
                    humantime::format_duration(self.login_timeout),
                ),
            });
        }
        if let Some(refusal) = self.wire_refusal() {
            return Some(refusal);
        }
        if let Some(key) = &self.store.encryption_key
            && let Err(problem) = check_encryption_key(key)
        {
            return Some(Refusal {
                fields: owned(&["paynet.store.encryption_key"]),
                reason: format!(
                    "`paynet.store.encryption_key` must be base64 of 32 bytes, got {problem}; make one with \
                     `openssl rand -base64 32`"
                ),
            });
        }
        None
    }

    /// The login path, and the durations that cannot work alone: zero where a wait must be positive, a span past
    /// what a timestamp holds, a request timeout that a login wait would always run out.
    fn timing_refusal(&self) -> Option<Refusal> {
        if let Err(reason) = check_login_path(&self.login_path) {
            return Some(Refusal {
                fields: owned(&["paynet.login_path"]),
                reason: format!("`paynet.login_path` {reason}"),
            });
        }
        for (field, value) in [
            ("paynet.login_timeout", self.login_timeout),
            ("paynet.request_timeout", self.request_timeout),
            ("paynet.lease_ttl", self.lease_ttl),
            ("paynet.store.connect_timeout", self.store.connect_timeout),
        ] {
            if value.is_zero() {
                return Some(Refusal {
                    fields: owned(&[field]),
                    reason: format!("`{field}` must be longer than 0s"),
                });
            }
        }
        for (field, value) in [
            ("paynet.token_ttl", self.token_ttl),
            ("paynet.expiry_skew", Some(self.expiry_skew)),
            ("paynet.refresh_ahead", self.refresh_ahead),
            ("paynet.login_timeout", Some(self.login_timeout)),
            ("paynet.request_timeout", Some(self.request_timeout)),
            ("paynet.lease_ttl", Some(self.lease_ttl)),
            (
                "paynet.store.connect_timeout",
                Some(self.store.connect_timeout),
            ),
        ] {
            if let Some(value) = value
                && value > MAX_SPAN
            {
                return Some(Refusal {
                    fields: owned(&[field]),
                    reason: format!(
                        "`{field}` ({}) is longer than 100 years: an instant that far ahead cannot be kept or printed \
                         as a timestamp",
                        humantime::format_duration(value),
                    ),
                });
            }
        }
        if self.request_timeout <= self.login_timeout {
            return Some(Refusal {
                fields: owned(&["paynet.request_timeout", "paynet.login_timeout"]),
                reason: format!(
                    "`paynet.request_timeout` ({}) must be longer than `paynet.login_timeout` ({}): a call that \
                     waits for a login would always run out first, and report its own timeout instead of the login's",
                    humantime::format_duration(self.request_timeout),
                    humantime::format_duration(self.login_timeout),
                ),
            });
        }
        None
    }

    /// The `tls` files and the `proxy` URL: files that cannot be read or are not what their key says, a client
    /// certificate without its key, a proxy URL that is not `http://host:port`.
    fn wire_refusal(&self) -> Option<Refusal> {
        if let Some(proxy) = &self.proxy
            && let Err(reason) = check_proxy_url(proxy)
        {
            return Some(Refusal {
                fields: owned(&["paynet.proxy"]),
                reason: format!("`paynet.proxy` {reason}"),
            });
        }
        let tls = &self.tls;
        match (&tls.client_cert, &tls.client_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Some(Refusal {
                    fields: owned(&["paynet.tls.client_cert", "paynet.tls.client_key"]),
                    reason: "`paynet.tls.client_cert` and `paynet.tls.client_key` go together: set both (the \
                             certificate chain and its private key) or neither"
                        .into(),
                });
            }
            _ => {}
        }
        if !tls.default_roots && tls.ca_file.is_none() {
            return Some(Refusal {
                fields: owned(&["paynet.tls.default_roots", "paynet.tls.ca_file"]),
                reason: "`paynet.tls.default_roots` is false and no `paynet.tls.ca_file` is set: no server \
                         certificate could be trusted"
                    .into(),
            });
        }
        #[cfg(feature = "tls")]
        {
            let file_refusal = |field: &str, error: crate::tls::PemFileError| Refusal {
                fields: vec![format!("paynet.tls.{field}")],
                reason: format!("`paynet.tls.{field}`: {error}"),
            };
            if let Some(ca) = &tls.ca_file
                && let Err(error) = crate::tls::read_certificates(ca)
            {
                return Some(file_refusal("ca_file", error));
            }
            if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
                if let Err(error) = crate::tls::read_certificates(cert) {
                    return Some(file_refusal("client_cert", error));
                }
                if let Err(error) = crate::tls::read_identity(cert, key) {
                    return Some(file_refusal("client_key", error));
                }
            }
        }
        None
    }

    /// The credential's name: `name`, or `default`.
    pub fn credential_name(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// The `login` token source of these settings.
    pub fn login(&self) -> PaynetLogin {
        PaynetLogin::new(
            &self.base_url,
            self.username.clone(),
            self.password.clone(),
            self.terminal_id,
        )
        .login_path(&self.base_url, &self.login_path)
    }

    /// The store options of these settings. An empty encryption key counts as none, so that
    /// `encryption_key: "${PAYNET_TOKEN_KEY:-}"` can leave encryption off.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            encryption_key: self
                .store
                .encryption_key
                .clone()
                .filter(|key| !secrecy::ExposeSecret::expose_secret(key).trim().is_empty()),
            previous_encryption_keys: self
                .store
                .previous_encryption_keys
                .iter()
                .filter(|key| !secrecy::ExposeSecret::expose_secret(*key).trim().is_empty())
                .cloned()
                .collect(),
            pool_size: self.store.pool_size,
            connect_timeout: self.store.connect_timeout,
            operation_timeout: self.store.operation_timeout,
        }
    }

    /// The full URL of a request path below the gateway root.
    pub fn url(&self, path: &str) -> String {
        crate::token::source::join_url(&self.base_url, path)
    }
}

fn owned(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}

/// What is wrong with an encryption key, without a byte of it. An empty key counts as none.
fn check_encryption_key(key: &SecretString) -> Result<(), String> {
    use base64::Engine as _;
    let text = secrecy::ExposeSecret::expose_secret(key).trim();
    if text.is_empty() {
        return Ok(());
    }
    // The decoder's message names the offending byte, which is part of the key: leave it out.
    let bytes = secrecy::zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "invalid base64".to_owned())?,
    );
    match bytes.len() {
        32 => Ok(()),
        n => Err(format!("{n} bytes")),
    }
}

#[cfg(feature = "yaml")]
mod env;
#[cfg(feature = "yaml")]
mod yaml;

#[cfg(feature = "yaml")]
pub use env::{ExpandError, expand};
