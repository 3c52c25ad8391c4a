//! How the store's failures become API errors, and the one failure that is not an answer: "not the
//! leader", which the serving path turns into forwarding.

use skiff_api::{ApiError, Reason};
use skiff_store::watch::WatchError;
use skiff_store::{Member, StoreError};

/// Why serving a call here failed.
#[derive(Debug, Clone)]
pub enum ServeError {
    /// This member does not lead (the leader it knows of, if any): nothing was done here.
    NotLeader(Option<(u64, Member)>),
    /// The answer to give.
    Api(ApiError),
}

impl From<ApiError> for ServeError {
    fn from(e: ApiError) -> Self {
        ServeError::Api(e)
    }
}

impl From<StoreError> for ServeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotLeader { leader } => ServeError::NotLeader(leader),
            other => ServeError::Api(store_error(other)),
        }
    }
}

impl ServeError {
    /// The answer for a caller that cannot be forwarded to.
    pub fn into_api(self) -> ApiError {
        match self {
            ServeError::Api(e) => e,
            ServeError::NotLeader(Some((id, member))) => ApiError::unavailable(format!(
                "this member is not the leader (the leader is member {id}, {member}); nothing was applied: retry"
            )),
            ServeError::NotLeader(None) => ApiError::unavailable(
                "no leader is elected right now (election in progress?); nothing was applied: retry",
            ),
        }
    }
}

/// The API error for a store failure (other than "not the leader").
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotLeader { .. } => ServeError::from(e).into_api(),
        StoreError::Conflict(_) => ApiError::conflict(e.to_string()),
        StoreError::Unavailable(m) => ApiError::unavailable(format!("{m}; not applied: retry")),
        StoreError::OutcomeUnknown(_) => ApiError::new(Reason::OutcomeUnknown, e.to_string()),
        StoreError::Watch(w) => watch_error(w),
        StoreError::Storage(m) => ApiError::internal(format!("storage error on this member: {m}")),
    }
}

/// The API error that ends a watch.
pub fn watch_error(e: WatchError) -> ApiError {
    let reason = match e {
        WatchError::TooOld { .. } => Reason::Expired,
        WatchError::FellBehind { .. } => Reason::TooSlow,
        WatchError::Closed { .. } => Reason::Unavailable,
        WatchError::Internal(_) => Reason::Internal,
    };
    ApiError::new(reason, e.to_string())
}
