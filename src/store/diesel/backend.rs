//! The contract of a database backend: what `postgres`, `sqlite` and `mysql` each provide, as a trait they
//! implement, so that a new backend is written against a signature and the compiler names what it lacks.
//!
//! The operations (`operations`) are written once over it: `with_conn!` compiles each one per backend, with the
//! backend's type in hand for its statements and for the steps that differ. `DieselStore::connect` opens any
//! backend's pool through [`open`].

use std::future::Future;
use std::time::Duration;

use diesel_async::pooled_connection::PoolError;

use super::pool::{LastError, Pools, build_pool};
use super::rows::NewRow;
use super::{Backend, DieselStore};
use crate::error::StoreError;
use crate::store::StoreOptions;

/// A pool of a backend's connections.
pub(super) type Pool<B> = bb8::Pool<<B as DieselBackend>::Manager>;

/// A database the store runs on: its connection type, its SQL, and the operations whose steps differ from one
/// database to another. Every time a statement reads comes from the database's clock (UTC epoch milliseconds), so
/// that instances with skewed clocks agree on when a lease ends.
pub(super) trait DieselBackend: Sized + 'static {
    /// Which database this is, as [`DieselStore::backend`] reports it.
    const BACKEND: Backend;

    /// The diesel-async connection the statements run on.
    type Connection: Send + 'static;

    /// What makes the pool's connections (a diesel-async `AsyncDieselConnectionManager` of [`Self::Connection`]).
    type Manager: bb8::ManageConnection<Connection = Self::Connection, Error = PoolError>;

    /// Seals one exact row (same generation, same nonce) again under the current key, keeping its generation.
    /// Binds: token, nonce, credential key, generation, old nonce.
    const RESEAL: &'static str;

    /// Ends the lease now if `owner` holds it. Binds: name, owner.
    const RELEASE: &'static str;

    /// The lease row of a name and the database's clock, as a [`LeaseRow`](super::rows::LeaseRow). Binds: name.
    const LEASE_INFO: &'static str;

    /// What makes the connections to `address` (the URL the driver takes, or SQLite's path), each set up with
    /// `session_timeout` as its lock and statement timeouts; [`StoreError::Config`] for TLS parameters that cannot
    /// be used.
    fn manager(address: String, session_timeout: Duration) -> Result<Self::Manager, StoreError>;

    /// Whether `address` names a database that lives in its connection (SQLite's `:memory:`): the pool then holds
    /// that one connection and never closes it.
    fn single_connection(address: &str) -> bool {
        let _ = address;
        false
    }

    /// The store's pool, of this backend.
    fn pools(pool: Pool<Self>) -> Pools;

    /// Stores `row` unless the stored one is as new or newer; whether it was written. Counts every statement.
    fn save(
        store: &DieselStore,
        conn: &mut Self::Connection,
        row: &NewRow,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes the lease of `key` for `owner` for `ttl_ms` (see [`TokenStore::try_lease`](crate::store::TokenStore));
    /// whether it was taken. Counts every statement.
    fn try_lease(
        store: &DieselStore,
        conn: &mut Self::Connection,
        key: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Runs the pending migrations, serialised with other instances' by a lock of this database.
    fn migrate(
        store: &DieselStore,
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The pool of backend `B` for `address`, created empty (see [`build_pool`]).
pub(super) fn open<B: DieselBackend>(
    address: String,
    options: &StoreOptions,
    session_timeout: Duration,
    sink: &LastError,
) -> Result<Pools, StoreError> {
    let single = B::single_connection(&address);
    let manager = B::manager(address, session_timeout)?;
    let size = if single { 1 } else { options.pool_size };
    Ok(B::pools(build_pool(manager, size, options, single, sink)))
}
