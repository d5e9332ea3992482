//! [`CredentialName`]: the request extension that names the credential a request is authorised with.

use std::fmt;
use std::sync::Arc;

/// Names the credential a request is authorised with, when a layer (or the reqwest adapter) serves several: put
/// it in the request's extensions. A request without one uses the default policy of the layer's
/// [`PolicySet`](crate::PolicySet); a name the set does not hold fails the call with
/// [`Error::UnknownCredential`](crate::Error::UnknownCredential) before anything is sent.
///
/// The name is the one its manager was built with ([`TokenManagerBuilder::name`](crate::TokenManagerBuilder::name),
/// or `name:` in a `credentials:` entry of the configuration).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use paynet_auth::CredentialName;
///
/// let mut request = http::Request::post("https://gateway.example/gw/v2/payment")
///     .body(Full::new(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"pay","id":1,"params":{}}"#)))
///     .unwrap();
/// request.extensions_mut().insert(CredentialName::new("merchant-17"));
/// assert_eq!(request.extensions().get::<CredentialName>().unwrap().name(), "merchant-17");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CredentialName(Arc<str>);

impl CredentialName {
    /// The credential named `name`.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CredentialName").field(&&*self.0).finish()
    }
}
