//! Why a PutRecords try failed, classified from the SDK's typed errors and Kinesis's per-record
//! error codes, and whom the failure is about: the stream (Kinesis unreachable, throttling,
//! internal failures, KMS, a missing stream, credentials) or the record itself (a rejection).
//!
//! Only failures about the record use up an event's tries (`max_attempts`): an outage or
//! throttling says nothing about the event, so it backs off the whole stream and every event
//! waits, bounded only by `max_age` and the store's disk (KPL #56 is the failure this avoids: its
//! records expire while Kinesis is unavailable). A call whose outcome is unknown (cut after it was
//! sent, timed out, an unreadable answer) is sent again: at least once, consumers dedupe by id.

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The kind of a failed try; its `label` is the `reason` of `strangler_events_failed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No answer: connection refused or reset, a timeout, an unreadable response, a 5xx. The
    /// call may or may not have been stored.
    Unreachable,
    /// The call or a record was throttled (ProvisionedThroughputExceeded, LimitExceeded, KMS
    /// throttling).
    Throttled,
    /// Kinesis failed the call or a record internally.
    Internal,
    /// The stream's KMS key cannot be used (disabled, not found, access denied, …).
    Kms,
    /// The stream does not exist (yet).
    StreamNotFound,
    /// The credentials or policy do not allow the call, or the client could not build it.
    Denied,
    /// Kinesis rejected the record itself (invalid argument, an unknown per-record code).
    Rejected,
}

impl Failure {
    pub const ALL: [Failure; 7] = [
        Failure::Unreachable,
        Failure::Throttled,
        Failure::Internal,
        Failure::Kms,
        Failure::StreamNotFound,
        Failure::Denied,
        Failure::Rejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Throttled => "throttled",
            Failure::Internal => "internal_failure",
            Failure::Kms => "kms",
            Failure::StreamNotFound => "stream_not_found",
            Failure::Denied => "denied",
            Failure::Rejected => "rejected",
        }
    }

    /// Whether the failure uses up one of the event's tries (only rejections of the record).
    pub fn counts_try(self) -> bool {
        self == Failure::Rejected
    }

    /// Whether a whole call failing this way means the stream cannot take events now (it is
    /// "down" for `strangler_stream_up`); throttling means it is there but busy.
    pub fn stream_down(self) -> bool {
        !matches!(self, Failure::Throttled | Failure::Rejected)
    }

    /// A whole PutRecords call that failed.
    pub fn of_call(e: &SdkError<PutRecordsError, HttpResponse>) -> Failure {
        match e {
            // The client could not build or sign the request (no credentials, say): nothing is
            // wrong with the record.
            SdkError::ConstructionFailure(_) => Failure::Denied,
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => Failure::Unreachable,
            SdkError::ServiceError(se) => Failure::of_service(se.err(), se.raw().status().as_u16()),
            _ => Failure::Unreachable,
        }
    }

    fn of_service(e: &PutRecordsError, status: u16) -> Failure {
        use PutRecordsError as E;
        match e {
            E::ProvisionedThroughputExceededException(_) | E::KmsThrottlingException(_) => {
                Failure::Throttled
            }
            E::InternalFailureException(_) => Failure::Internal,
            E::KmsAccessDeniedException(_)
            | E::KmsDisabledException(_)
            | E::KmsInvalidStateException(_)
            | E::KmsNotFoundException(_)
            | E::KmsOptInRequired(_) => Failure::Kms,
            E::ResourceNotFoundException(_) => Failure::StreamNotFound,
            E::AccessDeniedException(_) => Failure::Denied,
            E::InvalidArgumentException(_) => Failure::Rejected,
            // Codes the model does not list: throttling and validation by name, else by status.
            other => match other.code().unwrap_or("") {
                "ThrottlingException"
                | "Throttling"
                | "LimitExceededException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException" => Failure::Throttled,
                "ValidationException" | "SerializationException" => Failure::Rejected,
                _ if status == 429 => Failure::Throttled,
                _ if status >= 500 => Failure::Unreachable,
                // Expired or unrecognised credentials, signature errors, …
                _ => Failure::Denied,
            },
        }
    }

    /// A record that failed inside a call that succeeded, by its `ErrorCode`.
    pub fn of_record(code: &str) -> Failure {
        match code {
            "ProvisionedThroughputExceededException" | "KMSThrottlingException" => {
                Failure::Throttled
            }
            "InternalFailure" | "InternalFailureException" | "ServiceUnavailable" => {
                Failure::Internal
            }
            c if c.starts_with("KMS") || c.starts_with("Kms") => Failure::Kms,
            _ => Failure::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::error::{
        InvalidArgumentException, ProvisionedThroughputExceededException,
    };
    use aws_smithy_runtime_api::client::result::ConnectorError;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        )
    }

    fn service(e: PutRecordsError, status: u16) -> SdkError<PutRecordsError, HttpResponse> {
        SdkError::service_error(e, response(status))
    }

    #[test]
    fn outages_and_throttling_are_about_the_stream() {
        let refused: SdkError<PutRecordsError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
        assert_eq!(Failure::of_call(&refused), Failure::Unreachable);
        let timeout: SdkError<PutRecordsError, HttpResponse> = SdkError::timeout_error("slow");
        assert_eq!(Failure::of_call(&timeout), Failure::Unreachable);
        let throttled = service(
            PutRecordsError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            ),
            400,
        );
        assert_eq!(Failure::of_call(&throttled), Failure::Throttled);
        let unhandled = |code: &str, status| {
            let meta = aws_smithy_types::error::ErrorMetadata::builder()
                .code(code)
                .build();
            Failure::of_call(&service(PutRecordsError::generic(meta), status))
        };
        assert_eq!(unhandled("ThrottlingException", 400), Failure::Throttled);
        assert_eq!(unhandled("ServiceUnavailable", 503), Failure::Unreachable);
        assert_eq!(
            unhandled("UnrecognizedClientException", 400),
            Failure::Denied
        );
        for f in Failure::ALL {
            assert_eq!(f.counts_try(), f == Failure::Rejected, "{f:?}");
        }
    }

    #[test]
    fn only_rejections_of_the_record_use_up_tries() {
        let invalid = service(
            PutRecordsError::InvalidArgumentException(InvalidArgumentException::builder().build()),
            400,
        );
        assert_eq!(Failure::of_call(&invalid), Failure::Rejected);
        assert_eq!(
            Failure::of_record("ProvisionedThroughputExceededException"),
            Failure::Throttled
        );
        assert_eq!(Failure::of_record("InternalFailure"), Failure::Internal);
        assert_eq!(Failure::of_record("KMSDisabledException"), Failure::Kms);
        assert_eq!(
            Failure::of_record("KMSThrottlingException"),
            Failure::Throttled
        );
        assert_eq!(Failure::of_record("SomethingNew"), Failure::Rejected);
    }
}
