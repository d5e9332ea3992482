//! The tables of the diesel store (see `migrations/`).

diesel::table! {
    /// One token per credential key.
    paynet_tokens (credential_key) {
        credential_key -> Text,
        token -> Text,
        nonce -> Nullable<Text>,
        generation -> BigInt,
        obtained_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        agent_id -> Nullable<Text>,
        terminal_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
        user_login -> Nullable<Text>,
        written_by -> Text,
    }
}

diesel::table! {
    /// The refresh lease of each credential key (ShedLock's columns).
    paynet_lease (name) {
        name -> Text,
        lock_until -> BigInt,
        locked_at -> BigInt,
        locked_by -> Text,
    }
}
