//! Inputs found by the `cargo fuzz` targets in `fuzz/` (see `fuzz/README.md`), minimised and pinned.
//!
//! The fuzzers compare the body scanner with `serde_json::from_slice::<Value>`. They found one place where the two
//! differ: with serde_json's `raw_value` feature on (any crate in a build can switch it on), `Value` reads an
//! object whose first key is `"$serde_json::private::RawValue"` as serde_json's private raw-value marker rather
//! than as an object. That is not JSON: the gateway, like every other JSON reader, sees an ordinary object with
//! one member. The scanner follows JSON, and these tests pin that it does.

use paynet_auth::envelope::{RejectionDetector, TokenField, inject_token};

const MARKER_ONLY: &[u8] = br#"{"$serde_json::private::RawValue":""}"#;

#[test]
fn raw_value_marker_object_is_an_ordinary_call_object() {
    // Minimised by `cargo fuzz tmin` from the first crash: Params mode, empty token.
    let out = inject_token(MARKER_ONLY, TokenField::Params, br#""""#).unwrap();
    assert_eq!(
        out,
        br#"{"params":{"token":""},"$serde_json::private::RawValue":""}"#
    );
}

#[test]
fn raw_value_marker_holding_a_number_is_still_an_object() {
    let body = br#"{"$serde_json::private::RawValue":"1"}"#;
    let out = inject_token(body, TokenField::TopLevel, br#""t""#).unwrap();
    assert_eq!(
        out,
        br#"{"token":"t","$serde_json::private::RawValue":"1"}"#
    );
}

#[test]
fn raw_value_marker_in_params_leaves_params_an_object() {
    let body = br#"{"params":{"$serde_json::private::RawValue":"[1]"}}"#;
    let out = inject_token(body, TokenField::Params, br#""t""#).unwrap();
    assert_eq!(
        out,
        br#"{"params":{"token":"t","$serde_json::private::RawValue":"[1]"}}"#
    );
}

#[test]
fn rejection_beside_a_raw_value_marker_is_a_rejection() {
    let body = br#"{"error":{"code":-9999},"x":{"$serde_json::private::RawValue":1}}"#;
    assert!(RejectionDetector::new(-9999).is_rejection(body));
}

#[test]
fn rejection_text_inside_a_raw_value_marker_string_is_not_a_rejection() {
    let body = br#"{"$serde_json::private::RawValue":"{\"error\":{\"code\":-9999}}"}"#;
    assert!(!RejectionDetector::new(-9999).is_rejection(body));
}
