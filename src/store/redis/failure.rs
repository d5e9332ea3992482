//! What a failed Redis command means for the caller, as the SQL store's `failure` sorts database errors: a server
//! that cannot be reached, is loading or did not answer is [`StoreError::Unavailable`] (degraded mode), a refused
//! password or a missing ACL permission is [`StoreError::Denied`] (loud, not an outage), anything else (a script
//! error, a wrong key type) is [`StoreError::Query`].

use redis::{ErrorKind, RedisError};

use crate::error::StoreError;

/// Server error codes of a server that is there but cannot serve yet, or no longer: retrying later helps.
const UNAVAILABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "READONLY",
];

/// Server error codes of refused credentials or permissions.
const DENIED_CODES: &[&str] = &["NOAUTH", "WRONGPASS", "NOPERM"];

pub(super) fn sort(store: &str, operation: &'static str, error: RedisError) -> StoreError {
    let store = store.to_owned();
    let code = error.code().unwrap_or_default();
    if error.kind() == ErrorKind::AuthenticationFailed || DENIED_CODES.contains(&code) {
        StoreError::Denied {
            store,
            operation,
            source: Box::new(error),
        }
    } else if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || UNAVAILABLE_CODES.contains(&code)
    {
        StoreError::Unavailable {
            store,
            source: Box::new(error),
        }
    } else {
        StoreError::Query {
            store,
            operation,
            source: Box::new(error),
        }
    }
}
