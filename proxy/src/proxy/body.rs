//! Bounded reading of a request body for body predicates and body keys. Reads at most `limit`
//! bytes; pingora keeps its own copy of the first 64 KiB (its retry buffer), which decides how the
//! body is sent on (see `request_filter`).

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;

pub(super) enum Read {
    /// The whole body.
    Complete(Bytes),
    /// More than `limit` bytes: what was read so far; the rest is still unread.
    TooLarge(Bytes),
    Failed(Box<Error>),
}

pub(super) async fn read(session: &mut Session, limit: usize) -> Read {
    let down = session.as_downstream_mut();
    down.enable_retry_buffering();
    let mut buf = BytesMut::new();
    loop {
        match down.read_request_body().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > limit {
                    return Read::TooLarge(buf.freeze());
                }
            }
            Ok(None) => return Read::Complete(buf.freeze()),
            Err(mut e) => {
                // the client's fault (stalled, gone, or malformed body), not ours
                e.as_down();
                return Read::Failed(e);
            }
        }
    }
}
