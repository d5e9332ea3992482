//! The store's operations as statements, written once over the [`DieselBackend`] contract: each checks out a
//! connection of the store's backend and runs that backend's SQL, counting every statement it sends.

use diesel::sql_types::{BigInt, Text};

use super::DieselStore;
use super::backend::DieselBackend;
use super::pool::with_conn;
use super::rows::{LeaseRow, NewRow, StoredRow, TOMBSTONE};
use crate::error::StoreError;
use crate::record::{Generation, TokenRecord};
use crate::store::{LeaseInfo, TokenStore, op};

impl DieselStore {
    async fn read_row(&self, key: &str) -> Result<Option<StoredRow>, StoreError> {
        use crate::store::schema::paynet_tokens::dsl::{credential_key, paynet_tokens};
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
        use diesel_async::RunQueryDsl;

        Ok(with_conn!(self, |conn| {
            self.count_query();
            paynet_tokens
                .filter(credential_key.eq(key))
                .select(StoredRow::as_select())
                .get_result::<StoredRow>(conn)
                .await
                .optional()
                .map_err(self.query_error(op::LOAD))?
        }))
    }

    pub(super) async fn load_inner(&self, key: String) -> Result<Option<TokenRecord>, StoreError> {
        let Some(row) = self.read_row(&key).await? else {
            return Ok(None);
        };
        let (record, reseal) = self.decode(&key, row);
        if let (Some(record), Some(old_nonce)) = (&record, reseal) {
            match self.reseal(&key, record, &old_nonce).await {
                Ok(true) => tracing::info!(
                    store = %self.describe(),
                    store_key = %key,
                    generation = record.generation.0,
                    "stored token was encrypted with a previous key; encrypted it again with the current one"
                ),
                // A newer token, or the same one re-sealed by another instance, replaced the row meanwhile.
                Ok(false) => {}
                // The token read is still good; the next read tries again.
                Err(error) => tracing::warn!(
                    store = %self.describe(),
                    store_key = %key,
                    error = %crate::error::Chain(&error),
                    "could not encrypt the stored token again with the current key"
                ),
            }
        }
        Ok(record)
    }

    /// Seals a row read under a previous key again under the current one. Only that exact row is replaced (same
    /// generation, same nonce), and its generation is kept: a re-write never competes with a login, and a
    /// concurrent save of a newer token is never overwritten by it.
    async fn reseal(
        &self,
        key: &str,
        record: &TokenRecord,
        old_nonce: &str,
    ) -> Result<bool, StoreError> {
        use diesel_async::RunQueryDsl;
        let mut row = self.encode(key, record)?;
        let Some(nonce) = row.nonce.take() else {
            return Ok(false);
        };
        let written = with_conn!(self, |conn, B| {
            self.count_query();
            diesel::sql_query(B::RESEAL)
                .bind::<Text, _>(&*row.token)
                .bind::<Text, _>(&nonce)
                .bind::<Text, _>(key)
                .bind::<BigInt, _>(row.generation)
                .bind::<Text, _>(old_nonce)
                .execute(conn)
                .await
                // A step of `load`, whose failure is logged rather than returned.
                .map_err(self.query_error(op::LOAD))?
        });
        Ok(written > 0)
    }

    pub(super) async fn save_inner(&self, row: NewRow) -> Result<bool, StoreError> {
        with_conn!(self, |conn, B| B::save(self, conn, &row).await)
    }

    pub(super) async fn lease_inner(
        &self,
        key: String,
        owner: String,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        with_conn!(self, |conn, B| {
            B::try_lease(self, conn, &key, &owner, ttl_ms).await
        })
    }

    pub(super) async fn release_inner(&self, key: String, owner: String) -> Result<(), StoreError> {
        use diesel_async::RunQueryDsl;
        with_conn!(self, |conn, B| {
            self.count_query();
            diesel::sql_query(B::RELEASE)
                .bind::<Text, _>(&key)
                .bind::<Text, _>(&owner)
                .execute(conn)
                .await
                .map_err(self.query_error(op::RELEASE))?;
        });
        Ok(())
    }

    pub(super) async fn generation_inner(
        &self,
        key: String,
    ) -> Result<Option<Generation>, StoreError> {
        use crate::store::schema::paynet_tokens::dsl::{credential_key, generation, paynet_tokens};
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
        use diesel_async::RunQueryDsl;

        let stored: Option<i64> = with_conn!(self, |conn| {
            self.count_query();
            paynet_tokens
                .filter(credential_key.eq(&key))
                .select(generation)
                .get_result::<i64>(conn)
                .await
                .optional()
                .map_err(self.query_error(op::STORED_GENERATION))?
        });
        Ok(stored.map(|g| Generation(u64::try_from(g).unwrap_or(0))))
    }

    pub(super) async fn lease_info_inner(
        &self,
        key: String,
    ) -> Result<Option<LeaseInfo>, StoreError> {
        use diesel::OptionalExtension;
        use diesel_async::RunQueryDsl;

        let row: Option<LeaseRow> = with_conn!(self, |conn, B| {
            self.count_query();
            diesel::sql_query(B::LEASE_INFO)
                .bind::<Text, _>(&key)
                .get_result::<LeaseRow>(conn)
                .await
                .optional()
                .map_err(self.query_error(op::LEASE))?
        });
        Ok(row.map(|row| LeaseInfo::new(row.locked_by, row.locked_at, row.lock_until, row.now_ms)))
    }

    pub(super) async fn clear_inner(&self, key: String) -> Result<(), StoreError> {
        use crate::store::schema::paynet_tokens::dsl::{
            credential_key, expires_at, nonce, paynet_tokens, token,
        };
        use diesel::{ExpressionMethods, QueryDsl};
        use diesel_async::RunQueryDsl;

        // A tombstone rather than a delete: the row keeps its generation, so the next token is numbered after the
        // cleared one (see `TokenStore::clear`). The empty token marks it; `expires_at = 0` makes a reader that does
        // not know the mark see an expired token, which it never uses.
        with_conn!(self, |conn| {
            self.count_query();
            diesel::update(paynet_tokens.filter(credential_key.eq(&key)))
                .set((
                    token.eq(TOMBSTONE),
                    nonce.eq(None::<String>),
                    expires_at.eq(Some(0_i64)),
                ))
                .execute(conn)
                .await
                .map_err(self.query_error(op::CLEAR))?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::record::LoginMeta;
    use crate::store::{StoreOptions, TokenStore};

    /// A row read under a previous key is sealed again only if it is still the row that was read: a newer token
    /// saved meanwhile (a concurrent login) is neither overwritten nor refused, and the generation never moves.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn reseal_keeps_the_generation_and_never_overwrites_a_newer_token() {
        use base64::Engine as _;
        let key = |byte: u8| -> SecretString {
            base64::engine::general_purpose::STANDARD
                .encode([byte; 32])
                .into()
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = |current: u8, previous: Vec<SecretString>| StoreOptions {
            encryption_key: Some(key(current)),
            previous_encryption_keys: previous,
            ..StoreOptions::default()
        };
        let old = DieselStore::connect(&url, options(1, vec![]))
            .await
            .unwrap();
        old.migrate().await.unwrap();
        let new = DieselStore::connect(&url, options(2, vec![key(1)]))
            .await
            .unwrap();
        let record = |generation: u64, token: &str| TokenRecord {
            token: token.into(),
            generation: Generation(generation),
            obtained_at_ms: 1,
            expires_at_ms: None,
            meta: LoginMeta::default(),
            written_by: "test".into(),
        };

        // Read under the previous key; a concurrent login saves generation 6 before the re-seal.
        assert!(old.save("k", &record(5, "old-token")).await.unwrap());
        let row = new.read_row("k").await.unwrap().unwrap();
        let (read, old_nonce) = new.decode("k", row);
        let (read, old_nonce) = (
            read.unwrap(),
            old_nonce.expect("opened under a previous key"),
        );
        assert!(new.save("k", &record(6, "new-token")).await.unwrap());
        assert!(!new.reseal("k", &read, &old_nonce).await.unwrap());
        let stored = new.load("k").await.unwrap().unwrap();
        assert_eq!(
            (stored.generation, stored.token.expose_secret()),
            (Generation(6), "new-token")
        );

        // Without a concurrent save, the re-seal keeps generation 7, and a login numbered 8 is still accepted.
        assert!(old.save("k", &record(7, "seven")).await.unwrap());
        let stored = new.load("k").await.unwrap().unwrap();
        assert_eq!(stored.generation, Generation(7));
        assert_eq!(
            new.stored_generation("k").await.unwrap(),
            Some(Generation(7))
        );
        assert!(
            old.load("k").await.unwrap().is_none(),
            "sealed under the new key now"
        );
        let new_only = DieselStore::connect(&url, options(2, vec![]))
            .await
            .unwrap();
        assert_eq!(
            new_only
                .load("k")
                .await
                .unwrap()
                .unwrap()
                .token
                .expose_secret(),
            "seven"
        );
        assert!(new.save("k", &record(8, "eight")).await.unwrap());
    }
}
