//! Reference models (oracles) for the `paynet_auth::envelope` fuzz targets, computed with serde_json alone.
//!
//! They follow the documented semantics of `inject_token` and `RejectionDetector`, not their code:
//!
//! * a body is JSON exactly when `serde_json::from_slice::<serde_json::Value>` accepts it;
//! * injecting gives, once parsed, what parsing the body and setting the token gives, both for a reader that
//!   keeps the last of duplicate keys (`serde_json::Value`) and for one that keeps the first (every duplicate
//!   `token` is replaced);
//! * a rejection is an object whose `error` is an object whose `code` is an integer equal to the code, or a
//!   non-empty array all of whose elements are.

use std::fmt;

use paynet_auth::error::InjectError;
use paynet_auth::envelope::TokenField;
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

/// The key serde_json's `raw_value` feature reserves: an object whose *first* key is this is read by
/// `Value`'s deserializer as a raw value (its string member is parsed as JSON), not as an object.
pub const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The shape errors `inject_token` can report, without their details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// [`InjectError::NotJsonRpc`]
    NotJsonRpc,
    /// [`InjectError::EmptyBatch`]
    EmptyBatch,
    /// [`InjectError::ParamsNotObject`]
    ParamsNotObject,
    /// [`InjectError::DuplicateKey`]
    DuplicateParams,
    /// A variant added after this oracle was written; never expected, so it shows as a mismatch.
    Unknown,
}

impl Shape {
    /// The shape of an error `inject_token` returned, or `None` for a syntax error.
    pub fn of(error: &InjectError) -> Option<Shape> {
        match error {
            InjectError::NotJson { .. } => None,
            InjectError::NotJsonRpc { .. } => Some(Shape::NotJsonRpc),
            InjectError::EmptyBatch => Some(Shape::EmptyBatch),
            InjectError::ParamsNotObject { .. } => Some(Shape::ParamsNotObject),
            InjectError::DuplicateKey { .. } => Some(Shape::DuplicateParams),
            _ => Some(Shape::Unknown),
        }
    }
}

/// What `inject_token` must do with a body.
#[derive(Debug, PartialEq)]
pub enum Expected {
    /// `InjectError::NotJson`.
    NotJson,
    /// The first shape error in body order.
    Shape(Shape),
    /// `Ok(out)`: `out` parsed by `Value` is `last`, parsed keeping the first duplicate is `first`.
    Injected { last: Value, first: Value },
}

/// The reference for `inject_token(body, field, token_json)` where `token_json` is `token` as a JSON string.
pub fn expected_injection(body: &[u8], field: TokenField, token: &str) -> Expected {
    let Ok(mut last) = serde_json::from_slice::<Value>(body) else {
        return Expected::NotJson;
    };
    // Same grammar, so it cannot fail where `Value` succeeded (the raw-value key aside, see
    // `RAW_VALUE_TOKEN`).
    let Ok(mut first) = first_wins(body) else {
        return Expected::NotJson;
    };
    if let Some(shape) = first_shape_error(body, field) {
        return Expected::Shape(shape);
    }
    let token = Value::String(token.to_owned());
    // The grammar says it is a call or batch with usable `params`; `Value` can still disagree when an object
    // starts with `RAW_VALUE_TOKEN`, and then `Value` is the reference.
    if !set_token(&mut last, field, &token) {
        return Expected::Shape(match last {
            Value::Object(_) => Shape::ParamsNotObject,
            Value::Array(ref calls) if calls.is_empty() => Shape::EmptyBatch,
            Value::Array(ref calls) if calls.iter().all(Value::is_object) => Shape::ParamsNotObject,
            _ => Shape::NotJsonRpc,
        });
    }
    assert!(
        set_token(&mut first, field, &token),
        "same grammar, shape checked"
    );
    Expected::Injected { last, first }
}

/// Sets the token in a call or every call of a batch, like a reader with a `Value` would. False when the
/// value has no place for it.
pub fn set_token(value: &mut Value, field: TokenField, token: &Value) -> bool {
    let set = |call: &mut Value| {
        let Some(call) = call.as_object_mut() else {
            return false;
        };
        match field {
            TokenField::TopLevel => {
                call.insert("token".to_owned(), token.clone());
                true
            }
            TokenField::Params => match call.get_mut("params") {
                None | Some(Value::Null) => {
                    let mut params = Map::new();
                    params.insert("token".to_owned(), token.clone());
                    call.insert("params".to_owned(), Value::Object(params));
                    true
                }
                Some(Value::Object(params)) => {
                    params.insert("token".to_owned(), token.clone());
                    true
                }
                Some(_) => false,
            },
        }
    };
    match value {
        Value::Array(calls) => !calls.is_empty() && calls.iter_mut().all(set),
        call => set(call),
    }
}

/// Parses JSON like `serde_json::Value` does, but keeps the *first* of duplicate keys, and without the
/// raw-value special case.
pub fn first_wins(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = FirstWins.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct FirstWins;

impl<'de> DeserializeSeed<'de> for FirstWins {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstWins {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(FirstWins)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(FirstWins)?;
            members.entry(key).or_insert(value);
        }
        Ok(Value::Object(members))
    }
}

/// Whether some object in the (valid) JSON text has [`RAW_VALUE_TOKEN`] as its first key, which makes
/// `serde_json::Value` read it differently from any other object.
pub fn has_raw_value_key(body: &[u8]) -> bool {
    struct Finder;
    impl<'de> DeserializeSeed<'de> for Finder {
        type Value = bool;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Finder {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut any = false;
            while let Some(found) = seq.next_element_seed(Finder)? {
                any |= found;
            }
            Ok(any)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut any = false;
            let mut first = true;
            while let Some(key) = map.next_key::<String>()? {
                any |= first && key == RAW_VALUE_TOKEN;
                first = false;
                any |= map.next_value_seed(Finder)?;
            }
            Ok(any)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    Finder.deserialize(&mut de).unwrap_or(false)
}

/// The kind of a JSON value, read without keeping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Object,
    Other,
}

struct KindOf;

impl<'de> DeserializeSeed<'de> for KindOf {
    type Value = Kind;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindOf {
    type Value = Kind;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kind::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Kind::Object)
    }
}

/// The first shape error of a body that is valid JSON, in body order, as `inject_token` documents them:
/// the body must be an object or a non-empty array of objects; with `Params`, each call's `params` must be
/// missing, `null` or an object, and must not occur twice (decoded keys: `"para\u006ds"` is `params`).
pub fn first_shape_error(body: &[u8], field: TokenField) -> Option<Shape> {
    struct Top(TokenField);
    struct Call(TokenField);

    fn call_members<'de, A: MapAccess<'de>>(
        mut map: A,
        field: TokenField,
    ) -> Result<Option<Shape>, A::Error> {
        let mut error = None;
        let mut params_seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if field == TokenField::Params && key == "params" {
                if params_seen {
                    error = error.or(Some(Shape::DuplicateParams));
                }
                params_seen = true;
                if map.next_value_seed(KindOf)? == Kind::Other {
                    error = error.or(Some(Shape::ParamsNotObject));
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(error)
    }

    impl<'de> DeserializeSeed<'de> for Call {
        type Value = Option<Shape>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Shape>, D::Error> {
            match d.deserialize_any(CallVisitor(self.0))? {
                Ok(shape) => Ok(shape),
                Err(IgnoredAny) => Ok(Some(Shape::NotJsonRpc)),
            }
        }
    }

    /// `Err` for a value that is not an object (consumed).
    struct CallVisitor(TokenField);

    impl<'de> Visitor<'de> for CallVisitor {
        type Value = Result<Option<Shape>, IgnoredAny>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Err(IgnoredAny))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Err(IgnoredAny))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Err(IgnoredAny))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Err(IgnoredAny))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Err(IgnoredAny))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Err(IgnoredAny))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Err(IgnoredAny))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            call_members(map, self.0).map(Ok)
        }
    }

    impl<'de> Visitor<'de> for Top {
        type Value = Option<Shape>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a call or a batch")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<Shape>, E> {
            Ok(Some(Shape::NotJsonRpc))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<Shape>, E> {
            Ok(Some(Shape::NotJsonRpc))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<Shape>, E> {
            Ok(Some(Shape::NotJsonRpc))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<Shape>, E> {
            Ok(Some(Shape::NotJsonRpc))
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<Shape>, E> {
            Ok(Some(Shape::NotJsonRpc))
        }
        fn visit_unit<E>(self) -> Result<Option<Shape>, E> {
            Ok(Some(Shape::NotJsonRpc))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Shape>, A::Error> {
            let mut error = None;
            let mut empty = true;
            while let Some(shape) = seq.next_element_seed(Call(self.0))? {
                empty = false;
                error = error.or(shape);
            }
            Ok(if empty {
                Some(Shape::EmptyBatch)
            } else {
                error
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Shape>, A::Error> {
            call_members(map, self.0)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_any(Top(field))
        .expect("first_shape_error is only called on valid JSON")
}

/// The reference for `RejectionDetector::new(code).is_rejection(body)`: a full `Value` parse.
pub fn expected_rejection(parsed: Option<&Value>, code: i64) -> bool {
    let one = |response: &Value| {
        response
            .as_object()
            .and_then(|r| r.get("error"))
            .and_then(Value::as_object)
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
            == Some(code)
    };
    match parsed {
        None => false,
        Some(Value::Array(batch)) => !batch.is_empty() && batch.iter().all(one),
        Some(response) => one(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let p = TokenField::Params;
        let t = TokenField::TopLevel;
        assert_eq!(first_shape_error(b"1", p), Some(Shape::NotJsonRpc));
        assert_eq!(first_shape_error(b"[]", t), Some(Shape::EmptyBatch));
        assert_eq!(first_shape_error(b"[{},1]", p), Some(Shape::NotJsonRpc));
        assert_eq!(
            first_shape_error(br#"{"params":[]}"#, p),
            Some(Shape::ParamsNotObject)
        );
        assert_eq!(first_shape_error(br#"{"params":[]}"#, t), None);
        assert_eq!(
            first_shape_error(br#"{"params":1,"params":{}}"#, p),
            Some(Shape::ParamsNotObject)
        );
        assert_eq!(
            first_shape_error(br#"[{"para\u006ds":{},"params":1}]"#, p),
            Some(Shape::DuplicateParams)
        );
        assert_eq!(
            first_shape_error(br#"[{"params":null},{"a":{"params":1}}]"#, p),
            None
        );
    }

    #[test]
    fn first_and_last_duplicates() {
        let body = br#"{"params":{"token":1,"token":2}}"#;
        assert_eq!(first_wins(body).unwrap()["params"]["token"], 1);
        assert_eq!(
            serde_json::from_slice::<Value>(body).unwrap()["params"]["token"],
            2
        );
        let Expected::Injected { last, first } = expected_injection(body, TokenField::Params, "t")
        else {
            panic!()
        };
        assert_eq!(last, first);
        assert_eq!(last["params"]["token"], "t");
    }

    #[test]
    fn raw_value_key() {
        assert!(has_raw_value_key(
            br#"[{"$serde_json::private::RawValue":"1"}]"#
        ));
        assert!(has_raw_value_key(
            br#"{"\u0024serde_json::private::RawValue":"1"}"#
        ));
        assert!(!has_raw_value_key(
            br#"{"a":1,"$serde_json::private::RawValue":"1"}"#
        ));
    }

    #[test]
    fn rejections() {
        let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
        assert!(expected_rejection(
            parse(r#"{"error":{"code":-9999}}"#).as_ref(),
            -9999
        ));
        assert!(!expected_rejection(
            parse(r#"{"error":{"code":-9999.0}}"#).as_ref(),
            -9999
        ));
        assert!(!expected_rejection(parse("[]").as_ref(), -9999));
    }
}
