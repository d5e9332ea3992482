//! [`PolicySet`]: the policy of each credential a layer serves, and which one a request gets.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AuthPolicy, CredentialName};
use crate::error::{Error, PolicySetError};

/// A default [`AuthPolicy`] and named ones, one per credential, each named by its manager
/// ([`TokenManager::name`](crate::TokenManager::name)).
///
/// A request without a [`CredentialName`] gets the default, with no lookup; one with a name gets that policy, one
/// map lookup; a name the set does not hold fails the call unsent ([`Error::UnknownCredential`]). Built once:
/// [`PaynetAuthLayer`](crate::PaynetAuthLayer) holds it behind an `Arc`, which every service the layer makes, the
/// reqwest adapter and `hyper_client::authorised_http_client` share.
///
/// ```
/// use paynet_auth::{AuthPolicy, ClientCredentials, PaynetAuthLayer, PaynetLogin, PolicySet, PolicySetError, TokenManager};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminal = |name: &str, terminal_id| {
///     let login = PaynetLogin::new("https://gateway.example/gw", name, "secret".into(), terminal_id);
///     TokenManager::builder(login).name(name).build()
/// };
/// let reports = TokenManager::builder(ClientCredentials::new("https://reports.example/oauth/token", "id", "secret".into()))
///     .name("reports")
///     .build()?;
/// let policies = PolicySet::new(AuthPolicy::paynet(terminal("merchant-17", 17)?)) // the default
///     .with(AuthPolicy::paynet(terminal("merchant-42", 42)?))?
///     .with(AuthPolicy::bearer(reports))?;
/// assert_eq!(policies.names(), ["merchant-17", "merchant-42", "reports"]);
/// let layer = PaynetAuthLayer::from_policies(policies);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// The default first, then the others in the order they joined.
    policies: Vec<Arc<AuthPolicy>>,
    /// Every policy's index in `policies`, the default's included, by name.
    by_name: HashMap<Arc<str>, usize>,
}

impl PolicySet {
    /// A set of one: `default`, which requests without a [`CredentialName`] get.
    pub fn new(default: AuthPolicy) -> Self {
        let mut by_name = HashMap::with_capacity(1);
        by_name.insert(Arc::from(default.name()), 0);
        Self {
            policies: vec![Arc::new(default)],
            by_name,
        }
    }

    /// Adds `policy` under its manager's name, for requests whose [`CredentialName`] names it.
    ///
    /// # Errors
    ///
    /// [`PolicySetError::DuplicateName`] if a policy of that name is in the set already; the set is unchanged.
    pub fn insert(&mut self, policy: AuthPolicy) -> Result<(), PolicySetError> {
        let name: Arc<str> = Arc::from(policy.name());
        if self.by_name.contains_key(&name) {
            return Err(PolicySetError::DuplicateName {
                name: name.to_string(),
            });
        }
        self.by_name.insert(name, self.policies.len());
        self.policies.push(Arc::new(policy));
        Ok(())
    }

    /// The set with `policy` added: [`insert`](Self::insert) for a chain of calls.
    ///
    /// # Errors
    ///
    /// [`PolicySetError::DuplicateName`] if a policy of that name is in the set already.
    pub fn with(mut self, policy: AuthPolicy) -> Result<Self, PolicySetError> {
        self.insert(policy)?;
        Ok(self)
    }

    /// The policy of requests without a [`CredentialName`].
    pub fn default_policy(&self) -> &AuthPolicy {
        &self.policies[0]
    }

    /// The policy named `name`, the default's included.
    pub fn get(&self, name: &str) -> Option<&AuthPolicy> {
        self.by_name.get(name).map(|&i| &*self.policies[i])
    }

    /// Every policy, the default first, then in the order they joined.
    pub fn iter(&self) -> impl Iterator<Item = &AuthPolicy> {
        self.policies.iter().map(|policy| &**policy)
    }

    /// The names of the policies, the default's first, then in the order they joined.
    pub fn names(&self) -> Vec<&str> {
        self.iter().map(AuthPolicy::name).collect()
    }

    /// The default policy, shared with the calls that use it.
    pub(crate) fn default_shared(&self) -> &Arc<AuthPolicy> {
        &self.policies[0]
    }

    /// The default policy, to change while the set is being built.
    pub(crate) fn default_mut(&mut self) -> &mut AuthPolicy {
        Arc::make_mut(&mut self.policies[0])
    }

    /// The policy for a request with these extensions: the default without a [`CredentialName`], else the named
    /// one; no extension costs no lookup, a name one. (The tower service takes the name out of the request
    /// instead, see `PaynetAuth::call`.)
    #[cfg(feature = "reqwest")]
    pub(crate) fn for_request(
        &self,
        extensions: &http::Extensions,
    ) -> Result<&Arc<AuthPolicy>, Error> {
        match extensions.get::<CredentialName>() {
            None => Ok(self.default_shared()),
            Some(credential) => self.named(credential),
        }
    }

    /// The policy for a request that named `credential`.
    pub(crate) fn named(&self, credential: &CredentialName) -> Result<&Arc<AuthPolicy>, Error> {
        match self.by_name.get(credential.name()) {
            Some(&i) => Ok(&self.policies[i]),
            None => Err(Error::UnknownCredential {
                name: credential.name().to_owned(),
                known: self.sorted_names(),
            }),
        }
    }

    /// Every name, sorted.
    fn sorted_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names().into_iter().map(str::to_owned).collect();
        names.sort();
        names
    }
}

impl From<AuthPolicy> for PolicySet {
    /// A set of one.
    fn from(default: AuthPolicy) -> Self {
        Self::new(default)
    }
}

impl From<AuthPolicy> for Arc<PolicySet> {
    /// A set of one, to share.
    fn from(default: AuthPolicy) -> Self {
        Arc::new(PolicySet::new(default))
    }
}
