//! Several credentials behind one layer: the [`Credential`] a request names, and the policy of each credential.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::ExchangePolicy;
use crate::error::Error;

/// Names the credential a request is authorised with, when a layer (or the reqwest adapter) serves several: put
/// it in the request's extensions. A request without one uses the layer's default credential; a name the layer
/// does not know fails the call with [`Error::UnknownCredential`] before anything is sent.
///
/// The name is the one its manager was built with ([`TokenManagerBuilder::name`](crate::TokenManagerBuilder::name),
/// or `name:` in a `credentials:` entry of the configuration).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::Credential;
///
/// let mut request = http::Request::post("https://gateway.example/gw/v2/payment")
///     .body(Full::new(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"pay","id":1,"params":{}}"#)))
///     .unwrap();
/// request.extensions_mut().insert(Credential::new("merchant-17"));
/// assert_eq!(request.extensions().get::<Credential>().unwrap().name(), "merchant-17");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential(Arc<str>);

impl Credential {
    /// The credential named `name`.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Credential").field(&&*self.0).finish()
    }
}

/// The policy of each credential of a layer, and which one a request without a [`Credential`] gets.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) default: Arc<ExchangePolicy>,
    by_name: HashMap<Arc<str>, Arc<ExchangePolicy>>,
}

impl Credentials {
    /// `default` first, then the others; their managers' names are distinct (the layer checks).
    pub(crate) fn new(default: ExchangePolicy, others: Vec<ExchangePolicy>) -> Self {
        let default = Arc::new(default);
        let mut by_name = HashMap::with_capacity(others.len() + 1);
        by_name.insert(Arc::from(default.manager.name()), Arc::clone(&default));
        for policy in others {
            by_name.insert(Arc::from(policy.manager.name()), Arc::new(policy));
        }
        Self { default, by_name }
    }

    /// The policy for a request with these extensions: the default without a [`Credential`], else the named one;
    /// no extension costs no lookup, a named credential one. (The tower service takes the credential out of the
    /// request instead, see `PaynetAuth::call`.)
    #[cfg(feature = "reqwest")]
    pub(crate) fn for_request(
        &self,
        extensions: &http::Extensions,
    ) -> Result<&Arc<ExchangePolicy>, Error> {
        match extensions.get::<Credential>() {
            None => Ok(&self.default),
            Some(credential) => self.named(credential),
        }
    }

    /// The policy for a request that named `credential`.
    pub(crate) fn named(&self, credential: &Credential) -> Result<&Arc<ExchangePolicy>, Error> {
        self.by_name
            .get(credential.name())
            .ok_or_else(|| Error::UnknownCredential {
                name: credential.name().to_owned(),
                known: self.names(),
            })
    }

    /// The policy of the credential named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ExchangePolicy>> {
        self.by_name.get(name)
    }

    /// Every name, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }
}
