//! What the binary logs when `RUST_LOG` does not say.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The default filter of a command, used unless `RUST_LOG` is set.
pub(crate) enum Default {
    /// `call`, `load`, `token …`, `migrate`: the library's warnings and errors, which tell what the command's
    /// own output does not (a store that could not be written, a token served from memory), without the ERROR
    /// line of a failed refresh, which the command prints itself as its error.
    Command,
    /// The demo shows the errors it provokes.
    Demo,
    /// The simulator narrates the requests it answers (logged at DEBUG, since a library user's simulator should
    /// stay quiet).
    Simulator,
}

/// Logs to stderr, with colours only on a terminal.
pub(crate) fn init(default: Default) {
    let (filter, quiet_refresh_failure) = match EnvFilter::try_from_default_env() {
        // Asked for explicitly: everything it lets through.
        Ok(filter) => (filter, false),
        Err(_) => match default {
            Default::Command => (EnvFilter::new("paynet_auth=warn"), true),
            Default::Demo => (EnvFilter::new("paynet_auth=error"), false),
            Default::Simulator => (EnvFilter::new("paynet_sim=debug"), false),
        },
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(quiet_refresh_failure.then_some(ReportedByTheCommand))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .init();
}

/// The message of the library's ERROR line for a failed refresh. The command that needed the token fails with
/// that same error and prints it whole, cause included: logged too, it would be said twice.
const REFRESH_FAILED: &str = "token refresh failed";

/// Drops the library's [`REFRESH_FAILED`] events.
struct ReportedByTheCommand;

impl<S: Subscriber> Layer<S> for ReportedByTheCommand {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR || !metadata.target().starts_with("paynet_auth") {
            return true;
        }
        let mut message = IsMessage {
            expected: REFRESH_FAILED,
            matches: false,
        };
        event.record(&mut message);
        !message.matches
    }
}

/// Whether an event's message is `expected`.
struct IsMessage {
    expected: &'static str,
    matches: bool,
}

impl Visit for IsMessage {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.matches = value == self.expected;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // A message is recorded as `format_args!`, whose Debug is the text itself.
        if field.name() == "message" {
            self.matches = format!("{value:?}") == self.expected;
        }
    }
}
