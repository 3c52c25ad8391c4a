//! How gRPC failures are told apart and turned into statuses a client can act on.
//!
//! The one distinction that matters for writes: was the request possibly delivered? A failure to
//! connect means it was not, so trying another member is safe. A connection that broke mid-call
//! means the write may or may not have been applied: its outcome is unknown and it must not be
//! retried blindly.

use skiff_store::watch::WatchError;
use skiff_store::StoreError;
use tonic::Status;

/// True when `status` was produced on this side by the transport (not answered by a server).
pub fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// True when the request never left this side: connecting failed.
pub fn was_not_sent(status: &Status) -> bool {
    is_transport_failure(status) && skiff_store::network::is_connect_error(status)
}

/// The status for a store error, with a message that says what to do.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotLeader { .. } => Status::unavailable(format!("{e}; the write was not applied: retry")),
        StoreError::Conflict(_) => Status::failed_precondition(e.to_string()),
        StoreError::Unavailable(m) => Status::unavailable(format!("{m}; not applied: retry")),
        StoreError::OutcomeUnknown(_) => Status::unknown(e.to_string()),
        StoreError::Watch(w) => watch_status(w),
        StoreError::Storage(m) => Status::internal(format!("storage error on this member: {m}")),
    }
}

pub fn watch_status(e: WatchError) -> Status {
    match e {
        WatchError::TooOld { .. } => Status::out_of_range(e.to_string()),
        WatchError::FellBehind { .. } => Status::aborted(e.to_string()),
        WatchError::Closed { .. } => Status::unavailable(e.to_string()),
        WatchError::Internal(_) => Status::internal(e.to_string()),
    }
}

/// What a forwarded call's failure means to the original caller.
pub fn forwarded_status(status: Status, leader: &str, is_write: bool) -> Status {
    if !is_transport_failure(&status) {
        return status; // the leader's own answer
    }
    if was_not_sent(&status) {
        Status::unavailable(format!("cannot reach the leader at {leader}: {}; not applied: retry", status.message()))
    } else if is_write {
        Status::unknown(format!(
            "the connection to the leader at {leader} broke during the write ({}): its outcome is unknown; read before retrying",
            status.message()
        ))
    } else {
        Status::unavailable(format!("the leader at {leader} did not answer: {}", status.message()))
    }
}
