//! How a member's address becomes a gRPC channel, shared by the Raft network, forwarding between
//! members and the client: a [`Connector`] is passed in. Members use `skiff_tls::TlsConnector` (they
//! serve TLS only); [`TcpConnector`] is plain HTTP/2, for tests of the store alone.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Turns a member's address into a gRPC channel.
pub trait Connector: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error>;
}

/// Where a connection to a member's address really goes (tests put proxies in between).
pub trait Redirect: Send + Sync + 'static {
    fn redirect(&self, addr: &str) -> String;
}

/// Plain TCP (HTTP/2 without TLS), lazily connected.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub connect_timeout: Duration,
}

impl Default for TcpConnector {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_millis(500) }
    }
}

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    }
}

/// A connection that failed before anything was sent on it (TCP connect, TLS handshake): a call
/// on it was not delivered, so it may be tried on another member.
#[derive(Debug)]
pub struct NotSent(pub String);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotSent {}

/// True when `status` says the call never reached the other side: connecting failed. A call whose
/// connection broke later ("connection reset", "connection closed") may have been delivered.
pub fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<NotSent>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        // hyper-util's connector errors, recognised by their display (their types are private).
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("tcp connect error") || text.contains("dns error") || text.contains("failed to lookup address")
        {
            return true;
        }
        source = e.source();
    }
    false
}
