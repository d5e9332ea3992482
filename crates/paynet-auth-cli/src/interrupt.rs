//! SIGTERM and SIGINT for the commands that may hold the refresh lease (`call`, `load`, `token refresh`): the
//! lease is given back, within the store's bound, before the process exits with the conventional status, so the
//! next instance does not wait out `lease_ttl`.

use std::process::ExitCode;

use paynet_auth::TokenManager;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT, caught from the moment they are installed: a signal that arrives while the stack is being
/// set up is handled as soon as the command waits for one.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

/// Which of the two arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caught {
    Term,
    Int,
}

impl Signals {
    /// Catches SIGTERM and SIGINT from now on, for the rest of the process: installed only by the commands that
    /// wait for them.
    pub(crate) fn install() -> Result<Self, String> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot catch {name}: {e}"))
        };
        Ok(Self {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// The next signal.
    pub(crate) async fn caught(&mut self) -> Caught {
        tokio::select! {
            _ = self.term.recv() => Caught::Term,
            _ = self.int.recv() => Caught::Int,
        }
    }
}

impl Caught {
    fn name(self) -> &'static str {
        match self {
            Caught::Term => "SIGTERM",
            Caught::Int => "SIGINT",
        }
    }

    /// 128 plus the signal's number, as a shell reports a process the signal ended.
    fn status(self) -> ExitCode {
        ExitCode::from(match self {
            Caught::Term => 143,
            Caught::Int => 130,
        })
    }
}

/// Gives back the refresh lease this process may hold, says on stderr that the command was interrupted and
/// whether a lease was given back, and returns the exit status of `signal`.
pub(crate) async fn stop(signal: Caught, manager: &TokenManager) -> ExitCode {
    let name = signal.name();
    match manager.shutdown().await {
        Ok(true) => eprintln!("interrupted by {name}: gave the refresh lease back"),
        Ok(false) => eprintln!("interrupted by {name}: held no refresh lease"),
        Err(error) => eprintln!(
            "interrupted by {name}: could not give the refresh lease back, it runs out by itself after \
             lease_ttl: {}",
            crate::one_line(&error)
        ),
    }
    signal.status()
}
