//! Content codings of a response, and reading a compressed answer for its rejection.
//!
//! A gateway, or a proxy in front of it, may compress its answers when the request says `Accept-Encoding: gzip`
//! (tower-http's `DecompressionLayer` above this layer adds that header). The rejection is then only visible after
//! decoding. The layer decodes a copy of the bytes it buffered anyway, bounded by the inspection limit, and hands
//! the answer on exactly as it came, still compressed, for whatever decodes it above. The decoders are
//! async-compression's (the ones tower-http uses), fed from memory.

use http::HeaderMap;
use http::header::CONTENT_ENCODING;

/// How a response body is encoded, as far as the layer can read it.
///
/// ```
/// use http::HeaderMap;
/// use http::header::CONTENT_ENCODING;
/// use paynet_auth::coding::ContentCoding;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(CONTENT_ENCODING, "br".parse().unwrap());
/// let coding = ContentCoding::of(&headers);
/// assert_eq!(coding, ContentCoding::Brotli);
/// assert_eq!(coding.is_readable(), cfg!(feature = "decompression"));
/// assert!(ContentCoding::Identity.is_readable());
/// assert!(!ContentCoding::Other.is_readable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    /// No `Content-Encoding`, or `identity`.
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: zlib-wrapped deflate, as HTTP defines it.
    Deflate,
    /// `br`: brotli.
    Brotli,
    /// Any other coding, or several stacked: the body cannot be inspected.
    Other,
}

impl ContentCoding {
    /// The coding the `Content-Encoding` header of `headers` names.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use paynet_auth::coding::ContentCoding;
    ///
    /// let mut headers = HeaderMap::new();
    /// assert_eq!(ContentCoding::of(&headers), ContentCoding::Identity);
    /// headers.insert("content-encoding", "GZIP".parse().unwrap());
    /// assert_eq!(ContentCoding::of(&headers), ContentCoding::Gzip);
    /// headers.insert("content-encoding", "gzip, br".parse().unwrap());
    /// assert_eq!(ContentCoding::of(&headers), ContentCoding::Other);
    /// ```
    pub fn of(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return ContentCoding::Identity;
        };
        if values.next().is_some() {
            return ContentCoding::Other;
        }
        let Ok(value) = value.to_str() else {
            return ContentCoding::Other;
        };
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("identity") {
            ContentCoding::Identity
        } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            ContentCoding::Gzip
        } else if value.eq_ignore_ascii_case("deflate") {
            ContentCoding::Deflate
        } else if value.eq_ignore_ascii_case("br") {
            ContentCoding::Brotli
        } else {
            ContentCoding::Other
        }
    }

    /// Whether this build can decode the coding (feature `decompression` for gzip, deflate and br).
    pub fn is_readable(self) -> bool {
        match self {
            ContentCoding::Identity => true,
            ContentCoding::Gzip | ContentCoding::Deflate | ContentCoding::Brotli => {
                cfg!(feature = "decompression")
            }
            ContentCoding::Other => false,
        }
    }
}

/// Decodes `body` when it is at most `limit` bytes decoded. `None` when it is longer (the layer then hands it on
/// uninspected, as it does an identity body over the limit), when it does not decode, or when this build cannot
/// decode the coding.
///
/// ```
/// use paynet_auth::coding::{ContentCoding, decode_bounded};
///
/// assert_eq!(decode_bounded(ContentCoding::Identity, b"{}", 2).as_deref(), Some(&b"{}"[..]));
/// assert_eq!(decode_bounded(ContentCoding::Identity, b"{}", 1), None);
/// ```
pub fn decode_bounded(coding: ContentCoding, body: &[u8], limit: usize) -> Option<Vec<u8>> {
    match coding {
        ContentCoding::Identity => (body.len() <= limit).then(|| body.to_vec()),
        ContentCoding::Other => None,
        #[cfg(feature = "decompression")]
        compressed => decompress::bounded(compressed, body, limit),
        #[cfg(not(feature = "decompression"))]
        _ => None,
    }
}

#[cfg(feature = "decompression")]
mod decompress {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder};
    use futures_util::FutureExt;
    use tokio::io::{AsyncRead, AsyncReadExt};

    use super::ContentCoding;

    pub(super) fn bounded(coding: ContentCoding, body: &[u8], limit: usize) -> Option<Vec<u8>> {
        match coding {
            ContentCoding::Gzip => {
                let mut decoder = GzipDecoder::new(body);
                // A gzip stream may hold several members; HTTP clients (and tower-http) read them all.
                decoder.multiple_members(true);
                read_bounded(decoder, limit)
            }
            ContentCoding::Deflate => read_bounded(ZlibDecoder::new(body), limit),
            ContentCoding::Brotli => read_bounded(BrotliDecoder::new(body), limit),
            ContentCoding::Identity | ContentCoding::Other => None,
        }
    }

    /// Reads at most `limit + 1` decoded bytes, so a small compressed body that inflates hugely costs no more
    /// than the limit.
    fn read_bounded(decoder: impl AsyncRead + Unpin, limit: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut bounded = decoder.take(limit as u64 + 1);
        // The source is a slice in memory, so the read never waits: it completes on its first poll.
        let read = bounded.read_to_end(&mut out).now_or_never()?;
        match read {
            Ok(n) if n <= limit => Some(out),
            Ok(_) => None,
            // Bytes after the compressed stream (a newline a proxy appended, padding) fail the decoder once the
            // stream is done; what it decoded up to there is the answer, as a streaming decoder above would
            // deliver it. A stream cut short decodes to a prefix, which the detector does not take for JSON.
            Err(_) if !out.is_empty() && out.len() <= limit => Some(out),
            Err(_) => None,
        }
    }
}

#[cfg(all(test, feature = "decompression"))]
mod tests {
    use super::*;
    use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZlibEncoder};
    use futures_util::FutureExt;
    use tokio::io::{AsyncWrite, AsyncWriteExt};

    fn encode(mut encoder: impl AsyncWrite + Unpin, data: &[u8]) {
        async {
            encoder.write_all(data).await.unwrap();
            encoder.shutdown().await.unwrap();
        }
        .now_or_never()
        .unwrap();
    }

    fn compress(coding: ContentCoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            ContentCoding::Gzip => encode(GzipEncoder::new(&mut out), data),
            ContentCoding::Deflate => encode(ZlibEncoder::new(&mut out), data),
            ContentCoding::Brotli => encode(BrotliEncoder::new(&mut out), data),
            _ => unreachable!(),
        }
        out
    }

    const ANSWER: &[u8] =
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":-9999,"message":"unauthorized"}}"#;

    #[test]
    fn every_supported_coding_round_trips_within_the_limit() {
        for coding in [
            ContentCoding::Gzip,
            ContentCoding::Deflate,
            ContentCoding::Brotli,
        ] {
            let compressed = compress(coding, ANSWER);
            assert_ne!(compressed, ANSWER);
            assert_eq!(
                decode_bounded(coding, &compressed, ANSWER.len()).as_deref(),
                Some(ANSWER),
                "{coding:?}"
            );
            assert_eq!(
                decode_bounded(coding, &compressed, ANSWER.len() - 1),
                None,
                "{coding:?} over the limit"
            );
        }
    }

    #[test]
    fn a_small_body_that_inflates_past_the_limit_is_not_read_whole() {
        let zeros = vec![b' '; 8 << 20];
        let compressed = compress(ContentCoding::Gzip, &zeros);
        assert!(compressed.len() < 64 << 10);
        assert_eq!(
            decode_bounded(ContentCoding::Gzip, &compressed, 64 << 10),
            None
        );
    }

    #[test]
    fn bytes_after_the_compressed_stream_do_not_hide_the_answer() {
        for trailer in [&b"\n"[..], b"garbage"] {
            let mut body = compress(ContentCoding::Gzip, ANSWER);
            body.extend_from_slice(trailer);
            assert_eq!(
                decode_bounded(ContentCoding::Gzip, &body, 1 << 16).as_deref(),
                Some(ANSWER)
            );
        }
        let mut two = compress(ContentCoding::Gzip, &ANSWER[..10]);
        two.extend(compress(ContentCoding::Gzip, &ANSWER[10..]));
        assert_eq!(
            decode_bounded(ContentCoding::Gzip, &two, 1 << 16).as_deref(),
            Some(ANSWER),
            "several gzip members are one answer"
        );
    }

    #[test]
    fn garbage_and_the_wrong_coding_do_not_decode() {
        let gzip = compress(ContentCoding::Gzip, ANSWER);
        assert_eq!(decode_bounded(ContentCoding::Brotli, &gzip, 1 << 16), None);
        assert_eq!(decode_bounded(ContentCoding::Gzip, ANSWER, 1 << 16), None);
        assert_eq!(decode_bounded(ContentCoding::Other, ANSWER, 1 << 16), None);
    }
}
