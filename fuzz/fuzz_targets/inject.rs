//! Differential fuzzing of `paynet_auth::envelope::inject_token` against serde_json.
//!
//! Input: `[selector, token_len, token bytes (token_len % 64 of them), body...]`. Bit 0 of the selector picks
//! the field (0: `Params`, 1: `TopLevel`); the token bytes are made UTF-8 (lossily) and written as a JSON
//! string literal with `serde_json::to_string`.
//!
//! Checks, on every input: no panic; `Err(NotJson)` exactly when `serde_json::from_slice::<Value>` refuses the
//! body; otherwise the first shape error in body order (not a call or batch, empty batch, `params` not an
//! object or null, duplicate `params`) exactly when the reference finds one; otherwise `Ok(out)` where `out`
//! parses (with `Value`, last duplicate wins) to the body parsed with the token set, and parses keeping the
//! first duplicate to the same thing done by a first-wins reader (every duplicate `token` replaced).
//!
//! Bodies with an object whose first key is serde_json's private `$serde_json::private::RawValue` are skipped:
//! there the reference reads serde_json's internal marker, not JSON (see the README).
#![no_main]

use libfuzzer_sys::fuzz_target;
use paynet_auth::envelope::{TokenField, inject_token};
use paynet_auth_fuzz::{Expected, Shape, expected_injection, first_wins, has_raw_value_key};
use serde_json::Value;


fuzz_target!(|data: &[u8]| {
    let [selector, token_len, rest @ ..] = data else {
        return;
    };
    let field = if selector & 1 == 0 {
        TokenField::Params
    } else {
        TokenField::TopLevel
    };
    let (token, body) = rest.split_at(usize::from(token_len % 64).min(rest.len()));
    let token = String::from_utf8_lossy(token);
    let token_json = serde_json::to_string(&token).expect("a string serialises");

    // Not JSON semantics but serde_json's private raw-value marker: the reference cannot judge these bodies.
    if has_raw_value_key(body) {
        return;
    }

    let got = inject_token(body, field, token_json.as_bytes());
    let want = expected_injection(body, field, &token);
    let shown = body.escape_ascii();
    match (&want, &got) {
        (Expected::NotJson, Err(error)) if Shape::of(error).is_none() => {}
        (Expected::Shape(shape), Err(error)) if Shape::of(error) == Some(*shape) => {}
        (Expected::Injected { last, first }, Ok(out)) => {
            let out_shown = out.escape_ascii();
            let parsed: Value = serde_json::from_slice(out).unwrap_or_else(|e| {
                panic!("{field:?} token {token_json}: output is not JSON ({e}): b\"{out_shown}\" from b\"{shown}\"")
            });
            assert_eq!(
                &parsed, last,
                "{field:?} token {token_json}: output b\"{out_shown}\" from b\"{shown}\" differs from parse-and-set (last duplicate wins)"
            );
            let parsed = first_wins(out).expect("parsed as Value already");
            assert_eq!(
                &parsed, first,
                "{field:?} token {token_json}: output b\"{out_shown}\" from b\"{shown}\" differs from parse-and-set (first duplicate wins)"
            );
        }
        _ => {
            let got = match &got {
                Ok(out) => format!("Ok(b\"{}\")", out.escape_ascii()),
                Err(error) => format!("Err({error:?})"),
            };
            panic!("{field:?} token {token_json} on b\"{shown}\": expected {want:?}, got {got}")
        }
    }
});
