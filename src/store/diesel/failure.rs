//! What a failed statement or connection means for the caller: [`Kind`] sorts diesel's errors into a conflict
//! (retry), a lock wait or statement that ran out of time, an unavailable database (degraded mode), a refusal of
//! the store's credentials or permissions, a missing table, or a query that will not succeed, and the methods here
//! turn them into the matching [`StoreError`], naming the store and the operation.

use std::fmt;
use std::time::Duration;

use super::DieselStore;
use crate::error::{BoxError, StoreError};
use crate::store::{TokenStore, op};

/// What a failed statement means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A concurrent statement won: retry.
    Conflict,
    /// A lock wait or the statement ran past the store's operation timeout (the session timeouts set on every
    /// connection): for the lease, "not acquired"; for anything else, the store is not answering in time.
    TimedOut,
    /// The database or the connection to it is gone: degraded mode.
    Unavailable,
    /// The database refused the store's credentials or permissions: loud, not an outage.
    Denied,
    /// A table of the store is missing: loud, and repaired by the migrations.
    MissingTable,
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
// A table more than a function: each line is one server's message for one kind, kept together so that a new
// message is added beside its kin.
pub(super) fn classify_message(message: &str) -> Kind {
    let message = message.to_ascii_lowercase();
    const CONFLICT: &[&str] = &[
        // PostgreSQL 40P01; 40001 when it comes without its code.
        "deadlock detected",
        "could not serialize access",
        // MySQL/MariaDB 1213.
        "deadlock found when trying to get lock",
        // MariaDB 1020 (innodb_snapshot_isolation): a row changed under a REPEATABLE READ snapshot.
        "record has changed since last read",
    ];
    const TIMED_OUT: &[&str] = &[
        // PostgreSQL 55P03 (lock_timeout) and 57014 (statement_timeout).
        "canceling statement due to lock timeout",
        "canceling statement due to statement timeout",
        "could not obtain lock",
        // MySQL/MariaDB 1205 (innodb_lock_wait_timeout).
        "lock wait timeout exceeded",
        // MySQL 3024 (max_execution_time), MariaDB 1969 (max_statement_time).
        "maximum statement execution time exceeded",
        "max_statement_time exceeded",
        // SQLite BUSY and LOCKED, once busy_timeout ran out.
        "database is locked",
        "database table is locked",
        "database schema is locked",
    ];
    const DENIED: &[&str] = &[
        // PostgreSQL 28P01, 28000 (no such role, no pg_hba.conf entry) and 42501.
        "password authentication failed",
        "no pg_hba.conf entry",
        "pg_hba.conf rejects connection",
        "permission denied",
        "must be owner of",
        // MySQL/MariaDB 1045, 1044 (access denied) and 1142, 1143 (command denied).
        "access denied for user",
        "command denied to user",
    ];
    const MISSING_TABLE: &[&str] = &[
        // SQLite.
        "no such table",
        // MySQL/MariaDB 1146.
        "doesn't exist",
    ];
    const UNAVAILABLE: &[&str] = &[
        // PostgreSQL 57P01 (server shutting down).
        "terminating connection",
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
    let has = |needles: &[&str]| needles.iter().any(|needle| message.contains(needle));
    // PostgreSQL 42P01: `relation "paynet_tokens" does not exist`; 28000: `role "x" does not exist`.
    let pg_missing_relation = message.contains("relation") && message.contains("does not exist");
    let pg_missing_role = message.contains("role") && message.contains("does not exist");
    if has(CONFLICT) {
        Kind::Conflict
    } else if has(TIMED_OUT) {
        Kind::TimedOut
    } else if pg_missing_relation || has(MISSING_TABLE) {
        Kind::MissingTable
    } else if pg_missing_role || has(DENIED) {
        Kind::Denied
    } else if has(UNAVAILABLE) {
        Kind::Unavailable
    } else {
        Kind::Query
    }
}

/// A lock wait or a statement that ran out of the store's operation timeout, in the words of what happened; the
/// database's own message is its source.
#[derive(Debug)]
pub(super) struct TimedOut {
    lease: bool,
    after: Duration,
    /// What the database said, if it answered at all.
    source: Option<BoxError>,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lease {
            write!(
                f,
                "the lease row is locked by another session: not acquired (gave up waiting after {:?})",
                self.after
            )
        } else {
            write!(
                f,
                "timed out after {:?} (a lock held by another session, or a database too slow to answer)",
                self.after
            )
        }
    }
}

impl std::error::Error for TimedOut {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl DieselStore {
    pub(super) fn unavailable(&self, source: BoxError) -> StoreError {
        StoreError::Unavailable {
            store: self.describe(),
            source,
        }
    }

    /// A connection that could not be had: [`StoreError::Denied`] when the database refused the store's user,
    /// else [`StoreError::Unavailable`].
    pub(super) fn connection_error(&self, source: BoxError) -> StoreError {
        if classify_message(&source.to_string()) == Kind::Denied {
            StoreError::Denied {
                store: self.describe(),
                operation: "connect",
                source,
            }
        } else {
            self.unavailable(source)
        }
    }

    /// The store error of a statement of `operation` that failed with `source`. A lock wait or statement that ran
    /// out of time is a [`StoreError::Conflict`] for the lease (not acquired: wait for a holder) and
    /// [`StoreError::Unavailable`] for anything else.
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
                Kind::TimedOut => {
                    self.timed_out(operation, self.inner.session_timeout, Some(source))
                }
                Kind::Unavailable => StoreError::Unavailable { store, source },
                Kind::Denied => StoreError::Denied {
                    store,
                    operation,
                    source,
                },
                Kind::MissingTable => StoreError::MissingTable {
                    store,
                    operation,
                    source,
                },
                Kind::Query => StoreError::Query {
                    store,
                    operation,
                    source,
                },
            }
        }
    }

    /// An operation that ran past its deadline without an answer from the database.
    pub(super) fn deadline_passed(&self, operation: &'static str, after: Duration) -> StoreError {
        // A recent connection failure (refused, a failed handshake, access denied) is why no connection came:
        // that is what the caller reads, as when the connection wait itself runs out.
        if self.recent_connect_error().is_some() {
            return self.connection_error(self.timeout_cause(after));
        }
        self.timed_out(operation, after, None)
    }

    /// A lock wait or an operation that ran out of time: not acquired for the lease, else not answering in time.
    fn timed_out(
        &self,
        operation: &'static str,
        after: Duration,
        source: Option<BoxError>,
    ) -> StoreError {
        let lease = operation == op::TRY_LEASE;
        let source: BoxError = Box::new(TimedOut {
            lease,
            after,
            source,
        });
        if lease {
            StoreError::Conflict {
                store: self.describe(),
                operation,
                source,
            }
        } else {
            self.unavailable(source)
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
        let cases: &[(Kind, &[&str])] = &[
            (
                Kind::Conflict,
                &[
                    "deadlock detected",
                    "could not serialize access due to read/write dependencies among transactions",
                    "Deadlock found when trying to get lock; try restarting transaction",
                    "Record has changed since last read in table 'paynet_lease'",
                ],
            ),
            (
                Kind::TimedOut,
                &[
                    "canceling statement due to lock timeout",
                    "canceling statement due to statement timeout",
                    "Lock wait timeout exceeded; try restarting transaction",
                    "Query execution was interrupted, maximum statement execution time exceeded",
                    "Query execution was interrupted (max_statement_time exceeded)",
                    "database is locked",
                    "database table is locked: paynet_lease",
                ],
            ),
            (
                Kind::Unavailable,
                &[
                    "terminating connection due to administrator command",
                    "Input/output error: Connection reset by peer (os error 104)",
                    "Driver error: `Connection to the server is closed.'",
                ],
            ),
            (
                Kind::Denied,
                &[
                    "password authentication failed for user \"paynet\"",
                    "role \"nobody\" does not exist",
                    "permission denied for table paynet_lease",
                    "Access denied for user 'paynet'@'localhost' (using password: YES)",
                    "Access denied for user 'paynet'@'%' to database 'test'",
                    "SELECT command denied to user 'paynet'@'localhost' for table `test`.`paynet_tokens`",
                ],
            ),
            (
                Kind::MissingTable,
                &[
                    "relation \"paynet_lease\" does not exist",
                    "Table 'test.paynet_lease' doesn't exist",
                    "no such table: paynet_lease",
                ],
            ),
            (
                Kind::Query,
                &["null value in column \"token\" violates not-null constraint"],
            ),
        ];
        for (kind, messages) in cases {
            for message in *messages {
                assert_eq!(classify_message(message), *kind, "{message}");
            }
        }
    }
}
