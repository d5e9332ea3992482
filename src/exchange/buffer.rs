//! The buffer a request body or an inspected answer is read into.

use bytes::{Bytes, BytesMut};

/// Collects data frames without copying when the body arrives in one chunk, as it usually does.
#[derive(Default)]
pub(super) struct Buffer {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
}

impl Buffer {
    pub(super) fn push(&mut self, data: Bytes) {
        match (&mut self.first, &mut self.rest) {
            (None, _) => self.first = Some(data),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(first);
                joined.extend_from_slice(&data);
                self.rest = Some(joined);
            }
            (Some(_), Some(rest)) => rest.extend_from_slice(&data),
        }
    }

    pub(super) fn len(&self) -> usize {
        match (&self.first, &self.rest) {
            (_, Some(rest)) => rest.len(),
            (Some(first), None) => first.len(),
            (None, None) => 0,
        }
    }

    pub(super) fn into_bytes(self) -> Bytes {
        match (self.first, self.rest) {
            (_, Some(rest)) => rest.freeze(),
            (Some(first), None) => first,
            (None, None) => Bytes::new(),
        }
    }
}
