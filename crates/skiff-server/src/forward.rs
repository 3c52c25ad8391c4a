//! Forwarding calls to the leader. A member that cannot serve a write or a linearizable read makes
//! the call to the leader itself: a client outside the cluster may not reach the leader's address.
//!
//! A forwarded call carries [`FORWARDED`], and a member never forwards such a call again, so a
//! stale view of who leads cannot make calls loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use skiff_store::network::Connector;
use skiff_store::{Member, StoreError};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Metadata key marking a call forwarded by another member.
pub const FORWARDED: &str = "x-skiff-forwarded";

/// Channels to other members, by address, reused across calls.
pub struct Forwarder {
    connector: Arc<dyn Connector>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self { connector, channels: Mutex::new(HashMap::new()) }
    }

    /// A channel to `addr` (lazily connected).
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().map_err(|_| Status::internal("forwarder lock poisoned"))?;
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c =
            self.connector.channel(addr).map_err(|e| Status::internal(format!("bad member address {addr}: {e}")))?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Where to forward after `err`, or the status to return when forwarding is not possible.
    pub fn target(&self, err: StoreError, already_forwarded: bool) -> Result<(Member, Channel), Status> {
        match err {
            StoreError::NotLeader { leader: Some((_, member)) } if !already_forwarded => {
                let channel = self.channel(&member.addr)?;
                Ok((member, channel))
            }
            StoreError::NotLeader { leader: None } => {
                Err(Status::unavailable("no leader is elected right now (election in progress?); not applied: retry"))
            }
            other => Err(crate::rpc_error::store_status(other)),
        }
    }
}

/// True when `req` was forwarded by another member.
pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// Wraps `msg` as a forwarded request.
pub fn forwarded<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}
