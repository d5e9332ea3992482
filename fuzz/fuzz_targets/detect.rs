//! Differential fuzzing of `paynet_auth::envelope::RejectionDetector::is_rejection` against a full
//! `serde_json::from_slice::<Value>` parse.
//!
//! The whole input is the response body. For the Paynet code -9999 (and a few other codes, to exercise the
//! pre-filter on other digit strings and the i64 edges), `is_rejection` must equal the reference: an object
//! whose `error` is an object whose `code` is an integer equal to the code, or a non-empty array all of
//! whose elements are such objects; anything else, invalid JSON included, is not a rejection.
//!
//! Bodies with an object whose first key is serde_json's private `$serde_json::private::RawValue` are skipped:
//! there the reference reads serde_json's internal marker, not JSON (see the README).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use paynet_auth::envelope::RejectionDetector;
use paynet_auth_fuzz::{expected_rejection, has_raw_value_key};
use serde_json::Value;

const CODES: [i64; 6] = [-9999, 0, 401, -32000, i64::MIN, i64::MAX];

static DETECTORS: LazyLock<Vec<RejectionDetector>> = LazyLock::new(|| {
    CODES
        .iter()
        .map(|&code| RejectionDetector::new(code))
        .collect()
});


fuzz_target!(|body: &[u8]| {
    // Not JSON semantics but serde_json's private raw-value marker: the reference cannot judge these bodies.
    if has_raw_value_key(body) {
        return;
    }
    let parsed = serde_json::from_slice::<Value>(body).ok();
    for detector in DETECTORS.iter() {
        let code = detector.code();
        assert_eq!(
            detector.is_rejection(body),
            expected_rejection(parsed.as_ref(), code),
            "code {code} on b\"{}\" (serde_json parse: {parsed:?})",
            body.escape_ascii()
        );
    }
});
