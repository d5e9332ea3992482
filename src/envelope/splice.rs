//! Writing the token into a JSON-RPC request body.
//!
//! The body is never parsed into a `serde_json::Value`: one validating pass over the bytes copies it into
//! the output, splicing the token in where it belongs as the places are found. Everything else (member
//! order, whitespace, number spelling, string escapes) reaches the gateway byte for byte as the caller wrote
//! it, and the cost is one scan plus one copy, with no allocation but the output (keys written with escapes
//! aside). The pass and what it accepts are in `scan`; the changes it records, in `edit`.

use super::scan::{Scanner, is_valid_json};
use crate::error::InjectError;

pub use super::field::TokenField;

/// Writes `token_json` (a complete JSON string literal, quotes included, already escaped) into the body.
///
/// For a call object, [`TokenField::Params`] sets `params.token` (creating `params` as an object when it is
/// missing or `null`) and [`TokenField::TopLevel`] sets the call's own `token` member. A batch (a top-level
/// array) gets the token in every call. An existing `token` value of any type (a `"{{token}}"` placeholder, a
/// stale token, `null` …) is replaced; when the key occurs several times in the same object every occurrence
/// is replaced, so readers that keep the first and readers that keep the last both see the new token.
///
/// When the object has no `token` member yet, it is inserted as the object's first member. Nothing else in
/// the body changes: parsing the result gives exactly what parsing the body and setting the token gives.
///
/// `token_json` is trusted to be one valid JSON string literal, such as `serde_json::to_string(&token)`
/// produces; anything else would corrupt the body. Debug builds assert it.
///
/// # Errors
///
/// Nothing is written and the request must not be sent when:
/// * the body is not valid JSON or not UTF-8 ([`InjectError::NotJson`]); the body is accepted exactly when
///   `serde_json::from_slice::<serde_json::Value>` accepts it;
/// * the body is not an object or a non-empty array of objects ([`InjectError::NotJsonRpc`],
///   [`InjectError::EmptyBatch`]);
/// * with [`TokenField::Params`]: a call's `params` is an array or another non-object other than `null`
///   ([`InjectError::ParamsNotObject`]), or a call has two `params` keys ([`InjectError::DuplicateKey`]),
///   since readers disagree about which one counts.
///
/// When a body has both a syntax error and a shape error, the syntax error is reported.
///
/// # Examples
///
/// ```
/// use paynet_auth::envelope::{TokenField, inject_token};
///
/// let token = serde_json::to_string("s3cr\"t").unwrap();
/// let body = br#"{"jsonrpc":"2.0","method":"pay","id":1,"params":{"amount":5}}"#;
/// let out = inject_token(body, TokenField::Params, token.as_bytes()).unwrap();
/// assert_eq!(
///     out,
///     br#"{"jsonrpc":"2.0","method":"pay","id":1,"params":{"token":"s3cr\"t","amount":5}}"#
/// );
///
/// let body = br#"{"jsonrpc":"2.0","method":"x","id":1,"token":"{{token}}","params":{}}"#;
/// let out = inject_token(body, TokenField::TopLevel, token.as_bytes()).unwrap();
/// assert_eq!(out, br#"{"jsonrpc":"2.0","method":"x","id":1,"token":"s3cr\"t","params":{}}"#);
/// ```
pub fn inject_token(
    body: &[u8],
    field: TokenField,
    token_json: &[u8],
) -> Result<Vec<u8>, InjectError> {
    Ok(TokenSlots::find(body, field)?.write(body, token_json))
}

/// Where the token goes in one body: what [`inject_token`]'s validating pass finds, kept so that the token can
/// be written later. A body the layer will refuse is refused before any token is asked for (a cold call must not
/// cost a login, which on a single-session gateway ends every other instance's session), without scanning the
/// body a second time once the token is there.
#[derive(Debug)]
pub(crate) struct TokenSlots {
    edits: super::edit::Edits,
}

impl TokenSlots {
    /// The one validating pass: see [`inject_token`] for what it refuses.
    pub(crate) fn find(body: &[u8], field: TokenField) -> Result<Self, InjectError> {
        let mut scanner = Scanner::new(body, Some(field));
        scanner.document()?;
        if let Some(shape) = scanner.shape {
            return Err(shape);
        }
        Ok(Self {
            edits: scanner.edits,
        })
    }

    /// `body` (the one these slots were found in) with `token_json` written into them.
    pub(crate) fn write(&self, body: &[u8], token_json: &[u8]) -> Vec<u8> {
        debug_assert!(
            is_string_literal(token_json),
            "token_json must be one JSON string literal"
        );
        // Sized exactly, so that `Bytes::from` takes the vector as it is instead of allocating a shared header.
        let len = self.edits.iter().fold(body.len(), |len, edit| {
            len - (edit.end() - edit.start()) + edit.inserted_len(token_json.len())
        });
        let mut out = Vec::with_capacity(len);
        let mut copied = 0;
        for edit in self.edits.iter() {
            out.extend_from_slice(&body[copied..edit.start()]);
            edit.write(&mut out, token_json);
            copied = edit.end();
        }
        out.extend_from_slice(&body[copied..]);
        debug_assert_eq!(out.len(), out.capacity());
        out
    }
}

fn is_string_literal(literal: &[u8]) -> bool {
    literal.first() == Some(&b'"') && is_valid_json(literal)
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use proptest::prelude::*;
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value, json};

    use super::super::edit::INLINE_EDITS;
    use super::super::scan::is_valid_json;
    use super::*;
    use crate::envelope::testgen::{
        Style, mutate, mutations, noise, raw_json, request, style, text, write,
    };

    const TOKEN: &str = r#""t0k""#;

    fn inject(body: &str, field: TokenField) -> Result<String, InjectError> {
        inject_token(body.as_bytes(), field, TOKEN.as_bytes())
            .map(|out| String::from_utf8(out).unwrap())
    }

    fn params(body: &str) -> Result<String, InjectError> {
        inject(body, TokenField::Params)
    }

    fn top(body: &str) -> Result<String, InjectError> {
        inject(body, TokenField::TopLevel)
    }

    fn accepted(body: &[u8]) -> bool {
        !matches!(
            inject_token(body, TokenField::TopLevel, TOKEN.as_bytes()),
            Err(InjectError::NotJson { .. })
        )
    }

    fn serde_accepts(body: &[u8]) -> bool {
        serde_json::from_slice::<Value>(body).is_ok()
    }

    /// Asserts acceptance of `{"params":{"v":<value>}}` matches serde_json and is `expected`.
    fn assert_value_acceptance(value: &[u8], expected: bool) {
        let body = [br#"{"params":{"v":"#.as_slice(), value, b"}}"].concat();
        let shown = String::from_utf8_lossy(value);
        assert_eq!(serde_accepts(&body), expected, "serde_json on {shown}");
        assert_eq!(accepted(&body), expected, "inject_token on {shown}");
        assert_eq!(is_valid_json(&body), expected, "is_valid_json on {shown}");
    }

    #[test]
    fn params_token_is_created_when_params_missing() {
        assert_eq!(
            params(r#"{"jsonrpc":"2.0","method":"x","id":1}"#).unwrap(),
            r#"{"params":{"token":"t0k"},"jsonrpc":"2.0","method":"x","id":1}"#
        );
    }

    #[test]
    fn params_token_is_created_when_params_null() {
        assert_eq!(
            params(r#"{"method":"x","params":null,"id":1}"#).unwrap(),
            r#"{"method":"x","params":{"token":"t0k"},"id":1}"#
        );
    }

    #[test]
    fn params_token_is_inserted_first_in_existing_params() {
        assert_eq!(
            params(r#"{"method":"x","params":{"amount":5,"to":"bob"}}"#).unwrap(),
            r#"{"method":"x","params":{"token":"t0k","amount":5,"to":"bob"}}"#
        );
    }

    #[test]
    fn empty_objects_get_the_member_without_a_comma() {
        assert_eq!(
            params(r#"{"params":{ }}"#).unwrap(),
            r#"{"params":{"token":"t0k" }}"#
        );
        assert_eq!(params("{}").unwrap(), r#"{"params":{"token":"t0k"}}"#);
        assert_eq!(params("{ }").unwrap(), r#"{"params":{"token":"t0k"} }"#);
        assert_eq!(top("{}").unwrap(), r#"{"token":"t0k"}"#);
    }

    #[test]
    fn existing_params_token_of_any_type_is_replaced() {
        for old in [
            r#""{{token}}""#,
            r#""stale""#,
            "null",
            "42",
            "-1.5e3",
            "true",
            r#"[1,{"a":"}"}]"#,
            r#"{"x":"y"}"#,
        ] {
            let body = format!(r#"{{"method":"x","params":{{"a":1,"token":{old},"b":2}}}}"#);
            assert_eq!(
                params(&body).unwrap(),
                r#"{"method":"x","params":{"a":1,"token":"t0k","b":2}}"#,
                "{old}"
            );
        }
    }

    #[test]
    fn top_level_placeholder_is_replaced() {
        assert_eq!(
            top(r#"{"jsonrpc":"2.0","method":"x","id":1,"token":"{{token}}","params":{}}"#)
                .unwrap(),
            r#"{"jsonrpc":"2.0","method":"x","id":1,"token":"t0k","params":{}}"#
        );
    }

    #[test]
    fn top_level_token_is_inserted_first_when_missing() {
        assert_eq!(
            top(r#"{"jsonrpc":"2.0","method":"x","id":1}"#).unwrap(),
            r#"{"token":"t0k","jsonrpc":"2.0","method":"x","id":1}"#
        );
    }

    #[test]
    fn top_level_leaves_params_alone_whatever_they_are() {
        assert_eq!(
            top(r#"{"method":"x","params":[1,2],"params":"dup"}"#).unwrap(),
            r#"{"token":"t0k","method":"x","params":[1,2],"params":"dup"}"#
        );
        // A token inside params is the caller's business in this mode.
        assert_eq!(
            top(r#"{"params":{"token":"mine"}}"#).unwrap(),
            r#"{"token":"t0k","params":{"token":"mine"}}"#
        );
    }

    #[test]
    fn params_mode_leaves_a_top_level_token_alone() {
        assert_eq!(
            params(r#"{"token":"x","params":{}}"#).unwrap(),
            r#"{"token":"x","params":{"token":"t0k"}}"#
        );
    }

    #[test]
    fn batch_gets_token_in_every_call() {
        let batch = r#"[{"method":"a"},{"method":"b","params":{"token":"old"}},{"method":"c","params":null}]"#;
        assert_eq!(
            params(batch).unwrap(),
            r#"[{"params":{"token":"t0k"},"method":"a"},{"method":"b","params":{"token":"t0k"}},{"method":"c","params":{"token":"t0k"}}]"#
        );
        assert_eq!(
            top(batch).unwrap(),
            r#"[{"token":"t0k","method":"a"},{"token":"t0k","method":"b","params":{"token":"old"}},{"token":"t0k","method":"c","params":null}]"#
        );
    }

    #[test]
    fn batches_longer_than_the_inline_edits_are_spliced_whole() {
        // Every shape of edit, cycled through more calls than fit inline, so that some edits spill to the heap.
        let shapes = [
            (r#"{"id":N}"#, r#"{"params":{"token":"t0k"},"id":N}"#),
            (
                r#"{"id":N,"params":{}}"#,
                r#"{"id":N,"params":{"token":"t0k"}}"#,
            ),
            (
                r#"{"id":N,"params":{"token":"a longer old token"}}"#,
                r#"{"id":N,"params":{"token":"t0k"}}"#,
            ),
            (
                r#"{"id":N,"params":null}"#,
                r#"{"id":N,"params":{"token":"t0k"}}"#,
            ),
            (
                r#"{"id":N,"params":{"x":1}}"#,
                r#"{"id":N,"params":{"token":"t0k","x":1}}"#,
            ),
        ];
        for calls in [1, INLINE_EDITS, INLINE_EDITS + 1, 3 * INLINE_EDITS + 2] {
            let (body, expected): (Vec<_>, Vec<_>) = (0..calls)
                .map(|n| {
                    let (call, spliced) = shapes[n % shapes.len()];
                    let n = n.to_string();
                    (call.replace('N', &n), spliced.replace('N', &n))
                })
                .unzip();
            let body = format!("[{}]", body.join(","));
            let out = inject_token(body.as_bytes(), TokenField::Params, b"\"t0k\"").unwrap();
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                format!("[{}]", expected.join(","))
            );
            assert_eq!(
                out.len(),
                out.capacity(),
                "{calls} calls: the output is sized exactly"
            );
        }
    }

    #[test]
    fn whitespace_elsewhere_is_kept() {
        let body =
            "\r\n [ {\n  \"method\" : \"a\" ,\t\"params\" : { \"token\" : null }\n} ,{ } ] \n";
        assert_eq!(
            params(body).unwrap(),
            "\r\n [ {\n  \"method\" : \"a\" ,\t\"params\" : { \"token\" : \"t0k\" }\n} ,{\"params\":{\"token\":\"t0k\"} } ] \n"
        );
    }

    #[test]
    fn positional_params_are_rejected() {
        for (value, found) in [
            ("[1,2]", "an array"),
            (r#""x""#, "a string"),
            ("7", "a number"),
            ("false", "a boolean"),
        ] {
            let body = format!(r#"{{"method":"x","params":{value}}}"#);
            assert_eq!(
                params(&body),
                Err(InjectError::ParamsNotObject { found }),
                "{value}"
            );
        }
        assert_eq!(
            params(r#"[{"params":{}},{"params":[]}]"#),
            Err(InjectError::ParamsNotObject { found: "an array" })
        );
    }

    #[test]
    fn duplicate_params_is_rejected() {
        let expected = Err(InjectError::DuplicateKey { key: "params" });
        assert_eq!(
            params(r#"{"params":{"a":1},"method":"x","params":{"b":2}}"#),
            expected
        );
        assert_eq!(params(r#"{"params":null,"params":null}"#), expected);
        assert_eq!(
            params(r#"[{"params":{}},{"params":{},"params":{}}]"#),
            expected
        );
    }

    #[test]
    fn duplicate_token_keys_all_replaced() {
        assert_eq!(
            params(r#"{"params":{"token":"a","x":1,"token":{"b":[2]}}}"#).unwrap(),
            r#"{"params":{"token":"t0k","x":1,"token":"t0k"}}"#
        );
        assert_eq!(
            top(r#"{"token":1,"token":2,"token":3}"#).unwrap(),
            r#"{"token":"t0k","token":"t0k","token":"t0k"}"#
        );
    }

    #[test]
    fn escaped_key_params_is_recognised() {
        assert_eq!(
            params(r#"{"para\u006ds":{"a":1}}"#).unwrap(),
            r#"{"para\u006ds":{"token":"t0k","a":1}}"#
        );
        assert_eq!(
            params(r#"{"\u0070arams":null}"#).unwrap(),
            r#"{"\u0070arams":{"token":"t0k"}}"#
        );
        assert_eq!(
            params(r#"{"params":{"tok\u0065n":"old"}}"#).unwrap(),
            r#"{"params":{"tok\u0065n":"t0k"}}"#
        );
        assert_eq!(
            top(r#"{"\u0074\u006F\u006B\u0065\u006E":"old"}"#).unwrap(),
            r#"{"\u0074\u006F\u006B\u0065\u006E":"t0k"}"#
        );
        assert_eq!(
            params(r#"{"para\u006ds":[1]}"#),
            Err(InjectError::ParamsNotObject { found: "an array" })
        );
        assert_eq!(
            params(r#"{"params":{},"para\u006ds":{}}"#),
            Err(InjectError::DuplicateKey { key: "params" })
        );
    }

    #[test]
    fn keys_that_only_resemble_params_are_other_keys() {
        for key in [
            "Params",
            "params ",
            "param",
            "paramss",
            r"param\u0073x",
            r"params\u0000",
            r"\/params",
        ] {
            let body = format!(r#"{{"{key}":[1]}}"#);
            assert_eq!(
                params(&body).unwrap(),
                format!(r#"{{"params":{{"token":"t0k"}},"{key}":[1]}}"#),
                "{key}"
            );
        }
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        for body in [
            r#"{"a":1} x"#,
            r#"{"a":1}}"#,
            r#"{"a":1}{}"#,
            r#"{"a":1},"#,
            "{}\u{0}",
            "{}\u{a0}",
            "[{}]]",
        ] {
            assert!(
                matches!(params(body), Err(InjectError::NotJson { .. })),
                "{body:?}"
            );
            assert!(!serde_accepts(body.as_bytes()), "{body:?}");
        }
        assert_eq!(
            params(" \t\r\n{} \t\r\n").unwrap(),
            " \t\r\n{\"params\":{\"token\":\"t0k\"}} \t\r\n"
        );
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        for body in [
            b"{\"params\":{\"a\":\"\xff\"}}".as_slice(),
            b"{\"a\xc3\":1}",
            b"{\"a\":\"\xed\xa0\x80\"}", // a surrogate encoded as UTF-8
            b"{\"a\":\"\xc0\xaf\"}",     // an overlong encoding
            b"{\"a\":1}\xff",
            b"\xef\xbb\xbf{}", // a byte order mark
        ] {
            assert!(!serde_accepts(body));
            assert!(matches!(
                inject_token(body, TokenField::Params, TOKEN.as_bytes()),
                Err(InjectError::NotJson { .. })
            ));
        }
        assert_eq!(
            params("{\"a\":\"\u{e9}\u{1F600}\"}").unwrap(),
            "{\"params\":{\"token\":\"t0k\"},\"a\":\"\u{e9}\u{1F600}\"}"
        );
    }

    #[test]
    fn long_strings_are_checked_like_short_ones() {
        let long = "x".repeat(200);
        for (value, ok) in [
            (format!("\"{long}\""), true),
            (format!("\"{long}é😀\""), true),
            (format!("\"{long}\\n\\u00e9{long}\\\"\""), true),
            (format!("\"{long}\\q\""), false),
            (format!("\"{long}\u{1f}\""), false),
            (format!("\"{long}\\ud800{long}\""), false),
            (format!("\"{long}"), false),
        ] {
            assert_value_acceptance(value.as_bytes(), ok);
        }
        for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"] {
            let value = [b"\"", long.as_bytes(), bad, long.as_bytes(), b"\""].concat();
            assert_value_acceptance(&value, false);
            let value = [b"\"", bad, long.as_bytes(), b"\""].concat();
            assert_value_acceptance(&value, false);
        }
    }

    #[test]
    fn not_json_reports_where() {
        assert_eq!(
            params(r#"{"a":tru}"#),
            Err(InjectError::NotJson {
                reason: "invalid literal",
                offset: 5
            })
        );
        assert_eq!(
            params(""),
            Err(InjectError::NotJson {
                reason: "unexpected end of body",
                offset: 0
            })
        );
    }

    #[test]
    fn non_call_shapes_are_rejected() {
        assert_eq!(
            params(r#""x""#),
            Err(InjectError::NotJsonRpc { found: "a string" })
        );
        assert_eq!(
            params("12"),
            Err(InjectError::NotJsonRpc { found: "a number" })
        );
        assert_eq!(top("null"), Err(InjectError::NotJsonRpc { found: "null" }));
        assert_eq!(
            top("true"),
            Err(InjectError::NotJsonRpc { found: "a boolean" })
        );
        assert_eq!(params("[]"), Err(InjectError::EmptyBatch));
        assert_eq!(top(" [ ] "), Err(InjectError::EmptyBatch));
        assert_eq!(
            params("[{},1]"),
            Err(InjectError::NotJsonRpc {
                found: "a batch element that is a number"
            })
        );
        assert_eq!(
            top("[[{}]]"),
            Err(InjectError::NotJsonRpc {
                found: "a batch element that is an array"
            })
        );
    }

    #[test]
    fn syntax_error_is_reported_before_shape_error() {
        for body in [
            r#"[1, {"#,
            r#"{"params":[1],"#,
            r#"[]]"#,
            r#"{"params":{},"params":{}} x"#,
        ] {
            assert!(
                matches!(params(body), Err(InjectError::NotJson { .. })),
                "{body}"
            );
        }
    }

    #[test]
    fn token_with_quotes_and_unicode_is_escaped_correctly() {
        let token = "a\"b\\c/\u{1}\n\u{7f}é\u{2028}😀";
        let token_json = serde_json::to_string(token).unwrap();
        let out = inject_token(
            br#"{"params":{"token":"{{token}}"}}"#,
            TokenField::Params,
            token_json.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            out,
            format!(r#"{{"params":{{"token":{token_json}}}}}"#).into_bytes()
        );
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["params"]["token"], token);
    }

    #[test]
    fn surrogate_escapes_match_serde_json() {
        for (string, ok) in [
            (r#""\ud83d\ude00""#, true),
            (r#""\uD83D\uDE00x""#, true),
            (r#""\ud7ff\ue000""#, true),
            (r#""\ud83d""#, false),
            (r#""\ude00""#, false),
            (r#""\ude00\ud83d""#, false),
            (r#""\ud83d\u0041""#, false),
            (r#""\ud83d\ud83d\ude00""#, false),
            (r#""\ud83d\n""#, false),
            (r#""\ud83dx""#, false),
            (r#""\ud83d\""#, false),
            (r#""\ud83d\u""#, false),
        ] {
            assert_value_acceptance(string.as_bytes(), ok);
        }
    }

    #[test]
    fn escapes_match_serde_json() {
        for (string, ok) in [
            (r#""\" \\ \/ \b \f \n \r \t \u00e9 \u0000 \uFFFF""#, true),
            (r#""\x""#, false),
            (r#""\'""#, false),
            (r#""\u12""#, false),
            (r#""\u12g4""#, false),
            (r#""\"#, false),
            (r#""abc"#, false),
        ] {
            assert_value_acceptance(string.as_bytes(), ok);
        }
    }

    #[test]
    fn control_characters_in_strings_are_rejected() {
        for c in (0u8..0x20).chain([0x7f]) {
            let string = [b'"', b'a', c, b'b', b'"'];
            assert_value_acceptance(&string, c == 0x7f);
        }
        let long = format!("\"{}\u{1}{}\"", "x".repeat(100), "y".repeat(100));
        assert_value_acceptance(long.as_bytes(), false);
        // Keys are strings too.
        assert!(matches!(
            params("{\"a\tb\":1}"),
            Err(InjectError::NotJson { .. })
        ));
    }

    #[test]
    fn numbers_match_serde_json() {
        let huge_int = format!("1{}", "0".repeat(400));
        let big_int = format!("1{}", "0".repeat(300));
        let long_fraction = format!("0.{}1", "0".repeat(400));
        let long_zero_exp = format!("1e{}5", "0".repeat(30));
        for (number, ok) in [
            ("0", true),
            ("-0", true),
            ("-0.0e-0", true),
            ("123456789012345678901234567890", true),
            ("1.5", true),
            ("1E+5", true),
            ("1e-5", true),
            ("1.7976931348623157e308", true),
            ("1e-400", true),
            ("-1e-99999999999999999999", true),
            ("0e99999999999999999999", true),
            ("0.0e400", true),
            (&big_int, true),
            (&long_fraction, true),
            (&long_zero_exp, true),
            ("1.8e308", false),
            ("1e400", false),
            ("-1e400", false),
            ("1e99999999999999999999", false),
            (&huge_int, false),
            ("01", false),
            ("-01", false),
            ("00", false),
            ("1.", false),
            (".5", false),
            ("1e", false),
            ("1e+", false),
            ("1.e5", false),
            ("-", false),
            ("--1", false),
            ("+1", false),
            ("0x10", false),
            ("1_000", false),
            ("Infinity", false),
            ("NaN", false),
        ] {
            assert_value_acceptance(number.as_bytes(), ok);
        }
    }

    #[test]
    fn literals_and_separators_match_serde_json() {
        for (value, ok) in [
            ("true", true),
            ("[true,false,null]", true),
            ("tru", false),
            ("nul", false),
            ("falsey", false),
            ("True", false),
            ("[1,]", false),
            ("[,1]", false),
            ("[1 2]", false),
            (r#"{"a":1,}"#, false),
            (r#"{"a" 1}"#, false),
            (r#"{a:1}"#, false),
            (r#"{1:1}"#, false),
            (r#"{"a":1 "b":2}"#, false),
            ("[1]\u{b}", false),
        ] {
            assert_value_acceptance(value.as_bytes(), ok);
        }
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        // The body object and `params` are two levels; serde_json allows 127 in all.
        for (depth, ok) in [(125, true), (126, false)] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_value_acceptance(nested.as_bytes(), ok);
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!is_valid_json(deep.as_bytes()));
    }

    // The reference: serde_json's parse-and-set, plus what a `Value` cannot see (duplicate `params`).

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Injected(Value),
        NotJson,
        NotJsonRpc,
    }

    fn reference(body: &[u8], field: TokenField, token: &Value) -> Outcome {
        let Ok(mut parsed) = serde_json::from_slice::<Value>(body) else {
            return Outcome::NotJson;
        };
        let shaped = match &mut parsed {
            Value::Object(call) => set(call, field, token),
            Value::Array(calls) => {
                !calls.is_empty()
                    && calls.iter_mut().all(|call| {
                        call.as_object_mut()
                            .is_some_and(|call| set(call, field, token))
                    })
            }
            _ => false,
        };
        if !shaped || (field == TokenField::Params && has_duplicate_params(body)) {
            Outcome::NotJsonRpc
        } else {
            Outcome::Injected(parsed)
        }
    }

    fn set(call: &mut Map<String, Value>, field: TokenField, token: &Value) -> bool {
        match field {
            TokenField::TopLevel => {
                call.insert("token".to_owned(), token.clone());
                true
            }
            TokenField::Params => match call.get_mut("params") {
                None | Some(Value::Null) => {
                    call.insert("params".to_owned(), json!({ "token": token }));
                    true
                }
                Some(Value::Object(params)) => {
                    params.insert("token".to_owned(), token.clone());
                    true
                }
                Some(_) => false,
            },
        }
    }

    /// Whether a call object (the body or a batch element) names `params` twice.
    fn has_duplicate_params(body: &[u8]) -> bool {
        struct Duplicates;

        impl<'de> DeserializeSeed<'de> for Duplicates {
            type Value = bool;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
                d.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for Duplicates {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a call or a batch")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                let mut seen = 0;
                while let Some(key) = map.next_key::<String>()? {
                    seen += usize::from(key == "params");
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(seen > 1)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
                let mut any = false;
                while let Some(duplicate) = seq.next_element_seed(Duplicates)? {
                    any |= duplicate;
                }
                Ok(any)
            }
        }

        Duplicates
            .deserialize(&mut serde_json::Deserializer::from_slice(body))
            .unwrap()
    }

    fn check_against_reference(
        body: &[u8],
        field: TokenField,
        token: &str,
    ) -> Result<(), TestCaseError> {
        let token_json = serde_json::to_string(token).unwrap();
        let got = inject_token(body, field, token_json.as_bytes());
        let want = reference(body, field, &Value::String(token.to_owned()));
        let shown = String::from_utf8_lossy(body);
        match (want, got) {
            (Outcome::Injected(want), Ok(out)) => {
                let out: Value = serde_json::from_slice(&out).map_err(|e| {
                    TestCaseError::fail(format!(
                        "output is not JSON ({e}): {}",
                        String::from_utf8_lossy(&out)
                    ))
                })?;
                prop_assert_eq!(out, want, "{:?} on {}", field, shown);
            }
            (Outcome::NotJson, Err(InjectError::NotJson { .. })) => {}
            (Outcome::NotJsonRpc, Err(e)) if !matches!(e, InjectError::NotJson { .. }) => {}
            (want, got) => prop_assert!(
                false,
                "{field:?} on {shown}: reference {want:?}, got {got:?}"
            ),
        }
        Ok(())
    }

    fn token_field() -> impl Strategy<Value = TokenField> {
        prop_oneof![Just(TokenField::Params), Just(TokenField::TopLevel)]
    }

    proptest! {
        #[test]
        fn injected_body_parses_like_serde_json_parse_and_set(
            request in request(false),
            style in style(),
            field in token_field(),
            token in text(),
        ) {
            let body = write(&request, style);
            let token_json = serde_json::to_string(&token).unwrap();
            let out = inject_token(&body, field, token_json.as_bytes());
            prop_assert!(out.is_ok(), "{:?} on {}: {:?}", field, String::from_utf8_lossy(&body), out);
            check_against_reference(&body, field, &token)?;
        }

        #[test]
        fn acceptance_matches_serde_json_on_mutated_requests(
            request in request(true),
            style in style(),
            mutations in mutations(),
            field in token_field(),
            token in text(),
        ) {
            let body = mutate(write(&request, style), &mutations);
            check_against_reference(&body, field, &token)?;
        }

        #[test]
        fn acceptance_matches_serde_json_on_hand_written_json(
            body in raw_json(),
            mutations in mutations(),
            field in token_field(),
        ) {
            check_against_reference(&body, field, "t")?;
            check_against_reference(&mutate(body, &mutations), field, "t")?;
        }

        #[test]
        fn acceptance_matches_serde_json_on_noise(body in noise(), field in token_field()) {
            check_against_reference(&body, field, "t")?;
        }
    }

    #[test]
    fn generated_styles_are_json() {
        let value = json!({"params": {"token": "😀\"é"}});
        for style in [Style::Compact, Style::Pretty, Style::Escaped] {
            assert_eq!(
                serde_json::from_slice::<Value>(&write(&value, style)).unwrap(),
                value
            );
        }
    }
}
