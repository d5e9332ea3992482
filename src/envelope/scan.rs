//! The validating pass over a JSON body, shared by the splice (which also records where the token goes) and the
//! rejection detection (which only validates).
//!
//! The scanner accepts exactly what `serde_json::from_slice::<serde_json::Value>` accepts, so a body is never
//! sent that the caller's own serde_json-based tooling would have called broken, and never refused when it
//! would have been accepted. (One exception, on purpose: with serde_json's `raw_value` feature, `Value` reads
//! an object whose first key is `"$serde_json::private::RawValue"` as serde_json's private marker; the scanner
//! reads it as the ordinary object it is in JSON, as the gateway does.) The details that decide this:
//!
//! * whitespace is only space, tab, line feed and carriage return; anything after the value but whitespace
//!   is an error;
//! * the whole body must be UTF-8: serde_json checks every string, and outside strings any non-ASCII byte
//!   is a syntax error anyway, so checking the strings that contain non-ASCII bytes is the same test;
//! * raw control characters (below 0x20) inside strings are errors;
//! * `\u` escapes must form valid UTF-16: a lone surrogate, leading or trailing, is an error (serde_json
//!   only lets lone surrogates through when it deserialises into bytes or skips a string, never when it
//!   builds a `Value`);
//! * numbers follow the JSON grammar, and a number whose value overflows `f64` (`1e400`) is an error like
//!   in serde_json (without its `arbitrary_precision` feature);
//! * at most 127 arrays/objects may be nested, serde_json's recursion limit.

use memchr::memchr2;

use super::edit::{Edit, Edits};
use super::field::TokenField;
use crate::error::InjectError;

/// True when `serde_json::from_slice::<serde_json::Value>` would accept `body`, found without building one.
pub(super) fn is_valid_json(body: &[u8]) -> bool {
    Scanner::new(body, None).document().is_ok()
}

/// serde_json refuses the 128th nested array or object.
const MAX_DEPTH: u32 = 127;

/// A number below 10^300 cannot overflow `f64` (whose maximum is about 1.8e308) however it is rounded. Above
/// that (integer digits plus positive exponent), serde_json's own parser decides, so that the edge agrees
/// with it to the last digit.
const LONG_NUMBER: usize = 300;

/// A member key, as far as the token cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Params,
    Token,
    Other,
}

type Scan<T = ()> = Result<T, InjectError>;

/// The single validating pass. Methods start with `pos` on the first byte of what they read (whitespace
/// already skipped) and leave it just after it.
pub(super) struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    depth: u32,
    /// `None` only validates.
    field: Option<TokenField>,
    /// The edits found so far, in body order.
    pub(super) edits: Edits,
    /// The first shape error. Kept aside rather than returned so that the rest of the body is still checked:
    /// a body that is not JSON at all must be reported as such.
    pub(super) shape: Option<InjectError>,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(b: &'a [u8], field: Option<TokenField>) -> Self {
        Scanner {
            b,
            pos: 0,
            depth: 0,
            field,
            edits: Edits::default(),
            shape: None,
        }
    }

    fn edit(&mut self, edit: Edit) {
        self.edits.push(edit);
    }

    #[cold]
    #[inline(never)]
    fn fail<T>(&self, reason: &'static str) -> Scan<T> {
        Err(InjectError::NotJson {
            reason,
            offset: self.pos.min(self.b.len()),
        })
    }

    #[cold]
    fn shape_error(&mut self, error: InjectError) {
        if self.shape.is_none() {
            self.shape = Some(error);
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    pub(super) fn document(&mut self) -> Scan {
        self.skip_ws();
        match (self.field, self.peek()) {
            (None, _) => self.value()?,
            (Some(_), Some(b'{')) => self.call()?,
            (Some(_), Some(b'[')) => self.batch()?,
            (Some(_), other) => {
                self.shape_error(InjectError::NotJsonRpc { found: kind(other) });
                self.value()?;
            }
        }
        self.skip_ws();
        if self.pos != self.b.len() {
            return self.fail("trailing characters after the JSON value");
        }
        Ok(())
    }

    fn batch(&mut self) -> Scan {
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            self.shape_error(InjectError::EmptyBatch);
            return Ok(());
        }
        loop {
            match self.peek() {
                Some(b'{') => self.call()?,
                other => {
                    self.shape_error(InjectError::NotJsonRpc {
                        found: batch_kind(other),
                    });
                    self.value()?;
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => break,
                _ => return self.fail("expected `,` or `]` in array"),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// A call object of the body or of a batch.
    fn call(&mut self) -> Scan {
        let open = self.pos;
        let field = self.field;
        let mut params_seen = false;
        let mut token_seen = false;
        let has_members = self.members(true, |s, key| match (field, key) {
            (Some(TokenField::Params), Key::Params) => {
                if params_seen {
                    s.shape_error(InjectError::DuplicateKey { key: "params" });
                }
                params_seen = true;
                s.params_value()
            }
            (Some(TokenField::TopLevel), Key::Token) => {
                token_seen = true;
                s.token_value()
            }
            _ => s.value(),
        })?;
        // An edit inside this object would have set one of the flags, so an insertion at its start still
        // comes after every edit applied so far.
        let insert = match field {
            Some(TokenField::Params) if !params_seen => Edit::InsertParams {
                at: open + 1,
                comma: has_members,
            },
            Some(TokenField::TopLevel) if !token_seen => Edit::InsertToken {
                at: open + 1,
                comma: has_members,
            },
            _ => return Ok(()),
        };
        self.edit(insert);
        Ok(())
    }

    fn params_value(&mut self) -> Scan {
        match self.peek() {
            Some(b'{') => {
                let open = self.pos;
                let mut token_seen = false;
                let has_members = self.members(true, |s, key| {
                    if key == Key::Token {
                        token_seen = true;
                        s.token_value()
                    } else {
                        s.value()
                    }
                })?;
                if !token_seen {
                    self.edit(Edit::InsertToken {
                        at: open + 1,
                        comma: has_members,
                    });
                }
                Ok(())
            }
            Some(b'n') => {
                let start = self.pos;
                self.literal(b"null")?;
                self.edit(Edit::NullParams {
                    start,
                    end: self.pos,
                });
                Ok(())
            }
            other => {
                self.shape_error(InjectError::ParamsNotObject { found: kind(other) });
                self.value()
            }
        }
    }

    fn token_value(&mut self) -> Scan {
        let start = self.pos;
        self.value()?;
        self.edit(Edit::Replace {
            start,
            end: self.pos,
        });
        Ok(())
    }

    #[inline]
    fn enter(&mut self) -> Scan {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail("nested deeper than serde_json's recursion limit");
        }
        self.pos += 1;
        Ok(())
    }

    /// Reads an object, calling `member` with `pos` on each member's value; `member` must read the value.
    /// Keys are only classified when `classify` is set. Returns whether the object has members.
    #[inline(always)]
    fn members(
        &mut self,
        classify: bool,
        mut member: impl FnMut(&mut Self, Key) -> Scan,
    ) -> Scan<bool> {
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(false);
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.fail("expected a string key");
            }
            let key = if classify {
                self.key()?
            } else {
                self.string().map(|_| Key::Other)?
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return self.fail("expected `:` after an object key");
            }
            self.pos += 1;
            self.skip_ws();
            member(self, key)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => break,
                _ => return self.fail("expected `,` or `}` in object"),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(true)
    }

    /// Scalars are read in place; only nested containers cost a call. Most values in a body are scalars,
    /// and a call per value was a large share of the scan.
    #[inline(always)]
    fn value(&mut self) -> Scan {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{' | b'[') => self.container(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.fail("expected a JSON value"),
            None => self.fail("unexpected end of body"),
        }
    }

    #[inline(never)]
    fn container(&mut self) -> Scan {
        if self.b[self.pos] == b'{' {
            self.members(false, |s, _| s.value()).map(drop)
        } else {
            self.array()
        }
    }

    #[inline(always)]
    fn array(&mut self) -> Scan {
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.value()?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => break,
                _ => return self.fail("expected `,` or `]` in array"),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Scan {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.fail("invalid literal")
        }
    }

    #[inline(always)]
    fn key(&mut self) -> Scan<Key> {
        let start = self.pos;
        let escaped = self.string()?;
        let literal = &self.b[start..self.pos];
        Ok(match &literal[1..literal.len() - 1] {
            b"params" => Key::Params,
            b"token" => Key::Token,
            _ if escaped => decode_key(literal),
            _ => Key::Other,
        })
    }

    #[inline(always)]
    fn string(&mut self) -> Scan<bool> {
        let b = self.b;
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        // The OR of the plain bytes passed over: a high bit means the span needs a UTF-8 check.
        let mut seen = 0;
        loop {
            i = skip_plain(b, i, &mut seen);
            match b.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        _ => {
                            self.pos = i;
                            i = self.unicode_escape()?;
                        }
                    }
                }
                Some(_) => {
                    self.pos = i;
                    return self.fail("control character in string");
                }
                None => {
                    self.pos = b.len();
                    return self.fail("unterminated string");
                }
            }
        }
        if seen & HIGH_BITS != 0 {
            if let Err(at) = check_utf8(&b[start..i]) {
                self.pos = start + at;
                return self.fail("invalid UTF-8 in string");
            }
        }
        self.pos = i + 1;
        Ok(escaped)
    }

    /// `pos` is on a backslash inside a string that does not start a one-letter escape; returns the index
    /// just after the escape.
    #[inline(never)]
    fn unicode_escape(&mut self) -> Scan<usize> {
        let i = self.pos;
        match self.b.get(i + 1) {
            Some(b'u') => match self.hex4(i + 2)? {
                0xDC00..=0xDFFF => self.fail("lone trailing surrogate in \\u escape"),
                0xD800..=0xDBFF => {
                    if self.b.get(i + 6) == Some(&b'\\')
                        && self.b.get(i + 7) == Some(&b'u')
                        && (0xDC00..=0xDFFF).contains(&self.hex4(i + 8)?)
                    {
                        Ok(i + 12)
                    } else {
                        self.fail("lone leading surrogate in \\u escape")
                    }
                }
                _ => Ok(i + 6),
            },
            _ => self.fail("invalid escape"),
        }
    }

    fn hex4(&mut self, at: usize) -> Scan<u32> {
        let Some(digits) = self.b.get(at..at + 4) else {
            return self.fail("truncated \\u escape");
        };
        let mut n = 0;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return self.fail("invalid \\u escape"),
            };
            n = n << 4 | u32::from(v);
        }
        Ok(n)
    }

    // One function on purpose: JSON's number grammar (sign, integer, fraction, exponent) read in one pass with the
    // position in a local, which the benches of the splice and the detector measure; split, it costs calls.
    #[inline(always)]
    fn number(&mut self) -> Scan {
        let b = self.b;
        let start = self.pos;
        let mut i = start;
        if b[i] == b'-' {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                i += 1;
                while let Some(b'0'..=b'9') = b.get(i) {
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return self.fail("invalid number");
            }
        }
        let int_digits = i - int_start;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == frac_start {
                self.pos = i;
                return self.fail("invalid number: no digit after the decimal point");
            }
        }
        // Magnitude is below 10^(int_digits + positive exponent); far enough below f64::MAX (1.8e308) no
        // rounding can overflow, so only numbers near or past it go to serde_json.
        let mut magnitude = int_digits;
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            let negative = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let exp_start = i;
            let mut exp: usize = 0;
            while let Some(&d @ b'0'..=b'9') = b.get(i) {
                exp = exp.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                i += 1;
            }
            if i == exp_start {
                self.pos = i;
                return self.fail("invalid number: no digit in the exponent");
            }
            if !negative {
                magnitude = magnitude.saturating_add(exp);
            }
        }
        self.pos = i;
        if magnitude > LONG_NUMBER && !fits_f64(&b[start..i]) {
            self.pos = start;
            return self.fail("number out of range");
        }
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn fits_f64(number: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Number>(number).is_ok()
}

/// Decodes a key containing escapes (`"para\u006ds"` is `params`). Rare, so slow is fine.
#[cold]
#[inline(never)]
fn decode_key(literal: &[u8]) -> Key {
    // Each character of `params` takes at most six bytes (`\uXXXX`); anything longer is another key.
    if literal.len() > 2 + 6 * "params".len() {
        return Key::Other;
    }
    match serde_json::from_slice::<String>(literal).as_deref() {
        Ok("params") => Key::Params,
        Ok("token") => Key::Token,
        _ => Key::Other,
    }
}

const ONE_BYTES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONE_BYTES << 7;

/// Strings this long or longer are finished with `memchr2`, whose setup cost only pays off on long spans;
/// most JSON-RPC strings (keys, methods, identifiers) are much shorter.
const LONG_STRING: usize = 64;

/// The index of the first `"`, `\` or control character at or after `i` inside a string, or the end of the
/// body. ORs the bytes it passes over into `seen`.
#[inline(always)]
fn skip_plain(b: &[u8], mut i: usize, seen: &mut u64) -> usize {
    let from = i;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let special = special_bytes(word);
        if special != 0 {
            // Little endian: the lowest flagged byte comes first in the body.
            let plain = (special.trailing_zeros() / 8) as usize;
            *seen |= word & ((1 << (8 * plain)) - 1);
            return i + plain;
        }
        *seen |= word;
        i += 8;
        if i - from >= LONG_STRING {
            return skip_plain_long(b, i, seen);
        }
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        *seen |= u64::from(c);
        i += 1;
    }
    i
}

#[cold]
#[inline(never)]
fn skip_plain_long(b: &[u8], i: usize, seen: &mut u64) -> usize {
    let rest = &b[i..];
    let end = memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let span = &rest[..end];
    // One branch-free pass (it vectorises) for both questions; a control character is rare enough that
    // finding it again is fine.
    let (control, all) = span.iter().fold((false, 0u8), |(control, all), &c| {
        (control | (c < 0x20), all | c)
    });
    *seen |= u64::from(all);
    if control {
        return i + span.iter().position(|&c| c < 0x20).unwrap_or(end);
    }
    i + end
}

/// Flags (high bit of the byte) every byte of `word` that is `"`, `\` or below 0x20. Exact for the lowest
/// flagged byte; bytes above a flagged one may be flagged spuriously by borrows, which does not matter since
/// only the lowest is used. The same test serde_json uses to find the end of a plain run.
#[inline(always)]
fn special_bytes(word: u64) -> u64 {
    let control = word.wrapping_sub(ONE_BYTES * 0x20) & !word;
    let quote = word ^ (ONE_BYTES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONE_BYTES) & !quote;
    let backslash = word ^ (ONE_BYTES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONE_BYTES) & !backslash;
    (control | quote | backslash) & HIGH_BITS
}

/// Checks that `span` is UTF-8, or says where it is not. `std::str::from_utf8` gives the same answer, but
/// the spans here are short with a few non-ASCII characters (accented names, a currency sign), where its
/// call and set-up cost more than this loop; the ranges are those of its table (RFC 3629: no overlong forms,
/// no surrogates, nothing above U+10FFFF).
#[inline]
fn check_utf8(span: &[u8]) -> Result<(), usize> {
    if span.len() > LONG_STRING {
        // Long text is where the standard library's word-at-a-time loop wins.
        return std::str::from_utf8(span)
            .map(drop)
            .map_err(|e| e.valid_up_to());
    }
    let mut i = 0;
    while let Some(&lead) = span.get(i) {
        if lead < 0x80 {
            i += 1;
            continue;
        }
        let (len, second) = match lead {
            0xC2..=0xDF => (2, 0x80..=0xBF),
            0xE0 => (3, 0xA0..=0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80..=0xBF),
            0xED => (3, 0x80..=0x9F),
            0xF0 => (4, 0x90..=0xBF),
            0xF1..=0xF3 => (4, 0x80..=0xBF),
            0xF4 => (4, 0x80..=0x8F),
            _ => return Err(i),
        };
        match span.get(i + 1..i + len) {
            Some([first, rest @ ..])
                if second.contains(first) && rest.iter().all(|&c| c & 0xC0 == 0x80) =>
            {
                i += len
            }
            _ => return Err(i),
        }
    }
    Ok(())
}

/// The kind of JSON value starting with `first`, for error messages.
fn kind(first: Option<u8>) -> &'static str {
    match first {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "nothing",
    }
}

fn batch_kind(first: Option<u8>) -> &'static str {
    match first {
        Some(b'[') => "a batch element that is an array",
        Some(b'"') => "a batch element that is a string",
        Some(b't' | b'f') => "a batch element that is a boolean",
        Some(b'n') => "a batch element that is null",
        Some(b'-' | b'0'..=b'9') => "a batch element that is a number",
        _ => "a batch element that is not an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_check_agrees_with_std() {
        let agree = |bytes: &[u8]| {
            let std = std::str::from_utf8(bytes)
                .map(drop)
                .map_err(|e| e.valid_up_to());
            assert_eq!(check_utf8(bytes), std, "{bytes:x?}");
        };
        for a in 0..=255u8 {
            agree(&[a]);
            for b in 0..=255u8 {
                agree(&[a, b]);
                agree(&[b'x', a, b, b'y']);
            }
        }
        for a in 0xE0..=0xFFu8 {
            for b in 0..=255u8 {
                for c in 0..=255u8 {
                    agree(&[a, b, c]);
                }
            }
        }
        for a in 0xF0..=0xFFu8 {
            for b in 0..=255u8 {
                for c in [0x00, 0x7F, 0x80, 0xBF, 0xC0] {
                    for d in [0x00, 0x7F, 0x80, 0xBF, 0xC0] {
                        agree(&[a, b, c, d]);
                        agree(&[a, b, c]);
                    }
                }
            }
        }
    }
}
