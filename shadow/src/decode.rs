//! Content decoding before comparison (RFC 9110 §8.4): `gzip` / `x-gzip`, `deflate` (zlib, or
//! raw deflate as some servers send), `br`, and `identity`, in the order the codings were
//! applied. A compressed and a plain answer with the same content compare equal. The output is
//! bounded: a body that decodes to more than the limit is refused, so a small compressed answer
//! cannot expand without bound.

use std::borrow::Cow;
use std::io::Read;

use http::HeaderMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("content coding `{0}` is not supported")]
    Unsupported(String),
    #[error("the {coding} body is corrupt: {message}")]
    Corrupt { coding: String, message: String },
    #[error("the decoded body is over {limit} bytes")]
    TooLarge { limit: usize },
}

/// The body with every `Content-Encoding` undone, at most `limit` bytes.
pub fn decode<'b>(
    headers: &HeaderMap,
    body: &'b [u8],
    limit: usize,
) -> Result<Cow<'b, [u8]>, DecodeError> {
    let codings: Vec<String> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let mut out = Cow::Borrowed(body);
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    // Applied in the order listed: undone from the last.
    for coding in codings.iter().rev() {
        out = Cow::Owned(undo(coding, &out, limit)?);
    }
    Ok(out)
}

fn undo(coding: &str, data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    match coding {
        "gzip" | "x-gzip" => read_bounded(coding, flate2::read::MultiGzDecoder::new(data), limit),
        "deflate" => match read_bounded(coding, flate2::read::ZlibDecoder::new(data), limit) {
            Err(DecodeError::Corrupt { .. }) => {
                read_bounded(coding, flate2::read::DeflateDecoder::new(data), limit)
            }
            zlib => zlib,
        },
        "br" => read_bounded(coding, brotli::Decompressor::new(data, 4096), limit),
        other => Err(DecodeError::Unsupported(other.to_string())),
    }
}

fn read_bounded(coding: &str, r: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let read = r
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt {
            coding: coding.to_string(),
            message: e.to_string(),
        });
    match read {
        Ok(n) if n > limit => Err(DecodeError::TooLarge { limit }),
        Ok(_) => Ok(out),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, encoding.parse().unwrap());
        h
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codings_are_undone_in_reverse_order() {
        let body = br#"{"a":1}"#;
        assert_eq!(&*decode(&headers("gzip"), &gzip(body), 1024).unwrap(), body);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        let deflated = z.finish().unwrap();
        assert_eq!(
            &*decode(&headers("deflate"), &deflated, 1024).unwrap(),
            body
        );
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(body).unwrap();
        }
        assert_eq!(&*decode(&headers("br"), &br, 1024).unwrap(), body);
        let both = gzip(&br);
        assert_eq!(&*decode(&headers("br, gzip"), &both, 1024).unwrap(), body);
        assert_eq!(&*decode(&HeaderMap::new(), body, 1024).unwrap(), body);
    }

    #[test]
    fn bombs_and_junk_are_refused() {
        let big = gzip(&vec![b'x'; 100_000]);
        assert_eq!(
            decode(&headers("gzip"), &big, 1000).unwrap_err(),
            DecodeError::TooLarge { limit: 1000 }
        );
        assert!(matches!(
            decode(&headers("gzip"), b"not gzip", 1000),
            Err(DecodeError::Corrupt { .. })
        ));
        assert_eq!(
            decode(&headers("compress"), b"x", 10).unwrap_err(),
            DecodeError::Unsupported("compress".into())
        );
    }
}
