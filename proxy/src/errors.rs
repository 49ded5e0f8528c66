//! The one place where a proxying error becomes an HTTP status, a metric kind and the short
//! plain-text reason the client reads. Upstream refused or unreachable → 502; an upstream too slow
//! → 504. Client faults are the client's, never the upstream's: a malformed request → 400, a
//! request body that stops arriving → 408, a client that went away gets nothing (logged as 499,
//! as nginx does).

use pingora::{Error, ErrorSource, ErrorType};

/// What the client is told about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReply {
    /// 0 when the client connection is gone and nothing can be sent.
    pub status: u16,
    /// Bounded label value for `strangler_upstream_errors_total{kind}`; `None` if not upstream.
    pub kind: Option<&'static str>,
    /// Bounded label value for `strangler_downstream_errors_total{kind}`; `None` if not the
    /// client's fault.
    pub client: Option<&'static str>,
    /// Completes "upstream NAME (ADDR) …", or says what the client did.
    pub reason: &'static str,
}

impl ErrorReply {
    /// The status for the access log: what was sent, or 499 when the client went away first.
    pub fn logged_status(&self) -> u16 {
        if self.status == 0 { 499 } else { self.status }
    }
}

/// Every `kind` of `strangler_upstream_errors_total` that `classify` gives.
pub const UPSTREAM_KINDS: [&str; 9] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "tls_error",
    "read_timeout",
    "write_timeout",
    "bad_response",
    "connection_closed",
    "other",
];

/// A request that may go to a new service, on a replica that has not read the rollout states
/// and the kill switch yet (503: another replica, or this one a moment later, can serve it).
pub const ROLLOUTS_UNKNOWN: ErrorType = ErrorType::Custom("rollouts_unknown");

/// A connection to the upstream could not be made (nothing was sent: safe to try again).
pub fn is_connect_failure(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeTimedout
    )
}

/// `request_body_done`: whether the client had sent its whole request body. An upstream that
/// times out waiting while the body is still incomplete is waiting for the client.
pub fn classify(e: &Error, request_body_done: bool) -> ErrorReply {
    use ErrorType::*;
    let up = |status, kind, reason| ErrorReply {
        status,
        kind: Some(kind),
        client: None,
        reason,
    };
    let client = |status, kind, reason| ErrorReply {
        status,
        kind: None,
        client: Some(kind),
        reason,
    };
    match (e.etype(), e.esource()) {
        (t, _) if *t == ROLLOUTS_UNKNOWN => ErrorReply {
            status: 503,
            kind: None,
            client: None,
            reason: "this replica has not read the rollout states yet; try again",
        },
        (HTTPStatus(code), _) => ErrorReply {
            status: *code,
            kind: None,
            client: None,
            reason: "answered with an error",
        },
        (ReadTimedout, ErrorSource::Upstream) if !request_body_done => client(
            408,
            "body_timeout",
            "the request body did not arrive in time",
        ),
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
        (ReadTimedout, ErrorSource::Downstream) => client(
            408,
            "body_timeout",
            "the request body did not arrive in time",
        ),
        (ReadError | WriteError | ConnectionClosed | WriteTimedout, ErrorSource::Downstream) => {
            client(0, "closed", "client went away")
        }
        (_, ErrorSource::Downstream) => client(400, "bad_request", "bad request"),
        (_, ErrorSource::Internal | ErrorSource::Unset) => ErrorReply {
            status: 500,
            kind: None,
            client: None,
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
        assert_eq!(classify(&e, true).status, 502);
        let e = Error::new(ErrorType::ConnectTimedout);
        assert_eq!(classify(&e, true).status, 504);
        let e = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(classify(&e, true).kind, Some("read_timeout"));
        let e = Error::new_down(ErrorType::ReadError);
        assert_eq!(classify(&e, true).status, 0);
        assert_eq!(classify(&e, true).logged_status(), 499);
    }

    #[test]
    fn every_upstream_kind_is_listed() {
        use ErrorType::*;
        for t in [
            ConnectTimedout,
            TLSHandshakeTimedout,
            ConnectRefused,
            ConnectNoRoute,
            TLSHandshakeFailure,
            ConnectError,
            ReadTimedout,
            WriteTimedout,
            InvalidHTTPHeader,
            ConnectionClosed,
            ReadError,
            WriteError,
            InternalError,
        ] {
            let kind = classify(&Error::new_up(t), true).kind.unwrap();
            assert!(UPSTREAM_KINDS.contains(&kind), "{kind}");
        }
    }

    #[test]
    fn a_stalled_request_body_is_the_clients_fault() {
        // The upstream waited for a body that never came: 408, not the upstream's 504.
        let f = classify(&Error::new_up(ErrorType::ReadTimedout), false);
        assert_eq!(
            (f.status, f.kind, f.client),
            (408, None, Some("body_timeout"))
        );
        let f = classify(&Error::new_down(ErrorType::ReadTimedout), true);
        assert_eq!((f.status, f.client), (408, Some("body_timeout")));
        let f = classify(&Error::new_down(ErrorType::ConnectionClosed), false);
        assert_eq!((f.status, f.client), (0, Some("closed")));
        let f = classify(&Error::new_down(ErrorType::InvalidHTTPHeader), true);
        assert_eq!((f.status, f.client), (400, Some("bad_request")));
    }
}
