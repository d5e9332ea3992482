//! The name of each [`TokenStore`](super::TokenStore) operation: the method's own, so that what an error says (the
//! `operation` of a [`StoreError`](crate::StoreError)), what a log says and the `op` label of the store-error
//! counter are one word, and the word is found in the code.

/// [`TokenStore::load`](super::TokenStore::load).
pub(crate) const LOAD: &str = "load";
/// [`TokenStore::save`](super::TokenStore::save).
pub(crate) const SAVE: &str = "save";
/// [`TokenStore::try_lease`](super::TokenStore::try_lease).
pub(crate) const TRY_LEASE: &str = "try_lease";
/// [`TokenStore::release`](super::TokenStore::release).
pub(crate) const RELEASE: &str = "release";
/// [`TokenStore::clear`](super::TokenStore::clear).
pub(crate) const CLEAR: &str = "clear";
/// [`TokenStore::lease`](super::TokenStore::lease).
pub(crate) const LEASE: &str = "lease";
/// [`TokenStore::stored_generation`](super::TokenStore::stored_generation).
pub(crate) const STORED_GENERATION: &str = "stored_generation";
