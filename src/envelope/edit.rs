//! The changes a splice makes to a body: found by the scan in body order, written by the splice.

/// One change to the body. The scan finds them in body order and records them; the output is written once the
/// whole body is known to be valid, at its exact size.
///
/// A missing member is inserted as the object's *first* member, right after its `{`: that place is known
/// the moment the `{` is read and does not depend on how the object ends (trailing whitespace, the
/// indentation of a pretty-printed closing brace), so the rest of the object is copied untouched and the only
/// question is whether a comma must follow, which is whether the object has members.
#[derive(Debug, Clone, Copy)]
pub(super) enum Edit {
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
    pub(super) fn start(&self) -> usize {
        match *self {
            Edit::Replace { start, .. } | Edit::NullParams { start, .. } => start,
            Edit::InsertToken { at, .. } | Edit::InsertParams { at, .. } => at,
        }
    }

    pub(super) fn end(&self) -> usize {
        match *self {
            Edit::Replace { end, .. } | Edit::NullParams { end, .. } => end,
            Edit::InsertToken { at, .. } | Edit::InsertParams { at, .. } => at,
        }
    }

    /// How many bytes [`Edit::write`] writes for a token literal of `token` bytes.
    pub(super) fn inserted_len(&self, token: usize) -> usize {
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
    pub(super) fn write(&self, out: &mut Vec<u8>, token: &[u8]) {
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
pub(super) const INLINE_EDITS: usize = 4;

/// The edits of one body, in body order.
#[derive(Debug, Default)]
pub(super) struct Edits {
    inline: [Option<Edit>; INLINE_EDITS],
    spilled: Vec<Edit>,
}

impl Edits {
    pub(super) fn push(&mut self, edit: Edit) {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = &Edit> {
        self.inline
            .iter()
            .map_while(Option::as_ref)
            .chain(&self.spilled)
    }
}

const TOKEN_KEY: &[u8] = b"\"token\":";
const PARAMS_KEY: &[u8] = b"\"params\":{";
