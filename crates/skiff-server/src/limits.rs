//! Explicit limits on what a request may carry. Every refusal names the field and the limit.

use tonic::Status;

/// The largest value (object) stored under one key.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest key.
pub const MAX_KEY_BYTES: usize = 4096;
/// The most ops in one transaction.
pub const MAX_TXN_OPS: usize = 1024;
/// The most bytes (keys and values) in one transaction: one Raft entry stays well below the gRPC
/// message limits of both the client API and the Raft network.
pub const MAX_TXN_BYTES: usize = 3 << 20;
/// gRPC decoding limit of the client API (a little above the largest valid request).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// gRPC limit of a response (a list of many large objects). Clients raise their decoding limit to it.
/// Paging long lists is future work.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub fn check_key(key: &str, field: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::resource_exhausted(format!(
            "{field}: {} bytes is over the {MAX_KEY_BYTES}-byte limit for keys",
            key.len()
        )));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(Status::invalid_argument(format!("{field}: {key:?} contains control characters")));
    }
    Ok(())
}

pub fn check_prefix(prefix: &str) -> Result<(), Status> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(Status::resource_exhausted(format!(
            "prefix: {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            prefix.len()
        )));
    }
    Ok(())
}

pub fn check_value(key: &str, len: usize) -> Result<(), Status> {
    if len > MAX_VALUE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "value of key {key:?} is {len} bytes, over the limit of {MAX_VALUE_BYTES} bytes (1 MiB) per object"
        )));
    }
    Ok(())
}

pub fn check_txn(ops: usize, bytes: usize) -> Result<(), Status> {
    if ops > MAX_TXN_OPS {
        return Err(Status::resource_exhausted(format!(
            "ops: {ops} ops is over the limit of {MAX_TXN_OPS} per transaction"
        )));
    }
    if bytes > MAX_TXN_BYTES {
        return Err(Status::resource_exhausted(format!(
            "ops: {bytes} bytes is over the limit of {MAX_TXN_BYTES} bytes per transaction"
        )));
    }
    Ok(())
}
