//! Payments: executing them (counted, because they are not idempotent) and looking them up afterwards.

use serde_json::{Map, Value, json};

use super::reply::RpcError;
use super::state::State;

/// What identifies a payment: its `transactionId` from the params, else the JSON-RPC `id` of the call.
pub(crate) fn key(params: &Map<String, Value>, id: &Value) -> String {
    params
        .get("transactionId")
        .and_then(scalar_key)
        .or_else(|| scalar_key(id))
        .unwrap_or_else(|| id.to_string())
}

fn scalar_key(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Executes a payment and describes the outcome the way the gateway reports a completed one.
pub(crate) fn perform(state: &State, key: &str, params: &Map<String, Value>) -> Value {
    let paynet_id = state.execute(key);
    json!({
        "transactionId": params.get("transactionId").cloned().unwrap_or_else(|| key.into()),
        "paynetTransactionId": paynet_id,
        "amount": params.get("amount").cloned().unwrap_or(Value::Null),
        "status": "SUCCESS",
    })
}

/// Whether the payment with `params.transactionId` was executed.
pub(crate) fn check(state: &State, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let echoed = params
        .get("transactionId")
        .ok_or(RpcError::INVALID_PARAMS)?;
    let key = scalar_key(echoed).ok_or(RpcError::INVALID_PARAMS)?;
    Ok(match state.executed(&key) {
        Some(paynet_id) => json!({
            "transactionId": echoed,
            "paynetTransactionId": paynet_id,
            "status": "SUCCESS",
        }),
        None => json!({"transactionId": echoed, "status": "NOT_FOUND"}),
    })
}
