//! What the binary's end-to-end tests share: running it, bounded in time, and what a run left behind.
#![allow(dead_code)]

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Command;

/// No run of the binary may take longer than this; it is killed when the test gives up on it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one run of the binary left behind. Each test file adds the assertions it needs.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `command` to its end, within [`RUN_TIMEOUT`].
pub async fn run(mut command: Command) -> Run {
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("paynet-auth did not finish within {RUN_TIMEOUT:?}"))
        .expect("paynet-auth starts");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}
