//! What the simulator counted, as a snapshot tests can compare.

use std::collections::BTreeMap;

/// A snapshot of the simulator's counters, taken by [`Simulator::stats`](super::Simulator::stats).
///
/// Counters start at zero and only [`Simulator::reset_stats`](super::Simulator::reset_stats) sets them back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every HTTP request received, whatever became of it.
    pub requests: u64,
    /// TCP connections accepted, whatever became of them. Far fewer than [`requests`](Self::requests) means the
    /// client reuses its connections.
    pub connections: u64,
    /// TLS handshakes completed (a simulator serving HTTPS only, see
    /// [`SimulatorBuilder::tls`](super::SimulatorBuilder::tls)). Far fewer than the calls means the client
    /// reuses its TLS connections rather than paying a handshake per call.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed: a client that does not trust the server's certificate, one without the client
    /// certificate the server requires, one speaking plain HTTP to the HTTPS port. The connection is dropped.
    pub tls_handshake_failures: u64,
    /// Every `login` request, including those that failed or were made to fail.
    pub login_attempts: u64,
    /// Logins that issued a token.
    pub logins: u64,
    /// The most `login` requests that were being handled at the same time, counted from the request's arrival
    /// to its answer (the configured latency included).
    pub max_concurrent_logins: u64,
    /// Calls answered with [`UNAUTHORIZED_CODE`](super::UNAUTHORIZED_CODE).
    pub rejections: u64,
    /// Calls that passed the token check, per JSON-RPC method (`login` is not among them). A payment call
    /// counts even when the connection is then dropped on purpose.
    pub calls: BTreeMap<String, u64>,
    /// Executions of payment calls, per `transactionId` (or per JSON-RPC `id` when the call had none).
    pub executions: BTreeMap<String, u64>,
}

impl SimStats {
    /// How many authorised calls of `method` were served.
    pub fn calls_to(&self, method: &str) -> u64 {
        self.calls.get(method).copied().unwrap_or(0)
    }

    /// How many times the payment with this `transactionId` was executed.
    pub fn executions_of(&self, transaction_id: &str) -> u64 {
        self.executions.get(transaction_id).copied().unwrap_or(0)
    }

    /// The number of authorised calls served, all methods together.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}
