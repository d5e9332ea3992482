//! Where the token goes in a JSON-RPC call: the one choice the scan and the splice both need.

/// Where the token goes in a JSON-RPC call.
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
