//! A client for Skiff's API that knows several members and moves on when one is down.
//!
//! Used by the CLI, by a member joining through another, by tests and benchmarks. The rule for
//! moving on: a call that was never delivered (connection refused, connect timeout) or that a member
//! answered with UNAVAILABLE (no leader, shutting down: nothing applied) is tried on the next member,
//! until the deadline. A write whose connection broke mid-call is reported as
//! [`ClientError::OutcomeUnknown`] and never retried here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use skiff_proto::transport::Connector;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// True when `status` was produced on this side by the transport (not answered by a server).
pub fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// True when the request never left this side: connecting failed.
pub fn was_not_sent(status: &Status) -> bool {
    is_transport_failure(status) && skiff_proto::transport::is_connect_error(status)
}

/// Whether a call changes state: decides what a broken connection means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Read,
    Write,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no member could serve the request before the deadline:{}", .attempts.iter().map(|(a, s)| format!("\n  {a}: {}", s.message())).collect::<String>())]
    Unavailable { attempts: Vec<(String, Status)> },
    #[error("the outcome of the write is unknown: the connection to {addr} broke during the call ({}); read the key before retrying", .status.message())]
    OutcomeUnknown { addr: String, status: Status },
    #[error("{}", .status.message())]
    Status { addr: String, status: Status },
}

impl ClientError {
    /// The gRPC status behind the error.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Unavailable { .. } => Code::Unavailable,
            ClientError::OutcomeUnknown { .. } => Code::Unknown,
            ClientError::Status { status, .. } => status.code(),
        }
    }
}

/// Members to try, in order, and how long to keep trying.
#[derive(Clone)]
pub struct Client {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    /// Give up moving between members after this long.
    pub deadline: Duration,
    /// Pause after every member was tried once without success.
    pub round_pause: Duration,
    /// Timeout of one call (not of a watch stream).
    pub call_timeout: Duration,
}

impl Client {
    /// A client for `addrs` (`host:port` each) whose channels come from `connector` (members
    /// speak TLS only: `skiff_tls::TlsConnector` with credentials).
    pub fn with_connector(addrs: &[String], connector: Arc<dyn Connector>) -> Result<Self, String> {
        if addrs.is_empty() {
            return Err("no member address given: use --members, SKIFF_MEMBERS or the client config file".into());
        }
        let mut channels = Vec::with_capacity(addrs.len());
        for a in addrs {
            skiff_api::name::check_address(a).map_err(|e| format!("member address: {e}"))?;
            channels.push(connector.channel(a).map_err(|e| format!("member address {a}: {e}"))?);
        }
        Ok(Self {
            addrs: addrs.to_vec(),
            channels,
            deadline: Duration::from_secs(10),
            round_pause: Duration::from_millis(100),
            call_timeout: Duration::from_secs(15),
        })
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Runs `call` against the members in turn until one answers (see the module docs for when it
    /// moves on). `call` gets a channel to one member and returns that member's answer.
    pub async fn call<T, F, Fut>(&self, kind: CallKind, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut attempts = Vec::new();
        loop {
            for (addr, ch) in self.addrs.iter().zip(&self.channels) {
                let outcome = tokio::time::timeout(self.call_timeout, call(ch.clone())).await;
                let status = match outcome {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(s)) => s,
                    Err(_) if kind == CallKind::Write => {
                        return Err(ClientError::OutcomeUnknown {
                            addr: addr.clone(),
                            status: Status::deadline_exceeded(format!("no answer within {:?}", self.call_timeout)),
                        })
                    }
                    Err(_) => Status::deadline_exceeded("no answer"),
                };
                let retry = if is_transport_failure(&status) {
                    was_not_sent(&status) || kind == CallKind::Read
                } else {
                    status.code() == Code::Unavailable
                };
                if !retry {
                    if is_transport_failure(&status) && kind == CallKind::Write {
                        return Err(ClientError::OutcomeUnknown { addr: addr.clone(), status });
                    }
                    return Err(ClientError::Status { addr: addr.clone(), status });
                }
                tracing::debug!(%addr, status = %status.message(), "member could not serve the call; trying the next");
                attempts.push((addr.clone(), status));
                if attempts.len() > 3 * self.addrs.len() {
                    attempts.remove(0);
                }
            }
            if start.elapsed() >= self.deadline {
                return Err(ClientError::Unavailable { attempts });
            }
            tokio::time::sleep(self.round_pause).await;
        }
    }
}
