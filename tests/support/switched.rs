//! A store that can be made unreachable, like a database behind a cut network.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use paynet_auth::StoreError;
use paynet_auth::record::{Generation, TokenRecord};
use paynet_auth::store::{LeaseInfo, MemoryStore, TokenStore};

/// A [`MemoryStore`] that fails every operation with [`StoreError::Unavailable`] while `down` is set.
#[derive(Clone, Default)]
pub struct SwitchedStore {
    pub inner: MemoryStore,
    pub down: Arc<AtomicBool>,
}

impl SwitchedStore {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                store: "switched memory".into(),
                source: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl TokenStore for SwitchedStore {
    fn describe(&self) -> String {
        "switched memory".into()
    }
    async fn load(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.load(key).await
    }
    async fn save(&self, key: &str, record: &TokenRecord) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.save(key, record).await
    }
    async fn try_lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.try_lease(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.release(key, owner).await
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.clear(key).await
    }
    async fn lease(&self, key: &str) -> Result<Option<LeaseInfo>, StoreError> {
        self.check()?;
        self.inner.lease(key).await
    }
    async fn stored_generation(&self, key: &str) -> Result<Option<Generation>, StoreError> {
        self.check()?;
        self.inner.stored_generation(key).await
    }
}
