//! Configuration: the plain [`Config`] struct and its checks, deserializable from any serde format, and (feature
//! `yaml`) loading it from a YAML file with `${VAR}` / `${VAR:-default}` expanded from the environment.
//! [`Configured::open`](crate::setup::Configured::open) turns it into ready managers and a layer.
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
use crate::redact;
use crate::token::PaynetLogin;
use crate::token::defaults;
use crate::token::rules::{self, Breach, Setting};
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
///
/// The settings the entries of `credentials` share are written once, in a `defaults:` section: each entry takes
/// every setting of `defaults` it does not set itself (inside `store` and `tls`, key by key). An entry that still
/// lacks a required setting (`base_url`, `username`, `password`, `terminal_id`) is refused, naming the entry:
///
/// ```
/// use paynet_auth::config::Config;
///
/// let entry = |name: &str, id: u64| serde_json::json!({ "name": name, "username": name, "terminal_id": id });
/// let mut file = serde_json::json!({
///     "defaults": {
///         "base_url": "https://gateway.example/gw", "password": "p", "token_ttl": "12h",
///         "store": { "url": "memory:", "pool_size": 4 },
///     },
///     "credentials": [entry("north", 17), entry("south", 42)],
/// });
/// file["credentials"][1]["store"] = serde_json::json!({ "pool_size": 2 });
/// let config: Config = serde_json::from_value(file.clone()).unwrap();
/// let south = config.credential("south").unwrap();
/// assert_eq!((south.base_url.as_str(), south.terminal_id), ("https://gateway.example/gw", 42));
/// assert_eq!((south.store.url.as_str(), south.store.pool_size), ("memory:", 2));
///
/// file["defaults"].as_object_mut().unwrap().remove("base_url");
/// let error = serde_json::from_value::<Config>(file).unwrap_err().to_string();
/// assert!(error.starts_with("`credentials[0]` (`north`) has no `base_url`"), "{error}");
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// The Paynet integration, one credential (named `default` unless it has a `name`). Either this or
    /// `credentials`, or both (this one first).
    pub paynet: Option<PaynetConfig>,
    /// Several credentials, each with a distinct `name`, each with the settings of the file's `defaults:`
    /// section it does not set itself.
    pub credentials: Vec<PaynetConfig>,
    /// The name of the credential requests without a [`CredentialName`](crate::CredentialName) use. Defaults to
    /// the first.
    pub default_credential: Option<String>,
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ConfigFile::deserialize(deserializer)?
            .resolve()
            .map_err(serde::de::Error::custom)
    }
}

/// The configuration as written: the entries of `credentials` before they take the settings of `defaults`.
///
/// An entry is kept as a generic tree until it is complete, since a setting it leaves out may come from
/// `defaults`; serde_json's tree serves any format the configuration is read from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    paynet: Option<PaynetConfig>,
    #[serde(default)]
    defaults: Option<Settings>,
    #[serde(default)]
    credentials: Vec<Settings>,
    #[serde(default)]
    default_credential: Option<String>,
}

type Settings = serde_json::Map<String, serde_json::Value>;

/// The settings a credential cannot do without: no default exists for them.
const REQUIRED: [&str; 4] = ["base_url", "username", "password", "terminal_id"];

impl ConfigFile {
    /// Each entry of `credentials` with the settings of `defaults` it does not set, read as a [`PaynetConfig`].
    pub(crate) fn resolve(self) -> Result<Config, EntryError> {
        if self.defaults.is_some() && self.credentials.is_empty() {
            return Err(EntryError {
                at: "defaults".into(),
                setting: None,
                refused: true,
                reason: "`defaults` holds the settings the entries of `credentials` share, and there is no \
                         `credentials` list: write the settings in `paynet`"
                    .into(),
            });
        }
        let defaults = self.defaults.unwrap_or_default();
        if defaults.contains_key("name") {
            return Err(EntryError {
                at: "defaults".into(),
                setting: Some("name".into()),
                refused: true,
                reason: "`defaults.name`: `defaults` cannot set `name`, each credential's name is its own".into(),
            });
        }
        let credentials = self
            .credentials
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let entry = inherit(&defaults, entry);
                let name = match entry.get("name") {
                    Some(serde_json::Value::String(name)) => format!("`{name}`"),
                    _ => "no name".into(),
                };
                let at = format!("credentials[{i}]");
                if let Some(missing) = REQUIRED.iter().find(|key| !entry.contains_key(**key)) {
                    return Err(EntryError {
                        reason: format!(
                            "`{at}` ({name}) has no `{missing}`, and `defaults` has none: set it in the entry or \
                             in `defaults`"
                        ),
                        at,
                        setting: Some((*missing).into()),
                        refused: true,
                    });
                }
                // The path of the setting that does not read, for its line in a file.
                serde_path_to_error::deserialize(serde_json::Value::Object(entry)).map_err(|error| {
                    let setting = error.path().to_string();
                    EntryError {
                        reason: format!("`{at}` ({name}): {}", error.into_inner()),
                        at,
                        setting: (setting != ".").then_some(setting),
                        refused: false,
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Config {
            paynet: self.paynet,
            credentials,
            default_credential: self.default_credential,
        })
    }
}

/// `entry` with every setting of `defaults` it does not set; sections (`store`, `tls`) are merged key by key.
fn inherit(defaults: &Settings, entry: Settings) -> Settings {
    let mut merged = defaults.clone();
    for (key, value) in entry {
        let value = match (merged.get(&key), value) {
            (Some(serde_json::Value::Object(base)), serde_json::Value::Object(own)) => {
                serde_json::Value::Object(inherit(base, own))
            }
            (_, value) => value,
        };
        merged.insert(key, value);
    }
    merged
}

/// An entry of `credentials` that cannot be read once it has taken the settings of `defaults`, or a `defaults`
/// section that cannot be used.
#[derive(Debug)]
// Where and which setting are read by the YAML loader to point at a line; without `yaml` the reason says it all.
#[cfg_attr(not(feature = "yaml"), allow(dead_code))]
pub(crate) struct EntryError {
    /// `credentials[3]`, or `defaults`.
    pub(crate) at: String,
    /// The setting at fault in it (`username`, `store.pool_size`), when one is.
    pub(crate) setting: Option<String>,
    /// Whether the entry is refused (a setting missing, or not allowed) rather than a setting unreadable.
    pub(crate) refused: bool,
    pub(crate) reason: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
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

    /// The credential of requests without a [`CredentialName`](crate::CredentialName): `default_credential`, else
    /// the first. Panics on a configuration that [`validate`](Self::validate) refuses (none at all, or an unknown
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
        if let Some(refusal) = self.paynet.as_ref().and_then(|p| p.refusal("paynet")) {
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
            if let Some(refusal) = credential.refusal(&at) {
                return Some(Refusal {
                    fields: refusal.fields,
                    reason: format!("credential `{name}`: {}", refusal.reason),
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
        self.one_request_timeout()
    }

    /// The stack built from a configuration has one deadline for every call, whichever credential the call uses
    /// ([`Configured::deadline`](crate::setup::Configured::deadline)), so credentials that ask for different
    /// `request_timeout`s could not all get theirs: refused, rather than one of them silently applied.
    fn one_request_timeout(&self) -> Option<Refusal> {
        let sections = self.paynet.iter().map(|p| ("paynet".to_owned(), p)).chain(
            self.credentials
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("credentials[{i}]"), c)),
        );
        let mut first: Option<(String, Duration)> = None;
        for (at, credential) in sections {
            match &first {
                None => first = Some((at, credential.request_timeout)),
                Some((first_at, timeout)) if *timeout != credential.request_timeout => {
                    return Some(Refusal {
                        fields: vec![
                            format!("{first_at}.request_timeout"),
                            format!("{at}.request_timeout"),
                        ],
                        reason: format!(
                            "`{first_at}.request_timeout` ({}) and `{at}.request_timeout` ({}) differ: the \
                             credentials of one configuration share one deadline for every call; set \
                             `request_timeout` once, in `defaults`",
                            humantime::format_duration(*timeout),
                            humantime::format_duration(credential.request_timeout),
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        None
    }
}

/// A configuration of this one credential, as its `paynet:` section: what [`Configured`](crate::setup::Configured)
/// takes to build a single credential of a larger configuration.
impl From<PaynetConfig> for Config {
    fn from(paynet: PaynetConfig) -> Self {
        Self {
            paynet: Some(paynet),
            credentials: Vec::new(),
            default_credential: None,
        }
    }
}

/// The store URL used when none is configured: a SQLite file in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://paynet-tokens.db";

/// Settings of the Paynet integration.
///
/// ```
/// use std::time::Duration;
/// use paynet_auth::config::PaynetConfig;
/// use paynet_auth::TokenSource;
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
    /// URL with a host: anything else is refused when the configuration is checked (a URL without a scheme or
    /// host would only fail when the first request is built), naming the key as the file spells it
    /// (`credentials[1].base_url`) and its line.
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
/// use paynet_auth::policy::TokenField;
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
    /// A top-level `token`, beside `method` and `params`.
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
    /// `sqlite://path`, `sqlite::memory:`, `postgres://…`, `mysql://…`, `redis://host:6379/N`, `rediss://…` (TLS)
    /// or `memory:`. Defaults to [`DEFAULT_STORE_URL`].
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
    /// Connections in the pool. Defaults to 8. A Redis store has no pool (one multiplexed connection) and does not
    /// use it.
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
            .field("url", &redact::url(&self.url))
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
            .field("proxy", &self.proxy.as_deref().map(redact::url))
            .finish_non_exhaustive()
    }
}

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

fn check_gateway_url(url: &str) -> Result<(), String> {
    let expected = "must be an http(s) URL with a host, such as \"https://gateway.example/gw\"";
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{expected}, found \"{}\" ({e})", redact::url(url)))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // Printed in errors and stored in the store key if accepted; it is never what a gateway wants.
        return Err(format!(
            "must not hold credentials (found \"{}\"): the gateway's own are `username` and `password`, a \
             proxy's go in `proxy`",
            redact::url(url)
        ));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "{expected}, found \"{}\" (no query or fragment: request paths are appended to it)",
            redact::url(url)
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
                redact::url(url)
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
            redact::url(path)
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
    let shown = redact::url(url);
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
    /// A refusal of one field, the reason following its name.
    fn single(field: String, reason: String) -> Self {
        Self {
            reason: format!("`{field}` {reason}"),
            fields: vec![field],
        }
    }

    /// The refusal of a broken timing rule, each setting called what `name` calls it.
    fn of(breach: &Breach, name: impl Fn(Setting) -> String) -> Self {
        let (fields, reason) = breach.describe(name);
        Self { fields, reason }
    }

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
        self.refusal("paynet")
            .map_or(Ok(()), |refusal| Err(refusal.at(origin)))
    }

    /// The first setting (or combination) that cannot work, its fields named below `at` (`paynet`,
    /// `credentials[2]`).
    pub(crate) fn refusal(&self, at: &str) -> Option<Refusal> {
        self.url_refusal(at)
            .or_else(|| {
                self.timing_breach()
                    .map(|breach| Refusal::of(&breach, |s| self.yaml_name(at, s)))
            })
            .or_else(|| self.store_refusal(at))
            .or_else(|| {
                self.lease_breach()
                    .map(|breach| Refusal::of(&breach, |s| self.yaml_name(at, s)))
            })
            .or_else(|| self.wire_refusal(at))
            .or_else(|| self.key_refusal(at))
    }

    /// A `base_url` or `login_path` that cannot be joined into the URLs of calls and logins.
    fn url_refusal(&self, at: &str) -> Option<Refusal> {
        if let Err(reason) = check_gateway_url(&self.base_url) {
            return Some(Refusal::single(format!("{at}.base_url"), reason));
        }
        if let Err(reason) = check_login_path(&self.login_path) {
            return Some(Refusal::single(format!("{at}.login_path"), reason));
        }
        None
    }

    /// The first timing rule (see [`crate::token::rules`]) these settings break, but the lease's, which needs the
    /// store settings checked first.
    fn timing_breach(&self) -> Option<Breach> {
        let positive = [
            (Setting::LoginTimeout, self.login_timeout),
            (Setting::RequestTimeout, self.request_timeout),
            (Setting::LeaseTtl, self.lease_ttl),
            (Setting::StoreConnectTimeout, self.store.connect_timeout),
        ]
        .into_iter()
        .map(|(setting, value)| rules::positive(setting, value));
        let spans = [
            (Setting::TokenTtl, self.token_ttl),
            (Setting::ExpirySkew, Some(self.expiry_skew)),
            (Setting::RefreshAhead, self.refresh_ahead),
            (Setting::LoginTimeout, Some(self.login_timeout)),
            (Setting::RequestTimeout, Some(self.request_timeout)),
            (Setting::LeaseTtl, Some(self.lease_ttl)),
            (
                Setting::StoreConnectTimeout,
                Some(self.store.connect_timeout),
            ),
        ]
        .into_iter()
        .map(|(setting, value)| rules::within_span(setting, value));
        positive
            .chain(spans)
            .chain([
                rules::request_outlasts_login(self.request_timeout, self.login_timeout),
                rules::token_outlives_skew(self.token_ttl, self.expiry_skew),
                rules::window_fits_life(self.refresh_ahead, self.token_ttl, self.expiry_skew),
            ])
            .flatten()
            .next()
    }

    /// The lease rule, with the bound of one store operation: `operation_timeout`, which defaults to
    /// `connect_timeout`; none for a `memory:` store, which has no connection to wait for.
    fn lease_breach(&self) -> Option<Breach> {
        let store_timeout = (!crate::store::is_memory_url(&self.store.url)).then(|| {
            self.store
                .operation_timeout
                .unwrap_or(self.store.connect_timeout)
        });
        rules::lease_covers_login(self.lease_ttl, self.login_timeout, store_timeout)
    }

    /// A store without connections, or whose every operation would fail at once.
    fn store_refusal(&self, at: &str) -> Option<Refusal> {
        if self.store.pool_size == 0 {
            return Some(Refusal::single(
                format!("{at}.store.pool_size"),
                "must be at least 1: a store without connections cannot answer".into(),
            ));
        }
        if self.store.operation_timeout.is_some_and(|t| t.is_zero()) {
            return Some(Refusal::single(
                format!("{at}.store.operation_timeout"),
                "must be more than zero: every store operation would fail at once".into(),
            ));
        }
        None
    }

    /// An encryption key that is not base64 of 32 bytes.
    fn key_refusal(&self, at: &str) -> Option<Refusal> {
        let problem = check_encryption_key(self.store.encryption_key.as_ref()?).err()?;
        Some(Refusal::single(
            format!("{at}.store.encryption_key"),
            format!(
                "must be base64 of 32 bytes, got {problem}; make one with `openssl rand -base64 32`"
            ),
        ))
    }

    /// What the file calls a setting of the section at `at`. The bound of one store operation is named by the key
    /// that sets it: `operation_timeout`, or `connect_timeout` when that is left to its default.
    fn yaml_name(&self, at: &str, setting: Setting) -> String {
        let key = match setting {
            Setting::StoreOperationTimeout if self.store.operation_timeout.is_some() => {
                "store.operation_timeout"
            }
            Setting::StoreOperationTimeout | Setting::StoreConnectTimeout => {
                "store.connect_timeout"
            }
            other => other.name(),
        };
        format!("{at}.{key}")
    }

    /// The `tls` files and the `proxy` URL: files that cannot be read or are not what their key says, a client
    /// certificate without its key, a proxy URL that is not `http://host:port`.
    fn wire_refusal(&self, at: &str) -> Option<Refusal> {
        if let Some(proxy) = &self.proxy
            && let Err(reason) = check_proxy_url(proxy)
        {
            return Some(Refusal::single(format!("{at}.proxy"), reason));
        }
        let tls = &self.tls;
        match (&tls.client_cert, &tls.client_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Some(Refusal {
                    fields: vec![
                        format!("{at}.tls.client_cert"),
                        format!("{at}.tls.client_key"),
                    ],
                    reason: format!(
                        "`{at}.tls.client_cert` and `{at}.tls.client_key` go together: set both (the certificate \
                         chain and its private key) or neither"
                    ),
                });
            }
            _ => {}
        }
        if !tls.default_roots && tls.ca_file.is_none() {
            return Some(Refusal {
                fields: vec![
                    format!("{at}.tls.default_roots"),
                    format!("{at}.tls.ca_file"),
                ],
                reason: format!(
                    "`{at}.tls.default_roots` is false and no `{at}.tls.ca_file` is set: no server certificate \
                     could be trusted"
                ),
            });
        }
        #[cfg(feature = "tls")]
        {
            let file_refusal = |field: &str, error: crate::tls::PemFileError| Refusal {
                fields: vec![format!("{at}.tls.{field}")],
                reason: format!("`{at}.tls.{field}`: {error}"),
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
