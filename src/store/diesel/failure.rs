//! What a failed statement or connection means for the caller: [`Kind`] sorts diesel's errors into a conflict
//! (retry), an unavailable database (degraded mode) or a query that will not succeed, and the methods here turn
//! them into the matching [`StoreError`], naming the store and the operation.

use super::DieselStore;
use crate::error::{BoxError, StoreError};
use crate::store::TokenStore;

/// What a failed statement means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A concurrent statement won: retry.
    Conflict,
    /// The database or the connection to it is gone, or the statement timed out: degraded mode.
    Unavailable,
    /// Retrying will not help: schema or bug.
    Query,
}

/// Sorts a diesel error by what the caller should do.
///
/// diesel gives PostgreSQL's 40001 its own kind, but neither diesel nor diesel-async keep the SQLSTATE of
/// 40P01, MySQL's error number or SQLite's result code: those errors arrive as `Unknown` with the server's
/// message, so they are recognised by the message the server sends (the English one; PostgreSQL's
/// `lc_messages` and MariaDB's `lc_messages` default to it, and a translated message falls back to `Query`,
/// the loud side).
fn classify(error: &(dyn std::error::Error + 'static)) -> Kind {
    use diesel::result::{DatabaseErrorKind, Error};
    match error.downcast_ref::<Error>() {
        Some(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => Kind::Conflict,
        // diesel-async's PostgreSQL backend reports a connection that broke mid-statement this way.
        Some(Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)) => Kind::Unavailable,
        Some(Error::DatabaseError(_, info)) => classify_message(info.message()),
        Some(Error::BrokenTransactionManager) => Kind::Unavailable,
        _ => Kind::Query,
    }
}

/// The part of [`classify`] that reads the server's message.
fn classify_message(message: &str) -> Kind {
    let message = message.to_ascii_lowercase();
    const CONFLICT: &[&str] = &[
        // PostgreSQL 40P01; 40001 when it comes without its code.
        "deadlock detected",
        "could not serialize access",
        // MySQL/MariaDB 1213 and 1205.
        "deadlock found when trying to get lock",
        "lock wait timeout exceeded",
        // MariaDB 1020 (innodb_snapshot_isolation): a row changed under a REPEATABLE READ snapshot.
        "record has changed since last read",
        // SQLite BUSY and LOCKED (after busy_timeout ran out).
        "database is locked",
        "database table is locked",
        "database schema is locked",
    ];
    const UNAVAILABLE: &[&str] = &[
        // PostgreSQL 57014 (statement_timeout) and 55P03 (lock_timeout), 57P01 (server shutting down).
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "terminating connection",
        // MySQL 3024, MariaDB 1969: max_execution_time / max_statement_time.
        "maximum statement execution time exceeded",
        "max_statement_time exceeded",
        // mysql_async's I/O and driver errors (connection lost, server gone away).
        "input/output error",
        "driver error",
        "connection to the server is closed",
        "connection reset",
        "broken pipe",
        "server has gone away",
        "lost connection",
        "connection closed",
        "connection refused",
        // SQLite: the file cannot be opened or written (disk full, permissions, a vanished directory).
        "unable to open database file",
        "disk i/o error",
        "database or disk is full",
    ];
    if CONFLICT.iter().any(|needle| message.contains(needle)) {
        Kind::Conflict
    } else if UNAVAILABLE.iter().any(|needle| message.contains(needle)) {
        Kind::Unavailable
    } else {
        Kind::Query
    }
}

impl DieselStore {
    pub(super) fn unavailable(&self, source: BoxError) -> StoreError {
        StoreError::Unavailable {
            store: self.describe(),
            source,
        }
    }

    pub(super) fn query_error(
        &self,
        operation: &'static str,
    ) -> impl Fn(diesel::result::Error) -> StoreError + '_ {
        move |source| {
            let store = self.describe();
            let source: BoxError = Box::new(source);
            match classify(&*source) {
                Kind::Conflict => StoreError::Conflict {
                    store,
                    operation,
                    source,
                },
                Kind::Unavailable => StoreError::Unavailable { store, source },
                Kind::Query => StoreError::Query {
                    store,
                    operation,
                    source,
                },
            }
        }
    }

    pub(super) fn migration_error(&self, source: BoxError) -> StoreError {
        StoreError::Migration {
            store: self.describe(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_messages() {
        for conflict in [
            "deadlock detected",
            "could not serialize access due to read/write dependencies among transactions",
            "Deadlock found when trying to get lock; try restarting transaction",
            "Lock wait timeout exceeded; try restarting transaction",
            "Record has changed since last read in table 'paynet_lease'",
            "database is locked",
            "database table is locked: paynet_lease",
        ] {
            assert_eq!(classify_message(conflict), Kind::Conflict, "{conflict}");
        }
        for unavailable in [
            "canceling statement due to statement timeout",
            "terminating connection due to administrator command",
            "Query execution was interrupted, maximum statement execution time exceeded",
            "Query execution was interrupted (max_statement_time exceeded)",
            "Input/output error: Connection reset by peer (os error 104)",
            "Driver error: `Connection to the server is closed.'",
        ] {
            assert_eq!(
                classify_message(unavailable),
                Kind::Unavailable,
                "{unavailable}"
            );
        }
        for query in [
            "relation \"paynet_lease\" does not exist",
            "Table 'test.paynet_lease' doesn't exist",
            "no such table: paynet_lease",
        ] {
            assert_eq!(classify_message(query), Kind::Query, "{query}");
        }
    }
}
