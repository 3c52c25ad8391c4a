//! How API errors become gRPC statuses (one code per reason), and how transport failures are told
//! apart.
//!
//! The one distinction that matters for writes: was the request possibly delivered? A failure to
//! connect means it was not, so trying another member is safe. A connection that broke mid-call
//! means the write may or may not have been applied: its outcome is unknown and it must not be
//! retried blindly.

use skiff_api::{ApiError, Reason};
use tonic::{Code, Status};

pub use skiff_client::{is_transport_failure, was_not_sent};

/// The gRPC code of each reason.
pub fn code_of(reason: Reason) -> Code {
    match reason {
        Reason::BadRequest | Reason::Invalid => Code::InvalidArgument,
        Reason::NotFound => Code::NotFound,
        Reason::AlreadyExists => Code::AlreadyExists,
        Reason::Conflict => Code::FailedPrecondition,
        Reason::TooLarge => Code::ResourceExhausted,
        Reason::Expired => Code::OutOfRange,
        Reason::TooSlow => Code::Aborted,
        Reason::Unavailable => Code::Unavailable,
        Reason::OutcomeUnknown => Code::Unknown,
        Reason::Internal => Code::Internal,
    }
}

/// The status for an API error, with the message the user acts on.
pub fn api_status(e: ApiError) -> Status {
    Status::new(code_of(e.reason), e.message)
}

/// What a failed call to the leader means to the caller that forwarded it.
pub fn forwarding_error(status: &Status, leader: &str, write: bool) -> ApiError {
    if was_not_sent(status) {
        ApiError::unavailable(format!("cannot reach the leader at {leader}: {}; not applied: retry", status.message()))
    } else if write {
        ApiError::new(
            Reason::OutcomeUnknown,
            format!(
                "the connection to the leader at {leader} broke during the write ({}): its outcome is unknown; read before retrying",
                status.message()
            ),
        )
    } else {
        ApiError::unavailable(format!("the leader at {leader} did not answer: {}", status.message()))
    }
}

/// What a failed call to another member (not the leader: the node that runs a pod) means.
pub fn forwarded_status(status: Status, member: &str, write: bool) -> Status {
    if !is_transport_failure(&status) {
        return status; // the member's own answer
    }
    api_status(forwarding_error(&status, member, write))
}
