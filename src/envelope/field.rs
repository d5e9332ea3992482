//! Where the token goes in a JSON-RPC call: the one choice the scan and the splice both need.

/// Where the token goes in a JSON-RPC call.
///
/// ```
/// use paynet_auth::envelope::{TokenField, inject_token};
/// use serde_json::Value;
///
/// let token = serde_json::to_string("T-1").unwrap();
/// let call = br#"{"jsonrpc":"2.0","method":"balance","id":3}"#;
///
/// let out = inject_token(call, TokenField::default(), token.as_bytes()).unwrap();
/// let out: Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!(out["params"]["token"], "T-1"); // `params` is created
///
/// let out = inject_token(call, TokenField::TopLevel, token.as_bytes()).unwrap();
/// let out: Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!((&out["token"], &out["params"]), (&Value::from("T-1"), &Value::Null));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenField {
    /// A named parameter: `"params":{"token":…}`. `params` is created when it is missing or `null`; positional
    /// parameters (an array) cannot carry it.
    #[default]
    Params,
    /// A member of the call object itself, next to `method` and `params`: `{"token":…,"method":…}`, as the
    /// gateway's ticket writes it. `params` is left alone, whatever it is.
    TopLevel,
}
