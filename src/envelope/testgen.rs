//! Proptest generators shared by the envelope tests: JSON values with awkward strings, JSON-RPC calls and
//! responses, three ways of writing them, and byte mutations.

use std::io;

use proptest::prelude::*;
use proptest::sample::select;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Strings with the characters that need care: quotes, backslashes, control characters, non-ASCII up to
/// outside the BMP (a surrogate pair when escaped), and the rejection code.
pub(crate) fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        1 => Just('"'),
        1 => Just('\\'),
        1 => Just('/'),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => Just('\u{7f}'),
        1 => Just('é'),
        1 => Just('\u{2028}'),
        1 => Just('😀'),
        1 => any::<char>(),
    ];
    prop_oneof![
        8 => prop::collection::vec(ch, 0..8).prop_map(String::from_iter),
        1 => Just("-9999".to_owned()),
    ]
}

/// Member names, with the ones the token code looks at over-represented.
pub(crate) fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => text(),
        1 => Just("token".to_owned()),
        1 => Just("params".to_owned()),
        1 => Just("error".to_owned()),
        1 => Just("code".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become `null`.
        any::<f64>().prop_map(Value::from),
        Just(json!(-9999)),
    ]
}

/// Any JSON value, a few levels deep.
pub(crate) fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn members(n: std::ops::Range<usize>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), value()), n).prop_map(|m| m.into_iter().collect())
}

/// A JSON-RPC call with an optional existing token (any type) at the top and in `params`. `params` is
/// missing, `null` or an object; with `any_params` also any other value.
pub(crate) fn call(any_params: bool) -> impl Strategy<Value = Value> {
    let params_object =
        (members(0..4), prop::option::of(value())).prop_map(|(mut params, token)| {
            if let Some(token) = token {
                params.insert("token".to_owned(), token);
            }
            Value::Object(params)
        });
    let params = if any_params {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            params_object.prop_map(Some),
            value().prop_map(Some)
        ]
        .boxed()
    } else {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            params_object.prop_map(Some)
        ]
        .boxed()
    };
    (
        members(0..3),
        text(),
        prop::option::of(value()),
        params,
        prop::option::of(value()),
    )
        .prop_map(|(mut call, method, id, params, token)| {
            call.insert("jsonrpc".to_owned(), json!("2.0"));
            call.insert("method".to_owned(), Value::String(method));
            if let Some(id) = id {
                call.insert("id".to_owned(), id);
            }
            match params {
                Some(params) => call.insert("params".to_owned(), params),
                None => call.remove("params"),
            };
            if let Some(token) = token {
                call.insert("token".to_owned(), token);
            }
            Value::Object(call)
        })
}

/// A call or a non-empty batch of calls.
pub(crate) fn request(any_params: bool) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => call(any_params),
        1 => prop::collection::vec(call(any_params), 1..4).prop_map(Value::Array),
    ]
}

/// A JSON-RPC response: success, error with all sorts of `code`, or something odd in `error`.
pub(crate) fn response() -> impl Strategy<Value = Value> {
    let code = prop_oneof![
        4 => Just(json!(-9999)),
        1 => Just(json!(-9999.0)),
        1 => Just(json!("-9999")),
        1 => Just(json!(-99990)),
        1 => Just(json!(9999)),
        1 => any::<i64>().prop_map(Value::from),
        1 => value(),
    ];
    let error = prop_oneof![
        4 => (members(0..2), prop::option::weighted(0.9, code), text()).prop_map(|(mut error, code, message)| {
            if let Some(code) = code {
                error.insert("code".to_owned(), code);
            }
            error.insert("message".to_owned(), Value::String(message));
            Value::Object(error)
        }),
        1 => value(),
    ];
    let result = prop_oneof![
        Just(json!(-9999)),
        Just(json!({"balance": -9999, "note": "-9999"})),
        value()
    ];
    (
        members(0..2),
        prop::option::weighted(0.8, error),
        prop::option::of(result),
        prop::option::of(value()),
    )
        .prop_map(|(mut response, error, result, id)| {
            response.insert("jsonrpc".to_owned(), json!("2.0"));
            response.remove("error");
            if let Some(error) = error {
                response.insert("error".to_owned(), error);
            }
            if let Some(result) = result {
                response.insert("result".to_owned(), result);
            }
            if let Some(id) = id {
                response.insert("id".to_owned(), id);
            }
            Value::Object(response)
        })
}

/// A response, a batch of them (possibly empty) or any value.
pub(crate) fn response_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => response(),
        3 => prop::collection::vec(response(), 0..4).prop_map(Value::Array),
        1 => value(),
    ]
}

/// How a generated value is written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Style {
    Compact,
    Pretty,
    /// Every character of every string and key as a `\uXXXX` escape (surrogate pairs outside the BMP).
    Escaped,
}

pub(crate) fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        Just(Style::Compact),
        Just(Style::Pretty),
        Just(Style::Escaped)
    ]
}

struct EscapeEverything;

impl serde_json::ser::Formatter for EscapeEverything {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for unit in fragment.encode_utf16() {
            write!(writer, "\\u{unit:04x}")?;
        }
        Ok(())
    }
}

pub(crate) fn write(value: &Value, style: Style) -> Vec<u8> {
    match style {
        Style::Compact => serde_json::to_vec(value).unwrap(),
        Style::Pretty => serde_json::to_vec_pretty(value).unwrap(),
        Style::Escaped => {
            let mut out = Vec::new();
            value
                .serialize(&mut serde_json::Serializer::with_formatter(
                    &mut out,
                    EscapeEverything,
                ))
                .unwrap();
            out
        }
    }
}

/// One byte-level change to a body.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => select(b"{}[]\",:\\ \t\n-+.0123456789eEtrufalsnd/\x00\x1f\x7f\xc3\xa9\xed\xff".to_vec()),
        1 => any::<u8>(),
    ]
}

pub(crate) fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), interesting_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<usize>(), interesting_byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ];
    prop::collection::vec(one, 0..4)
}

pub(crate) fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match *mutation {
            Mutation::Insert(at, b) => body.insert(at % (body.len() + 1), b),
            Mutation::Replace(at, b) if !body.is_empty() => {
                let at = at % body.len();
                body[at] = b;
            }
            Mutation::Delete(at) if !body.is_empty() => {
                body.remove(at % body.len());
            }
            Mutation::Replace(..) | Mutation::Delete(_) => {}
        }
    }
    body
}

/// Short byte strings: noise, or JSON-looking noise.
pub(crate) fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        prop::collection::vec(interesting_byte(), 0..48),
    ]
}

/// A string literal written by hand, mostly valid: escapes of every kind including lone and paired
/// surrogates, raw control characters, non-ASCII and broken UTF-8.
fn raw_string() -> impl Strategy<Value = Vec<u8>> {
    let hex = prop_oneof![
        3 => select(vec![0x0000u16, 0x001f, 0x0020, 0x0041, 0x0065, 0x006d, 0x00e9, 0x2028, 0xd7ff, 0xe000, 0xffff]),
        1 => select(vec![0xd800u16, 0xd83d, 0xdbff, 0xdc00, 0xde00, 0xdfff]),
        1 => any::<u16>(),
    ];
    let piece = prop_oneof![
        12 => "[a-z]{1,4}".prop_map(String::into_bytes),
        2 => Just(b"-9999".to_vec()),
        4 => select(vec![&b"\\\""[..], b"\\\\", b"\\/", b"\\b", b"\\f", b"\\n", b"\\r", b"\\t"]).prop_map(<[u8]>::to_vec),
        1 => select(vec![&b"\\x"[..], b"\\'", b"\\"]).prop_map(<[u8]>::to_vec),
        4 => (hex, any::<bool>()).prop_map(|(u, upper)| {
            if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") }.into_bytes()
        }),
        2 => Just(b"\\ud83d\\ude00".to_vec()),
        1 => (0u8..0x20).prop_map(|c| vec![c]),
        3 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
        1 => select(vec![&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x7f"]).prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..4)
        .prop_map(|pieces| [&b"\""[..], &pieces.concat(), b"\""].concat())
}

/// A number written by hand, mostly valid, with exponents and lengths around the `f64` limit.
fn raw_number() -> impl Strategy<Value = Vec<u8>> {
    let sign = prop_oneof![8 => Just(""), 3 => Just("-"), 1 => Just("+")];
    let int = prop_oneof![
        3 => Just("0".to_owned()),
        2 => Just("9999".to_owned()),
        6 => "[1-9][0-9]{0,3}",
        2 => (290usize..320).prop_map(|n| format!("1{}", "7".repeat(n))),
        1 => Just("01".to_owned()),
        1 => Just(String::new()),
    ];
    let frac =
        prop_oneof![8 => Just(String::new()), 4 => "\\.[0-9]{1,3}", 1 => Just(".".to_owned())];
    let digits = prop_oneof![
        3 => Just("0".to_owned()),
        6 => (280u32..320).prop_map(|e| e.to_string()),
        2 => Just("400".to_owned()),
        1 => Just("99999999999999999999".to_owned()),
        1 => Just(String::new()),
    ];
    let exp = prop_oneof![3 => Just(String::new()), 2 => ("[eE]", "[+-]?", digits).prop_map(|(e, s, d)| format!("{e}{s}{d}"))];
    (sign, int, frac, exp)
        .prop_map(|(sign, int, frac, exp)| format!("{sign}{int}{frac}{exp}").into_bytes())
}

fn raw_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => raw_string(),
        1 => select(vec![&b"\"params\""[..], b"\"para\\u006ds\"", b"\"token\"", b"\"tok\\u0065n\"", b"\"error\"", b"\"code\""])
            .prop_map(<[u8]>::to_vec),
    ]
}

fn ws() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        12 => Just(&b""[..]),
        4 => select(vec![&b" "[..], b"\n  ", b"\t", b"\r\n"]),
        1 => select(vec![&b"\x0b"[..], b"\xc2\xa0", b"\x0c"]),
    ]
}

/// JSON written by hand at the text level, so that everything serde_json's writer never produces turns up:
/// escaped keys, lone surrogates, numbers out of range, duplicate keys, odd whitespace, trailing commas.
pub(crate) fn raw_json() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        3 => raw_string(),
        3 => raw_number(),
        2 => Just(b"-9999".to_vec()),
        1 => select(vec![&b"true"[..], b"false", b"null", b"nul"]).prop_map(<[u8]>::to_vec),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        let array = (
            prop::collection::vec((ws(), inner.clone(), ws()), 0..4),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(items, trailing_comma)| {
                let items: Vec<Vec<u8>> = items
                    .into_iter()
                    .map(|(a, v, b)| [a, &v, b].concat())
                    .collect();
                [
                    &b"["[..],
                    &items.join(&b","[..]),
                    if trailing_comma { b"," } else { b"" },
                    b"]",
                ]
                .concat()
            });
        let object = (
            prop::collection::vec((raw_key(), ws(), ws(), inner), 0..4),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(members, trailing_comma)| {
                let members: Vec<Vec<u8>> = members
                    .into_iter()
                    .map(|(k, a, b, v)| [&k, a, b":", b, &v].concat())
                    .collect();
                [
                    &b"{"[..],
                    &members.join(&b","[..]),
                    if trailing_comma { b"," } else { b"" },
                    b"}",
                ]
                .concat()
            });
        prop_oneof![array, object]
    });
    (ws(), value, ws()).prop_map(|(a, v, b)| [a, &v, b].concat())
}

/// Members written by hand, joined with commas and ending in one when there are any.
fn raw_members() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((raw_key(), ws(), raw_json()), 0..2).prop_map(|members| {
        members
            .into_iter()
            .map(|(k, a, v)| [&k, a, b":", &v, b","].concat())
            .collect::<Vec<_>>()
            .concat()
    })
}

/// A response written by hand around `"error":{"code":…}`, with hand-written members around each part, so
/// that a rejection is common and its neighbours can be anything, valid or not.
fn raw_response() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![3 => Just(b"-9999".to_vec()), 1 => raw_number(), 1 => raw_json()];
    (
        raw_members(),
        raw_members(),
        ws(),
        code,
        ws(),
        raw_members(),
        raw_members(),
    )
        .prop_map(|(before, error_before, a, code, b, error_after, after)| {
            [
                &b"{"[..],
                &before,
                b"\"error\":{",
                &error_before,
                b"\"code\":",
                a,
                &code,
                b,
                if error_after.is_empty() { b"" } else { b"," },
                error_after.strip_suffix(b",").unwrap_or(&error_after),
                b"}",
                if after.is_empty() { b"" } else { b"," },
                after.strip_suffix(b",").unwrap_or(&after),
                b"}",
            ]
            .concat()
        })
}

/// A hand-written response or batch of them.
pub(crate) fn raw_response_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => raw_response(),
        1 => prop::collection::vec(raw_response(), 0..3).prop_map(|batch| [&b"["[..], &batch.join(&b","[..]), b"]"].concat()),
    ]
}
