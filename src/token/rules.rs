//! The rules a manager's timing settings must follow, alone and together, each written once. Two readers report
//! them: [`TokenManagerBuilder::build`](crate::TokenManagerBuilder::build) under its method names (`token_ttl`),
//! and the configuration's checks under the keys of the file (`paynet.token_ttl`, `credentials[2].token_ttl`). A
//! rule therefore names its settings in the abstract ([`Setting`]), and a [`Breach`] is turned into words by a
//! naming the reader supplies.

use std::time::Duration;

use crate::config::MAX_SPAN;

/// A setting a rule speaks of, whatever its name where it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    TokenTtl,
    ExpirySkew,
    RefreshAhead,
    LoginTimeout,
    RequestTimeout,
    LeaseTtl,
    PollInterval,
    BackoffInitial,
    BackoffMax,
    /// The bound of one store operation (its operation timeout, or the connect timeout it defaults to).
    StoreOperationTimeout,
    StoreConnectTimeout,
}

impl Setting {
    /// The name the builder's method and the file's key share. The store's bounds sit in `StoreOptions` in code and
    /// under `store` in the file, so each reporter says where (`is_store`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Setting::TokenTtl => "token_ttl",
            Setting::ExpirySkew => "expiry_skew",
            Setting::RefreshAhead => "refresh_ahead",
            Setting::LoginTimeout => "login_timeout",
            Setting::RequestTimeout => "request_timeout",
            Setting::LeaseTtl => "lease_ttl",
            Setting::PollInterval => "poll_interval",
            Setting::BackoffInitial => "backoff_initial",
            Setting::BackoffMax => "backoff_max",
            Setting::StoreOperationTimeout => "operation_timeout",
            Setting::StoreConnectTimeout => "connect_timeout",
        }
    }

    /// Whether the setting belongs to the store's options.
    pub(crate) fn is_store(self) -> bool {
        matches!(
            self,
            Setting::StoreOperationTimeout | Setting::StoreConnectTimeout
        )
    }
}

/// One piece of a breach's explanation.
enum Part {
    Text(&'static str),
    /// A setting's name, in backticks.
    Name(Setting),
    /// A setting's value, in parentheses.
    Value(Duration),
}

/// A broken rule: the settings it names, and why.
pub(crate) struct Breach {
    settings: Vec<Setting>,
    parts: Vec<Part>,
}

impl Breach {
    fn new(settings: &[Setting], parts: Vec<Part>) -> Self {
        Self {
            settings: settings.to_vec(),
            parts,
        }
    }

    /// The settings' names and the explanation, each setting called what `name` calls it.
    pub(crate) fn describe(&self, name: impl Fn(Setting) -> String) -> (Vec<String>, String) {
        let mut reason = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => reason.push_str(text),
                Part::Name(setting) => {
                    reason.push('`');
                    reason.push_str(&name(*setting));
                    reason.push('`');
                }
                Part::Value(value) => {
                    reason.push_str(&format!(" ({})", humantime::format_duration(*value)));
                }
            }
        }
        (self.settings.iter().map(|s| name(*s)).collect(), reason)
    }
}

use Part::{Name, Text, Value};
use Setting::*;

/// A wait or lifetime must be longer than zero.
pub(crate) fn positive(setting: Setting, value: Duration) -> Option<Breach> {
    value.is_zero().then(|| {
        Breach::new(
            &[setting],
            vec![Name(setting), Text(" must be longer than 0s")],
        )
    })
}

/// A duration must fit the timestamps it ends up in: [`MAX_SPAN`].
pub(crate) fn within_span(setting: Setting, value: Option<Duration>) -> Option<Breach> {
    let value = value.filter(|value| *value > MAX_SPAN)?;
    Some(Breach::new(
        &[setting],
        vec![
            Name(setting),
            Value(value),
            Text(
                " is longer than 100 years: an instant that far ahead cannot be kept or printed as a timestamp",
            ),
        ],
    ))
}

/// A token must outlive the skew: it is not used during its last `expiry_skew`.
pub(crate) fn token_outlives_skew(ttl: Option<Duration>, skew: Duration) -> Option<Breach> {
    let ttl = ttl.filter(|ttl| *ttl <= skew)?;
    Some(Breach::new(
        &[TokenTtl, ExpirySkew],
        vec![
            Name(TokenTtl),
            Value(ttl),
            Text(" must be longer than "),
            Name(ExpirySkew),
            Value(skew),
            Text(
                ": a token is not used during its last expiry skew, so it would never be used and every call would \
                 log in",
            ),
        ],
    ))
}

/// A refresh-ahead window (other than zero, which turns it off) must be shorter than the token's usable life.
pub(crate) fn window_fits_life(
    window: Option<Duration>,
    ttl: Option<Duration>,
    skew: Duration,
) -> Option<Breach> {
    let (window, ttl) = (window?, ttl?);
    if window.is_zero() || window < ttl.saturating_sub(skew) {
        return None;
    }
    Some(Breach::new(
        &[RefreshAhead, TokenTtl, ExpirySkew],
        vec![
            Name(RefreshAhead),
            Value(window),
            Text(" must be shorter than "),
            Name(TokenTtl),
            Value(ttl),
            Text(" less "),
            Name(ExpirySkew),
            Value(skew),
            Text(
                ": every token would be refreshed as soon as it arrived; `0s` turns refresh-ahead off",
            ),
        ],
    ))
}

/// The refresh lease must outlast what its holder does under it: the login, and the store's re-read before it and
/// save after it (`store`: the bound of one store operation, `None` for a store without one).
pub(crate) fn lease_covers_login(
    lease: Duration,
    login: Duration,
    store: Option<Duration>,
) -> Option<Breach> {
    let store_time = store.unwrap_or(Duration::ZERO).saturating_mul(2);
    if lease > login.saturating_add(store_time) {
        return None;
    }
    let mut parts = vec![
        Name(LeaseTtl),
        Value(lease),
        Text(" must be longer than "),
        Name(LoginTimeout),
        Value(login),
    ];
    let mut settings = vec![LeaseTtl, LoginTimeout];
    if let Some(store) = store {
        settings.push(StoreOperationTimeout);
        parts.extend([
            Text(" plus twice "),
            Name(StoreOperationTimeout),
            Value(store),
            Text(
                " (the bound of one store operation: the re-read before and the save after the login are made \
                 under the lease too)",
            ),
        ]);
    }
    parts.push(Text(
        ", or a second instance could log in while the first is still logging in",
    ));
    Some(Breach::new(&settings, parts))
}

/// A call's deadline must outlast a login it may wait for, or it would always run out first and report its own
/// timeout instead of the login's.
pub(crate) fn request_outlasts_login(request: Duration, login: Duration) -> Option<Breach> {
    (request <= login).then(|| {
        Breach::new(
            &[RequestTimeout, LoginTimeout],
            vec![
                Name(RequestTimeout),
                Value(request),
                Text(" must be longer than "),
                Name(LoginTimeout),
                Value(login),
                Text(
                    ": a call that waits for a login would always run out first, and report its own timeout \
                     instead of the login's",
                ),
            ],
        )
    })
}

/// The first pause after a failed login must not exceed the longest.
pub(crate) fn backoff_ordered(initial: Duration, max: Duration) -> Option<Breach> {
    (initial > max).then(|| {
        Breach::new(
            &[BackoffInitial, BackoffMax],
            vec![
                Name(BackoffInitial),
                Value(initial),
                Text(" must not exceed "),
                Name(BackoffMax),
                Value(max),
            ],
        )
    })
}
