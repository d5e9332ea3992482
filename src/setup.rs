//! From a configuration to a ready stack in one pass: open the store, build the manager over it, and the layer
//! over the manager.
//!
//! The configuration itself ([`crate::config`]) is plain data and its checks; this module is the one place that
//! turns it into working parts, so a service, the command line tool and a test build the same stack the same way.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, PaynetConfig, TokenFieldConfig, redact_url};
use crate::deadline::{Deadline, DeadlineLayer};
use crate::envelope::TokenField;
use crate::error::{ConfigError, SetupError};
use crate::store::TokenStore;
use crate::{PaynetAuth, PaynetAuthLayer, TokenManager};

/// The token manager and the layer a [`PaynetConfig`] describes, sharing one store.
///
/// ```
/// use paynet_auth::config::Config;
/// use paynet_auth::setup::Stack;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
/// // Or `Config::from_yaml_file("paynet.yaml")?` (feature `yaml`).
/// let config: Config = serde_json::from_value(serde_json::json!({
///     "paynet": {
///         "base_url": "https://gateway.example/gw", "username": "u", "password": "p", "terminal_id": 1,
///         "store": { "url": "memory:" },
///     }
/// }))?;
/// let stack = Stack::from_config(config.default_credential()).await?;
/// let service = stack.service(tower::service_fn(|_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// }));
/// assert_eq!(stack.manager().store_description(), "memory");
/// # let _ = service; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Stack {
    manager: TokenManager,
    layer: PaynetAuthLayer,
    request_timeout: Duration,
}

impl Stack {
    /// Checks `config` ([`PaynetConfig::validate`]), opens its store (applying the store's migrations) and
    /// builds the manager and the layer.
    pub async fn from_config(config: &PaynetConfig) -> Result<Self, SetupError> {
        config.validate("configuration")?;
        let store = crate::store::connect(&config.store.url, config.store_options())
            .await
            .map_err(|source| SetupError::Store {
                url: redact_url(&config.store.url),
                source,
            })?;
        Ok(Self::with_store(config, store)?)
    }

    /// Every credential of `config` behind one layer ([`PaynetAuthLayer::credential`]): the default one
    /// ([`Config::default_credential`]) serves requests without a [`CredentialName`](crate::CredentialName), each
    /// has its own manager and opens its own store. [`manager`](Self::manager) is the default's.
    ///
    /// ```
    /// use paynet_auth::config::Config;
    /// use paynet_auth::setup::Stack;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), paynet_auth::BoxError> {
    /// let terminal = |name: &str, id: u64| serde_json::json!({
    ///     "name": name, "base_url": "https://gateway.example/gw", "username": name, "password": "p",
    ///     "terminal_id": id, "store": { "url": "memory:" },
    /// });
    /// let config: Config = serde_json::from_value(serde_json::json!({
    ///     "credentials": [terminal("north", 17), terminal("south", 42)],
    /// }))?;
    /// let stack = Stack::from_credentials(&config).await?;
    /// assert_eq!(stack.layer().credential_names(), ["north", "south"]);
    /// assert_eq!(stack.manager().name(), "north");
    /// # Ok(()) }
    /// ```
    pub async fn from_credentials(config: &Config) -> Result<Self, SetupError> {
        config.validate("configuration")?;
        let default = config.default_credential();
        let mut stacks = Vec::new();
        for credential in std::iter::once(default).chain(
            config
                .credentials()
                .into_iter()
                .filter(|c| !std::ptr::eq(*c, default)),
        ) {
            stacks.push(Self::from_config(credential).await?);
        }
        let mut stacks = stacks.into_iter();
        let Self {
            manager,
            mut layer,
            request_timeout,
        } = stacks.next().expect("validate: at least one credential");
        for other in stacks {
            layer = layer.credential(other.layer);
        }
        Ok(Self {
            manager,
            layer,
            request_timeout,
        })
    }

    /// The same over a store the caller opened (one pool shared with other parts of the service, or a
    /// [`MemoryStore`](crate::store::MemoryStore) in a test); `config.store` is not used.
    pub fn with_store(
        config: &PaynetConfig,
        store: Arc<dyn TokenStore>,
    ) -> Result<Self, ConfigError> {
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

    /// The token manager: for `token status`-like reports, a forced refresh, or a second adapter.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// The layer with the configured placement, rejection code and limits.
    pub fn layer(&self) -> &PaynetAuthLayer {
        &self.layer
    }

    /// `inner` wrapped in the layer.
    pub fn service<S: Clone>(&self, inner: S) -> PaynetAuth<S> {
        tower_layer::Layer::layer(&self.layer, inner)
    }

    /// The configured `request_timeout` as a layer, to put outside [`layer`](Self::layer): each call must finish,
    /// the answer's body included, within it (see [`crate::deadline`]).
    pub fn deadline(&self) -> DeadlineLayer {
        DeadlineLayer::new(self.request_timeout)
    }

    /// `inner` wrapped in the layer, and that in the configured `request_timeout`: what the command line tool
    /// calls the gateway with.
    pub fn bounded_service<S: Clone>(&self, inner: S) -> Deadline<PaynetAuth<S>> {
        Deadline::new(self.service(inner), self.request_timeout)
    }

    /// The manager and the layer.
    pub fn into_parts(self) -> (TokenManager, PaynetAuthLayer) {
        (self.manager, self.layer)
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
