//! A local stand-in for the Paynet agent gateway, for tests, demos and the `simulate` command.
//!
//! The [`Simulator`] is a small HTTP/1.1 server on loopback that speaks the gateway's JSON-RPC 2.0 dialect
//! closely enough to exercise a client end to end, and that can be told to misbehave the ways a real gateway
//! does (slow logins, outages, lost connections, sessions that end early). It serves plain HTTP, or HTTPS with
//! [`SimulatorBuilder::tls`] and the certificates the [`tls`] module makes (client certificates too).
//!
//! # Endpoints
//!
//! Every call is a `POST` of a JSON-RPC 2.0 request under the root (default [`DEFAULT_ROOT`], `/gw`):
//!
//! | path | methods |
//! |---|---|
//! | `/gw/v2/user` | `login`, `logout`, `getDepositInfo` |
//! | `/gw/v2/service` | `getCategoriesList`, `getProvidersList`, `getProvidersStatus`, `getServicesList`, `getServiceInfo` |
//! | `/gw/v2/card` | `getCardOtp`, `getCardToken`, `performTransactionByCardToken` |
//! | `/gw/v2/transaction` | `performTransaction`, `checkTransaction` |
//!
//! and `GET /gw/v2/getLogo?providerId=..&size=..` answers a tiny PNG without asking for a token.
//!
//! # Answers
//!
//! - `login` with the right `username`, `password` and `terminal_id` (a JSON number) answers
//!   `{"agentId":"17627","terminalId":"4027096","userId":56530,"userLogin":"<username>","token":"<32 alphanumerics>"}`.
//!   `agentId` and `userId` are read from a username of the form `username_<agentId>_<userId>` (the form of the
//!   gateway's test accounts); any other username gets `17627` and `56530`.
//! - Wrong credentials: HTTP 200 with the JSON-RPC error [`LOGIN_FAILED_CODE`] (`-1001`,
//!   `"Invalid login or password"`). Missing or mistyped login parameters: `-32602` (`"Invalid params"`).
//! - Every other method needs a token the simulator issued and still honours, in `params.token` or, failing
//!   that, in a top-level `token` field. Otherwise: HTTP 200 with [`UNAUTHORIZED_CODE`]
//!   (`{"code":-9999,"message":"unauthorized"}`).
//! - A method the endpoint does not serve: `-32601`. A body that is not JSON: `-32700`. A JSON body that is not a
//!   JSON-RPC 2.0 request object: `-32600`. An unknown path: HTTP 404. Another HTTP method than `POST`: HTTP 405.
//!   A body over [`MAX_BODY_BYTES`]: HTTP 413.
//! - Payment calls (`performTransaction`, `performTransactionByCardToken`) are counted per `params.transactionId`
//!   (or per JSON-RPC `id` when it is absent) in [`SimStats::executions`]; `checkTransaction` tells whether a
//!   `transactionId` was executed, which is how a client reconciles after a lost connection.
//!
//! # Faults
//!
//! Set on the [`SimulatorBuilder`] before start, or on the running [`Simulator`] with its `set_…` methods:
//! one session per terminal, token lifetimes, login latency, a [`LoginFailure`] (503, a hang, an HTML 502, cut-off
//! JSON, wrong credentials, a dropped connection, a result without a token, a 1 MiB token, a refusal that echoes
//! the password with terminal escapes), dropped connections after a payment, every token rejected, answers
//! dribbled one byte at a time.
//!
//! Requests are logged with `tracing` at DEBUG (HTTP method, path, JSON-RPC method, outcome). Passwords are never
//! logged, and tokens only as their [`fingerprint`].
//!
//! This crate stands alone: it does not depend on `paynet-auth`, so a test of any gateway client can use it
//! (as a dev-dependency, the way `wiremock` is used).
#![warn(missing_docs)]
#![deny(unreachable_pub, unsafe_code)]

mod admin;
mod body;
mod builder;
mod catalog;
mod gateway;
mod handle;
mod login;
mod mode;
mod reply;
mod server;
mod state;
mod stats;
pub mod tls;
mod transaction;

pub use builder::SimulatorBuilder;
pub use handle::Simulator;
pub use login::{LoginFailure, ParseLoginFailureError};
pub use stats::SimStats;

/// The JSON-RPC error code of a missing, unknown or expired token (message `"unauthorized"`).
pub const UNAUTHORIZED_CODE: i64 = -9999;

/// The JSON-RPC error code of a login with wrong credentials (message `"Invalid login or password"`).
pub const LOGIN_FAILED_CODE: i64 = -1001;

/// The username the simulator accepts unless told otherwise (the test account of Paynet's documented login example).
pub const DEFAULT_USERNAME: &str = "username_17627_56530";

/// The password the simulator accepts unless told otherwise.
pub const DEFAULT_PASSWORD: &str = "password_17627_56530";

/// The terminal the simulator accepts unless told otherwise.
pub const DEFAULT_TERMINAL_ID: u64 = 4_027_096;

/// The path under which the gateway's endpoints live unless told otherwise.
pub const DEFAULT_ROOT: &str = "/gw";

/// The largest request body the simulator reads; a larger one is answered with HTTP 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A short, non-reversible fingerprint of a token (the first 8 hex digits of its SHA-256), the form in which the
/// simulator logs tokens. `paynet-auth` logs its tokens the same way, so one token can be followed from the
/// client's log to the simulator's.
///
/// ```
/// assert_eq!(paynet_sim::fingerprint("abc"), "ba7816bf");
/// ```
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}
