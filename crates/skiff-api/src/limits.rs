//! Explicit limits on what a call may carry. Every refusal names the field and the limit.

use crate::api::{ApiError, Reason};

/// The largest value (object) stored under one key.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest key.
pub const MAX_KEY_BYTES: usize = 4096;
/// The most ops in one transaction.
pub const MAX_TXN_OPS: usize = 1024;
/// The most bytes (keys and values) in one transaction: one Raft entry stays well below the
/// message limits of both the client API and the Raft network.
pub const MAX_TXN_BYTES: usize = 3 << 20;

pub fn check_key(key: &str, field: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request(format!("{field}: must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            Reason::TooLarge,
            format!("{field}: {} bytes is over the {MAX_KEY_BYTES}-byte limit for keys", key.len()),
        ));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!("{field}: {key:?} contains control characters")));
    }
    Ok(())
}

pub fn check_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            Reason::TooLarge,
            format!("prefix: {} bytes is over the {MAX_KEY_BYTES}-byte limit", prefix.len()),
        ));
    }
    Ok(())
}

pub fn check_value(key: &str, len: usize) -> Result<(), ApiError> {
    if len > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            Reason::TooLarge,
            format!(
                "value of key {key:?} is {len} bytes, over the limit of {MAX_VALUE_BYTES} bytes (1 MiB) per object"
            ),
        ));
    }
    Ok(())
}

pub fn check_txn(ops: usize, bytes: usize) -> Result<(), ApiError> {
    if ops > MAX_TXN_OPS {
        return Err(ApiError::new(
            Reason::TooLarge,
            format!("ops: {ops} ops is over the limit of {MAX_TXN_OPS} per transaction"),
        ));
    }
    if bytes > MAX_TXN_BYTES {
        return Err(ApiError::new(
            Reason::TooLarge,
            format!("ops: {bytes} bytes is over the limit of {MAX_TXN_BYTES} bytes per transaction"),
        ));
    }
    Ok(())
}
