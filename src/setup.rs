//! From a configuration to a ready manager and layer in one pass: open the stores, build a manager over each
//! credential's, and the layer over the managers.
//!
//! The configuration itself ([`crate::config`]) is plain data and its checks; this module is the one place that
//! turns it into working parts, so a service, the command line tool and a test build them the same way.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::{Config, PaynetConfig, TokenFieldConfig};
use crate::deadline::{Deadline, DeadlineLayer};
use crate::envelope::TokenField;
use crate::error::{ConfigError, SetupError};
use crate::store::{StoreOptions, TokenStore};
use crate::{PaynetAuth, PaynetAuthLayer, TokenManager};

/// The token managers and the layer a [`Config`] describes: one manager per credential, every one of them behind
/// one layer, over the stores the configuration names.
///
/// [`open`](Self::open) opens the stores itself, one per store URL (and store options): credentials on the same
/// database share its pool, since a store keeps each credential's token under its own key.
/// [`with_store`](Self::with_store) puts every credential over a store the caller opened. A single credential of
/// a configuration is a [`Config`] too (`Config::from(paynet_config)`).
///
/// ```
/// use paynet_auth::config::Config;
/// use paynet_auth::setup::Configured;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// // Or `Config::from_yaml_file("paynet.yaml")?` (feature `yaml`).
/// let config: Config = serde_json::from_value(serde_json::json!({
///     "paynet": {
///         "base_url": "https://gateway.example/gw", "username": "u", "password": "p", "terminal_id": 1,
///         "store": { "url": "memory:" },
///     }
/// }))?;
/// let configured = Configured::open(&config).await?;
/// let service = configured.service(tower::service_fn(|_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// }));
/// assert_eq!(configured.manager().store_description(), "memory");
/// # let _ = service; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Configured {
    manager: TokenManager,
    managers: Vec<TokenManager>,
    layer: PaynetAuthLayer,
    request_timeout: Duration,
}

impl Configured {
    /// Checks `config` ([`Config::validate`]), opens its stores (applying their migrations) and builds a manager
    /// per credential and the layer over them all: the default credential ([`Config::default_credential`]) serves
    /// requests without a [`CredentialName`](crate::CredentialName). Credentials whose stores have the same URL and
    /// options share one opened store, and so one pool of connections.
    ///
    /// ```
    /// use paynet_auth::config::Config;
    /// use paynet_auth::setup::Configured;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
    /// let terminal = |name: &str, id: u64| serde_json::json!({
    ///     "name": name, "base_url": "https://gateway.example/gw", "username": name, "password": "p",
    ///     "terminal_id": id, "store": { "url": "memory:" },
    /// });
    /// let config: Config = serde_json::from_value(serde_json::json!({
    ///     "credentials": [terminal("north", 17), terminal("south", 42)],
    /// }))?;
    /// let configured = Configured::open(&config).await?;
    /// assert_eq!(configured.layer().credential_names(), ["north", "south"]);
    /// assert_eq!(configured.manager().name(), "north");
    /// # Ok(()) }
    /// ```
    pub async fn open(config: &Config) -> Result<Self, SetupError> {
        config.validate("configuration")?;
        let mut opened: Vec<(&PaynetConfig, Arc<dyn TokenStore>)> = Vec::new();
        let mut parts = Vec::new();
        for credential in in_layer_order(config) {
            let shared = opened
                .iter()
                .find(|(other, _)| same_store(other, credential))
                .map(|(_, store)| Arc::clone(store));
            let store = match shared {
                Some(store) => store,
                None => {
                    let store =
                        crate::store::connect(&credential.store.url, credential.store_options())
                            .await
                            .map_err(|source| SetupError::Store {
                                url: crate::redact::url(&credential.store.url),
                                source,
                            })?;
                    opened.push((credential, Arc::clone(&store)));
                    store
                }
            };
            parts.push(Part::build(credential, store)?);
        }
        Ok(Self::assemble(parts))
    }

    /// The same over a store the caller opened (one pool shared with other parts of the service, or a
    /// [`MemoryStore`](crate::store::MemoryStore) in a test), which every credential uses; their `store` sections
    /// are not used.
    pub fn with_store(config: &Config, store: Arc<dyn TokenStore>) -> Result<Self, ConfigError> {
        config.validate("configuration")?;
        let parts = in_layer_order(config)
            .map(|credential| Part::build(credential, Arc::clone(&store)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::assemble(parts))
    }

    /// The first part is the default credential's; the others are added to its layer.
    fn assemble(parts: Vec<Part>) -> Self {
        let managers: Vec<TokenManager> = parts.iter().map(|p| p.manager.clone()).collect();
        let mut parts = parts.into_iter();
        let Part {
            manager,
            mut layer,
            request_timeout,
        } = parts.next().expect("validate: at least one credential");
        for other in parts {
            layer = layer.credential(other.layer);
        }
        Self {
            manager,
            managers,
            layer,
            request_timeout,
        }
    }

    /// The default credential's token manager: for `token status`-like reports, a forced refresh, or a second
    /// adapter.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// Every credential's token manager, the default one first, then the others in the configuration's order.
    pub fn managers(&self) -> &[TokenManager] {
        &self.managers
    }

    /// The layer with the configured placement, rejection code and limits, serving every credential.
    pub fn layer(&self) -> &PaynetAuthLayer {
        &self.layer
    }

    /// `inner` wrapped in the layer.
    pub fn service<S: Clone>(&self, inner: S) -> PaynetAuth<S> {
        tower_layer::Layer::layer(&self.layer, inner)
    }

    /// The configuration's `request_timeout` as a layer, to put outside [`layer`](Self::layer): each call must
    /// finish, the answer's body included, within it (see [`crate::deadline`]). Every credential of a
    /// configuration has the same one (credentials asking for different ones are refused when it is checked).
    pub fn deadline(&self) -> DeadlineLayer {
        DeadlineLayer::new(self.request_timeout)
    }

    /// `inner` wrapped in the layer, and that in the configuration's `request_timeout`: what the command line
    /// tool calls the gateway with.
    pub fn bounded_service<S: Clone>(&self, inner: S) -> Deadline<PaynetAuth<S>> {
        Deadline::new(self.service(inner), self.request_timeout)
    }

    /// The default credential's manager and the layer.
    pub fn into_parts(self) -> (TokenManager, PaynetAuthLayer) {
        (self.manager, self.layer)
    }
}

/// The credentials of `config`, the default one first (the layer's default), then the others in order.
fn in_layer_order(config: &Config) -> impl Iterator<Item = &PaynetConfig> {
    let default = config.default_credential();
    std::iter::once(default).chain(
        config
            .credentials()
            .into_iter()
            .filter(move |c| !std::ptr::eq(*c, default)),
    )
}

/// Whether two credentials' stores are one: the same URL, and options that open it the same way (a pool of
/// another size, or another key, is another store).
fn same_store(a: &PaynetConfig, b: &PaynetConfig) -> bool {
    let (x, y) = (a.store_options(), b.store_options());
    // Taken apart so that an option added to the store is a compile error here until it is compared too.
    let StoreOptions {
        encryption_key,
        previous_encryption_keys,
        pool_size,
        connect_timeout,
        operation_timeout,
    } = x;
    let secret = |key: &secrecy::SecretString| key.expose_secret().trim().to_owned();
    a.store.url.trim() == b.store.url.trim()
        && encryption_key.as_ref().map(secret) == y.encryption_key.as_ref().map(secret)
        && previous_encryption_keys
            .iter()
            .map(secret)
            .eq(y.previous_encryption_keys.iter().map(secret))
        && pool_size == y.pool_size
        && connect_timeout == y.connect_timeout
        && operation_timeout == y.operation_timeout
}

/// One credential's manager and layer, over the store it was given.
struct Part {
    manager: TokenManager,
    layer: PaynetAuthLayer,
    request_timeout: Duration,
}

impl Part {
    fn build(config: &PaynetConfig, store: Arc<dyn TokenStore>) -> Result<Self, ConfigError> {
        let mut builder = TokenManager::builder(config.login())
            .name(config.credential_name())
            .token_ttl(config.token_ttl)
            .expiry_skew(config.expiry_skew)
            .static_stability(config.static_stability)
            .login_timeout(config.login_timeout)
            .lease_ttl(config.lease_ttl)
            .shared_store(store);
        if let Some(window) = config.refresh_ahead {
            builder = builder.refresh_ahead(window);
        }
        let manager = builder.build()?;
        let layer = PaynetAuthLayer::new(manager.clone())
            .token_field(config.token_field.into())
            .rejection_code(config.rejection_code)
            .max_request_body(config.max_request_body)
            .inspect_limit(config.inspect_limit);
        Ok(Self {
            manager,
            layer,
            request_timeout: config.request_timeout,
        })
    }
}

impl From<TokenFieldConfig> for TokenField {
    fn from(value: TokenFieldConfig) -> Self {
        match value {
            TokenFieldConfig::Params => TokenField::Params,
            TokenFieldConfig::TopLevel => TokenField::TopLevel,
        }
    }
}
