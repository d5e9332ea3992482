//! What the simulator counted, as a snapshot tests can compare.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeStruct, Serializer};

/// A snapshot of the simulator's counters, taken by [`Simulator::stats`](super::Simulator::stats).
///
/// Counters start at zero and only [`Simulator::reset_stats`](super::Simulator::reset_stats),
/// [`Simulator::reset`](super::Simulator::reset) and `POST /__admin/reset` set them back.
///
/// Requests to `/__admin/` are not gateway traffic: they are counted in none of these counters but
/// [`connections`](Self::connections), [`tls_handshakes`](Self::tls_handshakes) and
/// [`tls_handshake_failures`](Self::tls_handshake_failures), which count connections before any request on them
/// is read.
///
/// It serialises (as `GET /__admin/stats` answers and `paynet-auth simulate` prints at exit) to one JSON object
/// with a member per field, plus `unauthorized`, the same number as `rejections` under the name the admin API
/// uses:
///
/// ```
/// let stats = paynet_sim::SimStats { logins: 2, rejections: 1, ..Default::default() };
/// let json = serde_json::to_value(&stats).unwrap();
/// assert_eq!((json["logins"].as_u64(), json["unauthorized"].as_u64()), (Some(2), Some(1)));
/// assert_eq!(json["calls"], serde_json::json!({}));
/// ```
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
    /// Calls answered with [`UNAUTHORIZED_CODE`](super::UNAUTHORIZED_CODE); `unauthorized` in the JSON form too.
    pub rejections: u64,
    /// Calls that passed the token check and were answered with a JSON-RPC result (not an error, not a dropped
    /// connection): the authorised calls served.
    pub ok: u64,
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

impl Serialize for SimStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("SimStats", 13)?;
        out.serialize_field("requests", &self.requests)?;
        out.serialize_field("login_attempts", &self.login_attempts)?;
        out.serialize_field("logins", &self.logins)?;
        out.serialize_field("unauthorized", &self.rejections)?;
        out.serialize_field("rejections", &self.rejections)?;
        out.serialize_field("ok", &self.ok)?;
        out.serialize_field("max_concurrent_logins", &self.max_concurrent_logins)?;
        out.serialize_field("connections", &self.connections)?;
        out.serialize_field("tls_handshakes", &self.tls_handshakes)?;
        out.serialize_field("tls_handshake_failures", &self.tls_handshake_failures)?;
        out.serialize_field("calls", &self.calls)?;
        out.serialize_field("total_calls", &self.total_calls())?;
        out.serialize_field("executions", &self.executions)?;
        out.end()
    }
}
