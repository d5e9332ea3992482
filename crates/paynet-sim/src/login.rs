//! The `login` method: the account it accepts, the session result it answers, and the ways it can fail.

use std::fmt;
use std::str::FromStr;

use http::StatusCode;
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use super::gateway::{Ctx, Trace};
use super::reply::{Answer, JSON, RpcError, envelope};
use crate::fingerprint;

/// A way to make `login` fail, set with [`SimulatorBuilder::login_failure`](super::SimulatorBuilder::login_failure)
/// or [`Simulator::set_login_failure`](super::Simulator::set_login_failure).
///
/// The failure is chosen when a login request arrives, after which the configured login latency still applies
/// (except to [`Hang`](Self::Hang), which never answers anyway). Only `login` fails; other methods keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoginFailure {
    /// HTTP 503 with a plain-text body, as a load balancer answers when the gateway behind it is down.
    ServiceUnavailable,
    /// No answer at all, until the simulator shuts down and closes the connection. A client needs its own
    /// timeout to get out.
    Hang,
    /// HTTP 502 with an nginx HTML error page instead of JSON.
    Html502,
    /// HTTP 200 with a well-framed but cut-off JSON body, cut just where the token would start. No token is
    /// issued.
    TruncatedJson,
    /// The JSON-RPC error of wrong credentials ([`LOGIN_FAILED_CODE`](super::LOGIN_FAILED_CODE)), even for the
    /// right ones.
    WrongCredentials,
    /// The connection is closed without an answer.
    DropConnection,
    /// HTTP 200 with a complete login result that lacks the `token` field. No token is issued.
    ResultWithoutToken,
    /// HTTP 200 with a complete, well-formed login result whose `token` is this many alphanumerics (such as
    /// 1 MiB, [`OVERSIZED_TOKEN_BYTES`](Self::OVERSIZED_TOKEN_BYTES)): a client must bound what it reads. The
    /// token opens no session and is not counted in [`SimStats::logins`](super::SimStats::logins).
    OversizedToken(usize),
    /// The JSON-RPC error of wrong credentials ([`LOGIN_FAILED_CODE`](super::LOGIN_FAILED_CODE)), even for the
    /// right ones, from a gateway that cannot be trusted with a terminal: its `message` echoes the submitted
    /// username and password, carries terminal escapes (`ESC[31m`, BEL, carriage return) and is padded to about
    /// 200 KB ([`HOSTILE_MESSAGE_BYTES`](Self::HOSTILE_MESSAGE_BYTES)). A client must not print it raw.
    HostileRefusal,
}

impl LoginFailure {
    /// The token length of [`OversizedToken`](Self::OversizedToken) when none is given by name
    /// (`oversized-token`): 1 MiB.
    pub const OVERSIZED_TOKEN_BYTES: usize = 1024 * 1024;

    /// The length in bytes of the `message` of [`HostileRefusal`](Self::HostileRefusal) (before JSON escaping).
    pub const HOSTILE_MESSAGE_BYTES: usize = 200 * 1024;

    /// The names [`FromStr`](std::str::FromStr) reads and [`Display`](fmt::Display) writes, one per variant,
    /// in declaration order: the variant's name in kebab-case. `oversized-token` may carry its length in bytes,
    /// as in `oversized-token:2000000`; without it the token is [`OVERSIZED_TOKEN_BYTES`](Self::OVERSIZED_TOKEN_BYTES)
    /// long.
    pub const NAMES: [&'static str; 9] = [
        "service-unavailable",
        "hang",
        "html502",
        "truncated-json",
        "wrong-credentials",
        "drop-connection",
        "result-without-token",
        "oversized-token",
        "hostile-refusal",
    ];
}

/// `service-unavailable`, `oversized-token:2000000` …: see [`LoginFailure::NAMES`].
impl fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::ServiceUnavailable => "service-unavailable",
            Self::Hang => "hang",
            Self::Html502 => "html502",
            Self::TruncatedJson => "truncated-json",
            Self::WrongCredentials => "wrong-credentials",
            Self::DropConnection => "drop-connection",
            Self::ResultWithoutToken => "result-without-token",
            Self::OversizedToken(len) if *len != Self::OVERSIZED_TOKEN_BYTES => {
                return write!(f, "oversized-token:{len}");
            }
            Self::OversizedToken(_) => "oversized-token",
            Self::HostileRefusal => "hostile-refusal",
        };
        f.write_str(name)
    }
}

/// Reads the names [`Display`](fmt::Display) writes, listed in [`LoginFailure::NAMES`].
///
/// ```
/// use paynet_sim::LoginFailure;
///
/// assert_eq!("html502".parse(), Ok(LoginFailure::Html502));
/// assert_eq!("oversized-token".parse(), Ok(LoginFailure::OversizedToken(1024 * 1024)));
/// assert_eq!("oversized-token:5000".parse(), Ok(LoginFailure::OversizedToken(5000)));
/// assert!("teapot".parse::<LoginFailure>().unwrap_err().to_string().contains("hostile-refusal"));
/// ```
impl FromStr for LoginFailure {
    type Err = ParseLoginFailureError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if let Some(len) = name.strip_prefix("oversized-token:") {
            return match len.parse() {
                Ok(len) => Ok(Self::OversizedToken(len)),
                Err(_) => Err(ParseLoginFailureError {
                    message: format!(
                        "{name:?}: the length after `oversized-token:` must be a number of bytes"
                    ),
                }),
            };
        }
        Ok(match name {
            "service-unavailable" => Self::ServiceUnavailable,
            "hang" => Self::Hang,
            "html502" => Self::Html502,
            "truncated-json" => Self::TruncatedJson,
            "wrong-credentials" => Self::WrongCredentials,
            "drop-connection" => Self::DropConnection,
            "result-without-token" => Self::ResultWithoutToken,
            "oversized-token" => Self::OversizedToken(Self::OVERSIZED_TOKEN_BYTES),
            "hostile-refusal" => Self::HostileRefusal,
            _ => {
                return Err(ParseLoginFailureError {
                    message: format!(
                        "unknown login failure {name:?} (one of: {})",
                        Self::NAMES.join(", ")
                    ),
                });
            }
        })
    }
}

/// A name that is not one of [`LoginFailure::NAMES`]; its `Display` says which names are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLoginFailureError {
    message: String,
}

impl fmt::Display for ParseLoginFailureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseLoginFailureError {}

/// The agent and user of the gateway's published test account.
const DEFAULT_AGENT_ID: &str = "17627";
const DEFAULT_USER_ID: u64 = 56530;

/// nginx's page for an upstream that answered garbage or nothing, as reverse proxies in front of gateways send.
const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The one account the simulator accepts.
#[derive(Debug)]
pub(crate) struct Account {
    username: String,
    password: SecretString,
    terminal_id: u64,
    agent_id: String,
    user_id: u64,
}

impl Account {
    pub(crate) fn new(username: String, password: SecretString, terminal_id: u64) -> Self {
        // The gateway's test accounts are named after their agent and user, as in `username_17627_56530`.
        let (agent_id, user_id) = username
            .strip_prefix("username_")
            .and_then(|rest| rest.split_once('_'))
            .filter(|(agent, _)| !agent.is_empty() && agent.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|(agent, user)| Some((agent.to_owned(), user.parse().ok()?)))
            .unwrap_or_else(|| (DEFAULT_AGENT_ID.to_owned(), DEFAULT_USER_ID));
        Self {
            username,
            password,
            terminal_id,
            agent_id,
            user_id,
        }
    }

    pub(crate) fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub(crate) fn terminal_id(&self) -> u64 {
        self.terminal_id
    }

    fn accepts(&self, given: &LoginParams<'_>) -> bool {
        given.username == self.username
            && given.password == self.password.expose_secret()
            && given.terminal_id == self.terminal_id
    }

    fn result<'a>(&'a self, token: Option<&'a str>) -> LoginResult<'a> {
        LoginResult {
            agent_id: &self.agent_id,
            terminal_id: self.terminal_id.to_string(),
            user_id: self.user_id,
            user_login: &self.username,
            token,
        }
    }
}

/// The login result, with its members in the order of the gateway's published example.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginResult<'a> {
    agent_id: &'a str,
    terminal_id: String,
    user_id: u64,
    user_login: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

struct LoginParams<'a> {
    username: &'a str,
    password: &'a str,
    terminal_id: u64,
}

impl<'a> LoginParams<'a> {
    fn parse(params: Option<&'a Value>) -> Option<Self> {
        let params = params?.as_object()?;
        Some(Self {
            username: params.get("username")?.as_str()?,
            password: params.get("password")?.as_str()?,
            // The gateway takes the terminal as a JSON number; a string is a client bug worth surfacing.
            terminal_id: params.get("terminal_id")?.as_u64()?,
        })
    }
}

/// The refusal message of [`LoginFailure::HostileRefusal`]: the submitted secrets, terminal control characters,
/// and padding up to [`LoginFailure::HOSTILE_MESSAGE_BYTES`].
fn hostile_message(given: &LoginParams<'_>) -> String {
    let mut message = format!(
        "\u{1b}[31mInvalid login or password\u{7}\r for username {} with password {}\u{1b}[0m ",
        given.username, given.password
    );
    let padding = LoginFailure::HOSTILE_MESSAGE_BYTES.saturating_sub(message.len());
    message.extend(std::iter::repeat_n('x', padding));
    message
}

pub(crate) async fn login(
    ctx: &Ctx,
    id: &Value,
    params: Option<&Value>,
    trace: &mut Trace,
) -> Answer {
    let _in_flight = ctx.state.login_started();
    let switches = ctx.state.switches();
    let failure = switches.login_failure;

    if failure == Some(LoginFailure::Hang) {
        trace.outcome = "login hung until shutdown";
        tracing::debug!("login hangs on purpose");
        ctx.stopped().await;
        return Answer::Drop;
    }
    if !switches.login_latency.is_zero() {
        tokio::time::sleep(switches.login_latency).await;
    }
    match failure {
        Some(LoginFailure::ServiceUnavailable) => {
            trace.outcome = "login failed on purpose: 503";
            return Answer::status(StatusCode::SERVICE_UNAVAILABLE);
        }
        Some(LoginFailure::Html502) => {
            trace.outcome = "login failed on purpose: 502 html";
            return Answer::raw(StatusCode::BAD_GATEWAY, "text/html", NGINX_502);
        }
        Some(LoginFailure::DropConnection) => {
            trace.outcome = "login failed on purpose: connection dropped";
            return Answer::Drop;
        }
        _ => {}
    }

    let Some(given) = LoginParams::parse(params) else {
        trace.outcome = "login with invalid params";
        return Answer::error(id, RpcError::INVALID_PARAMS);
    };
    let account = ctx.state.account();
    if failure == Some(LoginFailure::HostileRefusal) {
        trace.outcome = "login failed on purpose: hostile refusal";
        return Answer::error_message(id, RpcError::LOGIN_FAILED.code, &hostile_message(&given));
    }
    if failure == Some(LoginFailure::WrongCredentials) || !account.accepts(&given) {
        trace.outcome = "login with wrong credentials";
        return Answer::error(id, RpcError::LOGIN_FAILED);
    }
    match failure {
        Some(LoginFailure::TruncatedJson) => {
            trace.outcome = "login failed on purpose: truncated json";
            let mut body = envelope(id, "result", &account.result(None));
            // Cut off the closing braces and stop where the token's value would begin.
            body.truncate(body.len() - 2);
            body.push_str(r#","token":""#);
            Answer::raw(StatusCode::OK, JSON, body)
        }
        Some(LoginFailure::ResultWithoutToken) => {
            trace.outcome = "login failed on purpose: result without token";
            Answer::result(id, &account.result(None))
        }
        Some(LoginFailure::OversizedToken(len)) => {
            trace.outcome = "login failed on purpose: oversized token";
            // From the thread's generator rather than the seeded one, so a seeded simulator's usable tokens do
            // not depend on whether this mode was tried.
            let token: String = rand::rng()
                .sample_iter(Alphanumeric)
                .take(len)
                .map(char::from)
                .collect();
            Answer::result(id, &account.result(Some(&token)))
        }
        _ => {
            let token = ctx.state.issue_token(account.terminal_id);
            trace.token = Some(fingerprint(&token));
            trace.outcome = "login ok";
            Answer::result(id, &account.result(Some(&token)))
        }
    }
}
