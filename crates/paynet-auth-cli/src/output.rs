//! What the commands print on stdout, written so that a reader that went away is no failure of theirs.
//!
//! `paynet-auth token status | head -1` closes the pipe after one line; `println!` would then panic on the next
//! one. Rust ignores SIGPIPE, so the write fails with `BrokenPipe` instead of ending the process as it ends `ls`:
//! [`line`] turns that into an error that stops the command, and [`reader_gone`] tells `main` to exit quietly
//! with the status a shell reports for a process ended by SIGPIPE.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

static READER_GONE: AtomicBool = AtomicBool::new(false);

/// 128 + SIGPIPE: what `ls | head` reports under `set -o pipefail` when `head` stopped reading.
const CLOSED_PIPE_STATUS: u8 = 141;

/// Writes `text` and a newline to stdout. An error (the reader gone, or stdout unwritable) stops the command:
/// what it would print next could not be read either.
pub(crate) fn line(text: impl Display) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                READER_GONE.store(true, Ordering::Relaxed);
            }
            format!("cannot write to stdout: {error}")
        })
}

/// The quiet exit of a command whose reader went away, if one did: nothing more is said, on either stream.
pub(crate) fn reader_gone() -> Option<ExitCode> {
    READER_GONE
        .load(Ordering::Relaxed)
        .then(|| ExitCode::from(CLOSED_PIPE_STATUS))
}

/// [`line`] with `format!`'s arguments.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
