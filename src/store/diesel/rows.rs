//! Row mapping: a [`TokenRecord`] becomes the columns of `paynet_tokens` (sealed with the store's keys, if it has
//! any) and back, with every reason a stored row is not used; and the row of a lease status query.

use diesel::sql_types::{BigInt, Text};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::DieselStore;
use crate::error::StoreError;
use crate::record::{Generation, LoginMeta, TokenRecord};
use crate::store::cipher::{open_column, seal_column};
use crate::store::{TokenStore, op};

pub(super) use crate::store::cipher::TOMBSTONE;

/// A token as written to `paynet_tokens`.
pub(super) struct NewRow {
    pub(super) credential_key: String,
    pub(super) token: Zeroizing<String>,
    pub(super) nonce: Option<String>,
    pub(super) generation: i64,
    pub(super) obtained_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) agent_id: Option<String>,
    pub(super) terminal_id: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) user_login: Option<String>,
    pub(super) written_by: String,
}

/// A token as read from `paynet_tokens`.
#[derive(diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = crate::store::schema::paynet_tokens)]
pub(super) struct StoredRow {
    token: String,
    nonce: Option<String>,
    generation: i64,
    obtained_at: i64,
    expires_at: Option<i64>,
    agent_id: Option<String>,
    terminal_id: Option<String>,
    user_id: Option<String>,
    user_login: Option<String>,
    written_by: String,
}

/// Binds a [`NewRow`] to the `?`/`$n` placeholders of `$sql`, in the order token, nonce, generation, obtained_at,
/// expires_at, agent_id, terminal_id, user_id, user_login, written_by, credential_key.
macro_rules! bind_row {
    ($sql:expr, $row:expr) => {
        diesel::sql_query($sql)
            .bind::<diesel::sql_types::Text, _>(&*$row.token)
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>($row.nonce.as_deref())
            .bind::<diesel::sql_types::BigInt, _>($row.generation)
            .bind::<diesel::sql_types::BigInt, _>($row.obtained_at)
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>, _>($row.expires_at)
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(
                $row.agent_id.as_deref(),
            )
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(
                $row.terminal_id.as_deref(),
            )
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(
                $row.user_id.as_deref(),
            )
            .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(
                $row.user_login.as_deref(),
            )
            .bind::<diesel::sql_types::Text, _>(&$row.written_by)
            .bind::<diesel::sql_types::Text, _>(&$row.credential_key)
    };
}
pub(super) use bind_row;

/// A row of the lease status query (`LEASE_INFO` of each backend).
#[derive(diesel::QueryableByName)]
pub(super) struct LeaseRow {
    #[diesel(sql_type = Text)]
    pub(super) locked_by: String,
    #[diesel(sql_type = BigInt)]
    pub(super) locked_at: i64,
    #[diesel(sql_type = BigInt)]
    pub(super) lock_until: i64,
    #[diesel(sql_type = BigInt)]
    pub(super) now_ms: i64,
}

impl DieselStore {
    /// Turns a row into a record, or `None` (with a warning) for a row that cannot be used. The second value is
    /// the row's nonce when it opened only under a previous key, so that it is sealed again under the current one.
    pub(super) fn decode(
        &self,
        key: &str,
        row: StoredRow,
    ) -> (Option<TokenRecord>, Option<String>) {
        if row.token == TOMBSTONE {
            return (None, None);
        }
        let store = self.describe();
        // Why a row is not used. Never the token, the nonce or a key.
        let unusable = |reason: &str| {
            tracing::warn!(
                store = %store,
                store_key = %key,
                generation = row.generation,
                reason,
                "stored token is not used; treating it as absent, the next refresh replaces it"
            );
        };
        let (token, reseal) = match self.open_token(key, row.token, row.nonce.as_deref()) {
            Ok(opened) => opened,
            Err(reason) => {
                unusable(reason);
                return (None, None);
            }
        };
        let Ok(generation) = u64::try_from(row.generation) else {
            tracing::warn!(
                store = %store,
                store_key = %key,
                generation = row.generation,
                "stored token has a negative generation; treating it as absent"
            );
            return (None, None);
        };
        let record = TokenRecord {
            token,
            generation: Generation(generation),
            obtained_at_ms: row.obtained_at,
            expires_at_ms: row.expires_at,
            meta: LoginMeta {
                agent_id: row.agent_id,
                terminal_id: row.terminal_id,
                user_id: row.user_id,
                user_login: row.user_login,
            },
            written_by: row.written_by,
        };
        (Some(record), reseal)
    }

    /// The token of a row, opened with the key ring when the row is sealed, and the row's nonce when it opened only
    /// under a previous key; or why the row cannot be used (never the token, the nonce or a key).
    fn open_token(
        &self,
        key: &str,
        token: String,
        nonce: Option<&str>,
    ) -> Result<(SecretString, Option<String>), &'static str> {
        open_column(self.inner.cipher.as_ref(), key, token, nonce)
    }

    pub(super) fn encode(&self, key: &str, record: &TokenRecord) -> Result<NewRow, StoreError> {
        let generation = i64::try_from(record.generation.0).map_err(|_| StoreError::Query {
            store: self.describe(),
            operation: op::SAVE,
            source: format!("generation {} does not fit a BIGINT", record.generation).into(),
        })?;
        let (token, nonce) = seal_column(
            self.inner.cipher.as_ref(),
            key,
            record.token.expose_secret(),
        )
        .map_err(|_| StoreError::Query {
            store: self.describe(),
            operation: op::SAVE,
            source: "token encryption failed".into(),
        })?;
        Ok(NewRow {
            credential_key: key.to_owned(),
            token: Zeroizing::new(token),
            nonce,
            generation,
            obtained_at: record.obtained_at_ms,
            expires_at: record.expires_at_ms,
            agent_id: record.meta.agent_id.clone(),
            terminal_id: record.meta.terminal_id.clone(),
            user_id: record.meta.user_id.clone(),
            user_login: record.meta.user_login.clone(),
            written_by: record.written_by.clone(),
        })
    }
}
