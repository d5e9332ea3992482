//! Writing the token into a JSON-RPC request body.
//!
//! The body is never parsed into a `serde_json::Value`: one validating pass over the bytes copies it into
//! the output, splicing the token in where it belongs as the places are found. Everything else (member
//! order, whitespace, number spelling, string escapes) reaches the gateway byte for byte as the caller wrote
//! it, and the cost is one scan plus one copy, with no allocation but the output (keys written with escapes
//! aside).
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

use crate::error::InjectError;

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
    debug_assert!(
        is_string_literal(token_json),
        "token_json must be one JSON string literal"
    );
    let mut scanner = Scanner::new(body, Some(field));
    scanner.document()?;
    if let Some(shape) = scanner.shape {
        return Err(shape);
    }
    // Sized exactly, so that `Bytes::from` takes the vector as it is instead of allocating a shared header.
    let len = scanner.edits.iter().fold(body.len(), |len, edit| {
        len - (edit.end() - edit.start()) + edit.inserted_len(token_json.len())
    });
    let mut out = Vec::with_capacity(len);
    let mut copied = 0;
    for edit in scanner.edits.iter() {
        out.extend_from_slice(&body[copied..edit.start()]);
        edit.write(&mut out, token_json);
        copied = edit.end();
    }
    out.extend_from_slice(&body[copied..]);
    debug_assert_eq!(out.len(), out.capacity());
    Ok(out)
}

/// True when `serde_json::from_slice::<serde_json::Value>` would accept `body`, found without building one.
pub(crate) fn is_valid_json(body: &[u8]) -> bool {
    Scanner::new(body, None).document().is_ok()
}

fn is_string_literal(literal: &[u8]) -> bool {
    literal.first() == Some(&b'"') && is_valid_json(literal)
}

/// serde_json refuses the 128th nested array or object.
const MAX_DEPTH: u32 = 127;

/// A number below 10^300 cannot overflow `f64` (whose maximum is about 1.8e308) however it is rounded. Above
/// that (integer digits plus positive exponent), serde_json's own parser decides, so that the edge agrees
/// with it to the last digit.
const LONG_NUMBER: usize = 300;

/// One change to the body. The scan finds them in body order and records them; the output is written once the
/// whole body is known to be valid, at its exact size.
///
/// A missing member is inserted as the object's *first* member, right after its `{`: that place is known
/// the moment the `{` is read and does not depend on how the object ends (trailing whitespace, the
/// indentation of a pretty-printed closing brace), so the rest of the object is copied untouched and the only
/// question is whether a comma must follow, which is whether the object has members.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// `start..end` is an existing token value: replace it with the token.
    Replace { start: usize, end: usize },
    /// `start..end` is `null` params: replace it with `{"token":…}`.
    NullParams { start: usize, end: usize },
    /// Insert `"token":…` at `at` (just after a `{`), with a comma when the object has members.
    InsertToken { at: usize, comma: bool },
    /// Insert `"params":{"token":…}` at `at` (just after a `{`), with a comma when the object has members.
    InsertParams { at: usize, comma: bool },
}

impl Edit {
    fn start(&self) -> usize {
        match *self {
            Edit::Replace { start, .. } | Edit::NullParams { start, .. } => start,
            Edit::InsertToken { at, .. } | Edit::InsertParams { at, .. } => at,
        }
    }

    fn end(&self) -> usize {
        match *self {
            Edit::Replace { end, .. } | Edit::NullParams { end, .. } => end,
            Edit::InsertToken { at, .. } | Edit::InsertParams { at, .. } => at,
        }
    }

    /// How many bytes [`Edit::write`] writes for a token literal of `token` bytes.
    fn inserted_len(&self, token: usize) -> usize {
        match *self {
            Edit::Replace { .. } => token,
            Edit::NullParams { .. } => 1 + TOKEN_KEY.len() + token + 1,
            Edit::InsertToken { comma, .. } => TOKEN_KEY.len() + token + usize::from(comma),
            Edit::InsertParams { comma, .. } => {
                PARAMS_KEY.len() + TOKEN_KEY.len() + token + 1 + usize::from(comma)
            }
        }
    }

    /// Writes what replaces `start..end`.
    fn write(&self, out: &mut Vec<u8>, token: &[u8]) {
        match *self {
            Edit::Replace { .. } => out.extend_from_slice(token),
            Edit::NullParams { .. } => {
                out.push(b'{');
                out.extend_from_slice(TOKEN_KEY);
                out.extend_from_slice(token);
                out.push(b'}');
            }
            Edit::InsertToken { comma, .. } => {
                out.extend_from_slice(TOKEN_KEY);
                out.extend_from_slice(token);
                if comma {
                    out.push(b',');
                }
            }
            Edit::InsertParams { comma, .. } => {
                out.extend_from_slice(PARAMS_KEY);
                out.extend_from_slice(TOKEN_KEY);
                out.extend_from_slice(token);
                out.push(b'}');
                if comma {
                    out.push(b',');
                }
            }
        }
    }
}

/// Edits kept inline: a single call makes one, so only a batch of more calls than this spills to the heap.
const INLINE_EDITS: usize = 4;

#[derive(Default)]
struct Edits {
    inline: [Option<Edit>; INLINE_EDITS],
    spilled: Vec<Edit>,
}

impl Edits {
    fn push(&mut self, edit: Edit) {
        debug_assert!(
            self.iter()
                .last()
                .is_none_or(|last| last.end() <= edit.start()),
            "edits out of order"
        );
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) if self.spilled.is_empty() => *slot = Some(edit),
            _ => self.spilled.push(edit),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Edit> {
        self.inline
            .iter()
            .map_while(Option::as_ref)
            .chain(&self.spilled)
    }
}

const TOKEN_KEY: &[u8] = b"\"token\":";
const PARAMS_KEY: &[u8] = b"\"params\":{";

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
struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    depth: u32,
    /// `None` only validates.
    field: Option<TokenField>,
    /// The edits found so far, in body order.
    edits: Edits,
    /// The first shape error. Kept aside rather than returned so that the rest of the body is still checked:
    /// a body that is not JSON at all must be reported as such.
    shape: Option<InjectError>,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8], field: Option<TokenField>) -> Self {
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

    fn document(&mut self) -> Scan {
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
    use std::fmt;

    use proptest::prelude::*;
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value, json};

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
