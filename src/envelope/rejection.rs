//! Recognising the gateway's "token rejected" answer.

use std::fmt;

use memchr::memmem::Finder;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scan::is_valid_json;

/// Recognises the gateway's "token rejected" answer in a JSON-RPC response body: `{"error":{"code":-9999,...}}`.
///
/// A body is a rejection when it is valid JSON (exactly what `serde_json::from_slice::<serde_json::Value>`
/// accepts) and either
/// * an object whose `error` member is an object whose `code` member is an **integer** equal to the code, or
/// * a non-empty array (a batch) in which **every** element is such an object. When only some calls of a
///   batch were rejected the others may have run, and replaying the batch would run them twice.
///
/// Anything else is not a rejection: the code inside a string or under `result`, `error.code` as a string,
/// HTML error pages, truncated bodies. Duplicate keys are read like `serde_json::Value` reads them, the last
/// one counts.
///
/// Numbers: `-9999.0` and `-9.999e3` are **not** the code. JSON-RPC requires an integer code, serde_json
/// itself distinguishes them (`json!(-9999) != json!(-9999.0)`), and it keeps the fast pre-check exact: a
/// JSON integer equal to the code is always spelled exactly like the code's decimal form (JSON has no
/// leading zeros or `+`), so a body without those bytes can be answered without parsing.
///
/// Two detectors are equal when they look for the same code: the rest is derived from it.
///
/// # Examples
///
/// ```
/// use paynet_auth::policy::RejectionDetector;
///
/// let detector = RejectionDetector::new(-9999);
/// assert!(detector.is_rejection(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-9999,"message":"bad token"}}"#));
/// assert!(!detector.is_rejection(br#"{"jsonrpc":"2.0","id":1,"result":{"balance":-9999}}"#));
/// assert!(!detector.is_rejection(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no such method"}}"#));
/// ```
#[derive(Debug, Clone)]
pub struct RejectionDetector {
    code: i64,
    /// The code's decimal bytes. A body without them cannot hold the code as a JSON integer.
    finder: Finder<'static>,
}

impl PartialEq for RejectionDetector {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
    }
}

impl Eq for RejectionDetector {}

impl RejectionDetector {
    /// A detector for the JSON-RPC error code `code` (`-9999` for the Paynet gateway).
    pub fn new(code: i64) -> Self {
        let decimal = code.to_string();
        RejectionDetector {
            code,
            finder: Finder::new(decimal.as_bytes()).into_owned(),
        }
    }

    /// The error code this detector looks for.
    pub fn code(&self) -> i64 {
        self.code
    }

    /// True when the body is a JSON-RPC response (or a batch of them) whose `error.code` is the code.
    pub fn is_rejection(&self, body: &[u8]) -> bool {
        // The hot path: most responses are successes without the code's digits anywhere.
        if self.finder.find(body).is_none() {
            return false;
        }
        self.parse(body)
    }

    #[cold]
    #[inline(never)]
    fn parse(&self, body: &[u8]) -> bool {
        // The visitors below skip what they do not need with `IgnoredAny`, which does not check UTF-8,
        // surrogates or number ranges. Checking the whole body first keeps the answer exactly that of a
        // full `serde_json::Value` parse.
        if !is_valid_json(body) {
            return false;
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        matches!(Body { code: self.code }.deserialize(&mut de), Ok(true)) && de.end().is_ok()
    }
}

/// The top of a response body; yields whether it is a rejection.
struct Body {
    code: i64,
}

impl<'de> DeserializeSeed<'de> for Body {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC response or batch of responses")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        Ok(Level::Response.visit_map(map)? == Some(self.code))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut any = false;
        let mut all = true;
        while let Some(code) = seq.next_element_seed(Level::Response)? {
            any = true;
            all &= code == Some(self.code);
        }
        Ok(any && all)
    }

    // Scalars at the top are not responses: the default `invalid type` error reads as "not a rejection".
}

/// Where a value sits in a response, each level yielding the integer error code found below it, if any.
/// Every value of an unexpected type yields `None` instead of failing, so that a later duplicate key can
/// still win, as it does in `serde_json::Value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A response object (or batch element): looks at `error`.
    Response,
    /// The `error` member: looks at `code`.
    Error,
    /// The `code` member.
    Code,
}

impl<'de> DeserializeSeed<'de> for Level {
    type Value = Option<i64>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i64>, E> {
        Ok((self == Level::Code).then_some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i64>, E> {
        Ok(if self == Level::Code {
            i64::try_from(v).ok()
        } else {
            None
        })
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<i64>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<i64>, A::Error> {
        let (wanted, next) = match self {
            Level::Response => ("error", Level::Error),
            Level::Error => ("code", Level::Code),
            Level::Code => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(None);
            }
        };
        let mut found = None;
        while let Some(is_wanted) = map.next_key_seed(KeyIs(wanted))? {
            if is_wanted {
                found = map.next_value_seed(next)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A map key, compared with one name after unescaping, without allocating when it has no escapes.
struct KeyIs(&'static str);

impl<'de> DeserializeSeed<'de> for KeyIs {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::envelope::testgen::{
        mutate, mutations, noise, raw_json, raw_response_body, response_body, style, write,
    };

    const CODE: i64 = -9999;

    fn rejected(body: &str) -> bool {
        RejectionDetector::new(CODE).is_rejection(body.as_bytes())
    }

    /// The reference: a full `Value` parse, integer codes only, every element of a non-empty batch.
    fn reference(body: &[u8], code: i64) -> bool {
        let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        let one = |response: &Value| {
            response
                .as_object()
                .and_then(|r| r.get("error"))
                .and_then(Value::as_object)
                .and_then(|e| e.get("code"))
                .and_then(Value::as_i64)
                == Some(code)
        };
        match &parsed {
            Value::Array(batch) => !batch.is_empty() && batch.iter().all(one),
            response => one(response),
        }
    }

    #[test]
    fn error_with_the_code_is_a_rejection() {
        assert!(rejected(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-9999,"message":"token rejected"}}"#
        ));
        assert!(rejected(
            "{ \"error\" : { \"message\" : \"x\" , \"code\" : -9999 } }\n"
        ));
        assert!(rejected(r#"{"error":{"code":-9999}}"#));
    }

    #[test]
    fn other_error_code_is_not_a_rejection() {
        assert!(!rejected(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"-9999"}}"#
        ));
        assert!(!rejected(r#"{"error":{"code":-99990}}"#));
        assert!(!rejected(r#"{"error":{"code":-999}}"#));
        assert!(!rejected(r#"{"error":{"message":"-9999"}}"#));
    }

    #[test]
    fn success_with_the_code_in_result_or_a_string_is_not_a_rejection() {
        assert!(!rejected(r#"{"jsonrpc":"2.0","id":1,"result":-9999}"#));
        assert!(!rejected(
            r#"{"jsonrpc":"2.0","id":1,"result":{"error":{"code":-9999}}}"#
        ));
        assert!(!rejected(
            r#"{"jsonrpc":"2.0","id":1,"result":"{\"error\":{\"code\":-9999}}"}"#
        ));
        assert!(!rejected(r#"{"jsonrpc":"2.0","id":-9999,"result":null}"#));
        assert!(!rejected(r#"{"error":null,"result":[-9999]}"#));
    }

    #[test]
    fn code_must_be_an_integer() {
        assert!(!rejected(r#"{"error":{"code":-9999.0}}"#));
        assert!(!rejected(r#"{"error":{"code":-9999e0}}"#));
        assert!(!rejected(r#"{"error":{"code":"-9999"}}"#));
        assert!(!rejected(r#"{"error":{"code":[-9999]}}"#));
        assert!(!rejected(r#"{"error":{"code":{"code":-9999}}}"#));
    }

    #[test]
    fn error_must_be_an_object_in_an_object() {
        assert!(!rejected(r#"{"error":[{"code":-9999}]}"#));
        assert!(!rejected(r#"{"error":[-9999]}"#));
        assert!(!rejected(r#"[[{"error":{"code":-9999}}]]"#));
        assert!(!rejected(r#"-9999"#));
        assert!(!rejected(r#"[-9999]"#));
    }

    #[test]
    fn full_batch_is_a_rejection() {
        assert!(rejected(
            r#"[{"id":1,"error":{"code":-9999}},{"id":2,"error":{"code":-9999}}]"#
        ));
        assert!(rejected(r#" [ {"error":{"code":-9999}} ] "#));
    }

    #[test]
    fn partial_batch_is_not_a_rejection() {
        assert!(!rejected(
            r#"[{"id":1,"error":{"code":-9999}},{"id":2,"result":7}]"#
        ));
        assert!(!rejected(
            r#"[{"id":1,"error":{"code":-9999}},{"id":2,"error":{"code":-32000}}]"#
        ));
        assert!(!rejected(r#"[{"id":1,"error":{"code":-9999}},null]"#));
    }

    #[test]
    fn empty_batch_is_not_a_rejection() {
        assert!(!rejected("[]"));
    }

    #[test]
    fn non_json_is_not_a_rejection() {
        assert!(!rejected("<html><body>error -9999</body></html>"));
        assert!(!rejected(r#"{"error":{"code":-9999}"#));
        assert!(!rejected(r#"{"error":{"code":-9999}} trailing"#));
        assert!(!rejected(r#"{"error":{"code":-9999},}"#));
        assert!(!rejected(""));
        assert!(
            !RejectionDetector::new(CODE)
                .is_rejection(b"{\"error\":{\"code\":-9999},\"x\":\"\xff\"}")
        );
    }

    #[test]
    fn invalid_json_in_an_unrelated_field_is_not_a_rejection() {
        // serde_json would skip these fields without looking closely; a `Value` parse refuses them.
        assert!(!rejected(r#"{"error":{"code":-9999},"data":"\ud800"}"#));
        assert!(!rejected(r#"{"error":{"code":-9999,"data":1e400}}"#));
    }

    #[test]
    fn escaped_keys_are_read_like_serde_json() {
        assert!(rejected(r#"{"\u0065rror":{"c\u006fde":-9999}}"#));
    }

    #[test]
    fn last_duplicate_key_counts() {
        assert!(rejected(r#"{"error":"x","error":{"code":-9999}}"#));
        assert!(!rejected(r#"{"error":{"code":-9999},"error":null}"#));
        assert!(rejected(r#"{"error":{"code":"x","code":-9999}}"#));
        assert!(!rejected(r#"{"error":{"code":-9999,"code":1}}"#));
    }

    #[test]
    fn other_codes_are_detected_the_same_way() {
        let zero = RejectionDetector::new(0);
        assert_eq!(zero.code(), 0);
        assert!(zero.is_rejection(br#"{"error":{"code":0}}"#));
        assert!(!zero.is_rejection(br#"{"error":{"code":-0}}"#));
        let positive = RejectionDetector::new(401);
        assert!(positive.is_rejection(br#"{"error":{"code":401}}"#));
        assert!(!positive.is_rejection(br#"{"error":{"code":4010}}"#));
        let min = RejectionDetector::new(i64::MIN);
        assert!(min.is_rejection(br#"{"error":{"code":-9223372036854775808}}"#));
        let max = RejectionDetector::new(i64::MAX);
        assert!(max.is_rejection(br#"{"error":{"code":9223372036854775807}}"#));
        assert!(!max.is_rejection(br#"{"error":{"code":92233720368547758070}}"#));
    }

    #[test]
    fn detector_clones_keep_the_code() {
        let detector = RejectionDetector::new(CODE).clone();
        assert_eq!(detector.code(), CODE);
        assert!(detector.is_rejection(br#"{"error":{"code":-9999}}"#));
    }

    proptest! {
        #[test]
        fn detection_agrees_with_a_full_serde_json_parse(body in response_body(), style in style()) {
            let body = write(&body, style);
            let detector = RejectionDetector::new(CODE);
            prop_assert_eq!(detector.is_rejection(&body), reference(&body, CODE), "{}", String::from_utf8_lossy(&body));
        }

        #[test]
        fn detection_agrees_with_a_full_serde_json_parse_on_mutated_bodies(
            body in response_body(),
            style in style(),
            mutations in mutations(),
        ) {
            let body = mutate(write(&body, style), &mutations);
            let detector = RejectionDetector::new(CODE);
            prop_assert_eq!(detector.is_rejection(&body), reference(&body, CODE), "{}", String::from_utf8_lossy(&body));
        }

        #[test]
        fn detection_agrees_with_a_full_serde_json_parse_on_hand_written_json(
            body in prop_oneof![raw_json(), raw_response_body()],
            mutations in mutations(),
        ) {
            let detector = RejectionDetector::new(CODE);
            prop_assert_eq!(detector.is_rejection(&body), reference(&body, CODE), "{}", String::from_utf8_lossy(&body));
            let body = mutate(body, &mutations);
            prop_assert_eq!(detector.is_rejection(&body), reference(&body, CODE), "{}", String::from_utf8_lossy(&body));
        }

        #[test]
        fn detection_agrees_with_a_full_serde_json_parse_on_noise(body in noise()) {
            let detector = RejectionDetector::new(CODE);
            prop_assert_eq!(detector.is_rejection(&body), reference(&body, CODE));
        }
    }
}
