//! The one place where a proxying error becomes an HTTP status, a metric `kind` and the short
//! plain-text reason the client reads. Upstream refused or unreachable → 502; an upstream too slow
//! → 504; a malformed client request → 400; a client that went away gets nothing.

use pingora::{Error, ErrorSource, ErrorType};

/// What the client is told about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// 0 when the client connection is gone and nothing can be sent.
    pub status: u16,
    /// Bounded label value for `strangler_upstream_errors_total{kind}`; `None` if not upstream.
    pub kind: Option<&'static str>,
    /// Completes "upstream NAME (ADDR) …".
    pub reason: &'static str,
}

pub fn classify(e: &Error) -> Failure {
    use ErrorType::*;
    let up = |status, kind, reason| Failure {
        status,
        kind: Some(kind),
        reason,
    };
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => Failure {
            status: *code,
            kind: None,
            reason: "answered with an error",
        },
        (ConnectTimedout, _) => up(
            504,
            "connect_timeout",
            "did not accept the connection in time",
        ),
        (TLSHandshakeTimedout, _) => up(
            504,
            "connect_timeout",
            "did not finish the TLS handshake in time",
        ),
        (ConnectRefused, _) => up(502, "connect_refused", "refused the connection"),
        (ConnectNoRoute, _) => up(502, "connect_error", "is unreachable (no route)"),
        (TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup, _) => {
            up(502, "tls_error", "failed the TLS handshake")
        }
        (ConnectError | BindError | SocketError | ConnectProxyFailure, _) => {
            up(502, "connect_error", "could not be connected to")
        }
        (ReadTimedout, ErrorSource::Upstream) => up(504, "read_timeout", "did not answer in time"),
        (WriteTimedout, ErrorSource::Upstream) => {
            up(504, "write_timeout", "did not take the request in time")
        }
        (
            InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade,
            ErrorSource::Upstream,
        ) => up(502, "bad_response", "sent an invalid response"),
        (ConnectionClosed | ReadError | WriteError, ErrorSource::Upstream) => up(
            502,
            "connection_closed",
            "closed the connection before answering",
        ),
        (_, ErrorSource::Upstream) => up(502, "other", "failed"),
        (
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout,
            ErrorSource::Downstream,
        ) => Failure {
            status: 0,
            kind: None,
            reason: "client went away",
        },
        (_, ErrorSource::Downstream) => Failure {
            status: 400,
            kind: None,
            reason: "bad request",
        },
        (_, ErrorSource::Internal | ErrorSource::Unset) => Failure {
            status: 500,
            kind: None,
            reason: "internal error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(classify(&e).status, 502);
        let e = Error::new(ErrorType::ConnectTimedout);
        assert_eq!(classify(&e).status, 504);
        let e = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(classify(&e).kind, Some("read_timeout"));
        let e = Error::new_down(ErrorType::ReadError);
        assert_eq!(classify(&e).status, 0);
    }
}
